//! Reliability under faults: drift repair through nf_tables events and its back-off,
//! crash safety under kill -9, hostile clients. Figures are printed (run with --nocapture)
//! and recorded in the README; trial counts can be lowered or raised with the
//! PORTD_*_TRIALS variables.

use portd_tests::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEED: &str = "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n";

/// The tests of this file measure timings under loads they make themselves, so they run
/// one at a time even under `--test-threads=2` (the hostile load would slow a repair).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Trials of the drift test start at most this often, so their repairs stay below the
/// back-off's burst of 50 a second (which `repair_back_off_stands_back_then_repairs` tests).
const DRIFT_TRIAL_PERIOD: Duration = Duration::from_millis(40);

/// An app on 8080 and the seed rules applied: the address of public port 80 that reaches
/// it from the client's namespace (checked), with the app's guard.
fn seeded(net: &Net, d: &Portd) -> (Bg, std::net::SocketAddr) {
    let app = net.tcp_app(&net.srv, 8080, "app");
    let rules = write(&net.dir, "r.yaml", SEED);
    assert!(d.ctl(&["apply", rules.to_str().expect("p")]).status.success());
    let addr: std::net::SocketAddr = format!("{SRV4}:80").parse().expect("addr");
    let cli = net.cli.clone();
    assert!(in_netns(&cli, move || time_until_reply(addr, "app", Duration::from_secs(2))).is_some());
    (app, addr)
}

#[test]
fn foreign_changes_are_repaired_quickly() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let (_app, addr) = seeded(&net, &d);
    let n = trials("PORTD_DRIFT_TRIALS", 100);
    let changes: [&[&str]; 4] = [
        &["flush", "ruleset"],
        &["delete", "table", "inet", "portd"],
        &["delete", "element", "inet", "portd", "fwd_to", "{ tcp . 80 }"],
        &["flush", "chain", "inet", "portd", "redirect_in"],
    ];
    let mut report = String::new();
    for change in changes {
        let mut times = Vec::new();
        for _ in 0..n {
            let started = Instant::now();
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
            // Explicit pace: below the repair burst whatever the speed of this machine.
            std::thread::sleep(DRIFT_TRIAL_PERIOD.saturating_sub(started.elapsed()));
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
    assert!(!Portd::log(&net).contains("standing back"), "paced trials never trip the back-off");
}

/// Connects to `addr` back to back until `stop`; returns the longest time without a
/// successful connection (from the first failure to the next success) and the attempts.
fn longest_outage(addr: std::net::SocketAddr, stop: Arc<AtomicBool>) -> (Duration, usize) {
    let (mut worst, mut tries) = (Duration::ZERO, 0);
    let mut down_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        tries += 1;
        let ok = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok_and(|mut s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = String::new();
            s.read_to_string(&mut buf).is_ok() && buf.trim() == "app"
        });
        match (ok, down_since) {
            (true, Some(t)) => {
                worst = worst.max(t.elapsed());
                down_since = None;
            }
            (false, None) => down_since = Some(Instant::now()),
            _ => {}
        }
    }
    if let Some(t) = down_since {
        worst = worst.max(t.elapsed());
    }
    (worst, tries)
}

/// portd in a PID namespace of its own (a container) recognises its own commits: the
/// kernel names the committing thread by its id in the initial PID namespace, so portd
/// tells them by the netlink port id of its socket. Two `nft flush ruleset` a second apart
/// cost one repair each and no outage over 100 ms, as in a plain network namespace.
#[test]
fn own_repairs_are_recognised_in_a_pid_namespace() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let d = Portd::start_in_pid_namespace(&net, &config(&net, ""));
    let (_app, addr) = seeded(&net, &d);
    let before = d.status_json()["repairs"].as_u64().expect("repairs");
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let stop = Arc::clone(&stop);
        spawn_in_netns(&net.cli, move || longest_outage(addr, stop))
    };
    std::thread::sleep(Duration::from_millis(300));
    net.exec_ok(&net.srv, "nft", &["flush", "ruleset"]);
    std::thread::sleep(Duration::from_secs(1));
    net.exec_ok(&net.srv, "nft", &["flush", "ruleset"]);
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let (outage, tries) = probe.join().expect("probe");
    let js = d.status_json();
    let repairs = js["repairs"].as_u64().expect("repairs") - before;
    let log = Portd::log(&net);
    println!(
        "pid namespace: two flushes 1 s apart: {repairs} repairs, longest outage {:.1} ms over {tries} connects",
        outage.as_secs_f64() * 1000.0
    );
    assert_eq!(repairs, 2, "one repair per flush, no repair of its own repairs; log:\n{log}");
    assert!(!log.contains("standing back"), "no stand-back; log:\n{log}");
    assert!(outage < Duration::from_millis(100), "outage of {outage:?}; log:\n{log}");
    assert_eq!(js["in_sync"], true);
}

fn has_http_element(net: &Net) -> bool {
    // e.g. `tcp . 80 comment "user:root/http" : 8080`
    net.table("portd").is_some_and(|t| t.lines().any(|l| l.contains("tcp . 80 comment ") && l.contains(" : 8080")))
}

#[test]
fn repair_back_off_stands_back_then_repairs() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let rules = write(&net.dir, "r.yaml", SEED);
    assert!(d.ctl(&["apply", rules.to_str().expect("p")]).status.success());
    // A foreign loop deleting the table over netlink, one transaction each, as fast as
    // portd puts it back: far above the burst of 50 repairs a second (a delete is refused
    // while the table is gone, and succeeds again once portd has restored it).
    let stop = Arc::new(AtomicBool::new(false));
    let loops = vec![{
        let stop = stop.clone();
        spawn_in_netns(&net.srv, move || {
            let mut nl = RawNft::open();
            let mut deleted = 0usize;
            while !stop.load(Ordering::Relaxed) {
                deleted += usize::from(nl.delete_table("portd"));
                std::thread::sleep(Duration::from_micros(200));
            }
            deleted
        })
    }];
    let started = Instant::now();
    while !Portd::log(&net).contains("standing back") {
        if started.elapsed() > Duration::from_secs(20) {
            stop.store(true, Ordering::Relaxed);
            let deleted: usize = join_all(loops).iter().sum();
            panic!("no \"standing back\" after {deleted} foreign deletes in 20 s; log:\n{}", Portd::log(&net));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let stood = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let deleted: usize = join_all(loops).iter().sum();
    let repairs = d.status_json()["repairs"].as_u64().expect("repairs");
    let rate = repairs as f64 / stood.duration_since(started).as_secs_f64();
    assert!(repairs >= 50, "the back-off tripped after only {repairs} repairs");
    // No repair during the back-off period: the element stays deleted and the count stays.
    while stood.elapsed() < Duration::from_millis(4_000) {
        assert!(!has_http_element(&net), "repaired {:?} after standing back (back-off is 5 s)", stood.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let js = d.status_json();
    assert_eq!(js["repairs"].as_u64(), Some(repairs), "no repair while standing back: {js}");
    assert_eq!(js["in_sync"], false, "status says the kernel differs while portd stands back: {js}");
    // Then one repair, by itself.
    while !has_http_element(&net) {
        assert!(stood.elapsed() < Duration::from_secs(8), "not repaired 8 s after standing back (back-off is 5 s)");
        std::thread::sleep(Duration::from_millis(50));
    }
    let repaired_after = stood.elapsed();
    let js = d.status_json();
    assert_eq!(js["in_sync"], true, "{js}");
    assert_eq!(js["repairs"].as_u64(), Some(repairs + 1), "{js}");
    println!(
        "repair back-off: {deleted} foreign table deletes, {repairs} repairs ({rate:.0}/s) until \"standing back\"; \
         next repair {:.2} s later",
        repaired_after.as_secs_f64()
    );
}

/// Applies are numbered; their targets encode the number modulo this (ports run out).
const GENERATIONS: usize = 20_000;
/// Lowest target port.
const TARGET_BASE: usize = 2_000;

/// The three targets of apply number `i` (ports 80, 81, 82), so a mix of two applies shows.
fn set_text(i: usize) -> String {
    let mut s = String::from("version: 1\nforwards:\n");
    for k in 0..3 {
        s.push_str(&format!(
            "  - name: f{k}\n    port: {}\n    to: {}\n",
            80 + k,
            TARGET_BASE + (i % GENERATIONS) * 3 + k
        ));
    }
    s
}

/// Whether the kernel's generation `g` (an apply number modulo [`GENERATIONS`]) is one of
/// the applies `first..=last`.
fn held_one_of(g: usize, first: usize, last: usize) -> bool {
    assert!(last >= first && last - first < GENERATIONS, "apply window {first}..={last} too wide");
    (g + GENERATIONS - first % GENERATIONS) % GENERATIONS <= last - first
}

/// Which apply the kernel's fwd_to map holds, checking it is one whole apply.
fn kernel_generation(net: &Net) -> Option<usize> {
    let o = net.exec(&net.srv, "nft", &["-j", "list", "map", "inet", "portd", "fwd_to"]);
    if !o.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("nft json");
    let elems = v["nftables"][1]["map"]["elem"].as_array().cloned().unwrap_or_default();
    assert_eq!(elems.len(), 3, "3 forwards, one element each for both families: {elems:?}");
    let mut gens = std::collections::BTreeSet::new();
    for e in elems {
        // an element with a comment is {"elem": {"val": KEY, "comment": ...}}
        let key = &e[0].get("elem").map_or(&e[0], |el| &el["val"])["concat"];
        let port = key[1].as_u64().expect("port") as usize;
        let to = e[1].as_u64().expect("to") as usize;
        let k = port - 80;
        assert_eq!((to - TARGET_BASE) % 3, k, "target of port {port} is {to}");
        gens.insert((to - TARGET_BASE) / 3);
    }
    assert_eq!(gens.len(), 1, "the kernel holds a mix of applies: {gens:?}");
    gens.into_iter().next()
}

/// How a stream of applies ended when the daemon was killed.
struct Stream {
    /// Applies answered with success, in order.
    acked: Vec<usize>,
    /// The last apply the daemon may have received (sent, whether or not answered).
    last_sent: Option<usize>,
    /// An apply had been sent and not yet answered when the daemon died.
    in_flight: bool,
}

/// Sends applies `start..` one after another on fresh connections until the daemon dies.
fn apply_stream(socket: &std::path::Path, start: usize) -> Stream {
    let mut st = Stream { acked: Vec::new(), last_sent: None, in_flight: false };
    for i in start..start + 100_000 {
        let Ok(mut s) = UnixStream::connect(socket) else { return st };
        let mut line = serde_json::to_vec(&apply_request(&set_text(i))).expect("json");
        line.push(b'\n');
        if s.write_all(&line).is_err() {
            // The daemon died before reading it; it may still have read part: count it as
            // possibly received, never as in flight.
            st.last_sent = Some(i);
            return st;
        }
        st.last_sent = Some(i);
        let mut answer = String::new();
        match BufReader::new(&s).read_line(&mut answer) {
            Ok(n) if n > 0 => {
                assert!(answer.contains("\"ok\""), "apply {i} refused: {answer}");
                st.acked.push(i);
            }
            // Sent whole and never answered: the kill landed while it was in flight.
            _ => {
                st.in_flight = true;
                return st;
            }
        }
    }
    panic!("the daemon was not killed during 100,000 applies");
}

#[test]
fn kill_9_during_applies_never_loses_or_mixes() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let cfg = config(&net, "");
    let n = trials("PORTD_CRASH_TRIALS", 200);
    let mut next = 0usize;
    let mut last_acked: Option<usize> = None;
    let mut last_sent: Option<usize> = None;
    let (mut in_flight, mut acked_total) = (0, 0);
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for trial in 0..n {
        let mut d = Portd::start(&net, &cfg);
        if let Some(a) = last_acked {
            // Restart restored at least the last acknowledged apply, and nothing mixed.
            let g = kernel_generation(&net).expect("table after restart");
            let s = last_sent.expect("sent");
            assert!(
                held_one_of(g, a, s),
                "trial {trial}: kernel holds apply {g} (mod {GENERATIONS}), last acknowledged {a}, last sent {s}"
            );
            let js = d.status_json();
            assert_eq!(js["in_sync"], true, "trial {trial}");
        }
        // A stream of applies from another thread; kill -9 at a random moment.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % 250_000);
        let socket = d.socket.clone();
        let start = next;
        let stream = std::thread::spawn(move || apply_stream(&socket, start));
        std::thread::sleep(delay);
        d.signal("KILL");
        d.wait();
        let st = stream.join().expect("apply stream");
        acked_total += st.acked.len();
        if let Some(&a) = st.acked.last() {
            last_acked = Some(a);
        }
        if let Some(s) = st.last_sent {
            last_sent = Some(s);
            next = s + 1;
        }
        if st.in_flight {
            in_flight += 1;
        }
        // The state file is always whole JSON.
        let state = net.dir.join("state").join("sets.json");
        if state.exists() {
            let text = std::fs::read(&state).expect("state");
            let _: serde_json::Value =
                serde_json::from_slice(&text).unwrap_or_else(|e| panic!("trial {trial}: state file half-written: {e}"));
        }
        if let Some(a) = last_acked {
            let g = kernel_generation(&net).expect("table survives kill -9");
            let s = last_sent.expect("sent");
            assert!(
                held_one_of(g, a, s),
                "trial {trial}: kernel holds apply {g} (mod {GENERATIONS}), last acknowledged {a}, last sent {s}"
            );
        }
    }
    println!(
        "crash safety: {n} kill -9 trials, {in_flight} with an apply sent and not yet answered at the kill, \
         {acked_total} applies acknowledged, none lost"
    );
    assert!(last_acked.is_some(), "some applies were acknowledged");
    assert!(in_flight > 0, "no kill landed while an apply was in flight: the test proved nothing");
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
    let t = Instant::now();
    let mut s = UnixStream::connect(socket).expect("connect");
    s.write_all(b"{\"version\":1,\"command\":{\"op\":\"status\"}}\n").expect("write");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("read");
    assert!(line.contains("\"ok\""), "{line}");
    t.elapsed()
}

/// Reads one answer line; panics unless it is an error answer containing `needle`.
fn expect_error_line(s: &UnixStream, needle: &str, who: &str) {
    let mut line = String::new();
    let n = BufReader::new(s).read_line(&mut line).unwrap_or_else(|e| panic!("{who}: no answer: {e}"));
    assert!(n > 0, "{who}: connection closed without an answer");
    assert!(
        line.contains("\"error\"") && line.contains(needle),
        "{who}: expected an error with `{needle}`, got {line}"
    );
}

/// The server's cap on non-root connections and its request deadline.
const CAP: usize = 1024;
/// First of the non-root uids holding idle connections (no accounts needed).
const UID0: u32 = 40_000;
const DEADLINE: Duration = Duration::from_secs(10);

#[test]
fn hostile_clients_affect_only_themselves() {
    let _serial = one_at_a_time();
    raise_nofile();
    let net = Net::setup();
    let grants = "grants:\n  - user: nobody\n    ports: [80, 8000]\n    to: \"1024-65535\"\n";
    let d = Portd::start(&net, &config(&net, grants));
    let rules = write(&net.dir, "r.yaml", SEED);
    assert!(d.ctl(&["apply", rules.to_str().expect("p")]).status.success());
    let table_before = net.table("portd").expect("table");
    let pid = d.child.id();
    let rss_before = vm(pid, "VmRSS:");
    let sockets_before = socket_fds(pid);
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads: Vec<std::thread::JoinHandle<usize>> = Vec::new();

    // 20 slow writers: a byte every 250 ms of a request that never ends, until the
    // server's deadline answers and closes; then again, until the test stops.
    const SLOW: usize = 20;
    let deadlines_reached = Arc::new(AtomicUsize::new(0));
    for k in 0..SLOW {
        let (sock, stop, reached) = (d.socket.clone(), stop.clone(), deadlines_reached.clone());
        threads.push(std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut s = UnixStream::connect(&sock).expect("slow writer connect");
                s.set_read_timeout(Some(Duration::from_millis(250))).expect("timeout");
                let t = Instant::now();
                let mut buf = [0u8; 4096];
                let answer = loop {
                    if stop.load(Ordering::Relaxed) {
                        return rounds;
                    }
                    s.write_all(b" ")
                        .unwrap_or_else(|e| panic!("slow writer {k}: write failed before any answer: {e}"));
                    match s.read(&mut buf) {
                        Ok(0) => panic!("slow writer {k}: closed without an answer after {:?}", t.elapsed()),
                        Ok(n) => break String::from_utf8_lossy(&buf[..n]).into_owned(),
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        Err(e) => panic!("slow writer {k}: {e}"),
                    }
                };
                let took = t.elapsed();
                assert!(answer.contains("request not completed within"), "slow writer {k}: {answer}");
                assert!(
                    took >= DEADLINE - Duration::from_millis(300) && took < DEADLINE + Duration::from_secs(2),
                    "slow writer {k}: deadline answer after {took:?}, deadline is {DEADLINE:?}"
                );
                rounds += 1;
                reached.fetch_add(1, Ordering::Relaxed);
            }
            rounds
        }));
    }
    // Two clients sending garbage lines back to back: every line is answered with a
    // protocol error; a valid request in between keeps the connection usable, and the
    // third malformed line in a row closes it (then the client reconnects).
    for k in 0..2 {
        let (sock, stop) = (d.socket.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut answered = 0;
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let s = UnixStream::connect(&sock).expect("garbage connect");
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                let mut line = String::new();
                let mut ask = |w: &mut UnixStream, r: &mut BufReader<UnixStream>, req: &[u8]| -> String {
                    w.write_all(req).unwrap_or_else(|e| panic!("garbage {k}: write: {e}"));
                    line.clear();
                    let n = r.read_line(&mut line).unwrap_or_else(|e| panic!("garbage {k}: read: {e}"));
                    assert!(n > 0, "garbage {k}: connection closed without an answer");
                    line.clone()
                };
                loop {
                    round += 1;
                    for _ in 0..2 {
                        let a = ask(&mut w, &mut r, b"\x00\xffgarbage {{{ not json\n");
                        assert!(a.contains("\"protocol\"") && !a.contains("connection closed"), "garbage {k}: {a}");
                        answered += 1;
                    }
                    if round.is_multiple_of(20) {
                        // A third in a row: answered, then the connection is closed.
                        let a = ask(&mut w, &mut r, b"\x00\xffgarbage {{{ not json\n");
                        assert!(a.contains("3 malformed requests in a row; connection closed"), "garbage {k}: {a}");
                        answered += 1;
                        let mut rest = String::new();
                        assert_eq!(r.read_line(&mut rest).unwrap_or(0), 0, "garbage {k}: still open: {rest}");
                        break;
                    }
                    let a = ask(&mut w, &mut r, b"{\"version\":1,\"command\":{\"op\":\"status\"}}\n");
                    assert!(a.contains("\"ok\""), "garbage {k}: status between garbage: {}", &a[..a.len().min(200)]);
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
            answered
        }));
    }
    // Two clients reconnecting every millisecond to send half a request and hang up.
    for _ in 0..2 {
        let (sock, stop) = (d.socket.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut s = UnixStream::connect(&sock).expect("cut-off connect");
                s.write_all(
                    b"{\"version\":1,\"command\":{\"op\":\"apply\",\"file\":\"x\",\"text\":\"version: 1\\nforw",
                )
                .expect("cut-off write");
                sent += 1;
                drop(s);
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        }));
    }
    // Four clients sending over-long lines (no newline) one connection after another:
    // each is read up to the 4 MiB limit, answered with an error and closed.
    for k in 0..4 {
        let (sock, stop) = (d.socket.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let chunk = vec![b'a'; 256 << 10];
            let mut lines = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut s = UnixStream::connect(&sock).expect("big connect");
                let mut written = 0usize;
                // Keep writing past the limit until the server closes its side.
                while written <= 6 << 20 {
                    match s.write(&chunk) {
                        Ok(n) => written += n,
                        Err(_) => break,
                    }
                }
                assert!(written > 4 << 20, "big writer {k}: refused after only {written} bytes");
                expect_error_line(&s, "exceeds", &format!("big writer {k}"));
                lines += 1;
            }
            lines
        }));
    }
    // Idle non-root connections: 1,022 from 16 uids (64 each is the per-user cap), two
    // short of the 1,024 non-root callers share (room for `nobody`'s denied applies); the
    // clients above are root's, which are always admitted.
    let idle: Vec<UnixStream> =
        (0..CAP - 2).map(|i| connect_as(UID0 + (i / 64) as u32, &d.socket).expect("idle connect")).collect();
    // A complete, well-formed apply that is denied, sent by `nobody` during the load:
    // port 22 is outside every grant, and port 80 belongs to user:root.
    let denied_far = write(&net.dir, "far.yaml", "version: 1\nforwards:\n  - name: ssh\n    port: 22\n    to: 2222\n");
    let denied_taken =
        write(&net.dir, "taken.yaml", "version: 1\nforwards:\n  - name: mine\n    port: 80\n    to: 9999\n");

    // Samples of a well-behaved status, all through the load: until every slow writer
    // has reached the deadline.
    let load_started = Instant::now();
    let mut lat = Vec::new();
    let mut max_sockets = 0;
    let mut denials = 0;
    let mut cap_refusals = 0;
    while deadlines_reached.load(Ordering::Relaxed) < SLOW {
        assert!(load_started.elapsed() < DEADLINE * 2, "slow writers never reached the deadline");
        std::thread::sleep(Duration::from_millis(20));
        lat.push(status_latency(&d.socket));
        max_sockets = max_sockets.max(socket_fds(pid));
        if lat.len() % 50 == 5 && load_started.elapsed() < DEADLINE - Duration::from_secs(2) {
            // The non-root cap is reached: the 1,023rd and 1,024th connections are
            // admitted, the next refused.
            let last = [
                connect_as(UID0 + 15, &d.socket).expect("1,023rd"),
                connect_as(UID0 + 15, &d.socket).expect("1,024th"),
            ];
            let over = connect_as(UID0 + 16, &d.socket).expect("1,025th");
            expect_error_line(&over, "portd serves 1024 connections already", "1,025th non-root connection");
            drop((last, over));
            cap_refusals += 1;
        }
        if lat.len() % 50 == 25 {
            let o = d.ctl_as("nobody", "", &["apply", denied_far.to_str().expect("p")]);
            assert_eq!(o.status.code(), Some(4), "outside every grant: {}", err(&o));
            let o = d.ctl_as("nobody", "", &["apply", denied_taken.to_str().expect("p")]);
            assert_eq!(o.status.code(), Some(1), "port 80 belongs to user:root: {}", err(&o));
            assert!(err(&o).contains("already forwarded by `http` of user:root"), "{}", err(&o));
            denials += 2;
        }
    }
    let load_time = load_started.elapsed();
    let hwm = vm(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    let counts = join_all(threads);
    drop(idle);
    let (med, max) = median_max_ms(&mut lat);
    let (slow_rounds, garbage, cut, big) = (
        counts[..SLOW].iter().sum::<usize>(),
        counts[SLOW..SLOW + 2].iter().sum::<usize>(),
        counts[SLOW + 2..SLOW + 4].iter().sum::<usize>(),
        counts[SLOW + 4..].iter().sum::<usize>(),
    );
    println!(
        "hostile clients for {:.1} s: {} idle non-root connections ({cap_refusals} probes found the cap full; \
         portd held up to {} connections), {SLOW} slow writers \
         ({slow_rounds} deadline answers), 2 garbage-line streams ({garbage} error answers), 2 cut-off request loops \
         ({cut} connections), 4 over-long-line loops ({big} lines refused), {denials} denied applies: {} status samples, \
         median {med:.2} ms, worst {max:.2} ms; portd RSS {rss_before} KiB before, peak {hwm} KiB",
        load_time.as_secs_f64(),
        CAP - 2,
        max_sockets - sockets_before,
        lat.len()
    );
    assert!(cap_refusals > 0, "the non-root connection cap was never probed");
    assert!(denials > 0 && big > 0 && garbage > 0 && cut > 0);
    // The README's target is 100 ms, measured with a release build; an unoptimised portd
    // (a debug `cargo test`) spends several times longer reading each 4 MiB line, so it is
    // held to 250 ms.
    let limit = if cfg!(debug_assertions) { 250.0 } else { 100.0 };
    assert!(max < limit, "status took {max:.1} ms under load (limit {limit} ms)");
    // About 1,170 connections and four 4 MiB line buffers at once: held to a quarter of
    // the unit's MemoryMax=512M.
    assert!(hwm < 128 * 1024, "portd peak RSS {hwm} KiB");
    // The denied applies changed nothing.
    assert_eq!(net.table("portd").as_deref(), Some(table_before.as_str()), "kernel table changed");
    let js = d.status_json();
    assert_eq!(placed_names(&js), vec!["user:root/http"], "{js}");
    assert_eq!(js["in_sync"], true);
}
