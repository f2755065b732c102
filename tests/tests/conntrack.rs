//! Conntrack hygiene: a long-lived UDP flow follows a forward's new target, and stops
//! when the forward is removed, instead of following the old mapping forever.

use portd_tests::*;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn udp_answerer(net: &Net, port: u16, reply: &'static str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    spawn_in_netns(&net.srv, move || {
        let s = UdpSocket::bind(("::", port)).expect("bind udp answerer");
        s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(reply.as_bytes(), from);
            }
        }
    })
}

#[test]
fn udp_flow_follows_retarget_and_stops_on_removal() {
    let net = Net::setup();
    let d = Portd::start(&net, &config(&net, ""));
    let stop = Arc::new(AtomicBool::new(false));
    let a = udp_answerer(&net, 5353, "old", stop.clone());
    let b = udp_answerer(&net, 5354, "new", stop.clone());
    let set = |to: u16| format!("version: 1\nforwards:\n  - name: dns\n    port: 53\n    to: {to}\n    proto: udp\n");
    let f = write(&net.dir, "r.yaml", &set(5353));
    assert!(d.ctl(&["apply", f.to_str().expect("p")]).status.success());

    // One UDP flow (fixed source port) sending every 5 ms for the whole test.
    let seen: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
    let (seen2, stop2) = (seen.clone(), stop.clone());
    let client = spawn_in_netns(&net.cli, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("client");
        s.connect(format!("{SRV4}:53")).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(5))).expect("timeout");
        let mut buf = [0u8; 64];
        while !stop2.load(Ordering::Relaxed) {
            let _ = s.send(b"ping");
            if let Ok(n) = s.recv(&mut buf) {
                seen2.lock().expect("lock").push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let last = |since: Instant| -> Vec<String> {
        seen.lock().expect("lock").iter().filter(|(t, _)| *t > since).map(|(_, r)| r.clone()).collect()
    };
    wait_for(
        || last(Instant::now() - Duration::from_millis(100)).iter().any(|r| r == "old"),
        "replies from the old target",
    );

    // Retarget while the flow keeps sending.
    std::fs::write(&f, set(5354)).expect("edit");
    let changed = Instant::now();
    assert!(d.ctl(&["apply", f.to_str().expect("p")]).status.success());
    wait_for(|| last(changed).iter().any(|r| r == "new"), "the running flow to reach the new target");
    let moved = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|(t, r)| *t > changed && r == "new")
        .map(|(t, _)| t.duration_since(changed));
    std::thread::sleep(Duration::from_millis(200));
    let after = Instant::now();
    std::thread::sleep(Duration::from_millis(200));
    assert!(last(after).iter().all(|r| r == "new"), "no reply from the old target once moved: {:?}", last(after));

    // Remove the forward: the flow stops getting answers.
    std::fs::write(&f, "version: 1\nforwards: []\n").expect("edit");
    assert!(d.ctl(&["apply", f.to_str().expect("p")]).status.success());
    let removed = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let late: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(t, _)| *t > removed + Duration::from_millis(100))
        .map(|(_, r)| r.clone())
        .collect();
    stop.store(true, Ordering::Relaxed);
    client.join().expect("client");
    a.join().expect("a");
    b.join().expect("b");
    assert!(late.is_empty(), "the flow still reached a target after removal: {late:?}");
    assert!(Portd::log(&net).contains("conntrack entr"), "{}", Portd::log(&net));
    println!("conntrack: running UDP flow moved to the new target {moved:?} after the apply started");
}
