//! Times `Plan::replace_owner` when every one of N forwards changes its target, against
//! a full compile and `Plan::diff` (the profiling aid behind the large-change path).
//! usage: cargo run --release -p portd-rules --example replace10k [N]
use portd_rules::{compile, Forward, OwnedSet, PortRange};
use std::time::Instant;

fn set(n: u16, off: u16) -> Vec<Forward> {
    (0..n)
        .map(|i| Forward::new(&format!("p{i}"), PortRange::single(1025 + i), PortRange::single(1025 + i + off)))
        .collect()
}

fn main() {
    let n: u16 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let t = Instant::now();
    let plan = compile("portd", 1, &[OwnedSet { owner: "user:a".into(), forwards: set(n, 1) }]).expect("compile");
    println!("compile {n}: {:?}", t.elapsed());
    for round in 0..3 {
        let t = Instant::now();
        let d = plan.replace_owner("user:a", &set(n, 2), 1).expect("replace");
        let t1 = t.elapsed();
        let mut p = plan.clone();
        let t = Instant::now();
        d.apply_in_place(&mut p);
        println!("round {round}: replace_owner {t1:?} ({} objects), apply_in_place {:?}", d.size(), t.elapsed());
        let t = Instant::now();
        let new = compile("portd", 1, &[OwnedSet { owner: "user:a".into(), forwards: set(n, 2) }]).expect("compile");
        let t1 = t.elapsed();
        let d2 = portd_rules::Plan::diff(&plan, &new);
        println!("         compile {t1:?} + diff {:?} ({} objects)", t.elapsed() - t1, d2.size());
    }
}
