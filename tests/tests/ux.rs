//! Operator experience against the real daemon: one portd per table, located reload
//! errors, standard input, dry runs, status filters and the wide view, descriptions kept
//! through restarts, JSON shapes, plain logs, access errors and completion.
//! Needs root (fails and says so otherwise).

use portd_tests::*;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RULES: &str = "version: 1\nforwards:\n  - name: web\n    port: 80\n    to: 8080\n    description: the shop\n  - name: api\n    port: 443\n    to: 8443\n    interfaces: [vsrv]\n    sources: [10.250.0.0/24]\n    protect: true\n";

fn ctl_stdin(d: &Portd, args: &[&str], input: &str) -> std::process::Output {
    let mut c = Command::new(bin("portctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("portctl");
    c.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    c.wait_with_output().expect("wait")
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", out(o), err(o)))
}

#[test]
fn a_second_portd_refuses_the_table_and_leaves_the_first_alone() {
    let net = Net::setup();
    let text = config(&net, "");
    let d = Portd::start(&net, &text);
    let rules = write(&net.dir, "rules.yaml", RULES);
    assert!(d.ctl(&["apply", rules.to_str().expect("path")]).status.success());
    let before = net.table("portd").expect("table");
    let lock = std::fs::read_to_string(net.dir.join("table-portd.lock")).expect("lock file next to the socket");
    assert_eq!(lock.trim(), d.child.id().to_string(), "the lock file holds the running portd's pid");

    let second = Command::new("ip")
        .args(["netns", "exec", &net.srv])
        .arg(bin("portd"))
        .arg("--config")
        .arg(&d.config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second portd");
    let t = Instant::now();
    let o = second.wait_with_output().expect("second portd exits");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(1), "second portd must fail: {}", err(&o));
    let e = err(&o);
    assert!(e.contains(&format!("portd pid {}", d.child.id())), "names the running pid: {e}");
    assert_eq!(e.matches("already managed").count(), 1, "printed once: {e}");

    // The first one's table, socket and rules are untouched.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(net.table("portd").as_deref(), Some(before.as_str()), "table changed by the second portd");
    let st = d.status_json();
    assert_eq!(st["in_sync"], true);
    assert_eq!(st["repairs"], 0, "no fight over the table: {st}");
    assert_eq!(placed_names(&st), vec!["user:root/api", "user:root/web"]);

    // A lock file planted as a symlink is never followed.
    let victim = write(&net.dir, "victim", "keep me\n");
    std::os::unix::fs::symlink(&victim, net.dir.join("table-other.lock")).expect("symlink");
    let o = Command::new("ip")
        .args(["netns", "exec", &net.srv])
        .arg(bin("portd"))
        .args(["--table", "other", "--socket"])
        .arg(net.dir.join("other.sock"))
        .arg("--config")
        .arg(&d.config)
        .output()
        .expect("third portd");
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("table-other.lock"), "{}", err(&o));
    assert_eq!(read(&victim), "keep me\n");
    assert!(net.table("other").is_none(), "the refused portd created its table");
}

#[test]
fn reload_and_check_report_located_errors() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let good = std::fs::read_to_string(&d.config).expect("config");
    std::fs::write(&d.config, format!("{good}grants:\n  - user: nobody\n    port: [80]\n")).expect("write");
    let o = d.ctl(&["reload"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let name = d.config.display().to_string();
    let located = format!("{name}:8:5: grants[0].port: unknown field `port`");
    assert!(err(&o).lines().any(|l| l.starts_with(&located)), "{}", err(&o));
    let v = json(&d.ctl(&["--json", "reload"]));
    assert_eq!((v["ok"].as_bool(), v["error"]["kind"].as_str()), (Some(false), Some("invalid")), "{v}");
    assert!(v["error"]["messages"].to_string().contains(&located), "{v}");
    let c = sh(bin("portd").to_str().expect("path"), &["--check", "--config", &name]);
    assert_eq!(c.status.code(), Some(1));
    assert!(err(&c).lines().any(|l| l.starts_with(&located)), "{}", err(&c));
    // The daemon kept running with its config.
    assert!(d.ctl(&["status"]).status.success());
}

#[test]
fn portctl_reads_stdin_filters_status_and_keeps_descriptions() {
    let net = Net::setup();
    let mut d = Portd::start(&net, &config(&net, ""));
    let o = ctl_stdin(&d, &["apply", "-"], RULES);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("+ user:root/web: 80 -> 8080"), "{}", out(&o));

    // status NAME..., --owner, --wide
    let o = d.ctl(&["status", "web"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains(" web ") && !out(&o).contains(" api "), "{}", out(&o));
    let o = d.ctl(&["status", "web", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("no forward named `nope`"), "{}", err(&o));
    let v = json(&d.ctl(&["--json", "status", "--owner", "system"]));
    assert_eq!(v["forwards"].as_array().map(Vec::len), Some(0), "{v}");
    let v = json(&d.ctl(&["--json", "status", "--owner", "user:root", "api"]));
    assert_eq!(placed_names(&v), vec!["user:root/api"]);
    let wide = out(&d.ctl(&["status", "--wide"]));
    let api = wide.lines().find(|l| l.contains(" api ")).expect("api row");
    for cell in ["0x1", "vsrv", "10.250.0.0/24"] {
        assert!(api.contains(cell), "{cell} in {api}");
    }
    let header = wide.lines().find(|l| l.starts_with("OWNER")).expect("header");
    for col in ["MARK", "LOCAL", "PROTECT", "INTERFACES", "SOURCES", "STATE", "DESCRIPTION"] {
        assert!(header.contains(col), "{col}: {header}");
    }
    assert!(wide.lines().any(|l| l.contains(" web ") && l.ends_with("the shop")), "{wide}");
    let narrow = out(&d.ctl(&["status"]));
    let nothing = "active (nothing listens on 8080)";
    assert!(narrow.lines().any(|l| l.contains(" web ") && l.trim_end().ends_with(nothing)), "{narrow}");

    // --dry-run on add and remove changes nothing.
    let o = d.ctl(&["add", "extra", "8000", "9000", "--dry-run"]);
    assert!(o.status.success() && out(&o).contains("dry run") && out(&o).contains("+ user:root/extra"), "{}", out(&o));
    let o = d.ctl(&["remove", "web", "--dry-run"]);
    assert!(o.status.success() && out(&o).contains("- user:root/web"), "{}", out(&o));
    assert_eq!(placed_names(&d.status_json()), vec!["user:root/api", "user:root/web"]);

    // JSON of a change: labelled entries.
    let changed = RULES.replace("to: 8080", "to: 8081").replace("the shop", "the new shop");
    let v = json(&ctl_stdin(&d, &["--json", "apply", "-"], &changed));
    assert_eq!(v["ok"], true, "{v}");
    let c = &v["changed"][0];
    assert_eq!((c["name"].as_str(), c["owner"].as_str()), (Some("web"), Some("user:root")), "{v}");
    assert_eq!((c["old"]["forward"]["to"].as_u64(), c["new"]["forward"]["to"].as_u64()), (Some(8080), Some(8081)));
    assert_eq!(c["new"]["forward"]["description"], "the new shop");
    // A change of the description alone is kept too.
    let o = ctl_stdin(&d, &["apply", "-"], &changed.replace("the new shop", "renamed"));
    assert!(o.status.success() && out(&o).contains("~ user:root/web"), "{}", out(&o));
    assert!(
        out(&o).contains(r#"description="the new shop""#) && out(&o).contains(r#"description="renamed""#),
        "{}",
        out(&o)
    );
    let v = json(&ctl_stdin(&d, &["--json", "apply", "-"], "version: 1\nforwards: [{name: x, port: 70000, to: 1}]\n"));
    assert_eq!((v["ok"].as_bool(), v["error"]["kind"].as_str()), (Some(false), Some("invalid")), "{v}");

    // Logs: no colour codes, plain values.
    let log = Portd::log(&net);
    assert!(!log.contains('\u{1b}'), "ANSI codes in a log file: {log}");
    assert!(!log.contains("Some("), "Debug-formatted values: {log}");
    assert!(log.contains("(pid "), "the caller's pid, plainly: {log}");

    // Descriptions survive a restart (persisted) and show in export.
    d.signal("TERM");
    assert_eq!(d.wait(), Some(0));
    drop(d);
    let d = Portd::start(&net, &std::fs::read_to_string(net.dir.join("portd.yaml")).expect("config"));
    let export = out(&d.ctl(&["export"]));
    assert!(export.contains("description: renamed"), "{export}");
    assert!(out(&d.ctl(&["status", "-w", "web"])).contains("renamed"));
    let v = json(&d.ctl(&["--json", "export"]));
    assert_eq!((v["ok"].as_bool(), v["owner"].as_str()), (Some(true), Some("user:root")), "{v}");
}

#[test]
fn access_errors_name_the_socket_group_and_completion_asks_the_daemon() {
    let net = Net::setup();
    let text = config(&net, "").replace("group: null, mode: \"0666\"", "group: daemon, mode: \"0660\"");
    let d = Portd::start(&net, &text);
    std::fs::set_permissions(&net.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let o = d.ctl_as("nobody", "", &["status"]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("group `daemon`") && e.contains("usermod -aG daemon nobody"), "{e}");
    assert!(e.contains("log in again"), "{e}");
    let o = d.ctl_as("nobody", "", &["--json", "status"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(o.stderr.is_empty(), "{}", err(&o));
    let v = json(&o);
    assert_eq!((v["ok"].as_bool(), v["error"]["kind"].as_str()), (Some(false), Some("denied")), "{v}");
    assert!(v["error"]["messages"][0].as_str().unwrap_or("").contains("group `daemon`"), "{v}");
    // A socket path under a directory only root may enter: no advice to join root's group.
    let gid = String::from_utf8_lossy(&sh("id", &["-g", "nobody"]).stdout).trim().to_string();
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", &format!("--regid={gid}"), "--clear-groups"])
        .arg(bin("portctl"))
        .args(["--socket", "/root/portd.sock", "status"])
        .output()
        .expect("setpriv portctl");
    let e = err(&o);
    assert!(!e.contains("usermod") && e.contains("does not let that group in"), "{e}");
    // Nor another group of a directory it names, whatever that group's bits.
    let dir = net.dir.join("private");
    std::fs::create_dir(&dir).expect("mkdir");
    assert!(sh("chgrp", &["daemon", dir.to_str().expect("utf-8")]).status.success());
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o750)).expect("chmod");
    let o = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", &format!("--regid={gid}"), "--clear-groups"])
        .arg(bin("portctl"))
        .args(["--socket", dir.join("x.sock").to_str().expect("utf-8"), "status"])
        .output()
        .expect("setpriv portctl");
    let e = err(&o);
    assert!(!e.contains("usermod"), "no advice to join a directory's group: {e}");
    // Added to the group after this "login" started: told to log in again; a new login works.
    let late = TestUser::new("pdux");
    let o = sh("usermod", &["-aG", "daemon", &late.name]);
    assert!(o.status.success(), "usermod: {}", err(&o));
    let o = d.ctl_as(&late.name, "", &["status"]);
    assert_eq!(o.status.code(), Some(4));
    assert!(err(&o).contains("you are a member, but this login started before you were added"), "{}", err(&o));
    assert!(d.ctl_as(&late.name, "daemon", &["status"]).status.success(), "with the group in its credentials");

    assert!(d.ctl(&["add", "web", "80", "8080"]).status.success());
    let sock = d.socket.to_str().expect("path");
    let complete = |args: &[&str]| {
        let o = Command::new(bin("portctl")).env("COMPLETE", "fish").args(args).output().expect("complete");
        assert!(o.status.success(), "{args:?}: {}", err(&o));
        out(&o)
    };
    let names = complete(&["--", "portctl", "--socket", sock, "remove", ""]);
    assert!(names.lines().any(|l| l == "web"), "{names}");
    let owners = complete(&["--", "portctl", "--socket", sock, "export", "--owner", ""]);
    assert!(owners.lines().any(|l| l == "user:root") && owners.lines().any(|l| l == "system"), "{owners}");
}
