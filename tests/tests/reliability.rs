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
    let js: serde_json::Value = serde_json::from_slice(&d.ctl(&["status", "--json"]).stdout).expect("json");
    assert!(js["repairs"].as_u64().expect("repairs") >= 4 * n as u64, "{js}");
    assert_eq!(js["in_sync"], true);
}
