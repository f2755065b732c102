//! Stale redirections: the `fwd_to` entries a change removes or points elsewhere. Their
//! established flows keep the old NAT binding until conntrack forgets them, so the
//! daemon deletes those conntrack entries after each change.

use super::delta::Delta;
use super::table::{names, Plan};
use crate::element::{ElementRef, FieldRef};
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

/// The mappings one `fwd_to` or `fwd_to_family` element stands for: an element of a
/// forward of both families stands for IPv4 and IPv6. Read in place.
fn mappings(set: &str, r: ElementRef<'_>) -> Vec<Stale> {
    match r.parts() {
        Some(p) => mappings_of(set, &p.key, p.data),
        None => {
            // a comment with a NUL byte, which `compile` never writes: read it decoded
            let e = r.decode();
            let mut key = [None; 4];
            for (k, v) in key.iter_mut().zip(&e.key) {
                *k = Some(FieldRef::from(v));
            }
            mappings_of(set, &key, e.data.as_ref().map(FieldRef::from))
        }
    }
}

fn mappings_of(set: &str, key: &[Option<FieldRef<'_>>; 4], data: Option<FieldRef<'_>>) -> Vec<Stale> {
    use FieldRef::{InetProto, InetService, NfProto};
    let Some(InetService(old_to)) = data else { return Vec::new() };
    match (set, key) {
        (names::TO, [Some(InetProto(proto)), Some(InetService(port)), None, None]) => [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .map(|family| Stale { family, proto: *proto, port: *port, old_to })
            .collect(),
        (names::TO_FAMILY, [Some(NfProto(family)), Some(InetProto(proto)), Some(InetService(port)), None]) => {
            vec![Stale { family: *family, proto: *proto, port: *port, old_to }]
        }
        _ => Vec::new(),
    }
}

/// Mappings of `old` that `new` removes or points elsewhere.
pub fn stale_mappings(old: &Plan, new: &Plan) -> Vec<Stale> {
    let (was, now) = (targets(old), targets(new));
    let out: BTreeSet<Stale> = was
        .into_iter()
        .filter(|(k, to)| now.get(k) != Some(to))
        .map(|((family, proto, port), old_to)| Stale { family, proto, port, old_to })
        .collect();
    out.into_iter().collect()
}

/// Mappings of `new` that `old` does not have (`old_to`: the new target): flows on
/// their public port that began before them were not redirected, and keep going where
/// they went unless their conntrack entries go.
pub fn fresh_mappings(old: &Plan, new: &Plan) -> Vec<Stale> {
    stale_mappings(new, old)
}

/// Mappings a delta adds or retargets: every added `fwd_to` or `fwd_to_family` entry.
pub fn fresh_in_delta(d: &Delta) -> Vec<Stale> {
    let out: BTreeSet<Stale> =
        d.add_elements.iter().flat_map(|s| s.elements.refs().flat_map(|r| mappings(&s.set, r))).collect();
    out.into_iter().collect()
}

/// Every mapping of a plan: (family, protocol, public port) -> target.
fn targets(p: &Plan) -> BTreeMap<(Family, Proto, u16), u16> {
    [names::TO, names::TO_FAMILY]
        .into_iter()
        .filter_map(|name| p.set(name).map(|s| (name, s)))
        .flat_map(|(name, s)| s.elements.refs().flat_map(move |r| mappings(name, r)))
        .map(|m| ((m.family, m.proto, m.port), m.old_to))
        .collect()
}

/// Mappings a delta drops or retargets: every deleted `fwd_to` or `fwd_to_family` entry
/// (an unchanged one is never in a delta).
pub fn stale_in_delta(d: &Delta) -> Vec<Stale> {
    let out: BTreeSet<Stale> =
        d.del_elements.iter().flat_map(|s| s.elements.refs().flat_map(|r| mappings(&s.set, r))).collect();
    out.into_iter().collect()
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
    fn added_and_retargeted_mappings_are_fresh_with_their_new_target() {
        assert!(fresh_mappings(&plan(Some(5353)), &plan(Some(5353))).is_empty());
        let added = fresh_mappings(&plan(None), &plan(Some(5353)));
        assert_eq!(added.len(), 2, "ipv4 and ipv6: {added:?}");
        assert!(added.iter().all(|m| m.port == 53 && m.old_to == 5353));
        let moved = fresh_mappings(&plan(Some(5353)), &plan(Some(5354)));
        assert!(moved.iter().all(|m| m.old_to == 5354), "{moved:?}");
        assert!(fresh_mappings(&plan(Some(5353)), &plan(None)).is_empty());
        let d = Plan::diff(&plan(Some(5353)), &plan(Some(5354)));
        assert_eq!(fresh_in_delta(&d), moved);
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
