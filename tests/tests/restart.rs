//! Restarts with `on_exit: keep` (the packaged config): the rules stay in the kernel while
//! no portd runs, the next portd adopts a matching table with its counters, replaces a
//! differing one in one netlink batch, and `portd --remove-table` removes it without a
//! daemon. Clients connecting all along see no failure.

use portd_tests::*;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn keep_config(net: &Net, forwards: &str) -> String {
    config(net, &format!("forwards:\n{forwards}")).replace("  table: portd\n", "  table: portd\n  on_exit: keep\n")
}

const HTTP: &str = "  - name: http\n    port: 80\n    to: 8080\n";
const ALT: &str = "  - name: alt\n    port: 81\n    to: 8080\n";

/// Packets counted for system forward `name`.
fn packets(d: &Portd, name: &str) -> u64 {
    let js = d.status_json();
    let f = js["forwards"].as_array().expect("forwards").iter().find(|f| f["forward"]["name"] == name);
    f.and_then(|f| f["packets"].as_u64()).unwrap_or_else(|| panic!("no forward {name} in {js}"))
}

/// A client in the client namespace connecting to SRV4:80 back to back until stopped;
/// returns (successes, failures with their errors).
struct Prober {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Prober {
    fn start(net: &Net) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let addr: std::net::SocketAddr = format!("{SRV4}:80").parse().expect("addr");
        let handle = spawn_in_netns(&net.cli, move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) {
                let r = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(1)))?;
                    let mut buf = String::new();
                    s.read_to_string(&mut buf).map(|_| buf)
                });
                match r {
                    Ok(b) if b.trim() == "app" => ok += 1,
                    Ok(b) => failed.push(format!("answered {b:?}")),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        });
        Prober { stop, handle }
    }

    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        }
    }
}

#[test]
fn restart_adopts_the_table_with_its_counters_and_no_connection_fails() {
    let net = Net::setup();
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let cfg = keep_config(&net, HTTP);
    let mut d = Portd::start(&net, &cfg);
    for _ in 0..3 {
        assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("app"));
    }
    let before = packets(&d, "http");
    assert!(before > 0, "counters count the traffic");
    let probe = Prober::start(&net);
    wait_for(|| packets(&d, "http") > before, "the prober's first connections");
    for _ in 0..3 {
        d.signal("TERM");
        assert_eq!(d.wait(), Some(0));
        assert!(net.table("portd").is_some(), "on_exit: keep leaves the table");
        std::thread::sleep(Duration::from_millis(100));
        drop(d);
        d = Portd::start(&net, &cfg);
    }
    let (ok, failed) = probe.finish();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed across 3 restarts: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 10, "the prober ran ({ok} connections)");
    let after = packets(&d, "http");
    assert!(after > before, "counters kept and counting: {before} before, {after} after 3 restarts");
    assert_eq!(d.status_json()["in_sync"], true);
    // Without traffic, a restart leaves the counters exactly as they were.
    d.signal("TERM");
    assert_eq!(d.wait(), Some(0));
    drop(d);
    let d = Portd::start(&net, &cfg);
    assert_eq!(packets(&d, "http"), after, "a restart kept the counters");
    println!("3 restarts: {ok} connections, 0 failed; packets {before} -> {after}");
}

#[test]
fn a_differing_table_is_replaced_in_one_batch_while_clients_connect() {
    let net = Net::setup();
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let mut d = Portd::start(&net, &keep_config(&net, HTTP));
    d.signal("TERM");
    assert_eq!(d.wait(), Some(0));
    drop(d);
    // Every nf_tables transaction of the next start, as the kernel reports it.
    let events = net.dir.join("monitor.txt");
    let mut monitor = Bg(std::process::Command::new("ip")
        .args(["netns", "exec", &net.srv, "nft", "monitor"])
        .stdout(std::fs::File::create(&events).expect("monitor output"))
        .spawn()
        .expect("nft monitor"));
    // Subscribed once it reports a transaction of its own.
    wait_for(
        || {
            net.exec_ok(&net.srv, "nft", &["add", "table", "inet", "monitor_ready"]);
            net.exec_ok(&net.srv, "nft", &["delete", "table", "inet", "monitor_ready"]);
            std::thread::sleep(Duration::from_millis(50));
            read(&events).contains("monitor_ready")
        },
        "nft monitor to report events",
    );
    let probe = Prober::start(&net);
    std::thread::sleep(Duration::from_millis(200));
    // The config changed while portd was down: the kernel's table no longer matches.
    let d = Portd::start(&net, &keep_config(&net, &format!("{HTTP}{ALT}")));
    std::thread::sleep(Duration::from_millis(200));
    let (ok, failed) = probe.finish();
    let _ = monitor.0.kill();
    let _ = monitor.0.wait();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed while the table was replaced: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(net.tcp_get(&net.cli, SRV4, 81).as_deref(), Some("app"), "the new forward works");
    assert_eq!(d.status_json()["in_sync"], true);
    // One transaction holds the delete of the old table and the new one with its rules.
    let text = read(&events);
    let txns: Vec<&str> = text.split("# new generation").filter(|t| t.contains("table inet portd")).collect();
    assert_eq!(txns.len(), 1, "the table was replaced in {} transactions, not one:\n{text}", txns.len());
    let t = txns[0];
    let del = t.find("delete table inet portd").unwrap_or_else(|| panic!("no delete of the old table:\n{text}"));
    let add_rule = t.rfind("add rule inet portd").unwrap_or_else(|| panic!("no rules added:\n{text}"));
    assert!(del < add_rule, "old table deleted before the new rules are added, in the same batch:\n{t}");
}

#[test]
fn remove_table_removes_only_portds_table_without_a_daemon() {
    let net = Net::setup();
    let mut d = Portd::start(&net, &keep_config(&net, HTTP));
    d.signal("TERM");
    assert_eq!(d.wait(), Some(0));
    let config = d.config.clone();
    drop(d);
    net.exec_ok(&net.srv, "nft", &["add", "table", "inet", "other"]);
    let remove = |args: &[&str]| {
        let mut a = vec![bin("portd").to_str().expect("path").to_string(), "--remove-table".into()];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        net.exec(&net.srv, a[0], &a[1..])
    };
    let cfg = config.to_str().expect("path");
    let o = remove(&["--config", cfg]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(out(&o).trim(), "removed table inet portd");
    assert!(net.table("portd").is_none(), "table removed");
    assert!(net.table("other").is_some(), "another program's table is untouched");
    let o = remove(&["--config", cfg]);
    assert!(o.status.success(), "nothing to remove is success: {}", err(&o));
    assert_eq!(out(&o).trim(), "table inet portd does not exist; nothing to remove");
    // A broken config: refused, naming the file and how to go on.
    std::fs::write(&config, "version: 1\nsettings: [\n").expect("break config");
    let o = remove(&["--config", cfg]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("--table NAME"), "{}", err(&o));
    let o = remove(&["--config", cfg, "--table", "other"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(net.table("other").is_none(), "--table names the table without reading the config");
}
