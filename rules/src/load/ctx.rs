//! The walk's context: where a problem is (`Place`), the located diagnostics it collects
//! (`Ctx`), the document's root, unknown-field hints, and typed getters of YAML nodes.

use super::suggest::suggest;
use super::tree::{Map, Node};
use super::MAX_FILE_BYTES;
use crate::diag::{Diagnostic, Diagnostics};
use crate::locate::Locator;
use crate::model::PortRange;

/// Where in the file a problem is: the path a diagnostic names.
pub(super) trait Place {
    fn path(&self) -> String;
    /// The path of field `key` below this place.
    fn child(&self, key: &str) -> String {
        join(&self.path(), key)
    }
}

impl Place for str {
    fn path(&self) -> String {
        self.to_string()
    }
}

impl Place for String {
    fn path(&self) -> String {
        self.clone()
    }
}

/// Item `index` of the list at `list`, such as a forward (`forwards[3]`).
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub(super) list: &'a str,
    pub(super) index: usize,
}

/// Field `key` of an item (`forwards[3].port`).
pub(super) struct Field<'a>(pub(super) At<'a>, pub(super) &'a str);

/// Entry `index` of the list in field `key` of an item (`forwards[3].sources[1]`).
pub(super) struct Item<'a>(pub(super) At<'a>, pub(super) &'a str, pub(super) usize);

impl Place for At<'_> {
    fn path(&self) -> String {
        format!("{}[{}]", self.list, self.index)
    }
}

impl Place for Field<'_> {
    fn path(&self) -> String {
        format!("{}[{}].{}", self.0.list, self.0.index, self.1)
    }
}

impl Place for Item<'_> {
    fn path(&self) -> String {
        format!("{}[{}].{}[{}]", self.0.list, self.0.index, self.1, self.2)
    }
}

pub(super) struct Ctx<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    /// Built on the first problem: a valid file is parsed once, not twice.
    pub(super) loc: std::cell::OnceCell<Locator>,
    pub(super) diags: Vec<Diagnostic>,
    /// Problems found beyond [`MAX_DIAGNOSTICS`]: counted, not kept.
    pub(super) more: usize,
}

impl Ctx<'_> {
    pub(super) fn loc(&self) -> &Locator {
        self.loc.get_or_init(|| Locator::new(self.text))
    }
    /// True once [`MAX_DIAGNOSTICS`] problems are kept: further ones are only counted,
    /// so a file of many mistakes costs neither memory nor locating time per mistake.
    pub(super) fn full(&mut self) -> bool {
        if self.diags.len() < MAX_DIAGNOSTICS {
            return false;
        }
        self.more += 1;
        true
    }
    pub(super) fn err<P: Place + ?Sized>(&mut self, place: &P, message: impl Into<String>) {
        if self.full() {
            return;
        }
        let path = place.path();
        let (line, column) = self.loc().value(&path);
        self.push(path, line, column, message.into());
    }
    pub(super) fn err_key(&mut self, path: String, message: impl Into<String>) {
        if self.full() {
            return;
        }
        let (line, column) = self.loc().key(&path);
        self.push(path, line, column, message.into());
    }
    pub(super) fn push(&mut self, path: String, line: usize, column: usize, message: String) {
        // A path names keys of the file and a message may quote the parser: both are cut,
        // so what a diagnostic holds does not grow with the file.
        let path = crate::diag::bounded(path, MAX_PATH_CHARS);
        let message = crate::diag::bounded(message, MAX_MESSAGE_CHARS);
        self.diags.push(Diagnostic { file: self.file.to_string(), line, column, path, message });
    }
    pub(super) fn finish<T>(mut self, v: T) -> Result<T, Diagnostics> {
        if self.diags.is_empty() {
            Ok(v)
        } else {
            self.diags.sort_by_key(|d| (d.line, d.column));
            if self.more > 0 {
                self.diags.push(Diagnostic {
                    file: self.file.to_string(),
                    line: 0,
                    column: 0,
                    path: String::new(),
                    message: format!("… and {} more problem(s) not listed; fix these first", thousands(self.more)),
                });
            }
            Err(Diagnostics(self.diags))
        }
    }
}

/// Most problems of one file that are listed; the rest are counted in a last line.
pub const MAX_DIAGNOSTICS: usize = 100;

/// Longest field path a diagnostic names, in characters.
pub(super) const MAX_PATH_CHARS: usize = 200;
/// Longest message of a diagnostic, in characters.
pub(super) const MAX_MESSAGE_CHARS: usize = 500;

/// `2480` as `2,480`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A value from the file as a message quotes it: at most 64 characters, control
/// characters escaped, so a refusal never copies a file into an answer or the log.
pub fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect::<String>().escape_debug().to_string();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

pub(super) fn describe(v: &Node) -> String {
    match v {
        Node::Null => "null".into(),
        Node::Bool(b) => format!("boolean {b}"),
        Node::Number(n) => format!("number {n}"),
        Node::String(s) => format!("string \"{}\"", clip(s)),
        Node::Sequence(_) => "a list".into(),
        Node::Mapping(_) => "a mapping".into(),
        Node::Tagged(t) => format!("tagged value {}", t.0),
    }
}

/// Parses the document and checks its size; returns the root or the located syntax error.
pub(super) fn parse_root<'t>(file: &str, text: &'t str) -> Result<(Node<'t>, Ctx<'t>), Diagnostics> {
    let one = |line: usize, column: usize, message: String| {
        Diagnostics(vec![Diagnostic { file: file.to_string(), line, column, path: String::new(), message }])
    };
    if text.len() > MAX_FILE_BYTES {
        return Err(one(
            0,
            0,
            format!(
                "file is {:.1} MiB; the limit is {} MiB: split it or remove unused entries",
                text.len() as f64 / 1048576.0,
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    if let Err((line, message)) = crate::shape::check_shape(text) {
        return Err(one(line, 1, message));
    }
    if let Some(r) = super::aliases::refused(text) {
        return Err(one(r.line, r.column, r.message));
    }
    let root: Node = match super::tree::parse(text) {
        Ok(v) => v,
        Err(e) => {
            let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
            let msg = e.to_string();
            let msg = match msg.find(" at line ") {
                Some(i) => msg[..i].to_string(),
                None => msg,
            };
            if let Some((line, column)) = tab_indent(text, line) {
                return Err(one(
                    line,
                    column,
                    "YAML does not allow tabs for indentation: this line is indented with a tab; indent with spaces"
                        .into(),
                ));
            }
            let msg = if msg.contains(super::tree::TOO_MANY_NODES) {
                msg
            } else if msg.contains("repetition limit") || msg.contains("recursion limit") {
                format!("{msg}: YAML aliases expand beyond a sane size; write the entries out")
            } else if msg.starts_with("mapping values are not allowed") {
                format!(
                    "likely wrong indentation at line {line}: a `key: value` cannot start here; indent the keys of one mapping (one forward, one grant) alike, under the first key after `- `, or quote a value that contains `: `"
                )
            } else if msg.starts_with("did not find expected key")
                || msg.starts_with("did not find expected '-' indicator")
                || msg.starts_with("block sequence entries are not allowed")
            {
                format!(
                    "likely wrong indentation at line {line}: this line does not line up with the keys or list items above it; indent the keys of one mapping alike, and each `- ` of a list alike"
                )
            } else {
                msg
            };
            return Err(one(line, column, msg));
        }
    };
    let ctx = Ctx { file: "", text, loc: std::cell::OnceCell::new(), diags: Vec::new(), more: 0 };
    Ok((root, ctx))
}

/// The first line up to `until` (1-based; 0: any) whose indentation holds a tab, and the
/// tab's column: a tab there is never valid YAML, and the parser says so obscurely.
pub(super) fn tab_indent(text: &str, until: usize) -> Option<(usize, usize)> {
    let limit = if until == 0 { usize::MAX } else { until };
    text.lines().take(limit).enumerate().find_map(|(i, l)| {
        let indent = &l[..l.len() - l.trim_start_matches([' ', '\t']).len()];
        let rest = &l[indent.len()..];
        // A line of blanks only, or a comment, may hold tabs.
        if rest.is_empty() || rest.starts_with('#') {
            return None;
        }
        indent.find('\t').map(|c| (i + 1, c + 1))
    })
}

pub(super) fn root_mapping<'n, 't>(ctx: &mut Ctx, root: &'n Node<'t>, allowed: &[&str]) -> Option<&'n Map<'t>> {
    let Some(m) = root.as_mapping() else {
        ctx.err("", format!("expected a mapping with `version: 1`, found {}", describe(root)));
        return None;
    };
    check_keys(ctx, "", m, allowed);
    match m.get("version") {
        None => ctx.err("", "missing `version: 1`"),
        Some(Node::Number(n)) if n.as_u64() == Some(1) => {}
        Some(v) => ctx.err("version", format!("unsupported version {}; this portd reads version 1", describe(v))),
    }
    Some(m)
}

pub(super) fn check_keys<P: Place + ?Sized>(ctx: &mut Ctx, place: &P, m: &Map, allowed: &[&str]) {
    check_fields(ctx, place, m, allowed, |_, _| {});
}

/// Reports the keys of `m` that are not in `allowed`, and hands `found` each allowed
/// field's index in `allowed` and value, as [`Map::get`] would find it: one pass over the
/// mapping instead of one lookup per field.
pub(super) fn check_fields<'n, 't, P: Place + ?Sized>(
    ctx: &mut Ctx,
    place: &P,
    m: &'n Map<'t>,
    allowed: &[&str],
    mut found: impl FnMut(usize, &'n Node<'t>),
) {
    for (key, value) in m.entries() {
        match key.as_str() {
            Some(k) => match allowed.iter().position(|a| *a == k) {
                // `as_str` looks through tags, lookups by name do not.
                Some(i) if matches!(key, Node::String(_)) => found(i, value),
                Some(_) => {}
                None => {
                    let hint = suggest(allowed, k)
                        .map(|a| format!("; did you mean `{a}`?"))
                        .unwrap_or_else(|| format!("; expected one of: {}", allowed.join(", ")));
                    ctx.err_key(place.child(k), format!("unknown field `{}`{hint}", clip(k)));
                }
            },
            None => ctx.err(place, format!("field names must be strings, found {}", describe(key))),
        }
    }
}

pub(super) fn get_str<'n, P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &'n Node) -> Option<&'n str> {
    match v {
        Node::String(s) => Some(s),
        other => {
            ctx.err(place, format!("expected a string, found {}", describe(other)));
            None
        }
    }
}

pub(super) fn get_bool<P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &Node) -> Option<bool> {
    match v {
        Node::Bool(b) => Some(*b),
        other => {
            ctx.err(place, format!("expected true or false, found {}", describe(other)));
            None
        }
    }
}

pub(super) fn get_u32<P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &Node) -> Option<u32> {
    let parsed = match v {
        Node::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Node::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            }
        }
        _ => None,
    };
    if parsed.is_none() {
        ctx.err(place, format!("{} is not a 32-bit mark (0 to 0xffffffff)", describe(v)));
    }
    parsed
}

pub(super) fn get_ports<P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &Node) -> Option<PortRange> {
    let parsed = match v {
        // A port as a number is the common case: no detour through its text.
        Node::Number(n) => match n.as_u64() {
            Some(p @ 1..=65535) => Ok(PortRange::single(p as u16)),
            _ => PortRange::parse(&n.to_string()),
        },
        Node::String(s) => PortRange::parse(s),
        other => {
            ctx.err(place, format!("expected a port (80) or a range (\"8000-8099\"), found {}", describe(other)));
            return None;
        }
    };
    match parsed {
        Ok(r) => Some(r),
        Err(e) => {
            ctx.err(place, e);
            None
        }
    }
}

pub(super) fn get_list<'n, 't, P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &'n Node<'t>) -> &'n [Node<'t>] {
    match v {
        Node::Sequence(s) => s,
        Node::Null => &[],
        other => {
            ctx.err(place, format!("expected a list, found {}", describe(other)));
            &[]
        }
    }
}
