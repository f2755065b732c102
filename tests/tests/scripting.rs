//! portctl in scripts and in an operator's first hour, against the real daemon: exit codes
//! of `diff --exit-code`, an identical `add`, `remove --if-exists`, `add --replace` in one
//! batch, `--owner NAME`, `portd --remove-table` while portd runs, `reload --dry-run` and
//! suspensions in reload output, accounts checked at start, `grants`, `status --port`.
//! Needs root (fails and says so otherwise).

use portd_tests::*;
use std::process::{Command, Stdio};
use std::time::Duration;

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", out(o), err(o)))
}

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

#[test]
fn scripting_exit_codes_follow_the_manual() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let rules = write(&net.dir, "rules.yaml", "version: 1\nforwards:\n  - name: web\n    port: 80\n    to: 8080\n");
    let rules = rules.to_str().expect("path");

    // diff --exit-code: 1 while changes are pending, 0 once applied; without it, 0.
    let o = d.ctl(&["diff", rules, "--exit-code"]);
    assert_eq!(code(&o), Some(1), "pending: {}{}", out(&o), err(&o));
    assert!(out(&o).contains("+ user:root/web"), "{}", out(&o));
    assert_eq!(code(&d.ctl(&["diff", rules])), Some(0));
    assert!(d.ctl(&["apply", rules]).status.success());
    let o = d.ctl(&["diff", rules, "--exit-code"]);
    assert_eq!(code(&o), Some(0), "nothing pending: {}{}", out(&o), err(&o));

    // An identical add is done already: exit 0, "unchanged", and the kernel is not touched.
    let before = net.table("portd").expect("table");
    let o = d.ctl(&["add", "web", "80", "8080"]);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    assert!(out(&o).contains("unchanged"), "{}", out(&o));
    assert_eq!(net.table("portd").as_deref(), Some(before.as_str()));
    // The same name with other settings is refused, and the message points to --replace.
    let o = d.ctl(&["add", "web", "80", "8081"]);
    assert_eq!(code(&o), Some(1), "{}", err(&o));
    assert!(err(&o).contains("--replace"), "{}", err(&o));

    // add --replace: one forward changed, in one kernel batch (one transaction in `nft monitor`).
    let events = net.dir.join("monitor.txt");
    let mut monitor = Bg(Command::new("ip")
        .args(["netns", "exec", &net.srv, "nft", "monitor"])
        .stdout(std::fs::File::create(&events).expect("monitor output"))
        .stderr(Stdio::null())
        .spawn()
        .expect("nft monitor"));
    wait_for(
        || {
            net.exec_ok(&net.srv, "nft", &["add", "table", "inet", "monitor_ready"]);
            net.exec_ok(&net.srv, "nft", &["delete", "table", "inet", "monitor_ready"]);
            std::thread::sleep(Duration::from_millis(50));
            read(&events).contains("monitor_ready")
        },
        "nft monitor to report events",
    );
    let o = d.ctl(&["add", "web", "80", "8081", "--replace"]);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    assert!(out(&o).contains("~ user:root/web: 80 -> 8080"), "{}", out(&o));
    assert!(out(&o).contains("becomes 80 -> 8081"), "{}", out(&o));
    std::thread::sleep(Duration::from_millis(300));
    let _ = monitor.0.kill();
    let _ = monitor.0.wait();
    let text = read(&events);
    let txns: Vec<&str> = text.split("# new generation").filter(|t| t.contains("inet portd")).collect();
    assert_eq!(txns.len(), 1, "one transaction changes the forward: {text}");
    assert!(txns[0].contains("delete element") && txns[0].contains("8080"), "old target out: {text}");
    assert!(txns[0].contains("create element") && txns[0].contains(": 8081"), "new target in: {text}");
    let st = d.status_json();
    assert_eq!(forward_status(&st, "user:root", "web").expect("web")["forward"]["to"], 8081, "{st}");

    // remove: absent is an error (1), unless --if-exists (0, unchanged).
    let o = d.ctl(&["remove", "nope"]);
    assert_eq!(code(&o), Some(1), "{}", err(&o));
    assert!(err(&o).contains("--if-exists"), "{}", err(&o));
    let o = d.ctl(&["remove", "nope", "--if-exists"]);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    assert!(out(&o).contains("unchanged"), "{}", out(&o));
    let o = d.ctl(&["remove", "web", "--if-exists"]);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    assert!(out(&o).contains("- user:root/web"), "{}", out(&o));

    // --owner NAME means user:NAME.
    let o = d.ctl(&["add", "http", "80", "8080", "--owner", "nobody"]);
    let o2 = d.ctl(&["--json", "status", "--owner", "nobody"]);
    assert_eq!(code(&o), Some(4), "nobody has no grant: held to it like user:nobody: {}", err(&o));
    assert!(err(&o).contains("nobody has no grant"), "{}", err(&o));
    assert_eq!(code(&o2), Some(0), "{}", err(&o2));
    let o = d.ctl(&["add", "http", "80", "8080", "--owner", "root"]);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    assert!(out(&o).contains("+ user:root/http"), "{}", out(&o));

    // One class of mistake, one code: invalid values of a forward are 1, as in a file.
    for args in [
        &["add", "x", "70000", "8080"][..],
        &["add", "Bad Name", "80", "8080"][..],
        &["add", "x", "80", "80"][..],
        &["add", "x", "80", "8080", "--mark", "0x1ffffffff"][..],
        &["add", "x", "80", "8080", "--source", "300.1.1.1"][..],
    ] {
        let o = d.ctl(args);
        assert_eq!(code(&o), Some(1), "{args:?}: {}", err(&o));
        let v = json(&d.ctl(&[&["--json"][..], args].concat()));
        assert_eq!(v["error"]["kind"], "invalid", "{args:?}: {v}");
    }
    // The command line itself: 2.
    assert_eq!(code(&d.ctl(&["add", "x", "80"])), Some(2));
    assert_eq!(code(&d.ctl(&["status", "--port", "http"])), Some(2));
}

#[test]
fn remove_table_refuses_while_portd_runs() {
    let net = Net::setup();
    let mut d = Portd::start(&net, &config(&net, "  on_exit: keep\n"));
    let rules = write(&net.dir, "rules.yaml", "version: 1\nforwards:\n  - name: web\n    port: 80\n    to: 8080\n");
    assert!(d.ctl(&["apply", rules.to_str().expect("path")]).status.success());
    let config_path = d.config.clone();
    let remove = || {
        Command::new("ip")
            .args(["netns", "exec", &net.srv])
            .arg(bin("portd"))
            .arg("--remove-table")
            .arg("--config")
            .arg(&config_path)
            .output()
            .expect("portd --remove-table")
    };
    let o = remove();
    assert_eq!(code(&o), Some(1), "{}{}", out(&o), err(&o));
    let e = err(&o);
    assert!(e.contains(&format!("portd pid {}", d.child.id())), "names the pid: {e}");
    assert!(e.contains("systemctl stop portd.socket portd.service && portd --remove-table"), "{e}");
    assert!(out(&o).is_empty(), "says nothing was removed only on stderr: {}", out(&o));
    std::thread::sleep(Duration::from_millis(200));
    assert!(net.table("portd").is_some(), "the table is still there");
    assert_eq!(d.status_json()["repairs"], 0, "nothing was removed and repaired");

    // Stopped (on_exit: keep leaves the table): now it goes.
    d.signal("TERM");
    assert_eq!(d.wait(), Some(0));
    assert!(net.table("portd").is_some(), "kept on exit");
    let o = remove();
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    assert!(out(&o).contains("removed table inet portd"), "{}", out(&o));
    assert!(net.table("portd").is_none());
}

/// The docs give one way to stop and remove, the one `--remove-table` prints.
#[test]
fn docs_give_one_way_to_stop_and_remove() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, roff) in [("README.md", false), ("man/portd.8", true), ("systemd/portd.yaml", false)] {
        let text = std::fs::read_to_string(root.join(file)).expect("read doc");
        let text = if roff { text.replace("\\-", "-") } else { text };
        assert!(
            text.contains("systemctl stop portd.socket portd.service && portd --remove-table"),
            "{file} lacks the one command"
        );
        assert!(!text.contains("systemctl stop portd && portd --remove-table"), "{file} still stops the service only");
    }
}

#[test]
fn reload_dry_run_suspensions_grants_and_status_port() {
    let net = Net::setup();
    let web = TestUser::new("pdr");
    let owner = format!("user:{}", web.name);
    let grant = |ports: &str| {
        format!("grants:\n  - user: {}\n    ports: [{ports}]\n    to: \"8000-8099\"\n    max_forwards: 5\n", web.name)
    };
    let d = Portd::start(&net, &config(&net, &grant("80, 443")));
    let rules = write(
        &net.dir,
        "web.yaml",
        "version: 1\nforwards:\n  - {name: http, port: 80, to: 8080}\n  - {name: https, port: 443, to: 8043}\n",
    );
    let o = d.ctl_as(&web.name, "", &["apply", rules.to_str().expect("path")]);
    assert!(o.status.success(), "{}", err(&o));

    // grants: what the caller may forward, for people and in JSON.
    let o = d.ctl_as(&web.name, "", &["grants"]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    for want in [
        format!("user {}", web.name),
        format!("(to user:{})", web.name),
        "ports:        80, 443".into(),
        "to:           8000-8099".into(),
        "protect:      not allowed".into(),
        "local:        allowed".into(),
        "marks:        0x1, 0".into(),
        "max_forwards: 5".into(),
    ] {
        assert!(text.contains(&want), "`{want}` in:\n{text}");
    }
    let v = json(&d.ctl_as(&web.name, "", &["--json", "grants"]));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["unrestricted"], false, "{v}");
    assert_eq!(v["grants"][0]["ports"], serde_json::json!(["80", "443"]), "{v}");
    assert_eq!(v["grants"][0]["max_forwards"], 5, "{v}");
    let o = d.ctl_as("nobody", "", &["grants"]);
    assert!(o.status.success() && out(&o).contains("no grant names you"), "{}{}", out(&o), err(&o));
    let v = json(&d.ctl(&["--json", "grants"]));
    assert_eq!((v["unrestricted"].as_bool(), v["user"].as_str()), (Some(true), Some("root")), "{v}");

    // Narrow the grant and add a system forward: the dry run tells what a reload would do.
    let narrowed =
        config(&net, &format!("{}forwards:\n  - {{name: dns, port: 53, to: 5353, proto: udp}}\n", grant("80")));
    std::fs::write(&d.config, narrowed).expect("config");
    let table = net.table("portd").expect("table");
    let o = d.ctl(&["reload", "--dry-run"]);
    assert!(o.status.success(), "{}", err(&o));
    let text = out(&o);
    assert!(text.contains("dry run, nothing applied"), "{text}");
    assert!(text.contains("+ system/dns: 53 -> 5353 udp"), "{text}");
    assert!(text.contains(&format!("! {owner}/https: 443 -> 8043 suspended (")), "{text}");
    assert!(text.contains("outside your grants"), "the reason: {text}");
    assert!(!text.contains(&format!("- {owner}/https")), "not shown as a deletion: {text}");
    assert_eq!(net.table("portd").as_deref(), Some(table.as_str()), "a dry run leaves the kernel alone");
    let st = d.status_json();
    assert_eq!(forward_status(&st, &owner, "https").expect("https")["state"], "active", "{st}");
    assert!(forward_status(&st, "system", "dns").is_none(), "{st}");
    let v = json(&d.ctl(&["--json", "reload", "--dry-run"]));
    assert_eq!(v["dry_run"], true, "{v}");
    assert_eq!(v["suspended"][0]["owner"], owner.as_str(), "{v}");
    assert_eq!(v["suspended"][0]["name"], "https", "{v}");
    assert_eq!(v["removed"], serde_json::json!([]), "{v}");
    assert_eq!(v["added"][0]["name"], "dns", "{v}");

    // The reload itself says the same, and does it.
    let o = d.ctl(&["reload"]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains(&format!("! {owner}/https: 443 -> 8043 suspended (")), "{}", out(&o));
    assert!(!out(&o).contains("dry run"), "{}", out(&o));
    let st = d.status_json();
    assert_eq!(forward_status(&st, &owner, "https").expect("https")["state"], "suspended", "{st}");
    assert_eq!(forward_status(&st, "system", "dns").expect("dns")["state"], "active", "{st}");
    let table = net.table("portd").expect("table");
    assert!(!table.contains(&format!("{owner}/https")), "suspended means out of the kernel: {table}");
    assert!(table.contains(&format!("{owner}/http\"")), "{table}");

    // status --port: the forwards whose public port includes it, active or suspended.
    let names = |port: &str| placed_names(&json(&d.ctl(&["--json", "status", "--port", port])));
    assert_eq!(names("80"), vec![format!("{owner}/http")]);
    assert_eq!(names("53"), vec!["system/dns".to_string()]);
    let o = d.ctl(&["status", "--port", "443"]);
    assert!(out(&o).lines().any(|l| l.contains(" https ") && l.contains("suspended")), "{}", out(&o));
    assert!(!out(&o).contains(" http "), "{}", out(&o));
    let o = d.ctl(&["status", "--port", "9"]);
    assert!(o.status.success() && out(&o).contains("no forwards"), "{}", out(&o));
}

/// Root's forwards are not judged, but root is told, as ufw tells: a public port a local
/// service already serves (root's own), and a target nothing listens on.
#[test]
fn roots_forward_over_a_listening_port_is_warned() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let _sshd = net.tcp_app(&net.srv, 22, "sshd");
    let o = d.ctl(&["add", "ssh", "22", "2222"]);
    assert!(o.status.success(), "root is not refused: {}", err(&o));
    let e = err(&o);
    assert!(e.contains("warning: forward `ssh`: public port 22/tcp is served by a socket of uid 0"), "{e}");
    assert!(e.contains("the forward would take its traffic"), "{e}");
    assert!(e.contains("warning: forward `ssh`: nothing listens on 2222/tcp yet"), "{e}");
    // Nothing to say about a free public port with its app listening.
    let _app = net.tcp_app(&net.srv, 8080, "app");
    let o = d.ctl(&["add", "web", "80", "8080"]);
    assert!(o.status.success() && err(&o).is_empty(), "{}", err(&o));
    // --json carries the warnings too.
    let v = json(&d.ctl(&["--json", "add", "ssh", "22", "2223", "--replace", "--dry-run"]));
    let w = v["warnings"].to_string();
    assert!(w.contains("public port 22/tcp is served") && w.contains("2223/tcp"), "{v}");
}
