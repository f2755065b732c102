//! Stale redirections: the `fwd_to` entries a change removes or points elsewhere. Their
//! established flows keep the old NAT binding until conntrack forgets them, so the
//! daemon deletes those conntrack entries after each change.

use super::delta::Delta;
use super::table::{names, Plan};
use crate::element::{Element, Value};
use crate::model::{Family, Proto};
use std::collections::{BTreeMap, BTreeSet};

/// A mapping whose flows must be forgotten: public (family, proto, port) -> old target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stale {
    /// Address family.
    pub family: Family,
    /// Protocol.
    pub proto: Proto,
    /// Public port.
    pub port: u16,
    /// Target the flows were redirected to.
    pub old_to: u16,
}

/// Mappings of `old` that `new` removes or points elsewhere.
pub fn stale_mappings(old: &Plan, new: &Plan) -> Vec<Stale> {
    let (Some(o), Some(n)) = (old.set(names::TO), new.set(names::TO)) else { return Vec::new() };
    let new_map: BTreeMap<Vec<Value>, Option<Value>> = n.elements.iter().map(|e| (e.key, e.data)).collect();
    let mut out = BTreeSet::new();
    for Element { key, data, .. } in o.elements.iter() {
        if new_map.get(&key).is_some_and(|d| *d == data) {
            continue;
        }
        if let (
            [Value::NfProto(family), Value::InetProto(proto), Value::InetService(port)],
            Some(Value::InetService(to)),
        ) = (key.as_slice(), &data)
        {
            out.insert(Stale { family: *family, proto: *proto, port: *port, old_to: *to });
        }
    }
    out.into_iter().collect()
}

/// Mappings a delta drops or retargets: every deleted `fwd_to` entry (an unchanged one
/// is never in a delta).
pub fn stale_in_delta(d: &Delta) -> Vec<Stale> {
    d.del_elements
        .iter()
        .filter(|(s, _)| s == names::TO)
        .filter_map(|(_, e)| match (e.key.as_slice(), &e.data) {
            (
                [Value::NfProto(family), Value::InetProto(proto), Value::InetService(port)],
                Some(Value::InetService(to)),
            ) => Some(Stale { family: *family, proto: *proto, port: *port, old_to: *to }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Forward, PortRange};
    use crate::plan::{compile, OwnedSet};

    fn plan(to: Option<u16>) -> Plan {
        let forwards =
            to.map(|t| vec![Forward::new("dns", PortRange::single(53), PortRange::single(t))]).unwrap_or_default();
        compile("portd", 1, &[OwnedSet { owner: "system".into(), forwards }]).expect("plan")
    }

    #[test]
    fn changed_and_removed_targets_are_stale_unchanged_are_not() {
        assert!(stale_mappings(&plan(Some(5353)), &plan(Some(5353))).is_empty());
        let changed = stale_mappings(&plan(Some(5353)), &plan(Some(5354)));
        assert_eq!(changed.len(), 2, "ipv4 and ipv6: {changed:?}");
        assert!(changed.iter().all(|s| s.port == 53 && s.old_to == 5353 && s.proto == Proto::Tcp));
        assert_eq!(stale_mappings(&plan(Some(5353)), &plan(None)).len(), 2);
        assert!(stale_mappings(&plan(None), &plan(Some(5353))).is_empty());
    }

    #[test]
    fn a_delta_names_the_entries_it_deletes() {
        let (old, new) = (plan(Some(5353)), plan(Some(5354)));
        let from_delta = stale_in_delta(&Plan::diff(&old, &new));
        assert_eq!(from_delta, stale_mappings(&old, &new), "a retarget: both families, old target");
        assert!(stale_in_delta(&Plan::diff(&plan(None), &old)).is_empty(), "an addition leaves nothing stale");
        let removed = stale_in_delta(&Plan::diff(&old, &plan(None)));
        assert_eq!(removed.len(), 2);
        assert!(removed.iter().all(|s| s.old_to == 5353));
    }
}
