//! Times a large element-level change from plan to netlink: `Plan::change_owner` of N
//! forwards that all change their target, then `Backend::apply_changes` (encoding the
//! delta and committing it), then `Delta::take_into`. Both paths of `change_owner` are
//! timed: the whole-plan path (all N change) and the element-by-element path (N/5 change).
//!
//! It moves into a network namespace of its own first, so it never touches the host's
//! ruleset. usage (as root): cargo run --release -p portd-kernel --example delta10k [N] [ROUNDS]
#![forbid(unsafe_code)]

use nix::sched::{unshare, CloneFlags};
use portd_kernel::nft::Backend;
use portd_rules::{compile, Forward, OwnedSet, PortRange};
use std::time::{Duration, Instant};

fn set(n: u16, off: u16) -> Vec<Forward> {
    (0..n)
        .map(|i| Forward::new(&format!("p{i}"), PortRange::single(1025 + i), PortRange::single(1025 + i + off)))
        .collect()
}

/// Median and minimum (the machine may be busy: the minimum is the steadier figure).
fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    format!("{:.2?} (min {:.2?})", v[v.len() / 2], v[0])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    unshare(CloneFlags::CLONE_NEWNET).expect("a network namespace of our own (run as root)");
    let backend = Backend::new("portd");
    let mut plan = compile("portd", 1, &[OwnedSet { owner: "user:a".into(), forwards: set(n, 1) }]).expect("compile");
    backend.apply(&plan).expect("first apply");
    // Every round moves the targets to a new offset, so every changed forward differs.
    let mut offset = 1;
    for (what, changed) in [("all change (whole-plan path)", n), ("a fifth change (element path)", n / 5)] {
        let (mut t_change, mut t_send, mut t_take) = (Vec::new(), Vec::new(), Vec::new());
        let mut objects = 0;
        for _ in 0..rounds {
            offset = 3 - offset;
            let mut put = set(n, 1 + offset);
            put.truncate(usize::from(changed));
            let t = Instant::now();
            let mut d = plan.change_owner("user:a", &[], &put, 1).expect("no conflicts");
            t_change.push(t.elapsed());
            objects = d.size();
            let t = Instant::now();
            backend.apply_changes(&plan, &d).expect("kernel takes the delta");
            t_send.push(t.elapsed());
            let t = Instant::now();
            d.take_into(&mut plan);
            t_take.push(t.elapsed());
        }
        let check = backend.read(&plan).expect("read").expect("table");
        assert!(check.matches(&plan), "the kernel holds the plan: {:?}", check.differences(&plan));
        println!(
            "{n} forwards, {what}: {objects} objects; median of {rounds}: change_owner {}, apply_changes (encode + commit) {}, take_into {}",
            stats(t_change),
            stats(t_send),
            stats(t_take)
        );
    }
}
