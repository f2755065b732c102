//! Steered TCP forwards and kernel ownership of target ports, end to end: the real portd
//! with its BPF data plane (pinned in each test's own bpffs), real accounts, real traffic
//! between two namespaces, over IPv4 and IPv6.

use portd_tests::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A config granting `user` public ports 80-81 and targets 8000-9000.
fn granted(net: &Net, user: &str, settings: &str) -> String {
    let base = config(net, &format!("grants:\n  - user: {user}\n    ports: [\"80-81\"]\n    to: \"8000-9000\"\n"));
    base.replacen("settings:\n", &format!("settings:\n{settings}"), 1)
}

/// Applies `yaml` as `user`.
fn apply_as(d: &Portd, net: &Net, user: &str, yaml: &str) -> Output {
    let f = write(&net.dir, &format!("{user}.yaml"), yaml);
    std::fs::set_permissions(&net.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod file");
    d.ctl_as(user, "", &["apply", f.to_str().expect("utf-8")])
}

fn web(port: u16, to: u16) -> String {
    format!("version: 1\nforwards:\n  - name: web\n    port: {port}\n    to: {to}\n")
}

fn forward<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["forwards"]
        .as_array()
        .and_then(|a| a.iter().find(|f| f["forward"]["name"] == name))
        .unwrap_or_else(|| panic!("no forward {name} in {status}"))
}

/// Runs a Python snippet in the server namespace as `user` (None: root); returns stdout.
fn py_as(net: &Net, user: Option<&str>, code: &str) -> Output {
    let mut c = net.nsenter(&net.srv, "setpriv");
    match user {
        Some(u) => {
            let gid = String::from_utf8_lossy(&sh("id", &["-g", u]).stdout).trim().to_string();
            c.args([format!("--reuid={u}"), format!("--regid={gid}"), "--clear-groups".into()]);
        }
        None => {
            c.arg("--");
        }
    }
    c.args(["/usr/bin/python3", "-c", code]).output().expect("python3")
}

/// The error of binding `port` for TCP and UDP, IPv4 and IPv6, as `user`: one line each.
fn binds_as(net: &Net, user: &str, port: u16) -> String {
    let code = format!(
        "import socket\nfor fam,addr in ((socket.AF_INET,'0.0.0.0'),(socket.AF_INET6,'::'),(socket.AF_INET,'127.0.0.1')):\n  for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n    s=socket.socket(fam,kind)\n    try:\n      s.bind((addr,{port})); print('bound', addr, kind)\n    except OSError as e:\n      print('refused', addr, kind, e.errno)\n"
    );
    out(&py_as(net, Some(user), &code))
}

/// The wall-clock time of a log record (`2026-12-06T05:09:01.886115Z ...`, UTC).
fn log_time(line: &str) -> std::time::SystemTime {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let (date, time) = stamp.trim_end_matches('Z').split_once('T').unwrap_or_else(|| panic!("no time in {line}"));
    let d: Vec<i64> = date.split('-').map(|p| p.parse().expect("date")).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<u64> = hms.split(':').map(|p| p.parse().expect("time")).collect();
    // days since 1970-01-01 (civil from days, Howard Hinnant's algorithm)
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let micros: u64 = format!("{frac:0<6}")[..6].parse().expect("fraction");
    std::time::UNIX_EPOCH
        + Duration::from_secs(days as u64 * 86_400 + t[0] * 3600 + t[1] * 60 + t[2])
        + Duration::from_micros(micros)
}

/// Loads an nft script into the server namespace.
fn nft_file(net: &Net, script: &str) {
    let f = write(&net.dir, "foreign.nft", script);
    net.exec_ok(&net.srv, "nft", &["-f", f.to_str().expect("utf-8")]);
}

/// One connection from the client namespace; the app's reply, or None.
fn get(net: &Net, addr: &str, port: u16) -> Option<String> {
    net.tcp_get(&net.cli, addr, port)
}

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
    // The reserved target port is kept out of automatic port selection.
    let reserved = net.exec_ok(&net.srv, "cat", &["/proc/sys/net/ipv4/ip_local_reserved_ports"]);
    assert!(reserved.split(',').any(|r| r.trim() == "8080"), "ip_local_reserved_ports: {reserved}");
    let m = d.ctl(&["metrics"]);
    assert!(out(&m).contains("portd_dataplane{dispatch=\"steer\",ownership=\"kernel\""), "{}", out(&m));
    assert!(out(&m).contains("portd_forward_target_listening{owner=\"user:"), "{}", out(&m));
}

#[test]
fn a_system_forward_is_steered_to_whoever_serves_its_target() {
    let net = Net::setup();
    let text = config(&net, "forwards:\n  - name: ssh\n    port: 22\n    to: 2222\n");
    let d = Portd::start_bpf(&net, &text, &[]);
    let _app = net.tcp_app(&net.srv, 2222, "port-$SOCAT_SOCKPORT");
    wait_for(|| forward(&d.status_json(), "ssh")["listening"] == true, "the app to be registered");
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
fn another_uid_cannot_take_a_reserved_target_port_and_gets_no_connection() {
    let net = Net::setup();
    let (alice, mallory) = (TestUser::new("st"), TestUser::new("sm"));
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    let both = "version: 1\nforwards:\n  - name: web\n    port: 80\n    to: 8080\n    proto: both\n";
    assert!(apply_as(&d, &net, &alice.name, both).status.success());
    // Every bind of 8080, both protocols, both families, by another uid and by root.
    let m = binds_as(&net, &mallory.name, 8080);
    assert_eq!(m.matches("refused").count(), 6, "mallory:\n{m}");
    assert!(m.lines().all(|l| l.ends_with(" 13")), "EACCES:\n{m}");
    let r = out(&py_as(&net, None, "import socket\ns=socket.socket(socket.AF_INET6)\ntry:\n  s.bind(('::',8080)); print('bound')\nexcept OSError as e: print('refused', e.errno)\n"));
    assert_eq!(r.trim(), "refused 13", "root is refused too");
    // An unrelated port stays free for everyone.
    assert_eq!(binds_as(&net, &mallory.name, 8090).matches("bound").count(), 6);
    // The owner serves on an IPv6-only socket (the shape that let another account take
    // every IPv4 connection beside it) and changes its own set every 200 ms (which used
    // to put the listener check off for good). For 10 s mallory keeps trying to bind
    // 8080 while a client connects back to back: every IPv6 connection reaches alice,
    // no IPv4 connection reaches anyone, the forward stays active.
    let gid = String::from_utf8_lossy(&sh("id", &["-g", &alice.name]).stdout).trim().to_string();
    let _app = Bg(net
        .nsenter(&net.srv, "setpriv")
        .args([format!("--reuid={}", alice.name), format!("--regid={gid}"), "--clear-groups".into()])
        .args(["socat", "TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=1", "SYSTEM:echo alice"])
        .stdout(Stdio::null())
        .spawn()
        .expect("alice's app"));
    wait_for(|| forward(&d.status_json(), "web")["listening"] == true, "alice's app to be registered");
    let attacker = net
        .nsenter(&net.srv, "setpriv")
        .args([format!("--reuid={}", mallory.name), format!("--regid={}", mallory.name), "--clear-groups".into()])
        .args(["/usr/bin/python3", "-c", "import socket,time\nn=0\nt=time.time()\nwhile time.time()-t<10:\n  for fam,kind in ((socket.AF_INET,socket.SOCK_STREAM),(socket.AF_INET6,socket.SOCK_STREAM),(socket.AF_INET,socket.SOCK_DGRAM)):\n    s=socket.socket(fam,kind)\n    try:\n      s.bind(('0.0.0.0' if fam==socket.AF_INET else '::',8080)); n+=1\n      if kind==socket.SOCK_STREAM: s.listen()\n    except OSError: pass\n    s.close()\nprint(n)\n"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("attacker");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (stop, socket, user) = (stop.clone(), d.socket.clone(), alice.name.clone());
        std::thread::spawn(move || {
            let mut changes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let verb: &[&str] =
                    if changes % 2 == 0 { &["add", "extra", "81", "8081"] } else { &["remove", "extra"] };
                let o = Command::new("setpriv")
                    .args([format!("--reuid={user}"), format!("--regid={user}"), "--clear-groups".into()])
                    .arg(bin("portctl"))
                    .arg("--socket")
                    .arg(&socket)
                    .args(verb)
                    .output()
                    .expect("portctl");
                if o.status.success() {
                    changes += 1;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            changes
        })
    };
    let t = Instant::now();
    let (mut v6_served, mut v6_tries, mut v4_taken, mut v4_tries) = (0, 0, 0, 0);
    while t.elapsed() < Duration::from_secs(10) {
        if get(&net, SRV6, 80).as_deref() == Some("alice") {
            v6_served += 1;
        }
        v6_tries += 1;
        if let Some(reply) = get(&net, SRV4, 80) {
            v4_taken += 1;
            eprintln!("an IPv4 connection reached `{reply}`");
        }
        v4_tries += 1;
        let st = d.status_json();
        assert_eq!(forward(&st, "web")["state"], "active", "the forward left active: {st}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let changes = churn.join().expect("churn");
    let o = attacker.wait_with_output().expect("attacker");
    eprintln!("10 s: {v6_served}/{v6_tries} IPv6 connections served, {v4_taken}/{v4_tries} IPv4 taken, {changes} changes by the owner");
    assert_eq!(out(&o).trim(), "0", "mallory bound the reserved port");
    assert_eq!(v6_served, v6_tries, "every IPv6 connection reaches the owner's app");
    assert_eq!(v4_taken, 0, "an IPv4 connection reached someone: the owner's socket is IPv6-only");
    assert!(v6_tries >= 10, "only {v6_tries} connections in 10 s");
    assert!(changes >= 10, "the owner changed its set only {changes} times");
}

#[test]
fn a_service_coming_back_on_a_users_public_port_suspends_the_forward_at_once() {
    let net = Net::setup();
    let alice = TestUser::new("st");
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    assert!(apply_as(&d, &net, &alice.name, &web(81, 8081)).status.success());
    let _app = net.tcp_app_as(&net.srv, &alice.name, 8081, "alice");
    assert_eq!(get(&net, SRV4, 81).as_deref(), Some("alice"));
    // Root's service binds 81 again: portd hears it from the bind hook, not the poll.
    // Timed from just before the bind to portd's log record of the suspension (wall
    // clock, microseconds); three times, the median judged.
    let status = serde_json::json!({"version": 1, "command": {"op": "status"}});
    let suspended = || request(&d.socket, &status).to_string().contains("\"state\":\"suspended\"");
    let mut times = Vec::new();
    for round in 0..3 {
        let (bound_tx, bound_rx) = std::sync::mpsc::channel::<std::time::SystemTime>();
        let last = round == 2;
        let root = spawn_in_netns(&net.srv, move || {
            let t = std::time::SystemTime::now();
            let l = std::net::TcpListener::bind("[::]:81").expect("root binds its port");
            let _ = bound_tx.send(t);
            // root's service answers one client in the last round, then closes
            if last {
                for s in l.incoming().take(1) {
                    let _ = s.and_then(|mut s| s.write_all(b"root\n"));
                }
            } else {
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let bound = bound_rx.recv().expect("bound");
        wait_for(suspended, "the shadowing forward to be suspended");
        let log = Portd::log(&net);
        let line = log
            .lines()
            .filter(|l| l.contains("suspended by a bind of its public port"))
            .nth(round)
            .unwrap_or_else(|| panic!("no suspension record {round} in the log:\n{log}"));
        times.push(log_time(line).duration_since(bound).unwrap_or_default());
        if last {
            let st = d.status_json();
            let reason = forward(&st, "web")["reason"].as_str().unwrap_or("").to_string();
            assert!(reason.contains("public port 81/tcp is served by"), "{st}");
            assert_eq!(get(&net, SRV4, 81).as_deref(), Some("root"), "root's clients reach root's service");
        }
        root.join().expect("root's service");
        // Root's service gone: the forward comes back at the next listener check.
        wait_for(|| !suspended(), "the forward to resume once root's socket is closed");
    }
    times.sort();
    let ms: Vec<String> = times.iter().map(|t| format!("{:.1}", t.as_secs_f64() * 1e3)).collect();
    eprintln!("suspended {} ms after the bind (portd's log)", ms.join(", "));
    assert!(times[1] <= Duration::from_millis(50), "median {:?} after the bind ({ms:?} ms)", times[1]);
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
fn a_recycled_uid_receives_nothing_of_the_old_forward() {
    let net = Net::setup();
    let alice = TestUser::new("st");
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    assert!(apply_as(&d, &net, &alice.name, &web(80, 8080)).status.success());
    let uid = alice.uid();
    alice.delete();
    // No reload: the account watcher sees /etc/passwd change.
    wait_for(
        || forward(&d.status_json(), "web")["state"] == "suspended",
        "the forward of a deleted user to be suspended",
    );
    let st = d.status_json();
    assert!(forward(&st, "web")["reason"].as_str().unwrap_or("").contains("no longer exists"), "{st}");
    // A new account takes the uid and serves 8080: the old forward's clients never reach it.
    let newcomer = format!("sn{}x{}", std::process::id(), uid);
    let o = sh(
        "useradd",
        &[
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "-u",
            &uid.to_string(),
            "--user-group",
            &newcomer,
        ],
    );
    assert!(o.status.success(), "useradd: {}", err(&o));
    let _cleanup = TestUser { name: newcomer.clone() };
    let _app = net.tcp_app_as(&net.srv, &newcomer, 8080, "newcomer");
    std::thread::sleep(Duration::from_millis(300));
    for addr in [SRV4, SRV6] {
        assert_eq!(get(&net, addr, 80), None, "the recycled uid got the old forward's connection over {addr}");
    }
    assert_eq!(forward(&d.status_json(), "web")["state"], "suspended");
}

#[test]
fn an_unrelated_socket_neither_suspends_the_forward_nor_breaks_its_connections() {
    let net = Net::setup();
    let (alice, mallory) = (TestUser::new("st"), TestUser::new("sm"));
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    assert!(apply_as(&d, &net, &alice.name, &web(80, 8080)).status.success());
    let gid = String::from_utf8_lossy(&sh("id", &["-g", &alice.name]).stdout).trim().to_string();
    let _echo = Bg(net
        .nsenter(&net.srv, "setpriv")
        .args([format!("--reuid={}", alice.name), format!("--regid={gid}"), "--clear-groups".into()])
        .args(["socat", "TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=0", "EXEC:cat"])
        .spawn()
        .expect("echo app"));
    wait_for(|| forward(&d.status_json(), "web")["listening"] == true, "the app to be registered");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let client = spawn_in_netns(&net.cli, move || {
        let mut s = TcpStream::connect(format!("{SRV4}:80")).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        let mut echo = |msg: &[u8]| {
            s.write_all(msg).expect("write");
            let mut b = vec![0; msg.len()];
            s.read_exact(&mut b).map(|_| b == msg).unwrap_or(false)
        };
        let before = echo(b"one\n");
        let _ = rx.recv();
        (before, echo(b"two\n"))
    });
    std::thread::sleep(Duration::from_millis(300));
    // Another account's socket on an unrelated port, and on the other protocol of the
    // target port: neither can receive the forward's traffic.
    let held = py_as(
        &net,
        Some(&mallory.name),
        "import socket,time\na=socket.socket(); a.bind(('0.0.0.0',8090)); a.listen()\nb=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); b.bind(('0.0.0.0',8080))\nprint('held'); time.sleep(1.5)\n",
    );
    assert_eq!(out(&held).trim(), "held", "{}", err(&held));
    let _ = tx.send(());
    let (before, after) = client.join().expect("client");
    assert!(before && after, "the established connection broke: before {before}, after {after}");
    assert_eq!(forward(&d.status_json(), "web")["state"], "active");
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
        // A reset: a connection queued on the listener that was killed (the app's own).
        let ok = reply.starts_with("alice") || reply == "refused" || reply == "error connection reset";
        assert!(ok, "{n} connection(s) ended in `{reply}`: {replies:?}");
    }
    for round in 0..3 {
        assert!(
            replies.get(&format!("alice{round}")).is_some_and(|n| *n > 0),
            "run {round} was not reached: {replies:?}"
        );
    }
}

#[test]
fn no_other_account_takes_a_udp_forwards_datagrams_with_bound_or_connected_sockets() {
    let net = Net::setup();
    let (alice, mallory) = (TestUser::new("st"), TestUser::new("sm"));
    let d = Portd::start_bpf(&net, &granted(&net, &alice.name, ""), &[]);
    let dns = "version: 1\nforwards:\n  - name: dns\n    port: 81\n    to: 8053\n    proto: udp\n";
    assert!(apply_as(&d, &net, &alice.name, dns).status.success());
    assert_eq!(forward(&d.status_json(), "dns")["dispatch"], "nat", "UDP forwards use NAT");
    let gid = String::from_utf8_lossy(&sh("id", &["-g", &alice.name]).stdout).trim().to_string();
    let _app = Bg(net
        .nsenter(&net.srv, "setpriv")
        .args([format!("--reuid={}", alice.name), format!("--regid={gid}"), "--clear-groups".into()])
        .args(["/usr/bin/python3", "-c", "import socket\ns=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\ns.bind(('::',8053))\nwhile True:\n  _,a=s.recvfrom(64); s.sendto(b'alice\\n',a)\n"])
        .stdout(Stdio::null())
        .spawn()
        .expect("alice's UDP app"));
    std::thread::sleep(Duration::from_millis(300));
    // For 10 s mallory binds 8053 and connects it to the client, or lets the kernel pick a
    // port for a socket connected to the client (the implicit bind): never on 8053.
    let attack = format!(
        "import socket,time\nbound=landed=0\nt=time.time()\nwhile time.time()-t<10:\n  s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n  try:\n    s.bind(('0.0.0.0',8053)); s.connect(('{CLI4}',40000)); bound+=1\n  except OSError: pass\n  s.close()\n  s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(('{CLI4}',40000))\n  if s.getsockname()[1]==8053: landed+=1\n  s.close()\nprint(bound, landed)\n"
    );
    let attacker = net
        .nsenter(&net.srv, "setpriv")
        .args([format!("--reuid={}", mallory.name), format!("--regid={}", mallory.name), "--clear-groups".into()])
        .args(["/usr/bin/python3", "-c", &attack])
        .stdout(Stdio::piped())
        .spawn()
        .expect("attacker");
    let t = Instant::now();
    let (mut answered, mut sent) = (0, 0);
    while t.elapsed() < Duration::from_secs(10) {
        let send = format!("echo hello | timeout 4 socat -T3 - UDP:{SRV4}:81");
        let o = net.exec(&net.cli, "sh", &["-c", &send]);
        sent += 1;
        if String::from_utf8_lossy(&o.stdout).trim() == "alice" {
            answered += 1;
        }
    }
    let o = attacker.wait_with_output().expect("attacker");
    eprintln!(
        "10 s: {answered}/{sent} datagrams answered by the owner; mallory (bound, landed on 8053): {}",
        out(&o).trim()
    );
    assert_eq!(out(&o).trim(), "0 0", "another account held the target port");
    assert_eq!(answered, sent, "every datagram reaches the owner's app");
    assert!(sent >= 10, "only {sent} datagrams");
    assert_eq!(forward(&d.status_json(), "dns")["state"], "active");
}
