//! `portctl doctor`: why traffic does not arrive. The daemon reads the kernel (other
//! tables' base chains and rules, legacy iptables, sockets, conntrack) into the plain
//! values of this module; the functions here decide, without I/O, what is wrong and how
//! to fix it.
//!
//! Rules are read in the text libnftnl prints for their expressions
//! (`[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] ...`); [`parse_rule`]
//! turns that into conditions and a verdict, and a chain walk asks, for the packet of a
//! forward after portd's redirect (or before it, for NAT), whether a chain accepts, drops
//! or rewrites it. What doctor cannot decode is "maybe", and a finding that depends on a
//! maybe says so and is a warning instead of an error.

pub mod legacy;

use crate::model::{Family, Proto};
use crate::plan::PlacedForward;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How bad a finding is; the order is most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Traffic of a forward does not arrive (portctl doctor exits 1).
    Error,
    /// It may not arrive, or will not soon.
    Warning,
    /// Worth knowing.
    Info,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// One problem, the forward it concerns and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Which check found it: `foreign-drop`, `foreign-nat`, `legacy-iptables`,
    /// `listener`, `conntrack`, `portd`.
    pub check: String,
    /// How bad it is.
    pub severity: Severity,
    /// `OWNER/NAME` of the forward concerned, if one.
    pub forward: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do, in concrete terms.
    pub fix: String,
}

/// Sorts findings most severe first (stable within a severity).
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by_key(|f| f.severity);
}

/// A netfilter hook of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// prerouting
    Prerouting,
    /// input
    Input,
    /// forward
    Forward,
    /// output
    Output,
    /// postrouting
    Postrouting,
}

impl Hook {
    /// From the kernel's hook number (NF_INET_*).
    pub fn from_num(n: u32) -> Option<Hook> {
        Some(match n {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => return None,
        })
    }
    fn name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// What makes a chain a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseHook {
    /// `filter`, `nat`, `route`.
    pub kind: String,
    /// Its hook.
    pub hook: Hook,
    /// Its priority.
    pub priority: i32,
    /// Policy drop (else accept).
    pub policy_drop: bool,
}

/// A chain of another table (or of a legacy iptables table), as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignChain {
    /// `ip`, `ip6`, `inet` (or `ip (legacy)`, `ip6 (legacy)`).
    pub family: String,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub name: String,
    /// Set for base chains.
    pub hook: Option<BaseHook>,
    /// The rules in order.
    pub rules: Vec<Rule>,
}

impl ForeignChain {
    fn legacy(&self) -> bool {
        self.family.ends_with("(legacy)")
    }
    fn applies_to(&self, family: Family) -> bool {
        match self.family.split(' ').next() {
            Some("ip") => family == Family::Ipv4,
            Some("ip6") => family == Family::Ipv6,
            Some("inet") => true,
            _ => false,
        }
    }
    fn title(&self) -> String {
        format!("table {} {} chain {}", self.family, self.table, self.name)
    }
}

/// A condition of a rule, as far as doctor understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// Layer-4 protocol number equals (or not).
    L4 {
        /// IPPROTO_*.
        proto: u8,
        /// `!=` instead of `==`.
        negate: bool,
    },
    /// Destination port within `lo..=hi` (or not).
    Dport {
        /// Lowest.
        lo: u16,
        /// Highest.
        hi: u16,
        /// Outside instead of inside.
        negate: bool,
    },
    /// Destination port in one of these ranges (or in none), from an anonymous set.
    DportIn {
        /// Inclusive ranges.
        ranges: Vec<(u16, u16)>,
        /// Outside instead of inside.
        negate: bool,
    },
    /// xtables `conntrack`/`state` match: the connection's state bits (xt_conntrack's
    /// ESTABLISHED 2, RELATED 4, NEW 8, SNAT 64, DNAT 128) intersect `mask` (or not).
    XtState {
        /// State bits.
        mask: u32,
        /// `!`.
        negate: bool,
    },
    /// `ct state` in one of these ranges of state values (or in none), from a set.
    CtStateIn {
        /// Inclusive ranges of state values (established 2, related 4, new 8).
        ranges: Vec<(u32, u32)>,
        /// Outside instead of inside.
        negate: bool,
    },
    /// `(ct status & mask) op value`.
    CtStatus(Bits),
    /// `(ct state & mask) op value`.
    CtState(Bits),
    /// `(meta mark & mask) op value`.
    Mark(Bits),
    /// Input interface name equals (or not).
    Iif {
        /// The name.
        name: String,
        /// `!=`.
        negate: bool,
    },
    /// `fib daddr type` equals (or not) this route type (2: local).
    FibDaddrType {
        /// RTN_*.
        rtype: u32,
        /// `!=`.
        negate: bool,
    },
    /// Anything else (set lookups, addresses, xtables matches): maybe.
    Unknown(String),
}

/// A masked comparison of a 32-bit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bits {
    /// Mask applied first (all ones when none).
    pub mask: u32,
    /// Value compared with.
    pub value: u32,
    /// `!=` instead of `==`.
    pub negate: bool,
}

impl Bits {
    fn test(&self, v: u32) -> bool {
        ((v & self.mask) == self.value) != self.negate
    }
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing final (counter, log, set mark): the next rule follows.
    Continue,
    /// accept
    Accept,
    /// drop
    Drop,
    /// reject
    Reject,
    /// jump CHAIN
    Jump(String),
    /// goto CHAIN
    Goto(String),
    /// return
    Return,
    /// redirect (to a port when known)
    Redirect(Option<u16>),
    /// dnat
    Dnat,
    /// A verdict doctor does not know (an xtables target, a queue).
    Unknown(String),
}

/// One rule: conditions and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// All must hold.
    pub conds: Vec<Cond>,
    /// What happens then.
    pub verdict: Verdict,
}

/// What a register holds while a rule's expressions are read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reg {
    L4,
    Dport,
    CtStatus,
    CtState,
    Mark,
    Iif,
    Fib,
    Imm(Vec<u8>),
    Other(String),
}

/// The bytes of the words libnftnl prints (`0x0000901f 0x...`), in memory order.
fn words(tokens: &[&str]) -> Vec<u8> {
    tokens
        .iter()
        .filter_map(|t| t.strip_prefix("0x"))
        .filter_map(|h| u32::from_str_radix(h, 16).ok())
        .flat_map(u32::to_ne_bytes)
        .collect()
}

fn u32_of(b: &[u8]) -> u32 {
    let mut w = [0u8; 4];
    for (d, s) in w.iter_mut().zip(b) {
        *d = *s;
    }
    u32::from_ne_bytes(w)
}

fn port_of(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// Parses a rule as libnftnl prints it (`[ NAME BODY] [ NAME BODY] ...`).
pub fn parse_rule(text: &str) -> Rule {
    parse_rule_in(text, &|_| None)
}

/// The keys of an anonymous set, by set name, as inclusive ranges of numbers (2-byte
/// keys such as ports as read big-endian, 4-byte keys such as `ct state` in host order).
pub type SetRanges<'a> = dyn Fn(&str) -> Option<Vec<(u32, u32)>> + 'a;

/// [`parse_rule`] with the anonymous sets its lookups may name (`tcp dport { 22, 80 }`,
/// `ct state { established, related }`).
pub fn parse_rule_in(text: &str, sets: &SetRanges<'_>) -> Rule {
    let mut regs: BTreeMap<String, Reg> = BTreeMap::new();
    let mut masks: BTreeMap<String, u32> = BTreeMap::new();
    let mut conds = Vec::new();
    let mut verdict = Verdict::Continue;
    for expr in text.split('[').map(|e| e.trim().trim_end_matches(']').trim()).filter(|e| !e.is_empty()) {
        let t: Vec<&str> = expr.split_whitespace().collect();
        let reg_after_arrow = || t.iter().position(|x| *x == "=>").and_then(|i| t.get(i + 2)).map(|r| r.to_string());
        // Whatever loads a register replaces what it held; the arms below say what, if known.
        if let Some(r) = reg_after_arrow() {
            masks.remove(&r);
            regs.insert(r, Reg::Other(expr.to_string()));
        }
        match t.as_slice() {
            ["meta", "load", what, ..] | ["ct", "load", what, ..] => {
                let kind = match (t[0], *what) {
                    ("meta", "l4proto") => Reg::L4,
                    ("meta", "mark") => Reg::Mark,
                    ("meta", "iifname") => Reg::Iif,
                    ("ct", "status") => Reg::CtStatus,
                    ("ct", "state") => Reg::CtState,
                    _ => Reg::Other(format!("{} {what}", t[0])),
                };
                if let Some(r) = reg_after_arrow() {
                    masks.remove(&r);
                    regs.insert(r, kind);
                }
            }
            ["payload", "load", len, "@", "transport", "header", "+", off, ..] => {
                let kind = if *len == "2b" && *off == "2" { Reg::Dport } else { Reg::Other(expr.to_string()) };
                if let Some(r) = reg_after_arrow() {
                    masks.remove(&r);
                    regs.insert(r, kind);
                }
            }
            ["fib", ..] if expr.contains("daddr") && expr.contains("type") => {
                if let Some(r) = reg_after_arrow() {
                    regs.insert(r, Reg::Fib);
                }
            }
            ["bitwise", "reg", r, "=", "(", "reg", _, "&", mask, ")", "^", x, ..] => {
                if words(&[x]) == [0, 0, 0, 0] {
                    masks.insert(r.to_string(), u32_of(&words(&[mask])));
                } else {
                    regs.insert(r.to_string(), Reg::Other(expr.to_string()));
                }
            }
            ["immediate", "reg", "0", v, rest @ ..] => {
                verdict = match *v {
                    "accept" => Verdict::Accept,
                    "drop" => Verdict::Drop,
                    "return" => Verdict::Return,
                    "jump" => Verdict::Jump(rest.last().unwrap_or(&"").to_string()),
                    "goto" => Verdict::Goto(rest.last().unwrap_or(&"").to_string()),
                    other => Verdict::Unknown(other.to_string()),
                };
            }
            ["immediate", "reg", r, data @ ..] => {
                regs.insert(r.to_string(), Reg::Imm(words(data)));
            }
            ["cmp", op, "reg", r, data @ ..] => {
                let bytes = words(data);
                let negate = *op == "neq";
                let bits = |v: u32| Bits { mask: masks.get(*r).copied().unwrap_or(u32::MAX), value: v, negate };
                let c = match (regs.get(*r), *op) {
                    (Some(Reg::L4), "eq" | "neq") => Cond::L4 { proto: bytes.first().copied().unwrap_or(0), negate },
                    (Some(Reg::Dport), "eq" | "neq") => match port_of(&bytes) {
                        Some(p) => Cond::Dport { lo: p, hi: p, negate },
                        None => Cond::Unknown(expr.to_string()),
                    },
                    (Some(Reg::Dport), "gte") => Cond::Dport { lo: port_of(&bytes).unwrap_or(0), hi: u16::MAX, negate },
                    (Some(Reg::Dport), "lte") => Cond::Dport { lo: 0, hi: port_of(&bytes).unwrap_or(u16::MAX), negate },
                    (Some(Reg::Dport), "gt") => {
                        Cond::Dport { lo: port_of(&bytes).unwrap_or(0).saturating_add(1), hi: u16::MAX, negate }
                    }
                    (Some(Reg::Dport), "lt") => {
                        Cond::Dport { lo: 0, hi: port_of(&bytes).unwrap_or(1).saturating_sub(1), negate }
                    }
                    (Some(Reg::CtStatus), "eq" | "neq") => Cond::CtStatus(bits(u32_of(&bytes))),
                    (Some(Reg::CtState), "eq" | "neq") => Cond::CtState(bits(u32_of(&bytes))),
                    (Some(Reg::Mark), "eq" | "neq") => Cond::Mark(bits(u32_of(&bytes))),
                    (Some(Reg::Iif), "eq" | "neq") => {
                        let name: String = bytes.iter().take_while(|b| **b != 0).map(|b| char::from(*b)).collect();
                        Cond::Iif { name, negate }
                    }
                    (Some(Reg::Fib), "eq" | "neq") => Cond::FibDaddrType { rtype: u32_of(&bytes), negate },
                    _ => Cond::Unknown(expr.to_string()),
                };
                // Two comparisons of one port register make a range.
                match (conds.last_mut(), &c) {
                    (Some(Cond::Dport { lo, hi, negate: false }), Cond::Dport { lo: l2, hi: h2, negate: false })
                        if (*l2 > 0 && *h2 == u16::MAX && *lo == 0) || (*l2 == 0 && *hi == u16::MAX) =>
                    {
                        *lo = (*lo).max(*l2);
                        *hi = (*hi).min(*h2);
                    }
                    _ => conds.push(c),
                }
            }
            ["lookup", "reg", r, "set", name, rest @ ..]
                if matches!(regs.get(*r), Some(Reg::Dport | Reg::CtState)) && !rest.contains(&"dreg") =>
            {
                let negate =
                    rest.last().and_then(|f| f.strip_prefix("0x")).and_then(|h| u32::from_str_radix(h, 16).ok())
                        == Some(1);
                match (sets(name), regs.get(*r)) {
                    (Some(ranges), Some(Reg::Dport)) => {
                        let ranges =
                            ranges.into_iter().map(|(lo, hi)| (lo.min(65535) as u16, hi.min(65535) as u16)).collect();
                        conds.push(Cond::DportIn { ranges, negate })
                    }
                    (Some(ranges), _) => conds.push(Cond::CtStateIn { ranges, negate }),
                    (None, _) => conds.push(Cond::Unknown(expr.to_string())),
                }
            }
            ["match", "name", name, "rev", rev, "info", hex] => {
                let info: Vec<u8> = (0..hex.len() / 2)
                    .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2).unwrap_or("zz"), 16).ok())
                    .collect();
                conds.extend(xt_match(name, rev.parse().unwrap_or(0), &info));
            }
            ["range", ..] | ["lookup", ..] | ["match", ..] | ["meta", ..] | ["payload", ..] | ["ct", ..] => {
                if t.get(1) != Some(&"set") {
                    conds.push(Cond::Unknown(expr.to_string()));
                }
            }
            ["counter", ..] | ["log", ..] | ["limit", ..] | ["quota", ..] | ["objref", ..] | ["notrack", ..] => {}
            ["reject", ..] => verdict = Verdict::Reject,
            ["redir", rest @ ..] => {
                let port =
                    rest.iter().position(|x| *x == "proto_min").and_then(|i| rest.get(i + 2)).and_then(|r| match regs
                        .get(*r)
                    {
                        Some(Reg::Imm(b)) => port_of(b),
                        _ => None,
                    });
                verdict = Verdict::Redirect(port);
            }
            ["nat", kind, ..] if *kind == "dnat" => verdict = Verdict::Dnat,
            ["target", "name", name, ..] => {
                verdict = match *name {
                    "REJECT" => Verdict::Reject,
                    "DNAT" => Verdict::Dnat,
                    "REDIRECT" => Verdict::Redirect(None),
                    n => Verdict::Unknown(n.to_string()),
                }
            }
            _ => conds.push(Cond::Unknown(expr.to_string())),
        }
    }
    Rule { conds, verdict }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// The conditions of an xtables match (`-m NAME`), from its revision and info bytes:
/// `tcp`/`udp` destination ports, `conntrack --ctstate` and `state --state`; anything
/// else (or any other option of those) is undecided.
pub fn xt_match(name: &str, rev: u8, info: &[u8]) -> Vec<Cond> {
    let unknown = || vec![Cond::Unknown(format!("-m {name}"))];
    match name {
        "tcp" | "udp" => {
            // xt_tcp / xt_udp: spts[2], dpts[2], then (tcp) option, flg_mask, flg_cmp, invflags
            let (Some(s0), Some(s1), Some(lo), Some(hi)) =
                (u16_at(info, 0), u16_at(info, 2), u16_at(info, 4), u16_at(info, 6))
            else {
                return unknown();
            };
            let inv = if name == "tcp" { info.get(11) } else { info.get(8) }.copied().unwrap_or(0);
            let mut out = Vec::new();
            if (s0, s1) != (0, u16::MAX) {
                out.push(Cond::Unknown("--sport".into()));
            }
            if name == "tcp" && info.get(9).copied().unwrap_or(0) != 0 {
                out.push(Cond::Unknown("--tcp-flags".into()));
            }
            if (lo, hi) != (0, u16::MAX) || inv & 0x02 != 0 {
                out.push(Cond::Dport { lo, hi, negate: inv & 0x02 != 0 });
            }
            out
        }
        "conntrack" if (1..=3).contains(&rev) => {
            // xt_conntrack_mtinfo1..3: 8 addresses (128 bytes), expires (8), l4proto,
            // 4 ports, match_flags @146, invert_flags @148, state_mask @150 (u8 in rev 1)
            let (Some(flags), Some(inv)) = (u16_at(info, 146), u16_at(info, 148)) else { return unknown() };
            let state = if rev == 1 { info.get(150).map(|b| u16::from(*b)) } else { u16_at(info, 150) };
            const STATE: u16 = 1;
            if flags != STATE {
                return unknown();
            }
            match state {
                Some(mask) => vec![Cond::XtState { mask: u32::from(mask), negate: inv & STATE != 0 }],
                None => unknown(),
            }
        }
        "state" => match info.get(0..4) {
            Some(b) => vec![Cond::XtState { mask: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), negate: false }],
            None => unknown(),
        },
        _ => unknown(),
    }
}

/// The packet doctor follows through a chain.
#[derive(Debug, Clone, Copy)]
pub struct Packet {
    /// IPPROTO_TCP or IPPROTO_UDP.
    pub l4: u8,
    /// Destination port at this hook.
    pub dport: u16,
    /// Packet mark at this hook.
    pub mark: u32,
    /// ct status bits (IPS_DST_NAT after portd's redirect).
    pub ct_status: u32,
}

/// IPS_DST_NAT | IPS_DST_NAT_DONE.
const CT_DNAT: u32 = 0x20 | 0x100;
/// The ct state bit of a new connection.
const CT_NEW: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Yes,
    No,
    Maybe,
}

fn cond_matches(c: &Cond, p: &Packet) -> Match {
    let b = |x: bool| if x { Match::Yes } else { Match::No };
    match c {
        Cond::L4 { proto, negate } => b((*proto == p.l4) != *negate),
        Cond::Dport { lo, hi, negate } => b((*lo..=*hi).contains(&p.dport) != *negate),
        Cond::DportIn { ranges, negate } => b(ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p.dport)) != *negate),
        Cond::CtStatus(bits) => b(bits.test(p.ct_status)),
        Cond::CtState(bits) => b(bits.test(CT_NEW)),
        Cond::CtStateIn { ranges, negate } => b(ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&CT_NEW)) != *negate),
        Cond::XtState { mask, negate } => {
            let state = CT_NEW | if p.ct_status & 0x20 != 0 { 128 } else { 0 };
            b((state & mask != 0) != *negate)
        }
        Cond::Mark(bits) => b(bits.test(p.mark)),
        // Traffic from other hosts never arrives on lo; on any other name it may.
        Cond::Iif { name, negate } if name == "lo" => b(*negate),
        Cond::Iif { .. } => Match::Maybe,
        // portd redirects only traffic addressed to this host (RTN_LOCAL).
        Cond::FibDaddrType { rtype, negate } => b((*rtype == 2) != *negate),
        Cond::Unknown(_) => Match::Maybe,
    }
}

fn rule_matches(r: &Rule, p: &Packet) -> Match {
    let mut m = Match::Yes;
    for c in &r.conds {
        match cond_matches(c, p) {
            Match::No => return Match::No,
            Match::Maybe => m = Match::Maybe,
            Match::Yes => {}
        }
    }
    m
}

/// Where a walk through a base chain ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    /// Accepted (or left by the chain's end with policy accept).
    Accepted,
    /// Dropped or rejected: by `chain`'s rule number `rule` (1-based), or by the policy.
    Dropped { chain: String, rule: Option<usize> },
    /// Rewritten by a NAT rule (chain, rule number, verdict).
    Nat { chain: String, rule: usize, verdict: Verdict },
}

/// The result of a walk and the rules it passed that might have mattered.
#[derive(Debug, Default)]
struct Walk {
    end: Option<End>,
    /// `chain rule N: text` of rules that might match, passed by.
    maybe: Vec<String>,
    /// Chains passed through (jumps), for recognising managers.
    chains: Vec<String>,
}

const MAX_DEPTH: usize = 16;

fn walk(
    table: &BTreeMap<&str, &ForeignChain>,
    chain: &ForeignChain,
    p: &Packet,
    w: &mut Walk,
    depth: usize,
) -> Option<End> {
    w.chains.push(chain.name.clone());
    for (i, r) in chain.rules.iter().enumerate() {
        let m = rule_matches(r, p);
        if m == Match::No {
            continue;
        }
        let definite = m == Match::Yes;
        let at = || format!("chain {} rule {}", chain.name, i + 1);
        match &r.verdict {
            Verdict::Continue => {}
            Verdict::Accept if definite => return Some(End::Accepted),
            Verdict::Drop | Verdict::Reject if definite => {
                return Some(End::Dropped { chain: chain.name.clone(), rule: Some(i + 1) })
            }
            Verdict::Redirect(_) | Verdict::Dnat if definite => {
                return Some(End::Nat { chain: chain.name.clone(), rule: i + 1, verdict: r.verdict.clone() })
            }
            Verdict::Jump(target) | Verdict::Goto(target) => match table.get(target.as_str()) {
                Some(sub) if depth < MAX_DEPTH && sub.hook.is_none() => {
                    let before = w.maybe.len();
                    let end = walk(table, sub, p, w, depth + 1);
                    if !definite && (end.is_some() || w.maybe.len() > before) {
                        w.maybe.push(format!("{} (jump {target}, taken or not)", at()));
                        continue;
                    }
                    if end.is_some() {
                        return end;
                    }
                    if matches!(r.verdict, Verdict::Goto(_)) && definite {
                        return None;
                    }
                }
                _ => w.maybe.push(format!("{} (jump {target}, not followed)", at())),
            },
            Verdict::Return if definite => return None,
            Verdict::Return => w.maybe.push(format!("{} (return)", at())),
            // A drop that may match changes nothing about a path that ends in a drop, and
            // is no reason to report a path that does not.
            Verdict::Drop | Verdict::Reject => {}
            v => w.maybe.push(format!("{} ({})", at(), verdict_word(v))),
        }
    }
    None
}

/// At most five entries, then how many more.
fn listed(items: &[String]) -> String {
    let mut s = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        s.push_str(&format!(" and {} more", items.len() - 5));
    }
    s
}

fn verdict_word(v: &Verdict) -> String {
    match v {
        Verdict::Continue => "continue".into(),
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Reject => "reject".into(),
        Verdict::Jump(c) => format!("jump {c}"),
        Verdict::Goto(c) => format!("goto {c}"),
        Verdict::Return => "return".into(),
        Verdict::Redirect(Some(p)) => format!("redirect to :{p}"),
        Verdict::Redirect(None) => "redirect".into(),
        Verdict::Dnat => "dnat".into(),
        Verdict::Unknown(n) => n.clone(),
    }
}

/// Walks base chain `chain` of its table with `p`.
fn walk_base(chains: &[ForeignChain], chain: &ForeignChain, p: &Packet) -> Walk {
    let table: BTreeMap<&str, &ForeignChain> = chains
        .iter()
        .filter(|c| c.family == chain.family && c.table == chain.table)
        .map(|c| (c.name.as_str(), c))
        .collect();
    let mut w = Walk::default();
    let end = walk(&table, chain, p, &mut w, 0);
    w.end = Some(match end {
        Some(e) => e,
        None if chain.hook.as_ref().is_some_and(|h| h.policy_drop) => {
            End::Dropped { chain: chain.name.clone(), rule: None }
        }
        None => End::Accepted,
    });
    w
}

/// A firewall manager recognised from the names of its tables and chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Ufw,
    Firewalld,
    Docker,
    None,
}

fn manager(chain: &ForeignChain, passed: &[String]) -> Manager {
    if chain.table == "firewalld" {
        Manager::Firewalld
    } else if passed.iter().any(|c| c.starts_with("ufw-") || c.starts_with("ufw6-")) {
        Manager::Ufw
    } else if passed.iter().any(|c| c.starts_with("DOCKER")) {
        Manager::Docker
    } else {
        Manager::None
    }
}

fn proto_word(l4: u8) -> &'static str {
    if l4 == 6 {
        "tcp"
    } else {
        "udp"
    }
}

fn l4(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

fn fwd_name(f: &PlacedForward) -> String {
    format!("{}/{}", f.owner, f.forward.name)
}

/// What the other tables (and legacy iptables) do to the forwards: drops after the
/// redirect on the input hook (and filter chains on prerouting), and NAT before portd's
/// on prerouting and output.
pub fn check_chains(chains: &[ForeignChain], forwards: &[PlacedForward], portd_nat_priority: i32) -> Vec<Finding> {
    let mut out = Vec::new();
    for chain in chains {
        let Some(h) = &chain.hook else { continue };
        let filter = h.kind == "filter";
        let drop_check = filter && matches!(h.hook, Hook::Input | Hook::Prerouting);
        let nat_check = h.kind == "nat" && matches!(h.hook, Hook::Prerouting | Hook::Output);
        for f in forwards {
            // One finding per chain and forward: the first proto/family it hits.
            let mut done = false;
            for &proto in f.forward.proto.protos() {
                for &family in f.forward.family.families() {
                    if done || !chain.applies_to(family) {
                        continue;
                    }
                    if drop_check {
                        // After the redirect (input); before it on prerouting filter chains
                        // at a priority before portd's redirect, the public port.
                        let before_nat = h.hook == Hook::Prerouting && h.priority < portd_nat_priority;
                        let p = Packet {
                            l4: l4(proto),
                            dport: if before_nat { f.forward.port.start } else { f.forward.to.start },
                            mark: if before_nat { 0 } else { f.mark },
                            ct_status: if before_nat { 0 } else { CT_DNAT },
                        };
                        if let Some(x) = drop_finding(chains, chain, h, f, &p, family) {
                            out.push(x);
                            done = true;
                        }
                    }
                    if nat_check && (h.hook == Hook::Prerouting || f.forward.local) {
                        let p = Packet { l4: l4(proto), dport: f.forward.port.start, mark: 0, ct_status: 0 };
                        if let Some(x) = nat_finding(chains, chain, h, f, &p, portd_nat_priority) {
                            out.push(x);
                            done = true;
                        }
                    }
                }
            }
        }
    }
    out
}

fn drop_finding(
    chains: &[ForeignChain],
    chain: &ForeignChain,
    h: &BaseHook,
    f: &PlacedForward,
    p: &Packet,
    family: Family,
) -> Option<Finding> {
    let w = walk_base(chains, chain, p);
    let Some(End::Dropped { chain: at, rule }) = &w.end else { return None };
    let proto = proto_word(p.l4);
    let by = match rule {
        Some(n) => format!("rule {n} of chain {at} drops it"),
        None => format!(
            "its policy is drop and no rule accepts it (chain {} hook {} priority {})",
            chain.name,
            h.hook.name(),
            h.priority
        ),
    };
    let family_word = if chain.applies_to(Family::Ipv4) && chain.applies_to(Family::Ipv6) {
        String::new()
    } else {
        format!(" ({family:?})").to_lowercase()
    };
    let when =
        if p.ct_status == 0 { "before portd's redirect, on public" } else { "after portd's redirect, on target" };
    let mut message = format!(
        "{} drops the forward's traffic{family_word} {when} port {proto}/{}: {by}; an accept in portd's table does not override a drop in another table",
        chain.title(),
        p.dport
    );
    let severity = if w.maybe.is_empty() {
        Severity::Error
    } else {
        message.push_str(&format!(
            "; unless one of these rules that doctor cannot decide accepts it first: {}",
            listed(&w.maybe)
        ));
        Severity::Warning
    };
    let nft_family = chain.family.split(' ').next().unwrap_or("inet");
    let fix = if chain.legacy() {
        let cmd = if nft_family == "ip6" { "ip6tables-legacy" } else { "iptables-legacy" };
        match rule {
            Some(n) => format!(
                "delete that rule: `{cmd} -t {} -D {at} {n}` (see it with `{cmd} -t {} -S {at}`), or accept redirected traffic before it: `{cmd} -t {} -I {} -m conntrack --ctstate DNAT -j ACCEPT`",
                chain.table, chain.table, chain.table, chain.name
            ),
            None => format!(
                "accept redirected traffic: `{cmd} -t {} -I {} -m conntrack --ctstate DNAT -j ACCEPT`",
                chain.table, chain.name
            ),
        }
    } else {
        let nft = format!("nft insert rule {nft_family} {} {} ct status dnat accept", chain.table, chain.name);
        match manager(chain, &w.chains) {
            Manager::Ufw => format!(
                "ufw manages this chain: add `-A ufw-before-input -m conntrack --ctstate DNAT -j ACCEPT` to /etc/ufw/before.rules (and `-A ufw6-before-input ...` to before6.rules) above COMMIT, then `ufw reload`; or open the target port: `ufw allow {}/{proto}`",
                p.dport
            ),
            Manager::Firewalld => format!(
                "firewalld manages this table: `firewall-cmd --permanent --add-port={}/{proto} && firewall-cmd --reload` (or let firewalld forward the port itself: `--add-forward-port=port={}:proto={proto}:toport={}`)",
                p.dport, f.forward.port.start, f.forward.to.start
            ),
            _ => format!("accept redirected traffic before the drop: `{nft}` (and keep it in the file that builds table {} {})", nft_family, chain.table),
        }
    };
    Some(Finding {
        check: if chain.legacy() { "legacy-iptables" } else { "foreign-drop" }.into(),
        severity,
        forward: Some(fwd_name(f)),
        message,
        fix,
    })
}

fn nat_finding(
    chains: &[ForeignChain],
    chain: &ForeignChain,
    h: &BaseHook,
    f: &PlacedForward,
    p: &Packet,
    portd_priority: i32,
) -> Option<Finding> {
    if h.priority > portd_priority {
        return None;
    }
    let w = walk_base(chains, chain, p);
    let (definite, what) = match &w.end {
        Some(End::Nat { chain: at, rule, verdict }) => {
            (true, format!("rule {rule} of chain {at} ({})", verdict_word(verdict)))
        }
        _ => {
            let nat: Vec<&String> =
                w.maybe.iter().filter(|m| m.contains("(redirect") || m.contains("(dnat)")).collect();
            match nat.first() {
                Some(m) => (false, format!("{m}, if it matches")),
                None => return None,
            }
        }
    };
    let proto = proto_word(p.l4);
    let order = if h.priority < portd_priority {
        format!("at priority {}, before portd's {portd_priority}", h.priority)
    } else {
        format!("at the same priority as portd's ({portd_priority}), so which runs first is not defined")
    };
    let docker = manager(chain, &w.chains) == Manager::Docker;
    let mut message = format!(
        "{} ({} hook, {order}) rewrites public port {proto}/{} with {what}; the first NAT binding wins, so portd's redirect to {} never happens",
        chain.title(),
        h.hook.name(),
        p.dport,
        f.forward.to.start
    );
    if docker {
        message.push_str("; these are Docker's chains: a container publishes this port");
    }
    let fix = if docker {
        format!("stop publishing port {} in Docker (`docker ps` shows which container has `-p {}:...`), or give the forward another public port", p.dport, p.dport)
    } else {
        let fam = chain.family.split(' ').next().unwrap_or("inet");
        format!(
            "remove that rule (`nft -a list chain {fam} {} {}` shows its handle; `nft delete rule {fam} {} {} handle N`), or give the forward another public port",
            chain.table, chain.name, chain.table, chain.name
        )
    };
    Some(Finding {
        check: "foreign-nat".into(),
        severity: if definite && h.priority < portd_priority { Severity::Error } else { Severity::Warning },
        forward: Some(fwd_name(f)),
        message,
        fix,
    })
}

/// Listeners: nothing on a target port, or (user forwards) a socket of another uid.
/// `holders(proto, port)` gives the uids holding it; `owner_uid` the uid of a user owner.
pub fn check_listeners(
    forwards: &[PlacedForward],
    holders: impl Fn(Proto, u16) -> Vec<u32>,
    owner_uid: impl Fn(&str) -> Option<u32>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for f in forwards {
        for &proto in f.forward.proto.protos() {
            let to = f.forward.to;
            let idle: Vec<u16> = (to.start..=to.end).filter(|p| holders(proto, *p).is_empty()).collect();
            let word = proto_word(l4(proto));
            if !idle.is_empty() {
                let ports = if idle.len() == 1 {
                    format!("port {word}/{}", idle[0])
                } else {
                    format!("{} ports of {word}/{}-{} (first {})", idle.len(), to.start, to.end, idle[0])
                };
                out.push(Finding {
                    check: "listener".into(),
                    severity: Severity::Error,
                    forward: Some(fwd_name(f)),
                    message: format!(
                        "nothing listens on target {ports}: connections to public port {} are redirected there and refused",
                        f.forward.port.start
                    ),
                    fix: format!(
                        "start the application on port {} (listening on `::` with IPv4 too, or on both 0.0.0.0 and ::); `ss -l{}np sport = :{}` shows what listens",
                        idle[0],
                        if proto == Proto::Tcp { "t" } else { "u" },
                        idle[0]
                    ),
                });
            }
            let Some(uid) = owner_uid(&f.owner) else { continue };
            if let Some((port, other)) =
                (to.start..=to.end).find_map(|p| holders(proto, p).into_iter().find(|u| *u != uid).map(|u| (p, u)))
            {
                out.push(Finding {
                    check: "listener".into(),
                    severity: Severity::Error,
                    forward: Some(fwd_name(f)),
                    message: format!(
                        "target port {word}/{port} is held by uid {other}, not by the forward's owner (uid {uid}): its traffic goes to another user's program"
                    ),
                    fix: format!("stop the program of uid {other} on port {port} (`ss -l{}np sport = :{port}`), or forward to a port the owner's application holds", if proto == Proto::Tcp { "t" } else { "u" }),
                });
            }
        }
    }
    out
}

/// Conntrack: `count` of `max` entries (new connections are dropped at the limit).
pub fn check_conntrack(count: u64, max: u64) -> Option<Finding> {
    if max == 0 || count * 10 < max * 9 {
        return None;
    }
    Some(Finding {
        check: "conntrack".into(),
        severity: Severity::Error,
        forward: None,
        message: format!(
            "the conntrack table holds {count} of at most {max} entries ({}%); at the limit the kernel drops new connections, redirected ones included",
            count * 100 / max
        ),
        fix: format!(
            "raise the limit: `sysctl -w net.netfilter.nf_conntrack_max={}` (persist it in /etc/sysctl.d/), and find what fills the table with `conntrack -L | awk '{{print $1, $5}}' | sort | uniq -c | sort -rn | head`; `conntrack -F` empties it at once",
            max.saturating_mul(2)
        ),
    })
}

/// What portd knows of itself.
#[derive(Debug, Clone, Default)]
pub struct SelfState {
    /// The kernel holds the plan.
    pub in_sync: bool,
    /// portd's table name.
    pub table: String,
    /// Times the repair back-off was hit since start.
    pub backoff_hits: u64,
    /// Seconds until the next repair attempt when standing back now.
    pub standing_back_secs: Option<u64>,
    /// `OWNER/NAME` and reason of each suspended forward.
    pub suspended: Vec<(String, String)>,
}

/// Findings about portd itself.
pub fn check_self(s: &SelfState) -> Vec<Finding> {
    let mut out = Vec::new();
    if !s.in_sync {
        out.push(Finding {
            check: "portd".into(),
            severity: Severity::Error,
            forward: None,
            message: format!("table inet {} in the kernel differs from what portd put there", s.table),
            fix: format!(
                "portd restores it by itself; if this stays, find the program that edits it (`nft monitor` shows changes of table inet {}), stop it, then `portctl reload`",
                s.table
            ),
        });
    }
    if s.backoff_hits > 0 {
        let now = match s.standing_back_secs {
            Some(n) => format!("; it stands back now, for {n} more seconds"),
            None => String::new(),
        };
        out.push(Finding {
            check: "portd".into(),
            severity: if s.standing_back_secs.is_some() { Severity::Error } else { Severity::Warning },
            forward: None,
            message: format!(
                "another program kept changing table inet {} and portd stood back from repairing it {} time(s) since it started{now}",
                s.table, s.backoff_hits
            ),
            fix: "find the program that rewrites the ruleset (`nft monitor`; a firewall reload loop, a configuration manager) and keep it away from table inet {table}".replace("{table}", &s.table),
        });
    }
    for (name, reason) in &s.suspended {
        out.push(Finding {
            check: "portd".into(),
            severity: Severity::Warning,
            forward: Some(name.clone()),
            message: format!("forward {name} is suspended (kept, but not in the kernel): {reason}"),
            fix: "it comes back by itself when allowed again; fix the cause named above (a grant in /etc/portd/portd.yaml and `portctl reload`, a conflicting forward, the other uid's program on the target port)".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests;
