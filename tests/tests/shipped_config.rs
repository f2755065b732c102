//! The default /etc/portd/portd.yaml of the package: valid as shipped, keeps the rules on
//! exit (restarts and upgrades drop no connection), and every commented example is valid
//! once its leading `#` is removed. No root needed.

use portd_rules::{parse_config, OnExit};

const SHIPPED: &str = include_str!("../../systemd/portd.yaml");

/// The file with every example line (`#  ...`) uncommented; prose comments stay.
fn uncommented() -> String {
    SHIPPED
        .lines()
        .map(|l| l.strip_prefix('#').filter(|r| r.starts_with("  ")).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_config_is_valid_and_keeps_rules_on_exit() {
    let c = parse_config("systemd/portd.yaml", SHIPPED).unwrap_or_else(|d| panic!("shipped config is invalid:\n{d}"));
    assert_eq!(c.settings.on_exit, OnExit::Keep, "the package keeps rules across restarts and upgrades");
    assert_eq!(c.settings.table, "portd");
    assert!(c.grants.is_empty() && c.forwards.is_empty(), "nothing is granted or forwarded until the operator says so");
}

#[test]
fn shipped_examples_are_valid_when_uncommented() {
    let text = uncommented();
    assert_ne!(text, SHIPPED.trim_end(), "the shipped config has commented examples");
    let c =
        parse_config("uncommented", &text).unwrap_or_else(|d| panic!("uncommented examples are invalid:\n{d}\n{text}"));
    assert_eq!(c.grants.len(), 2, "{text}");
    assert_eq!(c.forwards.len(), 2, "{text}");
}
