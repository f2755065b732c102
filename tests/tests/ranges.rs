//! Range forwards with real traffic: `8000-8003 -> 9000-9003` maps each public port to
//! its own target over TCP and UDP, IPv4 and IPv6; the port after the range is left
//! alone; retargeting the range moves a running UDP flow.

use portd_tests::*;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const RANGE: &str =
    "version: 1\nforwards:\n  - name: rng\n    port: 8000-8003\n    to: {to}\n    proto: both\n    family: both\n";

/// Sends one datagram from `s` and returns the reply, if any within 500 ms.
fn udp_ask(s: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 64];
    for _ in 0..5 {
        s.send(b"ping").ok()?;
        if let Ok(n) = s.recv(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

fn udp_client(net: &Net, dest: String) -> UdpSocket {
    in_netns(&net.cli, move || {
        let s = UdpSocket::bind(if dest.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" }).expect("bind");
        s.connect(&dest).unwrap_or_else(|e| panic!("{dest}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        s
    })
}

#[test]
fn a_range_maps_each_port_to_its_own_target() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let _apps: Vec<Bg> = [9000u16, 9001, 9002, 9003, 9004, 8004, 9102]
        .into_iter()
        .map(|p| net.tcp_app(&net.srv, p, &format!("t{p}")))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let udp = vec![
        udp_answerer(&net.srv, 9002, "u9002", stop.clone()),
        udp_answerer(&net.srv, 9102, "u9102", stop.clone()),
        udp_answerer(&net.srv, 8004, "u8004", stop.clone()),
        udp_answerer(&net.srv, 9004, "u9004", stop.clone()),
    ];
    let f = write(&net.dir, "r.yaml", &RANGE.replace("{to}", "9000-9003"));
    let o = d.ctl(&["apply", f.to_str().expect("p")]);
    assert!(o.status.success(), "{}", err(&o));

    for addr in [SRV4, SRV6] {
        for (port, want) in [(8000, "t9000"), (8001, "t9001"), (8002, "t9002"), (8003, "t9003")] {
            assert_eq!(net.tcp_get(&net.cli, addr, port).as_deref(), Some(want), "tcp {addr}:{port}");
        }
        // The port after the range is not redirected: its own server answers.
        assert_eq!(net.tcp_get(&net.cli, addr, 8004).as_deref(), Some("t8004"), "tcp {addr}:8004");
    }
    // The host's own connections too.
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 8002).as_deref(), Some("t9002"));
    assert_eq!(net.tcp_get(&net.srv, "::1", 8002).as_deref(), Some("t9002"));

    let v4 = udp_client(&net, format!("{SRV4}:8002"));
    let v6 = udp_client(&net, format!("[{SRV6}]:8002"));
    assert_eq!(udp_ask(&v4).as_deref(), Some("u9002"), "udp ipv4 8002");
    assert_eq!(udp_ask(&v6).as_deref(), Some("u9002"), "udp ipv6 8002");
    let after = udp_client(&net, format!("{SRV4}:8004"));
    assert_eq!(udp_ask(&after).as_deref(), Some("u8004"), "udp 8004 is not redirected");

    // Retarget the range: the same UDP flows (same source ports, so the same conntrack
    // entries) now reach 9102; conntrack held their old binding until portd cleared it.
    std::fs::write(&f, RANGE.replace("{to}", "9100-9103")).expect("edit");
    assert!(d.ctl(&["apply", f.to_str().expect("p")]).status.success());
    for (what, s) in [("ipv4", &v4), ("ipv6", &v6)] {
        let mut got = None;
        for _ in 0..20 {
            got = udp_ask(s);
            if got.as_deref() == Some("u9102") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(got.as_deref(), Some("u9102"), "udp {what} flow on 8002 after the retarget");
    }
    assert_eq!(net.tcp_get(&net.cli, SRV6, 8002).as_deref(), Some("t9102"));
    stop.store(true, Ordering::Relaxed);
    join_all(udp);
}
