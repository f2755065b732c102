//! Reliability under faults: drift repair through nf_tables events, crash safety under
//! kill -9, hostile clients. Figures are printed (run with --nocapture) and recorded in
//! the README; trial counts can be raised with the PORTD_*_TRIALS variables.

use portd_tests::*;
use std::time::Duration;

const SEED: &str = "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n";

#[test]
fn foreign_changes_are_repaired_quickly() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let rules = write(&net.dir, "r.yaml", SEED);
    assert!(d.ctl(&["apply", rules.to_str().expect("p")]).status.success());
    let addr: std::net::SocketAddr = format!("{SRV4}:80").parse().expect("addr");
    let cli = net.cli.clone();
    assert!(in_netns(&cli, move || time_until_reply(addr, "app", Duration::from_secs(2))).is_some());
    let n = trials("PORTD_DRIFT_TRIALS", 100);
    let changes: [&[&str]; 4] = [
        &["flush", "ruleset"],
        &["delete", "table", "inet", "portd"],
        &["delete", "element", "inet", "portd", "fwd_to", "{ ipv4 . tcp . 80 }"],
        &["flush", "chain", "inet", "portd", "redirect_in"],
    ];
    let mut report = String::new();
    for change in changes {
        let mut times = Vec::new();
        for _ in 0..n {
            net.exec_ok(&net.srv, "nft", change);
            let cli = net.cli.clone();
            let t = in_netns(&cli, move || time_until_reply(addr, "app", Duration::from_secs(2)));
            times.push(t.unwrap_or_else(|| {
                panic!(
                    "not repaired within 2 s after `nft {}` (trial {}); log:\n{}",
                    change.join(" "),
                    times.len(),
                    Portd::log(&net)
                )
            }));
        }
        let (med, max) = median_max_ms(&mut times);
        let line = format!("nft {:<48} trials {n:>4}  median {med:>6.2} ms  worst {max:>7.2} ms\n", change.join(" "));
        report.push_str(&line);
        assert!(med < 50.0 && max < 250.0, "repair too slow: {line}");
    }
    println!("drift repair, foreign change until traffic flows again:\n{report}");
    let js = d.status_json();
    assert!(js["repairs"].as_u64().expect("repairs") >= 4 * n as u64, "{js}");
    assert_eq!(js["in_sync"], true);
}

/// The three targets of apply number `i` (ports 80, 81, 82), so a mix of two applies shows.
fn set_text(i: usize) -> String {
    let mut s = String::from("version: 1\nforwards:\n");
    for k in 0..3 {
        s.push_str(&format!("  - name: f{k}\n    port: {}\n    to: {}\n", 80 + k, 10_000 + i * 3 + k));
    }
    s
}

/// Which apply the kernel's fwd_to map holds, checking it is one whole apply.
fn kernel_generation(net: &Net) -> Option<usize> {
    let o = net.exec(&net.srv, "nft", &["-j", "list", "map", "inet", "portd", "fwd_to"]);
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("nft json");
    let elems = v["nftables"][1]["map"]["elem"].as_array().cloned().unwrap_or_default();
    assert_eq!(elems.len(), 6, "3 forwards x 2 families: {elems:?}");
    let mut gens = std::collections::BTreeSet::new();
    for e in elems {
        // an element with a comment is {"elem": {"val": KEY, "comment": ...}}
        let key = &e[0].get("elem").map_or(&e[0], |el| &el["val"])["concat"];
        let port = key[2].as_u64().expect("port") as usize;
        let to = e[1].as_u64().expect("to") as usize;
        let k = port - 80;
        assert_eq!((to - 10_000) % 3, k, "target of port {port} is {to}");
        gens.insert((to - 10_000) / 3);
    }
    assert_eq!(gens.len(), 1, "the kernel holds a mix of applies: {gens:?}");
    gens.into_iter().next()
}

#[test]
fn kill_9_during_applies_never_loses_or_mixes() {
    let net = Net::setup();
    let cfg = config(&net, "");
    let n = trials("PORTD_CRASH_TRIALS", 200);
    let mut next = 0usize;
    let mut last_acked: Option<usize> = None;
    let mut killed_in_flight = 0;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for trial in 0..n {
        let mut d = Portd::start(&net, &cfg);
        if let Some(a) = last_acked {
            // Restart restored at least the last acknowledged apply, and nothing mixed.
            let g = kernel_generation(&net).expect("table after restart");
            assert!(g >= a && g <= next, "trial {trial}: kernel holds apply {g}, last acknowledged {a}");
            let js = d.status_json();
            assert_eq!(js["in_sync"], true, "trial {trial}");
        }
        // A stream of applies from another thread; kill -9 at a random moment.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_micros(seed % 250_000);
        let socket = d.socket.clone();
        let dir = net.dir.clone();
        let start = next;
        let stream = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in start..start + 1000 {
                let f = dir.join(format!("set{}.yaml", i % 2));
                std::fs::write(&f, set_text(i)).expect("write set");
                let o = std::process::Command::new(bin("portctl"))
                    .arg("--socket")
                    .arg(&socket)
                    .arg("apply")
                    .arg(&f)
                    .output()
                    .expect("portctl");
                match o.status.code() {
                    Some(0) => acked.push(i),
                    Some(3) => return (acked, i),
                    other => panic!("apply {i}: exit {other:?}: {}", String::from_utf8_lossy(&o.stderr)),
                }
            }
            (acked, start + 1000)
        });
        std::thread::sleep(delay);
        d.signal("KILL");
        d.wait();
        let (acked, stopped_at) = stream.join().expect("stream");
        if let Some(&a) = acked.last() {
            last_acked = Some(a);
        }
        if stopped_at > start {
            killed_in_flight += 1;
        }
        next = stopped_at;
        // The state file is always whole JSON.
        let state = net.dir.join("state").join("sets.json");
        if state.exists() {
            let text = std::fs::read(&state).expect("state");
            let _: serde_json::Value =
                serde_json::from_slice(&text).unwrap_or_else(|e| panic!("trial {trial}: state file half-written: {e}"));
        }
        if let Some(a) = last_acked {
            let g = kernel_generation(&net).expect("table survives kill -9");
            assert!(
                g >= a && g <= next,
                "trial {trial}: kernel holds apply {g}, last acknowledged {a}, attempted up to {next}"
            );
        }
    }
    println!(
        "crash safety: {n} kill -9 trials, {killed_in_flight} with applies in flight, {} applies acknowledged in all",
        next
    );
    assert!(last_acked.is_some(), "some applies were acknowledged");
}

fn vm(pid: u32, key: &str) -> u64 {
    let s = read(std::path::Path::new(&format!("/proc/{pid}/status")));
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing"))
}

/// One status request on a fresh connection; returns its latency.
fn status_latency(socket: &std::path::Path) -> Duration {
    use std::io::{BufRead, BufReader, Write};
    let t = std::time::Instant::now();
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.write_all(b"{\"version\":1,\"command\":{\"op\":\"status\"}}\n").expect("write");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("read");
    assert!(line.contains("\"ok\""), "{line}");
    t.elapsed()
}

#[test]
fn hostile_clients_affect_only_themselves() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let rules = write(&net.dir, "r.yaml", SEED);
    assert!(d.ctl(&["apply", rules.to_str().expect("p")]).status.success());
    let pid = d.child.id();
    let rss_before = vm(pid, "VmRSS:");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    // 500 idle connections.
    let idle: Vec<UnixStream> = (0..500).map(|_| UnixStream::connect(&d.socket).expect("idle connect")).collect();
    // 20 byte-a-second writers.
    for _ in 0..20 {
        let (sock, stop) = (d.socket.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut s = UnixStream::connect(&sock).expect("slow");
            for b in b"{\"version\":1,\"command\":{\"op\":\"status\"}}".iter().cycle() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }));
    }
    // Two clients sending garbage lines back to back on one connection (each answered
    // with an error, the connection stays open), and two reconnecting every millisecond
    // to send half a request and hang up.
    for k in 0..4 {
        let (sock, stop) = (d.socket.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            use std::io::BufRead;
            if k < 2 {
                let s = UnixStream::connect(&sock).expect("garbage");
                let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                let mut line = String::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if w.write_all(b"\x00\xffgarbage {{{ not json\n").is_err() {
                        return;
                    }
                    line.clear();
                    if r.read_line(&mut line).is_err() || !line.contains("protocol") {
                        return;
                    }
                }
            } else {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(mut s) = UnixStream::connect(&sock) {
                        let _ = s.write_all(
                            b"{\"version\":1,\"command\":{\"op\":\"apply\",\"file\":\"x\",\"text\":\"version: 1\\nforw",
                        );
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }));
    }
    // Four 100 MiB lines.
    for _ in 0..4 {
        let (sock, stop) = (d.socket.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut s = UnixStream::connect(&sock).expect("big");
            let chunk = vec![b'a'; 1 << 20];
            for _ in 0..100 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || s.write_all(&chunk).is_err() {
                    break;
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut lat: Vec<Duration> = (0..50)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            status_latency(&d.socket)
        })
        .collect();
    let hwm = vm(pid, "VmHWM:");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    drop(idle);
    let (med, max) = median_max_ms(&mut lat);
    println!(
        "hostile clients: 500 idle, 20 byte-a-second, 2 garbage-line streams, 2 x 1000/s cut-off requests, 4 x 100 MiB lines: \
         status latency median {med:.2} ms, worst {max:.2} ms; portd RSS {rss_before} KiB before, peak {hwm} KiB"
    );
    assert!(max < 100.0, "status took {max:.1} ms under load");
    assert!(hwm < 64 * 1024, "portd peak RSS {hwm} KiB");
    // Nothing was applied from the malformed requests.
    let js = d.status_json();
    assert_eq!(js["forwards"].as_array().expect("list").len(), 1);
    assert_eq!(js["in_sync"], true);
}
