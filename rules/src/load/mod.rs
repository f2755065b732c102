//! Parsing and validation of rules files and the daemon config.
//!
//! The text is parsed once by serde_yaml into a compact tree (`load/tree.rs`: what a
//! `serde_yaml::Value` holds, built by the same deserializer; syntax errors come back
//! located, alias expansion is bounded by serde_yaml), then walked field by field so
//! that every problem is reported at once, each located through `Locator`. Paths of
//! fields (`forwards[3].port`) are only spelled out when a problem is reported.

mod aliases;
mod config;
mod ctx;
mod forward;
mod suggest;
#[cfg(test)]
mod tests;
mod tree;

use crate::diag::{Diagnostic, Diagnostics};
use crate::locate::Locator;
use crate::model::{Config, RulesFile};
pub use crate::owner::valid_user;
pub use crate::shape::{MAX_DEPTH, MAX_NODES};
pub use crate::validate::{description_problem, valid_ifname, valid_name};
pub use aliases::ALIAS_WEIGHT;
pub use ctx::{clip, thousands, MAX_DIAGNOSTICS};
use ctx::{parse_root, root_mapping, Ctx};
pub use tree::ALIAS_NODES;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

pub(super) const RULES_FIELDS: &[&str] = &["version", "forwards"];
pub(super) const CONFIG_FIELDS: &[&str] = &["version", "settings", "grants", "forwards"];

/// Bytes of memory parsing one YAML node may take at most (serde_yaml's event, the tree's
/// node, a key's hash entry); measured at 170 to 400 bytes per node counted by the shape
/// pass, for lists, forwards and flat mappings of 100,000 to 600,000 nodes.
pub const PARSE_BYTES_PER_NODE: usize = 512;

/// What parsing `text` may cost in memory at most, in bytes, from one linear pass that
/// allocates nothing: a caller can refuse a file before the parser allocates for it. A
/// file whose shape is refused costs its length (the parser never sees it). A text with
/// a `*` may hold aliases, which add at most [`ALIAS_WEIGHT`] (about a byte of memory
/// each) to the tree and as much again to the copies taken from it.
pub fn parse_cost(text: &str) -> usize {
    let nodes = crate::shape::check_shape(text).unwrap_or(0);
    let aliases = if text.contains('*') { 2 * ALIAS_WEIGHT as usize } else { 0 };
    text.len().saturating_add(nodes.saturating_mul(PARSE_BYTES_PER_NODE)).saturating_add(aliases)
}

/// For the fuzz target: `None` when the loader's compact tree of `text` agrees with
/// serde_yaml's `Value` of it, else how they differ. Texts whose shape the loader
/// refuses never reach the parser, and are `None` here too.
#[doc(hidden)]
pub fn tree_differs_from_value(text: &str) -> Option<String> {
    crate::shape::check_shape(text).ok()?;
    tree::differs_from_value(text)
}

/// Parses and validates a rules file. `file` names it in diagnostics.
pub fn parse_rules(file: &str, text: &str) -> Result<RulesFile, Diagnostics> {
    let (root, ctx) = parse_root(file, text)?;
    let mut ctx = Ctx { file, ..ctx };
    let Some(m) = root_mapping(&mut ctx, &root, RULES_FIELDS) else {
        return ctx.finish(RulesFile { version: 1, forwards: vec![] });
    };
    let fw = forward::forwards(&mut ctx, "forwards", m.get("forwards"));
    ctx.finish(RulesFile { version: 1, forwards: fw })
}

/// Parses and validates the daemon config. `file` names it in diagnostics.
pub fn parse_config(file: &str, text: &str) -> Result<Config, Diagnostics> {
    let (root, ctx) = parse_root(file, text)?;
    let mut ctx = Ctx { file, ..ctx };
    let Some(m) = root_mapping(&mut ctx, &root, CONFIG_FIELDS) else {
        return ctx.finish(Config::default());
    };
    let settings = config::settings(&mut ctx, m.get("settings"));
    let grants = config::grants(&mut ctx, m.get("grants"));
    let forwards = forward::forwards(&mut ctx, "forwards", m.get("forwards"));
    ctx.finish(Config { version: 1, settings, grants, forwards })
}

/// True when `text` writes the field at `path` (`settings.socket.group`) itself, rather
/// than leaving it to its default.
pub fn writes(text: &str, path: &str) -> bool {
    Locator::new(text).has_key(path)
}

/// Locates problems found outside the parser (`(field path, message)`, such as a grant
/// naming an account the host does not have) in `text`, as the parser's own are.
pub fn locate(file: &str, text: &str, problems: Vec<(String, String)>) -> Diagnostics {
    if problems.is_empty() {
        return Diagnostics::default();
    }
    let loc = crate::locate::Locator::new(text);
    Diagnostics(
        problems
            .into_iter()
            .map(|(path, message)| {
                let (line, column) = loc.value(&path);
                Diagnostic { file: file.to_string(), line, column, path, message }
            })
            .collect(),
    )
}
