//! Times `parse_rules` of a rules file of N single-port forwards (the text `portctl
//! apply` sends and the daemon parses), split into serde_yaml's part and the rest.
//! usage: cargo run --release -p portd-rules --example parse10k [N] [ROUNDS]
use std::time::{Duration, Instant};

fn text(n: u32) -> String {
    let mut s = String::from("version: 1\nforwards:\n");
    for i in 0..n {
        let p = 1025 + i;
        s.push_str(&format!("  - name: p{p}\n    port: {p}\n    to: {}\n", p + 1));
    }
    s
}

fn stats(name: &str, mut t: Vec<Duration>) {
    t.sort();
    println!("{name:<32} min {:>8.2?}  median {:>8.2?}  max {:>8.2?}", t[0], t[t.len() / 2], t[t.len() - 1]);
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(15).max(1);
    let text = text(n);
    println!("{n} forwards, {} bytes, {rounds} rounds", text.len());
    let (mut full, mut yaml) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let rules = portd_rules::load::parse_rules("parse10k.yaml", &text).expect("the generated file is valid");
        full.push(t.elapsed());
        assert_eq!(rules.forwards.len(), n as usize);
        let t = Instant::now();
        let v: serde_yaml::Value = serde_yaml::from_str(&text).expect("the generated file is YAML");
        yaml.push(t.elapsed());
        drop(v);
    }
    stats("parse_rules", full);
    stats("serde_yaml::from_str::<Value>", yaml);
}
