//! Safe delegation, end to end: real users (useradd), real listeners, the real daemon in
//! throwaway namespaces, real traffic. A grant holds for the whole life of a forward; no
//! user can publish, shadow or take over another's port.

use portd_tests::*;
use std::time::{Duration, Instant};

fn rules(dir: &std::path::Path, name: &str, body: &str) -> String {
    write(dir, name, &format!("version: 1\nforwards:\n{body}")).display().to_string()
}

fn grant(user: &str, extra: &str) -> String {
    format!("grants:\n  - user: {user}\n    ports: [80, 443]\n    to: \"8000-8099\"\n{extra}")
}

/// Waits up to `limit` for `f`; returns how long it took.
fn within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within {limit:?}: {what}");
}

fn state_of(d: &Portd, owner: &str, name: &str) -> (String, String) {
    let js = d.status_json();
    let f = forward_status(&js, owner, name).unwrap_or_else(|| panic!("{owner}/{name} not in status: {js}"));
    (f["state"].as_str().unwrap_or("").to_string(), f["reason"].as_str().unwrap_or("").to_string())
}

#[test]
fn revoking_a_grant_suspends_by_reload_and_by_restart_and_restoring_it_resumes() {
    let net = Net::setup();
    let web = TestUser::new("pdr");
    let owner = format!("user:{}", web.name);
    let granted = config(&net, &grant(&web.name, ""));
    let revoked = config(&net, "");
    let mut d = Portd::start(&net, &granted);
    let _app = net.tcp_app_as(&net.srv, &web.name, 8080, "web-app");
    let file = rules(&net.dir, "web.yaml", "  - name: http\n    port: 80\n    to: 8080\n");
    let o = d.ctl_as(&web.name, "", &["apply", &file]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("web-app"));

    // Revoked by reload: out of the kernel, kept in the state, logged.
    std::fs::write(&d.config, &revoked).expect("config");
    let o = d.ctl(&["reload"]);
    assert!(o.status.success(), "{}", err(&o));
    let (state, reason) = state_of(&d, &owner, "http");
    assert_eq!(state, "suspended");
    assert!(reason.contains("has no grant"), "{reason}");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None, "a suspended forward redirects nothing");
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 80), None, "nor the host's own connections");
    assert!(!net.table("portd").expect("table").contains("8080"), "not in the kernel");
    assert!(out(&d.ctl(&["export", "--owner", &owner])).contains("name: http"), "kept in the state");
    let log = Portd::log(&net);
    assert!(log.contains(&format!("forward {owner}/http suspended by the reload")), "{log}");

    // Restored by reload: back by itself.
    std::fs::write(&d.config, &granted).expect("config");
    assert!(d.ctl(&["reload"]).status.success());
    assert_eq!(state_of(&d, &owner, "http").0, "active");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("web-app"));
    assert!(Portd::log(&net).contains(&format!("forward {owner}/http resumed by the reload")));

    // Revoked while portd was down: suspended at start.
    d.signal("TERM");
    d.wait();
    drop(d);
    let d = Portd::start(&net, &revoked);
    assert_eq!(state_of(&d, &owner, "http").0, "suspended");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80), None);
    drop(d);
    let d = Portd::start(&net, &granted);
    assert_eq!(state_of(&d, &owner, "http").0, "active");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("web-app"));
}

#[test]
fn another_users_listener_on_the_target_or_the_public_port_is_refused() {
    let net = Net::setup();
    let web1 = TestUser::new("pda");
    let web2 = TestUser::new("pdb");
    let d = Portd::start(&net, &config(&net, &grant(&web1.name, "")));
    let _db = net.tcp_app_as(&net.srv, &web2.name, 8080, "web2-db");
    let file = rules(&net.dir, "w.yaml", "  - name: http\n    port: 80\n    to: 8080\n");
    let o = d.ctl_as(&web1.name, "", &["apply", &file]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    let e = err(&o);
    assert!(
        e.contains(&format!("target port 8080/tcp is held by a socket of uid {} ({})", web2.uid(), web2.name)),
        "{e}"
    );

    // Root's web server on *:443: a user forward on 443 would shadow it.
    let _root_web = net.tcp_app(&net.srv, 443, "root-web");
    let file = rules(&net.dir, "s.yaml", "  - name: https\n    port: 443\n    to: 8043\n");
    let o = d.ctl_as(&web1.name, "", &["apply", &file]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains("public port 443/tcp is served by a socket of uid 0 (root)"), "{}", err(&o));
    assert_eq!(net.tcp_get(&net.cli, SRV4, 443).as_deref(), Some("root-web"), "root's service untouched");
    assert_eq!(net.tcp_get(&net.srv, "127.0.0.1", 443).as_deref(), Some("root-web"));

    // No listener yet: accepted, with a warning.
    let file = rules(&net.dir, "l.yaml", "  - name: later\n    port: 80\n    to: 8081\n");
    let o = d.ctl_as(&web1.name, "", &["apply", &file]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(err(&o).contains("warning: forward `later`: nothing listens on 8081/tcp yet"), "{}", err(&o));

    // listener_check: off turns it down (root's choice).
    drop(d);
    let off = config(&net, &grant(&web1.name, "")).replace("  state_dir:", "  listener_check: off\n  state_dir:");
    let d = Portd::start(&net, &off);
    let file = rules(&net.dir, "w2.yaml", "  - name: http\n    port: 80\n    to: 8080\n");
    let o = d.ctl_as(&web1.name, "", &["apply", &file]);
    assert!(o.status.success(), "listener_check: off: {}", err(&o));
}

#[test]
fn a_stopped_apps_port_taken_by_another_user_suspends_the_forward_within_two_seconds() {
    let net = Net::setup();
    let web1 = TestUser::new("pdc");
    let web2 = TestUser::new("pdd");
    let owner = format!("user:{}", web1.name);
    let d = Portd::start(&net, &config(&net, &grant(&web1.name, "")));
    let app = net.tcp_app_as(&net.srv, &web1.name, 8080, "web1-app");
    let file = rules(&net.dir, "w.yaml", "  - name: http\n    port: 80\n    to: 8080\n");
    assert!(d.ctl_as(&web1.name, "", &["apply", &file]).status.success());
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("web1-app"));
    drop(app);
    let thief = net.tcp_app_as(&net.srv, &web2.name, 8080, "web2-thief");
    let took = within(Duration::from_secs(2), "suspension after another uid bound the target", || {
        state_of(&d, &owner, "http").0 == "suspended"
    });
    eprintln!("suspended {took:?} after web2 listened on 8080");
    let reason = state_of(&d, &owner, "http").1;
    assert!(reason.contains(&format!("uid {} ({})", web2.uid(), web2.name)), "{reason}");
    for addr in [SRV4, SRV6] {
        assert_ne!(net.tcp_get(&net.cli, addr, 80).as_deref(), Some("web2-thief"), "remote via {addr}");
    }
    assert_ne!(net.tcp_get(&net.srv, "127.0.0.1", 80).as_deref(), Some("web2-thief"), "local");
    assert!(Portd::log(&net).contains("suspended by the listener check"));
    // web2 cannot take the public port either while web1's forward waits for its app.
    let steal = rules(&net.dir, "x.yaml", "  - name: mine\n    port: 80\n    to: 8080\n");
    let grants2 = format!("{}  - user: {}\n    ports: [80]\n    to: \"8000-8099\"\n", grant(&web1.name, ""), web2.name);
    std::fs::write(&d.config, config(&net, &grants2)).expect("config");
    assert!(d.ctl(&["reload"]).status.success());
    let o = d.ctl_as(&web2.name, "", &["apply", &steal]);
    assert_eq!(o.status.code(), Some(1), "a conflict: {}", err(&o));
    assert!(err(&o).contains(&format!("belongs to {owner}/http")), "{}", err(&o));
    // The thief leaves, web1's app is back: the forward resumes by itself.
    drop(thief);
    let _app = net.tcp_app_as(&net.srv, &web1.name, 8080, "web1-app");
    within(Duration::from_secs(2), "resumption", || state_of(&d, &owner, "http").0 == "active");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("web1-app"));
}

#[test]
fn a_deleted_and_recreated_user_never_inherits_the_old_set() {
    let net = Net::setup();
    let web = TestUser::new("pde");
    let owner = format!("user:{}", web.name);
    let d = Portd::start(&net, &config(&net, &grant(&web.name, "")));
    let file = rules(&net.dir, "w.yaml", "  - name: http\n    port: 80\n    to: 8080\n");
    assert!(d.ctl_as(&web.name, "", &["apply", &file]).status.success());
    let old = web.uid();
    web.delete();
    assert!(d.ctl(&["reload"]).status.success());
    let (state, reason) = state_of(&d, &owner, "http");
    assert_eq!(state, "suspended");
    assert!(reason.contains("no longer exists"), "{reason}");
    web.recreate_with_new_uid(old);
    assert!(d.ctl(&["reload"]).status.success());
    let (state, reason) = state_of(&d, &owner, "http");
    assert_eq!(state, "suspended", "a new account of the same name does not get it");
    assert!(reason.contains(&format!("applied by uid {old}")), "{reason}");
    // The new account cannot change or take over the old set.
    let o = d.ctl_as(&web.name, "", &["apply", &file]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains(&format!("belongs to uid {old}")), "{}", err(&o));
    assert_eq!(d.ctl_as(&web.name, "", &["remove", "http"]).status.code(), Some(4));
    // Root can clear it; then the new account starts afresh.
    let empty = write(&net.dir, "empty.yaml", "version: 1\nforwards: []\n").display().to_string();
    assert!(d.ctl(&["apply", "--owner", &owner, &empty]).status.success());
    let o = d.ctl_as(&web.name, "", &["apply", &file]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(state_of(&d, &owner, "http").0, "active");
    // Once the account is gone for good, root removes what it left behind.
    web.delete();
    assert!(d.ctl(&["reload"]).status.success());
    let o = d.ctl(&["remove", "http", "--owner", &owner]);
    assert!(o.status.success(), "root removes a departed user's forward: {}", err(&o));
    assert!(forward_status(&d.status_json(), &owner, "http").is_none());
}

#[test]
fn a_tampered_state_file_is_validated_and_only_bad_entries_are_suspended() {
    let net = Net::setup();
    let web = TestUser::new("pdf");
    let owner = format!("user:{}", web.name);
    let state = net.dir.join("state");
    std::fs::create_dir_all(&state).expect("state");
    let uid = web.uid();
    std::fs::write(
        state.join("sets.json"),
        format!(
            "{{\"version\":2,\"sets\":{{\n\"{owner}\":{{\"uid\":{uid},\"forwards\":[\n{{\"name\":\"http\",\"port\":80,\"to\":8080}},\n{{\"name\":\"WEB;drop\",\"port\":443,\"to\":8043}},\n{{\"name\":\"quoted\",\"port\":81,\"to\":8081,\"interfaces\":[\"eth0\\\"\"]}}\n]}},\n\"system\":{{\"uid\":0,\"forwards\":[\n{{\"name\":\"sneaky\",\"port\":22,\"to\":2222}}\n]}}}}}}\n"
        ),
    )
    .expect("state file");
    let d = Portd::start(&net, &config(&net, &grant(&web.name, "")));
    let js = d.status_json();
    assert_eq!(forward_status(&js, &owner, "http").expect("http")["state"], "active");
    let bad = forward_status(&js, &owner, "WEB;drop").expect("kept in the state");
    assert_eq!(bad["state"], "suspended");
    let r = bad["reason"].as_str().unwrap_or("");
    assert!(r.contains("sets.json:4") && r.contains("name:"), "{r}");
    let q = forward_status(&js, &owner, "quoted").expect("kept");
    assert!(q["reason"].as_str().unwrap_or("").contains("sets.json:5"), "{q}");
    let s = forward_status(&js, "system", "sneaky").expect("kept");
    assert_eq!(s["state"], "suspended", "a persisted set named system is not the config's: {s}");
    let table = net.table("portd").expect("table");
    assert!(!table.contains("8043") && !table.contains("2222") && !table.contains("eth0"), "{table}");
    assert!(table.contains("8080"), "{table}");
    // The kernel's ruleset survives nft's own round trip.
    let listed = net.exec_ok(&net.srv, "nft", &["list", "ruleset"]);
    let f = write(&net.dir, "saved.nft", &format!("flush ruleset\n{listed}"));
    net.exec_ok(&net.srv, "nft", &["-c", "-f", f.to_str().expect("p")]);
}

#[test]
fn grants_govern_protect_local_marks_and_the_quota() {
    let net = Net::setup();
    let web = TestUser::new("pdg");
    let tight = grant(&web.name, "    max_forwards: 2\n");
    let wide = grant(&web.name, "    protect: true\n    local: false\n    marks: [\"0x10-0x1f\"]\n");
    let d = Portd::start(&net, &config(&net, &tight));
    let apply = |body: &str| {
        let f = rules(&net.dir, "g.yaml", body);
        d.ctl_as(&web.name, "", &["apply", &f])
    };
    let o = apply("  - name: db\n    port: 443\n    to: 8043\n    protect: true\n");
    assert_eq!(o.status.code(), Some(4));
    assert!(err(&o).contains("protect: your grant does not allow"), "{}", err(&o));
    let o = apply("  - name: db\n    port: 443\n    to: 8043\n    mark: 0xffffffff\n");
    assert_eq!(o.status.code(), Some(4));
    assert!(err(&o).contains("mark: 0xffffffff is not allowed"), "{}", err(&o));
    let o = apply("  - name: db\n    port: 443\n    to: 8043\n    mark: 0\n");
    assert!(o.status.success(), "mark 0 leaves the mark alone: {}", err(&o));
    let three = "  - {name: a, port: 80, to: 8080}\n  - {name: b, port: 443, to: 8043}\n  - {name: c, port: 443, to: 8044, proto: udp}\n";
    let o = apply(three);
    assert_eq!(o.status.code(), Some(4));
    assert!(err(&o).contains("max_forwards: 2"), "{}", err(&o));

    std::fs::write(&d.config, config(&net, &wide)).expect("config");
    assert!(d.ctl(&["reload"]).status.success());
    let o = apply("  - name: db\n    port: 443\n    to: 8043\n    protect: true\n    mark: 0x12\n");
    assert_eq!(o.status.code(), Some(4), "local: true needs the grant's local");
    assert!(err(&o).contains("local: your grant does not allow"), "{}", err(&o));
    let o = apply("  - name: db\n    port: 443\n    to: 8043\n    protect: true\n    local: false\n    mark: 0x12\n");
    assert!(o.status.success(), "{}", err(&o));
    // Narrowing the grant again suspends it.
    std::fs::write(&d.config, config(&net, &tight)).expect("config");
    assert!(d.ctl(&["reload"]).status.success());
    let (state, reason) = state_of(&d, &format!("user:{}", web.name), "db");
    assert_eq!(state, "suspended");
    assert!(reason.contains("protect"), "{reason}");
}

#[test]
fn a_new_system_forward_wins_over_a_user_forward_without_blocking_the_reload() {
    let net = Net::setup();
    let web = TestUser::new("pdh");
    let owner = format!("user:{}", web.name);
    let g = grant(&web.name, "");
    let d = Portd::start(&net, &config(&net, &g));
    let file = rules(
        &net.dir,
        "w.yaml",
        "  - name: http\n    port: 80\n    to: 8080\n  - name: https\n    port: 443\n    to: 8043\n",
    );
    assert!(d.ctl_as(&web.name, "", &["apply", &file]).status.success());
    let sys = format!("{g}forwards:\n  - name: web80\n    port: 80\n    to: 9080\n");
    std::fs::write(&d.config, config(&net, &sys)).expect("config");
    let o = d.ctl(&["reload"]);
    assert!(o.status.success(), "the reload is not blocked: {}", err(&o));
    let (state, reason) = state_of(&d, &owner, "http");
    assert_eq!(state, "suspended");
    assert!(reason.contains("system/web80"), "{reason}");
    assert_eq!(state_of(&d, &owner, "https").0, "active", "only the conflicting forward");
    assert_eq!(state_of(&d, "system", "web80").0, "active");
    let _sys_app = net.tcp_app(&net.srv, 9080, "system-app");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("system-app"));
    assert!(Portd::log(&net).contains(&format!("forward {owner}/http suspended by the reload")));
}

#[test]
fn a_machine_account_keeps_its_set_across_a_restart_and_a_name_outside_the_rule_is_refused_up_front() {
    let net = Net::setup();
    // useradd allows a final `$` (machine accounts): such a user's set is loaded again.
    let host = TestUser::named(&format!("pdm{}$", std::process::id()));
    // --badname allows anything else; portd refuses to make a set it could not load.
    let bad = TestUser::made(&format!("pd@{}", std::process::id()), &["--badname"]);
    let cfg = config(&net, &format!("{}{}", grant(&host.name, ""), grant(&bad.name, "").replace("grants:\n", "")));
    let mut d = Portd::start(&net, &cfg);
    let file = rules(&net.dir, "host.yaml", "  - name: http\n    port: 80\n    to: 8080\n");
    let o = d.ctl_as(&host.name, "", &["apply", &file]);
    assert!(o.status.success(), "{}", err(&o));
    let file = rules(&net.dir, "bad.yaml", "  - name: tls\n    port: 443\n    to: 8081\n");
    let o = d.ctl_as(&bad.name, "", &["apply", &file]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("your user name cannot own forwards"), "{}", err(&o));
    d.signal("TERM");
    d.wait();
    drop(d);
    let d = Portd::start(&net, &cfg);
    let owner = format!("user:{}", host.name);
    assert_eq!(state_of(&d, &owner, "http"), ("active".to_string(), String::new()));
    let _app = net.tcp_app_as(&net.srv, &host.name, 8080, "machine-app");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("machine-app"));
}
