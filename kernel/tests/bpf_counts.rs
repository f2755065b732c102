//! Steered connections counted by their sockets, against the real kernel: the sockops
//! program's counts of closed connections, per public port and family, in throwaway
//! namespaces with a private bpffs per test. Needs root.

mod support;

use std::{
    thread,
    time::{Duration, Instant},
};

use portd_kernel::bpf::{Dataplane, Families, SteerEntry};
use support::*;

/// `closed_counts` of port 80, waiting up to 2 s for `want` to hold (a closed
/// connection's socket reaches TCP_CLOSE once the peer's FIN is in).
fn counts_of_80(ns: &Netns, dp: &Dataplane, want: impl Fn(&[(bool, u64, u64)]) -> bool) -> Vec<(bool, u64, u64)> {
    let until = Instant::now() + Duration::from_secs(2);
    loop {
        let c = ns.run(None, || dp.closed_counts()).expect("closed_counts");
        let v: Vec<(bool, u64, u64)> =
            c.iter().filter(|((port, _), _)| *port == 80).map(|((_, v6), (p, b))| (*v6, *p, *b)).collect();
        if want(&v) || Instant::now() > until {
            return v;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn closed_connections_are_counted_per_family_and_start_over_with_the_forward() {
    require_root();
    let (pair, bpffs) = (Pair::new(), Bpffs::new());
    let mut dp = open(&pair.srv, &bpffs, &steer_80(true));
    let _app = Server::start(&pair.srv, OWNER, Bind::DualStack, 8080, false, "app");
    assert_eq!(counts_of_80(&pair.srv, &dp, |_| true), [(false, 0, 0), (true, 0, 0)], "two entries, zero");
    for _ in 0..3 {
        assert_steered(&pair.cli, "10.77.0.1:80", "app");
    }
    assert_steered(&pair.cli, "[fd77::1]:80", "app");
    // SYN, ACK, FIN at least per connection; an IPv4 connection to the dual-stack socket
    // counts as IPv4.
    let c = counts_of_80(&pair.srv, &dp, |v| v.iter().all(|(v6, p, _)| *p >= if *v6 { 3 } else { 9 }));
    assert!(c[0].1 >= 9 && c[1].1 >= 3 && c[1].1 < c[0].1, "{c:?}");
    // Connections to the target port directly are not the forward's.
    assert_steered(&pair.cli, "10.77.0.1:8080", "app");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(counts_of_80(&pair.srv, &dp, |_| true), c, "a direct connection counted");
    // The forward goes: so do its counts; it comes back from zero.
    pair.srv.run(None, || dp.sync(&[], &reserve_8080(), &[])).expect("sync");
    assert_eq!(counts_of_80(&pair.srv, &dp, |_| true), []);
    pair.srv.run(None, || dp.sync(&steer_80(true), &reserve_8080(), &[])).expect("sync");
    assert_eq!(counts_of_80(&pair.srv, &dp, |_| true), [(false, 0, 0), (true, 0, 0)]);
    // A pin directory from before `counts` (its pin gone): reopened, the steered port
    // gets its entries at the first sync, and connections are counted again.
    drop(dp);
    // (and from before `conn_forwards`)
    std::fs::remove_file(bpffs.pin_dir().join("maps/counts")).expect("unpin counts");
    std::fs::remove_file(bpffs.pin_dir().join("maps/conn_forwards")).expect("unpin conn_forwards");
    let dp = open(&pair.srv, &bpffs, &steer_80(true));
    assert_steered(&pair.cli, "10.77.0.1:80", "app");
    let c = counts_of_80(&pair.srv, &dp, |v| v.first().is_some_and(|c| c.1 >= 3));
    assert!(c.first().is_some_and(|c| !c.0 && c.1 >= 3), "{c:?}");
}

/// A steered connection from the client, open after reading the app's answer (with a
/// [`Server::holding`] app it closes once both this and the app are dropped).
fn held_connection(pair: &Pair, addr: &str, tag: &str) -> std::net::TcpStream {
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let mut s = pair
        .cli
        .run(None, move || std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3)))
        .expect("steered connection");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    let mut answer = [0u8; 64];
    let n = std::io::Read::read(&mut s, &mut answer).expect("answer");
    assert!(answer[..n].starts_with(tag.as_bytes()), "{:?}", String::from_utf8_lossy(&answer[..n]));
    s
}

/// Waits (up to 3 s) until no connection on port 80 of `ns` is open any more (its
/// socket's close has run the sockops program).
fn wait_closed_80(ns: &Netns) {
    let until = Instant::now() + Duration::from_secs(3);
    let ports = std::collections::BTreeSet::from([80u16]);
    loop {
        let open = ns.run(None, || portd_kernel::sockdiag::connections(&ports)).expect("sock_diag");
        if open.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "connections on port 80 still open: {open:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// A connection counts, when it closes, for the forward it was accepted for: if its public
/// port went to another owner or target meanwhile, the count the port started anew is
/// not the old forward's to fill, and the new forward's connections count there.
#[test]
fn a_connection_closing_after_its_port_changed_hands_is_not_the_new_forwards_count() {
    require_root();
    let (pair, bpffs) = (Pair::new(), Bpffs::new());
    let mut dp = open(&pair.srv, &bpffs, &steer_80(true));
    // Unchanged forward: a connection counts once it closes.
    let app = Server::holding(&pair.srv, OWNER, 8080, "app");
    let held = held_connection(&pair, "10.77.0.1:80", "app");
    thread::sleep(Duration::from_millis(100));
    assert_eq!(counts_of_80(&pair.srv, &dp, |_| true)[0].1, 0, "still open");
    drop((held, app));
    let c = counts_of_80(&pair.srv, &dp, |v| v.first().is_some_and(|c| c.1 >= 3));
    assert!(c[0].1 >= 3, "closed: counted {c:?}");
    // Open while port 80 goes to another owner, another target, or both.
    let base = steer_80(true)[0];
    let changes = [
        (SteerEntry { owner_uid: OTHER, ..base }, OTHER),
        (SteerEntry { target_port: 8081, ..base }, OWNER),
        (SteerEntry { target_port: 8082, owner_uid: OTHER, ..base }, OTHER),
    ];
    for (entry, uid) in changes {
        pair.srv.run(None, || dp.sync(&steer_80(true), &reserve_8080(), &[])).expect("sync back");
        let app = Server::holding(&pair.srv, OWNER, 8080, "app");
        let held = held_connection(&pair, "10.77.0.1:80", "app");
        let held6 = held_connection(&pair, "[fd77::1]:80", "app");
        pair.srv.run(None, || dp.sync(&[entry], &[], &[])).expect("sync: another forward");
        assert_eq!(counts_of_80(&pair.srv, &dp, |_| true), [(false, 0, 0), (true, 0, 0)], "started anew");
        drop((held, held6, app));
        wait_closed_80(&pair.srv);
        assert_eq!(
            counts_of_80(&pair.srv, &dp, |_| true),
            [(false, 0, 0), (true, 0, 0)],
            "the old forward's connections closed: not counted for {entry:?}"
        );
        // The new forward's own connection counts.
        let app = Server::holding(&pair.srv, uid, entry.target_port, "new");
        let held = held_connection(&pair, "10.77.0.1:80", "new");
        drop((held, app));
        let c = counts_of_80(&pair.srv, &dp, |v| v.first().is_some_and(|c| c.1 >= 3));
        assert!(c[0].1 >= 3 && c[1] == (true, 0, 0), "the new forward's connection: {c:?}");
    }
}

#[test]
fn connections_the_forward_does_not_steer_are_not_its_count() {
    // An IPv4 forward: an IPv6 connection to the public port goes to whoever listens on
    // that port itself (here root, v6 only), and is not counted for the forward.
    require_root();
    let (pair, bpffs) = (Pair::new(), Bpffs::new());
    let v4 = [SteerEntry {
        public_port: 80,
        target_port: 8080,
        owner_uid: OWNER,
        families: Families { v4: true, v6: false },
        local: true,
    }];
    let dp = open(&pair.srv, &bpffs, &v4);
    let _app = Server::start(&pair.srv, OWNER, Bind::DualStack, 8080, false, "app");
    let _other = Server::start(&pair.srv, 0, Bind::V6Only, 80, false, "other");
    assert_steered(&pair.cli, "10.77.0.1:80", "app");
    for _ in 0..3 {
        assert_steered(&pair.cli, "[fd77::1]:80", "other");
    }
    let c = counts_of_80(&pair.srv, &dp, |v| v.first().is_some_and(|c| c.1 >= 3));
    thread::sleep(Duration::from_millis(200));
    let c2 = counts_of_80(&pair.srv, &dp, |_| true);
    assert!(c2[0].1 >= 3 && c2[0] == c[0], "the steered IPv4 connection: {c2:?}");
    assert_eq!(c2[1], (true, 0, 0), "IPv6 went to another socket: not the forward's: {c2:?}");
}
