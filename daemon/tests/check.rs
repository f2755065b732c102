//! `portd --check` and start-up refusals, offline: no root, no kernel, no socket.

use std::process::{Command, Output};

fn portd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portd")).args(args).env_remove("PORTD_LOG").output().expect("run portd")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn config(dir: &std::path::Path, rest: &str) -> String {
    format!(
        "version: 1\nsettings:\n  table: checked\n  socket: {{path: {}, group: null}}\n  state_dir: {}\n{rest}",
        dir.join("run/portd.sock").display(),
        dir.join("state").display()
    )
}

#[test]
fn check_accepts_a_valid_config_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portd.yaml");
    let grants =
        "grants:\n  - user: nobody\n    ports: [80, 443]\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n";
    std::fs::write(&path, config(dir.path(), grants)).expect("write");
    let o = portd(&["--check", "--config", path.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("ok: table inet checked") && out.contains("1 grant(s), 1 system forward(s)"), "{out}");
    assert!(!dir.path().join("run").exists(), "--check created the runtime directory");
    assert!(!dir.path().join("state").exists(), "--check created the state directory");
}

#[test]
fn check_reports_every_located_error_and_exits_1() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portd.yaml");
    let bad = "grants:\n  - user: web\n    port: [80]\nforwards:\n  - name: http\n    port: 80\n    to: 80\n";
    std::fs::write(&path, config(dir.path(), bad)).expect("write");
    let name = path.to_str().expect("path");
    let o = portd(&["--check", "--config", name]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    for want in [
        format!("{name}:7:5: grants[0]: missing required field `ports`"),
        format!("{name}:8:5: grants[0].port: unknown field `port`; did you mean `ports`?"),
        format!("{name}:12:9: forwards[0].to: target 80 is the public port itself"),
    ] {
        assert!(e.lines().any(|l| l.starts_with(&want)), "missing `{want}` in:\n{e}");
    }
    assert!(o.stdout.is_empty(), "{}", text(&o.stdout));
    let o = portd(&["--check", "--config", dir.path().join("absent.yaml").to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("absent.yaml: cannot read the config"), "{}", text(&o.stderr));
}

#[test]
fn a_refused_start_prints_its_errors_once_without_colour() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portd.yaml");
    std::fs::write(&path, config(dir.path(), "grants:\n  - user: web\n    port: [80]\n")).expect("write");
    let o = portd(&["--config", path.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert_eq!(e.matches("unknown field `port`").count(), 1, "printed once:\n{e}");
    assert!(!e.contains('\u{1b}'), "colour codes on a pipe:\n{e}");
    assert!(!dir.path().join("run").exists(), "a refused start created the runtime directory");
}

/// A grant of an account the host does not have grants nothing, and a socket group that
/// does not exist leaves the socket in root's group: `--check` and a start refuse both,
/// located; a grant of accounts that exist passes.
#[test]
fn check_and_start_refuse_unknown_users_groups_and_socket_group() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("portd.yaml");
    let name = path.to_str().expect("path");
    let conf = config(
        dir.path(),
        "grants:\n  - user: nobody\n    ports: [80]\n  - user: nosuchuser-pd\n    ports: [81]\n  - group: nosuchgroup-pd\n    ports: [82]\n  - group: daemon\n    ports: [83]\n",
    )
    .replace("group: null", "group: nosocketgroup-pd");
    std::fs::write(&path, &conf).expect("write");
    let col = conf.lines().nth(3).and_then(|l| l.find("nosocketgroup-pd")).expect("socket line") + 1;
    let want = [
        format!("{name}:4:{col}: settings.socket.group: there is no group `nosocketgroup-pd` on this host"),
        format!("{name}:9:11: grants[1].user: there is no user `nosuchuser-pd` on this host"),
        format!("{name}:11:12: grants[2].group: there is no group `nosuchgroup-pd` on this host"),
    ];
    for args in [&["--check", "--config", name][..], &["--config", name][..]] {
        let o = portd(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = text(&o.stderr);
        for w in &want {
            assert!(e.lines().any(|l| l.contains(w.as_str())), "{args:?}: missing `{w}` in:\n{e}");
        }
        assert!(!e.contains("`nobody`") && !e.contains("`daemon`"), "accounts that exist pass: {e}");
        assert!(!dir.path().join("run").exists(), "a refused start created the runtime directory");
    }
    let fixed = conf
        .replace("nosocketgroup-pd", "daemon")
        .replace("user: nosuchuser-pd", "user: root")
        .replace("group: nosuchgroup-pd", "group: root");
    std::fs::write(&path, fixed).expect("write");
    let o = portd(&["--check", "--config", name]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
}
