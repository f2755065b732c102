//! YAML text -> parse + validate -> compile -> render -> diff: must never panic, and
//! every valid file's plan must round-trip through its own diff. The loader's compact
//! tree must agree with serde_yaml's `Value` on every input (the kept corpus included,
//! which the smoke run of tests/run replays first).
#![no_main]

use libfuzzer_sys::fuzz_target;
use portd_rules::{compile, parse_config, parse_rules, render::render, OwnedSet, Plan};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(diff) = portd_rules::load::tree_differs_from_value(text) {
        panic!("the compact tree disagrees with serde_yaml's Value: {diff}");
    }
    let _ = parse_config("fuzz.yaml", text);
    match parse_rules("fuzz.yaml", text) {
        Ok(rules) => {
            let plan = compile("portd", 1, &[OwnedSet { owner: "system".into(), forwards: rules.forwards }])
                .expect("a valid file never conflicts with itself");
            let nft = render(&plan);
            assert!(nft.starts_with("table inet portd {"));
            assert!(Plan::diff(&plan, &plan).is_empty());
            let empty = Plan::empty("portd", 1);
            // the daemon's path: a delta taken into the current plan
            let mut d = Plan::diff(&empty, &plan);
            assert!(!d.structural);
            let mut reached = empty.clone();
            d.take_into(&mut reached);
            assert_eq!(reached, plan);
            // and one owner's set replaced incrementally reaches the same plan
            let mut d = empty
                .replace_owner("system", &plan.forwards.iter().map(|p| p.forward.clone()).collect::<Vec<_>>(), 1)
                .expect("a valid file never conflicts with itself");
            let mut incremental = empty.clone();
            d.take_into(&mut incremental);
            assert_eq!(incremental, plan);
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            for d in &diags.0 {
                assert!(!d.message.is_empty());
            }
        }
    }
});
