//! Every example in the README, the guides under docs/ and the man pages stays true:
//! YAML blocks parse (rules files through `portctl check -`, configurations through the
//! same parser `portd --check` uses), and every `portctl` and `portd` command line in a
//! code block parses with the real binaries (each is run with `--help` appended, so clap
//! checks the command, every flag and every value it was given, and nothing touches a
//! daemon). Needs no root.
//!
//! Conventions the docs keep so this test can read them: in Markdown, a fenced block says
//! what it holds (`yaml`, `console`: `$ ` lines are commands and the rest is their output,
//! `sh`, `text`, `json`); an indented block is commands, or commands and output when its
//! first line starts with `$ `, or YAML. In the man pages, the `.nf` blocks of EXAMPLES
//! and STOP AND REMOVE are commands, and a block whose first line is a YAML key of
//! portd's files is YAML.
//!
//! doc_run.rs runs the examples of the README and the man pages against a real portd, as
//! the `doc-test:` notes before their blocks say (described there).

use portd_tests::bin;

mod doc_common;
use doc_common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const OPERATORS: [&str; 8] = ["&&", "||", "|", ";", ">", ">>", "<", "2>"];

/// `portctl` or `portd`, bare or as a binary's path (`/usr/bin/portd`,
/// `target/release/portctl`); not a directory such as `/var/lib/portd`.
fn is_program(word: &str) -> bool {
    let name = word.rsplit('/').next().unwrap_or(word);
    (name == "portctl" || name == "portd")
        && (word == name || ["bin/", "release/", "debug/"].iter().any(|d| word.ends_with(&format!("{d}{name}"))))
}

/// The `portctl`/`portd` invocations of one command line: each runs from the program's
/// word, where a command starts (the line's start, after a shell operator, after
/// `runuser ... --`, `sudo`, cron's user field or an environment assignment), to the
/// next shell operator. `journalctl -u portd` names a unit, not a command.
fn invocations(line: &str) -> Vec<Vec<String>> {
    let w = words(line);
    let mut out = Vec::new();
    let mut i = 0;
    while i < w.len() {
        let at_start = i == 0
            || OPERATORS.contains(&w[i - 1].as_str())
            || ["--", "sudo", "exec", "root", "nice"].contains(&w[i - 1].as_str())
            || (w[i - 1].contains('=') && !w[i - 1].starts_with('-'));
        if at_start && is_program(&w[i]) {
            let end = (i + 1..w.len()).find(|&j| OPERATORS.contains(&w[j].as_str())).unwrap_or(w.len());
            let prog = if w[i].ends_with("portctl") { "portctl" } else { "portd" };
            let mut cmd = vec![prog.to_string()];
            cmd.extend(w[i + 1..end].iter().cloned());
            out.push(cmd);
            i = end;
        }
        i += 1;
    }
    out
}

/// The user names the docs use as placeholders do not exist on a test machine, and
/// portctl checks `--owner` against the account database while parsing: they stand for
/// root here.
fn with_existing_owner(mut cmd: Vec<String>) -> Vec<String> {
    for i in 1..cmd.len() {
        if cmd[i - 1] == "--owner" {
            let placeholder = ["web", "user:web", "api", "user:api"];
            if placeholder.contains(&cmd[i].as_str()) {
                cmd[i] = if cmd[i].starts_with("user:") { "user:root".into() } else { "root".into() };
            }
        }
    }
    cmd
}

/// Runs `cmd --help`: clap parses everything before `--help` (commands, flags, values)
/// and exits 0 only when all of it is valid.
fn parses(cmd: &[String]) -> Result<(), String> {
    let cmd = with_existing_owner(cmd.to_vec());
    let o = Command::new(bin(&cmd[0]))
        .args(&cmd[1..])
        .arg("--help")
        .env("PORTD_SOCKET", "/nonexistent/portd.sock")
        .stdin(Stdio::null())
        .output()
        .expect("run");
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` does not parse: {}", cmd.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

fn check_yaml(b: &Block) -> Result<(), String> {
    let text = if b.text.lines().any(|l| l.starts_with("version:")) {
        b.text.clone()
    } else {
        format!("version: 1\n{}\n", b.text)
    };
    let config = text.lines().any(|l| l.starts_with("settings:") || l.starts_with("grants:"));
    if config {
        portd_rules::parse_config(&format!("{}:{}", b.file, b.line), &text)
            .map(|_| ())
            .map_err(|d| format!("configuration block does not parse:\n{d}\n{text}"))
    } else {
        let mut child = Command::new(bin("portctl"))
            .args(["check", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("portctl check");
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
        let o = child.wait_with_output().expect("portctl check");
        if o.status.success() {
            Ok(())
        } else {
            Err(format!("rules block refused by `portctl check -`:\n{}\n{text}", String::from_utf8_lossy(&o.stderr)))
        }
    }
}

fn command_lines(b: &Block) -> Vec<String> {
    match b.kind {
        Kind::Commands => b.text.lines().map(String::from).collect(),
        Kind::Console => b.text.lines().filter_map(|l| l.strip_prefix("$ ")).map(String::from).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn every_yaml_example_parses() {
    let blocks = all_blocks();
    let yaml: Vec<&Block> = blocks.iter().filter(|b| b.kind == Kind::Yaml).collect();
    let failures: Vec<String> =
        yaml.iter().filter_map(|b| check_yaml(b).err().map(|e| format!("{}:{}: {e}", b.file, b.line))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for file in ["README.md", "man/portd.yaml.5", "man/portctl.1"] {
        assert!(yaml.iter().any(|b| b.file == file), "no YAML example found in {file}: the reader changed?");
    }
    eprintln!("{} YAML examples parse", yaml.len());
}

#[test]
fn every_command_example_names_existing_commands_and_flags() {
    let blocks = all_blocks();
    let mut checked = 0;
    let mut failures = Vec::new();
    for b in &blocks {
        for line in command_lines(b) {
            for cmd in invocations(&line) {
                checked += 1;
                if let Err(e) = parses(&cmd) {
                    failures.push(format!("{}:{}: {e}", b.file, b.line));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked >= 30, "only {checked} command lines found: the reader changed?");
    eprintln!("{checked} portctl/portd command lines parse");
}

/// The reader finds what the docs hold, and a broken example is caught.
#[test]
fn the_reader_catches_a_wrong_flag_and_a_bad_yaml_field() {
    assert_eq!(
        invocations("systemctl stop portd.socket portd.service && portd --remove-table   # stop"),
        vec![vec!["portd".to_string(), "--remove-table".into()]]
    );
    assert_eq!(
        invocations("* * * * * root portctl metrics > /tmp/x.$$ && mv /tmp/x.$$ /tmp/y"),
        vec![vec!["portctl".to_string(), "metrics".into()]]
    );
    assert!(invocations("journalctl -u portd PORTD_OWNER=user:web").is_empty());
    assert_eq!(
        words("portctl add x 80 8080 --description 'a b'  # note"),
        ["portctl", "add", "x", "80", "8080", "--description", "a b"]
    );
    assert!(parses(&["portctl".into(), "status".into(), "--port".into(), "80".into()]).is_ok());
    assert!(parses(&["portctl".into(), "status".into(), "--ports".into(), "80".into()]).is_err());
    assert!(parses(&["portd".into(), "--bpffs".into(), "/sys/fs/bpf".into()]).is_ok());
    let bad = Block {
        file: "t".into(),
        line: 1,
        kind: Kind::Yaml,
        text: "forwards:\n  - name: http\n    prot: 80\n    to: 8080".into(),
        note: None,
        section: String::new(),
    };
    assert!(check_yaml(&bad).is_err());
    let bad = Block {
        file: "t".into(),
        line: 1,
        kind: Kind::Yaml,
        text: "settings:\n  dispatch: fast".into(),
        note: None,
        section: String::new(),
    };
    assert!(check_yaml(&bad).is_err());
}

/// Every relative link of the README and the guides names a file of the repository, and
/// every `#anchor` a heading of that file (GitHub's slugs).
#[test]
fn links_between_the_docs_resolve() {
    fn slug(heading: &str) -> String {
        heading
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                'a'..='z' | '0'..='9' | '-' | '_' => Some(c),
                ' ' => Some('-'),
                _ => None,
            })
            .collect()
    }
    let mut failures = Vec::new();
    for md in [
        "README.md",
        "docs/operations.md",
        "docs/security.md",
        "docs/internals.md",
        "docs/reliability.md",
        "bench/ANALYSIS.md",
    ] {
        let text = read(md);
        let dir = Path::new(md).parent().unwrap_or(Path::new(""));
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(i) = rest.find("](") {
                let after = &rest[i + 2..];
                let Some(end) = after.find(')') else { break };
                let target = &after[..end];
                rest = &after[end..];
                if target.starts_with("http") || target.is_empty() {
                    continue;
                }
                let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
                let file = if path.is_empty() { PathBuf::from(md) } else { dir.join(path) };
                let Ok(content) = std::fs::read_to_string(root().join(&file)) else {
                    failures.push(format!("{md}:{}: `{target}`: no file {}", n + 1, file.display()));
                    continue;
                };
                if !anchor.is_empty()
                    && !content
                        .lines()
                        .filter_map(|l| l.strip_prefix('#'))
                        .any(|h| slug(h.trim_start_matches('#')) == anchor)
                {
                    failures.push(format!("{md}:{}: `{target}`: no heading #{anchor} in {}", n + 1, file.display()));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
