//! The policy core's decisions, without root: owners, grants (ports, targets, protect,
//! local, marks, quota), accounts bound by uid, listener ownership, placement against the
//! system set, suspension transitions and the repair back-off.

use portd_rules::policy::*;
use portd_rules::{Config, Forward, Grant, GrantSubject, ListenerCheck, MarkRange, PortRange, ProtoSel};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn fwd(name: &str, port: u16, to: u16) -> Forward {
    Forward::new(name, PortRange::single(port), PortRange::single(to))
}

fn grant(user: &str, ports: &[u16]) -> Grant {
    Grant::new(
        GrantSubject::User(user.into()),
        ports.iter().map(|p| PortRange::single(*p)).collect(),
        vec![PortRange { start: 8000, end: 8099 }],
    )
}

fn account(name: &str, uid: u32) -> Account {
    Account { name: name.into(), uid, groups: vec![name.into()] }
}

fn judge<'a>(grants: &'a [Grant], listeners: Option<&'a Listeners>) -> Judge<'a> {
    Judge { grants, default_mark: 1, listener_check: ListenerCheck::Enforce, listeners, shadowed_by: u32::MAX }
}

#[test]
fn owners_parse_and_print() {
    assert_eq!(Owner::parse("system"), Ok(Owner::System));
    assert_eq!(Owner::parse("user:web").map(|o| o.to_string()), Ok("user:web".to_string()));
    assert!(Owner::parse("web").expect_err("refused").contains("owners are `system` or `user:NAME`"));
    assert!(Owner::parse("user:../x").is_err());
    assert!(Owner::parse("user:").is_err());
    assert!(Owner::parse("user:-rf").is_err());
}

#[test]
fn a_grant_must_allow_ports_targets_protect_local_and_mark() {
    let grants = [grant("web", &[80, 443])];
    let mine: Vec<&Grant> = grants.iter().collect();
    assert_eq!(authorize(&mine, "web", &fwd("http", 80, 8080), 1), Ok(()));
    let e = authorize(&mine, "web", &fwd("db", 443, 5432), 1).expect_err("refused");
    assert!(e.contains("outside your grants") && e.contains("to [8000-8099]"), "{e}");
    let e = authorize(&mine, "web", &fwd("ssh", 22, 8022), 1).expect_err("refused");
    assert!(e.contains("outside your grants"), "{e}");

    let mut p = fwd("http", 80, 8080);
    p.protect = true;
    let e = authorize(&mine, "web", &p, 1).expect_err("refused");
    assert!(e.contains("protect:"), "{e}");

    let mut m = fwd("http", 80, 8080);
    m.mark = Some(0xffff_ffff);
    let e = authorize(&mine, "web", &m, 1).expect_err("refused");
    assert!(e.contains("mark: 0xffffffff is not allowed") && e.contains("0x1 (settings.mark) or 0"), "{e}");
    m.mark = Some(0);
    assert_eq!(authorize(&mine, "web", &m, 1), Ok(()));

    let mut wide = grants.clone();
    wide[0].protect = true;
    wide[0].local = false;
    wide[0].marks = Some(vec![MarkRange { start: 0x10, end: 0x1f }]);
    let mine: Vec<&Grant> = wide.iter().collect();
    let e = authorize(&mine, "web", &p, 1).expect_err("refused");
    assert!(e.contains("local:") && e.contains("local: false"), "{e}");
    p.local = false;
    p.mark = Some(0x12);
    assert_eq!(authorize(&mine, "web", &p, 1), Ok(()));
    p.mark = None; // the default mark 0x1 is not in 0x10-0x1f
    assert!(authorize(&mine, "web", &p, 1).expect_err("refused").contains("mark: 0x1 is not allowed"));

    assert!(authorize(&[], "nobody", &fwd("http", 80, 8080), 1).expect_err("refused").contains("has no grant"));
}

#[test]
fn group_grants_apply_to_members() {
    let grants = [Grant::new(
        GrantSubject::Group("deploy".into()),
        vec![PortRange::single(80)],
        vec![PortRange { start: 1024, end: 65535 }],
    )];
    let member = Account { name: "ann".into(), uid: 1001, groups: vec!["ann".into(), "deploy".into()] };
    let other = account("bob", 1002);
    assert_eq!(grants_of(&grants, &member).len(), 1);
    assert!(grants_of(&grants, &other).is_empty());
}

#[test]
fn a_set_is_suspended_when_its_user_is_gone_or_the_name_has_another_uid() {
    let grants = [grant("web", &[80])];
    let set = UserSet { uid: Some(1001), forwards: vec![fwd("http", 80, 8080)] };
    let j = judge(&grants, None);
    let none = BTreeMap::new();
    assert_eq!(j.judge("web", &set, Some(&account("web", 1001)), &none), vec![None]);
    assert_eq!(j.judge("web", &set, None, &none), vec![Some(Reason::UserGone { user: "web".into() })]);
    let v = j.judge("web", &set, Some(&account("web", 1005)), &none);
    assert_eq!(v, vec![Some(Reason::UidChanged { user: "web".into(), bound: 1001, now: 1005 })]);
    assert!(v[0].as_ref().map(|r| r.to_string()).unwrap_or_default().contains("never handed to another account"));
}

#[test]
fn revoking_a_grant_suspends_and_restoring_it_resumes() {
    let set = UserSet { uid: Some(1001), forwards: vec![fwd("http", 80, 8080), fwd("https", 443, 8081)] };
    let none = BTreeMap::new();
    let a = account("web", 1001);
    let both = [grant("web", &[80, 443])];
    let only80 = [grant("web", &[80])];
    assert_eq!(judge(&both, None).judge("web", &set, Some(&a), &none), vec![None, None]);
    let v = judge(&only80, None).judge("web", &set, Some(&a), &none);
    assert_eq!(v[0], None);
    assert!(matches!(&v[1], Some(Reason::NotGranted(m)) if m.contains("https")), "{v:?}");
    assert_eq!(judge(&[], None).judge("web", &set, Some(&a), &none).iter().filter(|r| r.is_some()).count(), 2);
}

#[test]
fn root_sets_are_not_judged_but_invalid_definitions_are() {
    let set = UserSet { uid: Some(0), forwards: vec![fwd("db", 5432, 15432), fwd("x", 81, 8081)] };
    let invalid: BTreeMap<String, String> = [("x".to_string(), "sets.json:3: bad".to_string())].into();
    let v = judge(&[], None).judge("root", &set, Some(&account("root", 0)), &invalid);
    assert_eq!(v, vec![None, Some(Reason::Invalid("sets.json:3: bad".into()))]);
}

#[test]
fn the_quota_suspends_forwards_beyond_it() {
    let mut grants = [grant("web", &[80, 81, 82])];
    grants[0].max_forwards = 2;
    let set = UserSet { uid: Some(1), forwards: vec![fwd("a", 80, 8080), fwd("b", 81, 8081), fwd("c", 82, 8082)] };
    let v = judge(&grants, None).judge("web", &set, Some(&account("web", 1)), &BTreeMap::new());
    assert_eq!(v, vec![None, None, Some(Reason::Quota { max: 2 })]);
}

#[test]
fn another_uids_socket_on_the_target_suspends_only_when_enforced() {
    let grants = [grant("web", &[80])];
    let set = UserSet { uid: Some(1001), forwards: vec![fwd("http", 80, 8080)] };
    let a = account("web", 1001);
    let none = BTreeMap::new();
    let mut l = Listeners::default();
    l.insert(portd_rules::Proto::Tcp, 8080, 1001);
    assert_eq!(judge(&grants, Some(&l)).judge("web", &set, Some(&a), &none), vec![None]);
    l.insert(portd_rules::Proto::Tcp, 8080, 1002);
    l.name_uid(1002, "web2".into());
    let v = judge(&grants, Some(&l)).judge("web", &set, Some(&a), &none);
    let r = v[0].clone().expect("suspended");
    assert!(r.keeps_claim());
    assert_eq!(r.to_string(), "target port 8080/tcp is held by a socket of uid 1002 (web2)");
    let mut warn = judge(&grants, Some(&l));
    warn.listener_check = ListenerCheck::Warn;
    assert_eq!(warn.judge("web", &set, Some(&a), &none), vec![None]);
    // UDP sockets do not hold a TCP target.
    let mut u = Listeners::default();
    u.insert(portd_rules::Proto::Udp, 8080, 1002);
    assert_eq!(judge(&grants, Some(&u)).judge("web", &set, Some(&a), &none), vec![None]);
    let mut both = fwd("http", 80, 8080);
    both.proto = ProtoSel::Both;
    assert!(target_taken(&u, &both, 1001).is_some());
}

#[test]
fn a_forward_in_place_stands_back_only_for_a_service_on_its_public_port() {
    let grants = [grant("web", &[7000])];
    let set = UserSet { uid: Some(1001), forwards: vec![fwd("hi", 7000, 8080)] };
    let a = account("web", 1001);
    let none = BTreeMap::new();
    let mut l = Listeners::default();
    // Another user's socket on the public port (1024 or more: any account may bind it).
    l.insert(portd_rules::Proto::Tcp, 7000, 1005);
    let new = judge(&grants, Some(&l));
    let v = new.judge("web", &set, Some(&a), &none);
    assert!(matches!(v[0], Some(Reason::Shadows { port: 7000, .. })), "a new forward takes no one's port: {v:?}");
    let in_place = Judge { shadowed_by: 999, ..judge(&grants, Some(&l)) };
    assert_eq!(in_place.judge("web", &set, Some(&a), &none), vec![None], "a user's later socket pushes nothing aside");
    // A service (a system account's, or root's) coming back on it: the forward stands back.
    l.insert(portd_rules::Proto::Tcp, 7000, 104);
    let in_place = Judge { shadowed_by: 999, ..judge(&grants, Some(&l)) };
    let v = in_place.judge("web", &set, Some(&a), &none);
    assert!(matches!(&v[0], Some(Reason::Shadows { holder, .. }) if holder == "uid 104"), "{v:?}");
}

#[test]
fn public_port_and_unserved_target_checks() {
    let mut l = Listeners::default();
    l.insert(portd_rules::Proto::Tcp, 443, 0);
    l.name_uid(0, "root".into());
    let f = fwd("https", 443, 8443);
    let e = public_taken(&l, &f, 1001).expect("shadowing");
    assert!(e.contains("public port 443/tcp is served by a socket of uid 0 (root)"), "{e}");
    assert!(target_unserved(&l, &f).expect("no app").contains("nothing listens on 8443/tcp"));
    l.insert(portd_rules::Proto::Tcp, 8443, 1001);
    assert_eq!(target_unserved(&l, &f), None);
    let range = Forward::new("r", PortRange { start: 8000, end: 8003 }, PortRange { start: 9000, end: 9003 });
    l.insert(portd_rules::Proto::Tcp, 9002, 7);
    assert_eq!(l.foreign_in(portd_rules::Proto::Tcp, range.to, 1001), Some((9002, 7)));
    assert_eq!(target_unserved(&l, &range), None);
}

fn users(sets: &[(&str, u32, Vec<Forward>)]) -> BTreeMap<SetKey, UserSet> {
    sets.iter().map(|(o, uid, f)| (key(o), UserSet { uid: Some(*uid), forwards: f.clone() })).collect()
}

fn accounts(list: &[(&str, u32)]) -> BTreeMap<SetKey, Option<Account>> {
    list.iter().map(|(n, u)| (key(n), Some(account(n, *u)))).collect()
}

fn key(user: &str) -> SetKey {
    SetKey::of_user(user).expect("a user name")
}

#[test]
fn the_system_set_wins_a_conflict_and_only_the_conflicting_forward_is_suspended() {
    let mut config = Config { grants: vec![grant("web", &[80, 443])], ..Config::default() };
    let u = users(&[("web", 1001, vec![fwd("http", 80, 8080), fwd("https", 443, 8081)])]);
    let acc = accounts(&[("web", 1001)]);
    let j = judge(&config.grants, None);
    let before = evaluate(&j, &config, &u, &acc, &BTreeMap::new(), &Evaluation::default());
    assert_eq!(before.suspended_count(), 0);
    config.forwards = vec![fwd("web80", 80, 9080)];
    let after = evaluate(&j, &config, &u, &acc, &BTreeMap::new(), &before);
    assert_eq!(after.active["user:web"], ["https".to_string()].into());
    let r = after.reason("user:web", "http").expect("suspended").to_string();
    assert!(r.contains("system/web80"), "{r}");
    let (suspended, resumed) = after.transitions(&before);
    assert_eq!(suspended.len(), 1);
    assert!(resumed.is_empty());
    // The system forward goes away: the user forward comes back by itself.
    config.forwards.clear();
    let again = evaluate(&j, &config, &u, &acc, &BTreeMap::new(), &after);
    assert_eq!(again.suspended_count(), 0);
    assert_eq!(again.transitions(&after).1, vec![(&key("web"), "http")]);
}

#[test]
fn a_running_forward_is_never_displaced_by_one_coming_back() {
    // b took port 80 while a's grant was revoked; a's grant returns: b keeps it.
    let config = Config { grants: vec![grant("a", &[80]), grant("b", &[80])], ..Config::default() };
    let j = judge(&config.grants, None);
    let u = users(&[("a", 1, vec![fwd("x", 80, 8080)]), ("b", 2, vec![fwd("y", 80, 8081)])]);
    let acc = accounts(&[("a", 1), ("b", 2)]);
    let before = Evaluation { active: [(key("b"), ["y".to_string()].into())].into(), ..Default::default() };
    let e = evaluate(&j, &config, &u, &acc, &BTreeMap::new(), &before);
    assert!(!e.active.contains_key("user:a"));
    assert_eq!(e.active["user:b"], ["y".to_string()].into());
    assert!(e.reason("user:a", "x").expect("a waits").to_string().contains("user:b/y"));
}

#[test]
fn a_forward_suspended_for_its_listener_keeps_its_public_port() {
    let config = Config { grants: vec![grant("a", &[80]), grant("b", &[80])], ..Config::default() };
    let mut l = Listeners::default();
    l.insert(portd_rules::Proto::Tcp, 8080, 2);
    let j = judge(&config.grants, Some(&l));
    let u = users(&[("a", 1, vec![fwd("x", 80, 8080)]), ("b", 2, vec![fwd("y", 80, 8081)])]);
    let acc = accounts(&[("a", 1), ("b", 2)]);
    let e = evaluate(&j, &config, &u, &acc, &BTreeMap::new(), &Evaluation::default());
    assert!(matches!(e.reason("user:a", "x"), Some(Reason::Listener { port: 8080, .. })));
    assert!(matches!(e.reason("user:b", "y"), Some(Reason::Conflict(m)) if m.contains("user:a/x")));
}

#[test]
fn typed_definitions_are_checked_like_a_file() {
    assert!(check_definition(&fwd("http", 80, 8080)).is_empty());
    let mut f = fwd("WEB;drop", 80, 80);
    f.interfaces = vec!["eth0\"".into(), "eth0".into(), "eth0".into()];
    f.description = Some("x".repeat(201));
    let p: Vec<&str> = check_definition(&f).iter().map(|(p, _)| *p).collect();
    assert_eq!(p, vec!["name", "to", "interfaces", "interfaces", "description"]);
}

#[test]
fn the_back_off_stands_back_after_a_burst_then_repairs_again() {
    let t0 = Instant::now();
    let mut b = Backoff::default();
    for i in 0..REPAIR_BURST {
        assert_eq!(b.on_drift(t0 + Duration::from_millis(i as u64)), Repair::Now, "repair {i}");
    }
    let at = t0 + Duration::from_millis(60);
    assert_eq!(b.on_drift(at), Repair::StandBack(at + REPAIR_BACKOFF));
    assert_eq!(b.hits, 1);
    assert_eq!(b.on_drift(at + Duration::from_secs(1)), Repair::Wait);
    assert!(!b.due(at + Duration::from_secs(4)));
    assert!(b.due(at + REPAIR_BACKOFF));
    assert_eq!(b.deferred(), None);
    assert_eq!(b.on_drift(at + REPAIR_BACKOFF), Repair::Now);
    // Repairs spread out over time never trigger it.
    let mut slow = Backoff::default();
    for i in 0..500u64 {
        assert_eq!(slow.on_drift(t0 + Duration::from_millis(i * 30)), Repair::Now);
    }
}

#[test]
fn known_names_are_reused_and_only_new_uids_are_looked_up() {
    let mut known = Listeners::default();
    known.insert(portd_rules::Proto::Tcp, 8080, 1001);
    known.name_uid(1001, "web".into());
    let mut now = Listeners::default();
    now.insert(portd_rules::Proto::Tcp, 8080, 1001);
    assert!(now.same_sockets(&known));
    now.insert(portd_rules::Proto::Udp, 53, 1002);
    assert!(!now.same_sockets(&known));
    let asked = std::cell::RefCell::new(Vec::new());
    now.name_uids(Some(&known), |uid| {
        asked.borrow_mut().push(uid);
        Some(format!("u{uid}"))
    });
    assert_eq!(asked.into_inner(), vec![1002], "only the new uid is looked up");
    assert_eq!(now.who(1001), "uid 1001 (web)");
    assert_eq!(now.who(1002), "uid 1002 (u1002)");
}

#[test]
fn a_target_port_is_one_owners_the_running_forward_and_the_system_keep_theirs() {
    // b aims at a's target (TCP): it waits. c's forward shares a system forward's target
    // (the operator pointed it there after c applied; an apply aimed at it is refused at
    // the socket): it stays. A forward running before keeps its target against a newcomer.
    let mut config =
        Config { grants: vec![grant("a", &[80, 81]), grant("b", &[82]), grant("c", &[83])], ..Config::default() };
    config.forwards = vec![fwd("ssh", 84, 8090)];
    let j = judge(&config.grants, None);
    let mut udp = fwd("dns", 81, 8081);
    udp.proto = ProtoSel::Udp;
    let mut b_udp = fwd("z", 82, 8081);
    b_udp.proto = ProtoSel::Udp;
    let u = users(&[
        ("a", 1, vec![fwd("x", 80, 8080), udp]),
        ("b", 2, vec![fwd("y", 82, 8080)]),
        ("c", 3, vec![fwd("w", 83, 8090)]),
    ]);
    let acc = accounts(&[("a", 1), ("b", 2), ("c", 3)]);
    let e = evaluate(&j, &config, &u, &acc, &BTreeMap::new(), &Evaluation::default());
    assert_eq!(e.active["user:a"], ["dns".to_string(), "x".to_string()].into());
    assert!(e.reason("user:b", "y").expect("b waits").to_string().contains("8080/tcp is user:a/x's"), "{e:?}");
    assert_eq!(e.active["user:c"], ["w".to_string()].into(), "{e:?}");
    // b's UDP forward on a's UDP target waits too; once b runs alone on 8080 (a's set
    // empty), a coming back waits for b.
    let u2 = users(&[("a", 1, vec![fwd("x", 80, 8080)]), ("b", 2, vec![fwd("y", 82, 8080), b_udp])]);
    let before = Evaluation { active: [(key("b"), ["y".to_string()].into())].into(), ..Default::default() };
    let e = evaluate(&j, &config, &u2, &acc, &BTreeMap::new(), &before);
    assert_eq!(e.active["user:b"], ["y".to_string(), "z".to_string()].into());
    assert!(e.reason("user:a", "x").expect("a waits").to_string().contains("user:b/y"), "{e:?}");
}

#[test]
fn targets_taken_compares_a_few_forwards_and_indexes_many_alike() {
    let others: Vec<(String, Forward)> = (0..40u16)
        .map(|i| {
            let mut f = Forward::new(
                &format!("o{i}"),
                PortRange { start: 1000 + i * 10, end: 1001 + i * 10 },
                PortRange { start: 8000 + i * 10, end: 8001 + i * 10 },
            );
            if i % 3 == 0 {
                f.proto = ProtoSel::Udp;
            }
            (format!("user:o{}", i % 4), f)
        })
        .collect();
    let fresh: Vec<Forward> = (0..40u16)
        .map(|i| {
            let mut f = fwd(&format!("f{i}"), 2000 + i, 7995 + i * 9);
            if i % 5 == 0 {
                f.proto = ProtoSel::Both;
            }
            f
        })
        .collect();
    let iter = || others.iter().map(|(o, f)| (o.as_str(), f));
    let many = targets_taken(iter(), "user:o1", &fresh);
    let few: Vec<String> = fresh.chunks(4).flat_map(|c| targets_taken(iter(), "user:o1", c)).collect();
    assert_eq!(many.len(), few.len(), "{many:#?}\n{few:#?}");
    assert!(!many.is_empty() && many.len() < fresh.len(), "{}", many.len());
    // the caller's own targets are no conflict
    let own: Vec<(String, Forward)> = vec![("user:o1".into(), fwd("mine", 3000, 8080))];
    assert!(targets_taken(own.iter().map(|(o, f)| (o.as_str(), f)), "user:o1", &[fwd("n", 3001, 8080)]).is_empty());
}
