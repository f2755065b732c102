//! YAML text -> parse + validate -> compile -> render -> diff: must never panic, and
//! every valid file's plan must round-trip through its own diff.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portd_rules::{compile, parse_config, parse_rules, render::render, OwnedSet, Plan};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_config("fuzz.yaml", text);
    match parse_rules("fuzz.yaml", text) {
        Ok(rules) => {
            let plan = compile("portd", 1, &[OwnedSet { owner: "system".into(), forwards: rules.forwards }])
                .expect("a valid file never conflicts with itself");
            let nft = render(&plan);
            assert!(nft.starts_with("table inet portd {"));
            assert!(Plan::diff(&plan, &plan).is_empty());
            let empty = Plan::empty("portd");
            let d = Plan::diff(&empty, &plan);
            assert_eq!(d.apply(&empty, plan.forwards.clone()).as_ref(), Some(&plan));
        }
        Err(diags) => {
            assert!(!diags.is_empty());
            for d in &diags.0 {
                assert!(!d.message.is_empty());
            }
        }
    }
});
