//! portctl's offline commands (check, plan, completions, man) and its exit codes when no
//! daemon is needed or reachable: the real binary in a scratch directory, no root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const SEED: &str =
    "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n  - name: https\n    port: 443\n    to: 8181\n";

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portctl-offline-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        p.display().to_string()
    }

    /// portctl with a socket path nothing listens on.
    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_portctl"))
            .current_dir(&self.0)
            .arg("--socket")
            .arg(self.0.join("none.sock"))
            .args(args)
            .env_remove("PORTD_SOCKET")
            .output()
            .expect("run portctl")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn exit_codes_without_a_daemon_follow_the_design() {
    let s = Scratch::new();
    let bad = s.file("bad.yaml", "version: 1\nforwards:\n  - name: x\n    port: 70000\n    to: 1\n");
    let ok = s.file("ok.yaml", SEED);
    assert_eq!(s.ctl(&["check", &ok]).status.code(), Some(0));
    let o = s.ctl(&["check", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("bad.yaml:4:11: forwards[0].port: 70000 is not a port"), "{}", err(&o));
    assert_eq!(s.ctl(&["frobnicate"]).status.code(), Some(2), "usage error");
    assert_eq!(s.ctl(&["status"]).status.code(), Some(3), "daemon unreachable");
    assert_eq!(s.ctl(&["apply", &ok]).status.code(), Some(3));
    // An invalid file is reported with its located errors even when portd is down.
    let o = s.ctl(&["apply", &bad]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("bad.yaml:4:11"), "{}", err(&o));
}

#[test]
fn a_device_or_fifo_is_read_to_the_same_bound_and_never_hangs() {
    let s = Scratch::new();
    let t = std::time::Instant::now();
    let o = s.ctl(&["check", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("/dev/zero: more than 16 MiB"), "{}", err(&o));
    let fifo = s.0.join("rules.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    // (under timeout(1): a blocking open would hang, and fail the test with 124)
    let o = Command::new("timeout")
        .arg("10")
        .arg(env!("CARGO_BIN_EXE_portctl"))
        .args(["check", fifo.to_str().expect("utf-8")])
        .output()
        .expect("timeout portctl");
    assert_eq!(o.status.code(), Some(1), "a FIFO nobody writes reads as empty: {}", err(&o));
    assert!(t.elapsed() < std::time::Duration::from_secs(10), "took {:?}", t.elapsed());
}

#[test]
fn check_reports_every_error_of_a_file_at_once() {
    let s = Scratch::new();
    let f = s.file(
        "rules.yaml",
        "version: 1\nforwards:\n  - name: a\n    port: 70000\n    to: 1\n  - name: a\n    port: 82\n    to: 83\n  - name: c\n    port: 81\n    to: 81\n",
    );
    let o = s.ctl(&["check", &f]);
    assert_eq!(o.status.code(), Some(1));
    let e = err(&o);
    assert!(e.contains("rules.yaml:4:11: forwards[0].port"), "{e}");
    assert!(e.contains("forwards[1].name: duplicate name `a`"), "{e}");
    assert!(e.contains("rules.yaml:11:9: forwards[2].to: target 81 is the public port itself"), "{e}");
    let o = s.ctl(&["check", &f, "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(&o)));
    assert!(v.to_string().contains("70000"), "{v}");
    assert_eq!(s.ctl(&["check", &s.0.join("missing.yaml").display().to_string()]).status.code(), Some(1));
}

#[test]
fn plan_prints_the_ruleset_offline() {
    let s = Scratch::new();
    let rules = s.file("r.yaml", SEED);
    let o = s.ctl(&["plan", &rules]);
    assert!(o.status.success(), "{}", err(&o));
    let plan = out(&o);
    assert!(plan.starts_with("table inet portd {"), "{plan}");
    assert!(plan.contains("tcp . 80 comment \"system/http\" : 8080"), "{plan}");
    let o = s.ctl(&["plan", &rules, "--table", "other"]);
    assert!(out(&o).starts_with("table inet other {"), "{}", out(&o));
    // Steered by default: the TCP targets are in fwd_steer, counted by their sockets; no
    // input chain for forwards of the default kind, no NAT chain, and no raw chain unless
    // conntrack runs for someone else.
    assert!(plan.contains("map fwd_steer {") && !plan.contains("chain steer_in {"), "{plan}");
    assert!(!plan.contains("notrack") && !plan.contains("type nat"), "{plan}");
    let o = s.ctl(&["plan", &rules, "--conntrack"]);
    let ct = out(&o);
    assert!(ct.contains("chain raw_prerouting {") && ct.contains("notrack") && !ct.contains("type nat"), "{ct}");
    assert!(
        !plan.contains("fwd_to {\n\t\ttype inet_proto . inet_service : inet_service\n\t\tsize 1024\n\t\telements"),
        "{plan}"
    );
    let o = s.ctl(&["plan", &rules, "--dispatch", "nat"]);
    let nat = out(&o);
    assert!(!nat.contains("fwd_steer") && !nat.contains("notrack"), "{nat}");
    assert!(nat.contains("map fwd_to {") && nat.contains("tcp . 80 comment \"system/http\" : 8080"), "{nat}");
    assert_eq!(s.ctl(&["plan", &rules, "--dispatch", "magic"]).status.code(), Some(2));
}

#[test]
fn completions_and_man_pages() {
    let s = Scratch::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = s.ctl(&["completions", shell]);
        assert!(o.status.success() && out(&o).contains("portctl"), "{shell}: {}", err(&o));
    }
    assert_eq!(s.ctl(&["completions", "tcsh"]).status.code(), Some(2));
    let man = s.0.join("man");
    assert!(s.ctl(&["man", man.to_str().expect("p")]).status.success());
    assert!(
        ["portctl.1", "portd.8", "portd.yaml.5"].iter().all(|p| Path::new(&man.join(p)).exists()),
        "portctl's, the daemon's and the config's pages"
    );
}

#[test]
fn a_reader_that_goes_away_ends_portctl_quietly() {
    // `portctl plan big.yaml | head -1`: the pipe closes while portctl still writes.
    let s = Scratch::new();
    let mut yaml = String::from("version: 1\nforwards:\n");
    for i in 0..2000 {
        yaml.push_str(&format!("  - name: f{i}\n    port: {}\n    to: {}\n", 10000 + i, 30000 + i));
    }
    let file = s.file("big.yaml", &yaml);
    for json in [false, true] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_portctl"));
        cmd.args(["plan", &file]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd.spawn().expect("run portctl");
        drop(child.stdout.take()); // the reader goes away before portctl writes
        let o = child.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "json {json}: {}", err(&o));
        assert!(!err(&o).contains("panicked"), "json {json}: {}", err(&o));
    }
}
