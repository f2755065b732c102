//! The README's quick start stays true: it names the Rust version the workspace declares,
//! both of its commands install that Rust when it is missing (scripts/ensure-rust, which
//! reads the version from Cargo.toml), and `tests/run` installs every system package that `.ci/run` installs (so the README's
//! test command works on a fresh machine without CI's setup). Needs no root.

use std::path::Path;

fn repo_file(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The words of an assignment `NAME="..."` that may span lines.
fn shell_list(text: &str, name: &str) -> Vec<String> {
    let start = text.find(&format!("{name}=\"")).unwrap_or_else(|| panic!("no {name}= list"));
    let rest = &text[start + name.len() + 2..];
    let end = rest.find('"').expect("closing quote");
    rest[..end].split_whitespace().map(String::from).collect()
}

#[test]
fn readme_names_the_declared_rust_version() {
    let cargo = repo_file("Cargo.toml");
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("workspace rust-version");
    let readme = repo_file("README.md");
    let quick = &readme[readme.find("## Quick start").expect("quick start")..];
    let quick = &quick[..quick[3..].find("\n## ").map_or(quick.len(), |i| i + 3)];
    assert!(quick.contains(&format!("Rust {version} or newer")), "quick start must name Rust {version}");
    assert!(quick.contains("rustup"), "quick start must say how Rust gets there");
    for script in ["scripts/demo", "tests/run"] {
        let text = repo_file(script);
        assert!(
            text.contains(". scripts/ensure-rust") && text.contains("ensure_rust"),
            "{script} must install Rust when it is missing"
        );
    }
    let ensure = repo_file("scripts/ensure-rust");
    assert!(ensure.contains("rust-version") && ensure.contains("https://sh.rustup.rs"), "{ensure}");
}

#[test]
fn tests_run_installs_what_ci_installs() {
    let ci = repo_file(".ci/run");
    let install = ci.find("apt-get install").expect(".ci/run installs packages");
    let line: String = ci[install..].split(">/dev/null").next().expect("install command").replace("\\\n", " ");
    let ci_pkgs: Vec<&str> = line.split_whitespace().skip(2).filter(|w| !w.starts_with('-')).collect();
    assert!(ci_pkgs.contains(&"nftables"), "parsed {ci_pkgs:?}");
    let ours = shell_list(&repo_file("tests/run"), "PACKAGES");
    let missing: Vec<&&str> = ci_pkgs.iter().filter(|p| !ours.iter().any(|o| o == **p)).collect();
    assert!(missing.is_empty(), "tests/run does not install {missing:?} (which .ci/run does)");
    for p in ["g++", "debootstrap", "systemd-container", "socat", "libnftnl-dev"] {
        assert!(ours.iter().any(|o| o == p), "tests/run must install {p}");
    }
}
