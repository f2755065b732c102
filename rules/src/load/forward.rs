//! Forwards: each one's fields, then the rules across a list (unique names, one forward
//! per public port/proto/family).

use super::ctx::{
    check_fields, clip, describe, get_bool, get_list, get_ports, get_str, get_u32, At, Ctx, Field, Item, Place,
};
use super::tree::Node;
use crate::model::*;
use ipnet::IpNet;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

pub(super) const FORWARD_FIELDS: &[&str] =
    &["name", "port", "to", "proto", "family", "local", "interfaces", "sources", "mark", "protect", "description"];
// Indices into FORWARD_FIELDS.
pub(super) const NAME: usize = 0;
pub(super) const PORT: usize = 1;
pub(super) const TO: usize = 2;
pub(super) const PROTO: usize = 3;
pub(super) const FAMILY: usize = 4;
pub(super) const LOCAL: usize = 5;
pub(super) const INTERFACES: usize = 6;
pub(super) const SOURCES: usize = 7;
pub(super) const MARK: usize = 8;
pub(super) const PROTECT: usize = 9;
pub(super) const DESCRIPTION: usize = 10;

/// Lists up to this long are checked for repeated entries by a scan, longer ones by hashing.
pub(super) const SCAN_ITEMS: usize = 16;

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
pub(super) struct Distinct<T> {
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

pub(super) fn forward(ctx: &mut Ctx, at: At, v: &Node) -> Option<Forward> {
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
    Some(Forward {
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
    })
}

/// Which forward holds each public (family, proto, port): a table over every possible
/// claim, in pages of 256 ports made on first use, so checking a forward costs one load
/// per port whatever the number of forwards, and a small file touches a few pages.
pub(super) struct Claims(Vec<Option<Box<[u32; 256]>>>);

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
pub(super) fn forwards(ctx: &mut Ctx, path: &str, v: Option<&Node>) -> Vec<Forward> {
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
