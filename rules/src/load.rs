//! Parsing and validation of rules files and the daemon config.
//!
//! The text is parsed once by serde_yaml into a compact tree (`load/tree.rs`: what a
//! `serde_yaml::Value` holds, built by the same deserializer; syntax errors come back
//! located, alias expansion is bounded by serde_yaml), then walked field by field so
//! that every problem is reported at once, each located through `Locator`. Paths of
//! fields (`forwards[3].port`) are only spelled out when a problem is reported.

mod tree;

use crate::budget::{DEFAULT_MAX_ELEMENTS, DEFAULT_MAX_SOURCE_ELEMENTS};
use crate::diag::{Diagnostic, Diagnostics};
use crate::locate::Locator;
use crate::model::*;
pub use crate::shape::{MAX_DEPTH, MAX_NODES};
use ipnet::IpNet;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use tree::{Map, Node};

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

const RULES_FIELDS: &[&str] = &["version", "forwards"];
const CONFIG_FIELDS: &[&str] = &["version", "settings", "grants", "forwards"];
const SETTINGS_FIELDS: &[&str] =
    &["table", "mark", "on_exit", "socket", "state_dir", "listener_check", "dispatch", "ownership", "metrics"];
const SOCKET_FIELDS: &[&str] = &["path", "group", "mode"];
const METRICS_FIELDS: &[&str] = &["listen", "allow"];
const GRANT_FIELDS: &[&str] = &[
    "user",
    "group",
    "ports",
    "to",
    "protect",
    "local",
    "marks",
    "max_forwards",
    "max_elements",
    "max_source_elements",
];
const FORWARD_FIELDS: &[&str] =
    &["name", "port", "to", "proto", "family", "local", "interfaces", "sources", "mark", "protect", "description"];
// Indices into FORWARD_FIELDS.
const NAME: usize = 0;
const PORT: usize = 1;
const TO: usize = 2;
const PROTO: usize = 3;
const FAMILY: usize = 4;
const LOCAL: usize = 5;
const INTERFACES: usize = 6;
const SOURCES: usize = 7;
const MARK: usize = 8;
const PROTECT: usize = 9;
const DESCRIPTION: usize = 10;

/// Lists up to this long are checked for repeated entries by a scan, longer ones by hashing.
const SCAN_ITEMS: usize = 16;

/// Where in the file a problem is: the path a diagnostic names.
trait Place {
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
struct At<'a> {
    list: &'a str,
    index: usize,
}

/// Field `key` of an item (`forwards[3].port`).
struct Field<'a>(At<'a>, &'a str);

/// Entry `index` of the list in field `key` of an item (`forwards[3].sources[1]`).
struct Item<'a>(At<'a>, &'a str, usize);

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

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    /// Built on the first problem: a valid file is parsed once, not twice.
    loc: std::cell::OnceCell<Locator>,
    diags: Vec<Diagnostic>,
    /// Problems found beyond [`MAX_DIAGNOSTICS`]: counted, not kept.
    more: usize,
}

impl Ctx<'_> {
    fn loc(&self) -> &Locator {
        self.loc.get_or_init(|| Locator::new(self.text))
    }
    /// True once [`MAX_DIAGNOSTICS`] problems are kept: further ones are only counted,
    /// so a file of many mistakes costs neither memory nor locating time per mistake.
    fn full(&mut self) -> bool {
        if self.diags.len() < MAX_DIAGNOSTICS {
            return false;
        }
        self.more += 1;
        true
    }
    fn err<P: Place + ?Sized>(&mut self, place: &P, message: impl Into<String>) {
        if self.full() {
            return;
        }
        let path = place.path();
        let (line, column) = self.loc().value(&path);
        self.push(path, line, column, message.into());
    }
    fn err_key(&mut self, path: String, message: impl Into<String>) {
        if self.full() {
            return;
        }
        let (line, column) = self.loc().key(&path);
        self.push(path, line, column, message.into());
    }
    fn push(&mut self, path: String, line: usize, column: usize, message: String) {
        // A path names keys of the file and a message may quote the parser: both are cut,
        // so what a diagnostic holds does not grow with the file.
        let path = crate::diag::bounded(path, MAX_PATH_CHARS);
        let message = crate::diag::bounded(message, MAX_MESSAGE_CHARS);
        self.diags.push(Diagnostic { file: self.file.to_string(), line, column, path, message });
    }
    fn finish<T>(mut self, v: T) -> Result<T, Diagnostics> {
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
const MAX_PATH_CHARS: usize = 200;
/// Longest message of a diagnostic, in characters.
const MAX_MESSAGE_CHARS: usize = 500;

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

fn join(path: &str, key: &str) -> String {
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

fn describe(v: &Node) -> String {
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
fn parse_root<'t>(file: &str, text: &'t str) -> Result<(Node<'t>, Ctx<'t>), Diagnostics> {
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
    let root: Node = match serde_yaml::from_str(text) {
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
            let msg = if msg.contains("repetition limit") || msg.contains("recursion limit") {
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
fn tab_indent(text: &str, until: usize) -> Option<(usize, usize)> {
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

fn root_mapping<'n, 't>(ctx: &mut Ctx, root: &'n Node<'t>, allowed: &[&str]) -> Option<&'n Map<'t>> {
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

fn check_keys<P: Place + ?Sized>(ctx: &mut Ctx, place: &P, m: &Map, allowed: &[&str]) {
    check_fields(ctx, place, m, allowed, |_, _| {});
}

/// Reports the keys of `m` that are not in `allowed`, and hands `found` each allowed
/// field's index in `allowed` and value, as [`Map::get`] would find it: one pass over the
/// mapping instead of one lookup per field.
fn check_fields<'n, 't, P: Place + ?Sized>(
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

/// Words other tools use for a field, and the field portd calls it.
const SYNONYMS: &[(&str, &str)] = &[
    ("target", "to"),
    ("dest", "to"),
    ("destination", "to"),
    ("toport", "to"),
    ("to_port", "to"),
    ("dport", "port"),
    ("public", "port"),
    ("listen_port", "port"),
    ("protocol", "proto"),
    ("src", "sources"),
    ("saddr", "sources"),
    ("allow", "sources"),
    ("iface", "interfaces"),
    ("iif", "interfaces"),
    ("iifname", "interfaces"),
    ("dev", "interfaces"),
    ("comment", "description"),
    ("desc", "description"),
    ("fwmark", "mark"),
    ("ipv6", "family"),
    ("ipv4", "family"),
    ("users", "user"),
    ("groups", "group"),
    ("quota", "max_forwards"),
    ("limit", "max_forwards"),
    ("targets", "to"),
    ("rules", "forwards"),
    ("forward", "forwards"),
    ("grant", "grants"),
    ("setting", "settings"),
];

/// The allowed field a mistyped `k` most likely meant: the same word in other case or
/// with `-` for `_`, a word other tools use for it, the nearest by edit distance (at most
/// 1 for fields of up to 3 letters, 2 for longer ones; the first in `allowed` on a tie),
/// or a field that starts with `k` (at least 3 letters) or that `k` starts with.
fn suggest<'a>(allowed: &[&'a str], k: &str) -> Option<&'a str> {
    let norm = k.trim().to_ascii_lowercase().replace('-', "_");
    if let Some(a) = allowed.iter().find(|a| **a == norm) {
        return Some(a);
    }
    if let Some((_, f)) = SYNONYMS.iter().find(|(w, f)| *w == norm && allowed.contains(f)) {
        return allowed.iter().find(|a| *a == f).copied();
    }
    let best = allowed
        .iter()
        .map(|a| (distance(a, &norm), *a))
        .filter(|(d, a)| *d <= if a.len() <= 3 || norm.len() <= 3 { 1 } else { 2 })
        .min_by_key(|(d, _)| *d);
    if let Some((_, a)) = best {
        return Some(a);
    }
    allowed
        .iter()
        .find(|a| (norm.len() >= 3 && a.starts_with(&norm)) || (a.len() >= 3 && norm.starts_with(**a)))
        .copied()
}

/// Edit distance in which swapping two neighbouring letters (`prot` for `port`) is one
/// edit, like inserting, deleting or replacing one (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

fn get_str<'n, P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &'n Node) -> Option<&'n str> {
    match v {
        Node::String(s) => Some(s),
        other => {
            ctx.err(place, format!("expected a string, found {}", describe(other)));
            None
        }
    }
}

fn get_bool<P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &Node) -> Option<bool> {
    match v {
        Node::Bool(b) => Some(*b),
        other => {
            ctx.err(place, format!("expected true or false, found {}", describe(other)));
            None
        }
    }
}

fn get_u32<P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &Node) -> Option<u32> {
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

fn get_ports<P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &Node) -> Option<PortRange> {
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

fn get_list<'n, 't, P: Place + ?Sized>(ctx: &mut Ctx, place: &P, v: &'n Node<'t>) -> &'n [Node<'t>] {
    match v {
        Node::Sequence(s) => s,
        Node::Null => &[],
        other => {
            ctx.err(place, format!("expected a list, found {}", describe(other)));
            &[]
        }
    }
}

/// True for a valid forward or owner-set name: `[a-z0-9][a-z0-9_-]{0,31}`.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

/// True for an interface name portd accepts: 1-15 of a-z, A-Z, 0-9, '.', '_', '-', '@'
/// and '+' (what Linux accepts, minus what nft cannot print back and read again:
/// quotes, braces, spaces, control characters).
pub fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'@' | b'+'))
}

/// What is wrong with a forward's `description:`, if anything: at most
/// [`MAX_DESCRIPTION_CHARS`] characters, none of them control or format characters
/// (bidi overrides and isolates, zero-width characters) nor line or paragraph separators.
pub fn description_problem(d: &str) -> Option<String> {
    let n = d.chars().count();
    if n > MAX_DESCRIPTION_CHARS {
        return Some(format!("description has {n} characters; the limit is {MAX_DESCRIPTION_CHARS}: shorten it"));
    }
    crate::text::unprintable_problem(d).map(|p| format!("description contains {p}"))
}

/// Keeps the first of equal items, in order; scans short lists, hashes long ones.
struct Distinct<T> {
    items: Vec<T>,
    seen: HashSet<T>,
}

impl<T: Eq + std::hash::Hash + Clone> Distinct<T> {
    fn new() -> Self {
        Distinct { items: Vec::new(), seen: HashSet::new() }
    }
    /// Adds `x`; false if it was already there.
    fn insert(&mut self, x: T) -> bool {
        if self.items.len() < SCAN_ITEMS {
            if self.items.contains(&x) {
                return false;
            }
        } else {
            if self.seen.is_empty() {
                self.seen.extend(self.items.iter().cloned());
            }
            if !self.seen.insert(x.clone()) {
                return false;
            }
        }
        self.items.push(x);
        true
    }
}

fn forward(ctx: &mut Ctx, at: At, v: &Node) -> Option<Forward> {
    let Some(m) = v.as_mapping() else {
        ctx.err(&at, format!("expected a forward (a mapping with name, port, to), found {}", describe(v)));
        return None;
    };
    let mut fields = [None; FORWARD_FIELDS.len()];
    check_fields(ctx, &at, m, FORWARD_FIELDS, |i, v| fields[i] = Some(v));
    let field = |i: usize| fields[i].filter(|v: &&Node| !v.is_null());
    let mut ok = true;
    let mut need = |ctx: &mut Ctx, i: usize| {
        if field(i).is_none() {
            ctx.err(&at, format!("missing required field `{}`", FORWARD_FIELDS[i]));
            ok = false;
        }
    };
    need(ctx, NAME);
    need(ctx, PORT);
    need(ctx, TO);

    let name = field(NAME).and_then(|v| get_str(ctx, &Field(at, "name"), v));
    if let Some(n) = name {
        if !valid_name(n) {
            ctx.err(
                &Field(at, "name"),
                format!(
                    "`{}` is not a valid name: use 1-32 of a-z, 0-9, '_' or '-', starting with a letter or digit",
                    clip(n)
                ),
            );
        }
    }
    let port = field(PORT).and_then(|v| get_ports(ctx, &Field(at, "port"), v));
    let to = field(TO).and_then(|v| get_ports(ctx, &Field(at, "to"), v));
    let proto = match field(PROTO).map(|v| get_str(ctx, &Field(at, "proto"), v)) {
        None => Some(ProtoSel::Tcp),
        Some(None) => None,
        Some(Some(s)) => ProtoSel::parse(s).or_else(|| {
            ctx.err(&Field(at, "proto"), format!("unknown protocol `{}`; use tcp, udp or both", clip(s)));
            None
        }),
    };
    let family = match field(FAMILY).map(|v| get_str(ctx, &Field(at, "family"), v)) {
        None => Some(FamilySel::Both),
        Some(None) => None,
        Some(Some(s)) => FamilySel::parse(s).or_else(|| {
            ctx.err(&Field(at, "family"), format!("unknown family `{}`; use ipv4, ipv6 or both", clip(s)));
            None
        }),
    };
    let local = field(LOCAL).map_or(Some(true), |v| get_bool(ctx, &Field(at, "local"), v));
    let protect = field(PROTECT).map_or(Some(false), |v| get_bool(ctx, &Field(at, "protect"), v));
    let mark = match field(MARK) {
        None => Some(None),
        Some(v) => get_u32(ctx, &Field(at, "mark"), v).map(Some),
    };
    let description = field(DESCRIPTION).and_then(|v| get_str(ctx, &Field(at, "description"), v));
    if let Some(d) = description {
        if let Some(problem) = description_problem(d) {
            ctx.err(&Field(at, "description"), problem);
        }
    }
    let mut interfaces = Distinct::new();
    if let Some(list) = field(INTERFACES) {
        for (i, item) in get_list(ctx, &Field(at, "interfaces"), list).iter().enumerate() {
            let ip = Item(at, "interfaces", i);
            if let Some(s) = get_str(ctx, &ip, item) {
                if !valid_ifname(s) {
                    ctx.err(
                        &ip,
                        format!(
                            "`{}` is not an interface name (1-15 of a-z, A-Z, 0-9, '.', '_', '-', '@', '+')",
                            clip(s)
                        ),
                    );
                } else if !interfaces.insert(s) {
                    ctx.err(&ip, format!("interface `{s}` is listed twice"));
                }
            }
        }
    }
    let mut sources = Distinct::new();
    if let Some(list) = field(SOURCES) {
        for (i, item) in get_list(ctx, &Field(at, "sources"), list).iter().enumerate() {
            let sp = Item(at, "sources", i);
            if let Some(s) = get_str(ctx, &sp, item) {
                let net = s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
                match net {
                    Ok(n) => {
                        sources.insert(n.trunc());
                    }
                    Err(_) => ctx.err(
                        &sp,
                        format!("`{}` is not an address or network (203.0.113.0/24, 2001:db8::/32)", clip(s)),
                    ),
                }
            }
        }
    }
    let sources = sources.items;

    if let (Some(port), Some(to)) = (port, to) {
        if port.len() != to.len() {
            ctx.err(
                &Field(at, "to"),
                format!(
                    "`{to}` has {} port(s) but `port: {port}` has {}; a range maps to a range of the same length",
                    to.len(),
                    port.len()
                ),
            );
            ok = false;
        } else if port.start == to.start {
            ctx.err(&Field(at, "to"), format!("target {to} is the public port itself; forward to a different port"));
            ok = false;
        }
    }
    if let (Some(fam), false) = (family, sources.is_empty()) {
        for (i, s) in sources.iter().enumerate() {
            let wrong = match (fam, s) {
                (FamilySel::Ipv4, IpNet::V6(_)) => Some("ipv6"),
                (FamilySel::Ipv6, IpNet::V4(_)) => Some("ipv4"),
                _ => None,
            };
            if let Some(w) = wrong {
                ctx.err(&Item(at, "sources", i), format!("{s} is an {w} network but the forward is `family: {fam}`"));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let forward = Forward {
        name: name?.to_string(),
        port: port?,
        to: to?,
        proto: proto?,
        family: family?,
        local: local?,
        interfaces: interfaces.items.into_iter().map(str::to_string).collect(),
        sources,
        mark: mark?,
        protect: protect?,
        description: description.map(str::to_string),
    };
    if let Some(m) = crate::budget::shape_problem(&forward) {
        ctx.err(&Field(at, "sources"), m);
        return None;
    }
    Some(forward)
}

/// Which forward holds each public (family, proto, port): a table over every possible
/// claim, in pages of 256 ports made on first use, so checking a forward costs one load
/// per port whatever the number of forwards, and a small file touches a few pages.
struct Claims(Vec<Option<Box<[u32; 256]>>>);

impl Claims {
    fn new() -> Self {
        Claims(vec![None; 4 << 8])
    }
    /// The page and the slot in it; slots hold 1 + the index of the forward, 0 if free.
    fn slot((fam, proto, port): (Family, Proto, u16)) -> (usize, usize) {
        let f = match fam {
            Family::Ipv4 => 0,
            Family::Ipv6 => 1,
        };
        let p = match proto {
            Proto::Tcp => 0,
            Proto::Udp => 1,
        };
        (((f * 2 + p) << 8) | usize::from(port >> 8), usize::from(port & 0xff))
    }
    fn get(&self, c: (Family, Proto, u16)) -> Option<usize> {
        let (page, i) = Self::slot(c);
        let j = self.0[page].as_ref()?[i];
        (j != 0).then(|| j as usize - 1)
    }
    fn set(&mut self, c: (Family, Proto, u16), idx: usize) {
        let (page, i) = Self::slot(c);
        // A file holds far fewer than u32::MAX forwards: its size is bounded.
        self.0[page].get_or_insert_with(|| Box::new([0; 256]))[i] = idx as u32 + 1;
    }
}

/// Validates a list of forwards at `path`, including the cross-forward rules.
fn forwards(ctx: &mut Ctx, path: &str, v: Option<&Node>) -> Vec<Forward> {
    let Some(v) = v else { return Vec::new() };
    let items = get_list(ctx, path, v);
    let mut out: Vec<Forward> = Vec::with_capacity(items.len());
    let mut names: HashMap<&str, usize> = HashMap::with_capacity(items.len());
    let mut claims = Claims::new();
    for (i, item) in items.iter().enumerate() {
        let at = At { list: path, index: i };
        // Names are checked for duplicates even when the rest of the forward is invalid.
        if let Some(name) = item.get("name").and_then(Node::as_str) {
            if let Some(&first) = names.get(name) {
                let (line, _) = ctx.loc().value(&At { list: path, index: first }.path());
                ctx.err(
                    &Field(at, "name"),
                    format!("duplicate name `{name}` (first used on line {line}); names must be unique"),
                );
                continue;
            }
            names.insert(name, i);
        }
        let Some(f) = forward(ctx, at, item) else { continue };
        let clash = f.claims().find_map(|c| claims.get(c).map(|j| (j, c.0, c.1, c.2)));
        if let Some((j, fam, proto, port)) = clash {
            let other: &Forward = &out[j];
            ctx.err(
                &Field(at, "port"),
                format!("{proto} port {port} ({fam}) is already forwarded by `{}`; each public port/proto/family may have one forward", other.name),
            );
            continue;
        }
        let idx = out.len();
        for c in f.claims() {
            claims.set(c, idx);
        }
        out.push(f);
    }
    out
}

/// Bytes of memory parsing one YAML node may take at most (serde_yaml's event, the tree's
/// node, a key's hash entry); measured at 170 to 400 bytes per node counted by the shape
/// pass, for lists, forwards and flat mappings of 100,000 to 600,000 nodes.
pub const PARSE_BYTES_PER_NODE: usize = 512;

/// What parsing `text` may cost in memory at most, in bytes, from one linear pass that
/// allocates nothing: a caller can refuse a file before the parser allocates for it. A
/// file whose shape is refused costs its length (the parser never sees it).
pub fn parse_cost(text: &str) -> usize {
    let nodes = crate::shape::check_shape(text).unwrap_or(0);
    text.len().saturating_add(nodes.saturating_mul(PARSE_BYTES_PER_NODE))
}

/// Parses and validates a rules file. `file` names it in diagnostics.
pub fn parse_rules(file: &str, text: &str) -> Result<RulesFile, Diagnostics> {
    let (root, ctx) = parse_root(file, text)?;
    let mut ctx = Ctx { file, ..ctx };
    let Some(m) = root_mapping(&mut ctx, &root, RULES_FIELDS) else {
        return ctx.finish(RulesFile { version: 1, forwards: vec![] });
    };
    let fw = forwards(&mut ctx, "forwards", m.get("forwards"));
    ctx.finish(RulesFile { version: 1, forwards: fw })
}

fn settings(ctx: &mut Ctx, v: Option<&Node>) -> Settings {
    let mut s = Settings::default();
    let Some(v) = v.filter(|v| !v.is_null()) else { return s };
    let Some(m) = v.as_mapping() else {
        ctx.err("settings", format!("expected a mapping, found {}", describe(v)));
        return s;
    };
    check_keys(ctx, "settings", m, SETTINGS_FIELDS);
    if let Some(t) = m.get("table").and_then(|v| get_str(ctx, "settings.table", v)) {
        let ok = t.len() <= 64
            && t.starts_with(|c: char| c.is_ascii_alphabetic())
            && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            s.table = t.to_string();
        } else {
            ctx.err(
                "settings.table",
                format!("`{t}` is not a table name: use up to 64 of a-z, A-Z, 0-9 and '_', starting with a letter"),
            );
        }
    }
    if let Some(mark) = m.get("mark").and_then(|v| get_u32(ctx, "settings.mark", v)) {
        s.mark = mark;
    }
    if let Some(o) = m.get("on_exit").and_then(|v| get_str(ctx, "settings.on_exit", v)) {
        match o {
            "remove" => s.on_exit = OnExit::Remove,
            "keep" => s.on_exit = OnExit::Keep,
            _ => ctx.err("settings.on_exit", format!("`{o}` is not remove or keep")),
        }
    }
    if let Some(o) = m.get("listener_check").and_then(|v| get_str(ctx, "settings.listener_check", v)) {
        match o {
            "enforce" => s.listener_check = ListenerCheck::Enforce,
            "warn" => s.listener_check = ListenerCheck::Warn,
            "off" => s.listener_check = ListenerCheck::Off,
            _ => ctx.err("settings.listener_check", format!("`{o}` is not enforce, warn or off")),
        }
    }
    if let Some(o) = m.get("dispatch").and_then(|v| get_str(ctx, "settings.dispatch", v)) {
        match o {
            "auto" => s.dispatch = Dispatch::Auto,
            "steer" => s.dispatch = Dispatch::Steer,
            "nat" => s.dispatch = Dispatch::Nat,
            _ => ctx.err("settings.dispatch", format!("`{o}` is not auto, steer or nat")),
        }
    }
    if let Some(o) = m.get("ownership").and_then(|v| get_str(ctx, "settings.ownership", v)) {
        match o {
            "auto" => s.ownership = Ownership::Auto,
            "kernel" => s.ownership = Ownership::Kernel,
            "polled" => s.ownership = Ownership::Polled,
            _ => ctx.err("settings.ownership", format!("`{o}` is not auto, kernel or polled")),
        }
    }
    if let Some(d) = m.get("state_dir").and_then(|v| get_str(ctx, "settings.state_dir", v)) {
        if d.starts_with('/') {
            s.state_dir = d.to_string();
        } else {
            ctx.err("settings.state_dir", format!("`{d}` must be an absolute path"));
        }
    }
    if let Some(sock) = m.get("socket") {
        if let Some(sm) = sock.as_mapping() {
            check_keys(ctx, "settings.socket", sm, SOCKET_FIELDS);
            if let Some(p) = sm.get("path").and_then(|v| get_str(ctx, "settings.socket.path", v)) {
                if p.starts_with('/') {
                    s.socket.path = p.to_string();
                } else {
                    ctx.err("settings.socket.path", format!("`{p}` must be an absolute path"));
                }
            }
            match sm.get("group") {
                None => {}
                Some(Node::Null) => s.socket.group = None,
                Some(v) => s.socket.group = get_str(ctx, "settings.socket.group", v).map(str::to_string),
            }
            if let Some(v) = sm.get("mode") {
                let text = match v {
                    Node::String(t) => Some(t.to_string()),
                    Node::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                match text.as_deref().and_then(|t| u32::from_str_radix(t, 8).ok()).filter(|m| *m <= 0o777) {
                    Some(mode) => s.socket.mode = mode,
                    None => ctx
                        .err("settings.socket.mode", format!("{} is not an octal mode such as \"0660\"", describe(v))),
                }
            }
        } else {
            ctx.err("settings.socket", format!("expected a mapping with path, group, mode, found {}", describe(sock)));
        }
    }
    s.metrics = metrics(ctx, m.get("metrics"));
    s
}

/// `settings.metrics: {listen: "ADDR:PORT"}`; absent or null: no endpoint.
fn metrics(ctx: &mut Ctx, v: Option<&Node>) -> Option<MetricsSettings> {
    let v = v.filter(|v| !v.is_null())?;
    let Some(m) = v.as_mapping() else {
        ctx.err("settings.metrics", format!("expected a mapping with listen, found {}", describe(v)));
        return None;
    };
    check_keys(ctx, "settings.metrics", m, METRICS_FIELDS);
    let allow = match m.get("allow") {
        None => Some(MetricsSettings::loopback()),
        Some(v) => {
            let mut nets = Vec::new();
            let mut ok = true;
            for (i, item) in get_list(ctx, "settings.metrics.allow", v).iter().enumerate() {
                let path = format!("settings.metrics.allow[{i}]");
                let Some(s) = get_str(ctx, path.as_str(), item) else {
                    ok = false;
                    continue;
                };
                match s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)) {
                    Ok(n) => nets.push(n.trunc()),
                    Err(_) => {
                        ok = false;
                        ctx.err(
                            path.as_str(),
                            format!("`{}` is not a network such as 127.0.0.1/8, ::1 or 10.0.0.5", clip(s)),
                        );
                    }
                }
            }
            ok.then_some(nets)
        }
    };
    let Some(l) = m.get("listen") else {
        ctx.err("settings.metrics", "listen is missing: give an address and port such as \"127.0.0.1:9649\"");
        return None;
    };
    let text = get_str(ctx, "settings.metrics.listen", l)?;
    match text.parse::<std::net::SocketAddr>() {
        Ok(listen) if listen.port() != 0 => Some(MetricsSettings { listen, allow: allow? }),
        _ => {
            ctx.err(
                "settings.metrics.listen",
                format!(
                    "`{text}` is not an address and port such as \"127.0.0.1:9649\" or \"[::1]:9649\" (port 1-65535)"
                ),
            );
            None
        }
    }
}

fn port_list(ctx: &mut Ctx, path: &str, v: &Node) -> Vec<PortRange> {
    let items: Vec<(String, &Node)> = match v {
        Node::Sequence(s) => s.iter().enumerate().map(|(i, v)| (format!("{path}[{i}]"), v)).collect(),
        other => vec![(path.to_string(), other)],
    };
    items.into_iter().filter_map(|(p, v)| get_ports(ctx, &p, v)).collect()
}

/// `marks:` of a grant: one mark, a range "0x10-0x1f", or a list of either.
fn mark_list(ctx: &mut Ctx, path: &str, v: &Node) -> Vec<MarkRange> {
    let items: Vec<(String, &Node)> = match v {
        Node::Sequence(s) => s.iter().enumerate().map(|(i, v)| (format!("{path}[{i}]"), v)).collect(),
        other => vec![(path.to_string(), other)],
    };
    let mut out = Vec::new();
    for (p, v) in items {
        match v {
            Node::String(t) if t.contains('-') => {
                let (a, b) = t.split_once('-').unwrap_or((t, t));
                let a = get_u32(ctx, &p, &Node::String(Cow::Borrowed(a.trim())));
                let b = get_u32(ctx, &p, &Node::String(Cow::Borrowed(b.trim())));
                match (a, b) {
                    (Some(a), Some(b)) if a <= b => out.push(MarkRange { start: a, end: b }),
                    (Some(_), Some(_)) => ctx.err(&p, format!("mark range `{t}` runs backwards")),
                    _ => {}
                }
            }
            other => {
                if let Some(m) = get_u32(ctx, &p, other) {
                    out.push(MarkRange::single(m));
                }
            }
        }
    }
    out
}

fn grants(ctx: &mut Ctx, v: Option<&Node>) -> Vec<Grant> {
    let Some(v) = v else { return vec![] };
    let mut out = Vec::new();
    for (i, g) in get_list(ctx, "grants", v).iter().enumerate() {
        let gp = format!("grants[{i}]");
        let Some(m) = g.as_mapping() else {
            ctx.err(&gp, format!("expected a grant (user or group, ports, to), found {}", describe(g)));
            continue;
        };
        check_keys(ctx, &gp, m, GRANT_FIELDS);
        let subject = match (m.get("user"), m.get("group")) {
            (Some(u), None) => get_str(ctx, &format!("{gp}.user"), u).map(|u| GrantSubject::User(u.to_string())),
            (None, Some(g)) => get_str(ctx, &format!("{gp}.group"), g).map(|g| GrantSubject::Group(g.to_string())),
            _ => {
                ctx.err(&gp, "a grant names exactly one of `user:` or `group:`");
                None
            }
        };
        let ports = match m.get("ports") {
            Some(v) => port_list(ctx, &format!("{gp}.ports"), v),
            None => {
                ctx.err(&gp, "missing required field `ports`");
                continue;
            }
        };
        let to = match m.get("to") {
            Some(v) => port_list(ctx, &format!("{gp}.to"), v),
            None => vec![PortRange { start: 1024, end: 65535 }],
        };
        let protect = m.get("protect").map_or(Some(false), |v| get_bool(ctx, &format!("{gp}.protect"), v));
        let local = m.get("local").map_or(Some(true), |v| get_bool(ctx, &format!("{gp}.local"), v));
        let marks = m.get("marks").map(|v| mark_list(ctx, &format!("{gp}.marks"), v));
        let max_forwards = match m.get("max_forwards") {
            None => Some(DEFAULT_MAX_FORWARDS),
            Some(Node::Number(n)) if n.as_u64().is_some_and(|n| n <= 1_000_000) => n.as_u64().map(|n| n as u32),
            Some(v) => {
                ctx.err(&format!("{gp}.max_forwards"), format!("{} is not a count (0 to 1000000)", describe(v)));
                None
            }
        };
        let max_elements = count_field(ctx, &gp, m.get("max_elements"), "max_elements", DEFAULT_MAX_ELEMENTS);
        let max_source_elements =
            count_field(ctx, &gp, m.get("max_source_elements"), "max_source_elements", DEFAULT_MAX_SOURCE_ELEMENTS);
        if let (
            Some(subject),
            Some(protect),
            Some(local),
            Some(max_forwards),
            Some(max_elements),
            Some(max_source_elements),
        ) = (subject, protect, local, max_forwards, max_elements, max_source_elements)
        {
            out.push(Grant {
                subject,
                ports,
                to,
                protect,
                local,
                marks,
                max_forwards,
                max_elements,
                max_source_elements,
            });
        }
    }
    out
}

/// A grant's element budget field: a count from 0 to 10,000,000, `default` when absent.
fn count_field(ctx: &mut Ctx, gp: &str, v: Option<&Node>, name: &str, default: u64) -> Option<u64> {
    match v {
        None => Some(default),
        Some(Node::Number(n)) if n.as_u64().is_some_and(|n| n <= 10_000_000) => n.as_u64(),
        Some(v) => {
            ctx.err(&format!("{gp}.{name}"), format!("{} is not a count (0 to 10000000)", describe(v)));
            None
        }
    }
}

/// Parses and validates the daemon config. `file` names it in diagnostics.
pub fn parse_config(file: &str, text: &str) -> Result<Config, Diagnostics> {
    let (root, ctx) = parse_root(file, text)?;
    let mut ctx = Ctx { file, ..ctx };
    let Some(m) = root_mapping(&mut ctx, &root, CONFIG_FIELDS) else {
        return ctx.finish(Config::default());
    };
    let settings = settings(&mut ctx, m.get("settings"));
    let grants = grants(&mut ctx, m.get("grants"));
    let forwards = forwards(&mut ctx, "forwards", m.get("forwards"));
    ctx.finish(Config { version: 1, settings, grants, forwards })
}

/// True for a user name portd accepts in an owner (`user:NAME`): POSIX portable
/// characters, at most 32.
pub fn valid_user(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of forwards, settings, grants and both files gets a "did you mean" for
    /// its likely typos: a letter doubled, dropped or swapped, other case, `-` for `_`.
    #[test]
    fn every_field_has_a_did_you_mean() {
        let lists =
            [RULES_FIELDS, CONFIG_FIELDS, SETTINGS_FIELDS, SOCKET_FIELDS, METRICS_FIELDS, GRANT_FIELDS, FORWARD_FIELDS];
        for list in lists {
            for field in list {
                let chars: Vec<char> = field.chars().collect();
                let mut typos = vec![format!("{field}{}", chars[chars.len() - 1]), field.to_uppercase()];
                typos.push(field.replace('_', "-"));
                if chars.len() > 3 {
                    typos.push(chars[..chars.len() - 1].iter().collect());
                }
                if chars.len() > 2 {
                    let mut swapped = chars.clone();
                    swapped.swap(1, 2);
                    typos.push(swapped.into_iter().collect());
                }
                for typo in typos.iter().filter(|t| t.as_str() != *field) {
                    let got = suggest(list, typo);
                    let norm = typo.to_ascii_lowercase().replace('-', "_");
                    // `prot` is as near to `port` as to `proto`: either is a fair guess.
                    let ambiguous = list.iter().any(|o| o != field && distance(o, &norm) <= distance(field, &norm));
                    if ambiguous {
                        assert!(got.is_some(), "`{typo}` in {list:?}: no hint");
                    } else {
                        assert_eq!(got, Some(*field), "`{typo}` in {list:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn other_tools_words_are_suggested_and_far_words_are_not() {
        assert_eq!(suggest(FORWARD_FIELDS, "target"), Some("to"));
        assert_eq!(suggest(FORWARD_FIELDS, "tp"), Some("to"));
        assert_eq!(suggest(FORWARD_FIELDS, "protocol"), Some("proto"));
        assert_eq!(suggest(FORWARD_FIELDS, "interface"), Some("interfaces"));
        assert_eq!(suggest(FORWARD_FIELDS, "desc"), Some("description"));
        assert_eq!(suggest(FORWARD_FIELDS, "comment"), Some("description"));
        assert_eq!(suggest(FORWARD_FIELDS, "prot"), Some("port"));
        assert_eq!(suggest(GRANT_FIELDS, "port"), Some("ports"));
        assert_eq!(suggest(GRANT_FIELDS, "quota"), Some("max_forwards"));
        assert_eq!(suggest(CONFIG_FIELDS, "grant"), Some("grants"));
        assert_eq!(suggest(FORWARD_FIELDS, "grant"), None, "a synonym only for a field of that place");
        assert_eq!(suggest(FORWARD_FIELDS, "zebra"), None);
    }
}
