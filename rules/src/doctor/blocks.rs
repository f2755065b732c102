//! Bans and blocks written for a forward's public port (a fail2ban jail, `ufw deny`, a
//! drop of `tcp dport 80` from some addresses), which NAT lets forwarded traffic around.
#![forbid(unsafe_code)]

use super::*;

/// Blocks written for a forward's public port on the input hook (a fail2ban jail's ban,
/// `ufw deny ... port 80`, a drop of `tcp dport 80` from some addresses): in NAT mode the
/// forward's packets reach input with the target port, so the block does not apply to
/// them and the addresses it means to keep out get through.
pub(super) fn public_port_blocks(
    chains: &[ForeignChain],
    forwards: &[PlacedForward],
    d: &DispatchView,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for base in chains {
        let Some(h) = &base.hook else { continue };
        if h.kind != "filter" || h.hook != Hook::Input {
            continue;
        }
        // firewalld's zones and rich rules: its own check (firewalld.rs).
        if base.family == "inet" && base.table == "firewalld" {
            continue;
        }
        // The chains of the table reachable from the base chain, the base chain first.
        let mut seen: Vec<&ForeignChain> = vec![base];
        let mut i = 0;
        while i < seen.len() && seen.len() < 256 {
            for r in &seen[i].rules {
                if let Verdict::Jump(t) | Verdict::Goto(t) = &r.verdict {
                    if let Some(c) = chains
                        .iter()
                        .find(|c| c.family == base.family && c.table == base.table && &c.name == t && c.hook.is_none())
                    {
                        if !seen.iter().any(|s| std::ptr::eq(*s, c)) {
                            seen.push(c);
                        }
                    }
                }
            }
            i += 1;
        }
        for c in &seen {
            for (n, r) in c.rules.iter().enumerate() {
                if !matches!(r.verdict, Verdict::Drop | Verdict::Reject) {
                    continue;
                }
                let ports = r.dports();
                if ports.is_empty() {
                    continue;
                }
                let has = |p: u16| ports.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p));
                for f in forwards {
                    let protos_ok = f.forward.proto.protos().iter().any(|pr| {
                        !r.conds.iter().any(|c| matches!(c, Cond::L4 { proto, negate: false } if *proto != l4(*pr)))
                    });
                    // A steered forward's packets keep the public port: the block applies.
                    let natted = f.forward.proto.protos().iter().any(|pr| !d.steered(*pr));
                    if !protos_ok
                        || !natted
                        || !f.forward.family.families().iter().any(|fam| base.applies_to(*fam))
                        || !has(f.forward.port.start)
                        || has(f.forward.to.start)
                    {
                        continue;
                    }
                    out.push(public_block_finding(base, c, n + 1, r, &ports, f, d));
                }
            }
        }
    }
    out
}

fn public_block_finding(
    base: &ForeignChain,
    c: &ForeignChain,
    n: usize,
    r: &Rule,
    ports: &[(u16, u16)],
    f: &PlacedForward,
    d: &DispatchView,
) -> Finding {
    let (public, to) = (f.forward.port.start, f.forward.to);
    let passed = [c.name.clone()];
    let word = |(lo, hi): (u16, u16), sep: &str| if lo == hi { lo.to_string() } else { format!("{lo}{sep}{hi}") };
    let target = word((to.start, to.end), ":");
    let verb = if r.verdict == Verdict::Reject { "rejects" } else { "drops" };
    let what = format!(
        "rule {n} of {} {verb} public port {public} for some senders, but in NAT mode the forward's packets reach the input hook with target port {}, so the block does not apply to forwarded traffic: the senders it keeps out reach the application",
        c.title(),
        word((to.start, to.end), "-")
    );
    // fail2ban: the jail is named by the set (`addr-set-JAIL`, nftables actions) or the
    // chain (`f2b-JAIL`, iptables actions).
    let jail = r
        .conds
        .iter()
        .find_map(|c| match c {
            // nftables-* actions: `addr-set-JAIL` (IPv4), `addr6-set-JAIL` (IPv6).
            Cond::Unknown(t) => t
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr-set-").or_else(|| w.strip_prefix("addr6-set-")))
                .map(str::to_string),
            _ => None,
        })
        .or_else(|| c.name.strip_prefix("f2b-").filter(|j| *j != "chain").map(str::to_string));
    let (message, fix) = match (manager(base, &passed), jail) {
        (Manager::Fail2ban, Some(jail)) => {
            let list: Vec<String> = ports.iter().map(|p| word(*p, ":")).chain([target.clone()]).collect();
            let jail_fix = format!(
                "`printf '[{jail}]\\nport = {}\\n' > /etc/fail2ban/jail.d/portd-{jail}.local && fail2ban-client reload {jail}`",
                list.join(",")
            );
            (
                format!("fail2ban jail {jail}: {what}"),
                match &d.steer_fix {
                    Some(steer) => format!(
                        "steer TCP forwards (settings.dispatch: auto or steer; this host can): packets keep their public port and every ban on it applies: {steer}; or ban the target port too, in the jail's own configuration: {jail_fix}"
                    ),
                    None => format!(
                        "ban the target port too, in the jail's own configuration: {jail_fix} (steer dispatch, where packets keep their public port, cannot run here)"
                    ),
                },
            )
        }
        (Manager::Ufw, _) => (
            format!("ufw: {what}"),
            match &d.steer_fix {
                Some(steer) => format!("steer TCP forwards (this host can), so ufw's rules see the public port: {steer}; or write the same ufw deny (or reject) rule for the target port, to any port {target}"),
                None => format!("write the same `ufw deny` (or `ufw reject`) rule for the target port, `to any port {target}` (ufw's user rules see the port after the redirect)"),
            },
        ),
        _ => (
            what,
            match &d.steer_fix {
                Some(steer) => format!("steer TCP forwards (this host can), so the rule sees the public port: {steer}; or add the target port {target} to that rule's ports, where the rule is written"),
                None => format!("add the target port {target} to that rule's ports, where the rule is written"),
            },
        ),
    };
    Finding { check: "foreign-block".into(), severity: Severity::Error, forward: Some(fwd_name(f)), message, fix }
}
