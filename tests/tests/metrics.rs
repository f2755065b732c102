//! Observability end to end: the metrics endpoint (parsed by the Prometheus client
//! library's own parsers, from a virtual environment like the Ansible tests make), its
//! absence by default, a taken port, `portctl metrics`, and element comments in the
//! kernel that `nft` prints, reads back and portd repairs.

use portd_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const LISTEN: &str = "127.0.0.1:9649";

/// The Python of a virtual environment with prometheus_client (from PyPI, the first time).
fn prom_python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let venv = std::env::var_os("PORTD_PROM_VENV").map_or_else(|| root.join("target/prom-venv"), PathBuf::from);
        let py = venv.join("bin/python");
        if !py.exists() {
            let o = sh("python3", &["-m", "venv", &venv.display().to_string()]);
            assert!(o.status.success(), "python3 -m venv failed (apt-get install python3-venv): {}", err(&o));
        }
        let py_s = py.display().to_string();
        let o = sh(&py_s, &["-m", "pip", "install", "-q", "--disable-pip-version-check", "prometheus_client>=0.20,<1"]);
        assert!(o.status.success(), "cannot install prometheus_client from PyPI into {}: {}", venv.display(), err(&o));
        py
    })
}

/// An exposition parsed by prometheus_client: family types and samples.
struct Parsed {
    families: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Parsed {
    fn of(text: &str, format: &str) -> Parsed {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("metrics/parse.py");
        let mut child = Command::new(prom_python())
            .arg(&script)
            .arg(format)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run parse.py");
        use std::io::Write;
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write exposition");
        let o = child.wait_with_output().expect("parse.py");
        assert!(o.status.success(), "prometheus_client ({format}) refused the exposition: {}\n{text}", err(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("parse.py JSON");
        let families = v["families"]
            .as_object()
            .expect("families")
            .iter()
            .map(|(k, t)| (k.clone(), t.as_str().unwrap_or_default().to_string()))
            .collect();
        let samples = v["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|s| {
                let labels = s[1]
                    .as_object()
                    .expect("labels")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                (s[0].as_str().unwrap_or_default().to_string(), labels, s[2].as_f64().unwrap_or(f64::NAN))
            })
            .collect();
        Parsed { families, samples }
    }

    /// The value of the sample `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.2)
    }
}

/// `curl` in the server namespace: (status code, content type, body).
fn http(net: &Net, args: &[&str]) -> (u16, String, String) {
    let mut a = vec!["-s", "-m", "10", "-o", "-", "-w", "\n%{http_code} %{content_type}"];
    a.extend_from_slice(args);
    let out = net.exec_ok(&net.srv, "curl", &a);
    let (body, tail) = out.rsplit_once('\n').expect("curl -w line");
    let (code, ctype) = tail.split_once(' ').unwrap_or((tail, ""));
    (code.parse().expect("HTTP code"), ctype.to_string(), body.to_string())
}

fn scrape(net: &Net) -> Parsed {
    let (code, ctype, body) = http(net, &[&format!("http://{LISTEN}/metrics")]);
    assert_eq!(code, 200, "{body}");
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "content type {ctype}");
    Parsed::of(&body, "text")
}

fn forward_packets(p: &Parsed, owner: &str, name: &str) -> f64 {
    p.value("portd_forward_packets_total", &[("owner", owner), ("name", name)])
        .unwrap_or_else(|| panic!("no portd_forward_packets_total for {owner}/{name}: {:?}", p.samples))
}

fn with_metrics(net: &Net) -> String {
    config(net, &format!("  metrics: {{listen: \"{LISTEN}\"}}\nforwards:\n  - name: web\n    port: 80\n    to: 8080\n"))
}

#[test]
fn the_default_config_opens_no_tcp_socket() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, "forwards:\n  - name: web\n    port: 80\n    to: 8080\n"));
    let pid = d.child.id().to_string();
    let sockets = net.exec_ok(&net.srv, "ss", &["-H", "-a", "-n", "-p", "-t", "-u", "-w"]);
    let mine: Vec<&str> = sockets.lines().filter(|l| l.contains(&format!("pid={pid},"))).collect();
    assert!(mine.is_empty(), "portd holds IP sockets without settings.metrics: {mine:?}");
    let unix = net.exec_ok(&net.srv, "ss", &["-H", "-a", "-x", "-p"]);
    assert!(unix.contains(&format!("pid={pid},")), "the check sees portd's own sockets (control socket): {unix}");
}

#[test]
fn a_taken_port_stops_the_start_naming_the_address() {
    let net = Net::setup();
    let _holder = Bg(Command::new("ip")
        .args(["netns", "exec", &net.srv, "socat", &format!("TCP-LISTEN:{},bind=127.0.0.1,fork", 9649), "-"])
        .stdin(Stdio::null())
        .spawn()
        .expect("socat"));
    wait_for(
        || net.exec_ok(&net.srv, "ss", &["-H", "-l", "-t", "-n"]).contains(LISTEN),
        "socat to hold 127.0.0.1:9649",
    );
    let cfg = net.dir.join("portd.yaml");
    std::fs::write(&cfg, with_metrics(&net)).expect("config");
    let o = Command::new("ip")
        .args(["netns", "exec", &net.srv])
        .arg(bin("portd"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("run portd");
    let text = err(&o);
    assert_eq!(o.status.code(), Some(1), "portd started although {LISTEN} is taken: {text}");
    assert!(text.contains("binding the metrics listener 127.0.0.1:9649"), "{text}");
    assert!(text.contains("Address already in use"), "{text}");
    assert!(net.table("portd").is_none(), "portd touched the kernel before refusing to start");
}

#[test]
fn metrics_follow_traffic_and_portctl_prints_the_same_families() {
    let net = Net::setup();
    let _app = net.tcp_app(&net.srv, 8080, "hello");
    let d = Portd::start(&net, &with_metrics(&net));
    let before = scrape(&net);
    for f in [
        "portd_forward_packets",
        "portd_forward_bytes",
        "portd_forwards",
        "portd_in_sync",
        "portd_repairs",
        "portd_requests",
        "portd_apply_duration_seconds",
        "portd_drift_repair_latency_seconds",
        "portd_build_info",
    ] {
        assert!(before.families.contains_key(f), "family {f} missing: {:?}", before.families);
    }
    // No forward is suspended: portd_forward_suspended has no sample (and so no family).
    let raw = http(&net, &[&format!("http://{LISTEN}/metrics")]).2;
    assert!(!raw.contains("portd_forward_suspended{"), "{raw}");
    assert_eq!(before.value("portd_forwards", &[("state", "suspended")]), Some(0.0));
    assert_eq!(before.families["portd_forward_packets"], "counter");
    assert_eq!(before.families["portd_apply_duration_seconds"], "histogram");
    assert_eq!(before.value("portd_in_sync", &[]), Some(1.0));
    assert_eq!(before.value("portd_forwards", &[("state", "active")]), Some(1.0));
    assert_eq!(before.value("portd_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
    let labels = [("owner", "system"), ("name", "web"), ("port", "80"), ("to", "8080"), ("proto", "tcp")];
    assert!(before.value("portd_forward_packets_total", &labels).is_some(), "{:?}", before.samples);
    let p0 = forward_packets(&before, "system", "web");

    for _ in 0..3 {
        assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("hello"));
    }
    let after = scrape(&net);
    let p1 = forward_packets(&after, "system", "web");
    assert!(p1 >= p0 + 3.0, "packets went from {p0} to {p1} after three connections");
    let b1 = after.value("portd_forward_bytes_total", &[("name", "web")]).expect("bytes");
    assert!(b1 > 0.0, "no bytes counted");

    // Requests by command and result, and the apply histogram, move with a change.
    let add = d.ctl(&["add", "extra", "81", "8081"]);
    assert!(add.status.success(), "portctl add: {}", err(&add));
    let bad = d.ctl(&["add", "extra", "82", "8081"]);
    assert!(!bad.status.success(), "a second forward named extra was accepted");
    let m = scrape(&net);
    assert_eq!(m.value("portd_requests_total", &[("command", "add"), ("result", "ok")]), Some(1.0));
    assert_eq!(m.value("portd_requests_total", &[("command", "add"), ("result", "invalid")]), Some(1.0));
    let applied = m.value("portd_apply_duration_seconds_count", &[]).expect("histogram count");
    assert!(applied >= 1.0, "no apply recorded: {applied}");
    assert_eq!(m.value("portd_forwards", &[("state", "active")]), Some(2.0), "web and extra");

    // OpenMetrics when asked for, accepted by the strict OpenMetrics parser.
    let (code, ctype, body) = http(
        &net,
        &[
            "-H",
            "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            &format!("http://{LISTEN}/metrics"),
        ],
    );
    assert_eq!(code, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let om = Parsed::of(&body, "openmetrics");
    assert_eq!(om.families, m.families, "OpenMetrics and text differ in families");

    // Only GET /metrics.
    assert_eq!(http(&net, &[&format!("http://{LISTEN}/")]).0, 404);
    assert_eq!(http(&net, &["-X", "POST", &format!("http://{LISTEN}/metrics")]).0, 405);

    // Scrapers that connect and send nothing are dropped after the 2 s header timeout
    // (408), root's included, and changes go on meanwhile.
    let socket = d.socket.clone();
    let (refused, took) = in_netns(&net.srv, move || {
        use std::io::Read;
        let idle: Vec<std::net::TcpStream> =
            (0..8).map(|_| std::net::TcpStream::connect(LISTEN).expect("connect")).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut ninth = std::net::TcpStream::connect(LISTEN).expect("connect");
        ninth.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let mut answer = String::new();
        let _ = ninth.read_to_string(&mut answer);
        let t = Instant::now();
        let o = Command::new(bin("portctl"))
            .arg("--socket")
            .arg(&socket)
            .args(["add", "busy", "83", "8083"])
            .output()
            .expect("portctl");
        assert!(o.status.success(), "portctl add while scrapers stall: {}", err(&o));
        drop(idle);
        (answer, t.elapsed())
    });
    assert!(refused.starts_with("HTTP/1.1 408"), "the ninth (idle) scrape got: {refused}");
    assert!(took < Duration::from_secs(2), "a change took {took:?} while 8 scrapers stalled");

    // portctl metrics: the same families, parsed by the same parser.
    let o = d.ctl(&["metrics"]);
    assert!(o.status.success(), "portctl metrics: {}", err(&o));
    let ctl = Parsed::of(&out(&o), "text");
    assert_eq!(ctl.families, m.families, "portctl metrics and the endpoint differ in families");
    assert_eq!(forward_packets(&ctl, "user:root", "extra"), 0.0);
}

/// The config reload metrics follow the outcome of each reload (a refused one sets 0 and
/// keeps the time of the last good load; a good one sets 1 and moves it), and the
/// standard process metrics describe portd itself.
#[test]
fn reload_outcome_and_process_metrics() {
    let net = Net::setup();
    let _app = net.tcp_app(&net.srv, 8080, "hello");
    let good = with_metrics(&net);
    let d = Portd::start(&net, &good);
    let ok = "portd_config_last_reload_successful";
    let at = "portd_config_last_reload_success_timestamp_seconds";
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    let first = scrape(&net);
    assert_eq!(first.families.get(ok).map(String::as_str), Some("gauge"), "{:?}", first.families);
    assert_eq!(first.value(ok, &[]), Some(1.0), "the config read at start");
    let started = first.value(at, &[]).expect("timestamp");
    assert!(started <= now() && started > now() - 60.0, "loaded at start: {started}");
    // Process metrics, about portd itself.
    let pid = d.child.id();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("portd's fds").count() as f64;
    let open = first.value("process_open_fds", &[]).expect("process_open_fds");
    assert!((open - fds).abs() <= 3.0, "portd's open fds: {open} reported, {fds} in /proc/{pid}/fd");
    let rss = first.value("process_resident_memory_bytes", &[]).expect("rss");
    assert!(rss > 1e6 && rss < 1e9, "resident memory {rss}");
    let start = first.value("process_start_time_seconds", &[]).expect("start time");
    assert!((start - started).abs() < 10.0, "portd started when it loaded its config: {start} vs {started}");
    assert_eq!(first.families.get("process_cpu_seconds").map(String::as_str), Some("counter"));
    assert!(first.value("process_cpu_seconds_total", &[]).is_some_and(|c| c >= 0.0));
    assert!(first.value("process_max_fds", &[]).is_some_and(|m| m >= open));

    std::fs::write(&d.config, "version: 1\nsettings: [not, a, mapping\n").expect("write config");
    let o = d.ctl(&["reload"]);
    assert!(!o.status.success(), "a broken config is refused: {}", out(&o));
    let refused = scrape(&net);
    assert_eq!(refused.value(ok, &[]), Some(0.0));
    assert_eq!(refused.value(at, &[]), Some(started), "a refused reload keeps the last success");

    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(&d.config, &good).expect("write config");
    let o = d.ctl(&["reload", "--dry-run"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(scrape(&net).value(ok, &[]), Some(0.0), "a dry run is no reload");
    let o = d.ctl(&["reload"]);
    assert!(o.status.success(), "{}", err(&o));
    let again = scrape(&net);
    assert_eq!(again.value(ok, &[]), Some(1.0));
    let moved = again.value(at, &[]).expect("timestamp");
    assert!(moved > started && moved <= now(), "the good reload moved it: {started} -> {moved}");
}

#[test]
fn elements_carry_owner_comments_that_nft_reads_back_and_portd_repairs() {
    let net = Net::setup();
    let d = Portd::start(&net, &with_metrics(&net));
    let add = d.ctl(&["add", "extra", "81", "8081"]);
    assert!(add.status.success(), "portctl add: {}", err(&add));
    let table = net.table("portd").expect("table");
    assert!(table.contains("tcp . 80 comment \"system/web\" : 8080"), "{table}");
    assert!(table.contains("tcp . 81 comment \"user:root/extra\" : 8081"), "{table}");
    let listed = table.lines().filter(|l| l.contains("tcp . 8")).count();
    let commented = table.lines().filter(|l| l.contains("tcp . 8") && l.contains(" comment \"")).count();
    assert_eq!(listed, commented, "an element without a comment:\n{table}");

    // The listing round-trips through nft, in a namespace of its own.
    let file = write(&net.dir, "listed.nft", &table);
    let check = sh("unshare", &["-n", "nft", "-c", "-f", &file.display().to_string()]);
    assert!(check.status.success(), "nft -c -f of the listing: {}\n{table}", err(&check));

    // A changed comment is drift: portd puts its own back.
    let edit = "delete element inet portd fwd_to { tcp . 80 }\n\
                add element inet portd fwd_to { tcp . 80 comment \"someone/else\" : 8080 }\n";
    let f = write(&net.dir, "edit.nft", edit);
    net.exec_ok(&net.srv, "nft", &["-f", &f.display().to_string()]);
    let t = Instant::now();
    loop {
        let now = net.table("portd").unwrap_or_default();
        if now.contains("tcp . 80 comment \"system/web\" : 8080") && !now.contains("someone/else") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the foreign comment was not repaired:\n{now}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let m = scrape(&net);
    assert!(m.value("portd_repairs_total", &[]).unwrap_or(0.0) >= 1.0, "{:?}", m.samples);
    assert!(m.value("portd_drift_repair_latency_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    assert_eq!(m.value("portd_in_sync", &[]), Some(1.0));
}

/// Sends `head` to the endpoint from the server's namespace as `uid` and returns the
/// answer's status code (0 when the connection closed unanswered).
fn raw_http(net: &Net, uid: u32, head: Vec<u8>) -> u16 {
    in_netns(&net.srv, move || {
        set_thread_uid(uid);
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(LISTEN).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let _ = s.write_all(&head);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
    })
}

/// Makes this thread act as `uid` (its own credentials only).
fn set_thread_uid(uid: u32) {
    if uid == 0 {
        return;
    }
    // SAFETY: raw system calls that change this thread's credentials only; checked.
    let rc = unsafe { libc::syscall(libc::SYS_setresgid, uid, uid, uid) };
    assert_eq!(rc, 0, "setresgid: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    assert_eq!(rc, 0, "setresuid: {}", std::io::Error::last_os_error());
}

#[test]
fn root_scrapes_are_answered_under_a_flood_of_idle_connections_and_heads_are_bounded() {
    let net = Net::setup();
    let attacker = TestUser::new("pmf");
    let uid = attacker.uid();
    let d = Portd::start(&net, &with_metrics(&net));
    // Another local account keeps 200 idle connections open, reconnecting as they close.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        spawn_in_netns(&net.srv, move || {
            set_thread_uid(uid);
            let mut held: Vec<std::net::TcpStream> = Vec::new();
            let mut opened = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                held.retain(|s| {
                    let mut b = [0u8; 1];
                    s.set_nonblocking(true).is_ok()
                        && matches!(s.peek(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
                });
                while held.len() < 200 {
                    match std::net::TcpStream::connect(LISTEN) {
                        Ok(s) => {
                            held.push(s);
                            opened += 1;
                        }
                        Err(_) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            opened
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let mut codes = Vec::new();
    let mut times = Vec::new();
    for _ in 0..48 {
        let t = Instant::now();
        codes.push(raw_http(&net, 0, get.clone()));
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.join().expect("flood");
    let (med, max) = median_max_ms(&mut times);
    let ok = codes.iter().filter(|c| **c == 200).count();
    eprintln!("{opened} idle connections of uid {uid} opened meanwhile: {ok} of 48 root scrapes answered 200, {med:.1} ms median, {max:.1} ms worst");
    assert!(opened >= 200, "the flood ran: {opened}");
    assert_eq!(ok, 48, "root's scrapes: {codes:?}");
    // The head limit is exact: 8 KiB with its blank line is read, one byte more is not.
    let head = |size: usize| {
        let mut h = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        h.resize(size - 4, b'a');
        h.extend_from_slice(b"\r\n\r\n");
        h
    };
    assert_eq!(raw_http(&net, 0, head(8192)), 200, "an 8 KiB head is served");
    assert_eq!(raw_http(&net, 0, head(8193)), 431, "an 8 KiB + 1 head is refused");
    assert_eq!(raw_http(&net, 0, head(9 * 1024)), 431, "a 9 KiB head is refused");
    drop(d);
    // settings.metrics.allow: a loopback scraper outside the list is closed unanswered.
    let cfg = with_metrics(&net)
        .replace(&format!("listen: \"{LISTEN}\""), &format!("listen: \"{LISTEN}\", allow: [192.0.2.0/24]"));
    let _d = Portd::start(&net, &cfg);
    assert_eq!(raw_http(&net, 0, get), 0, "a peer outside settings.metrics.allow got an answer");
}

/// Runs `code` with /usr/bin/python3 in the server's namespace as `user`, in the
/// background; its stdout is piped.
fn python_as(net: &Net, user: &TestUser, code: &str) -> std::process::Child {
    net.nsenter(&net.srv, "setpriv")
        .args([format!("--reuid={}", user.uid()), format!("--regid={}", user.uid()), "--clear-groups".into()])
        .args(["/usr/bin/python3", "-c", code])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3")
}

#[test]
fn no_account_crowds_out_other_scrapers_from_many_addresses_or_by_scraping_back_to_back() {
    // The red team's two ways: one account holds idle connections from 16 addresses of
    // 127.0.0.0/8 (which counted as 16 peers of 4 connections: all 64 places), and three
    // accounts scrape back to back on 4 connections each, 12 for 8 scrape slots (which
    // kept them all taken: root's scrapes were answered 503). Meanwhile another
    // account's scraper and root's must get every answer.
    let net = Net::setup();
    let (hog, scraper) = (TestUser::new("pmh"), TestUser::new("pms"));
    let busy = [TestUser::new("pmb"), TestUser::new("pmc"), TestUser::new("pmd")];
    let _d = Portd::start(&net, &with_metrics(&net));
    let hold = format!(
        "import socket, time\nmost = 0\nt = time.time()\nwhile time.time() - t < 8:\n    held = []\n    for i in range(16):\n        for k in range(4):\n            s = socket.socket()\n            s.bind(('127.0.0.%d' % (i + 2), 0))\n            try:\n                s.connect(('{LISTEN_IP}', {LISTEN_PORT}))\n                held.append(s)\n            except OSError:\n                s.close()\n    time.sleep(0.3)\n    alive = 0\n    for s in held:\n        s.setblocking(False)\n        try:\n            s.recv(1, socket.MSG_PEEK)\n        except BlockingIOError:\n            alive += 1\n        except OSError:\n            pass\n        s.close()\n    most = max(most, alive)\nprint(most)\n",
        LISTEN_IP = "127.0.0.1",
        LISTEN_PORT = 9649,
    );
    let busy_code = "import socket, threading, time\ncodes = {}\nlock = threading.Lock()\ndef loop():\n    t = time.time()\n    while time.time() - t < 8:\n        s = socket.create_connection(('127.0.0.1', 9649))\n        s.sendall(b'GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n')\n        data = b''\n        while True:\n            b = s.recv(65536)\n            if not b: break\n            data += b\n        s.close()\n        c = data.split(b' ')[1].decode() if data.count(b' ') else 'none'\n        with lock: codes[c] = codes.get(c, 0) + 1\nths = [threading.Thread(target=loop) for _ in range(4)]\nfor th in ths: th.start()\nfor th in ths: th.join()\nprint(sum(codes.values()), codes)\n";
    let mut children = vec![python_as(&net, &hog, &hold)];
    children.extend(busy.iter().map(|b| python_as(&net, b, busy_code)));
    std::thread::sleep(Duration::from_millis(700));
    let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let (mut codes, mut times) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let uid = if i % 2 == 0 { 0 } else { scraper.uid() };
        let t = Instant::now();
        codes.push((uid, raw_http(&net, uid, get.clone())));
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    let outputs: Vec<String> = children
        .into_iter()
        .map(|c| String::from_utf8_lossy(&c.wait_with_output().expect("attacker").stdout).trim().to_string())
        .collect();
    let (med, max) = median_max_ms(&mut times);
    eprintln!(
        "most idle connections held from 16 addresses: {}; back-to-back scrapers: {}; root's and another account's scrapes {med:.1} ms median, {max:.1} ms worst",
        outputs[0],
        outputs[1..].join(" / ")
    );
    let held: usize = outputs[0].parse().unwrap_or(usize::MAX);
    assert!(held <= 4, "one account held {held} connections (PER_PEER is 4)");
    for busy in &outputs[1..] {
        let made: usize = busy.split(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0);
        assert!(made >= 20, "the back-to-back scraper ran: {busy}");
    }
    assert!(codes.iter().all(|(_, c)| *c == 200), "root's (uid 0) and uid {}'s scrapes: {codes:?}", scraper.uid());
}
