//! What the kernel holds ([`Observed`]) and how it differs from a plan: the value a read
//! returns, compared with the chains, sets and elements `apply` would build.
#![forbid(unsafe_code)]

use super::codec::{element_text, normalize};
use super::expr::expected_chains;
use portd_rules::plan::{Element, Plan};
use std::collections::{BTreeMap, BTreeSet};

/// What the kernel holds in portd's table, decoded with the types of an expected plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// Named counters: packets and bytes.
    pub counters: BTreeMap<String, (u64, u64)>,
    /// Elements of every set that could be decoded with the expected plan's types.
    pub sets: BTreeMap<String, BTreeSet<Element>>,
    /// Definition of every set in the kernel, decodable or not.
    pub set_shapes: BTreeMap<String, SetShape>,
    /// Chains in kernel order, with their rules.
    pub chains: Vec<ObservedChain>,
    /// What could not be decoded or is unknown to the expected plan; non-empty means no match.
    pub problems: Vec<String>,
}

/// Kernel definition of a set: the attributes that `apply` sets from a plan [`Set`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetShape {
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// nft datatype of the key (concatenations: 6 bits per field).
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// Datatype of map data (0: none).
    pub data_type: u32,
    /// Length of map data (0: none).
    pub data_len: u32,
    /// Object type of object maps (0: none).
    pub obj_type: u32,
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
    /// True when the kernel holds exactly what [`Backend::apply`] of `plan` builds: the
    /// same counters, set definitions and elements, chains, hooks and rule expressions.
    pub fn matches(&self, plan: &Plan) -> bool {
        self.differences(plan).is_empty()
    }

    /// Every way the kernel differs from `plan`, one line each, for logs and status.
    pub fn differences(&self, plan: &Plan) -> Vec<String> {
        let mut out = self.problems.clone();
        let have: BTreeSet<&String> = self.counters.keys().collect();
        let want: BTreeSet<&String> = plan.counters.iter().collect();
        out.extend(want.difference(&have).map(|c| format!("counter {c} is missing")));
        out.extend(have.difference(&want).map(|c| format!("counter {c} is not in the plan")));
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
