//! End-to-end tests of portd and portctl: the real binaries against the real kernel in
//! throwaway namespaces, with real traffic. Needs root (fails and says so otherwise).

use portd_tests::*;

const SEED: &str =
    "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n  - name: https\n    port: 443\n    to: 8181\n";

fn grants() -> String {
    "grants:\n  - user: nobody\n    ports: [80, 443, \"8000-8099\"]\n    to: \"1024-65535\"\n  - group: daemon\n    ports: [9000]\n"
        .to_string()
}

#[test]
fn seed_rules_redirect_real_traffic_and_status_counts_it() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let rules = write(&net.dir, "rules.yaml", SEED);
    let o = d.ctl(&["apply", rules.to_str().expect("path")]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("+ user:root/http: 80 -> 8080 tcp both"), "{}", out(&o));
    for addr in [SRV4, SRV6] {
        assert_eq!(net.tcp_get(&net.cli, addr, 80).as_deref(), Some("app"), "client via {addr}:80");
    }
    for addr in ["127.0.0.1", "::1", SRV4] {
        assert_eq!(net.tcp_get(&net.srv, addr, 80).as_deref(), Some("app"), "local via {addr}:80");
    }
    let st = d.ctl(&["status"]);
    let text = out(&st);
    assert!(text.contains("in sync"), "{text}");
    let http = text.lines().find(|l| l.contains(" http ")).expect("http row");
    let cols: Vec<&str> = http.split_whitespace().collect();
    assert_eq!(&cols[..6], &["user:root", "http", "80", "8080", "tcp", "both"], "{http}");
    assert_eq!(cols[6], "nat", "portd started by `ip netns exec` sees no bpffs and uses NAT: {http}");
    assert!(cols[7].parse::<u64>().expect("packets") > 0, "counters move: {http}");
    let js = d.status_json();
    assert_eq!(js["in_sync"], true);
    // `local: false`: other hosts are redirected, the host's own connections are not.
    let _alt = net.tcp_app(&net.srv, 81, "own-81");
    let remote_only = write(
        &net.dir,
        "remote.yaml",
        &format!("{SEED}  - name: remote\n    port: 81\n    to: 8080\n    local: false\n"),
    );
    assert!(d.ctl(&["apply", remote_only.to_str().expect("path")]).status.success());
    assert_eq!(net.tcp_get(&net.cli, SRV4, 81).as_deref(), Some("app"), "remote client redirected");
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 81).as_deref(), Some("own-81"), "local client not redirected");
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 80).as_deref(), Some("app"), "local: true still redirects");
    // No rule per forward: the table has the same rules for 2 forwards as the skeleton.
    let table = net.table("portd").expect("table");
    assert!(!table.contains("dport 80 "), "no per-port rule: {table}");
}

#[test]
fn exit_codes_that_need_a_daemon_follow_the_design() {
    // The offline exit codes (0, 1 for an invalid file, 2 usage, 3 unreachable) are
    // tested without root in ctl/tests/offline.rs.
    let net = Net::setup();
    let bad = write(&net.dir, "bad.yaml", "version: 1\nforwards:\n  - name: x\n    port: 70000\n    to: 1\n");
    let d = Portd::start(&net, &config(&net, &grants()));
    let far = write(&net.dir, "far.yaml", "version: 1\nforwards:\n  - name: ssh\n    port: 22\n    to: 2222\n");
    assert_eq!(d.ctl_as("nobody", "", &["apply", far.to_str().expect("p")]).status.code(), Some(4), "outside grant");
    assert_eq!(d.ctl(&["apply", bad.to_str().expect("p")]).status.code(), Some(1), "invalid file");
}

#[test]
fn grants_owners_and_conflicts() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, &grants()));
    let p = |name: &str, text: &str| write(&net.dir, name, text).display().to_string();
    let web = p("web.yaml", "version: 1\nforwards:\n  - name: site\n    port: 80\n    to: 8080\n");
    let o = d.ctl_as("nobody", "", &["apply", &web]);
    assert!(o.status.success(), "within grant: {}", err(&o));
    // Outside the grant: port and target.
    let far = p("far.yaml", "version: 1\nforwards:\n  - name: ssh\n    port: 22\n    to: 2222\n");
    let o = d.ctl_as("nobody", "", &["apply", &far]);
    assert_eq!(o.status.code(), Some(4));
    assert!(err(&o).contains("forward `ssh` (22 -> 2222) is outside your grants"), "{}", err(&o));
    let low = p("low.yaml", "version: 1\nforwards:\n  - name: site\n    port: 80\n    to: 22\n");
    assert_eq!(d.ctl_as("nobody", "", &["apply", &low]).status.code(), Some(4));
    // A user without a grant.
    let o = d.ctl_as("bin", "", &["apply", &web]);
    assert_eq!(o.status.code(), Some(4));
    assert!(err(&o).contains("has no grant"), "{}", err(&o));
    // A group grant counts for the group's members in the account database (here the
    // primary group of `daemon`); groups a process merely holds do not.
    let g = p("g.yaml", "version: 1\nforwards:\n  - name: alt\n    port: 9000\n    to: 9090\n");
    assert_eq!(d.ctl_as("bin", "daemon", &["apply", &g]).status.code(), Some(4), "not a member of daemon");
    let o = d.ctl_as("daemon", "", &["apply", &g]);
    assert!(o.status.success(), "member of group daemon: {}", err(&o));
    // Conflicts name the other owner's forward.
    let clash = p("clash.yaml", "version: 1\nforwards:\n  - name: mine\n    port: 80\n    to: 9999\n");
    let o = d.ctl(&["apply", &clash]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("already forwarded by `site` of user:nobody"), "{}", err(&o));
    // Owners cannot touch each other's forwards.
    let o = d.ctl_as("daemon", "staff", &["remove", "site"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("user:daemon has no forward `site`"), "{}", err(&o));
    assert_eq!(d.ctl_as("daemon", "staff", &["remove", "site", "--owner", "user:nobody"]).status.code(), Some(4));
    // Root may act for another owner; everyone may read status.
    assert!(d.ctl(&["remove", "site", "--owner", "user:nobody"]).status.success());
    let st = d.ctl_as("daemon", "", &["status", "--json"]);
    assert!(st.status.success());
    let js: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    let names: Vec<&str> =
        js["forwards"].as_array().expect("list").iter().map(|f| f["forward"]["name"].as_str().unwrap_or("")).collect();
    assert_eq!(names, vec!["alt"]);
}

#[test]
fn every_portctl_command_works() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, "forwards:\n  - name: sys\n    port: 25\n    to: 2525\n"));
    let rules = write(&net.dir, "r.yaml", SEED).display().to_string();
    let o = d.ctl(&["diff", &rules]);
    assert!(o.status.success() && out(&o).contains("dry run") && out(&o).contains("+ user:root/http"), "{}", out(&o));
    assert!(!out(&d.ctl(&["status"])).contains(" http "), "diff applied nothing");
    assert!(d.ctl(&["apply", &rules, "--dry-run"]).status.success());
    assert!(d.ctl(&["apply", &rules]).status.success());
    let o = d.ctl(&["apply", &rules]);
    assert!(out(&o).contains("no changes"), "{}", out(&o));
    let o = d.ctl(&["add", "dns", "53", "5353", "--proto", "udp"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(d.ctl(&["add", "dns", "54", "5354"]).status.code(), Some(1), "duplicate name");
    let o = d.ctl(&["export"]);
    let exported = out(&o);
    assert!(exported.contains("name: dns") && exported.contains("proto: udp"), "{exported}");
    let again = write(&net.dir, "again.yaml", &exported).display().to_string();
    assert!(out(&d.ctl(&["apply", &again])).contains("no changes"), "export round-trips through apply");
    assert!(out(&d.ctl(&["export", "--owner", "system"])).contains("name: sys"));
    assert!(d.ctl(&["remove", "dns"]).status.success());
    assert_eq!(d.ctl(&["remove", "dns"]).status.code(), Some(1));
    assert!(d.ctl(&["reload"]).status.success());
    assert_eq!(d.ctl_as("nobody", "", &["reload"]).status.code(), Some(4));
    // plan, completions and man work offline: ctl/tests/offline.rs.
}

#[test]
fn kill_9_keeps_traffic_and_restart_restores_sets() {
    let net = Net::setup();
    let cfg = config(&net, &grants());
    let mut d = Portd::start(&net, &cfg);
    let _app = net.tcp_app_as(&net.srv, "nobody", 8080, "app");
    let web = write(&net.dir, "web.yaml", "version: 1\nforwards:\n  - name: site\n    port: 80\n    to: 8080\n");
    let o = d.ctl_as("nobody", "", &["apply", web.to_str().expect("p")]);
    assert!(o.status.success(), "{}", err(&o));
    // root's own set: another target (a target port serves one owner)
    let _alt = net.tcp_app(&net.srv, 8081, "alt");
    assert!(d.ctl(&["add", "alt", "81", "8081"]).status.success());
    d.signal("KILL");
    d.wait();
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("app"), "traffic flows with portd dead");
    drop(d);
    let d = Portd::start(&net, &cfg);
    let js = d.status_json();
    let got = placed_names(&js);
    assert_eq!(got, vec!["user:nobody/site", "user:root/alt"]);
    assert_eq!(js["in_sync"], true);
    assert_eq!(net.tcp_get(&net.cli, SRV6, 81).as_deref(), Some("alt"));
}

#[test]
fn sighup_reloads_and_clean_stop_honours_on_exit() {
    let net = Net::setup();
    let mut d = Portd::start(&net, &config(&net, "forwards:\n  - name: a\n    port: 80\n    to: 8080\n"));
    let _app = net.tcp_app(&net.srv, 8181, "b");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 443), None);
    std::fs::write(&d.config, config(&net, "forwards:\n  - name: b\n    port: 443\n    to: 8181\n")).expect("edit");
    d.signal("HUP");
    wait_for(|| net.tcp_get(&net.cli, SRV4, 443).as_deref() == Some("b"), "reloaded forward to work");
    let st = out(&d.ctl(&["status"]));
    assert!(st.contains("system") && st.contains(" b ") && !st.contains(" a "), "{st}");
    // A broken config is refused on reload and the running rules stay.
    std::fs::write(&d.config, "version: 1\nforwards: [oops\n").expect("edit");
    d.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(net.tcp_get(&net.cli, SRV4, 443).as_deref(), Some("b"));
    assert!(Portd::log(&net).contains("reload failed"), "{}", Portd::log(&net));
    d.signal("TERM");
    assert_eq!(d.wait(), Some(0));
    assert!(net.table("portd").is_none(), "on_exit: remove deletes the table");
    drop(d);
    let keep = config(&net, "forwards:\n  - name: b\n    port: 443\n    to: 8181\n")
        .replace("  table: portd\n", "  table: portd\n  on_exit: keep\n");
    let mut d = Portd::start(&net, &keep);
    d.signal("INT");
    assert_eq!(d.wait(), Some(0));
    assert!(net.table("portd").is_some(), "on_exit: keep leaves the table");
}

#[test]
fn only_cap_net_admin_remains_and_ready_follows_the_rules() {
    let net = Net::setup();
    let notify = NotifyListener::new(&net.dir);
    let d = Portd::start_with(
        &net,
        &config(&net, "forwards:\n  - name: a\n    port: 80\n    to: 8080\n"),
        Some(&notify.path),
    );
    let msg = notify.wait_for("READY=1");
    // READY=1 arrives only once the rules are in the kernel: freeze portd the moment it
    // arrives and look (lifecycle.rs does the same with 5,000 forwards).
    freeze(d.child.id());
    let table = net.table("portd");
    thaw(d.child.id());
    let table = table.expect("table exists at READY=1");
    assert!(table.contains("tcp . 80 comment \"system/a\" : 8080"), "{table}");
    assert!(msg.contains("STATUS=1 forward(s)"), "{msg}");
    let status = read(std::path::Path::new(&format!("/proc/{}/status", d.child.id())));
    let field = |k: &str| status.lines().find(|l| l.starts_with(k)).map(|l| l[k.len()..].trim().to_string()).expect(k);
    assert_eq!(field("CapEff:"), "0000000000001000", "only CAP_NET_ADMIN effective");
    assert_eq!(field("CapPrm:"), "0000000000001000");
    assert_eq!(field("CapInh:"), "0000000000000000");
    assert_eq!(field("CapAmb:"), "0000000000000000");
    assert_eq!(field("CapBnd:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");
}

#[test]
fn unprivileged_user_with_ambient_cap_net_admin_runs_portd() {
    let net = Net::setup();
    let cfg = config(&net, "forwards:\n  - name: a\n    port: 80\n    to: 8080\n");
    std::fs::write(net.dir.join("portd.yaml"), &cfg).expect("config");
    std::fs::create_dir_all(net.dir.join("state")).expect("state");
    let o = sh("chown", &["-R", "nobody", net.dir.to_str().expect("p")]);
    assert!(o.status.success(), "chown -R nobody {}: {}", net.dir.display(), err(&o));
    let child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.srv,
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=+net_admin",
            "--ambient-caps=+net_admin",
        ])
        .arg(bin("portd"))
        .arg("--config")
        .arg(net.dir.join("portd.yaml"))
        .stderr(std::fs::File::create(net.dir.join("portd.log")).expect("log"))
        .spawn()
        .expect("setpriv");
    let d = Portd {
        child,
        socket: net.dir.join("portd.sock"),
        config: net.dir.join("portd.yaml"),
        state: net.dir.join("state"),
    };
    d.wait_ready(&net);
    assert!(net.table("portd").expect("table").contains("tcp . 80 comment \"system/a\" : 8080"));
    let status = read(std::path::Path::new(&format!("/proc/{}/status", d.child.id())));
    assert!(status.lines().any(|l| l == "CapEff:\t0000000000001000"), "{status}");
    assert!(status.lines().any(|l| l == "CapAmb:\t0000000000000000"), "{status}");
}

#[test]
fn malformed_requests_get_an_error_and_others_are_still_served() {
    use std::io::{BufRead, BufReader, Write};
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    s.write_all(b"this is not json\n").expect("write");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("answer");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json answer");
    assert_eq!(v["result"]["error"]["kind"], "protocol", "{line}");
    s.write_all(b"{\"version\": 99, \"command\": {\"op\": \"status\"}}\n").expect("write");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("answer");
    assert!(line.contains("protocol version 99 is not supported"), "{line}");
    // An idle client and a half-sent request do not block others.
    let _idle = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    let mut half = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    half.write_all(b"{\"version\": 1, ").expect("write");
    assert!(d.ctl(&["status"]).status.success());
}

#[test]
fn persisted_set_conflicting_with_the_config_is_suspended_at_start() {
    let net = Net::setup();
    let state = net.dir.join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(
        state.join("sets.json"),
        r#"{"version":1,"sets":{"user:daemon":[{"name":"alt","port":81,"to":8081}],"user:nobody":[{"name":"site","port":80,"to":9090}]}}"#,
    )
    .expect("state");
    let grants = "grants:\n  - {user: nobody, ports: [80]}\n  - {user: daemon, ports: [81]}\n";
    let d =
        Portd::start(&net, &config(&net, &format!("{grants}forwards:\n  - name: http\n    port: 80\n    to: 8080\n")));
    let js = d.status_json();
    let got = placed_names(&js);
    assert_eq!(got, vec!["system/http", "user:daemon/alt", "user:nobody/site"]);
    assert_eq!(js["in_sync"], true);
    let site = js["forwards"].as_array().expect("list").iter().find(|f| f["forward"]["name"] == "site").expect("site");
    assert_eq!(site["state"], "suspended", "{site}");
    assert!(site["reason"].as_str().unwrap_or("").contains("taken by system/http"), "{site}");
    let table = net.table("portd").expect("table");
    assert!(!table.contains("9090"), "the suspended forward is not in the kernel: {table}");
    let log = Portd::log(&net);
    assert!(log.contains("forward user:nobody/site suspended at start"), "{log}");
}

#[test]
fn a_set_growing_past_its_kernel_sets_size_is_applied_whole_with_larger_sets() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let one = write(&net.dir, "one.yaml", "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n");
    let o = d.ctl(&["apply", one.to_str().expect("path")]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(net.table("portd").expect("table").contains("size 1024"), "the smallest size first");
    // 1,500 more forwards: more elements than fwd_to and fwd_count were created for.
    let mut text = String::from("version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n");
    for i in 0..1500u32 {
        text.push_str(&format!("  - name: p{i}\n    port: {}\n    to: {}\n", 20000 + i, 40000 + i));
    }
    let big = write(&net.dir, "big.yaml", &text);
    let o = d.ctl(&["apply", big.to_str().expect("path")]);
    assert!(o.status.success(), "{}", err(&o));
    let table = net.table("portd").expect("table");
    let to = table.split("map fwd_to {").nth(1).expect("fwd_to");
    assert!(to.trim_start().contains("size 4096"), "fwd_to created anew with room for twice 1,501: {}", &to[..200]);
    let o = net.exec(&net.srv, "nft", &["-j", "list", "map", "inet", "portd", "fwd_to"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("nft -j");
    assert_eq!(v["nftables"][1]["map"]["elem"].as_array().map_or(0, Vec::len), 1501);
    assert_eq!(d.status_json()["in_sync"], true);
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("app"), "traffic still redirected");
    let log = Portd::log(&net);
    assert!(log.contains("more than the 1024 it was created for"), "the growth is logged:\n{log}");
}
