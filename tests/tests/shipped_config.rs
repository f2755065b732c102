//! The default /etc/portd/portd.yaml of the package: valid as shipped, keeps the rules on
//! exit (restarts and upgrades drop no connection), and every commented example is valid
//! once its leading `#` is removed; the examples the package ships pass the checks its
//! README.Debian names. No root needed.

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

const EXAMPLE_CONFIG: &str = include_str!("../../debian/examples/portd.yaml");
const EXAMPLE_RULES: &str = include_str!("../../debian/examples/rules.yaml");
const README_DEBIAN: &str = include_str!("../../debian/README.Debian");

/// The examples the package ships in /usr/share/doc/portd/examples pass the checks
/// README.Debian tells the reader to run, with the real binaries, and fit each other:
/// every forward of the rules file is inside the config's grant.
#[test]
fn packaged_examples_pass_the_checks_readme_debian_names() {
    let c = parse_config("examples/portd.yaml", EXAMPLE_CONFIG).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(c.settings.on_exit, OnExit::Keep, "as the packaged config");
    assert_eq!(c.grants.len(), 1);
    let rules = portd_rules::parse_rules("examples/rules.yaml", EXAMPLE_RULES).unwrap_or_else(|d| panic!("{d}"));
    let grant = &c.grants[0];
    assert!(!rules.forwards.is_empty());
    for f in &rules.forwards {
        assert!(grant.ports.iter().any(|p| p.contains(&f.port)), "public port {} granted: {grant:?}", f.port);
        assert!(grant.to.iter().any(|p| p.contains(&f.to)), "target {} granted: {grant:?}", f.to);
    }
    let dir = std::env::temp_dir().join(format!("portd-examples-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = portd_tests::write(&dir, "portd.yaml", EXAMPLE_CONFIG);
    let rules_file = portd_tests::write(&dir, "rules.yaml", EXAMPLE_RULES);
    for (bin, args) in [
        ("portd", vec!["--check".to_string(), "--config".into(), config.display().to_string()]),
        ("portctl", vec!["check".into(), rules_file.display().to_string()]),
    ] {
        let o = std::process::Command::new(portd_tests::bin(bin)).args(&args).output().expect("run");
        assert!(o.status.success(), "{bin} {args:?}: {}{}", portd_tests::out(&o), portd_tests::err(&o));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for needed in [
        "systemctl stop portd.socket portd.service && portd --remove-table",
        "CAP_BPF and CAP_PERFMON",
        "Linux 5.19 or newer with BTF",
        "/usr/share/doc/portd/examples/",
        "portd --check --config FILE",
        "portctl check FILE",
    ] {
        assert!(README_DEBIAN.contains(needed), "README.Debian lacks {needed:?}");
    }
    let readme = include_str!("../../README.md");
    assert!(readme.contains("systemctl stop portd.socket portd.service && portd --remove-table"), "the same command");
    let build = include_str!("../../scripts/build-deb");
    assert!(build.contains("debian/README.Debian \"usr/share/doc/$PKG/README.Debian\""), "build-deb installs it");
    assert!(build.contains("usr/share/doc/$PKG/examples/"), "build-deb installs the examples");
}
