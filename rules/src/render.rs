//! A [`Plan`] as nft(8) text, accepted by `nft -f` and `nft -c -f`.

use crate::model::{Family, Proto};
use crate::plan::{ChainType, FieldType, Hook, KeyExpr, Plan, Rule, Set, Value};
use std::fmt::Write;

const KEY: &str = "meta nfproto . meta l4proto . th dport";
const PORT_KEY: &str = "meta l4proto . th dport";

fn key_text(k: KeyExpr) -> &'static str {
    match k {
        KeyExpr::Family => KEY,
        KeyExpr::Port => PORT_KEY,
        KeyExpr::OrigFamily => "meta nfproto . meta l4proto . ct original proto-dst",
        KeyExpr::OrigPort => "meta l4proto . ct original proto-dst",
    }
}

/// `meta l4proto PROTO ` before a key, if asked.
fn proto_check(p: Option<Proto>) -> &'static str {
    match p {
        None => "",
        Some(Proto::Tcp) => "meta l4proto tcp ",
        Some(Proto::Udp) => "meta l4proto udp ",
    }
}

fn type_name(t: FieldType) -> &'static str {
    match t {
        FieldType::NfProto => "nf_proto",
        FieldType::InetProto => "inet_proto",
        FieldType::InetService => "inet_service",
        FieldType::Ifname => "ifname",
        FieldType::Ipv4Addr => "ipv4_addr",
        FieldType::Ipv6Addr => "ipv6_addr",
        FieldType::Mark => "mark",
    }
}

/// One element field as nft writes it.
pub fn value(v: &Value) -> String {
    match v {
        Value::NfProto(f) => f.to_string(),
        Value::InetProto(p) => p.to_string(),
        Value::InetService(p) => p.to_string(),
        Value::Ifname(i) => format!("\"{i}\""),
        Value::Ipv4Net(n) if n.prefix_len() == 32 => n.addr().to_string(),
        Value::Ipv4Net(n) => n.to_string(),
        Value::Ipv6Net(n) if n.prefix_len() == 128 => n.addr().to_string(),
        Value::Ipv6Net(n) => n.to_string(),
        Value::Mark(m) => format!("{m:#010x}"),
    }
}

/// One rule as nft writes it.
pub fn rule(r: &Rule) -> String {
    match r {
        Rule::JumpIfLocal { chain } => format!("fib daddr type local jump {chain}"),
        Rule::JumpIfLocalKeyNotIn { set, chain } => format!("fib daddr type local {KEY} != @{set} jump {chain}"),
        Rule::ReturnUnlessIface { keys, allowed } => {
            format!("{KEY} @{keys} {KEY} . iifname != @{allowed} return")
        }
        Rule::ReturnUnlessSource { family, keys, allowed } => {
            let (f, a) = match family {
                Family::Ipv4 => ("ipv4", "ip"),
                Family::Ipv6 => ("ipv6", "ip6"),
            };
            format!("meta nfproto {f} {KEY} @{keys} meta l4proto . th dport . {a} saddr != @{allowed} return")
        }
        Rule::Redirect { proto, map, key } => {
            let p = match proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            };
            format!("meta l4proto {p} redirect to {} map @{map}", key_text(*key))
        }
        Rule::CountSetMark { set, map, key, proto } => {
            let k = key_text(*key);
            format!("{}{k} @{set} meta mark set {k} map @{map}", proto_check(*proto))
        }
        Rule::ReturnIfLoopback => "iif \"lo\" return".into(),
        Rule::GotoIfRedirected { chain } => format!("ct direction original ct status dnat goto {chain}"),
        Rule::ReturnIfKeyIn { set } => format!("{KEY} @{set} return"),
        Rule::Count { set, key, mark, then_return, proto } => {
            let mut s = format!("{}{} @{set}", proto_check(*proto), key_text(*key));
            if *mark != 0 {
                let _ = write!(s, " meta mark set meta mark | {mark:#010x}");
            }
            if *then_return {
                s.push_str(" return");
            }
            s
        }
        Rule::DropUnredirected { set } => {
            format!("ct state new iifname != \"lo\" ct status & dnat == 0 {KEY} @{set} drop")
        }
        Rule::Notrack { set, key, sport, if_local } => {
            let mut k = key_text(*key).to_string();
            if *sport {
                k = k.replace("th dport", "th sport");
            }
            let local = if *if_local { " fib daddr type local" } else { "" };
            format!("{k} @{set}{local} notrack return")
        }
        Rule::ReturnUnlessTcp => "meta l4proto != tcp return".into(),
        Rule::GotoIfLoopback { chain } => format!("iif \"lo\" goto {chain}"),
        Rule::GotoIfKeyIn { set, chain } => format!("{KEY} @{set} goto {chain}"),
        Rule::DropProtected { set } => format!("iif != \"lo\" {KEY} @{set} drop"),
        Rule::RejectUnlessIface { keys, allowed } => {
            format!(
                "iifname != \"lo\" meta l4proto tcp {KEY} @{keys} {KEY} . iifname != @{allowed} reject with tcp reset"
            )
        }
        Rule::RejectUnlessSource { family, keys, allowed } => {
            let (f, a) = match family {
                Family::Ipv4 => ("ipv4", "ip"),
                Family::Ipv6 => ("ipv6", "ip6"),
            };
            format!(
                "iifname != \"lo\" meta l4proto tcp meta nfproto {f} {KEY} @{keys} meta l4proto . th dport . {a} saddr != @{allowed} reject with tcp reset"
            )
        }
    }
}

fn set_text(out: &mut String, s: &Set) {
    let kind = if s.data.is_some() { "map" } else { "set" };
    let key: Vec<&str> = s.key.iter().map(|t| type_name(*t)).collect();
    let _ = writeln!(out, "\t# {}", s.comment);
    let _ = writeln!(out, "\t{kind} {} {{", s.name);
    let _ = write!(out, "\t\ttype {}", key.join(" . "));
    if let Some(d) = s.data {
        let _ = write!(out, " : {}", type_name(d));
    }
    out.push('\n');
    if s.interval {
        out.push_str("\t\tflags interval\n");
    }
    if let Some(size) = s.kernel_size() {
        let _ = writeln!(out, "\t\tsize {size}");
    }
    if s.counter {
        out.push_str("\t\tcounter\n");
    }
    if !s.elements.is_empty() {
        out.push_str("\t\telements = {");
        for (i, e) in s.elements.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { ",\n\t\t\t     " });
            let k: Vec<String> = e.key.iter().map(value).collect();
            out.push_str(&k.join(" . "));
            if let Some(c) = &e.comment {
                let _ = write!(out, " comment \"{c}\"");
            }
            if let Some(d) = &e.data {
                let _ = write!(out, " : {}", value(d));
            }
        }
        out.push_str(" }\n");
    }
    out.push_str("\t}\n\n");
}

fn priority(hook: Hook, kind: ChainType, p: i32) -> String {
    match (hook, kind, p) {
        (_, _, -150) => "mangle".into(),
        (Hook::Prerouting, ChainType::Nat, -100) => "dstnat".into(),
        (_, ChainType::Filter, 0) => "filter".into(),
        (_, ChainType::Filter, -300) => "raw".into(),
        _ => p.to_string(),
    }
}

/// The whole plan as an nft script that creates the table (`nft -f`).
pub fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table inet {} {{", plan.table);
    for s in &plan.sets {
        set_text(&mut out, s);
    }
    for (i, c) in plan.chains.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "\tchain {} {{", c.name);
        if let Some(b) = &c.base {
            let kind = match b.kind {
                ChainType::Filter => "filter",
                ChainType::Nat => "nat",
            };
            let hook = match b.hook {
                Hook::Prerouting => "prerouting",
                Hook::Input => "input",
                Hook::Output => "output",
            };
            let _ = writeln!(
                out,
                "\t\ttype {kind} hook {hook} priority {}; policy accept;",
                priority(b.hook, b.kind, b.priority)
            );
        }
        for r in &c.rules {
            let _ = writeln!(out, "\t\t{}", rule(r));
        }
        out.push_str("\t}\n");
    }
    out.push_str("}\n");
    out
}
