//! `portctl doctor`, end to end: each situation is built for real in the server's
//! namespace (another table's drop, another table's NAT, legacy iptables, a stopped
//! application, a full conntrack table); the test shows that traffic from the client
//! really fails, that doctor names the cause with exit code 1, and that after the fix
//! doctor prints, traffic arrives and doctor is clean (exit 0).

use portd_tests::*;

/// A system forward 80 -> 8080 (tcp) and, unless `app` is false, an application on 8080.
fn setup(app: bool) -> (Net, Portd, Option<Bg>) {
    let net = Net::setup();
    // NAT mode, chosen: these are doctor's findings about rules that meet NAT.
    let text = config(&net, "forwards:\n  - name: http\n    port: 80\n    to: 8080\n").replacen(
        "settings:\n",
        "settings:\n  dispatch: nat\n  ownership: polled\n",
        1,
    );
    let d = Portd::start(&net, &text);
    let app = app.then(|| net.tcp_app(&net.srv, 8080, "web-app"));
    (net, d, app)
}

/// The test config in NAT mode, chosen (no warning about a data plane that cannot run).
fn nat_config(net: &Net, rest: &str) -> String {
    config(net, rest).replacen("settings:\n", "settings:\n  dispatch: nat\n  ownership: polled\n", 1)
}

/// `portctl doctor --json`: exit code and findings.
fn doctor(d: &Portd) -> (i32, Vec<serde_json::Value>) {
    let o = d.ctl(&["doctor", "--json"]);
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("doctor --json: {e}: {}{}", out(&o), err(&o)));
    let findings = v["findings"].as_array().unwrap_or_else(|| panic!("no findings list: {v}")).clone();
    (o.status.code().unwrap_or(-1), findings)
}

/// Doctor is clean and traffic arrives.
fn assert_clean_and_working(net: &Net, d: &Portd, when: &str) {
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("web-app"), "traffic {when}");
    assert_eq!(net.tcp_get(&net.cli, SRV6, 80).as_deref(), Some("web-app"), "IPv6 traffic {when}");
    let (code, findings) = doctor(d);
    assert_eq!((code, findings.len()), (0, 0), "doctor {when}: {findings:#?}");
    let text = d.ctl(&["doctor"]);
    assert_eq!(out(&text), "no problems found\n", "{}", err(&text));
}

/// The one error finding of `check`, about system/http.
fn the_error(findings: &[serde_json::Value], check: &str) -> serde_json::Value {
    let hits: Vec<&serde_json::Value> =
        findings.iter().filter(|f| f["check"] == check && f["severity"] == "error").collect();
    assert_eq!(hits.len(), 1, "one {check} error expected: {findings:#?}");
    hits[0].clone()
}

/// The first command in backquotes of a fix.
fn first_command(fix: &str) -> String {
    fix.split('`').nth(1).unwrap_or_else(|| panic!("no command in the fix: {fix}")).to_string()
}

fn sh_in(net: &Net, cmd: &str) -> String {
    net.exec_ok(&net.srv, "sh", &["-c", cmd])
}

#[test]
fn a_foreign_policy_drop_input_chain_and_its_fix() {
    let (net, d, _app) = setup(true);
    assert_clean_and_working(&net, &d, "before the foreign table");
    // A ufw-like firewall: policy drop, accepts only 22, 80 and 443.
    let fw = "table inet hostfw {\n chain input {\n  type filter hook input priority 0; policy drop;\n  ct state { established, related } accept\n  iifname \"lo\" accept\n  tcp dport { 22, 80, 443 } accept\n  udp dport 1000-2000 accept\n }\n}\n";
    let file = write(&net.dir, "hostfw.nft", fw);
    net.exec_ok(&net.srv, "nft", &["-f", file.to_str().expect("path")]);
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "the drop after the redirect stops the traffic");

    let (code, findings) = doctor(&d);
    assert_eq!(code, 1, "{findings:#?}");
    let f = the_error(&findings, "foreign-drop");
    assert_eq!(f["forward"], "system/http");
    let message = f["message"].as_str().unwrap_or("");
    assert!(message.contains("table inet hostfw chain input") && message.contains("tcp/8080"), "{message}");
    let fix = f["fix"].as_str().unwrap_or("");
    let cmd = first_command(fix);
    assert_eq!(cmd, "nft insert rule inet hostfw input ct status dnat accept", "{fix}");
    let text = out(&d.ctl(&["doctor"]));
    assert!(text.starts_with("error [foreign-drop] system/http\n"), "{text}");
    assert!(text.contains(&format!("\n  fix: {fix}\n")), "the fix on its own line: {text}");

    // The suggested fix: traffic arrives and doctor is clean.
    sh_in(&net, &cmd);
    assert_clean_and_working(&net, &d, "after `ct status dnat accept`");
}

#[test]
fn a_foreign_nat_chain_before_portds_takes_the_public_port() {
    let (net, d, _app) = setup(true);
    let _other = net.tcp_app(&net.srv, 9090, "other-app");
    assert_clean_and_working(&net, &d, "before the foreign NAT");
    let nat = "table ip othernat {\n chain pre {\n  type nat hook prerouting priority -150;\n  tcp dport 80 redirect to :9090\n }\n}\n";
    let file = write(&net.dir, "othernat.nft", nat);
    net.exec_ok(&net.srv, "nft", &["-f", file.to_str().expect("path")]);
    assert_eq!(
        net.tcp_get(&net.cli, SRV4, 80).as_deref(),
        Some("other-app"),
        "the first NAT binding wins: the forward's app is not reached"
    );

    let (code, findings) = doctor(&d);
    assert_eq!(code, 1, "{findings:#?}");
    let f = the_error(&findings, "foreign-nat");
    let message = f["message"].as_str().unwrap_or("");
    assert!(
        message.contains("table ip othernat chain pre") && message.contains("tcp/80") && message.contains(":9090"),
        "{message}"
    );
    let fix = f["fix"].as_str().unwrap_or("");
    // The fix: find the rule's handle as the fix says, and delete it.
    let list = first_command(fix);
    assert_eq!(list, "nft -a list chain ip othernat pre", "{fix}");
    let listing = sh_in(&net, &list);
    let handle = listing
        .lines()
        .find(|l| l.contains("redirect"))
        .and_then(|l| l.rsplit("# handle ").next())
        .unwrap_or_else(|| panic!("no handle in {listing}"))
        .trim()
        .to_string();
    let delete = fix.split('`').nth(3).unwrap_or_else(|| panic!("no delete command: {fix}")).replace('N', &handle);
    sh_in(&net, &delete);
    assert_clean_and_working(&net, &d, "after deleting the foreign redirect");
}

#[test]
fn legacy_iptables_dropping_the_target_port() {
    let (net, d, _app) = setup(true);
    assert_clean_and_working(&net, &d, "before the legacy rule");
    net.exec_ok(&net.srv, "iptables-legacy", &["-A", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP"]);
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "the legacy rule drops the redirected traffic");
    assert_eq!(
        net.tcp_get(&net.cli, SRV6, 80).as_deref(),
        Some("web-app"),
        "an iptables (IPv4) rule leaves IPv6 alone"
    );

    let (code, findings) = doctor(&d);
    assert_eq!(code, 1, "{findings:#?}");
    let f = the_error(&findings, "legacy-iptables");
    let message = f["message"].as_str().unwrap_or("");
    assert!(message.contains("table ip (legacy) filter chain INPUT") && message.contains("(ipv4)"), "{message}");
    let cmd = first_command(f["fix"].as_str().unwrap_or(""));
    // The fix lets redirected traffic through ahead of the rule and leaves the rule itself.
    assert_eq!(cmd, "iptables-legacy -t filter -I INPUT -m conntrack --ctstate DNAT -j ACCEPT");
    sh_in(&net, &cmd);
    assert_clean_and_working(&net, &d, "after accepting redirected traffic ahead of the legacy rule");
}

#[test]
fn a_stopped_application() {
    let (net, d, app) = setup(false);
    assert!(app.is_none());
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "nothing answers on the target port");
    let (code, findings) = doctor(&d);
    assert_eq!(code, 1, "{findings:#?}");
    let f = the_error(&findings, "listener");
    assert_eq!(f["forward"], "system/http");
    assert!(f["message"].as_str().unwrap_or("").contains("nothing listens on target port tcp/8080"), "{f}");
    assert!(f["fix"].as_str().unwrap_or("").contains("start the application on port 8080"), "{f}");
    // doctor NAME and --owner keep the findings of those forwards (and those of none).
    assert_eq!(d.ctl(&["doctor", "http"]).status.code(), Some(1));
    assert_eq!(d.ctl(&["doctor", "--owner", "system"]).status.code(), Some(1));
    let other = d.ctl(&["doctor", "other", "--json"]);
    assert_eq!(other.status.code(), Some(0), "{}", out(&other));
    assert!(!out(&other).contains("system/http"), "{}", out(&other));
    assert_eq!(d.ctl(&["doctor", "--owner", "user:nobody"]).status.code(), Some(0));
    let _app = net.tcp_app(&net.srv, 8080, "web-app");
    assert_clean_and_working(&net, &d, "once the application listens");
}

/// The one warning of `check`, about system/http.
fn the_warning(findings: &[serde_json::Value], check: &str) -> serde_json::Value {
    let hits: Vec<&serde_json::Value> =
        findings.iter().filter(|f| f["check"] == check && f["severity"] == "warning").collect();
    assert_eq!(hits.len(), 1, "one {check} warning expected: {findings:#?}");
    assert_eq!(hits[0]["forward"], "system/http");
    hits[0].clone()
}

/// An application on 127.0.0.1 only behind root's forward: other hosts are refused, and
/// doctor says so (a warning: the host itself still gets through) with the fix.
#[test]
fn an_application_bound_to_loopback_only() {
    let (net, d, _) = setup(false);
    let app = net.tcp_app_on(&net.srv, None, "TCP-LISTEN:8080,bind=127.0.0.1,fork,reuseaddr", 8080, "web-app");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "another host is refused");
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 80).as_deref(), Some("web-app"), "the host itself gets through");
    let (code, findings) = doctor(&d);
    assert_eq!(code, 0, "warnings only: {findings:#?}");
    let f = the_warning(&findings, "listener");
    let msg = f["message"].as_str().unwrap_or("");
    assert!(msg.contains("target port tcp/8080 listens on 127.0.0.1 only"), "{f}");
    assert!(msg.contains("connections from other hosts to public port 80"), "{f}");
    assert!(f["fix"].as_str().unwrap_or("").contains("listen on 0.0.0.0 (IPv4) or :: (both families)"), "{f}");
    let text = d.ctl(&["doctor"]);
    assert!(out(&text).contains("127.0.0.1 only"), "{}", out(&text));
    drop(app);
    let _app = net.tcp_app(&net.srv, 8080, "web-app");
    assert_clean_and_working(&net, &d, "once the application listens on ::");
}

/// An application on a v6-only socket behind a forward for both families: IPv4 clients
/// are refused, IPv6 ones get through, and doctor names the socket and the fix.
#[test]
fn an_application_on_a_v6_only_socket() {
    let (net, d, _) = setup(false);
    let app = net.tcp_app_on(&net.srv, None, "TCP6-LISTEN:8080,ipv6only=1,fork,reuseaddr", 8080, "web-app");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "IPv4 is refused");
    assert_eq!(net.tcp_get(&net.cli, SRV6, 80).as_deref(), Some("web-app"), "IPv6 gets through");
    let (code, findings) = doctor(&d);
    assert_eq!(code, 0, "warnings only: {findings:#?}");
    let f = the_warning(&findings, "listener");
    let msg = f["message"].as_str().unwrap_or("");
    assert!(msg.contains("target port tcp/8080 listens on IPv6 only (:: with IPV6_V6ONLY)"), "{f}");
    assert!(msg.contains("IPv4 connections to public port 80"), "{f}");
    assert!(f["fix"].as_str().unwrap_or("").contains("dual-stack socket"), "{f}");
    // The fix's second way: a v4 socket too.
    let _v4 = net.tcp_app_on(&net.srv, None, "TCP4-LISTEN:8080,fork,reuseaddr", 8080, "web-app");
    wait_for(
        || net.exec(&net.srv, "ss", &["-Htln", "sport = :8080"]).stdout.split(|b| *b == b'\n').count() > 2,
        "the v4 socket",
    );
    assert_clean_and_working(&net, &d, "with a v4 socket beside the v6-only one");
    drop(app);
}

/// Steered, the same: the data plane hands no other host's connection to a socket on
/// 127.0.0.1 (nor IPv4 to a v6-only one), and doctor says so about root's forward.
#[test]
fn steered_forwards_get_the_same_bind_warnings() {
    let net = Net::setup();
    let d = Portd::start_bpf(&net, &config(&net, "forwards:\n  - name: http\n    port: 80\n    to: 8080\n"), &[]);
    assert_eq!(d.status_json()["dispatch"], "steer", "this kernel steers: {}", d.status_json());
    let lo = net.tcp_app_on(&net.srv, None, "TCP-LISTEN:8080,bind=127.0.0.1,fork,reuseaddr", 8080, "web-app");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "another host is refused");
    let (_, findings) = doctor(&d);
    let f = the_warning(&findings, "listener");
    assert!(f["message"].as_str().unwrap_or("").contains("listens on 127.0.0.1 only"), "{f}");
    drop(lo);
    let _v6 = net.tcp_app_on(&net.srv, None, "TCP6-LISTEN:8080,ipv6only=1,fork,reuseaddr", 8080, "web-app");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "IPv4 is refused");
    assert_eq!(net.tcp_get(&net.cli, SRV6, 80).as_deref(), Some("web-app"), "IPv6 gets through");
    let (_, findings) = doctor(&d);
    let f = the_warning(&findings, "listener");
    assert!(f["message"].as_str().unwrap_or("").contains("listens on IPv6 only"), "{f}");
}

/// nf_conntrack_max cannot be lowered inside a namespace (it is read-only there), so
/// the table is filled up to the host's limit with ASSURED entries (which the kernel
/// cannot evict early) through `conntrack -R`: about 262,000 entries, 3 s.
#[test]
fn a_full_conntrack_table() {
    let (net, d, _app) = setup(true);
    assert_clean_and_working(&net, &d, "before filling conntrack");
    let max: usize = sh_in(&net, "cat /proc/sys/net/netfilter/nf_conntrack_max")
        .trim()
        .parse()
        .expect("nf_conntrack_max (the nf_conntrack module must be loaded)");
    assert!(max <= 4_000_000, "nf_conntrack_max is {max}: filling it would take too long for this test");
    let mut lines = String::with_capacity(max * 110);
    let mut n = 0;
    'fill: for a in 1..=255u32 {
        for sport in 1..=65535u32 {
            n += 1;
            if n > max + 10 {
                break 'fill;
            }
            lines.push_str(&format!(
                "-I -s 10.251.{a}.1 -d 10.251.0.1 -p tcp --sport {sport} --dport 9 --state ESTABLISHED -u ASSURED -t 600\n"
            ));
        }
    }
    let file = write(&net.dir, "fill.ct", &lines);
    // conntrack -R stops with "not enough memory" at the limit, as it should.
    let _ = net.exec(&net.srv, "conntrack", &["-R", file.to_str().expect("path")]);
    let count: usize = sh_in(&net, "cat /proc/sys/net/netfilter/nf_conntrack_count").trim().parse().expect("count");
    assert!(count >= max, "the table holds {count} of {max}");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "a full table drops new connections");

    let (code, findings) = doctor(&d);
    assert_eq!(code, 1, "{findings:#?}");
    let f = the_error(&findings, "conntrack");
    // (what doctor reads may be a few entries under `count`: the connections made before
    // the fill end and leave the table meanwhile)
    let message = f["message"].as_str().unwrap_or("");
    let held: usize = message
        .split("holds ")
        .nth(1)
        .and_then(|m| m.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {f}"));
    assert!(held <= count && held + 64 >= count, "doctor read {held}, the table held {count}: {f}");
    assert!(message.contains(&format!("of at most {max}")), "{f}");
    let fix = f["fix"].as_str().unwrap_or("");
    assert!(fix.contains("`conntrack -F`"), "{fix}");
    // Raising the limit is refused inside a namespace; emptying the table is the fix here.
    sh_in(&net, "conntrack -F");
    assert_clean_and_working(&net, &d, "after conntrack -F");
}

/// portd itself: a program that keeps deleting portd's table (the repair back-off).
#[test]
fn portd_standing_back_from_a_program_that_keeps_deleting_its_table() {
    let (net, d, _app) = setup(true);
    assert_clean_and_working(&net, &d, "before the fight");
    // Another program deletes the table again and again for 3 s (one `nft -i`): portd repairs 50 times
    // within a second, then stands back for 5 s.
    let fighter = Bg(std::process::Command::new("ip")
        .args(["netns", "exec", &net.srv, "sh", "-c"])
        .arg("end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do echo 'delete table inet portd'; sleep 0.002; done | nft -i >/dev/null 2>&1")
        .spawn()
        .expect("start the fighting loop"));
    wait_for(|| Portd::log(&net).contains("standing back"), "portd to stand back");
    // While it stands back the table is gone (the loop deleted it last) or about to be.
    wait_for(|| net.table("portd").is_none(), "the table to stay deleted");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "no table, no forward");
    let (code, findings) = doctor(&d);
    assert_eq!(code, 1, "{findings:#?}");
    let portd: Vec<&serde_json::Value> = findings.iter().filter(|f| f["check"] == "portd").collect();
    assert!(
        portd
            .iter()
            .any(|f| f["severity"] == "error" && f["message"].as_str().unwrap_or("").contains("stands back now")),
        "{findings:#?}"
    );
    assert!(
        portd.iter().any(|f| f["message"].as_str().unwrap_or("").contains("differs from what portd put there")),
        "{findings:#?}"
    );
    // The fix: the other program stops; portd restores the table after its back-off.
    drop(fighter);
    wait_for_secs(15, || net.tcp_get(&net.cli, SRV4, 80).as_deref() == Some("web-app"), "the table to come back");
    let (code, findings) = doctor(&d);
    assert_eq!(code, 0, "{findings:#?}");
    assert_eq!(findings.len(), 1, "only the record of the fight remains: {findings:#?}");
    assert_eq!((findings[0]["check"].as_str(), findings[0]["severity"].as_str()), (Some("portd"), Some("warning")));
}

/// portd itself: a user forward suspended because its grant was revoked.
#[test]
fn a_suspended_user_forward_and_its_grant_restored() {
    let net = Net::setup();
    let web = TestUser::new("pdd");
    let grant = format!("grants:\n  - user: {}\n    ports: [80]\n    to: \"8080\"\n", web.name);
    let d = Portd::start(&net, &nat_config(&net, &grant));
    let _app = net.tcp_app_as(&net.srv, &web.name, 8080, "web-app");
    let file = write(&net.dir, "web.yaml", "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n");
    let o = d.ctl_as(&web.name, "", &["apply", file.to_str().expect("path")]);
    assert!(o.status.success(), "{}", err(&o));
    assert_clean_and_working(&net, &d, "with the grant");
    std::fs::write(&d.config, nat_config(&net, "")).expect("config");
    assert!(d.ctl(&["reload"]).status.success());
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "a suspended forward redirects nothing");
    // Any socket user may ask (the forward's owner here).
    let o = d.ctl_as(&web.name, "", &["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(o.status.code(), Some(0), "a suspension is a warning: {v}");
    let f = &v["findings"][0];
    assert_eq!(f["forward"], format!("user:{}/http", web.name), "{v}");
    assert_eq!((f["check"].as_str(), f["severity"].as_str()), (Some("portd"), Some("warning")), "{v}");
    assert!(f["message"].as_str().unwrap_or("").contains("suspended"), "{v}");
    std::fs::write(&d.config, nat_config(&net, &grant)).expect("config");
    assert!(d.ctl(&["reload"]).status.success());
    assert_clean_and_working(&net, &d, "with the grant restored");
}

/// Polls `f` for up to `secs` seconds.
fn wait_for_secs(secs: u64, mut f: impl FnMut() -> bool, what: &str) {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(secs) {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("timed out after {secs} s waiting for {what}");
}

/// A host with a huge foreign ruleset: doctor reads at most 20,000 of its rules (and
/// says so), on a thread of its own, so the daemon answers `status` meanwhile.
#[test]
fn a_huge_foreign_ruleset_is_read_bounded_and_off_the_actor() {
    let (net, d, _app) = setup(true);
    let mut big = String::from("table inet big {\n chain c {\n  type filter hook input priority 5; policy accept;\n");
    for i in 0..60_000u32 {
        big.push_str(&format!(
            "  ip saddr 10.{}.{}.{} tcp dport {} drop\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255,
            1 + i % 60_000
        ));
    }
    big.push_str(" }\n}\n");
    let file = write(&net.dir, "big.nft", &big);
    net.exec_ok(&net.srv, "nft", &["-f", file.to_str().expect("path")]);
    let socket = d.socket.clone();
    let started = std::time::Instant::now();
    let doctor = std::thread::spawn(move || {
        let o = std::process::Command::new(bin("portctl"))
            .arg("--socket")
            .arg(&socket)
            .args(["doctor", "--json"])
            .output()
            .expect("run portctl doctor");
        (o, started.elapsed())
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    let t = std::time::Instant::now();
    let status = d.ctl(&["status"]);
    let status_took = t.elapsed();
    let status_done = started.elapsed();
    assert!(status.status.success(), "{}", err(&status));
    let (o, doctor_took) = doctor.join().expect("doctor thread");
    println!("doctor with 60,000 foreign rules: {doctor_took:?}; status meanwhile: {status_took:?}");
    assert!(
        doctor_took > status_done,
        "status ({status_done:?}) must have been answered while doctor ({doctor_took:?}) was still reading"
    );
    assert!(status_took < std::time::Duration::from_secs(1), "status took {status_took:?} during doctor");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("doctor json");
    let info = v["findings"].as_array().and_then(|f| f.iter().find(|f| f["severity"] == "info").cloned());
    let message = info.as_ref().and_then(|f| f["message"].as_str()).unwrap_or("");
    assert!(message.contains("20000 rules were read and"), "{v}");
    // The rule drops port 80 for some senders: in NAT mode such a ban misses forwarded
    // traffic, which is an error (the fix is steer dispatch); nothing else is.
    assert_eq!(o.status.code(), Some(1), "{v}");
    let errors: Vec<&serde_json::Value> =
        v["findings"].as_array().map(|f| f.iter().filter(|f| f["severity"] == "error").collect()).unwrap_or_default();
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!(errors[0]["check"], "foreign-block", "{v}");
    assert!(errors[0]["fix"].as_str().unwrap_or("").contains("8080"), "{v}");
}
