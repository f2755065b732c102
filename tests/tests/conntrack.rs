//! Conntrack hygiene: long-lived flows follow a forward's new target, and stop when the
//! forward is removed, instead of following the old mapping forever. UDP over IPv4 and
//! IPv6, a flow into a port range, and established TCP connections over both families.

use portd_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TCP server answering `reply` to every line, on every connection, until `stop`.
fn tcp_answerer(net: &Net, port: u16, reply: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    spawn_in_netns(&net.srv, move || {
        let l = TcpListener::bind(("::", port)).expect("bind tcp answerer");
        l.set_nonblocking(true).expect("nonblocking");
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((s, _)) => {
                    std::thread::spawn(move || {
                        s.set_nonblocking(false).expect("blocking");
                        let mut w = s.try_clone().expect("clone");
                        for line in BufReader::new(s).lines() {
                            if line.is_err() || w.write_all(format!("{reply}\n").as_bytes()).is_err() {
                                return;
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

type Seen = Arc<Mutex<Vec<(Instant, String)>>>;

/// One UDP flow (a fixed source port) sending to `dest` every 5 ms until `stop`,
/// recording every reply.
fn udp_flow(net: &Net, dest: String, stop: Arc<AtomicBool>) -> (Seen, std::thread::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    let t = spawn_in_netns(&net.cli, move || {
        let bind = if dest.starts_with('[') { "[::]:0" } else { "0.0.0.0:0" };
        let s = UdpSocket::bind(bind).expect("client");
        s.connect(&dest).unwrap_or_else(|e| panic!("connect {dest}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(5))).expect("timeout");
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            let _ = s.send(b"ping");
            if let Ok(n) = s.recv(&mut buf) {
                seen2.lock().expect("lock").push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    (seen, t)
}

fn since(seen: &Seen, t: Instant) -> Vec<String> {
    seen.lock().expect("lock").iter().filter(|(at, _)| *at > t).map(|(_, r)| r.clone()).collect()
}

/// What happened to an established TCP connection after its forward changed.
#[derive(Debug, PartialEq)]
enum TcpAfter {
    /// The old target still answered on it: its NAT binding survived.
    Answered(String),
    /// Reset or closed: the binding was forgotten.
    Cut,
}

/// An established TCP connection from the client namespace through `dest`.
fn tcp_connection(net: &Net, dest: std::net::SocketAddr) -> TcpStream {
    in_netns(&net.cli, move || {
        let s = TcpStream::connect_timeout(&dest, Duration::from_secs(2)).unwrap_or_else(|e| panic!("{dest}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        s
    })
}

fn tcp_ask(s: &mut TcpStream) -> TcpAfter {
    if s.write_all(b"ping\n").is_err() {
        return TcpAfter::Cut;
    }
    let mut line = String::new();
    match BufReader::new(&*s).read_line(&mut line) {
        Ok(n) if n > 0 => TcpAfter::Answered(line.trim().to_string()),
        _ => TcpAfter::Cut,
    }
}

const SET: &str = "version: 1\nforwards:\n  - name: dns\n    port: 53\n    to: {dns}\n    proto: udp\n  - name: rng\n    port: 5000-5003\n    to: {rng}\n    proto: udp\n  - name: web\n    port: 80\n    to: {web}\n";

fn set(dns: u16, rng: &str, web: u16) -> String {
    SET.replace("{dns}", &dns.to_string()).replace("{rng}", rng).replace("{web}", &web.to_string())
}

#[test]
fn flows_follow_retarget_and_stop_on_removal() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let stop = Arc::new(AtomicBool::new(false));
    let servers = vec![
        udp_answerer(&net.srv, 5353, "old", stop.clone()),
        udp_answerer(&net.srv, 5354, "new", stop.clone()),
        udp_answerer(&net.srv, 6002, "old-range", stop.clone()),
        udp_answerer(&net.srv, 7002, "new-range", stop.clone()),
        tcp_answerer(&net, 8080, "old-web", stop.clone()),
        tcp_answerer(&net, 8081, "new-web", stop.clone()),
    ];
    let f = write(&net.dir, "r.yaml", &set(5353, "6000-6003", 8080));
    assert!(d.ctl(&["apply", f.to_str().expect("p")]).status.success());

    // UDP flows (each from one source port, every 5 ms, for the whole test): IPv4 and
    // IPv6 to a single port, IPv4 into the range (5002 -> 6002, then 7002).
    let flows = [
        ("udp ipv4 53", udp_flow(&net, format!("{SRV4}:53"), stop.clone()), "old", "new"),
        ("udp ipv6 53", udp_flow(&net, format!("[{SRV6}]:53"), stop.clone()), "old", "new"),
        ("udp ipv4 range 5002", udp_flow(&net, format!("{SRV4}:5002"), stop.clone()), "old-range", "new-range"),
    ];
    for (what, (seen, _), old, _) in &flows {
        wait_for(
            || since(seen, Instant::now() - Duration::from_millis(100)).iter().any(|r| r == old),
            &format!("{what}: replies from the old target"),
        );
    }
    // Established TCP connections over both families, answered by the old target.
    let mut tcp: Vec<(String, TcpStream)> = [format!("{SRV4}:80"), format!("[{SRV6}]:80")]
        .into_iter()
        .map(|a| {
            let addr: std::net::SocketAddr = a.parse().expect("addr");
            (format!("tcp {a}"), tcp_connection(&net, addr))
        })
        .collect();
    for (what, s) in &mut tcp {
        assert_eq!(tcp_ask(s), TcpAfter::Answered("old-web".into()), "{what} before the change");
    }

    // Retarget everything in one apply while the flows keep sending.
    std::fs::write(&f, set(5354, "7000-7003", 8081)).expect("edit");
    let changed = Instant::now();
    assert!(d.ctl(&["apply", f.to_str().expect("p")]).status.success());
    let mut report = Vec::new();
    for (what, (seen, _), _, new) in &flows {
        wait_for(
            || since(seen, changed).iter().any(|r| r == new),
            &format!("{what}: the running flow to reach the new target"),
        );
        let moved = seen
            .lock()
            .expect("lock")
            .iter()
            .find(|(t, r)| *t > changed && r == new)
            .map(|(t, _)| t.duration_since(changed))
            .expect("moved");
        report.push(format!("{what} moved after {:.0} ms", moved.as_secs_f64() * 1000.0));
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    for (what, (seen, _), _, new) in &flows {
        let got = since(seen, after);
        assert!(!got.is_empty() && got.iter().all(|r| r == new), "{what}: only the new target once moved: {got:?}");
    }
    // The established TCP connections lose their old binding (the next segment is
    // redirected to the new target, which knows no such connection and resets it);
    // new connections reach the new target.
    for (what, s) in &mut tcp {
        assert_eq!(tcp_ask(s), TcpAfter::Cut, "{what}: the established connection kept its old target");
    }
    for a in [format!("{SRV4}:80"), format!("[{SRV6}]:80")] {
        let mut s = tcp_connection(&net, a.parse().expect("addr"));
        assert_eq!(tcp_ask(&mut s), TcpAfter::Answered("new-web".into()), "new tcp connection to {a}");
    }

    // Remove the forwards: the flows stop getting answers.
    std::fs::write(&f, "version: 1\nforwards: []\n").expect("edit");
    assert!(d.ctl(&["apply", f.to_str().expect("p")]).status.success());
    let removed = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<(&str, Vec<String>)> = flows
        .iter()
        .map(|(what, (seen, _), _, _)| (*what, since(seen, removed + Duration::from_millis(100))))
        .collect();
    stop.store(true, Ordering::Relaxed);
    join_all(flows.into_iter().map(|(_, (_, t), _, _)| t).collect());
    join_all(servers);
    for (what, got) in late {
        assert!(got.is_empty(), "{what}: the flow still reached a target after removal: {got:?}");
    }
    // The log says the cleanup deleted entries, and never that it failed.
    let log = Portd::log(&net);
    let deleted: usize = log
        .lines()
        .filter_map(|l| l.split("deleted ").nth(1))
        .filter_map(|rest| rest.split_once(" conntrack entr").and_then(|(n, _)| n.trim().parse::<usize>().ok()))
        .sum();
    assert!(deleted >= 5, "the cleanup deleted {deleted} conntrack entries; log:\n{log}");
    assert!(
        !log.contains("deleting conntrack entries of old mappings") && !log.contains("conntrack thread is gone"),
        "the cleanup failed; log:\n{log}"
    );
    println!("conntrack: {}; {deleted} entries deleted in all", report.join(", "));
}
