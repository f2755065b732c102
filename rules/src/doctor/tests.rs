use super::*;
use crate::model::{Forward, PortRange};

const L4_TCP: &str = "[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ]";
const DPORT_8080: &str = "[ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x0000901f ]";
const CT_DNAT_ACCEPT: &str = "[ ct load status => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000020 ) ^ 0x00000000 ] [ cmp neq reg 1 0x00000000 ] [ immediate reg 0 accept ]";
const ESTABLISHED_ACCEPT: &str = "[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ] [ cmp neq reg 1 0x00000000 ] [ immediate reg 0 accept ]";

fn fwd(owner: &str, port: u16, to: u16) -> PlacedForward {
    PlacedForward {
        owner: owner.into(),
        forward: Forward::new("http", PortRange { start: port, end: port }, PortRange { start: to, end: to }),
        mark: 1,
    }
}

fn chain(family: &str, table: &str, kind: &str, hook: Hook, priority: i32, drop: bool, rules: &[&str]) -> ForeignChain {
    ForeignChain {
        family: family.into(),
        table: table.into(),
        name: "input".into(),
        hook: Some(BaseHook { kind: kind.into(), hook, priority, policy_drop: drop }),
        rules: rules.iter().map(|r| parse_rule(r)).collect(),
    }
}

#[test]
fn parses_ports_marks_ct_status_and_verdicts() {
    let r = parse_rule(&format!("{L4_TCP} {DPORT_8080} [ counter pkts 0 bytes 0 ] [ immediate reg 0 drop ]"));
    assert_eq!(r.conds, vec![Cond::L4 { proto: 6, negate: false }, Cond::Dport { lo: 8080, hi: 8080, negate: false }]);
    assert_eq!(r.verdict, Verdict::Drop);
    let r = parse_rule(CT_DNAT_ACCEPT);
    assert_eq!(r.conds, vec![Cond::CtStatus(Bits { mask: 0x20, value: 0, negate: true })]);
    assert_eq!(r.verdict, Verdict::Accept);
    let r = parse_rule("[ meta load mark => reg 1 ] [ cmp eq reg 1 0x00000001 ] [ immediate reg 0 accept ]");
    assert_eq!(r.conds, vec![Cond::Mark(Bits { mask: u32::MAX, value: 1, negate: false })]);
    let r = parse_rule(&format!("{L4_TCP} [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp gte reg 1 0x0000e803 ] [ cmp lte reg 1 0x0000d007 ] [ reject type 2 code 1 ]"));
    assert_eq!(r.conds[1], Cond::Dport { lo: 1000, hi: 2000, negate: false });
    assert_eq!(r.verdict, Verdict::Reject);
    let r = parse_rule(&format!("{L4_TCP} [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00005000 ] [ immediate reg 1 0x00008223 ] [ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]"));
    assert_eq!(r.verdict, Verdict::Redirect(Some(9090)));
    let r = parse_rule("[ meta load iifname => reg 1 ] [ cmp eq reg 1 0x00006f6c 0x00000000 0x00000000 0x00000000 ] [ immediate reg 0 accept ]");
    assert_eq!(r.conds, vec![Cond::Iif { name: "lo".into(), negate: false }]);
    let r = parse_rule("[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 2b @ transport header + 2 => reg 1 ] [ lookup reg 1 set __set0 0x0 ] [ immediate reg 0 accept ]");
    assert!(matches!(r.conds[1], Cond::Unknown(_)), "{r:?}");
    assert_eq!(parse_rule("[ immediate reg 0 jump -> other ]").verdict, Verdict::Jump("other".into()));
}

#[test]
fn a_policy_drop_input_chain_is_an_error_with_the_nft_fix() {
    let c = chain("inet", "fw", "filter", Hook::Input, 0, true, &[ESTABLISHED_ACCEPT]);
    let f = check_chains(&[c], &[fwd("user:web", 80, 8080)], -100);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].severity, Severity::Error);
    assert_eq!(f[0].check, "foreign-drop");
    assert_eq!(f[0].forward.as_deref(), Some("user:web/http"));
    assert!(f[0].message.contains("table inet fw chain input"), "{}", f[0].message);
    assert!(f[0].message.contains("tcp/8080"), "{}", f[0].message);
    assert!(f[0].fix.contains("nft insert rule inet fw input ct status dnat accept"), "{}", f[0].fix);
}

#[test]
fn accepting_ct_status_dnat_the_mark_or_the_port_is_enough() {
    for accept in [
        CT_DNAT_ACCEPT.to_string(),
        "[ meta load mark => reg 1 ] [ cmp eq reg 1 0x00000001 ] [ immediate reg 0 accept ]".to_string(),
        format!("{L4_TCP} {DPORT_8080} [ immediate reg 0 accept ]"),
    ] {
        let c = chain("inet", "fw", "filter", Hook::Input, 0, true, &[&accept]);
        assert!(check_chains(&[c], &[fwd("system", 80, 8080)], -100).is_empty(), "{accept}");
    }
}

#[test]
fn an_explicit_drop_of_the_target_port_is_found_and_other_ports_are_not() {
    let drop = format!("{L4_TCP} {DPORT_8080} [ immediate reg 0 drop ]");
    let c = chain("ip", "f", "filter", Hook::Input, 0, false, &[&drop]);
    let f = check_chains(std::slice::from_ref(&c), &[fwd("system", 80, 8080)], -100);
    assert_eq!(f.len(), 1);
    assert!(f[0].message.contains("rule 1 of chain input drops it"), "{}", f[0].message);
    assert!(check_chains(&[c], &[fwd("system", 80, 8081)], -100).is_empty());
}

#[test]
fn an_undecidable_rule_before_the_drop_makes_it_a_warning() {
    let lookup = "[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 2b @ transport header + 2 => reg 1 ] [ lookup reg 1 set __set0 0x0 ] [ immediate reg 0 accept ]";
    let c = chain("inet", "fw", "filter", Hook::Input, 0, true, &[lookup]);
    let f = check_chains(&[c], &[fwd("system", 80, 8080)], -100);
    assert_eq!(f[0].severity, Severity::Warning, "{f:?}");
    assert!(f[0].message.contains("chain input rule 1"), "{}", f[0].message);
}

#[test]
fn jumps_are_followed_and_managers_recognised() {
    let mut base =
        chain("inet", "firewalld", "filter", Hook::Input, 10, true, &["[ immediate reg 0 jump -> filter_IN_public ]"]);
    base.name = "filter_INPUT".into();
    let sub = ForeignChain { name: "filter_IN_public".into(), hook: None, rules: vec![], ..base.clone() };
    let f = check_chains(&[base.clone(), sub], &[fwd("system", 80, 8080)], -100);
    assert!(f[0].fix.contains("firewall-cmd --permanent --add-port=8080/tcp"), "{}", f[0].fix);
    let accept = ForeignChain {
        name: "filter_IN_public".into(),
        hook: None,
        rules: vec![parse_rule(CT_DNAT_ACCEPT)],
        ..base.clone()
    };
    assert!(check_chains(&[base, accept], &[fwd("system", 80, 8080)], -100).is_empty());
    let mut ufw =
        chain("ip", "filter", "filter", Hook::Input, 0, true, &["[ immediate reg 0 jump -> ufw-before-input ]"]);
    ufw.name = "INPUT".into();
    let sub = ForeignChain { name: "ufw-before-input".into(), hook: None, rules: vec![], ..ufw.clone() };
    let f = check_chains(&[ufw, sub], &[fwd("system", 80, 8080)], -100);
    assert!(
        f[0].message.starts_with("ufw's `default deny incoming` (policy drop of table ip filter chain INPUT)"),
        "{}",
        f[0].message
    );
    assert!(
        f[0].fix.contains("/etc/ufw/before.rules")
            && f[0].fix.contains("before6.rules")
            && f[0].fix.contains("ufw reload`")
            && f[0].fix.contains("`ufw deny from ADDR` rules no longer cover forwarded ports"),
        "{}",
        f[0].fix
    );
}

/// xtables matches as iptables-nft writes them: `[ match name NAME rev R info HEX ]`.
fn xt(name: &str, rev: u8, info: &[u8]) -> String {
    let hex: String = info.iter().map(|b| format!("{b:02x}")).collect();
    format!("[ match name {name} rev {rev} info {hex} ]")
}

#[test]
fn ufw_not_local_log_and_return_rules_are_decided() {
    // ufw-not-local: -m addrtype --dst-type LOCAL -j RETURN, ... -j DROP; a LOG rule.
    let local = xt("addrtype", 1, &[0, 0, 4, 0, 0, 0, 0, 0]);
    let broadcast = xt("addrtype", 1, &[0, 0, 0x20, 0, 0, 0, 0, 0]);
    let mut input = chain("ip", "filter", "filter", Hook::Input, 0, true, &[
        "[ immediate reg 0 jump -> ufw-not-local ]",
        "[ limit rate 3/minute burst 10 type packets flags 0x0 ] [ counter pkts 0 bytes 0 ] [ target name LOG rev 0 ]",
    ]);
    input.name = "INPUT".into();
    let not_local = ForeignChain {
        name: "ufw-not-local".into(),
        hook: None,
        rules: vec![
            parse_rule(&format!("{local} [ immediate reg 0 return ]")),
            parse_rule(&format!("{broadcast} [ immediate reg 0 return ]")),
            parse_rule("[ immediate reg 0 drop ]"),
        ],
        ..input.clone()
    };
    let f = check_chains(&[input, not_local], &[fwd("system", 80, 8080)], -100);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].severity, Severity::Error, "{f:?}");
    assert!(f[0].message.contains("policy drop of table ip filter chain INPUT"), "{}", f[0].message);
    assert!(!f[0].message.contains("cannot decide"), "{}", f[0].message);
}

#[test]
fn a_fail2ban_jail_on_the_public_port_is_an_error_with_the_jails_fix() {
    let sets = |name: &str| (name == "__set0").then(|| vec![(80, 80), (443, 443)]);
    let ban = parse_rule_in("[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 2b @ transport header + 2 => reg 1 ] [ lookup reg 1 set __set0 0x0 ] [ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x00000002 ] [ payload load 4b @ network header + 12 => reg 1 ] [ lookup reg 1 set addr-set-web 0x0 ] [ reject type 0 code 3 ]", &sets);
    let mut c = chain("inet", "f2b-table", "filter", Hook::Input, -1, false, &[]);
    c.name = "f2b-chain".into();
    c.rules = vec![ban.clone()];
    let f = check_chains(&[c.clone()], &[fwd("user:web", 80, 8080)], -100);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].severity, Severity::Error);
    assert!(
        f[0].message
            .starts_with("fail2ban jail web: rule 1 of table inet f2b-table chain f2b-chain rejects public port 80"),
        "{}",
        f[0].message
    );
    assert!(f[0].fix.contains("`printf '[web]\\nport = 80,443,8080\\n' > /etc/fail2ban/jail.d/portd-web.local && fail2ban-client reload web`"), "{}", f[0].fix);
    // With the target port in the jail's ports, nothing to report.
    let sets = |name: &str| (name == "__set0").then(|| vec![(80, 80), (443, 443), (8080, 8080)]);
    c.rules = vec![parse_rule_in("[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 2b @ transport header + 2 => reg 1 ] [ lookup reg 1 set __set0 0x0 ] [ lookup reg 1 set addr-set-web 0x0 ] [ reject type 0 code 3 ]", &sets)];
    assert!(check_chains(&[c], &[fwd("user:web", 80, 8080)], -100).is_empty());
}

#[test]
fn netavark_and_docker_dnat_through_addrtype_jumps_are_errors_naming_the_container() {
    let local = xt("addrtype", 1, &[0, 0, 4, 0, 0, 0, 0, 0]);
    let mut comment = b"dnat name: podman id: 0d1f3c4e".to_vec();
    comment.resize(256, 0);
    let comment = xt("comment", 0, &comment);
    let dport80 = format!("{L4_TCP} [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00005000 ]");
    let mut pre = chain(
        "ip",
        "nat",
        "nat",
        Hook::Prerouting,
        -100,
        false,
        &[&format!("{local} [ immediate reg 0 jump -> NETAVARK-HOSTPORT-DNAT ]")],
    );
    pre.name = "PREROUTING".into();
    let template = pre.clone();
    let sub = |name: &str, rules: Vec<String>| ForeignChain {
        name: name.into(),
        hook: None,
        rules: rules.iter().map(|r| parse_rule(r)).collect(),
        ..template.clone()
    };
    let chains = vec![
        pre.clone(),
        sub("NETAVARK-HOSTPORT-DNAT", vec![format!("{dport80} {comment} [ immediate reg 0 jump -> NETAVARK-DN-1 ]")]),
        sub("NETAVARK-DN-1", vec![
            format!("[ payload load 4b @ network header + 12 => reg 1 ] [ cmp eq reg 1 0x0000580a ] {dport80} [ immediate reg 0 jump -> NETAVARK-HOSTPORT-SETMARK ]"),
            format!("{dport80} [ counter pkts 0 bytes 0 ] [ target name DNAT rev 2 ]"),
        ]),
        sub("NETAVARK-HOSTPORT-SETMARK", vec!["[ counter pkts 0 bytes 0 ] [ target name MARK rev 2 ]".into()]),
    ];
    let f = check_chains(&chains, &[fwd("system", 80, 8080)], -100);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].severity, Severity::Error, "{f:?}");
    assert!(f[0].message.contains("Podman container 0d1f3c4e"), "{}", f[0].message);
    assert!(f[0].fix.contains("`podman stop 0d1f3c4e`"), "{}", f[0].fix);
    // Docker: the RETURN for traffic from its own bridge does not make the walk undecided.
    pre.rules = vec![parse_rule(&format!("{local} [ immediate reg 0 jump -> DOCKER ]"))];
    let docker0 = "[ meta load iifname => reg 1 ] [ cmp eq reg 1 0x6b636f64 0x00307265 0x00000000 0x00000000 ]";
    let docker0_not = docker0.replace("cmp eq", "cmp neq");
    let chains = vec![
        pre.clone(),
        sub(
            "DOCKER",
            vec![
                format!("{docker0} [ immediate reg 0 return ]"),
                format!("{docker0_not} {dport80} [ target name DNAT rev 2 ]"),
            ],
        ),
    ];
    let f = check_chains(&chains, &[fwd("system", 80, 8080)], -100);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].severity, Severity::Error, "{f:?}");
    assert!(f[0].fix.contains("`docker stop $(docker ps -q --filter publish=80)`"), "{}", f[0].fix);
}

#[test]
fn a_nat_chain_before_portds_rewriting_the_public_port_is_an_error() {
    let redir = format!("{L4_TCP} [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00005000 ] [ immediate reg 1 0x00008223 ] [ redir proto_min reg 1 proto_max reg 1 flags 0x2 ]");
    let c = chain("ip", "other", "nat", Hook::Prerouting, -150, false, &[&redir]);
    let f = check_chains(std::slice::from_ref(&c), &[fwd("system", 80, 8080)], -100);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].check.as_str(), f[0].severity), ("foreign-nat", Severity::Error));
    assert!(f[0].message.contains("redirect to :9090"), "{}", f[0].message);
    let later = chain("ip", "other", "nat", Hook::Prerouting, 100, false, &[&redir]);
    assert!(check_chains(&[later], &[fwd("system", 80, 8080)], -100).is_empty(), "after portd's: no effect");
    assert!(check_chains(&[c], &[fwd("system", 81, 8080)], -100).is_empty(), "another port");
}

#[test]
fn listeners_conntrack_and_self() {
    let fs = [fwd("user:web", 80, 8080)];
    let none = check_listeners(&fs, |_, _| vec![], |_| Some(1001));
    assert_eq!(none.len(), 1);
    assert!(none[0].message.contains("nothing listens on target port tcp/8080"), "{}", none[0].message);
    assert!(check_listeners(&fs, |_, _| vec![Listening::any(1001)], |_| Some(1001)).is_empty());
    let other = check_listeners(&fs, |_, _| vec![Listening::any(1002)], |_| Some(1001));
    assert!(other[0].message.contains("uid 1002"), "{}", other[0].message);
    assert!(check_listeners(&fs, |_, _| vec![Listening::any(1002)], |_| None).is_empty(), "system forwards: any uid");
    // Another uid's TCP socket bound without listening: held all the same, and nothing listens.
    let bound_only = Listening { listening: false, ..Listening::any(1002) };
    let held = check_listeners(&fs, |_, _| vec![bound_only], |_| Some(1001));
    let messages: Vec<&str> = held.iter().map(|f| f.message.as_str()).collect();
    assert!(messages.iter().any(|m| m.contains("nothing listens")), "{messages:?}");
    assert!(messages.iter().any(|m| m.contains("held by uid 1002")), "{messages:?}");
    let lo = Listening { uid: 0, addr: "127.0.0.1".parse().expect("an address"), v6only: false, listening: true };
    let system = check_listeners(&[fwd("system", 80, 8080)], |_, _| vec![lo], |_| None);
    assert_eq!(
        system.iter().map(|f| (f.check.as_str(), f.severity)).collect::<Vec<_>>(),
        [("listener", Severity::Warning)]
    );
    assert!(check_conntrack(89, 100).is_none());
    assert_eq!(check_conntrack(90, 100).map(|f| f.severity), Some(Severity::Error));
    let s = SelfState {
        in_sync: false,
        table: "portd".into(),
        backoff_hits: 1,
        standing_back_secs: None,
        suspended: vec![("user:a/x".into(), "no grant".into())],
    };
    let mut f = check_self(&s);
    sort(&mut f);
    assert_eq!(
        f.iter().map(|f| f.severity).collect::<Vec<_>>(),
        [Severity::Error, Severity::Warning, Severity::Warning]
    );
    assert!(check_self(&SelfState { in_sync: true, ..Default::default() }).is_empty());
}

/// One legacy entry: `-p tcp --dport 8080 -j DROP` in INPUT, then the policy.
#[test]
fn legacy_entries_decode_into_rules() {
    fn entry(proto: u16, tcp_dport: Option<u16>, verdict: i32) -> Vec<u8> {
        let mut e = vec![0u8; 112];
        e[80..82].copy_from_slice(&proto.to_ne_bytes());
        if let Some(p) = tcp_dport {
            let mut m = vec![0u8; 32 + 16];
            m[0..2].copy_from_slice(&48u16.to_ne_bytes());
            m[2..5].copy_from_slice(b"tcp");
            m[32 + 2..32 + 4].copy_from_slice(&u16::MAX.to_ne_bytes());
            m[32 + 4..32 + 6].copy_from_slice(&p.to_ne_bytes());
            m[32 + 6..32 + 8].copy_from_slice(&p.to_ne_bytes());
            e.extend(m);
        }
        let target_offset = e.len() as u16;
        let mut t = vec![0u8; 40];
        t[0..2].copy_from_slice(&40u16.to_ne_bytes());
        t[32..36].copy_from_slice(&verdict.to_ne_bytes());
        e.extend(t);
        let next = e.len() as u16;
        e[88..90].copy_from_slice(&target_offset.to_ne_bytes());
        e[90..92].copy_from_slice(&next.to_ne_bytes());
        e
    }
    let rule = entry(6, Some(8080), -1);
    let policy = entry(0, None, -2);
    let mut blob = rule.clone();
    blob.extend(&policy);
    let info = legacy::Info {
        valid_hooks: 1 << 1,
        hook_entry: [0, 0, 0, 0, 0],
        underflow: [0, rule.len() as u32, 0, 0, 0],
        num_entries: 2,
        size: blob.len() as u32,
    };
    let chains = legacy::chains("filter", false, &info, &blob).expect("decodes");
    assert_eq!(chains.len(), 1);
    assert_eq!(chains[0].name, "INPUT");
    assert_eq!(chains[0].rules[0].conds[1], Cond::Dport { lo: 8080, hi: 8080, negate: false });
    let f = check_chains(&chains, &[fwd("system", 80, 8080)], -100);
    assert_eq!(f[0].check, "legacy-iptables");
    assert!(f[0].fix.contains("iptables-legacy -t filter -D INPUT 1"), "{}", f[0].fix);
}

#[test]
fn set_lookups_of_ports_are_decided_when_the_set_is_known() {
    let text = "[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 2b @ transport header + 2 => reg 1 ] [ lookup reg 1 set __set0 0x0 ] [ immediate reg 0 accept ]";
    let sets = |n: &str| (n == "__set0").then(|| vec![(22, 22), (80, 80), (443, 443)]);
    let r = parse_rule_in(text, &sets);
    assert_eq!(r.conds[1], Cond::DportIn { ranges: vec![(22, 22), (80, 80), (443, 443)], negate: false });
    let c = ForeignChain { rules: vec![r], ..chain("inet", "fw", "filter", Hook::Input, 0, true, &[]) };
    let f = check_chains(&[c], &[fwd("system", 80, 8080)], -100);
    assert_eq!(f[0].severity, Severity::Error, "8080 is not in the set: {f:?}");
    let r = parse_rule_in(text, &|_| Some(vec![(8000, 8099)]));
    let c = ForeignChain { rules: vec![r], ..chain("inet", "fw", "filter", Hook::Input, 0, true, &[]) };
    assert!(check_chains(&[c], &[fwd("system", 80, 8080)], -100).is_empty());
    let inverted = parse_rule_in(&text.replace("0x0 ]", "0x1 ]"), &sets);
    assert_eq!(inverted.conds[1], Cond::DportIn { ranges: vec![(22, 22), (80, 80), (443, 443)], negate: true });
}

#[test]
fn xt_conntrack_states_are_decided() {
    let mut info = [0u8; 168];
    info[146..148].copy_from_slice(&1u16.to_ne_bytes());
    // --ctstate RELATED,ESTABLISHED: not a new connection
    info[150..152].copy_from_slice(&6u16.to_ne_bytes());
    let hex: String = info.iter().map(|b| format!("{b:02x}")).collect();
    let r = parse_rule(&format!("[ match name conntrack rev 3 info {hex} ] [ immediate reg 0 accept ]"));
    assert_eq!(r.conds, vec![Cond::XtState { mask: 6, negate: false }]);
    let c = ForeignChain { rules: vec![r], ..chain("ip", "filter", "filter", Hook::Input, 0, true, &[]) };
    assert_eq!(check_chains(&[c], &[fwd("system", 80, 8080)], -100)[0].severity, Severity::Error);
    // --ctstate DNAT accepts the redirected connection
    info[150..152].copy_from_slice(&128u16.to_ne_bytes());
    let hex: String = info.iter().map(|b| format!("{b:02x}")).collect();
    let r = parse_rule(&format!("[ match name conntrack rev 3 info {hex} ] [ immediate reg 0 accept ]"));
    let c = ForeignChain { rules: vec![r], ..chain("ip", "filter", "filter", Hook::Input, 0, true, &[]) };
    assert!(check_chains(&[c], &[fwd("system", 80, 8080)], -100).is_empty());
    assert!(matches!(xt_match("conntrack", 3, &[0; 10])[0], Cond::Unknown(_)));
}

#[test]
fn a_register_reloaded_with_something_unknown_is_not_read_as_before() {
    // meta l4proto tcp ip saddr 10.0.0.1 drop
    let r = parse_rule("[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 4b @ network header + 12 => reg 1 ] [ cmp eq reg 1 0x0100000a ] [ immediate reg 0 drop ]");
    assert_eq!(r.conds[0], Cond::L4 { proto: 6, negate: false });
    assert!(r.conds[1..].iter().all(|c| matches!(c, Cond::Unknown(_))), "{r:?}");
    assert_eq!(r.verdict, Verdict::Drop);
}

#[test]
fn ct_state_sets_are_decided() {
    // ct state { established, related } accept: not a new connection
    let text = "[ ct load state => reg 1 ] [ lookup reg 1 set __set1 0x0 ] [ immediate reg 0 accept ]";
    let r = parse_rule_in(text, &|_| Some(vec![(2, 2), (4, 4)]));
    assert_eq!(r.conds, vec![Cond::CtStateIn { ranges: vec![(2, 2), (4, 4)], negate: false }]);
    let c = ForeignChain { rules: vec![r], ..chain("inet", "fw", "filter", Hook::Input, 0, true, &[]) };
    assert_eq!(check_chains(&[c], &[fwd("system", 80, 8080)], -100)[0].severity, Severity::Error);
    let r = parse_rule_in(text, &|_| Some(vec![(8, 8)]));
    let c = ForeignChain { rules: vec![r], ..chain("inet", "fw", "filter", Hook::Input, 0, true, &[]) };
    assert!(check_chains(&[c], &[fwd("system", 80, 8080)], -100).is_empty(), "ct state {{ new }} accept");
}

#[test]
fn a_drop_that_may_match_does_not_soften_a_certain_drop() {
    let maybe_drop =
        "[ payload load 4b @ network header + 12 => reg 1 ] [ cmp eq reg 1 0x0100000a ] [ immediate reg 0 drop ]";
    let c = chain("inet", "fw", "filter", Hook::Input, 0, true, &[maybe_drop]);
    let f = check_chains(&[c], &[fwd("system", 80, 8080)], -100);
    assert_eq!(f[0].severity, Severity::Error, "{f:?}");
    assert!(!f[0].message.contains("unless"), "{}", f[0].message);
}

#[test]
fn a_legacy_nat_redirect_names_the_legacy_command() {
    let mut c = chain("ip (legacy)", "nat", "nat", Hook::Prerouting, -100, false, &[]);
    c.name = "PREROUTING".into();
    c.rules = vec![Rule {
        conds: vec![Cond::L4 { proto: 6, negate: false }, Cond::Dport { lo: 80, hi: 80, negate: false }],
        verdict: Verdict::Redirect(Some(9090)),
    }];
    let f = check_chains(&[c], &[fwd("system", 80, 8080)], -100);
    assert_eq!(f[0].check, "legacy-iptables");
    assert_eq!(f[0].severity, Severity::Error, "same priority as portd's: it wins whenever it was created first");
    assert!(f[0].fix.contains("`iptables-legacy -t nat -D PREROUTING 1`"), "{}", f[0].fix);
}

#[test]
fn steered_forwards_are_walked_with_the_public_port_untracked_and_bans_apply() {
    use super::{check_chains_with, DispatchView};
    let steer = DispatchView { steer: true, steer_fix: None };
    // ufw as `default deny incoming` + `allow 80/tcp`: policy drop, port 80 accepted.
    let input = chain(
        "ip",
        "filter",
        "filter",
        Hook::Input,
        0,
        true,
        &["[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00005000 ] [ immediate reg 0 accept ]"],
    );
    assert!(check_chains_with(std::slice::from_ref(&input), &[fwd("user:web", 80, 8080)], -100, &steer).is_empty());
    let f = check_chains(std::slice::from_ref(&input), &[fwd("user:web", 80, 8080)], -100);
    assert_eq!(f.len(), 1, "NAT mode: the policy drops target port 8080: {f:?}");
    // Steered, port 81 is not allowed: the error names the public port and its fix.
    let f = check_chains_with(&[input], &[fwd("user:web", 81, 8080)], -100, &steer);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].message.contains("steered, on public port tcp/81"), "{}", f[0].message);
    // `ct state new` does not match an untracked packet; `ct state untracked` does.
    let new_only = chain("inet", "fw", "filter", Hook::Input, 0, true, &["[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000008 ) ^ 0x00000000 ] [ cmp neq reg 1 0x00000000 ] [ immediate reg 0 accept ]"]);
    assert_eq!(check_chains_with(&[new_only], &[fwd("system", 80, 8080)], -100, &steer).len(), 1);
    let untracked = chain("inet", "fw", "filter", Hook::Input, 0, true, &["[ ct load state => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00000040 ) ^ 0x00000000 ] [ cmp neq reg 1 0x00000000 ] [ immediate reg 0 accept ]"]);
    assert!(check_chains_with(&[untracked], &[fwd("system", 80, 8080)], -100, &steer).is_empty());
    // A fail2ban ban of the public port applies to steered traffic: nothing to report.
    let sets = |name: &str| (name == "__set0").then(|| vec![(80, 80), (443, 443)]);
    let mut f2b = chain("inet", "f2b-table", "filter", Hook::Input, -1, false, &[]);
    f2b.name = "f2b-chain".into();
    f2b.rules = vec![parse_rule_in("[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 2b @ transport header + 2 => reg 1 ] [ lookup reg 1 set __set0 0x0 ] [ lookup reg 1 set addr6-set-web 0x0 ] [ reject type 0 code 3 ]", &sets)];
    assert!(check_chains_with(std::slice::from_ref(&f2b), &[fwd("user:web", 80, 8080)], -100, &steer).is_empty());
    // NAT mode on a host that can steer: steering is the first fix, and the IPv6 set
    // names the jail too.
    let nat = DispatchView {
        steer: false,
        steer_fix: Some("`sed -i X /etc/portd/portd.yaml && systemctl restart portd`".into()),
    };
    let f = check_chains_with(&[f2b], &[fwd("user:web", 80, 8080)], -100, &nat);
    assert_eq!(f.len(), 1, "{f:?}");
    assert!(f[0].message.starts_with("fail2ban jail web:"), "{}", f[0].message);
    assert!(f[0].fix.starts_with("steer TCP forwards"), "{}", f[0].fix);
    assert!(f[0].fix.contains("`sed -i X /etc/portd/portd.yaml && systemctl restart portd`"), "{}", f[0].fix);
}

#[test]
fn a_steered_forward_carries_a_mark_only_when_it_has_one_of_its_own() {
    use super::{check_chains_with, DispatchView};
    let steer = DispatchView { steer: true, steer_fix: None };
    // A firewall that lets in only marked packets (as for the classic recipe).
    let by_mark = "[ meta load mark => reg 1 ] [ cmp eq reg 1 0x00000001 ] [ immediate reg 0 accept ]";
    let input = chain("inet", "fw", "filter", Hook::Input, 0, true, &[by_mark]);
    let f = check_chains_with(std::slice::from_ref(&input), &[fwd("system", 80, 8080)], -100, &steer);
    assert_eq!(f.len(), 1, "a steered forward without a mark of its own marks nothing: {f:?}");
    let mut own = fwd("system", 80, 8080);
    own.forward.mark = Some(1);
    assert!(check_chains_with(std::slice::from_ref(&input), &[own], -100, &steer).is_empty());
    assert!(check_chains(&[input], &[fwd("system", 80, 8080)], -100).is_empty(), "redirected: marked");
}

#[test]
fn a_steered_forward_ignores_other_tables_nat() {
    use super::{check_chains_with, DispatchView};
    let c = chain("ip", "nat", "nat", Hook::Prerouting, -100, false, &["[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00005000 ] [ immediate reg 1 0x0000e803 ] [ range 1 reg 1 ] [ redir proto_min reg 1 ]"]);
    assert!(!check_chains(std::slice::from_ref(&c), &[fwd("system", 80, 8080)], -100).is_empty());
    let steer = DispatchView { steer: true, steer_fix: None };
    assert!(check_chains_with(&[c], &[fwd("system", 80, 8080)], -100, &steer).is_empty());
}

/// The rules of a `nft --debug=netlink list ruleset` dump, by chain; `bases` names the
/// base chains (family, table, chain, priority) with their input hook.
fn netlink_chains(dump: &str, bases: &[(&str, &str, &str, i32)]) -> Vec<ForeignChain> {
    let mut out: Vec<ForeignChain> = Vec::new();
    let mut cur: Option<(String, String, String, String)> = None;
    let flush = |cur: &mut Option<(String, String, String, String)>, out: &mut Vec<ForeignChain>| {
        if let Some((family, table, name, text)) = cur.take() {
            let i =
                match out.iter().position(|c| c.family == family && c.table == table && c.name == name) {
                    Some(i) => i,
                    None => {
                        let hook = bases.iter().find(|b| b.0 == family && b.1 == table && b.2 == name).map(|b| {
                            BaseHook { kind: "filter".into(), hook: Hook::Input, priority: b.3, policy_drop: false }
                        });
                        out.push(ForeignChain { family, table, name, hook, rules: Vec::new() });
                        out.len() - 1
                    }
                };
            out[i].rules.push(parse_rule(&text));
        }
    };
    for line in dump.lines() {
        let t: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("  [") {
            if let Some(c) = cur.as_mut() {
                c.3.push_str(line.trim());
                c.3.push(' ');
            }
        } else if t.len() >= 4 && ["ip", "ip6", "inet"].contains(&t[0]) && t[3].parse::<u64>().is_ok() {
            flush(&mut cur, &mut out);
            cur = Some((t[0].into(), t[1].into(), t[2].into(), String::new()));
        } else {
            flush(&mut cur, &mut out);
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// What firewalld 1.3.3 (Debian 12) wrote in a booted container for
/// `--zone=drop --add-source=10.251.0.2`, `--zone=drop --add-source=fd00:251::2`, rich
/// rules `rule family=ipv4 source address=10.251.0.3 service name=http reject` (and ipv6,
/// fd00:251::3), and the direct rules doctor's fix adds for 10.251.0.2 (DROP) and
/// fd00:251::3 (REJECT) on port 8080.
const FIREWALLD_DUMP: &str = include_str!("testdata/firewalld-netlink.txt");

fn firewalld_chains(with_direct: bool) -> Vec<ForeignChain> {
    let bases =
        [("inet", "firewalld", "filter_INPUT", 10), ("ip", "filter", "INPUT", 0), ("ip6", "filter", "INPUT", 0)];
    netlink_chains(FIREWALLD_DUMP, &bases).into_iter().filter(|c| with_direct || c.table == "firewalld").collect()
}

#[test]
fn firewalld_sources_and_rich_rules_are_read_from_its_real_expressions() {
    let chains = firewalld_chains(true);
    let zones = chains.iter().find(|c| c.name == "filter_INPUT_ZONES").expect("filter_INPUT_ZONES");
    let srcs: Vec<_> = zones.rules.iter().filter_map(firewalld::source).collect();
    assert_eq!(srcs, vec![(Family::Ipv4, "10.251.0.2".to_string()), (Family::Ipv6, "fd00:251::2".to_string())]);
    assert_eq!(zones.rules[0].verdict, Verdict::Goto("filter_IN_drop".into()));
    let deny = chains.iter().find(|c| c.name == "filter_IN_public_deny").expect("deny");
    assert_eq!(deny.rules.len(), 2);
    assert_eq!(deny.rules[0].verdict, Verdict::Reject);
    assert!(deny.rules[0].conds.contains(&Cond::Dport { lo: 80, hi: 80, negate: false }));
    assert_eq!(firewalld::source(&deny.rules[1]), Some((Family::Ipv6, "fd00:251::3".to_string())));
    let input = chains.iter().find(|c| c.name == "filter_INPUT").expect("filter_INPUT");
    assert_eq!(parse_rule(CT_DNAT_ACCEPT), input.rules[1]);
    assert_eq!(
        chains.iter().find(|c| c.name == "filter_IN_drop").and_then(|c| c.rules.last()).map(|r| &r.verdict),
        Some(&Verdict::Drop)
    );
}

#[test]
fn firewalld_blocks_bypassed_by_nat_are_errors_with_the_direct_rule_fix() {
    let chains = firewalld_chains(false);
    let f = check_chains(&chains, &[fwd("user:web", 80, 8080)], -100);
    let errors: Vec<_> = f.iter().filter(|x| x.severity == Severity::Error).collect();
    assert_eq!(errors.len(), 4, "{f:#?}");
    assert_eq!(f.len(), 4, "{f:#?}");
    assert!(
        errors[0].message.starts_with(
            "firewalld: zone drop holds source 10.251.0.2 (`firewall-cmd --zone=drop --add-source=10.251.0.2`)"
        ),
        "{}",
        errors[0].message
    );
    assert!(
        errors[0]
            .message
            .contains("rule 2 of table inet firewalld chain filter_INPUT accepts every redirected connection"),
        "{}",
        errors[0].message
    );
    assert!(errors[0].fix.starts_with("block the target port too, with a firewalld direct rule"), "{}", errors[0].fix);
    assert!(errors[0].fix.contains("`firewall-cmd --direct --add-rule ipv4 filter INPUT 0 -s 10.251.0.2 -p tcp --dport 8080 -j DROP && firewall-cmd --permanent --direct --add-rule ipv4 filter INPUT 0 -s 10.251.0.2 -p tcp --dport 8080 -j DROP`"), "{}", errors[0].fix);
    assert!(errors[1].message.contains("zone drop holds source fd00:251::2"), "{}", errors[1].message);
    assert!(
        errors[1].fix.contains("--add-rule ipv6 filter INPUT 0 -s fd00:251::2 -p tcp --dport 8080 -j DROP"),
        "{}",
        errors[1].fix
    );
    assert!(errors[2].message.starts_with("firewalld: a rich rule of zone public rejects source 10.251.0.3 (rule 1 of table inet firewalld chain filter_IN_public_deny)"), "{}", errors[2].message);
    assert!(errors[2].fix.contains("-s 10.251.0.3 -p tcp --dport 8080 -j REJECT`"), "{}", errors[2].fix);
    // Where the host can steer, steering comes first (the command to run verbatim).
    let d = DispatchView { steer: false, steer_fix: Some("`portctl steer-on`".into()) };
    let f = check_chains_with(&chains, &[fwd("user:web", 80, 8080)], -100, &d);
    assert_eq!(f.len(), 4, "{f:#?}");
    assert!(f[0].fix.starts_with("steer TCP forwards"), "{}", f[0].fix);
    assert!(f[0].fix.find("`portctl steer-on`") < f[0].fix.find("`firewall-cmd"), "{}", f[0].fix);
    assert!(f[0].fix.contains("`portctl steer-on`") && f[0].fix.contains("`firewall-cmd --direct"), "{}", f[0].fix);
    // The direct rules of the dump cover 10.251.0.2 (DROP 8080) and fd00:251::3 (REJECT).
    let f = check_chains(&firewalld_chains(true), &[fwd("user:web", 80, 8080)], -100);
    let left: Vec<_> = f.iter().map(|x| x.message.split(" (").next().unwrap_or("").to_string()).collect();
    assert_eq!(
        left,
        vec![
            "firewalld: zone drop holds source fd00:251::2",
            "firewalld: a rich rule of zone public rejects source 10.251.0.3"
        ],
        "{f:#?}"
    );
    // Steered, the blocks apply as written: nothing to report.
    let d = DispatchView { steer: true, steer_fix: None };
    assert!(check_chains_with(&chains, &[fwd("user:web", 80, 8080)], -100, &d)
        .iter()
        .all(|x| !x.message.starts_with("firewalld: ")));
    // A forward of another public port: the rich rule (port 80) does not concern it, the
    // drop zone (every port) does.
    let f = check_chains(&chains, &[fwd("user:web", 2222, 8080)], -100);
    assert_eq!(f.len(), 2, "{f:#?}");
}

#[test]
fn firewalld_sources_with_a_prefix_keep_it() {
    // `ip saddr 10.251.0.0/24 goto filter_IN_drop`, `ip6 saddr fd00:251::/64 ...` as
    // libnftnl prints them (the IPv4 mask is one word, the IPv6 one four).
    let v4 = parse_rule("[ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x00000002 ] [ payload load 4b @ network header + 12 => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00ffffff ) ^ 0x00000000 ] [ cmp eq reg 1 0x0000fb0a ] [ immediate reg 0 goto -> filter_IN_drop ]");
    assert_eq!(firewalld::source(&v4), Some((Family::Ipv4, "10.251.0.0/24".to_string())));
    let v6 = parse_rule("[ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x0000000a ] [ payload load 16b @ network header + 8 => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0xffffffff 0xffffffff 0x00000000 0x00000000 ) ^ 0x00000000 0x00000000 0x00000000 0x00000000 ] [ cmp eq reg 1 0x510200fd 0x00000000 0x00000000 0x00000000 ] [ immediate reg 0 goto -> filter_IN_drop ]");
    assert_eq!(firewalld::source(&v6), Some((Family::Ipv6, "fd00:251::/64".to_string())));
    // Not a prefix: not read as a source.
    let odd = parse_rule("[ payload load 4b @ network header + 12 => reg 1 ] [ bitwise reg 1 = ( reg 1 & 0x00ff00ff ) ^ 0x00000000 ] [ cmp eq reg 1 0x0000000a ] [ immediate reg 0 drop ]");
    assert_eq!(firewalld::source(&odd), None);
}
