//! Forwards: each one's fields, then the rules across a list (unique names, one forward
//! per public port/proto/family).

use super::ctx::{
    check_fields, clip, describe, get_bool, get_list, get_ports, get_str, get_u32, At, Ctx, Field, Item, Place,
};
use super::tree::Node;
use crate::model::*;
use ipnet::IpNet;
use std::collections::HashMap;

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

    // First the types of the fields, each problem located; then the forward's own rules
    // (crate::validate), on what parsed.
    let name = field(NAME).and_then(|v| get_str(ctx, &Field(at, "name"), v));
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
    // Entries of lists that parsed, with their index in the file's list.
    let mut interfaces: Vec<(usize, String)> = Vec::new();
    if let Some(list) = field(INTERFACES) {
        for (i, item) in get_list(ctx, &Field(at, "interfaces"), list).iter().enumerate() {
            if let Some(s) = get_str(ctx, &Item(at, "interfaces", i), item) {
                interfaces.push((i, s.to_string()));
            }
        }
    }
    let mut sources: Vec<(usize, IpNet)> = Vec::new();
    if let Some(list) = field(SOURCES) {
        for (i, item) in get_list(ctx, &Field(at, "sources"), list).iter().enumerate() {
            let sp = Item(at, "sources", i);
            if let Some(s) = get_str(ctx, &sp, item) {
                match crate::validate::parse_source(s) {
                    Ok(n) => sources.push((i, n)),
                    Err(m) => ctx.err(&sp, m),
                }
            }
        }
    }

    // Fields that did not parse stand in with values no rule refuses.
    let mut f = Forward {
        name: name.unwrap_or("x").to_string(),
        port: port.unwrap_or(PortRange::single(1)),
        to: to.unwrap_or(PortRange::single(2)),
        proto: proto.unwrap_or(ProtoSel::Tcp),
        family: family.unwrap_or(FamilySel::Both),
        local: local.unwrap_or(true),
        interfaces: interfaces.iter().map(|(_, s)| s.clone()).collect(),
        sources: sources.iter().map(|(_, n)| *n).collect(),
        mark: mark.flatten(),
        protect: protect.unwrap_or(false),
        description: description.map(str::to_string),
    };
    for p in crate::validate::forward(&mut f) {
        match (p.field, p.index) {
            ("interfaces", Some(i)) => ctx.err(&Item(at, "interfaces", interfaces[i].0), p.message),
            ("sources", Some(i)) => {
                ok = false;
                ctx.err(&Item(at, "sources", sources[i].0), p.message)
            }
            // Checked only against ports that parsed.
            ("to", _) if port.is_none() || to.is_none() => {}
            ("to", _) => {
                ok = false;
                ctx.err(&Field(at, "to"), p.message)
            }
            (field, _) => ctx.err(&Field(at, field), p.message),
        }
    }
    if !ok {
        return None;
    }
    name?;
    port?;
    to?;
    proto?;
    family?;
    local?;
    mark?;
    protect?;
    Some(f)
}

/// Which forward holds each public (family, proto, port): a table over every possible
/// claim, in pages of 256 ports made on first use, so checking a forward costs one load
/// per port whatever the number of forwards, and a small file touches a few pages.
pub(super) struct PortTable(Vec<Option<Box<[u32; 256]>>>);

impl PortTable {
    fn new() -> Self {
        PortTable(vec![None; 4 << 8])
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
    let mut claims = PortTable::new();
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
