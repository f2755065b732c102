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
    std::fs::remove_file(bpffs.pin_dir().join("maps/counts")).expect("unpin counts");
    let dp = open(&pair.srv, &bpffs, &steer_80(true));
    assert_steered(&pair.cli, "10.77.0.1:80", "app");
    let c = counts_of_80(&pair.srv, &dp, |v| v.first().is_some_and(|c| c.1 >= 3));
    assert!(c.first().is_some_and(|c| !c.0 && c.1 >= 3), "{c:?}");
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
