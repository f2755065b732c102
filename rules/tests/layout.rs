//! The shape of the workspace's source: files sized to one idea. Reads the tree only.

use std::path::{Path, PathBuf};

/// Longest a source file of the workspace may be, in lines.
const MAX_LINES: usize = 700;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace holds rules/").to_path_buf()
}

/// Every `.rs` file below `dir`, build output and hidden directories left out.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        if path.is_dir() {
            sources(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_longer_than_700_lines() {
    let root = workspace();
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(files.len() > 50, "found only {} source files under {}", files.len(), root.display());
    let mut long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.strip_prefix(&root).unwrap_or(f).display()))
        })
        .collect();
    long.sort();
    assert!(long.is_empty(), "split these along their ideas (at most {MAX_LINES} lines each): {long:?}");
}

/// True when the text holds unsafe code (not the word in a comment or a lint name).
fn has_unsafe(text: &str) -> bool {
    text.lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with("//"))
        .any(|l| ["unsafe {", "unsafe fn", "unsafe impl", "unsafe extern"].iter().any(|u| l.contains(u)))
}

/// Every source file of the crates' `src/` without unsafe code forbids it, itself or
/// through its crate root, so unsafe stays where docs/ARCHITECTURE.md says it is.
#[test]
fn every_module_without_unsafe_forbids_it() {
    let root = workspace();
    let mut missing = Vec::new();
    for krate in ["rules", "kernel", "daemon", "ctl"] {
        let src = root.join(krate).join("src");
        let crate_forbids = ["lib.rs", "main.rs"]
            .iter()
            .any(|r| std::fs::read_to_string(src.join(r)).is_ok_and(|t| t.contains("#![forbid(unsafe_code)]")));
        let mut files = Vec::new();
        sources(&src, &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !crate_forbids && !has_unsafe(&text) && !text.contains("#![forbid(unsafe_code)]") {
                missing.push(f.strip_prefix(&root).unwrap_or(&f).display().to_string());
            }
        }
    }
    // A module declaring others (mod.rs, lib.rs) may not forbid what its children need.
    missing.retain(|f| !f.ends_with("/mod.rs") && !f.ends_with("/lib.rs"));
    missing.sort();
    assert!(missing.is_empty(), "add #![forbid(unsafe_code)] to: {missing:?}");
}

/// True when a line of code (not a comment) names `word` as a whole identifier.
fn names(text: &str, word: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.lines().map(str::trim_start).filter(|l| !l.starts_with("//")).any(|l| {
        l.match_indices(word).any(|(at, _)| !l[..at].ends_with(ident) && !l[at + word.len()..].starts_with(ident))
    })
}

/// The actor takes its own requests and answers with its own error type; only the
/// server reads wire requests and makes wire answers of the actor's (docs/ARCHITECTURE.md).
#[test]
fn the_actor_neither_takes_nor_makes_wire_messages() {
    let dir = workspace().join("daemon").join("src").join("actor");
    let mut files = Vec::new();
    sources(&dir, &mut files);
    assert!(files.len() > 5, "found only {} files under {}", files.len(), dir.display());
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        for word in ["Command", "Response", "Outcome"] {
            if names(&text, word) {
                found.push(format!("{} names {word}", f.display()));
            }
        }
    }
    assert!(found.is_empty(), "the server converts between the wire and the actor: {found:?}");
    assert!(names("use x::{Command, Body};", "Command") && !names("// a Command", "Command"));
    assert!(!names("CommandFactory", "Command"));
}
