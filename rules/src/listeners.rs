//! The sockets of the namespace that hold ports, as the policy core sees them: which
//! uids hold which port, with names for messages.

use crate::model::{PortRange, Proto};
use std::collections::{BTreeMap, BTreeSet};

/// Sockets of the namespace that hold ports: TCP listeners and bound UDP sockets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listeners {
    by_port: BTreeMap<(Proto, u16), BTreeSet<u32>>,
    names: BTreeMap<u32, String>,
}

impl Listeners {
    /// Records that `uid` holds `port` for `proto` (any address, any family).
    pub fn insert(&mut self, proto: Proto, port: u16, uid: u32) {
        self.by_port.entry((proto, port)).or_default().insert(uid);
    }
    /// Names a uid for messages.
    pub fn name_uid(&mut self, uid: u32, name: String) {
        self.names.insert(uid, name);
    }
    /// Every uid in the table, to be named.
    pub fn uids(&self) -> BTreeSet<u32> {
        self.by_port.values().flatten().copied().collect()
    }
    /// True when both tables hold the same sockets (names aside).
    pub fn same_sockets(&self, other: &Listeners) -> bool {
        self.by_port == other.by_port
    }
    /// Names every uid of the table: from `known` where it names the uid already, else
    /// through `lookup` (an account-database lookup, done only for uids new to the table).
    pub fn name_uids(&mut self, known: Option<&Listeners>, lookup: impl Fn(u32) -> Option<String>) {
        for uid in self.uids() {
            let name = known.and_then(|k| k.names.get(&uid).cloned()).or_else(|| lookup(uid));
            if let Some(n) = name {
                self.names.insert(uid, n);
            }
        }
    }
    /// Every socket of the table: protocol, port and uid.
    pub fn sockets(&self) -> impl Iterator<Item = (Proto, u16, u32)> + '_ {
        self.by_port.iter().flat_map(|((proto, port), uids)| uids.iter().map(move |u| (*proto, *port, *u)))
    }
    /// The uids holding `port`/`proto`.
    pub fn holders(&self, proto: Proto, port: u16) -> impl Iterator<Item = u32> + '_ {
        self.by_port.get(&(proto, port)).into_iter().flatten().copied()
    }
    /// The first socket in `range`/`proto` held by a uid other than `uid`.
    pub fn foreign_in(&self, proto: Proto, range: PortRange, uid: u32) -> Option<(u16, u32)> {
        self.held_in(proto, range, |u| u != uid)
    }
    /// The first socket in `range`/`proto` held by a uid `holder` accepts.
    pub fn held_in(&self, proto: Proto, range: PortRange, holder: impl Fn(u32) -> bool) -> Option<(u16, u32)> {
        self.by_port
            .range((proto, range.start)..=(proto, range.end))
            .find_map(|((_, port), uids)| uids.iter().find(|u| holder(**u)).map(|u| (*port, *u)))
    }
    /// True when any socket holds `range`/`proto`.
    pub fn any_in(&self, proto: Proto, range: PortRange) -> bool {
        self.by_port.range((proto, range.start)..=(proto, range.end)).next().is_some()
    }
    /// `uid 1002 (web2)`, or `uid 1002` when it has no name.
    pub fn who(&self, uid: u32) -> String {
        who(uid, self.names.get(&uid).map(String::as_str))
    }
}

/// `uid 1002 (web2)`, or `uid 1002` without a name.
pub fn who(uid: u32, name: Option<&str>) -> String {
    match name {
        Some(n) => format!("uid {uid} ({n})"),
        None => format!("uid {uid}"),
    }
}
