//! NAT forwards pass no per-packet chain of portd's: their first packet is marked and
//! redirected by the nat chains, `protect` refuses new connections there, and conntrack
//! counts the rest (per-flow accounting), which portd reads back: open flows from a dump,
//! closed ones from the destroy events, kept across restarts. The real daemon against
//! the real kernel in throwaway namespaces (`ip netns exec`: no bpffs, so NAT).

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
fn nat_forwards_are_counted_by_their_flows_marked_on_their_first_packet_and_protected() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let rules = write(
        &net.dir,
        "rules.yaml",
        "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n    protect: true\n",
    );
    let o = d.ctl(&["apply", rules.to_str().expect("path")]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(forward_status(&d.status_json(), "user:root", "http").expect("http")["dispatch"], "nat");
    let table = net.table("portd").expect("table");
    assert!(!table.contains("type filter"), "no filter chain of portd's sees redirected packets:\n{table}");
    assert_eq!(
        net.exec_ok(&net.srv, "cat", &["/proc/sys/net/netfilter/nf_conntrack_acct"]).trim(),
        "1",
        "portd switched per-flow accounting on in its namespace"
    );
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
    let seen = counters(&net.exec_ok(&net.srv, "nft", &["list", "chain", "inet", "watch", "input"]));
    let counted = counts(&d);
    assert_eq!(counted, seen[0], "the forward counts exactly what its clients sent (status, nft at input)");
    assert!(counted.0 >= 4 * 4, "SYN, ACK, request and FIN of 4 connections at least: {counted:?}");
    assert_eq!(seen[1].0, 4, "the mark is on each connection's first packet: {seen:?}");
    // protect: another host cannot reach the target directly; the host itself can.
    assert_eq!(
        net.tcp_get(&net.cli, SRV4, 8080),
        None,
        "protect refuses the target to other hosts:\n{}",
        net.table("portd").unwrap_or_default()
    );
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 8080).as_deref(), Some("app"));
    assert_eq!(counts(&d), counted, "a refused or direct connection is not the forward's");
    // Closed flows: their entries go (as when they time out), the destroy events keep
    // what they received, and a restart keeps it too (no entry is left to read).
    net.exec_ok(&net.srv, "conntrack", &["-D", "-p", "tcp", "--orig-port-dst", "80"]);
    assert!(
        !net.exec_ok(&net.srv, "conntrack", &["-L", "-p", "tcp"]).contains("dport=80 "),
        "the forward's flows are gone from conntrack"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(counts(&d), counted, "closed flows still count");
    let mut d = d;
    d.signal("TERM");
    d.wait();
    let d = Portd::start(&net, &config(&net, ""));
    assert_eq!(counts(&d), counted, "kept across a restart");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("app"));
    let after = counts(&d);
    assert!(after.0 >= counted.0 + 4 && after.1 > counted.1, "and counting on: {counted:?} then {after:?}");
}
