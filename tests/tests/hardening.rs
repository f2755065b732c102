//! Control-plane hardening, end to end: unprivileged attackers (real accounts) against the
//! real daemon. Root's status stays fast, drift is still repaired, memory stays bounded,
//! and very large answers reach the client whole. Each test prints its figures
//! (`cargo test -p portd-tests --test hardening -- --nocapture`).

use portd_tests::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tests of this file one at a time: each times root's requests or measures a
/// daemon's memory while attacking it, and two of them on 2 cores measure each other
/// (a 30,000-forward apply beside a timed status) rather than the attack.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A memory figure of `pid`'s /proc status (`VmRSS`, `VmHWM`), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} of pid {pid}"));
    kb / 1024.0
}

/// Resident memory of `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmRSS")
}

/// Runs `portd-hostile` as `user`; returns once it has opened its connections.
fn hostile(user: &TestUser, args: &[&str]) -> (Child, usize) {
    let mut c = Command::new("setpriv")
        .args([format!("--reuid={}", user.name), format!("--regid={}", user.name), "--clear-groups".into()])
        .arg(bin("portd-hostile"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run portd-hostile (cargo build --workspace --bins)");
    let mut line = String::new();
    let out = c.stdout.take().expect("stdout");
    let mut r = BufReader::new(out);
    r.read_line(&mut line).expect("hostile output");
    let n = line.trim().strip_prefix("connected ").and_then(|n| n.parse().ok()).expect("connected N");
    std::mem::forget(r);
    (c, n)
}

/// Times `portctl status` as root.
fn timed_status(d: &Portd) -> Duration {
    let t = Instant::now();
    let o = d.ctl(&["status"]);
    assert!(o.status.success(), "status failed: {}", err(&o));
    t.elapsed()
}

#[test]
fn nested_yaml_in_flight_stalls_neither_status_nor_drift_repair() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let attacker = TestUser::new("pha");
    let d = Portd::start(&net, &config(&net, &format!("grants:\n  - {{user: {}, ports: [80]}}\n", attacker.name)));
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let seed = write(&net.dir, "seed.yaml", "version: 1\nforwards:\n  - {name: http, port: 80, to: 8080}\n");
    assert!(d.ctl(&["apply", seed.to_str().expect("p")]).status.success());
    // 400 KB of `forwards: {a: {a: ...` (100,000 levels): 31 s of the daemon's time before.
    let nested = format!("version: 1\nforwards: {}{}\n", "{a: ".repeat(100_000), "}".repeat(100_000));
    let file = write(&net.dir, "nested.yaml", &nested);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..2 {
        let (stop, name, socket, file) = (stop.clone(), attacker.name.clone(), d.socket.clone(), file.clone());
        attackers.push(std::thread::spawn(move || {
            let mut refused = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let o = Command::new("setpriv")
                    .args([format!("--reuid={name}"), format!("--regid={name}"), "--clear-groups".into()])
                    .arg(bin("portctl"))
                    .arg("--socket")
                    .arg(&socket)
                    .args(["apply", "--dry-run"])
                    .arg(&file)
                    .output()
                    .expect("portctl");
                assert_eq!(o.status.code(), Some(1), "{}", err(&o));
                assert!(err(&o).contains("nesting is deeper than 64 levels"), "{}", err(&o));
                refused += 1;
            }
            refused
        }));
    }
    let mut status = Vec::new();
    let mut repair = Vec::new();
    let addr: std::net::SocketAddr = format!("{SRV4}:80").parse().expect("addr");
    for _ in 0..20 {
        status.push(timed_status(&d));
        net.exec_ok(&net.srv, "nft", &["delete", "table", "inet", "portd"]);
        let cli = net.cli.clone();
        let t = in_netns(&cli, move || time_until_reply(addr, "app", Duration::from_secs(3)));
        repair.push(t.expect("drift repaired while the attack runs"));
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let refused: usize = attackers.into_iter().map(|t| t.join().expect("attacker thread")).sum();
    let (smed, smax) = median_max_ms(&mut status);
    let (rmed, rmax) = median_max_ms(&mut repair);
    eprintln!(
        "nested YAML ({refused} requests refused meanwhile): root status {smed:.1} ms median, {smax:.1} ms worst; drift repair {rmed:.1} ms median, {rmax:.1} ms worst"
    );
    assert!(refused > 0, "the attack ran");
    assert!(smax < 1000.0, "root's status within 1 s: worst {smax} ms");
    assert!(rmax < 1500.0, "drift repaired within 1.5 s: worst {rmax} ms");
}

#[test]
fn connections_that_never_read_do_not_lock_out_root_or_other_users() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let attacker = TestUser::new("phb");
    let other = TestUser::new("phc");
    let d = Portd::start(&net, &config(&net, ""));
    let sock = d.socket.display().to_string();
    let (mut h, opened) = hostile(&attacker, &["noread", &sock, "1030"]);
    let mut times = Vec::new();
    for _ in 0..20 {
        times.push(timed_status(&d));
    }
    // Another unprivileged user gets through too: the caps are per uid.
    let o = d.ctl_as(&other.name, "", &["status"]);
    assert!(o.status.success(), "another user is served: {}", err(&o));
    let log = Portd::log(&net);
    let _ = h.kill();
    let _ = h.wait();
    let (med, max) = median_max_ms(&mut times);
    eprintln!("1030 non-reading connections ({opened} opened): root status {med:.1} ms median, {max:.1} ms worst");
    assert!(max < 2000.0, "root's status within 2 s: worst {max} ms\n{log}");
    // A connection that keeps sending garbage is closed after three lines.
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).expect("connect");
    s.write_all(b"garbage\ngarbage\ngarbage\ngarbage\n").expect("write");
    let mut answers = String::new();
    std::io::Read::read_to_string(&mut s, &mut answers).expect("read until closed");
    assert_eq!(answers.lines().count(), 3, "closed after three malformed lines: {answers}");
    assert!(answers.contains("connection closed"), "{answers}");
}

#[test]
fn unterminated_4_mib_requests_keep_memory_bounded() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let users: Vec<TestUser> = (0..4).map(|_| TestUser::new("phd")).collect();
    let d = Portd::start(&net, &config(&net, ""));
    let pid = d.child.id();
    let before = rss_mib(pid);
    let sock = d.socket.display().to_string();
    let mut peak = before;
    let mut kids = Vec::new();
    let mut opened = 0;
    for u in &users {
        let (c, n) = hostile(u, &["unterminated", &sock, "50", &(4 << 20).to_string()]);
        opened += n;
        kids.push(c);
        peak = peak.max(rss_mib(pid));
    }
    let t = Instant::now();
    let mut status = Vec::new();
    while t.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_mib(pid));
        status.push(timed_status(&d));
    }
    for mut k in kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    let mut after = rss_mib(pid);
    let settle = Instant::now();
    while after >= 32.0 && settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        after = rss_mib(pid);
    }
    let (smed, smax) = median_max_ms(&mut status);
    eprintln!(
        "{opened} unterminated 4 MiB requests: RSS {before:.1} MiB before, {peak:.1} MiB peak, {after:.1} MiB after; root status {smed:.1} ms median, {smax:.1} ms worst"
    );
    assert_eq!(opened, 200, "all 200 attacking connections were taken (4 users x 50)");
    assert!(peak <= 128.0, "RSS peak {peak:.1} MiB exceeds 128 MiB");
    assert!(after < 32.0, "RSS after the flood {after:.1} MiB is not under 32 MiB");
}

#[test]
fn a_thirty_thousand_forward_status_reaches_the_client_whole() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let mut text = String::from("version: 1\nforwards:\n");
    for i in 0..30_000u32 {
        text.push_str(&format!("  - {{name: f{i}, port: {}, to: {}}}\n", 1024 + i, 35000 + i));
    }
    let file = write(&net.dir, "big.yaml", &text);
    let t = Instant::now();
    let o = d.ctl(&["apply", file.to_str().expect("p")]);
    assert!(o.status.success(), "{}", err(&o));
    let applied = t.elapsed();
    let t = Instant::now();
    let o = d.ctl(&["status", "--json"]);
    let took = t.elapsed();
    assert!(o.status.success(), "{}", err(&o));
    let js: serde_json::Value = serde_json::from_slice(&o.stdout).expect("whole JSON");
    let n = js["forwards"].as_array().expect("forwards").len();
    eprintln!(
        "30,000 forwards: apply {:.0} ms; status --json {:.0} ms, {:.1} MiB",
        applied.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3,
        o.stdout.len() as f64 / 1048576.0
    );
    assert_eq!(n, 30_000);
    assert_eq!(js["in_sync"], true);
    let o = d.ctl(&["export"]);
    assert!(o.status.success());
    assert_eq!(out(&o).matches("- name: ").count(), 30_000, "export reaches the client whole");
    // Status reads the kernel off the actor's thread: a change does not wait for them.
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let socket = d.socket.clone();
            std::thread::spawn(move || {
                Command::new(bin("portctl")).arg("--socket").arg(socket).args(["status", "--json"]).output()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    let o = d.ctl(&["add", "during", "40000", "40001"]);
    let add = t.elapsed();
    assert!(o.status.success(), "{}", err(&o));
    for r in readers {
        let o = r.join().expect("reader").expect("status");
        assert!(
            o.status.success(),
            "a status during the change failed: {:?} {} stdout {} bytes: {}",
            o.status,
            err(&o),
            o.stdout.len(),
            String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(300)])
        );
    }
    eprintln!("add during three 30,000-forward status reads: {:.1} ms", add.as_secs_f64() * 1e3);
    assert!(add < took / 2, "the change waited for the status reads: {add:?} (a status takes {took:?})");
}

/// Sends `line` (a whole request) on a connection of `uid` and returns the answer line.
fn exchange_as(uid: u32, socket: &std::path::Path, line: &[u8]) -> String {
    let mut s = connect_as(uid, socket).expect("connect as the attacker");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    s.write_all(line).expect("send");
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).expect("answer");
    answer
}

fn apply_line(file: &str, text: &str) -> Vec<u8> {
    let req = serde_json::json!({"version": 1, "command": {"op": "apply", "file": file, "text": text, "dry_run": true, "owner": null}});
    let mut line = serde_json::to_vec(&req).expect("json");
    line.push(b'\n');
    line
}

#[test]
fn refused_files_answer_small_and_memory_stays_bounded() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let attacker = TestUser::new("phe");
    let uid = attacker.uid();
    let d = Portd::start(&net, &config(&net, &format!("grants:\n  - {{user: {}, ports: [80]}}\n", attacker.name)));
    let pid = d.child.id();
    let before = rss_mib(pid);
    let bad = |n: usize| {
        let mut t = String::from("version: 1\nforwards:\n");
        for i in 0..n {
            t.push_str(&format!("  - {{name: f{i}, port: 70000, to: 0}}\n"));
        }
        t
    };
    // 1,300 bad forwards (47 KB): the answer was 10 MB.
    let line = apply_line("rules.yaml", &bad(1_300));
    let answer = exchange_as(uid, &d.socket, &line);
    let js: serde_json::Value = serde_json::from_str(&answer).expect("answer JSON");
    let messages = js["result"]["error"]["messages"].as_array().expect("messages").clone();
    eprintln!("47 KB request ({} bytes): answer {} bytes, {} messages", line.len(), answer.len(), messages.len());
    assert_eq!(js["result"]["error"]["kind"], "invalid", "{answer:.300}");
    assert_eq!(js["result"]["error"]["file"], "rules.yaml", "the file is named once, beside the messages");
    assert!(
        answer.len() <= line.len(),
        "the answer ({} B) is larger than the request ({} B)",
        answer.len(),
        line.len()
    );
    assert!(messages.len() <= 101, "{} messages", messages.len());
    assert!(messages[0].as_str().is_some_and(|m| m.starts_with("3:")), "located without the file: {}", messages[0]);
    let last = messages.last().and_then(|m| m.as_str()).expect("summary");
    assert!(last.contains("… and 2,500 more problem(s)"), "the rest are counted: {last}");
    assert!(!answer.contains("rules.yaml:"), "no message repeats the file name");
    // A 1 MiB file name and 2,500 bad forwards, four connections at once, for 3 s: this
    // got portd OOM-killed under MemoryMax=512M.
    let huge_name = "n".repeat(1 << 20);
    let line = std::sync::Arc::new(apply_line(&huge_name, &bad(2_500)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let socket = d.socket.clone();
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (line, stop, socket) = (line.clone(), stop.clone(), socket.clone());
            std::thread::spawn(move || {
                let mut largest = 0;
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let answer = exchange_as(uid, &socket, &line);
                    assert!(answer.contains("\"kind\":\"invalid\""), "{answer:.300}");
                    largest = largest.max(answer.len());
                    n += 1;
                }
                (n, largest)
            })
        })
        .collect();
    let mut peak = before;
    let t = Instant::now();
    let mut status = Vec::new();
    while t.elapsed() < Duration::from_secs(3) {
        peak = peak.max(rss_mib(pid));
        status.push(timed_status(&d));
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let results = join_all(attackers);
    let sent: usize = results.iter().map(|r| r.0).sum();
    let largest = results.iter().map(|r| r.1).max().unwrap_or(0);
    let (smed, smax) = median_max_ms(&mut status);
    eprintln!(
        "{sent} requests of {} bytes (1 MiB file name, 2,500 bad forwards): largest answer {largest} bytes; RSS {before:.1} MiB before, {peak:.1} MiB peak; root status {smed:.1} ms median, {smax:.1} ms worst",
        line.len()
    );
    assert!(sent >= 4, "the attack ran");
    assert!(largest <= 64 << 10, "answer of {largest} bytes to a 1 MiB-name request");
    assert!(peak <= 128.0, "RSS peak {peak:.1} MiB exceeds 128 MiB");
    // A file whose parse alone would take hundreds of MiB is refused before parsing.
    let mut flat = String::from("version: 1\nforwards:\n  - {");
    let mut i = 0;
    while flat.len() < 3 << 20 {
        flat.push_str(&format!("k{i}: 0,"));
        i += 1;
    }
    flat.push_str("}\n");
    let t = Instant::now();
    let answer = exchange_as(uid, &d.socket, &apply_line("flat.yaml", &flat));
    let took = t.elapsed();
    let after = rss_mib(pid);
    eprintln!("3 MiB flat mapping: refused in {:.1} ms, RSS {after:.1} MiB: {answer:.200}", took.as_secs_f64() * 1e3);
    assert!(answer.contains("one request may take 64 MiB"), "{answer:.300}");
    assert!(after <= 64.0, "RSS {after:.1} MiB after a refused 3 MiB file");
    // The grant's own small file still applies.
    let ok = apply_line("ok.yaml", "version: 1\nforwards:\n  - {name: http, port: 80, to: 8080}\n");
    let answer = exchange_as(uid, &d.socket, &ok);
    assert!(answer.contains("\"ok\""), "{answer}");
}

#[test]
fn refusals_with_line_breaks_in_names_forge_no_log_line_and_the_log_stays_small() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let attacker = TestUser::new("phf");
    let uid = attacker.uid();
    let d = Portd::start(&net, &config(&net, ""));
    let log_before = Portd::log(&net).len();
    let forged = "x\r\n2030-01-01T00:00:00.000000Z  INFO applied change for uid 0 (root) FORGED\n";
    let lines: Vec<Vec<u8>> = [
        serde_json::json!({"version": 1, "command": {"op": "apply", "file": forged, "text": "version: 1\nforwards: []\n", "dry_run": false, "owner": format!("user:{forged}")}}),
        serde_json::json!({"version": 1, "command": {"op": "remove", "name": forged, "owner": null}}),
        serde_json::json!({"version": 1, "command": {"op": "add", "forward": {"name": forged, "port": 80, "to": 8080}, "owner": format!("user:{forged}")}}),
        serde_json::json!({"version": 1, "command": {"op": "export", "owner": format!("user:{forged}")}}),
    ]
    .iter()
    .map(|r| {
        let mut l = serde_json::to_vec(r).expect("json");
        l.push(b'\n');
        l
    })
    .collect();
    let lines = std::sync::Arc::new(lines);
    let t = Instant::now();
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (lines, socket) = (lines.clone(), d.socket.clone());
            std::thread::spawn(move || {
                let s = connect_as(uid, &socket).expect("connect");
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut w = s;
                let mut refused = 0;
                while t.elapsed() < Duration::from_secs(5) {
                    for l in lines.iter() {
                        w.write_all(l).expect("send");
                        let mut answer = String::new();
                        r.read_line(&mut answer).expect("answer");
                        assert!(answer.contains("\"error\""), "refused: {answer}");
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let refused: usize = join_all(attackers).into_iter().sum();
    let attack = t.elapsed();
    let grown = Portd::log(&net).len() - log_before;
    // Suppressed refusals are summarised within 10 s.
    wait_for(
        || Portd::log(&net).contains(&format!("more refusals from uid {uid} suppressed")),
        "the summary of suppressed refusals",
    );
    let log = Portd::log(&net);
    let per_minute = grown as f64 * 60.0 / attack.as_secs_f64() / 1024.0;
    eprintln!(
        "{refused} refused requests in {:.1} s with CR/LF in names: log grew {grown} bytes ({per_minute:.0} KiB/min at that rate)",
        attack.as_secs_f64()
    );
    assert!(refused > 1000, "the attack ran: {refused}");
    assert!(!log.contains('\r'), "a raw CR reached the log");
    for line in log.lines().filter(|l| l.contains("FORGED")) {
        assert!(line.contains("refused"), "a forged line: {line:?}");
        assert!(line.contains("\\r\\n2030-01-01"), "the line break is escaped: {line:?}");
    }
    assert!(log.contains("FORGED"), "the refusals were logged, escaped: {log}");
    assert!(grown <= 64 << 10, "the log grew {grown} bytes during a 5 s attack");
    let summary = log.lines().find(|l| l.contains("suppressed")).expect("summary");
    eprintln!("{summary}");
}

#[test]
fn descriptions_with_bidi_overrides_are_refused_by_the_daemon() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let o = d.ctl(&["add", "web", "80", "8080", "--description", "shop \u{202E}gnp.exe"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("U+202E at character 6"), "{}", err(&o));
    let file = write(
        &net.dir,
        "r.yaml",
        "version: 1\nforwards:\n  - {name: a, port: 80, to: 8080, description: \"a\u{2028}b\"}\n",
    );
    let o = d.ctl(&["apply", file.to_str().expect("path")]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("r.yaml:3:") && err(&o).contains("U+2028 at character 2"), "{}", err(&o));
    assert_eq!(d.status_json()["forwards"].as_array().map(Vec::len), Some(0), "nothing was applied");
}

/// What aliases expand to, and long lists in one forward, are bounded before they cost
/// the daemon: a 30 KB file of one list aliased 6,000 times (36 million nodes) got a
/// 512 MiB portd OOM-killed, and an `add` naming 200,000 interfaces (for a port the
/// account has no grant for) held the actor 29 s: repeats were checked pairwise.
#[test]
fn alias_expansion_and_long_lists_are_refused_before_they_cost() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let attacker = TestUser::new("pha");
    let uid = attacker.uid();
    let d = Portd::start(&net, &config(&net, &format!("grants:\n  - {{user: {}, ports: [80]}}\n", attacker.name)));
    let pid = d.child.id();
    let wide =
        format!("version: 1\nx: &a [{}]\nforwards: [{}]\n", vec!["0"; 6000].join(","), vec!["*a"; 6000].join(","));
    let answer = exchange_as(uid, &d.socket, &apply_line("wide.yaml", &wide));
    assert!(answer.contains("\"kind\":\"invalid\""), "{answer:.300}");
    assert!(answer.contains("YAML aliases add") && answer.contains("the limit is 4 MiB"), "{answer:.300}");
    let peak = status_mib(pid, "VmHWM");
    eprintln!("30 KB alias file: {answer:.200}; peak RSS {peak:.1} MiB");
    assert!(peak <= 128.0, "peak RSS {peak:.1} MiB");

    let names: Vec<String> = (0..200_000).map(|i| format!("i{i:x}")).collect();
    let forward = serde_json::json!({"name": "x", "port": 81, "to": 8181, "interfaces": names});
    let req =
        serde_json::json!({"version": 1, "command": {"op": "add", "forward": forward, "owner": null, "dry_run": true}});
    let mut line = serde_json::to_vec(&req).expect("json");
    line.push(b'\n');
    let answer = exchange_as(uid, &d.socket, &line);
    eprintln!("add naming 200,000 interfaces ({} bytes): {answer:.200}", line.len());
    assert!(answer.contains("\"error\""), "{answer:.300}");
    assert!(answer.contains("200000 interfaces are listed; a forward may name at most 64"), "{answer:.300}");
    assert!(timed_status(&d) < Duration::from_secs(2), "root's status after the refusals");
}

/// One account holds at most its share (16 MiB) of the partial request lines portd
/// keeps: sixteen unfinished 4 MiB requests of one account filled the whole 64 MiB
/// budget, and every other user's request, a status included, was refused meanwhile.
#[test]
fn one_account_holds_at_most_its_share_of_unfinished_requests() {
    let _serial = one_at_a_time();
    let net = Net::setup();
    let (hog, victim) = (TestUser::new("phf"), TestUser::new("phg"));
    let d = Portd::start(&net, &config(&net, &format!("grants:\n  - {{user: {}, ports: [80]}}\n", victim.name)));
    let almost = vec![b'x'; (4 << 20) - 1];
    let mut held = Vec::new();
    let mut own_share = 0;
    for _ in 0..16 {
        let mut s = connect_as(hog.uid(), &d.socket).expect("connect as the hog");
        s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        let _ = s.write_all(&almost);
        let mut answer = String::new();
        let _ = BufReader::new(&s).read_line(&mut answer);
        if answer.contains("your connections hold 16 MiB of unfinished requests already") {
            own_share += 1;
        } else {
            assert!(answer.is_empty(), "an unfinished request is held, or refused for the hog's share: {answer:.300}");
        }
        held.push(s);
    }
    // A large request of another user (100 KB: not a short line) and a short one.
    let big =
        format!("version: 1\n{}forwards:\n  - {{name: http, port: 80, to: 8080}}\n", "# padding\n".repeat(10_000));
    let answer = exchange_as(victim.uid(), &d.socket, &apply_line("big.yaml", &big));
    let status = d.ctl_as(&victim.name, "", &["status"]);
    eprintln!("16 unfinished 4 MiB requests of one account: {own_share} refused for its share; another user's 100 KB apply: {answer:.120}");
    assert!((11..=13).contains(&own_share), "{own_share} of 16 refused for the hog's share (4 fit in 16 MiB)");
    assert!(answer.contains("\"ok\""), "another user's large request is served: {answer:.300}");
    assert!(status.status.success(), "another user's status is served: {}", err(&status));
    drop(held);
}
