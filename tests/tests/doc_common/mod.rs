//! Reading the code blocks of the README, the guides and the man pages, for the tests that
//! check and run them (doc_examples.rs, doc_run.rs). The conventions are described in
//! doc_examples.rs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// What a code block holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Yaml,
    /// Every line a command.
    Commands,
    /// `$ ` lines are commands, the others output.
    Console,
    Skip,
}

#[derive(Debug)]
pub struct Block {
    pub file: String,
    pub line: usize,
    pub kind: Kind,
    pub text: String,
    /// The `doc-test:` note right before the block (`<!-- doc-test: ... -->` in
    /// Markdown, `.\" doc-test: ...` in roff, one line each), without its markers.
    pub note: Option<String>,
    /// The man page section the block is in (empty in Markdown).
    pub section: String,
}

/// The note of a Markdown line, `<!-- doc-test: NOTE -->`.
fn md_note(line: &str) -> Option<String> {
    let body = line.trim().strip_prefix("<!-- doc-test:")?.strip_suffix("-->")?;
    Some(body.trim().to_string())
}

/// The note right before line `i` of a Markdown file (blank lines between allowed).
fn md_note_before(lines: &[&str], i: usize) -> Option<String> {
    lines[..i].iter().rev().find(|l| !l.trim().is_empty()).and_then(|l| md_note(l))
}

pub const YAML_KEYS: [&str; 4] = ["version:", "settings:", "grants:", "forwards:"];

pub fn looks_like_yaml(text: &str) -> bool {
    text.lines().find(|l| !l.trim().is_empty()).is_some_and(|l| YAML_KEYS.iter().any(|k| l.starts_with(k)))
}

/// Code blocks of a Markdown file: fenced ones by their info string, indented ones
/// (four spaces after a blank line, outside lists) by their content.
pub fn markdown_blocks(file: &str) -> Vec<Block> {
    let text = read(file);
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if let Some(info) = l.strip_prefix("```") {
            let kind = match info.trim() {
                "yaml" => Kind::Yaml,
                "console" => Kind::Console,
                "sh" | "bash" => Kind::Commands,
                "text" | "json" => Kind::Skip,
                other => panic!(
                    "{file}:{}: a fenced block must say what it holds (yaml, console, sh, text, json), not `{other}`",
                    i + 1
                ),
            };
            let start = i + 1;
            let note = md_note_before(&lines, i);
            i += 1;
            while i < lines.len() && !lines[i].starts_with("```") {
                i += 1;
            }
            let text = lines[start..i].join("\n");
            blocks.push(Block { file: file.into(), line: start + 1, kind, text, note, section: String::new() });
            i += 1;
            continue;
        }
        let after_blank = i == 0 || lines[i - 1].trim().is_empty();
        if after_blank && l.starts_with("    ") && !l.trim().is_empty() {
            let start = i;
            let mut body = Vec::new();
            while i < lines.len() && (lines[i].starts_with("    ") || lines[i].trim().is_empty()) {
                body.push(lines[i].get(4..).unwrap_or(""));
                i += 1;
            }
            let text = body.join("\n").trim_end().to_string();
            let kind = if looks_like_yaml(&text) {
                Kind::Yaml
            } else if text.starts_with("$ ") {
                Kind::Console
            } else {
                Kind::Commands
            };
            let note = md_note_before(&lines, start);
            blocks.push(Block { file: file.into(), line: start + 1, kind, text, note, section: String::new() });
            continue;
        }
        i += 1;
    }
    blocks
}

/// Roff text as it renders: escapes resolved.
pub fn unroff(s: &str) -> String {
    s.replace("\\-", "-")
        .replace("\\(dq", "\"")
        .replace("\\(en", "-")
        .replace("\\&", "")
        .replace("\\ ", " ")
        .replace("\\e", "\\")
}

/// The `.nf` … `.fi` blocks of a man page with the section each is in.
pub fn man_blocks(file: &str) -> Vec<Block> {
    let text = read(file);
    let mut blocks = Vec::new();
    let mut section = String::new();
    let mut current: Option<(usize, Vec<String>)> = None;
    let mut note: Option<String> = None;
    for (n, l) in text.lines().enumerate() {
        if let Some(s) = l.strip_prefix(".SH ") {
            section = s.trim_matches('"').to_string();
            note = None;
        }
        if let Some(t) = l.strip_prefix(".\\\" doc-test:") {
            // Several note lines before one block make one note, a line each.
            let mut all = note.take().map(|n| n + "\n").unwrap_or_default();
            all.push_str(t.trim());
            note = Some(all);
        }
        match (&mut current, l) {
            (None, ".nf") => current = Some((n + 2, Vec::new())),
            (Some(_), ".fi") => {
                let (line, body) = current.take().expect("open block");
                let text = body.join("\n");
                let kind = if looks_like_yaml(&text) {
                    Kind::Yaml
                } else if section == "EXAMPLES" || section == "STOP AND REMOVE" {
                    Kind::Commands
                } else {
                    Kind::Skip
                };
                blocks.push(Block { file: file.into(), line, kind, text, note: note.take(), section: section.clone() });
            }
            (Some((_, body)), l) if !l.starts_with('.') => body.push(unroff(l)),
            _ => {}
        }
    }
    assert!(current.is_none(), "{file}: an .nf block is not closed");
    blocks
}

/// Splits a shell line into words, honouring single and double quotes; stops at a
/// comment.
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, '#') if cur.is_empty() && !any => break,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() || any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() || any {
        out.push(cur);
    }
    out
}

pub fn all_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    for md in ["README.md", "docs/operations.md", "docs/security.md", "docs/internals.md", "docs/reliability.md"] {
        blocks.extend(markdown_blocks(md));
    }
    for man in ["man/portctl.1", "man/portd.8", "man/portd.yaml.5"] {
        blocks.extend(man_blocks(man));
    }
    blocks
}
