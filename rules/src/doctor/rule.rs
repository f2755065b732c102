//! The rules of other tables as doctor reads them: base chains, conditions and
//! verdicts, parsed from the text libnftnl prints for a rule's expressions, and the
//! xtables matches iptables-nft and legacy iptables use.

use crate::model::Family;
use std::collections::BTreeMap;

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
    pub(super) fn name(self) -> &'static str {
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
    pub(super) fn legacy(&self) -> bool {
        self.family.ends_with("(legacy)")
    }
    pub(super) fn applies_to(&self, family: Family) -> bool {
        match self.family.split(' ').next() {
            Some("ip") => family == Family::Ipv4,
            Some("ip6") => family == Family::Ipv6,
            Some("inet") => true,
            _ => false,
        }
    }
    pub(super) fn title(&self) -> String {
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
    /// xtables `addrtype`: the route type of the destination (`dst`) or source address
    /// is one of the types of `mask` (bit `1 << RTN_*`; LOCAL is 4, UNICAST 2), or not.
    AddrType {
        /// Destination (else source) address.
        dst: bool,
        /// Bits `1 << RTN_*`.
        mask: u32,
        /// `!`.
        negate: bool,
    },
    /// A comment (xtables `-m comment`): always matches; programs name themselves in it.
    Comment(String),
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
    pub(super) fn test(&self, v: u32) -> bool {
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

impl Rule {
    /// The destination port ranges the rule matches (inclusive; empty when it matches
    /// no port, or only a negated one).
    pub fn dports(&self) -> Vec<(u16, u16)> {
        self.conds
            .iter()
            .filter_map(|c| match c {
                Cond::Dport { lo, hi, negate: false } => Some(vec![(*lo, *hi)]),
                Cond::DportIn { ranges, negate: false } => Some(ranges.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
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
                    // A masked comparison keeps its mask (an address prefix, `ip saddr A/N`).
                    _ => match masks.get(*r) {
                        Some(m) => Cond::Unknown(format!("{expr} mask 0x{m:08x}")),
                        None => Cond::Unknown(expr.to_string()),
                    },
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
                    n if NON_TERMINAL_TARGETS.contains(&n) => Verdict::Continue,
                    n => Verdict::Unknown(n.to_string()),
                }
            }
            _ => conds.push(Cond::Unknown(expr.to_string())),
        }
    }
    Rule { conds, verdict }
}

/// xtables targets after which the next rule follows (they log, mark or count).
pub(super) const NON_TERMINAL_TARGETS: [&str; 11] =
    ["LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "TRACE", "CLASSIFY", "DSCP", "TCPMSS", "AUDIT", "CHECKSUM"];

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
        // xt_comment_info: the text, NUL-terminated, in 256 bytes.
        "comment" => {
            vec![Cond::Comment(info.iter().take_while(|b| **b != 0).map(|b| char::from(*b)).collect())]
        }
        // xt_addrtype_info (rev 0): source, dest (u16 masks), invert_source, invert_dest
        // (u32); xt_addrtype_info_v1: source, dest, flags (INVERT_SOURCE 1, INVERT_DEST 2,
        // LIMIT_IFACE_IN 4, LIMIT_IFACE_OUT 8).
        "addrtype" if rev <= 1 => {
            let (Some(src), Some(dst)) = (u16_at(info, 0), u16_at(info, 2)) else { return unknown() };
            let (inv_src, inv_dst, iface) = if rev == 0 {
                (
                    info.get(4..8).is_some_and(|b| b.iter().any(|x| *x != 0)),
                    info.get(8..12).is_some_and(|b| b.iter().any(|x| *x != 0)),
                    false,
                )
            } else {
                let f = info.get(4..8).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(0);
                (f & 1 != 0, f & 2 != 0, f & 12 != 0)
            };
            let mut out = Vec::new();
            if iface {
                out.push(Cond::Unknown("-m addrtype --limit-iface-in/out".into()));
            }
            if src != 0 {
                out.push(Cond::AddrType { dst: false, mask: u32::from(src), negate: inv_src });
            }
            if dst != 0 {
                out.push(Cond::AddrType { dst: true, mask: u32::from(dst), negate: inv_dst });
            }
            out
        }
        "state" => match info.get(0..4) {
            Some(b) => vec![Cond::XtState { mask: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), negate: false }],
            None => unknown(),
        },
        _ => unknown(),
    }
}
