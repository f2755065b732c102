//! What a NAT forward counts and marks is exactly what its clients send to the app: every
//! packet of a redirected connection, at input; `protect` refuses the target to other
//! hosts; the counts are the table's and outlive the connections' conntrack entries and
//! a restart of portd. The real daemon against the real kernel in throwaway namespaces
//! (`ip netns exec`: no bpffs, so NAT).

use portd_tests::*;

/// (packets, bytes) of the first and second `counter` in an nft listing.
fn counters(listing: &str) -> Vec<(u64, u64)> {
    listing
        .split("counter packets ")
        .skip(1)
        .map(|r| {
            let w: Vec<&str> = r.split_whitespace().collect();
            (w[0].parse().expect("packets"), w[2].parse().expect("bytes"))
        })
        .collect()
}

fn counts(d: &Portd) -> (u64, u64) {
    let st = d.status_json();
    let f = forward_status(&st, "user:root", "http").expect("forward http");
    (f["packets"].as_u64().expect("packets"), f["bytes"].as_u64().expect("bytes"))
}

#[test]
fn nat_forwards_count_and_mark_what_reaches_the_app_and_protect_their_target() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, "  on_exit: keep\n"));
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let rules = write(
        &net.dir,
        "rules.yaml",
        "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n    protect: true\n",
    );
    let o = d.ctl(&["apply", rules.to_str().expect("path")]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(forward_status(&d.status_json(), "user:root", "http").expect("http")["dispatch"], "nat");
    // What reaches the app (after NAT, at input): every packet, and the marked ones.
    let watch = write(
        &net.dir,
        "watch.nft",
        "table inet watch {\n chain input {\n  type filter hook input priority filter + 10; policy accept;\n  tcp dport 8080 counter\n  tcp dport 8080 meta mark 0x1 counter\n }\n}\n",
    );
    net.exec_ok(&net.srv, "nft", &["-f", watch.to_str().expect("utf-8")]);
    for addr in [SRV4, SRV6, SRV4, SRV6] {
        assert_eq!(net.tcp_get(&net.cli, addr, 80).as_deref(), Some("app"), "client via {addr}:80");
    }
    // (the connections' last segments settle first)
    std::thread::sleep(std::time::Duration::from_millis(300));
    let seen = counters(&net.exec_ok(&net.srv, "nft", &["list", "chain", "inet", "watch", "input"]));
    let counted = counts(&d);
    assert_eq!(counted, seen[0], "the forward counts exactly what its clients sent (status, nft at input)");
    assert!(counted.0 >= 4 * 4, "SYN, ACK, request and FIN of 4 connections at least: {counted:?}");
    assert_eq!(seen[1], seen[0], "every packet that reaches the app carries the mark: {seen:?}");
    // protect: another host cannot reach the target directly; the host itself can.
    assert_eq!(
        net.tcp_get(&net.cli, SRV4, 8080),
        None,
        "protect refuses the target to other hosts:\n{}",
        net.table("portd").unwrap_or_default()
    );
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 8080).as_deref(), Some("app"));
    assert_eq!(counts(&d), counted, "a refused or direct connection is not the forward's");
    // The counts are the table's: they stay when the flows' entries go (as when they
    // time out), and when portd restarts.
    net.exec_ok(&net.srv, "conntrack", &["-D", "-p", "tcp", "--orig-port-dst", "80"]);
    assert!(
        !net.exec_ok(&net.srv, "conntrack", &["-L", "-p", "tcp"]).contains("dport=80 "),
        "the forward's flows are gone from conntrack"
    );
    assert_eq!(counts(&d), counted, "closed flows still count");
    let mut d = d;
    d.signal("TERM");
    d.wait();
    let d = Portd::start(&net, &config(&net, "  on_exit: keep\n"));
    assert_eq!(counts(&d), counted, "kept across a restart (on_exit: keep)");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("app"));
    let after = counts(&d);
    assert!(after.0 >= counted.0 + 4 && after.1 > counted.1, "and counting on: {counted:?} then {after:?}");
}
