//! A tiny driver of the BPF data plane, for the benchmark (bench/run) and for
//! trying it by hand. Run it inside the network namespace to serve (`ip netns
//! exec NS ...`), as root, with PIN on a bpffs:
//!
//!     steer open PIN PUBLIC TARGET [UID|any] [local]
//!         opens (or re-opens) the data plane at PIN and syncs one steered
//!         forward PUBLIC -> TARGET owned by UID (default: any uid), taking
//!         connections made on this host too with `local`; then exits, the
//!         pins keep everything attached
//!     steer remove PIN
//!         unpins (detaches) everything under PIN
//!     steer sync-bench PIN N [ROUNDS]
//!         syncs N forwards and N reservations, then times ROUNDS (default 50)
//!         syncs that add or remove one forward; prints the medians
//!
//! It reserves nothing for `open` (a system forward: the app may run as any
//! uid); `sync-bench` reserves UDP ports 30001.. of its namespace while it runs.

use std::{path::Path, process::ExitCode, time::Instant};

use portd_kernel::bpf::{Dataplane, Families, Proto, Reservation, SteerEntry, ANY_UID};

fn usage() -> ExitCode {
    eprintln!(
        "usage: steer open PIN PUBLIC TARGET [UID|any] [local] | steer remove PIN | steer sync-bench PIN N [ROUNDS]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["open", pin, public, target, rest @ ..] => open(Path::new(pin), public, target, rest),
        ["remove", pin] => Dataplane::remove(Path::new(pin)).map(drop).map_err(|e| e.to_string()),
        ["sync-bench", pin, n] => sync_bench(Path::new(pin), n, "50"),
        ["sync-bench", pin, n, rounds] => sync_bench(Path::new(pin), n, rounds),
        _ => return usage(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("steer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn port(s: &str) -> Result<u16, String> {
    s.parse().ok().filter(|&p| p != 0).ok_or_else(|| format!("not a port: {s}"))
}

fn open(pin: &Path, public: &str, target: &str, rest: &[&str]) -> Result<(), String> {
    let mut owner_uid = ANY_UID;
    let mut local = false;
    for &arg in rest {
        match arg {
            "local" => local = true,
            "any" => owner_uid = ANY_UID,
            uid => owner_uid = uid.parse().map_err(|_| format!("not a uid: {uid}"))?,
        }
    }
    let entry = SteerEntry {
        public_port: port(public)?,
        target_port: port(target)?,
        owner_uid,
        families: Families::BOTH,
        local,
    };
    let mut dp = Dataplane::open(pin).map_err(|e| e.to_string())?;
    dp.sync(&[entry], &[], &[]).map_err(|e| e.to_string())?;
    println!(
        "steering {} -> {} ({} socket(s) registered)",
        entry.public_port,
        entry.target_port,
        dp.listening(entry.target_port).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn sync_bench(pin: &Path, n: &str, rounds: &str) -> Result<(), String> {
    let n: u16 = n.parse().ok().filter(|n| (1..=20_000).contains(n)).ok_or("N: 1..20000")?;
    let rounds: usize = rounds.parse().map_err(|_| "ROUNDS: a number")?;
    let steer: Vec<SteerEntry> = (0..n)
        .map(|i| SteerEntry {
            public_port: 10_001 + i,
            target_port: 30_001 + i,
            owner_uid: 40_001,
            families: Families::BOTH,
            local: false,
        })
        .collect();
    let reserved: Vec<Reservation> =
        (0..n).map(|i| Reservation { proto: Proto::Udp, port: 30_001 + i, owner_uid: 40_001 }).collect();
    let mut plus_one = steer.clone();
    // A new public port to an existing target: one steer entry, no new target.
    plus_one.push(SteerEntry { public_port: 9_999, ..steer[0] });

    let mut dp = Dataplane::open(pin).map_err(|e| e.to_string())?;
    let t = Instant::now();
    dp.sync(&steer, &reserved, &[]).map_err(|e| e.to_string())?;
    let full = t.elapsed().as_secs_f64();
    let mut one = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let set = if i % 2 == 0 { &plus_one } else { &steer };
        let t = Instant::now();
        dp.sync(set, &reserved, &[]).map_err(|e| e.to_string())?;
        one.push(t.elapsed().as_secs_f64());
    }
    // The same change when the maps must be read back (after repair).
    let mut reread = Vec::with_capacity(rounds.min(10));
    for i in 0..rounds.min(10) {
        dp.forget_written();
        let set = if i % 2 == 0 { &plus_one } else { &steer };
        let t = Instant::now();
        dp.sync(set, &reserved, &[]).map_err(|e| e.to_string())?;
        reread.push(t.elapsed().as_secs_f64());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("full\t{full:.6}");
    println!("one_change\t{:.6}", median(one));
    println!("one_change_reread\t{:.6}", median(reread));
    Ok(())
}
