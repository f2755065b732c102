//! Whether a forward works now, and what a new config would do: `status` says whether the
//! target of every forward listens (on which families and addresses), steered or NAT, as
//! the metrics gauge does; `portd --check` previews a reload of the file it checked against
//! the running portd. Needs root (fails and says so otherwise).

use portd_tests::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

mod steer_common;
use steer_common::forward;

const FORWARDS: &str =
    "forwards:\n  - name: web\n    port: 80\n    to: 8080\n  - name: dns\n    port: 53\n    to: 5353\n    proto: udp\n";

fn gauge(d: &Portd, name: &str) -> String {
    let m = out(&d.ctl(&["metrics"]));
    let key = format!("portd_forward_target_listening{{owner=\"system\",name=\"{name}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in the metrics:\n{m}"))
        .trim()
        .to_string()
}

fn status_row(d: &Portd, name: &str) -> String {
    let o = d.ctl(&["status", "--wide", name]);
    assert!(o.status.success(), "status: {}", err(&o));
    out(&o).lines().last().unwrap_or_default().to_string()
}

/// The same walk in both dispatch modes: nothing listening, a v6-only socket behind a
/// forward of both families, then a dual-stack socket; and a UDP target (NAT in both).
fn listening_is_told(d: &Portd, net: &Net, dispatch: &str) {
    let s = d.status_json();
    assert_eq!(s["dispatch"], dispatch, "{s}");
    let web = forward(&s, "web");
    assert_eq!(web["dispatch"], dispatch, "{web}");
    assert_eq!(web["listening"], false, "nothing listens yet: {web}");
    assert!(web.get("listeners").is_none(), "no listeners listed: {web}");
    assert_eq!(forward(&s, "dns")["listening"], false, "{s}");
    assert!(status_row(d, "web").contains("active (nothing listens on 8080)"), "{}", status_row(d, "web"));
    assert_eq!(gauge(d, "web"), "0");
    assert_eq!(gauge(d, "dns"), "0");

    // A v6-only socket takes no IPv4: the forward does not work for IPv4 clients.
    let v6 = net.tcp_app_on(&net.srv, None, "TCP6-LISTEN:8080,fork,reuseaddr,ipv6only=1", 8080, "v6");
    wait_for(|| forward(&d.status_json(), "web")["listeners"] == serde_json::json!(["tcp [::] v6only"]), "v6only");
    assert_eq!(forward(&d.status_json(), "web")["listening"], false);
    let row = status_row(d, "web");
    assert!(row.contains("active (not on every family: tcp [::] v6only)"), "{row}");
    assert_eq!(gauge(d, "web"), "0");
    drop(v6);

    let _app = net.tcp_app(&net.srv, 8080, "hello");
    wait_for(|| forward(&d.status_json(), "web")["listening"] == true, "the dual-stack app to count");
    let web = forward(&d.status_json(), "web").clone();
    assert_eq!(web["listeners"], serde_json::json!(["tcp [::]"]), "{web}");
    assert_eq!(net.tcp_get(&net.cli, SRV4, 80).as_deref(), Some("hello"), "it does work over IPv4");
    assert_eq!(net.tcp_get(&net.cli, SRV6, 80).as_deref(), Some("hello"), "and over IPv6");
    let row = status_row(d, "web");
    assert!(row.contains(" tcp [::] ") && row.trim_end().ends_with("active"), "{row}");
    assert_eq!(gauge(d, "web"), "1");

    let stop = Arc::new(AtomicBool::new(false));
    let udp = udp_answerer(&net.srv, 5353, "pong", stop.clone());
    wait_for(|| forward(&d.status_json(), "dns")["listening"] == true, "the UDP target to count");
    let dns = forward(&d.status_json(), "dns").clone();
    assert_eq!(dns["dispatch"], "nat", "UDP is NAT in both modes: {dns}");
    assert_eq!(dns["listeners"], serde_json::json!(["udp [::]"]), "{dns}");
    assert_eq!(gauge(d, "dns"), "1");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    udp.join().expect("udp answerer");
}

#[test]
fn status_tells_whether_a_nat_forwards_target_listens_and_on_which_families() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, FORWARDS));
    listening_is_told(&d, &net, "nat");
}

#[test]
fn status_tells_whether_a_steered_forwards_target_listens_and_on_which_families() {
    let net = Net::setup();
    let d = Portd::start_bpf(&net, &config(&net, FORWARDS), &[]);
    listening_is_told(&d, &net, "steer");
}

fn check(config: &std::path::Path, user: Option<&str>) -> std::process::Output {
    let mut c = std::process::Command::new("setpriv");
    if let Some(u) = user {
        let gid = sh("id", &["-g", u]);
        c.args([format!("--reuid={u}"), format!("--regid={}", out(&gid).trim()), "--clear-groups".into()]);
    } else {
        c.arg("--");
    }
    c.arg(bin("portd")).arg("--check").arg("--config").arg(config).output().expect("portd --check")
}

#[test]
fn portd_check_previews_a_reload_of_the_file_against_the_running_portd() {
    let net = Net::setup();
    let web = TestUser::new("pc");
    let grant = |ports: &str| format!("grants:\n  - user: {}\n    ports: [{ports}]\n    to: \"8000-9000\"\n", web.name);
    let system = "forwards:\n  - name: ssh\n    port: 22\n    to: 2222\n";
    let d = Portd::start(&net, &config(&net, &format!("{}{system}", grant("80"))));
    std::fs::set_permissions(&net.dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod dir");
    let rules = write(&net.dir, "web.yaml", "version: 1\nforwards:\n  - name: http\n    port: 80\n    to: 8080\n");
    std::fs::set_permissions(&rules, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let o = d.ctl_as(&web.name, "", &["apply", rules.to_str().expect("utf-8")]);
    assert!(o.status.success(), "apply: {}", err(&o));
    let before = net.table("portd").expect("table");

    // An edited copy: ssh goes, dns comes, and the grant no longer covers port 80.
    let edited = write(
        &net.dir,
        "edited.yaml",
        &config(
            &net,
            &format!("{}forwards:\n  - name: dns\n    port: 53\n    to: 5353\n    proto: udp\n", grant("81")),
        ),
    );
    std::fs::set_permissions(&edited, std::os::unix::fs::PermissionsExt::from_mode(0o644)).expect("chmod");
    let o = check(&edited, None);
    let text = out(&o);
    assert!(o.status.success(), "{text}{}", err(&o));
    let pid = d.child.id();
    assert!(text.contains(&format!("against the running portd (pid {pid}), a reload of this file would:")), "{text}");
    assert!(text.contains("+ system/dns: 53 -> 5353 udp both"), "{text}");
    assert!(text.contains("- system/ssh: 22 -> 2222 tcp both"), "{text}");
    let suspended = format!("! user:{}/http: 80 -> 8080 suspended (", web.name);
    assert!(text.contains(&suspended), "{text}");
    assert!(!text.contains(&format!("- user:{}", web.name)), "a suspension is not shown as a removal: {text}");
    assert_eq!(net.table("portd").expect("table"), before, "a check changes nothing");
    assert_eq!(placed_names(&d.status_json()), ["system/ssh".to_string(), format!("user:{}/http", web.name)]);

    // The running portd's own file, unchanged: nothing to do.
    let o = check(&d.config, None);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("a reload of this file would:\nno changes"), "{}", out(&o));

    // A setting that only changes on restart: the reload would be refused, so the check fails.
    let moved = read(&d.config).replace("state_dir: ", "state_dir: /nonexistent");
    let moved = write(&net.dir, "moved.yaml", &moved);
    let o = check(&moved, None);
    assert_eq!(o.status.code(), Some(1), "{}{}", out(&o), err(&o));
    assert!(err(&o).contains("would refuse a reload of this file"), "{}", err(&o));
    assert!(err(&o).contains("only change on restart"), "{}", err(&o));

    // An ordinary user gets the file's verdict and a note: the preview is root's.
    let o = check(&edited, Some(&web.name));
    assert!(o.status.success(), "{}{}", out(&o), err(&o));
    assert!(out(&o).contains(": ok: "), "{}", out(&o));
    assert!(err(&o).contains("note: cannot ask the running portd") && err(&o).contains("only root"), "{}", err(&o));

    // No portd: the file alone.
    drop(d);
    let o = check(&edited, None);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).contains("no portd holds table inet portd: the file was checked alone"), "{}", out(&o));
}
