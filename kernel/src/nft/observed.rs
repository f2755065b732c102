//! What the kernel holds ([`Observed`]) and how it differs from a plan: the value a read
//! returns, compared with the chains, sets and elements `apply` would build.
#![forbid(unsafe_code)]

use super::codec::{element_text, normalize, SetShape};
use super::consts as k;
use super::expr::{build_rule, chain_obj, hook_num, SetIds};
use super::raw::reparsed_text;
use crate::netlink::AlignedBuf;
use nftnl::{ProtoFamily, Table};
use portd_rules::plan::ChainType;
use portd_rules::plan::{Element, Plan};
use portd_rules::render;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;

/// What the kernel holds in portd's table, decoded with the types of an expected plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Packets and bytes per forward: the counters of the counted elements, summed by
    /// their comment (`OWNER/NAME`, see [`portd_rules::plan::PlacedForward::comment`]).
    pub counters: BTreeMap<String, (u64, u64)>,
    /// Elements of every set that could be decoded with the expected plan's types.
    pub sets: BTreeMap<String, BTreeSet<Element>>,
    /// Definition of every set in the kernel, decodable or not.
    pub set_shapes: BTreeMap<String, SetShape>,
    /// The size each set was created with (`size N`), where it has one. Not compared:
    /// sizes follow the number of elements at the last full apply.
    pub set_sizes: BTreeMap<String, u32>,
    /// Chains in kernel order, with their rules.
    pub chains: Vec<ObservedChain>,
    /// What could not be decoded or is unknown to the expected plan; non-empty means no match.
    pub problems: Vec<String>,
}

/// One chain as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedChain {
    /// Chain name.
    pub name: String,
    /// Hook attachment of a base chain.
    pub hook: Option<ObservedHook>,
    /// Each rule as libnftnl prints its expressions, e.g. `[ fib daddr type => reg 1 ] [ cmp eq reg 1 0x00000002 ] ...`.
    pub rules: Vec<String>,
}

/// Hook attachment of a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedHook {
    /// `filter` or `nat`.
    pub kind: String,
    /// `NF_INET_*` hook number.
    pub hook: u32,
    /// Priority.
    pub priority: i32,
    /// Policy verdict (1: accept).
    pub policy: u32,
}

impl Observed {
    /// True when the kernel holds exactly what [`Backend::apply`](super::Backend::apply)
    /// of `plan` builds: the same set definitions and elements, chains, hooks and rule
    /// expressions (counter values aside).
    pub fn matches(&self, plan: &Plan) -> bool {
        self.differences(plan).is_empty()
    }

    /// Every way the kernel differs from `plan`, one line each, for logs and status.
    pub fn differences(&self, plan: &Plan) -> Vec<String> {
        let mut out = self.problems.clone();
        for set in &plan.sets {
            match (SetShape::of(set), self.set_shapes.get(&set.name)) {
                (_, None) => {
                    out.push(format!("set {} is missing", set.name));
                    continue;
                }
                (Err(e), _) => out.push(format!("set {}: {e}", set.name)),
                (Ok(want), Some(have)) if want != *have => {
                    out.push(format!("set {} is defined as {have:?}, the plan wants {want:?}", set.name));
                }
                _ => {}
            }
            let want: BTreeSet<Element> = set.elements.iter().map(|e| normalize(&e)).collect();
            match self.sets.get(&set.name) {
                Some(have) if *have == want => {}
                Some(have) => {
                    let missing: Vec<&Element> = want.difference(have).collect();
                    let extra: Vec<&Element> = have.difference(&want).collect();
                    let mut line = format!(
                        "set {}: {} elements missing, {} not in the plan",
                        set.name,
                        missing.len(),
                        extra.len()
                    );
                    if let Some(e) = missing.first() {
                        line.push_str(&format!(", e.g. missing {}", element_text(e)));
                    }
                    if let Some(e) = extra.first() {
                        line.push_str(&format!(", e.g. extra {}", element_text(e)));
                    }
                    out.push(line);
                }
                None => out.push(format!("set {} could not be decoded", set.name)),
            }
        }
        for name in self.set_shapes.keys() {
            if plan.set(name).is_none() {
                out.push(format!("set {name} is not in the plan"));
            }
        }
        match expected_chains(plan) {
            Err(e) => out.push(format!("cannot build the plan's rules: {e}")),
            Ok(want) => {
                let names = |v: &[ObservedChain]| v.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
                if names(&want) != names(&self.chains) {
                    out.push(format!("chains are {:?}, the plan has {:?}", names(&self.chains), names(&want)));
                }
                for (w, h) in want.iter().zip(&self.chains) {
                    if w.hook != h.hook {
                        out.push(format!("chain {} is hooked as {:?}, the plan wants {:?}", w.name, h.hook, w.hook));
                    }
                    if w.rules.len() != h.rules.len() {
                        out.push(format!(
                            "chain {} has {} rules, the plan has {}",
                            w.name,
                            h.rules.len(),
                            w.rules.len()
                        ));
                    }
                    if let Some((i, (want, have))) = w.rules.iter().zip(&h.rules).enumerate().find(|(_, (a, b))| a != b)
                    {
                        out.push(format!("chain {} rule {}: kernel has {have}, the plan wants {want}", w.name, i + 1));
                    }
                }
            }
        }
        out
    }
}

/// The chains `apply(plan)` builds, each rule in the canonical text of [`rule_text`]:
/// built with the same code, encoded and parsed back as the kernel's dump is.
fn expected_chains(plan: &Plan) -> Result<Vec<ObservedChain>, String> {
    let ids = SetIds::of(plan);
    let table = CString::new(plan.table.as_str()).map_err(|_| "the table name has a NUL byte".to_string())?;
    let t = Table::new(&table, ProtoFamily::Inet);
    let mut buf = AlignedBuf::new(nftnl::nft_nlmsg_maxsize() as usize);
    let mut out = Vec::new();
    for c in &plan.chains {
        let chain = chain_obj(&t, c).map_err(|e| e.to_string())?;
        let mut rules = Vec::new();
        for r in &c.rules {
            let rule = build_rule(&chain, r, &ids).map_err(|e| e.to_string())?;
            let text = reparsed_text(&rule, &mut buf)
                .ok_or_else(|| format!("libnftnl cannot parse its own encoding of `{}`", render::rule(r)))?;
            rules.push(text);
        }
        let hook = c.base.map(|b| ObservedHook {
            kind: match b.kind {
                ChainType::Filter => "filter".into(),
                ChainType::Nat => "nat".into(),
            },
            hook: hook_num(b.hook),
            priority: b.priority,
            policy: k::NF_ACCEPT,
        });
        out.push(ObservedChain { name: c.name.clone(), hook, rules });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::sample_plan as plan;

    #[test]
    fn rules_render_to_nft_expressions() {
        let p = plan();
        let chains = expected_chains(&p).expect("builds");
        let input = chains.iter().find(|c| c.name == "nat_in").expect("nat_in");
        let redirect = chains.iter().find(|c| c.name == "redirect_in").expect("chain");
        let account = chains.iter().find(|c| c.name == "account_redirected").expect("chain");
        assert_eq!(input.hook, Some(ObservedHook { kind: "filter".into(), hook: 1, priority: -150, policy: 1 }));
        // as printed by `nft --debug=netlink` (plus the attributes the kernel reports back)
        assert!(
            input.rules[1]
                .starts_with("[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0x00000000 ]"),
            "{}",
            input.rules[1]
        );
        assert!(
            account.rules[0].starts_with(
                "[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ meta load l4proto => reg 1 ] [ ct load proto_dst => reg 9 , dir original ]"
            ),
            "{}",
            account.rules[0]
        );
        assert!(
            redirect.rules[3].ends_with(
                "[ lookup reg 1 set fwd_to dreg 1 0x0 ] [ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]"
            ),
            "{}",
            redirect.rules[3]
        );
        assert!(redirect.rules[1].contains("[ byteorder reg 1 = hton(reg 1, 2, 1) ]"), "{}", redirect.rules[1]);
    }
}
