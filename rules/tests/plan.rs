//! Plan properties: diffs round-trip, one-forward changes are small, owners conflict.

use portd_rules::model::{FamilySel, Forward, PortRange, ProtoSel};
use portd_rules::{compile, OwnedSet, Plan};
use proptest::prelude::*;

fn arb_forward(idx: usize) -> impl Strategy<Value = Forward> {
    // Each index owns a disjoint block of 100 public ports, so generated sets never clash.
    let base = 1000 + idx as u16 * 100;
    (
        0u16..50,
        1u16..4,
        prop_oneof![Just(ProtoSel::Tcp), Just(ProtoSel::Udp), Just(ProtoSel::Both)],
        prop_oneof![Just(FamilySel::Ipv4), Just(FamilySel::Ipv6), Just(FamilySel::Both)],
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0u32..4),
        prop::collection::vec(prop_oneof![Just("eth0"), Just("wg0")], 0..2),
        prop::collection::vec(prop_oneof![Just("203.0.113.0/24"), Just("2001:db8::/32"), Just("10.0.0.0/8")], 0..3),
    )
        .prop_map(move |(off, len, proto, family, local, protect, mark, ifs, srcs)| {
            let start = base + off;
            let mut f = Forward::new(
                &format!("f{idx}"),
                PortRange { start, end: start + len - 1 },
                PortRange { start: 30000 + start, end: 30000 + start + len - 1 },
            );
            f.proto = proto;
            f.family = family;
            f.local = local;
            f.protect = protect;
            f.mark = mark;
            let mut ifs: Vec<String> = ifs.into_iter().map(String::from).collect();
            ifs.dedup();
            f.interfaces = ifs;
            let mut srcs: Vec<ipnet::IpNet> = srcs
                .into_iter()
                .map(|s| s.parse().expect("net"))
                .filter(|n: &ipnet::IpNet| match family {
                    FamilySel::Ipv4 => n.addr().is_ipv4(),
                    FamilySel::Ipv6 => n.addr().is_ipv6(),
                    FamilySel::Both => true,
                })
                .collect();
            srcs.sort();
            srcs.dedup();
            f.sources = srcs;
            f
        })
}

fn arb_set() -> impl Strategy<Value = Vec<Forward>> {
    arb_set_at(0)
}

/// A set whose forwards use port blocks `first..first + 8`.
fn arb_set_at(first: usize) -> impl Strategy<Value = Vec<Forward>> {
    prop::collection::vec(any::<bool>(), 0..8).prop_flat_map(move |present| {
        let strategies: Vec<_> =
            present.iter().enumerate().filter(|(_, p)| **p).map(|(i, _)| arb_forward(first + i).boxed()).collect();
        strategies
    })
}

fn plan(fw: Vec<Forward>) -> Plan {
    compile("portd", 1, &[OwnedSet { owner: "system".into(), forwards: fw }]).expect("no conflicts")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn valid_sets_round_trip_through_yaml(fw in arb_set()) {
        // Every generated set is valid as a file, and parses back to itself.
        let doc = portd_rules::RulesFile { version: 1, forwards: fw.clone() };
        let text = serde_yaml::to_string(&doc).expect("yaml");
        let back = portd_rules::parse_rules("gen.yaml", &text).map_err(|d| TestCaseError::fail(d.to_string()))?;
        prop_assert_eq!(back.forwards, fw);
    }

    #[test]
    fn diff_with_itself_is_empty(fw in arb_set()) {
        let p = plan(fw);
        let d = Plan::diff(&p, &p);
        prop_assert!(d.is_empty());
        prop_assert!(d.summary.is_empty());
    }

    #[test]
    fn replacing_one_owner_incrementally_equals_a_full_compile(
        sys in arb_set_at(0), old in arb_set_at(10), new in arb_set_at(10)
    ) {
        let sets = |user: &[Forward]| vec![
            OwnedSet { owner: "system".into(), forwards: sys.clone() },
            OwnedSet { owner: "user:web".into(), forwards: user.to_vec() },
        ];
        let mut plan = compile("portd", 1, &sets(&old)).expect("no conflicts");
        let before = plan.clone();
        let full = compile("portd", 1, &sets(&new)).expect("no conflicts");
        let d = plan.replace_owner("user:web", &new, 1).expect("no conflicts");
        // The incremental delta is exactly the full diff, and applying it reaches the full compile.
        let reference = Plan::diff(&before, &full);
        prop_assert_eq!(&d.del_elements, &reference.del_elements);
        prop_assert_eq!(&d.add_elements, &reference.add_elements);
        prop_assert_eq!(&d.summary, &reference.summary);
        d.apply_in_place(&mut plan);
        prop_assert_eq!(plan, full);
    }

    #[test]
    fn steer_changes_reach_the_full_compile_chains_included(
        sys in arb_set_at(0), old in arb_set_at(10), new in arb_set_at(10), conntrack in any::<bool>()
    ) {
        // A steer plan's chains follow what it holds (UDP forwards bring the nat chains,
        // `protect` and restricted forwards rules of steer_in and the chains they go to):
        // a change that moves them is structural, carries the whole new plan, and moves
        // only chains that one plan has and the other lacks, or base chains.
        let compiled = |user: &[Forward]| {
            let mut p = portd_rules::plan::compile_dispatched(
                "portd", 1, true, &[("system", sys.iter().collect()), ("user:web", user.iter().collect())],
            ).expect("no conflicts");
            p.set_conntrack(conntrack);
            p
        };
        let (before, full) = (compiled(&old), compiled(&new));
        // Each chain comes before every chain that jumps to it (the order of adding;
        // deleting goes the other way).
        for p in [&before, &full] {
            for (i, c) in p.chains.iter().enumerate() {
                for t in c.rules.iter().filter_map(|r| r.target()) {
                    let at = p.chains.iter().position(|c| c.name == t);
                    prop_assert!(at.is_some_and(|at| at < i), "{} jumps to {t}, which is not before it", c.name);
                }
            }
        }
        let mut d = before.replace_owner("user:web", &new, 1).expect("no conflicts");
        prop_assert_eq!(d.structural, before.chains != full.chains);
        prop_assert!(Plan::chain_changes(&before, &full).is_some());
        // The elements of that change, whatever the chains: they take the sets there.
        let elements = Plan::diff_elements(&before, &full).expect("same sets");
        let mut sets = before.clone();
        elements.apply_in_place(&mut sets);
        prop_assert_eq!(&sets.sets, &full.sets);
        let mut reached = before.clone();
        d.take_into(&mut reached);
        prop_assert_eq!(reached, full);
    }

    #[test]
    fn diff_then_apply_reaches_the_new_plan(a in arb_set(), b in arb_set()) {
        let (pa, pb) = (plan(a), plan(b));
        let mut d = Plan::diff(&pa, &pb);
        prop_assert!(!d.structural);
        // the path the daemon takes after the kernel accepted the delta
        let mut reached = pa.clone();
        d.take_into(&mut reached);
        prop_assert_eq!(reached, pb);
    }
}

#[test]
fn one_forward_change_in_ten_thousand_is_a_small_delta() {
    let fw: Vec<Forward> = (0..10_000u16)
        .map(|i| Forward::new(&format!("f{i}"), PortRange::single(10_000 + i), PortRange::single(40_000 + i)))
        .collect();
    let mut changed = fw.clone();
    changed[1234].to = PortRange::single(39_000);
    let (a, b) = (plan(fw), plan(changed));
    let d = Plan::diff(&a, &b);
    // One fwd_to entry serves both families: it is replaced (delete + add); its counter
    // element stays, with its counts.
    assert_eq!(d.deleted().count(), 1, "{:?}", d.del_elements);
    assert_eq!(d.added().count(), 1);
    assert!(d.deleted().chain(d.added()).all(|(s, _)| s == "fwd_to"));
    assert_eq!(d.summary.changed.len(), 1);
    assert_eq!(d.summary.to_string().lines().count(), 2);
}

#[test]
fn ranges_expand_to_elements_not_rules() {
    let one = plan(vec![Forward::new("a", PortRange::single(80), PortRange::single(8080))]);
    let many = plan(vec![Forward::new("a", PortRange { start: 1, end: 60000 }, PortRange { start: 1001, end: 61000 })]);
    assert_eq!(one.chains, many.chains, "the rules do not depend on the number of forwards");
    assert_eq!(many.set("fwd_to").expect("map").elements.len(), 60_000, "one element serves both families");
}

#[test]
fn owners_conflict_naming_the_other_forward() {
    let sys = OwnedSet {
        owner: "system".into(),
        forwards: vec![Forward::new("http", PortRange::single(80), PortRange::single(8080))],
    };
    let web = OwnedSet {
        owner: "user:web".into(),
        forwards: vec![Forward::new("site", PortRange { start: 79, end: 81 }, PortRange { start: 9079, end: 9081 })],
    };
    let err = compile("portd", 1, &[web, sys]).expect_err("conflict");
    assert_eq!(err.len(), 1);
    assert_eq!(
        err[0].to_string(),
        "forward `site` of user:web: tcp port 80 (ipv4) is already forwarded by `http` of system"
    );
}

#[test]
fn replace_owner_refuses_ports_held_by_others_naming_them() {
    let sys = OwnedSet {
        owner: "system".into(),
        forwards: vec![Forward::new("http", PortRange::single(80), PortRange::single(8080))],
    };
    let plan = compile("portd", 1, &[sys]).expect("plan");
    let mine = vec![Forward::new("site", PortRange { start: 79, end: 81 }, PortRange { start: 9079, end: 9081 })];
    let err = plan.replace_owner("user:web", &mine, 1).expect_err("conflict");
    assert_eq!(
        err[0].to_string(),
        "forward `site` of user:web: tcp port 80 (ipv4) is already forwarded by `http` of system"
    );
}

#[test]
fn one_forward_added_to_ten_thousand_touches_few_elements() {
    let fw: Vec<Forward> = (0..10_000u16)
        .map(|i| Forward::new(&format!("f{i}"), PortRange::single(10_000 + i), PortRange::single(40_000 + i)))
        .collect();
    let plan = compile("portd", 1, &[OwnedSet { owner: "user:web".into(), forwards: fw.clone() }]).expect("plan");
    let mut more = fw;
    more.push(Forward::new("new", PortRange::single(9_000), PortRange::single(9_001)));
    let d = plan.replace_owner("user:web", &more, 1).expect("delta");
    assert!(d.del_elements.is_empty());
    let mut sets: Vec<&str> = d.added().map(|(s, _)| s).collect();
    sets.sort();
    assert_eq!(sets, ["fwd_count", "fwd_to"], "a target and a counted element, each for both families");
}

#[test]
fn structural_change_is_flagged() {
    let a = plan(vec![]);
    let b = compile("other", 1, &[]).expect("empty");
    assert!(Plan::diff(&a, &b).structural);
}

#[test]
fn shared_protected_target_stays_while_one_forward_still_protects_it() {
    let mut a = Forward::new("a", PortRange::single(80), PortRange::single(8080));
    a.protect = true;
    let mut b = Forward::new("b", PortRange::single(81), PortRange::single(8080));
    b.protect = true;
    let sys = OwnedSet { owner: "system".into(), forwards: vec![a] };
    let web = OwnedSet { owner: "user:web".into(), forwards: vec![b] };
    let mut plan = compile("portd", 1, &[sys.clone(), web]).expect("plan");
    let d = plan.replace_owner("user:web", &[], 1).expect("delta");
    d.apply_in_place(&mut plan);
    assert_eq!(plan, compile("portd", 1, &[sys]).expect("plan"));
    assert_eq!(plan.set("fwd_protect").expect("set").elements.len(), 2, "8080 stays protected for a (v4 and v6)");
}

#[test]
fn a_shared_protected_target_is_commented_with_its_first_protector_after_every_change() {
    let mut a = Forward::new("a", PortRange::single(80), PortRange::single(8080));
    a.protect = true;
    let mut b = Forward::new("b", PortRange::single(81), PortRange::single(8080));
    b.protect = true;
    let sys = OwnedSet { owner: "system".into(), forwards: vec![a] };
    let web = OwnedSet { owner: "user:web".into(), forwards: vec![b.clone()] };
    let mut plan = compile("portd", 1, &[sys, web.clone()]).expect("plan");
    let comments = |p: &Plan| {
        p.set("fwd_protect").expect("set").elements.iter().map(|e| e.comment.unwrap_or_default()).collect::<Vec<_>>()
    };
    assert_eq!(comments(&plan), ["system/a", "system/a"]);
    // The system set drops a: the port stays protected, now in the name of user:web/b.
    let d = plan.replace_owner("system", &[], 1).expect("delta");
    d.apply_in_place(&mut plan);
    assert_eq!(plan, compile("portd", 1, &[web]).expect("plan"));
    assert_eq!(comments(&plan), ["user:web/b", "user:web/b"]);
    // a comes back: the element goes back to system/a.
    let mut a = Forward::new("a", PortRange::single(80), PortRange::single(8080));
    a.protect = true;
    let d = plan.replace_owner("system", &[a], 1).expect("delta");
    d.apply_in_place(&mut plan);
    assert_eq!(comments(&plan), ["system/a", "system/a"]);
}

#[test]
fn large_change_is_compiled_whole_and_equals_the_full_compile() {
    let fw = |name: &str, port: u16, to: u16| Forward::new(name, PortRange::single(port), PortRange::single(to));
    let sys = OwnedSet {
        owner: "system".into(),
        forwards: (0..10).map(|i| fw(&format!("s{i}"), 100 + i, 8000 + i)).collect(),
    };
    let other = OwnedSet {
        owner: "user:other".into(),
        forwards: (0..100).map(|i| fw(&format!("o{i}"), 200 + i, 8100 + i)).collect(),
    };
    let old: Vec<Forward> = (0..1000).map(|i| fw(&format!("w{i}"), 1000 + i, 20_000 + i)).collect();
    // 600 retargeted, 100 removed, 300 kept, 200 new.
    let mut new: Vec<Forward> = (0..600).map(|i| fw(&format!("w{i}"), 1000 + i, 30_000 + i)).collect();
    new.extend((700..1000).map(|i| fw(&format!("w{i}"), 1000 + i, 20_000 + i)));
    new.extend((0..200).map(|i| fw(&format!("n{i}"), 5000 + i, 40_000 + i)));
    let web = |forwards: Vec<Forward>| OwnedSet { owner: "user:web".into(), forwards };
    let before = compile("portd", 1, &[sys.clone(), other.clone(), web(old)]).expect("plan");
    let full = compile("portd", 1, &[sys, other, web(new.clone())]).expect("plan");
    let mut d = before.replace_owner("user:web", &new, 1).expect("no conflicts");
    assert!(d.whole.is_some(), "900 of 1110 forwards changing is a large change");
    let reference = Plan::diff(&before, &full);
    assert_eq!(d.del_elements, reference.del_elements);
    assert_eq!(d.add_elements, reference.add_elements);
    assert_eq!(d.summary, reference.summary);
    let mut in_place = before.clone();
    d.apply_in_place(&mut in_place);
    assert_eq!(in_place, full, "applying element by element reaches the same plan");
    let mut taken = before;
    d.take_into(&mut taken);
    assert_eq!(taken, full);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn an_incremental_change_conflicts_exactly_where_a_full_compile_does(
        sys in arb_set_at(0), user in arb_set_at(0), steer in any::<bool>()
    ) {
        // Both owners' forwards come from the same port blocks, so they often claim the
        // same public port: an apply must be refused exactly when compiling both sets
        // together finds a conflict, in both dispatches (a steer plan keeps its TCP
        // forwards in other maps than its UDP ones).
        let compiled = |user: &[Forward]| portd_rules::plan::compile_dispatched(
            "portd", 1, steer, &[("system", sys.iter().collect()), ("user:web", user.iter().collect())],
        );
        let before = compiled(&[]).expect("one owner alone never conflicts");
        let incremental = before.replace_owner("user:web", &user, 1);
        let full = compiled(&user);
        prop_assert_eq!(incremental.is_err(), full.is_err(), "incremental {:?}, full {:?}",
            incremental.as_ref().err(), full.as_ref().err());
    }
}
