//! What a forward costs in kernel elements, and the bounds on it.
//!
//! A forward's elements are counted exactly as [`crate::plan`] places them (one element
//! per set entry): its target and counter per public port and protocol, per family
//! where it is not of both families with the default mark, its `local: false`,
//! interface and source entries per family, protocol and port, and its protected
//! target. Source networks go into interval sets keyed by protocol, port and network,
//! which the kernel stores as concatenated ranges (`pipapo`); deleting one such element
//! costs time in proportion to the whole set (1.7 µs per element already there, measured
//! on Linux 6.18), so they have their own, small bounds: per forward
//! [`MAX_FORWARD_SOURCE_ELEMENTS`], per user the grant's `max_source_elements`.

use crate::model::{Family, FamilySel, Forward};

/// Default of a grant's `max_elements`: kernel elements of one user's set. Removing a
/// set is one kernel transaction (all or nothing, never split) that holds portd's actor
/// in proportion to its elements: 5,000 (the default quota of 1,000 forwards, each of
/// both protocols, is 4,000) held a release build's actor 25-65 ms on a loaded 2-core
/// machine, where 10,000 took 45-80 ms, too close to the 100 ms a removal may hold the
/// actor, and beyond it on slower hosts.
pub const DEFAULT_MAX_ELEMENTS: u64 = 5_000;
/// Default of a grant's `max_source_elements`: source elements of one user's set.
pub const DEFAULT_MAX_SOURCE_ELEMENTS: u64 = 64;
/// Most source elements (ports × protocols × sources) one forward may place.
pub const MAX_FORWARD_SOURCE_ELEMENTS: u64 = 64;

/// A forward's kernel elements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Every element, source elements included.
    pub elements: u64,
    /// Elements of the source interval sets.
    pub sources: u64,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        self.elements = self.elements.saturating_add(o.elements);
        self.sources = self.sources.saturating_add(o.sources);
    }
}

/// Sources of `f` that apply to family `fam`.
fn sources_of(f: &Forward, fam: Family) -> u64 {
    f.sources
        .iter()
        .filter(|s| matches!((fam, s), (Family::Ipv4, ipnet::IpNet::V4(_)) | (Family::Ipv6, ipnet::IpNet::V6(_))))
        .count() as u64
}

/// What `f` costs in kernel elements when the plan's default mark is `default_mark`:
/// the most that a steer plan or a NAT plan places for it (a protected target shared
/// with another forward is counted for each).
pub fn cost(f: &Forward, default_mark: u32) -> Cost {
    let (steer, nat) = (placed(f, default_mark, true), placed(f, default_mark, false));
    Cost { elements: steer.elements.max(nat.elements), sources: steer.sources.max(nat.sources) }
}

/// The elements `Plan::place` puts in a steer plan (`steer`) or a NAT plan for `f`.
fn placed(f: &Forward, default_mark: u32, steer: bool) -> Cost {
    use crate::plan::Counting;
    let ports = f.port.len() as u64;
    let mark = f.mark.unwrap_or(default_mark);
    let both = f.family == FamilySel::Both;
    let restricted = !f.interfaces.is_empty() || !f.sources.is_empty();
    let mut out = Cost::default();
    for &proto in f.proto.protos() {
        let steered = steer && proto == crate::model::Proto::Tcp;
        // (counted by port, counted by family with a mark element or not); neither: by sockets
        let (by_port, by_family) = match Counting::of(f, proto, mark, default_mark, steer) {
            Counting::Sockets => (false, None),
            Counting::Port(_) => (true, None),
            Counting::Family(m) => (false, Some(m.is_some())),
        };
        let sockets = !by_port && by_family.is_none();
        if both {
            out.elements += ports * (1 + u64::from(by_port));
        }
        let mut per_key = u64::from(!both); // elements per (family, port), sources aside
        if let Some(marked) = by_family {
            per_key += 1 + u64::from(marked);
        }
        if !sockets {
            per_key += u64::from(!f.local);
        }
        per_key += u64::from(steered && (restricted || !sockets));
        if !f.interfaces.is_empty() {
            per_key += 1 + f.interfaces.len() as u64;
        }
        if !f.sources.is_empty() {
            per_key += 1;
        }
        per_key += u64::from(f.protect);
        for &fam in f.family.families() {
            out.elements = out.elements.saturating_add(ports.saturating_mul(per_key));
            let src = ports.saturating_mul(sources_of(f, fam));
            out.sources = out.sources.saturating_add(src);
            out.elements = out.elements.saturating_add(src);
        }
    }
    out
}

/// The refusal of a forward whose shape places more source elements than
/// [`MAX_FORWARD_SOURCE_ELEMENTS`], saying what it costs and why.
pub fn shape_problem(f: &Forward) -> Option<String> {
    let c = cost(f, 0);
    if c.sources <= MAX_FORWARD_SOURCE_ELEMENTS {
        return None;
    }
    let ports = f.port.len();
    let protos = f.proto.protos().len();
    Some(format!(
        "{} source(s) × {ports} port(s) × {protos} protocol(s) is {} source elements in the kernel; one forward may place at most {MAX_FORWARD_SOURCE_ELEMENTS} (removing them takes time in proportion to every source element of the host): use fewer ports or fewer, wider networks",
        f.sources.len(),
        c.sources
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PortRange, ProtoSel};
    use crate::plan::{compile_dispatched, Plan};

    fn placed_in_plan(f: &Forward, mark: u32, steer: bool) -> u64 {
        let plan: Plan = compile_dispatched("t", mark, steer, &[("user:a", vec![f])]).expect("compiles");
        plan.sets.iter().map(|s| s.elements.len() as u64).sum()
    }

    #[test]
    fn cost_is_what_the_plan_places() {
        let r = |a, b| PortRange { start: a, end: b };
        let mut shapes = Vec::new();
        let mut f = Forward::new("a", r(1000, 1009), r(2000, 2009));
        shapes.push(f.clone());
        f.proto = ProtoSel::Both;
        shapes.push(f.clone());
        f.sources = vec!["10.0.0.0/8".parse().expect("net"), "2001:db8::/32".parse().expect("net")];
        shapes.push(f.clone());
        f.family = FamilySel::Ipv4;
        f.sources.truncate(1);
        shapes.push(f.clone());
        f.local = false;
        f.interfaces = vec!["eth0".into(), "eth1".into()];
        f.protect = true;
        f.mark = Some(7);
        shapes.push(f.clone());
        f.family = FamilySel::Both;
        f.mark = Some(0);
        shapes.push(f.clone());
        f.mark = Some(5);
        shapes.push(f.clone());
        f.mark = None;
        shapes.push(f.clone());
        f.interfaces.clear();
        f.sources.clear();
        shapes.push(f.clone());
        for f in &shapes {
            for mark in [0, 5] {
                let (steer, nat) = (placed_in_plan(f, mark, true), placed_in_plan(f, mark, false));
                assert_eq!(super::placed(f, mark, true).elements, steer, "{f:?} mark {mark}");
                assert_eq!(super::placed(f, mark, false).elements, nat, "{f:?} mark {mark}");
                assert_eq!(cost(f, mark).elements, steer.max(nat), "{f:?} mark {mark}");
            }
        }
        let mut big = Forward::new("big", r(1000, 1009), r(2000, 2009));
        big.proto = ProtoSel::Both;
        big.sources = (0..1000u32)
            .map(|i| ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        assert_eq!(cost(&big, 0).sources, 20_000);
        let m = shape_problem(&big).expect("refused");
        assert!(m.contains("20000 source elements") && m.contains("at most 64"), "{m}");
    }
}
