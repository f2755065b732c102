//! Compiles kernel/bpf/*.bpf.c with clang into OUT_DIR; the loader embeds the
//! object. A compiled object is never committed.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    for f in ["bpf/portd.bpf.c", "bpf/portd.h"] {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the
    // multiarch directory of the target.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "riscv64" => "riscv64-linux-gnu",
        "powerpc64" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        other => panic!("kernel/build.rs: no multiarch include directory known for target arch {other}"),
    };
    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", "bpf/portd.bpf.c", "-o"])
        .arg(out.join("portd.bpf.o"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "kernel/build.rs: {clang} failed to compile bpf/portd.bpf.c ({s}); if <bpf/bpf_helpers.h> or \
             <asm/types.h> is missing: apt-get install libbpf-dev linux-libc-dev"
        ),
        Err(e) => panic!(
            "kernel/build.rs: cannot run {clang} ({e}): building the BPF programs needs clang and the libbpf \
             headers: apt-get install clang libbpf-dev (or set CLANG to a clang with the BPF target)"
        ),
    }
}
