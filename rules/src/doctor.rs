//! `portctl doctor`: why traffic does not arrive. The daemon reads the kernel (other
//! tables' base chains and rules, legacy iptables, sockets, conntrack) into the plain
//! values of this module; the functions here decide, without I/O, what is wrong and how
//! to fix it.
//!
//! Rules are read in the text libnftnl prints for their expressions
//! (`[ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ] ...`); [`parse_rule`]
//! turns that into conditions and a verdict, and a chain walk asks, for the packet of a
//! forward after portd's redirect (or before it, for NAT), whether a chain accepts, drops
//! or rewrites it. What doctor cannot decode is "maybe", and a finding that depends on a
//! maybe says so and is a warning instead of an error.
//!
//! `rule` is the vocabulary and the parser, `walk` follows a packet through a chain,
//! `legacy` decodes legacy iptables entries, `bind` judges the addresses applications
//! listen on; this file turns walks into findings.

mod bind;
mod blocks;
mod firewalld;
pub mod legacy;
mod rule;
mod walk;

pub use bind::Listening;
pub use rule::{
    parse_rule, parse_rule_in, xt_match, BaseHook, Bits, Cond, ForeignChain, Hook, Rule, SetRanges, Verdict,
};
pub use walk::Packet;
use walk::{listed, verdict_word, walk_base, End, CT_DNAT};

use crate::model::{Family, Proto};
use crate::plan::PlacedForward;
use serde::{Deserialize, Serialize};

/// How bad a finding is; the order is most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Traffic of a forward does not arrive (portctl doctor exits 1).
    Error,
    /// It may not arrive, or will not soon.
    Warning,
    /// Worth knowing.
    Info,
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        })
    }
}

/// One problem, the forward it concerns and the fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// Which check found it: `foreign-drop`, `foreign-nat`, `legacy-iptables`,
    /// `listener`, `conntrack`, `portd`.
    pub check: String,
    /// How bad it is.
    pub severity: Severity,
    /// `OWNER/NAME` of the forward concerned, if one.
    pub forward: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do, in concrete terms.
    pub fix: String,
}

/// Sorts findings most severe first (stable within a severity).
pub fn sort(findings: &mut [Finding]) {
    findings.sort_by_key(|f| f.severity);
}

/// A firewall manager recognised from the names of its tables and chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Manager {
    Ufw,
    Firewalld,
    Docker,
    Netavark,
    Fail2ban,
    /// Rules written with `iptables` (`ip6tables`) of the nf_tables variant.
    IptablesNft,
    None,
}

fn manager(chain: &ForeignChain, passed: &[String]) -> Manager {
    if chain.table == "firewalld" {
        Manager::Firewalld
    } else if passed.iter().any(|c| c.starts_with("ufw-") || c.starts_with("ufw6-")) {
        Manager::Ufw
    } else if passed.iter().any(|c| c.starts_with("DOCKER")) {
        Manager::Docker
    } else if passed.iter().any(|c| c.starts_with("NETAVARK")) {
        Manager::Netavark
    } else if chain.table.starts_with("f2b-") || passed.iter().any(|c| c.starts_with("f2b-")) {
        Manager::Fail2ban
    } else if iptables_nft(chain) {
        Manager::IptablesNft
    } else {
        Manager::None
    }
}

/// A table `iptables-nft` (Debian's `iptables`) builds: family ip or ip6, one of the
/// xtables table names, base chains named as iptables names them. nft prints "managed by
/// iptables-nft, do not touch" for these: fixes use `iptables`, not `nft`.
fn iptables_nft(chain: &ForeignChain) -> bool {
    !chain.legacy()
        && matches!(chain.family.as_str(), "ip" | "ip6")
        && matches!(chain.table.as_str(), "filter" | "nat" | "mangle" | "raw" | "security")
        && ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"].contains(&chain.name.as_str())
}

/// `iptables` or `ip6tables` (with `-legacy` for legacy tables) for a chain's family.
fn iptables_cmd(chain: &ForeignChain) -> String {
    let base = if chain.family.starts_with("ip6") { "ip6tables" } else { "iptables" };
    if chain.legacy() {
        format!("{base}-legacy")
    } else {
        base.to_string()
    }
}

/// The container id netavark writes in its DNAT rules' comments (`dnat name: NET id: ID`),
/// searched in the chains a walk passed.
fn netavark_container(chains: &[ForeignChain], chain: &ForeignChain, passed: &[String]) -> Option<String> {
    chains
        .iter()
        .filter(|c| c.family == chain.family && c.table == chain.table && passed.contains(&c.name))
        .flat_map(|c| c.rules.iter())
        .flat_map(|r| r.conds.iter())
        .find_map(|c| match c {
            Cond::Comment(t) => t.split_once(" id: ").map(|(_, id)| id.trim().to_string()),
            _ => None,
        })
}

fn proto_word(l4: u8) -> &'static str {
    if l4 == 6 {
        "tcp"
    } else {
        "udp"
    }
}

fn l4(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

fn fwd_name(f: &PlacedForward) -> String {
    format!("{}/{}", f.owner, f.forward.name)
}

/// How portd dispatches the forwards doctor looks at, and what the fix of a ban that
/// NAT bypasses can be.
#[derive(Debug, Clone, Default)]
pub struct DispatchView {
    /// TCP forwards are steered: their packets keep the public port, are not tracked by
    /// conntrack, and no NAT rule of another table applies to them.
    pub steer: bool,
    /// In NAT mode: the fix that turns steering on (a command to run verbatim), when the
    /// kernel and the unit allow it here; `None` when steering cannot run (or is on).
    pub steer_fix: Option<String>,
}

impl DispatchView {
    /// NAT for every forward, steering not offered.
    pub fn nat() -> DispatchView {
        DispatchView::default()
    }

    fn steered(&self, p: Proto) -> bool {
        self.steer && p == Proto::Tcp
    }
}

/// What the other tables (and legacy iptables) do to the forwards: drops after the
/// redirect on the input hook (and filter chains on prerouting), and NAT before portd's
/// on prerouting and output. Every forward is NATed; see [`check_chains_with`].
pub fn check_chains(chains: &[ForeignChain], forwards: &[PlacedForward], portd_nat_priority: i32) -> Vec<Finding> {
    check_chains_with(chains, forwards, portd_nat_priority, &DispatchView::nat())
}

/// [`check_chains`] for forwards dispatched as `d` says: a steered forward's packets
/// reach every filter hook with the public port and untracked (its bans apply, and an
/// allow of the public port lets it in), and no NAT of another table rewrites them.
pub fn check_chains_with(
    chains: &[ForeignChain],
    forwards: &[PlacedForward],
    portd_nat_priority: i32,
    d: &DispatchView,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for chain in chains {
        let Some(h) = &chain.hook else { continue };
        let filter = h.kind == "filter";
        let drop_check = filter && matches!(h.hook, Hook::Input | Hook::Prerouting);
        let nat_check = h.kind == "nat" && matches!(h.hook, Hook::Prerouting | Hook::Output);
        for f in forwards {
            // One finding per chain and forward: the first proto/family it hits.
            let mut done = false;
            for &proto in f.forward.proto.protos() {
                let steered = d.steered(proto);
                for &family in f.forward.family.families() {
                    if done || !chain.applies_to(family) {
                        continue;
                    }
                    if drop_check {
                        // After the redirect (input); before it on prerouting filter chains
                        // at a priority before portd's redirect, the public port. Steered:
                        // the public port everywhere, untracked.
                        let before_nat = h.hook == Hook::Prerouting && h.priority < portd_nat_priority;
                        let public = before_nat || steered;
                        let p = Packet {
                            l4: l4(proto),
                            dport: if public { f.forward.port.start } else { f.forward.to.start },
                            // A steered forward without a mark of its own marks nothing.
                            mark: if before_nat || (steered && f.forward.mark.is_none()) { 0 } else { f.mark },
                            ct_status: if public { 0 } else { CT_DNAT },
                            untracked: steered,
                        };
                        if let Some(x) = drop_finding(chains, chain, h, f, &p, family) {
                            out.push(x);
                            done = true;
                        }
                    }
                    // portd's raw chains untrack a steered connection before any NAT hook:
                    // nothing rewrites it.
                    if nat_check && !steered && (h.hook == Hook::Prerouting || f.forward.local) {
                        let p = Packet {
                            l4: l4(proto),
                            dport: f.forward.port.start,
                            mark: 0,
                            ct_status: 0,
                            untracked: false,
                        };
                        if let Some(x) = nat_finding(chains, chain, h, f, &p, portd_nat_priority) {
                            out.push(x);
                            done = true;
                        }
                    }
                }
            }
        }
    }
    out.extend(blocks::public_port_blocks(chains, forwards, d));
    out.extend(firewalld::nat_bypassed_blocks(chains, forwards, d));
    out
}

fn drop_finding(
    chains: &[ForeignChain],
    chain: &ForeignChain,
    h: &BaseHook,
    f: &PlacedForward,
    p: &Packet,
    family: Family,
) -> Option<Finding> {
    let w = walk_base(chains, chain, p);
    let Some(End::Dropped { chain: at, rule }) = &w.end else { return None };
    let proto = proto_word(p.l4);
    let by = match rule {
        Some(n) => format!("rule {n} of chain {at} drops it"),
        None => format!(
            "its policy is drop and no rule accepts it (chain {} hook {} priority {})",
            chain.name,
            h.hook.name(),
            h.priority
        ),
    };
    let family_word = if chain.applies_to(Family::Ipv4) && chain.applies_to(Family::Ipv6) {
        String::new()
    } else {
        format!(" ({family:?})").to_lowercase()
    };
    let when = if p.untracked {
        "steered, on public"
    } else if p.ct_status == 0 {
        "before portd's redirect, on public"
    } else {
        "after portd's redirect, on target"
    };
    let mut message = format!(
        "{} drops the forward's traffic{family_word} {when} port {proto}/{}: {by}; an accept in portd's table does not override a drop in another table",
        chain.title(),
        p.dport
    );
    let severity = if w.maybe.is_empty() {
        Severity::Error
    } else {
        message.push_str(&format!(
            "; unless one of these rules that doctor cannot decide accepts it first: {}",
            listed(&w.maybe)
        ));
        Severity::Warning
    };
    let nft_family = chain.family.split(' ').next().unwrap_or("inet");
    let mgr = manager(chain, &w.chains);
    if mgr == Manager::Ufw && rule.is_none() && p.untracked {
        message = format!(
            "ufw's `default deny incoming` (policy drop of {}) drops the forward's traffic{family_word}: it is steered, so ufw sees public port {proto}/{}, and no ufw rule allows that port",
            chain.title(),
            p.dport
        );
    } else if mgr == Manager::Ufw && rule.is_none() {
        // ufw's own words for the policy: it allows ports by the number the packet has in
        // INPUT, after the redirect, so `ufw allow 80` does not cover forwarded traffic.
        message = format!(
            "ufw's `default deny incoming` (policy drop of {}) drops the forward's traffic{family_word} after portd's redirect, on target port {proto}/{}: ufw's allow rules see the port after the redirect, so `ufw allow {}` does not cover it",
            chain.title(),
            p.dport,
            f.forward.port.start
        );
        if !w.maybe.is_empty() {
            message.push_str(&format!(
                "; unless one of these rules that doctor cannot decide accepts it first: {}",
                listed(&w.maybe)
            ));
        }
    }
    let fix = if chain.legacy() {
        let cmd = iptables_cmd(chain);
        let keep = format!("; to keep it across reboots, save it where the boot loads legacy rules from (`{cmd}-save`, e.g. into /etc/iptables/rules.v{})", if nft_family == "ip6" { 6 } else { 4 });
        match rule {
            Some(n) => format!(
                "accept redirected traffic before that rule: `{cmd} -t {} -I {} -m conntrack --ctstate DNAT -j ACCEPT`, or delete it: `{cmd} -t {} -D {at} {n}` (see it with `{cmd} -t {} -S {at}`){keep}",
                chain.table, chain.name, chain.table, chain.table
            ),
            None => format!(
                "accept redirected traffic: `{cmd} -t {} -I {} -m conntrack --ctstate DNAT -j ACCEPT`{keep}",
                chain.table, chain.name
            ),
        }
    } else if mgr == Manager::Ufw && p.untracked {
        format!("allow the public port, as for any service of this host: `ufw allow {}/{proto}`", p.dport)
    } else if mgr == Manager::Ufw {
        "let ufw accept redirected traffic, for every forward, in its own files, kept across ufw reloads and reboots: `grep -q 'ctstate DNAT' /etc/ufw/before.rules || sed -i '/^# End required lines/a -A ufw-before-input -m conntrack --ctstate DNAT -j ACCEPT' /etc/ufw/before.rules; grep -q 'ctstate DNAT' /etc/ufw/before6.rules || sed -i '/^# End required lines/a -A ufw6-before-input -m conntrack --ctstate DNAT -j ACCEPT' /etc/ufw/before6.rules; ufw reload` (then `ufw deny from ADDR` rules no longer cover forwarded ports, which reach ufw as redirected traffic; steer dispatch, where the kernel allows it, keeps them: packets keep their public port and ufw's own rules decide)".to_string()
    } else if mgr == Manager::IptablesNft {
        let cmd = iptables_cmd(chain);
        format!(
            "accept redirected traffic: `{cmd} -t {} -I {} -m conntrack --ctstate DNAT -j ACCEPT` (these are iptables' rules: change them with {cmd}, and in the file they are restored from at boot, such as /etc/iptables/rules.v{})",
            chain.table, chain.name, if nft_family == "ip6" { 6 } else { 4 }
        )
    } else {
        let nft = format!("nft insert rule {nft_family} {} {} ct status dnat accept", chain.table, chain.name);
        match mgr {
            Manager::Ufw => format!(
                "ufw manages this chain: open the target port: `ufw allow {}/{proto}`, or accept redirected traffic in /etc/ufw/before.rules (`-A ufw-before-input -m conntrack --ctstate DNAT -j ACCEPT` after `# End required lines`, the same with ufw6-before-input in before6.rules), then `ufw reload`",
                p.dport
            ),
            Manager::Firewalld => format!(
                "firewalld manages this table: `firewall-cmd --permanent --add-port={}/{proto} && firewall-cmd --reload` (or let firewalld forward the port itself: `--add-forward-port=port={}:proto={proto}:toport={}`)",
                p.dport, f.forward.port.start, f.forward.to.start
            ),
            _ => format!("accept redirected traffic before the drop: `{nft}` (and keep it in the file that builds table {} {})", nft_family, chain.table),
        }
    };
    Some(Finding {
        check: if chain.legacy() { "legacy-iptables" } else { "foreign-drop" }.into(),
        severity,
        forward: Some(fwd_name(f)),
        message,
        fix,
    })
}

fn nat_finding(
    chains: &[ForeignChain],
    chain: &ForeignChain,
    h: &BaseHook,
    f: &PlacedForward,
    p: &Packet,
    portd_priority: i32,
) -> Option<Finding> {
    if h.priority > portd_priority {
        return None;
    }
    let w = walk_base(chains, chain, p);
    let (definite, what) = match &w.end {
        Some(End::Nat { chain: at, rule, verdict }) => {
            (true, format!("rule {rule} of chain {at} ({})", verdict_word(verdict)))
        }
        _ => {
            let nat: Vec<&String> =
                w.maybe.iter().filter(|m| m.contains("(redirect") || m.contains("(dnat)")).collect();
            match nat.first() {
                Some(m) => (false, format!("{m}, if it matches")),
                None => return None,
            }
        }
    };
    let proto = proto_word(p.l4);
    let order = if h.priority < portd_priority {
        format!("at priority {}, before portd's {portd_priority}", h.priority)
    } else {
        // Chains of one priority run in the order the kernel registered them, which any
        // re-creation changes: portd's repair of its table, a firewall reload, a reboot.
        format!("at the same priority as portd's ({portd_priority}), so which runs first depends on which chain was created last and changes with every reload, repair or reboot")
    };
    let mgr = manager(chain, &w.chains);
    let rule_no = match &w.end {
        Some(End::Nat { rule, .. }) => rule.to_string(),
        _ => "N".into(),
    };
    let at = match &w.end {
        Some(End::Nat { chain: at, .. }) => at.clone(),
        _ => chain.name.clone(),
    };
    let who = match mgr {
        Manager::Docker => "; these are Docker's chains: a container publishes this port (`docker run -p`)".to_string(),
        Manager::Netavark => match netavark_container(chains, chain, &w.chains) {
            Some(id) => {
                format!("; these are netavark's chains: Podman container {id} publishes this port (`podman run -p`)")
            }
            None => "; these are netavark's chains: a Podman container publishes this port (`podman run -p`)".into(),
        },
        Manager::IptablesNft => format!(
            "; these are iptables rules (iptables-nft, `{} -t {} -S {at}` lists them)",
            iptables_cmd(chain),
            chain.table
        ),
        _ if chain.legacy() => format!(
            "; these are legacy iptables rules (`{} -t {} -S {at}` lists them)",
            iptables_cmd(chain),
            chain.table
        ),
        _ => String::new(),
    };
    let message = format!(
        "{} ({} hook, {order}) rewrites public port {proto}/{} with {what}; the first NAT binding wins, so portd's redirect to {} does not happen whenever that chain runs first{who}",
        chain.title(),
        h.hook.name(),
        p.dport,
        f.forward.to.start
    );
    let fix = match mgr {
        Manager::Docker => format!(
            "stop the container that publishes port {0}: `docker stop $(docker ps -q --filter publish={0})`, and start it again without `-p {0}:...` (or with another host port), or give the forward another public port",
            p.dport
        ),
        Manager::Netavark => match netavark_container(chains, chain, &w.chains) {
            Some(id) => format!(
                "stop the container: `podman stop {id}`, and start it again without `-p {}:...` (in its quadlet, PublishPort=), or give the forward another public port",
                p.dport
            ),
            None => format!(
                "stop the container that publishes port {0} (`podman ps` shows it), and start it again without `-p {0}:...`, or give the forward another public port",
                p.dport
            ),
        },
        Manager::IptablesNft => {
            let cmd = iptables_cmd(chain);
            format!(
                "delete that rule with iptables, which owns the table, and from the rules iptables-persistent restores at boot: `{cmd} -t {} -D {at} {rule_no} && if [ -e /etc/iptables/rules.v{v} ]; then {cmd}-save > /etc/iptables/rules.v{v}; fi` (see the rules with `{cmd} -t {} -S {at}`), or give the forward another public port",
                chain.table, chain.table, v = if cmd.starts_with("ip6") { 6 } else { 4 }
            )
        }
        _ if chain.legacy() => {
            let cmd = iptables_cmd(chain);
            format!(
                "delete that rule: `{cmd} -t {} -D {at} {rule_no}` (see it with `{cmd} -t {} -S {at}`), and from the file it is restored from at boot, or give the forward another public port",
                chain.table, chain.table
            )
        }
        _ => {
            let fam = chain.family.split(' ').next().unwrap_or("inet");
            format!(
                "remove that rule (`nft -a list chain {fam} {} {at}` shows its handle; `nft delete rule {fam} {} {at} handle N`), or give the forward another public port",
                chain.table, chain.table
            )
        }
    };
    Some(Finding {
        check: if chain.legacy() { "legacy-iptables" } else { "foreign-nat" }.into(),
        // A certain rewrite is an error at the same priority too: it takes the traffic
        // now, or after the next re-creation of either chain.
        severity: if definite { Severity::Error } else { Severity::Warning },
        forward: Some(fwd_name(f)),
        message,
        fix,
    })
}

/// Listeners: nothing on a target port, (user forwards) a socket of another uid (one
/// bound without listening too: it keeps the owner's app off the port), and, for every
/// forward, an application bound to loopback only or to IPv6 only where the forward
/// takes other hosts or IPv4. `sockets(proto, port)` lists the sockets holding it;
/// `owner_uid` gives the uid of a user owner.
pub fn check_listeners(
    forwards: &[PlacedForward],
    sockets: impl Fn(Proto, u16) -> Vec<Listening>,
    owner_uid: impl Fn(&str) -> Option<u32>,
) -> Vec<Finding> {
    let holders = |proto, port| sockets(proto, port).into_iter().map(|s| s.uid).collect::<Vec<u32>>();
    let listening = |proto, port| sockets(proto, port).into_iter().filter(|s| s.listening).collect::<Vec<_>>();
    let mut out = Vec::new();
    for f in forwards {
        for &proto in f.forward.proto.protos() {
            out.extend(bind::bound(f, proto, &listening));
            let to = f.forward.to;
            let idle: Vec<u16> = (to.start..=to.end).filter(|p| listening(proto, *p).is_empty()).collect();
            let word = proto_word(l4(proto));
            if !idle.is_empty() {
                let ports = if idle.len() == 1 {
                    format!("port {word}/{}", idle[0])
                } else {
                    format!("{} ports of {word}/{}-{} (first {})", idle.len(), to.start, to.end, idle[0])
                };
                out.push(Finding {
                    check: "listener".into(),
                    severity: Severity::Error,
                    forward: Some(fwd_name(f)),
                    message: format!(
                        "nothing listens on target {ports}: connections to public port {} are redirected there and refused",
                        f.forward.port.start
                    ),
                    fix: format!(
                        "start the application on port {} (listening on `::` with IPv4 too, or on both 0.0.0.0 and ::); `ss -l{}np sport = :{}` shows what listens",
                        idle[0],
                        if proto == Proto::Tcp { "t" } else { "u" },
                        idle[0]
                    ),
                });
            }
            let Some(uid) = owner_uid(&f.owner) else { continue };
            if let Some((port, other)) =
                (to.start..=to.end).find_map(|p| holders(proto, p).into_iter().find(|u| *u != uid).map(|u| (p, u)))
            {
                out.push(Finding {
                    check: "listener".into(),
                    severity: Severity::Error,
                    forward: Some(fwd_name(f)),
                    message: format!(
                        "target port {word}/{port} is held by uid {other}, not by the forward's owner (uid {uid}): its traffic goes to another user's program"
                    ),
                    fix: format!("stop the program of uid {other} on port {port} (`ss -a{}np sport = :{port}`; a socket bound without listening shows there with iproute2 6.8 or later), or forward to a port the owner's application holds", if proto == Proto::Tcp { "t" } else { "u" }),
                });
            }
        }
    }
    out
}

/// Conntrack: `count` of `max` entries (new connections are dropped at the limit).
pub fn check_conntrack(count: u64, max: u64) -> Option<Finding> {
    if max == 0 || count * 10 < max * 9 {
        return None;
    }
    Some(Finding {
        check: "conntrack".into(),
        severity: Severity::Error,
        forward: None,
        message: format!(
            "the conntrack table holds {count} of at most {max} entries ({}%); at the limit the kernel drops new connections, redirected ones included",
            count * 100 / max
        ),
        fix: format!(
            "raise the limit: `sysctl -w net.netfilter.nf_conntrack_max={}` (persist it in /etc/sysctl.d/), and find what fills the table with `conntrack -L | awk '{{print $1, $5}}' | sort | uniq -c | sort -rn | head`; `conntrack -F` empties it at once",
            max.saturating_mul(2)
        ),
    })
}

/// What portd knows of itself.
#[derive(Debug, Clone, Default)]
pub struct SelfState {
    /// The kernel holds the plan.
    pub in_sync: bool,
    /// portd's table name.
    pub table: String,
    /// Times the repair back-off was hit since start.
    pub backoff_hits: u64,
    /// Seconds until the next repair attempt when standing back now.
    pub standing_back_secs: Option<u64>,
    /// `OWNER/NAME` and reason of each suspended forward.
    pub suspended: Vec<(String, String)>,
}

/// Findings about portd itself.
pub fn check_self(s: &SelfState) -> Vec<Finding> {
    let mut out = Vec::new();
    if !s.in_sync {
        out.push(Finding {
            check: "portd".into(),
            severity: Severity::Error,
            forward: None,
            message: format!("table inet {} in the kernel differs from what portd put there", s.table),
            fix: format!(
                "portd restores it by itself; if this stays, find the program that edits it (`nft monitor` shows changes of table inet {}), stop it, then `portctl reload`",
                s.table
            ),
        });
    }
    if s.backoff_hits > 0 {
        let now = match s.standing_back_secs {
            Some(n) => format!("; it stands back now, for {n} more seconds"),
            None => String::new(),
        };
        out.push(Finding {
            check: "portd".into(),
            severity: if s.standing_back_secs.is_some() { Severity::Error } else { Severity::Warning },
            forward: None,
            message: format!(
                "another program kept changing table inet {} and portd stood back from repairing it {} time(s) since it started{now}",
                s.table, s.backoff_hits
            ),
            fix: "find the program that rewrites the ruleset (`nft monitor`; a firewall reload loop, a configuration manager) and keep it away from table inet {table}".replace("{table}", &s.table),
        });
    }
    for (name, reason) in &s.suspended {
        out.push(Finding {
            check: "portd".into(),
            severity: Severity::Warning,
            forward: Some(name.clone()),
            message: format!("forward {name} is suspended (kept, but not in the kernel): {reason}"),
            fix: "it comes back by itself when allowed again; fix the cause named above (a grant in /etc/portd/portd.yaml and `portctl reload`, a conflicting forward, the other uid's program on the target port)".into(),
        });
    }
    out
}

#[cfg(test)]
mod tests;
