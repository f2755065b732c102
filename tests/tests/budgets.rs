//! Budgets by cost, end to end: kernel elements per user and per forward, subordinate
//! uids counted as their owner, and expensive reads shared by concurrent callers. Each
//! test prints its figures (`cargo test -p portd-tests --test budgets -- --nocapture`).

use portd_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

/// `count` forwards of 100-port ranges from `first`, both protocols, no sources.
fn wide_forwards(first: u16, count: u16) -> String {
    (0..count)
        .map(|i| {
            let p = first + i * 100;
            format!("  - {{name: w{i}, port: \"{p}-{}\", to: \"{}-{}\", proto: both}}\n", p + 99, p + 20000, p + 20099)
        })
        .collect()
}

#[test]
fn element_budgets_refuse_costly_shapes_and_the_largest_allowed_set_goes_in_100_ms() {
    let net = Net::setup();
    let user = TestUser::new("phe");
    let d = Portd::start_env(
        &net,
        &config(&net, &format!("grants:\n  - {{user: {}, ports: [\"1000-9999\"], to: [\"1024-65535\"]}}\n", user.name)),
        &[("PORTD_LOG", "info,portd::actor=debug")],
    );
    let apply = |name: &str, text: &str| {
        let f = write(&net.dir, name, text);
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
        let t = Instant::now();
        let o = d.ctl_as(&user.name, "", &["apply", f.to_str().expect("path")]);
        (o, t.elapsed())
    };
    // The shape of the report: 10 ports × 2 protocols × 1,000 sources, 20,000 interval elements.
    let sources: Vec<String> = (0..1000).map(|i| format!("\"10.1.{}.{}/32\"", i / 256, i % 256)).collect();
    let costly = format!(
        "version: 1\nforwards:\n  - {{name: many, port: \"1000-1009\", to: \"2000-2009\", proto: both, sources: [{}]}}\n",
        sources.join(", ")
    );
    let (o, _) = apply("costly.yaml", &costly);
    assert_eq!(o.status.code(), Some(1), "refused as a bad file: {}", err(&o));
    assert!(err(&o).contains("forwards[0].sources"), "located: {}", err(&o));
    assert!(err(&o).contains("20000 source elements") && err(&o).contains("at most 64"), "{}", err(&o));
    // Over the user's element budget (5,000 by default): 13 × 400 elements.
    let (o, _) = apply("over.yaml", &format!("version: 1\nforwards:\n{}", wide_forwards(1000, 13)));
    assert_eq!(o.status.code(), Some(4), "refused as over the grant: {}", err(&o));
    assert!(err(&o).contains("5200 elements") && err(&o).contains("max_elements: 5000"), "{}", err(&o));
    // Over the source budget (64 by default) with two forwards of 48 source elements each.
    let src = |name: &str, port: u16| {
        format!("  - {{name: {name}, port: \"{port}-{}\", to: \"{}-{}\", proto: both, sources: [\"10.2.0.0/16\", \"10.3.0.0/16\"]}}\n", port + 11, port + 20000, port + 20011)
    };
    let (o, _) = apply("oversrc.yaml", &format!("version: 1\nforwards:\n{}{}", src("s1", 3000), src("s2", 4000)));
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains("max_source_elements: 64"), "{}", err(&o));
    // The largest set allowed: 64 source elements and 4,936 others (5,000 in all: the
    // source forward 384 (with its 64 `fwd_steer_more` entries), eleven ranges of 100
    // ports 4,400, one of 54 ports 216).
    let worst = format!(
        "version: 1\nforwards:\n  - {{name: src, port: \"3500-3531\", to: \"23500-23531\", proto: both, sources: [\"10.9.0.0/16\"]}}\n  - {{name: edge, port: \"2200-2253\", to: \"22200-22253\", proto: both}}\n{}",
        wide_forwards(1000, 11)
    );
    let (o, added) = apply("worst.yaml", &worst);
    assert!(o.status.success(), "the largest allowed set goes in: {}", err(&o));
    let table = net.table("portd").expect("table");
    assert!(table.contains("3500-3531") || table.contains("3500"), "placed");
    // Remove it all while root probes the namespace's nft (a write) and portd's status.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (srv, s2) = (net.srv.clone(), stop.clone());
    // One nft process, commands on its standard input: what is timed is nft's
    // transaction (which waits while the kernel works through portd's batch), not the
    // start of a process, which alone took over 100 ms on a loaded machine.
    let mut nft = std::process::Command::new("ip")
        .args(["netns", "exec", &srv, "nft", "--echo", "--interactive"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("nft --interactive");
    let (mut nft_in, nft_out) = (nft.stdin.take().expect("stdin"), nft.stdout.take().expect("stdout"));
    let nft_probe = std::thread::spawn(move || {
        let (mut worst, mut lines, mut line) = (Duration::ZERO, BufReader::new(nft_out), String::new());
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            nft_in.write_all(b"add table inet probe\n").expect("to nft");
            // The echo ends with the new generation's number.
            while !line.starts_with("# new generation") {
                line.clear();
                assert!(lines.read_line(&mut line).expect("from nft") > 0, "nft ended");
            }
            line.clear();
            worst = worst.max(t.elapsed());
            nft_in.write_all(b"delete table inet probe\n").expect("to nft");
            // A firewall tool's pace, not a flood of transactions.
            std::thread::sleep(Duration::from_millis(10));
        }
        worst
    });
    let (sock, s3) = (d.socket.clone(), stop.clone());
    let status_probe = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !s3.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            let v = request(&sock, &serde_json::json!({"version": 1, "command": {"op": "status"}}));
            assert!(v["result"].get("ok").is_some(), "{v}");
            worst = worst.max(t.elapsed());
            // A pause, so the probe does not take the CPU the removal needs.
            std::thread::sleep(Duration::from_millis(5));
        }
        worst
    });
    std::thread::sleep(Duration::from_millis(200));
    let (o, removed) = apply("empty.yaml", "version: 1\nforwards: []\n");
    assert!(o.status.success(), "{}", err(&o));
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let nft_worst = nft_probe.join().expect("nft probe");
    let _ = nft.wait();
    let status_worst = status_probe.join().expect("status probe");
    let table = net.table("portd").expect("table");
    assert!(!table.contains("3500"), "removed");
    // How long the removal held the actor, as the actor logs it.
    let log = Portd::log(&net);
    let phases: Vec<&str> = log.lines().filter(|l| l.contains("change phases")).collect();
    let held: Vec<u64> =
        phases.iter().filter_map(|l| l.split_once("held the actor ")?.1.strip_suffix(" µs")?.parse().ok()).collect();
    assert_eq!(held.len(), 2, "the apply and the removal log their phases: {phases:?}");
    let (held, phases) = (Duration::from_micros(held[1]), phases[1]);
    eprintln!(
        "largest allowed set (5,000 elements, 64 of them source elements): applied in {:.1} ms, removed in {:.1} ms (portctl, wall), which held the actor {:.1} ms; meanwhile root's nft worst {:.1} ms, root's status worst {:.1} ms",
        added.as_secs_f64() * 1e3,
        removed.as_secs_f64() * 1e3,
        held.as_secs_f64() * 1e3,
        nft_worst.as_secs_f64() * 1e3,
        status_worst.as_secs_f64() * 1e3
    );
    // The removal is one kernel transaction. A release build holds the actor 25-65 ms for
    // it on this 2-core machine with load averages of 6-7 (10,000 elements, the budget
    // before, took 45-80 ms; 144 ms was the worst seen), nft waits for the kernel's part
    // of it (about 10 ms; the rest of nft's time is its own CPU). A debug build, as CI
    // runs, compiles and encodes several times slower (60-290 ms seen). A status waits
    // for the actor, then reads the table. See docs/reliability.md.
    let (hold, status, nft) = if cfg!(debug_assertions) { (300, 400, 200) } else { (150, 200, 150) };
    assert!(held <= Duration::from_millis(hold), "the removal held the actor {held:?}: {phases}");
    assert!(nft_worst <= Duration::from_millis(nft), "root's nft waited {nft_worst:?}; the removal: {phases}");
    assert!(
        status_worst <= Duration::from_millis(status),
        "root's status waited {status_worst:?}; the removal: {phases}"
    );
}

/// A line of /etc/subuid for the length of a test.
struct SubuidLine(String);

impl SubuidLine {
    fn add(line: String) -> SubuidLine {
        let mut f =
            std::fs::OpenOptions::new().append(true).create(true).open("/etc/subuid").expect("open /etc/subuid");
        writeln!(f, "{line}").expect("append to /etc/subuid");
        SubuidLine(line)
    }
}

impl Drop for SubuidLine {
    fn drop(&mut self) {
        if let Ok(text) = std::fs::read_to_string("/etc/subuid") {
            let kept: String = text.lines().filter(|l| *l != self.0).map(|l| format!("{l}\n")).collect();
            let _ = std::fs::write("/etc/subuid", kept);
        }
    }
}

/// The first line the server answers on a fresh connection of `uid` to a status request
/// (a refused connection is answered at once, without one).
fn first_answer(s: &mut std::os::unix::net::UnixStream) -> String {
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let _ = s.write_all(b"{\"version\": 1, \"command\": {\"op\": \"status\"}}\n");
    let mut line = String::new();
    let _ = BufReader::new(&*s).read_line(&mut line);
    line
}

#[test]
fn subordinate_uids_share_their_owners_connection_cap() {
    let net = Net::setup();
    let owner = TestUser::new("phs");
    let other = TestUser::new("pht");
    // A range of this test's own, far above the ranges useradd hands out.
    let start = 3_000_000 + (std::process::id() % 1000) * 70_000;
    let line = SubuidLine::add(format!("{}:{start}:65536", owner.name));
    let d = Portd::start(&net, &config(&net, ""));
    // 16 subordinate uids × 4 connections: the owner's 64.
    let mut held = Vec::new();
    for i in 0..64u32 {
        let mut s = connect_as(start + 1 + i / 4, &d.socket).expect("connect");
        let a = first_answer(&mut s);
        assert!(a.contains("\"ok\""), "connection {i} of a subordinate uid is served: {a}");
        held.push(s);
    }
    // The 65th, from a 17th subordinate uid, is refused as its owner's.
    let mut s = connect_as(start + 100, &d.socket).expect("connect");
    let a = first_answer(&mut s);
    assert!(a.contains(&format!("is a subordinate uid of uid {}", owner.uid())), "{a}");
    assert!(a.contains("64 connections open"), "{a}");
    // So is the owner itself; another user and root are served.
    let mut s = connect_as(owner.uid(), &d.socket).expect("connect");
    assert!(first_answer(&mut s).contains("64 connections open"), "the owner shares the cap");
    let mut s = connect_as(other.uid(), &d.socket).expect("connect");
    let a = first_answer(&mut s);
    assert!(a.contains("\"ok\""), "another user is served: {a}");
    assert!(d.ctl(&["status"]).status.success(), "root is served");
    // Without the range (after a reload), the same uid counts as itself.
    drop(line);
    let o = d.ctl(&["reload"]);
    assert!(o.status.success(), "{}", err(&o));
    let mut s = connect_as(start + 100, &d.socket).expect("connect");
    let a = first_answer(&mut s);
    assert!(a.contains("\"ok\""), "a uid in no range counts as itself after the reload: {a}");
    eprintln!("subordinate uids: 64 connections of 16 subordinate uids held; the 65th (a 17th subordinate uid) and the owner refused; another user, root, and after a reload without the range the same uid served");
}

/// Kernel reads of `kind` the daemon started, from its debug log.
fn reads_started(net: &Net, kind: &str) -> usize {
    Portd::log(net).lines().filter(|l| l.contains(&format!("coalesced read: {kind} read from the kernel"))).count()
}

#[test]
fn concurrent_doctors_share_one_read_and_root_status_stays_fast() {
    // 3,000 forwards here (30,000 in the report): enough for a doctor to take longer
    // than a status on a shared CI machine.
    let n = trials("PORTD_COALESCE_FORWARDS", 3000);
    let net = Net::setup();
    let users: Vec<TestUser> = (0..4).map(|_| TestUser::new("phd")).collect();
    let d = Portd::start_env(&net, &config(&net, ""), &[("PORTD_LOG", "info,portd::coalesce=debug")]);
    let mut text = String::from("version: 1\nforwards:\n");
    for i in 0..n {
        text.push_str(&format!("  - {{name: f{i}, port: {}, to: {}}}\n", 10_000 + i, 40_000 + i));
    }
    let v = request(&d.socket, &apply_request(&text));
    assert_eq!(v["result"]["ok"]["kind"], "changed", "{v:.300}");
    // Eight doctors at once: one snapshot, one kernel read.
    let before = reads_started(&net, "doctor");
    let t = Instant::now();
    let answers = join_all(
        (0..8)
            .map(|_| {
                let sock = d.socket.clone();
                std::thread::spawn(move || {
                    request(&sock, &serde_json::json!({"version": 1, "command": {"op": "doctor"}}))
                })
            })
            .collect(),
    );
    let burst = t.elapsed();
    for a in &answers {
        assert!(a["result"].get("ok").is_some(), "{a:.300}");
        assert_eq!(a, &answers[0], "one result for all");
    }
    let dumps = reads_started(&net, "doctor") - before;
    // The same for other users' status.
    let before_status = reads_started(&net, "status");
    let statuses = join_all(
        users
            .iter()
            .map(|u| {
                let (uid, sock) = (u.uid(), d.socket.clone());
                std::thread::spawn(move || {
                    let mut s = connect_as(uid, &sock).expect("connect");
                    first_answer(&mut s)
                })
            })
            .collect(),
    );
    for s in &statuses {
        assert!(s.contains("\"ok\""), "{s:.300}");
    }
    let status_dumps = reads_started(&net, "status") - before_status;
    let timed = |count: usize| -> Vec<Duration> {
        (0..count)
            .map(|_| {
                let t = Instant::now();
                let v = request(&d.socket, &serde_json::json!({"version": 1, "command": {"op": "status"}}));
                assert!(v["result"].get("ok").is_some(), "{v:.300}");
                t.elapsed()
            })
            .collect()
    };
    let mut quiet = timed(50);
    quiet.sort();
    let quiet_p99 = quiet[48];
    // Four users without a grant run doctor in a loop while root times its status.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = users
        .iter()
        .map(|u| {
            let (uid, sock, stop) = (u.uid(), d.socket.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut done = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let mut s = connect_as(uid, &sock).expect("connect");
                    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
                    s.write_all(b"{\"version\": 1, \"command\": {\"op\": \"doctor\"}}\n").expect("send");
                    let mut line = String::new();
                    BufReader::new(&s).read_line(&mut line).expect("doctor answer");
                    assert!(line.contains("\"ok\""), "{line:.300}");
                    done += 1;
                }
                done
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before_loop = reads_started(&net, "doctor");
    let mut times = timed(100);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let doctors: usize = join_all(loops).into_iter().sum();
    let loop_dumps = reads_started(&net, "doctor") - before_loop;
    times.sort();
    let p99 = times[98];
    let (med, max) = median_max_ms(&mut times);
    eprintln!(
        "{n} forwards: 8 concurrent doctors in {:.0} ms with {dumps} kernel read(s); 4 users' concurrent status with {status_dumps} read(s); 4 users ran {doctors} doctors ({loop_dumps} reads) while root's status took {med:.1} ms median, {:.1} ms p99, {max:.1} ms worst (p99 {:.1} ms without them)",
        burst.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        quiet_p99.as_secs_f64() * 1e3
    );
    assert!(dumps <= 2, "8 concurrent doctors caused {dumps} reads");
    assert!(status_dumps <= 2, "4 concurrent status requests caused {status_dumps} reads");
    assert!(doctors > 4 && loop_dumps < doctors, "the users' doctors shared reads: {loop_dumps} for {doctors}");
    // Without shared reads root's worst status went from 0.5 s to 3.3 s under 4 looping
    // doctors (30,000 forwards). Now the doctors share one answer, encoded once, other
    // users are served by threads of lower priority, and each account takes at most 16
    // MiB of answers a second: their loop takes little from root's status, whose p99 is
    // its own cost on a loaded machine (a release build: 28-76 ms with load averages of
    // 3.5-4, the quiet p99 23-51 ms; see docs/reliability.md). A debug build, as CI runs,
    // reads and encodes several times slower, itself 100-300 ms at p99 without the
    // doctors: there the bound is the doctors' share (before, they made it 3.8-4.1 times
    // the quiet p99; now 1.0-1.4).
    let bound =
        if cfg!(debug_assertions) { quiet_p99 * 2 + Duration::from_millis(100) } else { Duration::from_millis(150) };
    assert!(p99 <= bound, "root's status p99 {p99:?} ({quiet_p99:?} without them)");
}

/// Runs portctl as `user` with `args`; returns whether it succeeded and how long it took.
fn ctl_as(d: &Portd, user: &str, args: &[&str]) -> (bool, Duration) {
    let t = Instant::now();
    let o = d.ctl_as(user, "", args);
    (o.status.success(), t.elapsed())
}

#[test]
fn one_accounts_loop_of_applies_delays_roots_status_and_anothers_add_less_than_its_own() {
    // One account keeps four applies of 100 forwards in flight (each a kernel batch and an
    // fsync on the daemon's one thread). Its files are parsed one at a time, and the
    // actor takes root's requests first and every other account's in turn
    // (daemon/src/actor/turns.rs), so root's status and another user's add wait for less
    // than the busy account's own requests do. Measured here: root 14.5-15.7 ms and the
    // add 15.4-15.9 ms (median) against 26-27 ms; in arrival order 20-22 and 21-27 ms.
    let net = Net::setup();
    let (busy, other) = (TestUser::new("pbl"), TestUser::new("pbo"));
    let grants = format!(
        "grants:\n  - {{user: {}, ports: [\"7000-7199\"], to: \"8000-8999\"}}\n  - {{user: {}, ports: [7500], to: \"8000-8999\"}}\n",
        busy.name, other.name
    );
    let d = Portd::start(&net, &config(&net, &grants));
    let big: String = (0..100).map(|i| format!("  - {{name: f{i}, port: {}, to: {}}}\n", 7000 + i, 8000 + i)).collect();
    let files = [
        write(&net.dir, "big.yaml", &format!("version: 1\nforwards:\n{big}")),
        write(&net.dir, "empty.yaml", "version: 1\nforwards: []\n"),
    ];
    for f in &files {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (mut root, mut others, mut busy_times) = (Vec::new(), Vec::new(), Vec::new());
    std::thread::scope(|s| {
        let loops: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut times = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        for f in &files {
                            let (ok, t) = ctl_as(&d, &busy.name, &["apply", f.to_str().expect("utf-8")]);
                            assert!(ok, "the busy account's apply");
                            times.push(t);
                        }
                    }
                    times
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        for _ in 0..15 {
            let t = Instant::now();
            assert!(d.ctl(&["status"]).status.success());
            root.push(t.elapsed());
            let (ok, t) = ctl_as(&d, &other.name, &["add", "w", "7500", "8500", "--replace"]);
            assert!(ok, "the other user's add");
            others.push(t);
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        busy_times = loops.into_iter().flat_map(|l| l.join().expect("loop")).collect();
    });
    let (rmed, rmax) = median_max_ms(&mut root);
    let (omed, omax) = median_max_ms(&mut others);
    let (bmed, bmax) = median_max_ms(&mut busy_times);
    eprintln!(
        "{} applies of the busy account: {bmed:.1} ms median ({bmax:.1} worst); root's status {rmed:.1} ms ({rmax:.1}); another user's add {omed:.1} ms ({omax:.1})",
        busy_times.len()
    );
    assert!(busy_times.len() >= 16, "the loops ran: {} applies", busy_times.len());
    assert!(rmed < bmed, "root's status {rmed:.1} ms against the busy account's {bmed:.1} ms");
    assert!(omed < bmed, "another user's add {omed:.1} ms against the busy account's {bmed:.1} ms");
}
