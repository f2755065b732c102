//! Golden cases: each `golden/NAME.yaml` compiles to exactly `golden/NAME.nft`, and
//! every golden output is accepted by the real `nft -c -f -` inside `unshare -rn`.
//! Set `UPDATE_GOLDEN=1` to rewrite the expected files after a deliberate change.

use portd_rules::plan::compile_dispatched;
use portd_rules::{parse_rules, render::render};
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
    // Cases named steer* are compiled with TCP forwards steered (settings.dispatch).
    let steer = yaml.file_stem().is_some_and(|s| s.to_string_lossy().starts_with("steer"));
    let plan = compile_dispatched("portd", 1, steer, &[("system", rules.forwards.iter().collect())])
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
    // The seed with 2 forwards and the range case with 4 must have the same number of
    // rules: the rule lines of every chain block, without the base chains' hook lines.
    let count = |p: &str| {
        let out = rendered(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(p));
        let mut in_chain = false;
        let mut rules = 0;
        for l in out.lines() {
            if l.starts_with("\tchain ") {
                in_chain = true;
            } else if l == "\t}" {
                in_chain = false;
            } else if in_chain && l.starts_with("\t\t") && !l.starts_with("\t\ttype ") {
                rules += 1;
            }
        }
        rules
    };
    // Lower bound: the count is every rule of the fixed skeleton, not zero lines that
    // happen to be equal.
    let skeleton: usize = portd_rules::Plan::empty("portd", 1).chains.iter().map(|c| c.rules.len()).sum();
    assert!(skeleton >= 9, "the skeleton has a rule per base chain at least: {skeleton}");
    assert_eq!(count("seed.yaml"), skeleton);
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
