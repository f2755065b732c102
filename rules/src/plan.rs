//! The [`Plan`]: exactly what goes into the kernel, as a plain comparable value.
//!
//! Dispatch is O(1) in the number of forwards: the chains are a fixed skeleton of
//! rules, each doing one hash or interval lookup keyed by `nfproto . l4proto . dport`;
//! every forward contributes only set/map elements and one named counter. Changing one
//! forward is therefore a small element-level [`Delta`].

use crate::model::{Family, Forward, Proto};
pub use crate::packed::Elements;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Above this many forwards (and a quarter of the plan), a change is computed by
/// compiling the whole new plan instead of element by element.
const LARGE_CHANGE: usize = 256;

/// Name of the owner of the config file's forwards.
pub const SYSTEM_OWNER: &str = "system";

/// Type of one field of a set key or of a map's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// `nf_proto` (1 byte)
    NfProto,
    /// `inet_proto` (1 byte)
    InetProto,
    /// `inet_service` (2 bytes, network order)
    InetService,
    /// `ifname` (16 bytes)
    Ifname,
    /// `ipv4_addr`
    Ipv4Addr,
    /// `ipv6_addr`
    Ipv6Addr,
    /// `mark` (4 bytes, host order)
    Mark,
    /// a reference to a named counter object
    Counter,
}

/// One field value of an element.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// `ipv4` / `ipv6`
    NfProto(Family),
    /// `tcp` / `udp`
    InetProto(Proto),
    /// a port
    InetService(u16),
    /// an interface name
    Ifname(String),
    /// an IPv4 network (an interval element)
    Ipv4Net(Ipv4Net),
    /// an IPv6 network (an interval element)
    Ipv6Net(Ipv6Net),
    /// a packet mark
    Mark(u32),
    /// name of a counter object
    Counter(String),
}

/// One set element or map entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Element {
    /// Key fields, one per [`Set::key`] field.
    pub key: Vec<Value>,
    /// Mapped value, for maps.
    pub data: Option<Value>,
}

/// A named set or map of the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    /// Set name.
    pub name: String,
    /// What it is for, shown as a comment in the rendered ruleset.
    pub comment: String,
    /// Concatenated key type.
    pub key: Vec<FieldType>,
    /// Data type for maps.
    pub data: Option<FieldType>,
    /// Interval set (`flags interval`), for network prefixes.
    pub interval: bool,
    /// Elements, ordered (kept packed: see [`Elements`]).
    pub elements: Elements,
}

/// nftables chain types used by portd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainType {
    /// `type filter`
    Filter,
    /// `type nat`
    Nat,
}

/// Netfilter hooks used by portd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// `hook prerouting`
    Prerouting,
    /// `hook input`
    Input,
    /// `hook output`
    Output,
}

/// Hook attachment of a base chain (policy is always accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseChain {
    /// Chain type.
    #[serde(rename = "type")]
    pub kind: ChainType,
    /// Hook.
    pub hook: Hook,
    /// Priority (mangle -150, dstnat -100, filter 0).
    pub priority: i32,
}

/// The few rule shapes portd uses. Each is a constant number of expressions; the
/// comment beside each variant is its nft text (`KEY` is `meta nfproto . meta l4proto . th dport`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Rule {
    /// `fib daddr type local jump CHAIN`
    JumpIfLocal {
        /// target chain
        chain: String,
    },
    /// `fib daddr type local KEY != @SET jump CHAIN`
    JumpIfLocalKeyNotIn {
        /// set of keys excluded
        set: String,
        /// target chain
        chain: String,
    },
    /// `KEY @KEYS KEY . iifname != @ALLOWED return`
    ReturnUnlessIface {
        /// keys that are restricted to interfaces
        keys: String,
        /// allowed key . interface pairs
        allowed: String,
    },
    /// `KEY @KEYS meta nfproto FAMILY meta l4proto . th dport . ip(6) saddr != @ALLOWED return`
    ReturnUnlessSource {
        /// family this rule checks
        family: Family,
        /// keys that are restricted to sources
        keys: String,
        /// allowed l4proto . port . network triples
        allowed: String,
    },
    /// `meta l4proto PROTO redirect to KEY map @MAP`
    Redirect {
        /// transport protocol (nft needs it to know where the port goes)
        proto: Proto,
        /// key -> target port
        map: String,
    },
    /// `meta mark set KEY map @MAP`
    SetMark {
        /// key -> mark
        map: String,
    },
    /// `counter name KEY map @MAP`
    CountNamed {
        /// key -> counter object
        map: String,
    },
    /// `ct state new iifname != "lo" ct status & dnat == 0 KEY @SET drop`
    DropUnredirected {
        /// protected target keys
        set: String,
    },
}

/// A chain: a base chain on a hook, or a regular chain jumped to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    /// Chain name.
    pub name: String,
    /// Hook attachment, for base chains.
    pub base: Option<BaseChain>,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// One forward as placed in the plan, for summaries, status and counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedForward {
    /// Owner: `system` or `user:NAME`.
    pub owner: String,
    /// The forward.
    pub forward: Forward,
    /// Effective mark (0: none).
    pub mark: u32,
    /// Name of its counter object.
    pub counter: String,
}

/// Everything portd puts into the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Table name (family inet).
    pub table: String,
    /// Named counter objects, one per forward.
    pub counters: BTreeSet<String>,
    /// Sets and maps, in declaration order.
    pub sets: Vec<Set>,
    /// Chains, regular chains before the base chains that jump to them.
    pub chains: Vec<Chain>,
    /// The forwards this plan was compiled from, ordered by owner then name.
    pub forwards: Vec<PlacedForward>,
}

/// Set and map names.
pub mod names {
    /// key -> target port
    pub const TO: &str = "fwd_to";
    /// key -> mark
    pub const MARK: &str = "fwd_mark";
    /// key -> counter
    pub const COUNTER: &str = "fwd_counter";
    /// keys with `local: false` (the default, true, needs no element)
    pub const NOLOCAL: &str = "fwd_nolocal";
    /// keys restricted to interfaces
    pub const IFACE_KEYS: &str = "fwd_iface_keys";
    /// key . ifname allowed
    pub const IFACE: &str = "fwd_iface";
    /// keys restricted to sources
    pub const SRC_KEYS: &str = "fwd_src_keys";
    /// l4proto . port . IPv4 network allowed
    pub const SRC4: &str = "fwd_src4";
    /// l4proto . port . IPv6 network allowed
    pub const SRC6: &str = "fwd_src6";
    /// protected target keys
    pub const PROTECT: &str = "fwd_protect";
}

/// One owner's forwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedSet {
    /// `system` or `user:NAME`.
    pub owner: String,
    /// Its forwards (already validated).
    pub forwards: Vec<Forward>,
}

/// Two owners claim the same public port/proto/family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Owner whose forward was refused.
    pub owner: String,
    /// Its forward.
    pub name: String,
    /// Owner already holding the port.
    pub other_owner: String,
    /// Forward already holding the port.
    pub other_name: String,
    /// The contested port.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
    /// Family.
    pub family: Family,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "forward `{}` of {}: {} port {} ({}) is already forwarded by `{}` of {}",
            self.name, self.owner, self.proto, self.port, self.family, self.other_name, self.other_owner
        )
    }
}

/// Name of the counter object of an owner's forward: readable, unique, nft-safe.
pub fn counter_name(owner: &str, name: &str) -> String {
    let clean: String =
        owner.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).take(64).collect();
    // FNV-1a keeps two owners that sanitise alike apart.
    let mut h: u32 = 0x811c9dc5;
    for b in owner.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("c_{clean}_{}_{h:08x}", name.replace('-', "_"))
}

fn key(f: Family, p: Proto, port: u16) -> Vec<Value> {
    vec![Value::NfProto(f), Value::InetProto(p), Value::InetService(port)]
}

const KEY: [FieldType; 3] = [FieldType::NfProto, FieldType::InetProto, FieldType::InetService];

fn set(name: &str, comment: &str, key: &[FieldType], data: Option<FieldType>, interval: bool) -> Set {
    Set { name: name.into(), comment: comment.into(), key: key.to_vec(), data, interval, elements: Elements::new() }
}

/// The fixed skeleton: every set and chain, empty.
fn skeleton(table: &str) -> Plan {
    use names::*;
    use FieldType as T;
    let k_if = [T::NfProto, T::InetProto, T::InetService, T::Ifname];
    let sets = vec![
        set(TO, "public port -> local port", &KEY, Some(T::InetService), false),
        set(MARK, "public port -> packet mark", &KEY, Some(T::Mark), false),
        set(COUNTER, "public port -> counter of its forward", &KEY, Some(T::Counter), false),
        set(NOLOCAL, "public ports not redirected for this host's own connections (local: false)", &KEY, None, false),
        set(IFACE_KEYS, "public ports restricted to interfaces", &KEY, None, false),
        set(IFACE, "interfaces allowed per public port", &k_if, None, false),
        set(SRC_KEYS, "public ports restricted to source networks", &KEY, None, false),
        set(SRC4, "IPv4 sources allowed per public port", &[T::InetProto, T::InetService, T::Ipv4Addr], None, true),
        set(SRC6, "IPv6 sources allowed per public port", &[T::InetProto, T::InetService, T::Ipv6Addr], None, true),
        set(PROTECT, "local ports that refuse connections not redirected by portd", &KEY, None, false),
    ];
    let qualify = || {
        vec![
            Rule::ReturnUnlessIface { keys: IFACE_KEYS.into(), allowed: IFACE.into() },
            Rule::ReturnUnlessSource { family: Family::Ipv4, keys: SRC_KEYS.into(), allowed: SRC4.into() },
            Rule::ReturnUnlessSource { family: Family::Ipv6, keys: SRC_KEYS.into(), allowed: SRC6.into() },
        ]
    };
    let redirect = || {
        vec![Rule::Redirect { proto: Proto::Tcp, map: TO.into() }, Rule::Redirect { proto: Proto::Udp, map: TO.into() }]
    };
    let account = || vec![Rule::SetMark { map: MARK.into() }, Rule::CountNamed { map: COUNTER.into() }];
    let base = |kind, hook, priority| Some(BaseChain { kind, hook, priority });
    let chains = vec![
        Chain { name: "redirect_in".into(), base: None, rules: [qualify(), redirect()].concat() },
        Chain { name: "account_in".into(), base: None, rules: [qualify(), account()].concat() },
        Chain { name: "redirect_local".into(), base: None, rules: redirect() },
        Chain { name: "account_local".into(), base: None, rules: account() },
        Chain {
            name: "prerouting".into(),
            base: base(ChainType::Nat, Hook::Prerouting, -100),
            rules: vec![Rule::JumpIfLocal { chain: "redirect_in".into() }],
        },
        Chain {
            name: "mangle_prerouting".into(),
            base: base(ChainType::Filter, Hook::Prerouting, -150),
            rules: vec![Rule::JumpIfLocal { chain: "account_in".into() }],
        },
        Chain {
            name: "output".into(),
            base: base(ChainType::Nat, Hook::Output, -100),
            rules: vec![Rule::JumpIfLocalKeyNotIn { set: NOLOCAL.into(), chain: "redirect_local".into() }],
        },
        Chain {
            name: "mangle_output".into(),
            base: base(ChainType::Filter, Hook::Output, -150),
            rules: vec![Rule::JumpIfLocalKeyNotIn { set: NOLOCAL.into(), chain: "account_local".into() }],
        },
        Chain {
            name: "input".into(),
            base: base(ChainType::Filter, Hook::Input, 0),
            rules: vec![Rule::DropUnredirected { set: PROTECT.into() }],
        },
    ];
    Plan { table: table.into(), counters: BTreeSet::new(), sets, chains, forwards: Vec::new() }
}

impl Plan {
    /// An empty plan: the skeleton with no forwards.
    pub fn empty(table: &str) -> Plan {
        skeleton(table)
    }

    /// The set or map called `name`.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    fn set_mut(&mut self, name: &str) -> &mut Set {
        match self.sets.iter().position(|s| s.name == name) {
            Some(i) => &mut self.sets[i],
            None => unreachable!("skeleton has set {name}"),
        }
    }

    fn insert(&mut self, set: &str, key: Vec<Value>, data: Option<Value>) {
        self.set_mut(set).elements.insert(Element { key, data });
    }

    /// Number of elements over all sets.
    pub fn element_count(&self) -> usize {
        self.sets.iter().map(|s| s.elements.len()).sum()
    }

    /// Adds one forward's elements and counter.
    fn place(&mut self, owner: &str, f: &Forward, default_mark: u32) {
        use names::*;
        let counter = counter_name(owner, &f.name);
        let mark = f.mark.unwrap_or(default_mark);
        self.counters.insert(counter.clone());
        for &fam in f.family.families() {
            for &proto in f.proto.protos() {
                for port in f.port.ports() {
                    let k = key(fam, proto, port);
                    self.insert(TO, k.clone(), Some(Value::InetService(f.target_of(port))));
                    if mark != 0 {
                        self.insert(MARK, k.clone(), Some(Value::Mark(mark)));
                    }
                    self.insert(COUNTER, k.clone(), Some(Value::Counter(counter.clone())));
                    if !f.local {
                        self.insert(NOLOCAL, k.clone(), None);
                    }
                    if !f.interfaces.is_empty() {
                        self.insert(IFACE_KEYS, k.clone(), None);
                        for i in &f.interfaces {
                            let mut ki = k.clone();
                            ki.push(Value::Ifname(i.clone()));
                            self.insert(IFACE, ki, None);
                        }
                    }
                    if !f.sources.is_empty() {
                        self.insert(SRC_KEYS, k.clone(), None);
                        for s in &f.sources {
                            let (set, net) = match (fam, s) {
                                (Family::Ipv4, ipnet::IpNet::V4(n)) => (SRC4, Value::Ipv4Net(*n)),
                                (Family::Ipv6, ipnet::IpNet::V6(n)) => (SRC6, Value::Ipv6Net(*n)),
                                _ => continue,
                            };
                            self.insert(set, vec![Value::InetProto(proto), Value::InetService(port), net], None);
                        }
                    }
                    if f.protect {
                        self.insert(PROTECT, key(fam, proto, f.target_of(port)), None);
                    }
                }
            }
        }
        self.forwards.push(PlacedForward { owner: owner.into(), forward: f.clone(), mark, counter });
    }
}

/// Compiles every owner's forwards into one plan, refusing cross-owner conflicts.
///
/// Forwards within one set were validated against each other already; this checks
/// claims across owners. Every conflict is reported, each naming the other forward.
pub fn compile(table: &str, default_mark: u32, sets: &[OwnedSet]) -> Result<Plan, Vec<Conflict>> {
    let mut plan = skeleton(table);
    let mut claims: std::collections::HashMap<(Family, Proto, u16), (&str, &str)> = Default::default();
    let mut conflicts = Vec::new();
    let mut ordered: Vec<&OwnedSet> = sets.iter().collect();
    ordered.sort_by(|a, b| (a.owner != SYSTEM_OWNER, &a.owner).cmp(&(b.owner != SYSTEM_OWNER, &b.owner)));
    for set in ordered {
        let mut fws: Vec<&Forward> = set.forwards.iter().collect();
        fws.sort_by(|a, b| a.name.cmp(&b.name));
        for f in fws {
            let clash = f.claims().find_map(|(fam, proto, port)| {
                let (o, n) = claims.get(&(fam, proto, port)).filter(|(o, _)| *o != set.owner)?;
                Some(Conflict {
                    owner: set.owner.clone(),
                    name: f.name.clone(),
                    other_owner: o.to_string(),
                    other_name: n.to_string(),
                    port,
                    proto,
                    family: fam,
                })
            });
            if let Some(c) = clash {
                conflicts.push(c);
                continue;
            }
            claims.extend(f.claims().map(|c| (c, (set.owner.as_str(), f.name.as_str()))));
            plan.place(&set.owner, f, default_mark);
        }
    }
    if conflicts.is_empty() {
        Ok(plan)
    } else {
        Err(conflicts)
    }
}

/// Added, removed and changed forwards, for humans.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Forwards new in the new plan.
    pub added: Vec<PlacedForward>,
    /// Forwards gone from the new plan.
    pub removed: Vec<PlacedForward>,
    /// Forwards present in both with different settings: (old, new).
    pub changed: Vec<(PlacedForward, PlacedForward)>,
}

impl Summary {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn describe_forward(p: &PlacedForward) -> String {
    let f = &p.forward;
    let mut s = format!("{}/{}: {} -> {} {} {}", p.owner, f.name, f.port, f.to, f.proto, f.family);
    if !f.local {
        s.push_str(" local=false");
    }
    if !f.interfaces.is_empty() {
        s.push_str(&format!(" interfaces={}", f.interfaces.join(",")));
    }
    if !f.sources.is_empty() {
        let v: Vec<String> = f.sources.iter().map(|s| s.to_string()).collect();
        s.push_str(&format!(" sources={}", v.join(",")));
    }
    if p.mark != 0 {
        s.push_str(&format!(" mark={:#x}", p.mark));
    }
    if f.protect {
        s.push_str(" protect");
    }
    if let Some(d) = &f.description {
        s.push_str(&format!(" description={d:?}"));
    }
    s
}

impl Summary {
    /// One entry per forward: `+ added`, `~ old` then `becomes new` (joined by
    /// `changed_sep`), `- removed`.
    fn entries<'a>(&'a self, changed_sep: &'a str) -> impl Iterator<Item = String> + 'a {
        let added = self.added.iter().map(|a| format!("+ {}", describe_forward(a)));
        let changed = self.changed.iter().map(move |(o, n)| {
            let to = describe_forward(n);
            format!("~ {}{changed_sep}becomes {}", describe_forward(o), to.split_once(": ").map_or("", |x| x.1))
        });
        let removed = self.removed.iter().map(|r| format!("- {}", describe_forward(r)));
        added.chain(changed).chain(removed)
    }

    /// The change on one line for a log: at most `limit` forwards, then how many more.
    pub fn log_line(&self, limit: usize) -> String {
        let total = self.added.len() + self.changed.len() + self.removed.len();
        if total == 0 {
            return "no changes".into();
        }
        let mut parts: Vec<String> = self.entries(" ").take(limit).collect();
        if total > limit {
            parts.push(format!(
                "... and {} more ({} added, {} changed, {} removed in all)",
                total - limit,
                self.added.len(),
                self.changed.len(),
                self.removed.len()
            ));
        }
        parts.join("; ")
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        for entry in self.entries("\n  ") {
            writeln!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// Element-level difference between two plans of the same skeleton.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Delta {
    /// True when table, chains or set definitions differ: only a full apply will do.
    pub structural: bool,
    /// Counter objects to create (before elements are added).
    pub add_counters: Vec<String>,
    /// Elements to delete, per set (before additions, so a changed map entry is replaced).
    pub del_elements: Vec<(String, Element)>,
    /// Elements to add, per set.
    pub add_elements: Vec<(String, Element)>,
    /// Counter objects to delete (after elements referring to them are gone).
    pub del_counters: Vec<String>,
    /// What changed, for humans.
    pub summary: Summary,
    /// The whole new plan, when [`Plan::change_owner`] computed it (a large change): then
    /// taking it is cheaper than applying the elements one by one.
    #[serde(skip)]
    pub whole: Option<Box<Plan>>,
}

impl Delta {
    /// Fills in the counters and elements that differ between two plans of the same shape.
    fn objects_from(&mut self, old: &Plan, new: &Plan) {
        self.add_counters = new.counters.difference(&old.counters).cloned().collect();
        self.del_counters = old.counters.difference(&new.counters).cloned().collect();
        for (a, b) in old.sets.iter().zip(&new.sets) {
            for e in a.elements.difference(&b.elements) {
                self.del_elements.push((a.name.clone(), e));
            }
            for e in b.elements.difference(&a.elements) {
                self.add_elements.push((b.name.clone(), e));
            }
        }
    }

    /// True when the kernel needs no change.
    pub fn is_empty(&self) -> bool {
        !self.structural
            && self.add_counters.is_empty()
            && self.del_counters.is_empty()
            && self.del_elements.is_empty()
            && self.add_elements.is_empty()
    }

    /// Number of kernel objects the delta touches.
    pub fn size(&self) -> usize {
        self.add_counters.len() + self.del_counters.len() + self.del_elements.len() + self.add_elements.len()
    }

    /// Applies the counter and element changes (not the list of forwards) to `plan`.
    fn apply_objects(&self, plan: &mut Plan) {
        for c in &self.del_counters {
            plan.counters.remove(c);
        }
        for c in &self.add_counters {
            plan.counters.insert(c.clone());
        }
        for (s, e) in &self.del_elements {
            plan.set_mut(s).elements.remove(e);
        }
        for (s, e) in &self.add_elements {
            plan.set_mut(s).elements.insert(e.clone());
        }
    }

    /// Makes `plan` the new plan: takes the whole new plan when the delta carries one,
    /// otherwise applies it in place.
    pub fn take_into(&mut self, plan: &mut Plan) {
        match self.whole.take() {
            Some(whole) => *plan = *whole,
            None => self.apply_in_place(plan),
        }
    }

    /// Applies the delta to `old`, giving the new plan (`None` for a structural delta).
    pub fn apply(&self, old: &Plan, new_forwards: Vec<PlacedForward>) -> Option<Plan> {
        if self.structural {
            return None;
        }
        let mut p = old.clone();
        self.apply_objects(&mut p);
        p.forwards = new_forwards;
        Some(p)
    }
}

impl Plan {
    /// The change from `old` to `new`: elements and counters to add and delete.
    pub fn diff(old: &Plan, new: &Plan) -> Delta {
        let mut d = Delta { summary: summarize(old, new), ..Delta::default() };
        let same_shape = old.table == new.table
            && old.chains == new.chains
            && old.sets.len() == new.sets.len()
            && old
                .sets
                .iter()
                .zip(&new.sets)
                .all(|(a, b)| a.name == b.name && a.key == b.key && a.data == b.data && a.interval == b.interval);
        if !same_shape {
            d.structural = true;
            return d;
        }
        d.objects_from(old, new);
        d
    }
}

fn summarize(old: &Plan, new: &Plan) -> Summary {
    let index = |p: &Plan| -> BTreeMap<(String, String), PlacedForward> {
        p.forwards.iter().map(|f| ((f.owner.clone(), f.forward.name.clone()), f.clone())).collect()
    };
    let (o, n) = (index(old), index(new));
    let mut s = Summary::default();
    for (k, nf) in &n {
        match o.get(k) {
            None => s.added.push(nf.clone()),
            Some(of) if of != nf => s.changed.push((of.clone(), nf.clone())),
            Some(_) => {}
        }
    }
    for (k, of) in &o {
        if !n.contains_key(k) {
            s.removed.push(of.clone());
        }
    }
    s
}

/// Sort key of placed forwards: the system set first, then owners, then names.
fn placed_order(p: &PlacedForward) -> (bool, &str, &str) {
    (p.owner != SYSTEM_OWNER, p.owner.as_str(), p.forward.name.as_str())
}

impl Plan {
    /// Elements and counter one forward contributes, as (set, element) pairs.
    fn contribution(&self, p: &PlacedForward) -> Vec<(String, Element)> {
        let mut mini = skeleton(&self.table);
        mini.place(&p.owner, &p.forward, p.mark);
        let mut out = Vec::new();
        for s in mini.sets {
            for e in s.elements {
                out.push((s.name.clone(), e));
            }
        }
        out
    }

    /// Elements and counters a group of forwards contributes, as (set, element) pairs.
    fn contributions(&self, group: &[PlacedForward]) -> BTreeSet<(String, Element)> {
        let mut mini = skeleton(&self.table);
        for p in group {
            mini.place(&p.owner, &p.forward, p.mark);
        }
        mini.sets.into_iter().flat_map(|s| s.elements.into_iter().map(move |e| (s.name.clone(), e))).collect()
    }

    /// The new plan after a large change, compiled whole: comparing the sets of two plans
    /// (two linear merges) costs less than tracking every element of the change. `None`
    /// if the compiler disagrees with the key-by-key conflict check (then the caller goes
    /// element by element).
    fn recompiled(&self, removed: &[PlacedForward], added: &[PlacedForward], default_mark: u32) -> Option<Plan> {
        let gone: std::collections::HashSet<(&str, &str)> =
            removed.iter().map(|p| (p.owner.as_str(), p.forward.name.as_str())).collect();
        let mut sets: BTreeMap<&str, Vec<Forward>> = BTreeMap::new();
        for p in self.forwards.iter().filter(|p| !gone.contains(&(p.owner.as_str(), p.forward.name.as_str()))) {
            sets.entry(p.owner.as_str()).or_default().push(p.forward.clone());
        }
        for p in added {
            sets.entry(p.owner.as_str()).or_default().push(p.forward.clone());
        }
        let owned: Vec<OwnedSet> =
            sets.into_iter().map(|(owner, forwards)| OwnedSet { owner: owner.to_string(), forwards }).collect();
        // Every forward keeps the mark it was placed with: a plan has one default mark.
        compile(&self.table, default_mark, &owned).ok()
    }

    /// The forward whose counter is `counter`, if any.
    fn by_counter(&self, counter: &str) -> Option<&PlacedForward> {
        self.forwards.iter().find(|p| p.counter == counter)
    }

    /// The element-level delta that replaces `owner`'s forwards with `forwards`.
    ///
    /// Costs O(size of the owner's set + size of the change), not O(plan): only
    /// forwards that differ contribute elements, and conflicts are looked up by key.
    /// `delta.apply_in_place` then gives exactly `compile` of the new sets.
    pub fn replace_owner(&self, owner: &str, forwards: &[Forward], default_mark: u32) -> Result<Delta, Vec<Conflict>> {
        // change_owner skips the forwards that are already placed as they are.
        let seen: std::collections::HashSet<&str> = forwards.iter().map(|f| f.name.as_str()).collect();
        let remove: Vec<&str> =
            self.owned_by(owner).iter().map(|p| p.forward.name.as_str()).filter(|n| !seen.contains(n)).collect();
        self.change_owner(owner, &remove, forwards, default_mark)
    }

    /// The forwards of `owner`, ordered by name (a slice of [`Plan::forwards`]).
    pub fn owned_by(&self, owner: &str) -> &[PlacedForward] {
        let key = (owner != SYSTEM_OWNER, owner);
        let start = self.forwards.partition_point(|p| (p.owner != SYSTEM_OWNER, p.owner.as_str()) < key);
        let end = start + self.forwards[start..].partition_point(|p| p.owner == owner);
        &self.forwards[start..end]
    }

    /// The forward `name` of `owner`, found by binary search.
    pub fn placed(&self, owner: &str, name: &str) -> Option<&PlacedForward> {
        let key = (owner != SYSTEM_OWNER, owner, name);
        let at = self.forwards.partition_point(|p| placed_order(p) < key);
        self.forwards.get(at).filter(|p| p.owner == owner && p.forward.name == name)
    }

    /// The element-level delta that removes `owner`'s forwards named in `remove` (unknown
    /// names are ignored) and adds or replaces the forwards in `put`, by name.
    ///
    /// Costs O(size of the change · log plan): the forwards concerned are found by binary
    /// search and conflicts are looked up by key, so one `portctl add` in a plan of
    /// 60,000 forwards touches a handful of objects.
    pub fn change_owner(
        &self,
        owner: &str,
        remove: &[&str],
        put: &[Forward],
        default_mark: u32,
    ) -> Result<Delta, Vec<Conflict>> {
        let mut removed: Vec<PlacedForward> = Vec::new();
        let mut added: Vec<PlacedForward> = Vec::new();
        let mut summary = Summary::default();
        for f in put {
            let mark = f.mark.unwrap_or(default_mark);
            let old = self.placed(owner, &f.name);
            if old.is_some_and(|o| o.forward == *f && o.mark == mark) {
                continue;
            }
            let placed = PlacedForward {
                owner: owner.to_string(),
                forward: f.clone(),
                mark,
                counter: counter_name(owner, &f.name),
            };
            match old {
                Some(o) => {
                    summary.changed.push((o.clone(), placed.clone()));
                    removed.push(o.clone());
                    added.push(placed);
                }
                None => {
                    summary.added.push(placed.clone());
                    added.push(placed);
                }
            }
        }
        for name in remove {
            if let Some(o) = self.placed(owner, name) {
                summary.removed.push(o.clone());
                removed.push(o.clone());
            }
        }
        summary.added.sort_by(|a, b| a.forward.name.cmp(&b.forward.name));
        summary.removed.sort_by(|a, b| a.forward.name.cmp(&b.forward.name));
        summary.changed.sort_by(|a, b| a.0.forward.name.cmp(&b.0.forward.name));

        // Conflicts: a key of an added forward held by a forward that stays.
        let leaving: std::collections::HashSet<&str> = removed.iter().map(|p| p.counter.as_str()).collect();
        let counters = self.set(names::COUNTER);
        let mut conflicts = Vec::new();
        for a in &added {
            let f = &a.forward;
            let clash = f.claims().find_map(|(fam, proto, port)| {
                let holder = counters?.elements.with_key(&key(fam, proto, port))?;
                let Some(Value::Counter(c)) = &holder.data else { return None };
                if leaving.contains(c.as_str()) {
                    return None;
                }
                let (oo, on) =
                    self.by_counter(c).map_or(("?".into(), "?".into()), |p| (p.owner.clone(), p.forward.name.clone()));
                Some(Conflict {
                    owner: owner.to_string(),
                    name: f.name.clone(),
                    other_owner: oo,
                    other_name: on,
                    port,
                    proto,
                    family: fam,
                })
            });
            conflicts.extend(clash);
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }
        if removed.len() + added.len() > LARGE_CHANGE.max(self.forwards.len() / 4) {
            if let Some(new) = self.recompiled(&removed, &added, default_mark) {
                let mut d = Delta { summary, ..Delta::default() };
                d.objects_from(self, &new);
                d.whole = Some(Box::new(new));
                return Ok(d);
            }
        }

        let mut del = self.contributions(&removed);
        let mut add = self.contributions(&added);
        let both: Vec<(String, Element)> = del.intersection(&add).cloned().collect();
        for e in &both {
            del.remove(e);
            add.remove(e);
        }
        // Protected target ports may be shared by several forwards: keep an element that a
        // staying forward still needs, and do not re-add one that is already there.
        let staying = |e: &Element| {
            self.forwards
                .iter()
                .filter(|p| p.forward.protect && !leaving.contains(p.counter.as_str()))
                .any(|p| self.contribution(p).iter().any(|(s, pe)| s == names::PROTECT && pe == e))
        };
        del.retain(|(s, e)| s != names::PROTECT || !staying(e));
        let present = |s: &str, e: &Element| self.set(s).is_some_and(|set| set.elements.contains(e));
        add.retain(|(s, e)| !present(s, e) || del.contains(&(s.clone(), e.clone())));

        let old_counters: BTreeSet<&String> = removed.iter().map(|p| &p.counter).collect();
        let new_counters: BTreeSet<&String> = added.iter().map(|p| &p.counter).collect();
        Ok(Delta {
            structural: false,
            add_counters: new_counters.difference(&old_counters).map(|c| (*c).clone()).collect(),
            del_elements: del.into_iter().collect(),
            add_elements: add.into_iter().collect(),
            del_counters: old_counters.difference(&new_counters).map(|c| (*c).clone()).collect(),
            summary,
            whole: None,
        })
    }
}

impl Delta {
    /// Applies a delta from [`Plan::replace_owner`] to `plan` in place: elements,
    /// counters and the list of placed forwards (kept in `compile`'s order).
    pub fn apply_in_place(&self, plan: &mut Plan) {
        self.apply_objects(plan);
        let gone = self.summary.removed.iter().chain(self.summary.changed.iter().map(|(o, _)| o));
        if self.summary.removed.len() + self.summary.changed.len() <= 64 {
            // A few: find each by binary search.
            for p in gone {
                let at = plan.forwards.partition_point(|q| placed_order(q) < placed_order(p));
                if plan.forwards.get(at).is_some_and(|q| placed_order(q) == placed_order(p)) {
                    plan.forwards.remove(at);
                }
            }
        } else {
            let gone: std::collections::HashSet<(&str, &str)> =
                gone.map(|p| (p.owner.as_str(), p.forward.name.as_str())).collect();
            plan.forwards.retain(|p| !gone.contains(&(p.owner.as_str(), p.forward.name.as_str())));
        }
        for p in self.summary.added.iter().chain(self.summary.changed.iter().map(|(_, n)| n)) {
            let at = plan.forwards.partition_point(|q| placed_order(q) < placed_order(p));
            plan.forwards.insert(at, p.clone());
        }
    }
}
