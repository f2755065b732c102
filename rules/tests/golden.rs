//! Golden cases: each `golden/NAME.yaml` compiles to exactly `golden/NAME.nft`, and
//! every golden output is accepted by the real `nft -c -f -` inside `unshare -rn`.
//! Set `UPDATE_GOLDEN=1` to rewrite the expected files after a deliberate change.

use portd_rules::{compile, parse_rules, render::render, OwnedSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 8, "expected at least 8 golden cases, found {}", v.len());
    v
}

fn rendered(yaml: &Path) -> String {
    let text = std::fs::read_to_string(yaml).expect("read golden yaml");
    let rules = parse_rules(&yaml.display().to_string(), &text).unwrap_or_else(|d| panic!("{d}"));
    let plan = compile("portd", 1, &[OwnedSet { owner: "system".into(), forwards: rules.forwards }])
        .expect("golden cases have no conflicts");
    render(&plan)
}

#[test]
fn golden_yaml_renders_expected_nft() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for yaml in cases() {
        let out = rendered(&yaml);
        let expected_path = yaml.with_extension("nft");
        if update {
            std::fs::write(&expected_path, &out).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{} missing; run with UPDATE_GOLDEN=1", expected_path.display()));
        assert_eq!(out, expected, "{} differs from {}", yaml.display(), expected_path.display());
    }
}

#[test]
fn golden_outputs_have_no_rule_per_forward() {
    // The seed with 2 forwards and the range case with 4 must have the same number of rules.
    let count = |p: &str| {
        let out = rendered(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(p));
        out.lines()
            .filter(|l| {
                l.starts_with("\t\t")
                    && !l.contains("type ")
                    && !l.starts_with("\t\t\t")
                    && !l.contains("elements")
                    && !l.contains("flags")
            })
            .count()
    };
    assert_eq!(count("seed.yaml"), count("ranges.yaml"));
    assert_eq!(count("seed.yaml"), count("udp.yaml"));
}

#[test]
fn nft_accepts_every_golden_output() {
    for yaml in cases() {
        let out = rendered(&yaml);
        let mut child = Command::new("unshare")
            .args(["-rn", "nft", "-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect(
                "this test needs `unshare` (util-linux) and `nft` (nftables) to check rendered rulesets; install them",
            );
        child.stdin.take().expect("stdin").write_all(out.as_bytes()).expect("write to nft");
        let res = child.wait_with_output().expect("wait for nft");
        assert!(
            res.status.success(),
            "nft -c rejected the rendering of {} (if the error is about namespaces, user namespaces are unavailable here):\n{}\n{}",
            yaml.display(),
            String::from_utf8_lossy(&res.stderr),
            out
        );
    }
}
