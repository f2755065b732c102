//! The skeleton every plan shares (sets and chains, empty), and compiling owners' forward
//! sets into a plan: each forward contributes elements and one counter.

use super::table::{
    element_comment, names, BaseChain, Chain, ChainType, Conflict, Hook, KeyExpr, OwnedSet, PlacedForward, Plan, Rule,
    Set, SYSTEM_OWNER,
};
use crate::element::{Elements, FieldType, Value};
use crate::model::{Family, Forward, Proto};

pub(super) fn key(f: Family, p: Proto, port: u16) -> [Value; 3] {
    [Value::NfProto(f), Value::InetProto(p), Value::InetService(port)]
}

/// The key of a forward of both families: one element serves IPv4 and IPv6.
pub(super) fn port_key(p: Proto, port: u16) -> [Value; 2] {
    [Value::InetProto(p), Value::InetService(port)]
}

const KEY: [FieldType; 3] = [FieldType::NfProto, FieldType::InetProto, FieldType::InetService];
const PORT_KEY: [FieldType; 2] = [FieldType::InetProto, FieldType::InetService];

fn set(name: &str, comment: &str, key: &[FieldType], data: Option<FieldType>, interval: bool) -> Set {
    Set {
        name: name.into(),
        comment: comment.into(),
        key: key.to_vec(),
        data,
        interval,
        counter: false,
        elements: Elements::new(),
    }
}

fn counted(mut s: Set) -> Set {
    s.counter = true;
    s
}

/// The fixed skeleton: every set, empty, and the chains of an empty plan. `mark` is the
/// default mark, which the counting rule of forwards that keep it sets; `steer` adds the
/// steered maps. Which chains a plan has depends on what it holds ([`Plan::fit_chains`]).
pub(super) fn skeleton(table: &str, mark: u32, steer: bool) -> Plan {
    use names::*;
    use FieldType as T;
    let k_if = [T::NfProto, T::InetProto, T::InetService, T::Ifname];
    let sets = vec![
        set(TO, "public port -> local port, forwards of both families", &PORT_KEY, Some(T::InetService), false),
        set(TO_FAMILY, "public port -> local port, forwards of one family", &KEY, Some(T::InetService), false),
        counted(set(COUNT, "packets and bytes per public port, forwards of both families", &PORT_KEY, None, false)),
        counted(set(
            COUNT_CHECKED,
            "packets and bytes per public port, forwards of both families restricted to interfaces or sources",
            &PORT_KEY,
            None,
            false,
        )),
        counted(set(COUNT_FAMILY, "packets and bytes per public port, the other forwards", &KEY, None, false)),
        set(MARK, "public port -> packet mark, where it is not the default", &KEY, Some(T::Mark), false),
        set(NOLOCAL, "public ports not redirected for this host's own connections (local: false)", &KEY, None, false),
        set(IFACE_KEYS, "public ports restricted to interfaces", &KEY, None, false),
        set(IFACE, "interfaces allowed per public port", &k_if, None, false),
        set(SRC_KEYS, "public ports restricted to source networks", &KEY, None, false),
        set(SRC4, "IPv4 sources allowed per public port", &[T::InetProto, T::InetService, T::Ipv4Addr], None, true),
        set(SRC6, "IPv6 sources allowed per public port", &[T::InetProto, T::InetService, T::Ipv6Addr], None, true),
        set(PROTECT, "local ports that refuse connections not redirected by portd", &KEY, None, false),
    ];
    let mut sets = sets;
    if steer {
        sets.push(set(
            STEER,
            "public port -> local port, steered forwards of both families",
            &PORT_KEY,
            Some(T::InetService),
            false,
        ));
        sets.push(set(
            STEER_FAMILY,
            "public port -> local port, steered forwards of one family",
            &KEY,
            Some(T::InetService),
            false,
        ));
        sets.push(set(
            STEER_MORE,
            "public ports of steered forwards checked or marked at input (interfaces, sources, a mark of their own)",
            &KEY,
            None,
            false,
        ));
    }
    let mut plan =
        Plan { table: table.into(), mark, sets, chains: Vec::new(), forwards: Vec::new(), steer, conntrack: false };
    plan.fit_chains();
    plan
}

/// Which base chains a plan needs: NAT ones for redirected forwards, the input chain of
/// steered forwards that need checks, marks or `protect`, raw chains that untrack steered
/// connections where conntrack runs; and which rules of the steer input chain:
/// `protect`'s drop and the lookup of `fwd_steer_more` only while some forward needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    nat: bool,
    /// the steer input chain: a forward with `protect`, or a steered one that needs
    /// checks or a mark of its own
    steer_in: bool,
    untrack: bool,
    /// a steered forward with interfaces, sources or a mark of its own (`fwd_steer_more`)
    more: bool,
    /// a forward with `protect` (`fwd_protect`)
    protect: bool,
}

/// The chains of a layout, regular chains before the base chains that jump to them.
fn chains(mark: u32, l: Layout) -> Vec<Chain> {
    use names::*;
    let qualify = || {
        vec![
            Rule::ReturnUnlessIface { keys: IFACE_KEYS.into(), allowed: IFACE.into() },
            Rule::ReturnUnlessSource { family: Family::Ipv4, keys: SRC_KEYS.into(), allowed: SRC4.into() },
            Rule::ReturnUnlessSource { family: Family::Ipv6, keys: SRC_KEYS.into(), allowed: SRC6.into() },
        ]
    };
    let redirect = || {
        let mut v = Vec::new();
        for proto in [Proto::Tcp, Proto::Udp] {
            v.push(Rule::Redirect { proto, map: TO.into(), key: KeyExpr::Port });
            v.push(Rule::Redirect { proto, map: TO_FAMILY.into(), key: KeyExpr::Family });
        }
        v
    };
    let base = |kind, hook, priority| Some(BaseChain { kind, hook, priority });
    let mut chains = Vec::new();
    if l.nat {
        // A redirected connection's packets are accounted for at input, after NAT: its
        // public port is the conntrack entry's original destination port. Its first
        // packet passed redirect_in's checks (interfaces, sources) or redirect_local's
        // (`local: false`), so every redirected packet counts. Cheapest first: a forward
        // counted by a rule is in no set the rules after it look up; the default kind
        // (both families, the default mark, `local: true`, no interfaces or sources)
        // costs one lookup, which counts and marks.
        // (nft types `ct original proto-dst` only after `meta l4proto tcp` or `udp`: one
        // rule per protocol.)
        let mut account = Vec::new();
        for (set, key) in
            [(COUNT, KeyExpr::OrigPort), (COUNT_CHECKED, KeyExpr::OrigPort), (COUNT_FAMILY, KeyExpr::OrigFamily)]
        {
            for proto in [Proto::Tcp, Proto::Udp] {
                account.push(if set == COUNT_FAMILY {
                    Rule::CountSetMark { set: set.into(), map: MARK.into(), key, proto: Some(proto) }
                } else {
                    Rule::Count { set: set.into(), key, mark, then_return: true, proto: Some(proto) }
                });
            }
        }
        chains.extend([
            Chain { name: "redirect_in".into(), base: None, rules: [qualify(), redirect()].concat() },
            Chain { name: "redirect_local".into(), base: None, rules: redirect() },
            Chain { name: "account_redirected".into(), base: None, rules: account },
            Chain {
                name: "prerouting".into(),
                base: base(ChainType::Nat, Hook::Prerouting, -100),
                rules: vec![Rule::JumpIfLocal { chain: "redirect_in".into() }],
            },
            Chain {
                name: "output".into(),
                base: base(ChainType::Nat, Hook::Output, -100),
                rules: vec![Rule::JumpIfLocalKeyNotIn { set: NOLOCAL.into(), chain: "redirect_local".into() }],
            },
            Chain {
                // What a redirected connection's client sends, from another host or (on
                // loopback) from this one; nothing of portd's sees the app's answers.
                // Then `protect`, on a connection's first packet only.
                name: "nat_in".into(),
                base: base(ChainType::Filter, Hook::Input, -150),
                rules: vec![
                    Rule::GotoIfRedirected { chain: "account_redirected".into() },
                    Rule::DropUnredirected { set: PROTECT.into() },
                ],
            },
        ]);
    }
    if l.steer_in {
        // A steered connection keeps its public port and reaches this host's input hook
        // as it is. Its forward is counted by its sockets, not here: a steered forward
        // that has no interfaces, sources or mark of its own costs its packets nothing
        // of portd's, and while every forward is of that kind (and none has `protect`)
        // this chain does not exist. Otherwise one chain at input checks and marks what
        // a client sends to the forwards that need it (`fwd_steer_more`), from another
        // host or from this one (loopback; steer_local), and drops unredirected new
        // connections to protected targets; nothing of portd's sees the app's answers.
        // (Their rules' counters count packets too, unread: a steered forward's count
        // is its sockets'.)
        let count_the_rest = || {
            vec![
                Rule::Count { set: COUNT_CHECKED.into(), key: KeyExpr::Port, mark, then_return: true, proto: None },
                Rule::CountSetMark { set: COUNT_FAMILY.into(), map: MARK.into(), key: KeyExpr::Family, proto: None },
            ]
        };
        // Without NAT forwards every element of the sets below is a steered (TCP) one:
        // no other packet matches them, and the protocol check is left out.
        let mut steer_in = Vec::new();
        if l.nat {
            steer_in.push(Rule::ReturnUnlessTcp);
        }
        if l.protect {
            steer_in.push(Rule::DropProtected { set: PROTECT.into() });
        }
        if l.more {
            steer_in.push(Rule::GotoIfKeyIn { set: STEER_MORE.into(), chain: "steer_more".into() });
            chains.extend([
                Chain {
                    name: "steer_local".into(),
                    base: None,
                    rules: [vec![Rule::ReturnIfKeyIn { set: NOLOCAL.into() }], count_the_rest()].concat(),
                },
                Chain {
                    name: "steer_more".into(),
                    base: None,
                    rules: [
                        vec![
                            Rule::GotoIfLoopback { chain: "steer_local".into() },
                            Rule::RejectUnlessIface { keys: IFACE_KEYS.into(), allowed: IFACE.into() },
                            Rule::RejectUnlessSource {
                                family: Family::Ipv4,
                                keys: SRC_KEYS.into(),
                                allowed: SRC4.into(),
                            },
                            Rule::RejectUnlessSource {
                                family: Family::Ipv6,
                                keys: SRC_KEYS.into(),
                                allowed: SRC6.into(),
                            },
                        ],
                        count_the_rest(),
                    ]
                    .concat(),
                },
            ]);
        }
        chains.push(Chain {
            name: "steer_in".into(),
            base: base(ChainType::Filter, Hook::Input, -150),
            rules: steer_in,
        });
    }
    if l.untrack {
        // Where conntrack runs, steered connections take no entry in either direction:
        // what the app answers (source port: the public port, most of what a steering
        // host sends) and what reaches a steered port of this host is untracked.
        let untrack = |sport: bool, if_local: bool| {
            vec![
                Rule::Notrack { set: STEER.into(), key: KeyExpr::Port, sport, if_local },
                Rule::Notrack { set: STEER_FAMILY.into(), key: KeyExpr::Family, sport, if_local },
            ]
        };
        chains.push(Chain {
            name: "raw_prerouting".into(),
            base: base(ChainType::Filter, Hook::Prerouting, -300),
            // Loopback packets were untracked on their way out (raw_output).
            rules: [vec![Rule::ReturnIfLoopback], untrack(false, true)].concat(),
        });
        chains.push(Chain {
            name: "raw_output".into(),
            base: base(ChainType::Filter, Hook::Output, -300),
            rules: [untrack(true, false), untrack(false, true)].concat(),
        });
    }
    chains
}

/// The sets whose emptiness a steer plan's chains follow ([`Plan::layout`]).
pub(super) const LAYOUT_SETS: [&str; 4] = [names::TO, names::TO_FAMILY, names::STEER_MORE, names::PROTECT];

impl Plan {
    /// True when this plan's own rules redirect with NAT (which turns conntrack on): every
    /// forward of a NAT plan, the UDP forwards of a steer plan.
    pub fn redirects(&self) -> bool {
        !self.steer || self.holds(names::TO) || self.holds(names::TO_FAMILY)
    }

    /// True when `p`'s TCP part is steered and counted by its connections' sockets (the
    /// BPF data plane's `counts` and sock_diag), not by a counted set: a steered forward
    /// without a mark of its own, or with `mark: 0` ([`Plan::place`]).
    pub fn counted_by_sockets(&self, p: &PlacedForward) -> bool {
        p.forward.proto.protos().contains(&Proto::Tcp)
            && Counting::of(&p.forward, Proto::Tcp, p.mark, self.mark, self.steer) == Counting::Sockets
    }

    /// The mark `p`'s packets get: the mark it was placed with, but none for a forward
    /// that is steered alone (TCP) without a mark of its own.
    pub fn packet_mark(&self, p: &PlacedForward) -> u32 {
        if self.counted_by_sockets(p) && p.forward.proto.protos() == [Proto::Tcp] {
            0
        } else {
            p.mark
        }
    }

    /// True when set `name` has an element.
    pub(super) fn holds(&self, name: &str) -> bool {
        self.set(name).is_some_and(|s| !s.elements.is_empty())
    }

    fn layout(&self) -> Layout {
        let nat = self.redirects();
        let more = self.steer && self.holds(names::STEER_MORE);
        let protect = self.holds(names::PROTECT);
        Layout {
            nat,
            steer_in: self.steer && (more || protect),
            untrack: self.steer && (nat || self.conntrack),
            more,
            protect,
        }
    }

    /// True when a steer plan untracks its steered connections (raw chains): conntrack
    /// runs in the namespace, for another program or for this plan's NAT forwards.
    pub fn untracks(&self) -> bool {
        self.layout().untrack
    }

    /// Makes the chains those of what the plan holds now; true when they changed (a
    /// structural change: the table is replaced whole).
    pub fn fit_chains(&mut self) -> bool {
        let want = chains(self.mark, self.layout());
        if want == self.chains {
            return false;
        }
        self.chains = want;
        true
    }

    /// The plan as it is, but for a namespace where conntrack runs (or not) for another
    /// program's rules; true when its chains changed.
    pub fn set_conntrack(&mut self, on: bool) -> bool {
        self.conntrack = on;
        self.fit_chains()
    }
}

impl Plan {
    /// An empty plan: the skeleton with no forwards; `mark` is the default mark.
    pub fn empty(table: &str, mark: u32) -> Plan {
        skeleton(table, mark, false)
    }

    /// An empty plan that steers TCP forwards when `steer` is set.
    pub fn empty_with(table: &str, mark: u32, steer: bool) -> Plan {
        skeleton(table, mark, steer)
    }

    /// Adds one forward's elements. A forward of both families with the default mark
    /// takes two per port and protocol: its target in `fwd_to` and its counter in
    /// `fwd_count` (`fwd_count_checked` with `interfaces` or `sources`), keyed by protocol
    /// and port alone. Other forwards are keyed by family
    /// too, in `fwd_to_family` and `fwd_count_family`, with their mark in `fwd_mark`
    /// unless it is 0.
    pub(super) fn place(&mut self, owner: &str, f: &Forward, default_mark: u32) {
        use names::*;
        let comment = element_comment(owner, &f.name);
        let c = comment.as_str();
        let mark = f.mark.unwrap_or(default_mark);
        let both = f.family == crate::model::FamilySel::Both;
        let restricted = !f.interfaces.is_empty() || !f.sources.is_empty();
        let (steer, default) = (self.steer, self.mark);
        let counting = |proto: Proto| Counting::of(f, proto, mark, default, steer);
        // Where the target goes: a steered TCP forward's to the maps the sk_lookup program follows.
        let maps = |proto: Proto| if steer && proto == Proto::Tcp { (STEER, STEER_FAMILY) } else { (TO, TO_FAMILY) };
        if both {
            for &proto in f.proto.protos() {
                for port in f.port.ports() {
                    let k = port_key(proto, port);
                    if let Counting::Port(set) = counting(proto) {
                        self.insert(set, &k, None, c);
                    }
                    self.insert(maps(proto).0, &k, Some(Value::InetService(f.target_of(port))), c);
                }
            }
        }
        for &fam in f.family.families() {
            for &proto in f.proto.protos() {
                let how = counting(proto);
                for port in f.port.ports() {
                    let k = key(fam, proto, port);
                    if !both {
                        self.insert(maps(proto).1, &k, Some(Value::InetService(f.target_of(port))), c);
                    }
                    if let Counting::Family(m) = how {
                        self.insert(COUNT_FAMILY, &k, None, c);
                        if let Some(m) = m {
                            self.insert(MARK, &k, Some(Value::Mark(m)), c);
                        }
                    }
                    if how != Counting::Sockets && !f.local {
                        self.insert(NOLOCAL, &k, None, c);
                    }
                    if steer && proto == Proto::Tcp && (restricted || how != Counting::Sockets) {
                        self.insert(STEER_MORE, &k, None, c);
                    }
                    if !f.interfaces.is_empty() {
                        self.insert(IFACE_KEYS, &k, None, c);
                        for i in &f.interfaces {
                            let mut ki = k.to_vec();
                            ki.push(Value::Ifname(i.clone()));
                            self.insert(IFACE, &ki, None, c);
                        }
                    }
                    if !f.sources.is_empty() {
                        self.insert(SRC_KEYS, &k, None, c);
                        for s in &f.sources {
                            let (set, net) = match (fam, s) {
                                (Family::Ipv4, ipnet::IpNet::V4(n)) => (SRC4, Value::Ipv4Net(*n)),
                                (Family::Ipv6, ipnet::IpNet::V6(n)) => (SRC6, Value::Ipv6Net(*n)),
                                _ => continue,
                            };
                            self.insert(set, &[Value::InetProto(proto), Value::InetService(port), net], None, c);
                        }
                    }
                    // Several forwards may protect one local port: its element carries the
                    // comment of the first of them in `compile`'s order.
                    let target = key(fam, proto, f.target_of(port));
                    if f.protect && self.set_mut(PROTECT).elements.with_key(&target).is_none() {
                        self.insert(PROTECT, &target, None, c);
                    }
                }
            }
        }
        self.forwards.push(PlacedForward { owner: owner.into(), forward: f.clone(), mark });
    }

    /// The plan with `owner`'s forwards replaced by `forwards` (sorted by name), compiled
    /// whole, every other owner's forward as it is placed. `None` if the compiler finds a
    /// conflict (then the caller goes element by element and names it).
    pub(super) fn recompiled_with(&self, owner: &str, forwards: &[&Forward], default_mark: u32) -> Option<Plan> {
        let mut sets: Vec<(&str, Vec<(&Forward, u32)>)> = Vec::new();
        let mut inserted = false;
        for p in &self.forwards {
            if p.owner == owner {
                continue;
            }
            match sets.last_mut() {
                Some((o, v)) if *o == p.owner => v.push((&p.forward, p.mark)),
                _ => sets.push((p.owner.as_str(), vec![(&p.forward, p.mark)])),
            }
        }
        let mine: Vec<(&Forward, u32)> = forwards.iter().map(|f| (*f, f.mark.unwrap_or(default_mark))).collect();
        for (i, (o, _)) in sets.iter().enumerate() {
            if placed_order_key(owner) < placed_order_key(o) {
                sets.insert(i, (owner, mine.clone()));
                inserted = true;
                break;
            }
        }
        if !inserted {
            sets.push((owner, mine));
        }
        // Every forward keeps the mark it was placed with: a plan has one default mark.
        let mut new = compile_placed(&self.table, self.mark, self.steer, &sets).ok()?;
        new.set_conntrack(self.conntrack);
        Some(new)
    }
}

/// How [`Plan::place`] counts and marks one protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counting {
    /// A steered forward without a mark of its own (or `mark: 0`): its connections' sockets count it
    /// (the BPF data plane and sock_diag), and it is in no counted set.
    Sockets,
    /// Keyed by `l4proto . port` in this counted set; the lookup ORs in the default mark.
    Port(&'static str),
    /// Keyed by family too, in `fwd_count_family`, with this mark in `fwd_mark` (none:
    /// no mark).
    Family(Option<u32>),
}

impl Counting {
    /// How protocol `proto` of `f`, placed with the effective mark `mark`, is counted in a
    /// plan whose default mark is `default` (`steer`: a steer plan).
    pub(crate) fn of(f: &Forward, proto: Proto, mark: u32, default: u32, steer: bool) -> Counting {
        use names::{COUNT, COUNT_CHECKED};
        let both = f.family == crate::model::FamilySel::Both;
        let restricted = !f.interfaces.is_empty() || !f.sources.is_empty();
        if steer && proto == Proto::Tcp {
            // Steered: counted by its sockets, unless it has a mark of its own (not 0):
            // then the steer input chain marks and counts its packets. Its checks
            // (interfaces, sources) are made there too, after steer_in's lookup of
            // `fwd_steer_more`; the host's own connections of a `local: false` one are
            // left alone by the sk_lookup program itself.
            match f.mark {
                None | Some(0) => Counting::Sockets,
                Some(m) if both && m == default => Counting::Port(COUNT_CHECKED),
                own => Counting::Family(own.filter(|m| *m != 0)),
            }
        } else if both && mark == default {
            // Both families and the default mark: counted by `l4proto . port` alone, in
            // `COUNT` (one lookup) or, when restricted or `local: false`, `COUNT_CHECKED`
            // (after the checks).
            Counting::Port(if restricted || !f.local { COUNT_CHECKED } else { COUNT })
        } else {
            Counting::Family((mark != 0).then_some(mark))
        }
    }
}

/// Where an owner's forwards go among the plan's: the system set first, then by owner.
fn placed_order_key(owner: &str) -> (bool, &str) {
    (owner != SYSTEM_OWNER, owner)
}

/// Compiles owners' forwards, given in `compile`'s order (system first, then by owner;
/// each set by name) with each forward's effective mark.
fn compile_placed(
    table: &str,
    mark: u32,
    steer: bool,
    sets: &[(&str, Vec<(&Forward, u32)>)],
) -> Result<Plan, Vec<Conflict>> {
    let mut plan = skeleton(table, mark, steer);
    let total: usize = sets.iter().map(|(_, v)| v.len()).sum();
    plan.forwards.reserve(total);
    let mut claims: std::collections::HashMap<(Family, Proto, u16), (&str, &str)> = Default::default();
    claims.reserve(total * 2);
    let mut conflicts = Vec::new();
    for (owner, forwards) in sets {
        for (f, m) in forwards {
            let clash = f.claims().find_map(|(fam, proto, port)| {
                let (o, n) = claims.get(&(fam, proto, port)).filter(|(o, _)| *o != *owner)?;
                Some(Conflict {
                    owner: owner.to_string(),
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
            claims.extend(f.claims().map(|c| (c, (*owner, f.name.as_str()))));
            plan.place(owner, f, *m);
        }
    }
    if conflicts.is_empty() {
        plan.fit_chains();
        Ok(plan)
    } else {
        Err(conflicts)
    }
}

/// Compiles every owner's forwards into one plan, refusing cross-owner conflicts.
///
/// Forwards within one set were validated against each other already; this checks
/// claims across owners. Every conflict is reported, each naming the other forward.
pub fn compile(table: &str, default_mark: u32, sets: &[OwnedSet]) -> Result<Plan, Vec<Conflict>> {
    let borrowed: Vec<(&str, Vec<&Forward>)> =
        sets.iter().map(|s| (s.owner.as_str(), s.forwards.iter().collect())).collect();
    compile_borrowed(table, default_mark, &borrowed)
}

/// [`compile`] of owners' sets that others own: `(owner, forwards)` in any order.
pub fn compile_borrowed(table: &str, default_mark: u32, sets: &[(&str, Vec<&Forward>)]) -> Result<Plan, Vec<Conflict>> {
    compile_dispatched(table, default_mark, false, sets)
}

/// [`compile_borrowed`], steering TCP forwards when `steer` is set.
pub fn compile_dispatched(
    table: &str,
    default_mark: u32,
    steer: bool,
    sets: &[(&str, Vec<&Forward>)],
) -> Result<Plan, Vec<Conflict>> {
    let mut ordered: Vec<&(&str, Vec<&Forward>)> = sets.iter().collect();
    ordered.sort_by(|a, b| placed_order_key(a.0).cmp(&placed_order_key(b.0)));
    let placed: Vec<(&str, Vec<(&Forward, u32)>)> = ordered
        .into_iter()
        .map(|(owner, forwards)| {
            let mut fws: Vec<(&Forward, u32)> = forwards.iter().map(|f| (*f, f.mark.unwrap_or(default_mark))).collect();
            fws.sort_by(|a, b| a.0.name.cmp(&b.0.name));
            (*owner, fws)
        })
        .collect();
    compile_placed(table, default_mark, steer, &placed)
}
