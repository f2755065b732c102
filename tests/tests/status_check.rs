//! Whether a forward works now: `status` says whether the target of every forward listens
//! (on which families and addresses), steered or NAT, as the metrics gauge does. Needs
//! root (fails and says so otherwise).

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
