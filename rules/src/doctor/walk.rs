//! Following a forward's packet through a base chain and the chains it jumps to:
//! accepted, dropped (where), rewritten by NAT (where), and the rules on the way that
//! doctor could not decide.

use super::rule::{Cond, ForeignChain, Rule, Verdict};
use std::collections::BTreeMap;

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
    /// Not tracked by conntrack: a steered connection (portd's raw chains untrack it),
    /// whose `ct state` is `untracked`, never `new`.
    pub untracked: bool,
}

impl Packet {
    /// nft's `ct state` bit of the packet: new, or untracked (64).
    fn nft_state(&self) -> u32 {
        if self.untracked {
            CT_UNTRACKED
        } else {
            CT_NEW
        }
    }
}

/// IPS_DST_NAT | IPS_DST_NAT_DONE.
pub(super) const CT_DNAT: u32 = 0x20 | 0x100;
/// The ct state bit of a new connection.
const CT_NEW: u32 = 8;
/// The ct state bit of an untracked packet (nft); xt_conntrack's is 256.
const CT_UNTRACKED: u32 = 64;
const XT_UNTRACKED: u32 = 256;

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
        Cond::CtState(bits) => b(bits.test(p.nft_state())),
        Cond::CtStateIn { ranges, negate } => {
            b(ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p.nft_state())) != *negate)
        }
        Cond::XtState { mask, negate } => {
            let state = if p.untracked { XT_UNTRACKED } else { CT_NEW | if p.ct_status & 0x20 != 0 { 128 } else { 0 } };
            b((state & mask != 0) != *negate)
        }
        Cond::Mark(bits) => b(bits.test(p.mark)),
        // Traffic from other hosts never arrives on lo, nor on the bridges and veths of
        // containers; on any other name it may.
        Cond::Iif { name, negate } if never_outside(name) => b(*negate),
        Cond::Iif { .. } => Match::Maybe,
        // portd redirects only traffic addressed to this host (RTN_LOCAL).
        Cond::FibDaddrType { rtype, negate } => b((*rtype == 2) != *negate),
        // Addressed to this host (portd redirects only that) from another host's unicast
        // address.
        Cond::AddrType { dst, mask, negate } => {
            b((mask & if *dst { RTN_LOCAL_BIT } else { RTN_UNICAST_BIT } != 0) != *negate)
        }
        Cond::Comment(_) => Match::Yes,
        Cond::Unknown(_) => Match::Maybe,
    }
}

/// `1 << RTN_LOCAL` and `1 << RTN_UNICAST`, as xtables' addrtype masks write them.
const RTN_LOCAL_BIT: u32 = 1 << 2;
const RTN_UNICAST_BIT: u32 = 1 << 1;

/// Interfaces traffic from other hosts never comes in on: loopback, and the bridges and
/// veth ends that Docker, Podman, CNI, libvirt, LXC and Incus create for containers.
fn never_outside(name: &str) -> bool {
    name == "lo"
        || name == "docker0"
        || ["br-", "podman", "cni", "virbr", "lxcbr", "incusbr", "veth"].iter().any(|p| name.starts_with(p))
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
pub(super) enum End {
    /// Accepted (or left by the chain's end with policy accept).
    Accepted,
    /// Dropped or rejected: by `chain`'s rule number `rule` (1-based), or by the policy.
    Dropped { chain: String, rule: Option<usize> },
    /// Rewritten by a NAT rule (chain, rule number, verdict).
    Nat { chain: String, rule: usize, verdict: Verdict },
}

/// The result of a walk and the rules it passed that might have mattered.
#[derive(Debug, Default)]
pub(super) struct Walk {
    pub(super) end: Option<End>,
    /// `chain rule N: text` of rules that might match, passed by.
    pub(super) maybe: Vec<String>,
    /// Chains passed through (jumps), for recognising managers.
    pub(super) chains: Vec<String>,
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
pub(super) fn listed(items: &[String]) -> String {
    let mut s = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        s.push_str(&format!(" and {} more", items.len() - 5));
    }
    s
}

pub(super) fn verdict_word(v: &Verdict) -> String {
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
pub(super) fn walk_base(chains: &[ForeignChain], chain: &ForeignChain, p: &Packet) -> Walk {
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
