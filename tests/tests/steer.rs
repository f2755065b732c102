//! Steered TCP forwards, end to end: the real portd with its BPF data plane (pinned in
//! each test's own bpffs), real traffic between two namespaces, over IPv4 and IPv6.
//! Ownership of target ports is in ownership.rs.

use portd_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod steer_common;
use steer_common::*;

#[test]
fn steered_forward_reaches_the_owners_app_over_both_families_without_nat_or_conntrack() {
    let net = Net::setup();
    let alice = TestUser::new("st");
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    let s = d.status_json();
    assert_eq!(s["dispatch"], "steer", "{s}");
    assert_eq!(s["ownership"], "kernel", "{s}");
    let o = apply_as(&d, &net, &alice.name, &web(80, 8080));
    assert!(o.status.success(), "apply: {}", err(&o));
    assert_eq!(forward(&d.status_json(), "web")["listening"], false, "nothing listens yet");
    assert_eq!(get(&net, SRV4, 80), None, "no app: refused, never handed to anyone else");

    // The app reports the local port its client used: steering keeps port 80.
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8080, "port-$SOCAT_SOCKPORT");
    for (ns, addr) in [(&net.cli, SRV4), (&net.cli, SRV6), (&net.srv, "127.0.0.1"), (&net.srv, "::1"), (&net.srv, SRV4)]
    {
        assert_eq!(net.tcp_get(ns, addr, 80).as_deref(), Some("port-80"), "{addr}:80 from {ns}");
    }
    let st = d.status_json();
    let f = forward(&st, "web");
    assert_eq!(f["dispatch"], "steer");
    assert_eq!(f["listening"], true);
    assert!(f["packets"].as_u64().unwrap_or(0) > 0, "counted without conntrack: {f}");
    // No NAT anywhere, and no conntrack entry for any of these connections.
    let table = net.table("portd").expect("table");
    assert!(table.contains("elements = { tcp . 80 comment \"user:"), "steered target in fwd_steer:\n{table}");
    for _ in 0..50 {
        assert_eq!(get(&net, SRV4, 80).as_deref(), Some("port-80"));
    }
    let ct = net.exec(&net.srv, "conntrack", &["-L"]);
    let entries = String::from_utf8_lossy(&ct.stdout);
    assert!(!entries.contains("dport=80 "), "steered connections left conntrack entries:\n{entries}");
    // The target port is closed to other hosts without the forward: nothing NATs to it,
    // and 8080 is reachable directly only because the app listens there (no protect).
    // The reserved target port and the public port are kept out of automatic port
    // selection.
    let reserved = net.exec_ok(&net.srv, "cat", &["/proc/sys/net/ipv4/ip_local_reserved_ports"]);
    assert_eq!(reserved.trim(), "80,8080", "ip_local_reserved_ports");
    // The operator's rewrite of the sysctl (`sysctl --system`) drops it; a reload (and the
    // check once a minute) puts it back beside the operator's value.
    net.exec_ok(&net.srv, "sysctl", &["-qw", "net.ipv4.ip_local_reserved_ports=40000-40010"]);
    assert!(d.ctl(&["reload"]).status.success());
    let reserved = net.exec_ok(&net.srv, "cat", &["/proc/sys/net/ipv4/ip_local_reserved_ports"]);
    assert_eq!(reserved.trim(), "80,8080,40000-40010", "after the rewrite and a reload");
    let m = d.ctl(&["metrics"]);
    assert!(out(&m).contains("portd_dataplane{dispatch=\"steer\",ownership=\"kernel\""), "{}", out(&m));
    assert!(out(&m).contains("portd_forward_target_listening{owner=\"user:"), "{}", out(&m));
}

#[test]
fn a_steered_forward_is_counted_by_its_connections_open_and_closed() {
    // Nothing of portd's sees a steered packet: the connection's own socket counts what it
    // receives, read through sock_diag while it is open and added up by the sockops
    // program when it closes. The byte count is the TCP payload (and one for a FIN).
    let net = Net::setup();
    let config = config(&net, "forwards:\n  - name: http\n    port: 80\n    to: 8080\n");
    let d = Portd::start_bpf(&net, &config, &[]);
    // An app that reads everything and keeps each connection until the client closes it,
    // and listens until the test ends. (An open connection counts while a socket of its
    // uid listens on the target: that tells it from another uid's socket on port 80.)
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let app = spawn_in_netns(&net.srv, move || {
        let l = std::net::TcpListener::bind("[::]:8080").expect("bind 8080");
        ready_tx.send(()).expect("ready");
        for _ in 0..2 {
            let (mut c, _) = l.accept().expect("accept");
            std::thread::spawn(move || std::io::copy(&mut c, &mut std::io::sink()));
        }
        stop_rx.recv().ok();
    });
    ready_rx.recv().expect("app listening");
    wait_for(|| forward(&d.status_json(), "http")["listening"] == true, "the app to be registered");
    let counts = || {
        let st = d.status_json();
        let f = forward(&st, "http");
        (f["packets"].as_u64().unwrap_or(0), f["bytes"].as_u64().unwrap_or(0))
    };
    assert_eq!(counts(), (0, 0), "nothing connected yet");
    assert_eq!(
        forward(&d.status_json(), "http")["mark"],
        0,
        "a steered forward without a mark of its own marks nothing"
    );
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let client = spawn_in_netns(&net.cli, move || {
        let mut v4 = TcpStream::connect((SRV4, 80)).expect("connect v4");
        v4.write_all(&[7u8; 100_000]).expect("send v4");
        let mut v6 = TcpStream::connect(format!("[{SRV6}]:80")).expect("connect v6");
        v6.write_all(&[7u8; 50_000]).expect("send v6");
        close_rx.recv().ok();
    });
    // Open: read from the sockets.
    wait_for(|| counts().1 == 150_000, "the open connections' 150,000 bytes to be counted");
    let (open_packets, _) = counts();
    assert!(open_packets >= 2 * 3, "SYN, ACK and data of two connections at least: {open_packets}");
    // Closed: kept by the data plane, never going back.
    close_tx.send(()).expect("close");
    client.join().expect("client");
    let conns = || net.exec_ok(&net.srv, "ss", &["-Htn", "state", "established", "sport", "= :80"]);
    wait_for(|| conns().trim().is_empty(), "the steered connections to close");
    std::thread::sleep(Duration::from_millis(200));
    let (packets, bytes) = counts();
    // (the kernel's bytes_received counts a FIN as the sequence number it takes)
    assert_eq!(bytes, 150_002, "payload bytes of both closed connections and their FINs");
    assert!(packets >= open_packets + 2, "each connection's FIN counted once it closed: {open_packets} then {packets}");
    stop_tx.send(()).expect("stop");
    app.join().expect("app");
    // A status of a restarted portd still has them (the counts are pinned).
    drop(d);
    let d = Portd::start_bpf(&net, &config, &[]);
    assert_eq!(forward(&d.status_json(), "http")["bytes"], 150_002, "kept across a restart");
}

#[test]
fn steered_connections_are_untracked_exactly_while_conntrack_runs_for_someone_else() {
    let net = Net::setup();
    let (d, _app) = served_system_forward(&net, "http", 80, 8080);
    // Nothing runs conntrack: a steered forward of the default kind passes no chain of
    // portd's (no steer_in, no raw, no nat chain), and its sockets count it.
    let table = net.table("portd").expect("table");
    assert!(!table.contains("hook input"), "{table}");
    assert!(!table.contains("notrack") && !table.contains("type nat"), "{table}");
    assert_eq!(d.status_json()["untracked"], false);
    assert_eq!(get(&net, SRV4, 80).as_deref(), Some("port-80"));
    // A firewall with a `ct state` rule turns conntrack on: portd, woken by that
    // firewall's nftables commit, untracks steered connections in raw chains at once,
    // and they leave no entry.
    let t = std::time::Instant::now();
    nft_file(
        &net,
        "table inet fw {\n chain input {\n  type filter hook input priority filter; policy accept;\n  ct state established,related accept\n }\n}\n",
    );
    wait_for(
        || net.table("portd").is_some_and(|t| t.contains("chain raw_prerouting {") && t.contains("notrack")),
        "portd to untrack steered connections once conntrack runs",
    );
    // (the periodic check, every 2 s, would be slower)
    assert!(t.elapsed() < Duration::from_millis(1500), "untracked only after {:?}", t.elapsed());
    assert_eq!(d.status_json()["untracked"], true);
    assert!(out(&d.ctl(&["status"])).contains("untracked (conntrack runs here)"), "{}", out(&d.ctl(&["status"])));
    assert!(out(&d.ctl(&["metrics"])).contains("portd_steer_untracked 1"), "{}", out(&d.ctl(&["metrics"])));
    net.exec(&net.srv, "conntrack", &["-F"]);
    for addr in [SRV4, SRV6] {
        for _ in 0..10 {
            assert_eq!(get(&net, addr, 80).as_deref(), Some("port-80"), "{addr}");
        }
    }
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 80).as_deref(), Some("port-80"), "local client");
    let entries = net.exec_ok(&net.srv, "conntrack", &["-L"]);
    assert!(!entries.contains("dport=80 "), "steered connections tracked although conntrack runs:\n{entries}");
    let counted = forward(&d.status_json(), "http")["packets"].as_u64().unwrap_or(0);
    // The firewall goes: so do the raw chains, 5 s later (a firewall's reload turns
    // conntrack off for a moment only), and steering goes on.
    let t = std::time::Instant::now();
    net.exec_ok(&net.srv, "nft", &["delete", "table", "inet", "fw"]);
    assert!(net.table("portd").is_some_and(|t| t.contains("notrack")), "raw chains kept at first");
    wait_for(
        || net.table("portd").is_some_and(|t| !t.contains("notrack") && !t.contains("hook ")),
        "portd to drop its raw chains once nothing runs conntrack",
    );
    assert!(t.elapsed() >= Duration::from_secs(4), "raw chains gone after {:?}, before the hold", t.elapsed());
    assert_eq!(get(&net, SRV4, 80).as_deref(), Some("port-80"));
    let now = forward(&d.status_json(), "http")["packets"].as_u64().unwrap_or(0);
    assert!(now > counted, "counters kept when the raw chains come and go: {counted} then {now}");
    let log = Portd::log(&net);
    assert!(log.contains("conntrack runs in this namespace"), "{log}");
}

#[test]
fn a_full_conntrack_table_keeps_steered_connections_untracked() {
    // Whoever fills the conntrack table (any local user can, with flows of its own) makes
    // portd's probe datagram fail as if nothing tracked it: portd must go on untracking,
    // which is what keeps steered connections working then.
    let net = Net::setup();
    let (d, _app) = served_system_forward(&net, "http", 80, 8080);
    nft_file(
        &net,
        "table inet fw {\n chain input {\n  type filter hook input priority filter; policy accept;\n  ct state established,related accept\n }\n}\n",
    );
    wait_for(|| d.status_json()["untracked"] == true, "portd to untrack steered connections");
    let max: usize =
        net.exec_ok(&net.srv, "cat", &["/proc/sys/net/netfilter/nf_conntrack_max"]).trim().parse().expect("max");
    assert!(max <= 4_000_000, "nf_conntrack_max is {max}: filling it would take too long for this test");
    let mut lines = String::with_capacity(max * 110);
    'fill: for a in 1..=255u32 {
        for sport in 1..=65535u32 {
            if lines.len() / 100 > max + 10 {
                break 'fill;
            }
            lines.push_str(&format!(
                "-I -s 10.251.{a}.1 -d 10.251.0.1 -p tcp --sport {sport} --dport 9 --state ESTABLISHED -u ASSURED -t 600\n"
            ));
        }
    }
    let file = write(&net.dir, "fill.ct", &lines);
    let _ = net.exec(&net.srv, "conntrack", &["-R", file.to_str().expect("path")]);
    let count: usize =
        net.exec_ok(&net.srv, "cat", &["/proc/sys/net/netfilter/nf_conntrack_count"]).trim().parse().expect("count");
    assert!(count >= max, "the table holds {count} of {max}");
    // Longer than the periodic check (2 s) and the hold before the raw chains go (5 s).
    std::thread::sleep(Duration::from_secs(8));
    let st = d.status_json();
    assert_eq!(st["untracked"], true, "{st}");
    assert!(net.table("portd").is_some_and(|t| t.contains("notrack")), "raw chains dropped while conntrack is full");
    for addr in [SRV4, SRV6] {
        assert_eq!(get(&net, addr, 80).as_deref(), Some("port-80"), "{addr}: a steered connection with conntrack full");
    }
    assert!(!Portd::log(&net).contains("conntrack no longer runs"), "{}", Portd::log(&net));
    net.exec(&net.srv, "conntrack", &["-F"]);
}

#[test]
fn a_udp_forward_brings_nat_chains_and_takes_them_away_counters_kept() {
    let net = Net::setup();
    let alice = TestUser::new("su");
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8080, "port-$SOCAT_SOCKPORT");
    let tcp_only = web(80, 8080);
    let with_udp = format!("{tcp_only}  - name: dns\n    port: 81\n    to: 8081\n    proto: udp\n");
    assert!(apply_as(&d, &net, &alice.name, &tcp_only).status.success());
    for _ in 0..5 {
        assert_eq!(get(&net, SRV4, 80).as_deref(), Some("port-80"));
    }
    let packets = || forward(&d.status_json(), "web")["packets"].as_u64().unwrap_or(0);
    let before = packets();
    assert!(before > 0, "counted");
    let has_nat = || net.table("portd").is_some_and(|t| t.contains("type nat hook prerouting"));
    assert!(!has_nat(), "a steer table without NAT forwards has no nat chain");
    // The UDP forward is redirected: the table gains its nat chains, in place.
    let o = apply_as(&d, &net, &alice.name, &with_udp);
    assert!(o.status.success(), "apply: {}", err(&o));
    assert!(has_nat(), "{:?}", net.table("portd"));
    let udp = net.udp_app_as(&net.srv, &alice.name, 8081, "udp-ok");
    let ask = || {
        let o = net.exec(&net.cli, "sh", &["-c", &format!("echo x | timeout 3 socat -T1 - UDP4:{SRV4}:81")]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(ask(), "udp-ok", "UDP forward redirected under a steer plan");
    assert_eq!(get(&net, SRV4, 80).as_deref(), Some("port-80"), "TCP still steered");
    assert!(packets() > before, "the steered forward's counter went on, it did not start over");
    // The UDP forward goes: so do the nat chains, and the counters stay.
    let mid = packets();
    assert!(apply_as(&d, &net, &alice.name, &tcp_only).status.success());
    assert!(!has_nat(), "{:?}", net.table("portd"));
    assert_eq!(get(&net, SRV4, 80).as_deref(), Some("port-80"));
    assert!(packets() > mid, "counters kept across the change of chains");
    drop(udp);
    assert_eq!(d.status_json()["in_sync"], true);
}

#[test]
fn protect_and_restricted_forwards_bring_their_rules_and_take_them_away_counters_kept() {
    // With forwards of the default kind only, there is no steer_in: the drop of `protect`
    // and the lookup of restricted forwards are in the table only while a forward needs
    // them, and come and go in place.
    let net = Net::setup();
    let alice = TestUser::new("sp");
    let text = config(&net, &format!("grants:\n{}    protect: true\n", grant(&alice.name, "\"80-81\"")));
    let d = Portd::start_bpf(&net, &text, &[]);
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8080, "port-$SOCAT_SOCKPORT");
    let _other = net.tcp_app_as(&net.srv, &alice.name, 8081, "port-$SOCAT_SOCKPORT");
    let plain = web(80, 8080);
    let protected = format!("{plain}  - name: prot\n    port: 81\n    to: 8081\n    protect: true\n");
    let restricted =
        format!("{plain}  - name: lim\n    port: 81\n    to: 8081\n    sources: [\"0.0.0.0/0\", \"::/0\"]\n");
    let packets = || forward(&d.status_json(), "web")["packets"].as_u64().unwrap_or(0);
    let table = || net.table("portd").unwrap_or_default();
    let (drop_rule, second_lookup) = ("@fwd_protect drop", "goto steer_more");
    let mut last = 0;
    for (rules, has_drop, has_more) in
        [(&plain, false, false), (&protected, true, false), (&restricted, false, true), (&plain, false, false)]
    {
        let o = apply_as(&d, &net, &alice.name, rules);
        assert!(o.status.success(), "apply: {}", err(&o));
        let t = table();
        assert_eq!(t.contains(drop_rule), has_drop, "protect's drop, {rules}: {t}");
        assert_eq!(t.contains(second_lookup), has_more, "the second lookup, {rules}: {t}");
        assert_eq!(t.contains("chain steer_more"), has_more, "{t}");
        assert_eq!(get(&net, SRV4, 80).as_deref(), Some("port-80"));
        assert_eq!(get(&net, SRV6, 80).as_deref(), Some("port-80"));
        if has_drop {
            assert_eq!(get(&net, SRV4, 8081), None, "protect: the target is closed to other hosts");
        }
        if has_more || has_drop {
            assert_eq!(get(&net, SRV4, 81).as_deref(), Some("port-81"));
        }
        let now = packets();
        assert!(now > last, "the web forward's counter went on across the change ({last} -> {now})");
        last = now;
        assert_eq!(d.status_json()["in_sync"], true);
    }
}

#[test]
fn a_second_owner_cannot_claim_a_steered_public_port_in_either_family() {
    // Two users granted the same public port: whoever applies second is refused, whatever
    // families either names, and the first one's traffic stays with its app.
    let net = Net::setup();
    let (alice, mallory) = (TestUser::new("sa"), TestUser::new("sm"));
    let text = config(&net, &format!("grants:\n{}{}", grant(&alice.name, "80"), grant(&mallory.name, "80")));
    let d = Portd::start_bpf(&net, &text, &[]);
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8080, "alice");
    let _other = net.tcp_app_as(&net.srv, &mallory.name, 9000, "mallory");
    for (first, second) in [("", "ipv4"), ("", "ipv6"), ("", ""), ("ipv4", ""), ("ipv4", "ipv4"), ("ipv6", "")] {
        let rules = |to: u16, fam: &str| {
            let fam = if fam.is_empty() { String::new() } else { format!("    family: {fam}\n") };
            format!("{}{fam}", web(80, to))
        };
        assert!(apply_as(&d, &net, &alice.name, &rules(8080, first)).status.success());
        let o = apply_as(&d, &net, &mallory.name, &rules(9000, second));
        assert_eq!(o.status.code(), Some(1), "families {first:?} then {second:?}: {}", out(&o));
        assert!(err(&o).contains("80"), "the refusal names the port: {}", err(&o));
        let fams: &[&str] = match first {
            "ipv4" => &[SRV4],
            "ipv6" => &[SRV6],
            _ => &[SRV4, SRV6],
        };
        for a in fams {
            assert_eq!(get(&net, a, 80).as_deref(), Some("alice"), "families {first:?} then {second:?}");
        }
        assert!(apply_as(&d, &net, &alice.name, "version: 1\nforwards: []\n").status.success());
    }
}

#[test]
fn a_system_forward_is_steered_to_whoever_serves_its_target() {
    let net = Net::setup();
    let (_d, _app) = served_system_forward(&net, "ssh", 22, 2222);
    assert_eq!(get(&net, SRV4, 22).as_deref(), Some("port-22"));
    assert_eq!(get(&net, SRV6, 22).as_deref(), Some("port-22"));
    // System targets are not reserved: the operator's config decides who serves them.
    let reserved = net.exec_ok(&net.srv, "cat", &["/proc/sys/net/ipv4/ip_local_reserved_ports"]);
    assert!(!reserved.contains("2222"), "{reserved}");
}

#[test]
fn a_ban_on_the_public_port_applies_to_steered_connections() {
    // What fail2ban's nftables-multiport action and ufw's `deny from` write: rules on
    // `tcp dport 80` at input. With NAT they never saw port 80; steered, they do.
    let net = Net::setup();
    let alice = TestUser::new("st");
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    assert!(apply_as(&d, &net, &alice.name, &web(80, 8080)).status.success());
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8080, "app");
    assert_eq!(get(&net, SRV4, 80).as_deref(), Some("app"));
    let ban = format!(
        "table inet f2b-table {{\n chain f2b-chain {{\n  type filter hook input priority filter - 1; policy accept;\n  \
         tcp dport {{ 80, 443 }} ip saddr {CLI4} reject\n  tcp dport {{ 80, 443 }} ip6 saddr {CLI6} reject\n }}\n}}\n"
    );
    nft_file(&net, &ban);
    assert_eq!(get(&net, SRV4, 80), None, "the banned client got through over IPv4");
    let doc = d.ctl(&["doctor", "--json"]);
    assert_eq!(doc.status.code(), Some(0), "steered, the ban applies as written: {}", out(&doc));
    assert!(!out(&doc).contains("foreign-block"), "{}", out(&doc));
    assert_eq!(get(&net, SRV6, 80), None, "the banned client got through over IPv6");
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 80).as_deref(), Some("app"), "others still reach the app");
    net.exec_ok(&net.srv, "nft", &["delete", "table", "inet", "f2b-table"]);
    // ufw's shape: policy drop, only 80 allowed. Steered traffic passes as port 80,
    // and the target port stays closed to other hosts.
    nft_file(
        &net,
        "table inet ufwlike {\n chain input {\n  type filter hook input priority filter; policy drop;\n  \
         iifname \"lo\" accept\n  ct state established,related accept\n  tcp dport 80 accept\n }\n}\n",
    );
    assert_eq!(get(&net, SRV4, 80).as_deref(), Some("app"), "allow 80/tcp lets steered traffic in");
    assert_eq!(get(&net, SRV6, 80).as_deref(), Some("app"));
    assert_eq!(get(&net, SRV4, 8080), None, "8080 stays closed to other hosts");
    let doc = d.ctl(&["doctor", "--json"]);
    assert_eq!(doc.status.code(), Some(0), "ufw's natural config needs no fix when steered: {}", out(&doc));
}

#[test]
fn restarts_keep_steering_with_no_refused_connection_and_stop_removes_everything() {
    let net = Net::setup();
    let alice = TestUser::new("st");
    let keep = granted(&net, &alice.name, "  on_exit: keep\n");
    let mut d = Portd::start_bpf(&net, &keep, &[]);
    assert!(apply_as(&d, &net, &alice.name, &web(80, 8080)).status.success());
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8080, "alice");
    // A client connecting back to back from the server namespace while portd restarts.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let client = spawn_in_netns(&net.srv, move || {
        let (mut ok, mut failed) = (0u32, 0u32);
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let addr: SocketAddr = "127.0.0.1:80".parse().expect("addr");
            let mut reply = String::new();
            match TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .and_then(|mut s| s.read_to_string(&mut reply))
            {
                Ok(_) if reply.trim() == "alice" => ok += 1,
                _ => failed += 1,
            }
        }
        (ok, failed)
    });
    std::thread::sleep(Duration::from_millis(300));
    d.signal("TERM");
    assert_eq!(d.wait(), Some(0));
    std::thread::sleep(Duration::from_millis(300));
    let d2 = Portd::start_bpf(&net, &keep, &[]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = client.join().expect("client");
    assert_eq!(failed, 0, "{failed} connections failed across the restart ({ok} succeeded)");
    assert!(ok > 20, "only {ok} connections");
    drop(d2);
    // A clean stop with on_exit: remove takes the table and every pin away: the port is
    // free again and nothing steers.
    let remove = granted(&net, &alice.name, "");
    let mut d3 = Portd::start_bpf(&net, &remove, &[]);
    d3.signal("TERM");
    assert_eq!(d3.wait(), Some(0));
    let pins = net.bpffs().join("portd/portd");
    wait_for(|| !pins.exists(), "the pins to go");
    let _ = _app;
    wait_for(|| binds_as(&net, &TestUser::new("sm").name, 8080).contains("bound"), "the reservation to go");
}

#[test]
fn without_cap_bpf_portd_falls_back_to_nat_and_says_why() {
    let net = Net::setup();
    let alice = TestUser::new("st");
    let config = granted(&net, &alice.name, "");
    std::fs::write(net.dir.join("portd.yaml"), &config).expect("config");
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{}", net.srv))
        .args(["capsh", "--drop=cap_bpf,cap_perfmon,cap_sys_admin", "--"])
        .arg("-c")
        .arg(format!(
            "exec {} --config {} --bpffs {}",
            bin("portd").display(),
            net.dir.join("portd.yaml").display(),
            net.bpffs().display()
        ))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(net.dir.join("portd.log")).expect("log"));
    let child = cmd.spawn().expect("capsh (libcap2-bin) runs portd without CAP_BPF");
    let d = Portd {
        child,
        socket: net.dir.join("portd.sock"),
        config: net.dir.join("portd.yaml"),
        state: net.dir.join("state"),
    };
    d.wait_ready(&net);
    let s = d.status_json();
    assert_eq!(s["dispatch"], "nat", "{s}");
    assert_eq!(s["ownership"], "polled", "{s}");
    assert!(s["dataplane_reason"].as_str().unwrap_or("").contains("CAP_BPF"), "{s}");
    assert!(
        out(&d.ctl(&["status"])).contains("dispatch nat  ownership polled  (no CAP_BPF"),
        "{}",
        out(&d.ctl(&["status"]))
    );
    assert!(apply_as(&d, &net, &alice.name, &web(80, 8080)).status.success());
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8080, "port-$SOCAT_SOCKPORT");
    assert_eq!(get(&net, SRV4, 80).as_deref(), Some("port-8080"), "NAT: the app sees its own port");
    assert!(!Path::new(&net.bpffs().join("portd/portd")).exists(), "nothing pinned");
    let _ = std::io::stdout().flush();
}

#[test]
fn sources_interfaces_protect_and_marks_hold_for_steered_forwards() {
    let net = Net::setup();
    let fwd = format!(
        "forwards:\n\
         \x20 - {{name: src, port: 83, to: 8083, sources: [\"{CLI4}/32\", \"{CLI6}/128\"]}}\n\
         \x20 - {{name: ifok, port: 84, to: 8084, interfaces: [vsrv]}}\n\
         \x20 - {{name: ifno, port: 85, to: 8085, interfaces: [eth9]}}\n\
         \x20 - {{name: prot, port: 86, to: 8086, protect: true, mark: 0x2a}}\n"
    );
    let d = Portd::start_bpf(&net, &config(&net, &fwd), &[]);
    let _apps: Vec<Bg> =
        [8083, 8084, 8085, 8086].iter().map(|p| net.tcp_app(&net.srv, *p, &format!("app{p}"))).collect();
    wait_for(
        || d.status_json()["forwards"].as_array().is_some_and(|a| a.iter().all(|f| f["listening"] == true)),
        "every app to be registered",
    );
    // sources: the client's own address is allowed, a second address of the same host is not.
    assert_eq!(get(&net, SRV4, 83).as_deref(), Some("app8083"));
    assert_eq!(get(&net, SRV6, 83).as_deref(), Some("app8083"));
    net.exec_ok(&net.cli, "ip", &["addr", "add", "10.250.0.3/24", "dev", "vcli"]);
    let other = net.exec(
        &net.cli,
        "timeout",
        &["3", "socat", "-T2", "-", "TCP:10.250.0.1:83,bind=10.250.0.3,connect-timeout=2"],
    );
    assert!(!out(&other).contains("app8083"), "a source outside `sources` reached the app");
    assert!(err(&other).contains("refused"), "refused at once, like a port nothing listens on: {}", err(&other));
    // The host's own connections are not subject to sources or interfaces, as with NAT.
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 83).as_deref(), Some("app8083"));
    // interfaces
    assert_eq!(get(&net, SRV4, 84).as_deref(), Some("app8084"));
    assert_eq!(get(&net, SRV4, 85), None, "traffic on another interface than `interfaces` is steered");
    assert_eq!(net.tcp_get(&net.srv, SRV4, 85).as_deref(), Some("app8085"), "local connections pass");
    // protect: the target refuses other hosts that did not come through the public port.
    assert_eq!(get(&net, SRV4, 86).as_deref(), Some("app8086"));
    assert_eq!(get(&net, SRV4, 8086), None, "protect lets other hosts reach the target directly");
    assert_eq!(get(&net, SRV4, 8084).as_deref(), Some("app8084"), "an unprotected target stays reachable");
    // mark: packets of the steered forward carry it at input, where other tables see it.
    nft_file(
        &net,
        "table inet watch {\n chain input {\n  type filter hook input priority filter + 10; policy accept;\n  meta mark 0x2a tcp dport 86 counter\n }\n}\n",
    );
    assert_eq!(get(&net, SRV4, 86).as_deref(), Some("app8086"));
    let listing = net.exec_ok(&net.srv, "nft", &["list", "chain", "inet", "watch", "input"]);
    let packets: u64 = listing
        .split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(packets > 0, "no marked packet reached input:\n{listing}");
    let st = d.status_json();
    for name in ["src", "ifok", "prot"] {
        assert!(forward(&st, name)["packets"].as_u64().unwrap_or(0) > 0, "{name} counts: {st}");
    }
}

#[test]
fn path_mtu_discovery_works_through_a_1280_byte_hop() {
    // far (MTU 1500) -- the client namespace as a router (1280 toward far) -- server:
    // far advertises a 1460-byte MSS, so only an ICMP "too big" from the router, delivered
    // to the app's steered socket, lets a large answer through.
    let net = Net::setup();
    let far = format!("pdf{}", std::process::id());
    let _ = sh("ip", &["netns", "del", &far]);
    assert!(sh("ip", &["netns", "add", &far]).status.success());
    struct Del(String);
    impl Drop for Del {
        fn drop(&mut self) {
            let _ = sh("ip", &["netns", "del", &self.0]);
        }
    }
    let _far = Del(far.clone());
    let ip = |ns: &str, args: &[&str]| {
        let mut a = vec!["-n", ns];
        a.extend_from_slice(args);
        let o = sh("ip", &a);
        assert!(o.status.success(), "ip {a:?}: {}", err(&o));
    };
    let _ =
        sh("ip", &["link", "add", "vrtr", "netns", &net.cli, "type", "veth", "peer", "name", "vfar", "netns", &far]);
    ip(&net.cli, &["link", "set", "vrtr", "mtu", "1280", "up"]);
    ip(&net.cli, &["addr", "add", "10.253.0.1/24", "dev", "vrtr"]);
    ip(&net.cli, &["addr", "add", "fd00:253::1/64", "dev", "vrtr", "nodad"]);
    ip(&far, &["link", "set", "lo", "up"]);
    ip(&far, &["link", "set", "vfar", "up"]);
    ip(&far, &["addr", "add", "10.253.0.2/24", "dev", "vfar"]);
    ip(&far, &["addr", "add", "fd00:253::2/64", "dev", "vfar", "nodad"]);
    ip(&far, &["route", "add", "default", "via", "10.253.0.1"]);
    ip(&far, &["-6", "route", "add", "default", "via", "fd00:253::1"]);
    ip(&net.srv, &["route", "add", "10.253.0.0/24", "via", CLI4]);
    ip(&net.srv, &["-6", "route", "add", "fd00:253::/64", "via", CLI6]);
    net.exec_ok(&net.cli, "sysctl", &["-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
    // Routing through the middle namespace settles (neighbours, the router mode forwarding
    // switches on) before the test judges anything.
    for addr in [SRV4, SRV6] {
        wait_for(
            || sh("ip", &["netns", "exec", &far, "ping", "-c1", "-W1", addr]).status.success(),
            &format!("{addr} to answer pings from the far namespace"),
        );
    }

    let alice = TestUser::new("st");
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    assert!(apply_as(&d, &net, &alice.name, &web(80, 8080)).status.success());
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8080, "$(head -c 200000 /dev/zero | tr '\\\\0' x)");
    wait_for(|| forward(&d.status_json(), "web")["listening"] == true, "the app to be registered");
    for addr in [SRV4, SRV6] {
        let target = if addr.contains(':') { format!("TCP:[{addr}]:80") } else { format!("TCP:{addr}:80") };
        let o = sh("ip", &["netns", "exec", &far, "timeout", "10", "socat", "-T5", "-", &target]);
        let got = o.stdout.iter().filter(|b| **b == b'x').count();
        assert_eq!(got, 200_000, "{addr}: {got} of 200000 bytes through the 1280-byte hop; {}", err(&o));
    }
}

#[test]
fn an_app_restart_under_load_refuses_only_while_nothing_listens_and_never_delivers_elsewhere() {
    let net = Net::setup();
    let (alice, mallory) = (TestUser::new("st"), TestUser::new("sm"));
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    assert!(apply_as(&d, &net, &alice.name, &web(80, 8080)).status.success());
    // Another account serves a port of its own all along: it must never get a connection.
    let _other = net.tcp_app_as(&net.srv, &mallory.name, 8099, "mallory");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let client = spawn_in_netns(&net.cli, move || {
        let mut replies = std::collections::BTreeMap::<String, u32>::new();
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            let addr: SocketAddr = format!("{SRV4}:80").parse().expect("addr");
            let mut reply = String::new();
            let key = match TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .and_then(|mut s| s.read_to_string(&mut reply))
            {
                Ok(_) => reply.trim().to_string(),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".into(),
                Err(e) => format!("error {}", e.kind()),
            };
            *replies.entry(key).or_default() += 1;
        }
        replies
    });
    for round in 0..3 {
        let app = net.tcp_app_as(&net.srv, &alice.name, 8080, &format!("alice{round}"));
        std::thread::sleep(Duration::from_millis(400));
        drop(app);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let replies = client.join().expect("client");
    eprintln!("replies during three restarts: {replies:?}");
    for (reply, n) in &replies {
        // A reset: a connection queued on the listener that was killed (the app's own);
        // an empty answer: one the app had accepted when it was killed (socat's child
        // gone before it wrote). Never another account's answer.
        let ok =
            reply.starts_with("alice") || reply == "refused" || reply == "error connection reset" || reply.is_empty();
        assert!(ok, "{n} connection(s) ended in `{reply}`: {replies:?}");
    }
    for round in 0..3 {
        assert!(
            replies.get(&format!("alice{round}")).is_some_and(|n| *n > 0),
            "run {round} was not reached: {replies:?}"
        );
    }
}
