//! The daemon's life: READY only once the rules are in the kernel, SIGTERM finishing
//! requests in flight, counters and large sets surviving restarts and kill -9, reloads
//! that may not change what only a restart changes, grants through the primary group.

use portd_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// A rules file of `n` forwards: port 10000+i to 30000+i.
fn many(n: usize) -> String {
    let mut s = String::from("version: 1\nforwards:\n");
    for i in 0..n {
        s.push_str(&format!("  - name: f{i}\n    port: {}\n    to: {}\n", 10_000 + i, 30_000 + i));
    }
    s
}

fn keep(net: &Net) -> String {
    config(net, "").replace("  table: portd\n", "  table: portd\n  on_exit: keep\n")
}

/// Packets counted for forward `name` of `owner`.
fn packets(js: &serde_json::Value, owner: &str, name: &str) -> u64 {
    js["forwards"]
        .as_array()
        .expect("forwards")
        .iter()
        .find(|f| f["owner"] == owner && f["forward"]["name"] == name)
        .and_then(|f| f["packets"].as_u64())
        .unwrap_or_else(|| panic!("no {owner}/{name} in status"))
}

#[test]
fn rules_are_in_the_kernel_before_ready() {
    // 5,000 persisted forwards take a while to load, so rules put in after READY=1
    // would be missing when it arrives.
    let net = Net::setup();
    let n = 5_000;
    let rules = write(&net.dir, "many.yaml", &many(n));
    {
        let d = Portd::start(&net, &keep(&net));
        let o = d.ctl(&["apply", rules.to_str().expect("p")]);
        assert!(o.status.success(), "{}", err(&o));
    }
    // The kill above left the table; start from an empty kernel.
    net.exec_ok(&net.srv, "nft", &["delete", "table", "inet", "portd"]);
    let notify = NotifyListener::new(&net.dir);
    let d = Portd::start_with(&net, &config(&net, ""), Some(&notify.path));
    let msg = notify.wait_for("READY=1");
    // Freeze portd the moment READY=1 arrives, before anything else happens, and look.
    let pid = d.child.id();
    freeze(pid);
    let table = net.table("portd");
    let elems = net.exec(&net.srv, "nft", &["-j", "list", "map", "inet", "portd", "fwd_to"]);
    thaw(pid);
    let table = table.expect("table exists at READY=1");
    let first = |l: &str| l.contains("tcp . 10000 comment ") && l.contains(" : 30000");
    assert!(table.lines().any(first), "first forward in the kernel at READY=1");
    let v: serde_json::Value = serde_json::from_slice(&elems.stdout).expect("nft -j");
    let count = v["nftables"][1]["map"]["elem"].as_array().map_or(0, Vec::len);
    assert_eq!(count, n, "every forward (one element serves both families) in the kernel at READY=1");
    assert!(msg.contains(&format!("STATUS={n} forward(s)")), "{msg}");
}

#[test]
fn sigterm_finishes_requests_in_flight_and_sends_stopping() {
    let net = Net::setup();
    let notify = NotifyListener::new(&net.dir);
    let mut d = Portd::start_with(&net, &config(&net, ""), Some(&notify.path));
    notify.wait_for("READY=1");
    // A large apply in flight when SIGTERM arrives.
    let n = 5_000;
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    let mut line = serde_json::to_vec(&apply_request(&many(n))).expect("json");
    line.push(b'\n');
    s.write_all(&line).expect("send apply");
    std::thread::sleep(Duration::from_millis(30));
    let term = Instant::now();
    d.signal("TERM");
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).expect("answer");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    assert!(v["result"]["ok"].is_object(), "the apply in flight was finished: {answer}");
    notify.wait_for("STOPPING=1");
    assert_eq!(d.wait(), Some(0), "clean exit");
    let answered_after = term.elapsed();
    assert!(net.table("portd").is_none(), "on_exit: remove");
    // Finished means persisted: a restart restores the whole set.
    drop(d);
    let d = Portd::start(&net, &config(&net, ""));
    let js = d.status_json();
    assert_eq!(js["forwards"].as_array().map(Vec::len), Some(n), "the finished apply was persisted");
    assert_eq!(js["in_sync"], true);
    println!("SIGTERM: apply of {n} in flight answered, STOPPING=1 sent, exit 0 within {answered_after:?}");
}

#[test]
fn counters_are_kept_across_a_restart() {
    let net = Net::setup();
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let mut d = Portd::start(&net, &keep(&net));
    let rules = write(&net.dir, "r.yaml", "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n");
    assert!(d.ctl(&["apply", rules.to_str().expect("p")]).status.success());
    for _ in 0..3 {
        assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("app"));
    }
    let before = packets(&d.status_json(), "user:root", "http");
    assert!(before > 0, "traffic was counted");
    d.signal("TERM");
    assert_eq!(d.wait(), Some(0));
    drop(d);
    let d = Portd::start(&net, &keep(&net));
    let js = d.status_json();
    assert_eq!(packets(&js, "user:root", "http"), before, "the kept table's counters survive the restart: {js}");
    assert_eq!(js["in_sync"], true);
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("app"));
    assert!(packets(&d.status_json(), "user:root", "http") > before, "and keep counting");
}

#[test]
fn ten_thousand_forwards_survive_kill_9_with_their_counters() {
    let net = Net::setup();
    let _app = net.tcp_app(&net.srv, 30_000, "app");
    let mut d = Portd::start(&net, &config(&net, ""));
    let n = 10_000;
    let rules = write(&net.dir, "many.yaml", &many(n));
    let o = d.ctl(&["apply", rules.to_str().expect("p")]);
    assert!(o.status.success(), "{}", err(&o));
    for addr in [SRV4, SRV6] {
        assert_eq!(net.tcp_get(&net.cli, addr, 10_000).as_deref(), Some("app"));
    }
    let before = packets(&d.status_json(), "user:root", "f0");
    assert!(before > 0, "traffic was counted");
    let table_before = net.table("portd").expect("table");
    d.signal("KILL");
    d.wait();
    drop(d);
    let d = Portd::start(&net, &config(&net, ""));
    let js = d.status_json();
    let fwds = js["forwards"].as_array().expect("forwards");
    assert_eq!(fwds.len(), n, "every forward came back");
    let mut names: Vec<&str> = fwds.iter().map(|f| f["forward"]["name"].as_str().unwrap_or("")).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n);
    assert_eq!(js["in_sync"], true);
    // The kernel already held exactly the desired table: kept as it was, counters included.
    assert_eq!(packets(&js, "user:root", "f0"), before, "counters kept");
    assert_eq!(net.table("portd").as_deref(), Some(table_before.as_str()), "table kept byte for byte");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 10_000).as_deref(), Some("app"));
}

#[test]
fn a_reload_may_not_change_table_state_dir_or_socket() {
    let net = Net::setup();
    let base = config(&net, "forwards:\n  - name: a\n    port: 80\n    to: 8080\n");
    let d = Portd::start(&net, &base);
    let table = net.table("portd").expect("table");
    let changed = [
        ("table", base.replace("  table: portd\n", "  table: other\n")),
        ("state_dir", base.replace("state_dir: ", "state_dir: /tmp/elsewhere")),
        ("socket", base.replace("portd.sock", "other.sock")),
        ("dispatch", base.replacen("settings:\n", "settings:\n  dispatch: nat\n", 1)),
        ("ownership", base.replacen("settings:\n", "settings:\n  ownership: polled\n", 1)),
    ];
    for (what, text) in changed {
        assert_ne!(text, base, "{what}: the edit changed nothing");
        // Also a change to the forwards, which must not be applied either.
        let text = text.replace("to: 8080", "to: 9090");
        std::fs::write(&d.config, &text).expect("edit config");
        let o = d.ctl(&["reload"]);
        assert_eq!(o.status.code(), Some(1), "{what}: {}", err(&o));
        assert!(err(&o).contains("only change on restart"), "{what}: {}", err(&o));
        assert_eq!(net.table("portd").as_deref(), Some(table.as_str()), "{what}: the rules stayed");
        assert!(net.table("other").is_none());
    }
    std::fs::write(&d.config, &base).expect("restore config");
    assert!(d.ctl(&["reload"]).status.success());
}

#[test]
fn a_grant_to_the_primary_group_counts() {
    let net = Net::setup();
    let nogroup = sh("id", &["-gn", "nobody"]);
    let group = out(&nogroup).trim().to_string();
    assert!(nogroup.status.success() && !group.is_empty(), "user nobody needs a primary group");
    let d = Portd::start(&net, &config(&net, &format!("grants:\n  - group: {group}\n    ports: [9100]\n")));
    let f = write(&net.dir, "g.yaml", "version: 1\nforwards:\n  - name: alt\n    port: 9100\n    to: 9190\n");
    // nobody with no supplementary groups at all: only its primary group grants.
    let o = d.ctl_as("nobody", "", &["apply", f.to_str().expect("p")]);
    assert!(o.status.success(), "primary group {group}: {}", err(&o));
    // A user whose primary group is another one is refused.
    let o = d.ctl_as("daemon", "", &["apply", f.to_str().expect("p")]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert_eq!(placed_names(&d.status_json()), vec!["user:nobody/alt"]);
}
