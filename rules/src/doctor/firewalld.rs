//! firewalld's address blocks (a zone with a source whose target drops or rejects, like
//! `--zone=drop --add-source=ADDR`, and rich rules that reject or drop a source on a
//! port), which NAT lets forwarded traffic around: firewalld's `filter_INPUT` accepts
//! every redirected connection (`ct status dnat accept`) before it dispatches to zones.
//!
//! The shapes are those firewalld 1.3 (Debian 12, `FirewallBackend=nftables`) writes in
//! table `inet firewalld`: `filter_INPUT_ZONES` has `ip saddr ADDR goto filter_IN_ZONE`
//! per source, a zone chain ends in `drop` (target DROP) or `reject` (REJECT and default),
//! and rich rules land in `filter_IN_ZONE_deny` (`ip saddr ADDR tcp dport 80 reject`).
#![forbid(unsafe_code)]

use super::*;

const TABLE: &str = "firewalld";

/// The bytes of the words libnftnl prints (`0x0200fb0a ...`), in memory order.
fn bytes_of<'a>(tokens: impl Iterator<Item = &'a str>) -> Vec<u8> {
    tokens
        .filter_map(|t| t.strip_prefix("0x"))
        .filter_map(|h| u32::from_str_radix(h, 16).ok())
        .flat_map(u32::to_ne_bytes)
        .collect()
}

/// The source address or prefix a rule compares with `==` (`ip saddr A`, `ip6 saddr
/// A/N`), read from the expressions doctor keeps undecided: a load of the network header
/// at the source's offset, a mask for a prefix (IPv4's is kept with the comparison, IPv6's
/// is an expression of its own), an equality.
pub(super) fn source(r: &Rule) -> Option<(Family, String)> {
    let texts: Vec<&str> =
        r.conds.iter().filter_map(|c| if let Cond::Unknown(t) = c { Some(t.as_str()) } else { None }).collect();
    (0..texts.len()).find_map(|i| {
        let (fam, len) = if texts[i].starts_with("payload load 4b @ network header + 12 =>") {
            (Family::Ipv4, 4)
        } else if texts[i].starts_with("payload load 16b @ network header + 8 =>") {
            (Family::Ipv6, 16)
        } else {
            return None;
        };
        let mut next = texts.get(i + 1)?;
        let mut mask: Option<Vec<u8>> = None;
        if let Some(b) = next.strip_prefix("bitwise ") {
            let inner = b.split_once('&')?.1.split_once(')')?.0;
            mask = Some(bytes_of(inner.split_whitespace()));
            next = texts.get(i + 2)?;
        }
        let rest = next.strip_prefix("cmp eq reg ")?;
        let (cmp, m) = match rest.split_once(" mask ") {
            Some((c, m)) => (c, Some(bytes_of(m.split_whitespace()))),
            None => (rest, None),
        };
        let mask = mask.or(m).unwrap_or_else(|| vec![0xff; len]);
        let bytes = bytes_of(cmp.split_whitespace());
        if bytes.len() != len || mask.len() != len {
            return None;
        }
        // A prefix: ones, then zeros.
        let prefix = mask.iter().map(|b| b.leading_ones()).sum::<u32>();
        if mask.iter().map(|b| b.count_ones()).sum::<u32>() != prefix
            || mask.iter().flat_map(|b| (0..8).rev().map(move |k| b >> k & 1)).skip(prefix as usize).any(|x| x == 1)
        {
            return None;
        }
        let addr = if len == 4 {
            std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string()
        } else {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes);
            std::net::Ipv6Addr::from(a).to_string()
        };
        Some((fam, if prefix as usize == len * 8 { addr } else { format!("{addr}/{prefix}") }))
    })
}

/// `ct status dnat accept`.
fn accepts_dnat(r: &Rule) -> bool {
    r.verdict == Verdict::Accept && matches!(r.conds.as_slice(), [Cond::CtStatus(b)] if b.test(CT_DNAT) && !b.test(0))
}

/// The ports outside `ranges` (inclusive ranges, in any order), as inclusive ranges.
fn complement(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out = Vec::new();
    let mut next = 0u32; // the lowest port not yet covered
    for (lo, hi) in ranges {
        if u32::from(lo) > next {
            out.push((next as u16, lo - 1));
        }
        next = next.max(u32::from(hi) + 1);
    }
    if next <= u32::from(u16::MAX) {
        out.push((next as u16, u16::MAX));
    }
    out
}

/// One block firewalld writes for some source addresses.
struct Block {
    /// What it is, in firewalld's words.
    what: String,
    /// The chain and rule number that implement it.
    at: String,
    family: Family,
    addr: String,
    /// Ports it applies to (`None`: every port).
    ports: Option<Vec<(u16, u16)>>,
    /// Its rule's layer-4 protocol, if it names one.
    l4: Option<u8>,
    reject: bool,
}

fn blocks(chains: &[ForeignChain]) -> Vec<Block> {
    let mine: Vec<&ForeignChain> = chains.iter().filter(|c| c.family == "inet" && c.table == TABLE).collect();
    let find = |name: &str| mine.iter().copied().find(|c| c.name == name && c.hook.is_none());
    let mut out = Vec::new();
    // Zones bound to sources.
    if let Some(zones) = find("filter_INPUT_ZONES") {
        for (n, r) in zones.rules.iter().enumerate() {
            let Verdict::Goto(t) = &r.verdict else { continue };
            let (Some(zone), Some((family, addr))) = (t.strip_prefix("filter_IN_"), source(r)) else { continue };
            let Some(zc) = find(t) else { continue };
            // The zone's target: its chain's last rule, unconditional drop or reject.
            let Some(last) = zc.rules.last().filter(|l| l.conds.is_empty()) else { continue };
            if !matches!(last.verdict, Verdict::Drop | Verdict::Reject) {
                continue;
            }
            // Ports the zone accepts (services, ports), in the chains it jumps to.
            let allowed: Vec<(u16, u16)> = zc
                .rules
                .iter()
                .filter_map(|j| if let Verdict::Jump(s) = &j.verdict { find(s) } else { None })
                .chain([zc])
                .flat_map(|c| c.rules.iter())
                .filter(|a| a.verdict == Verdict::Accept)
                .flat_map(Rule::dports)
                .collect();
            out.push(Block {
                what: format!("zone {zone} holds source {addr} (`firewall-cmd --zone={zone} --add-source={addr}`)"),
                at: format!("rule {} of table inet {TABLE} chain {}", n + 1, zones.name),
                family,
                addr,
                // A zone that accepts some ports blocks the others; the finding asks about
                // the forward's public port.
                ports: (!allowed.is_empty()).then(|| complement(allowed)),
                l4: None,
                reject: last.verdict == Verdict::Reject,
            });
        }
    }
    // Rich rules (and policies' rules) that drop or reject a source on some ports.
    for c in &mine {
        let Some(rest) = c.name.strip_prefix("filter_IN_") else { continue };
        let Some((owner, _)) =
            ["_pre", "_log", "_deny", "_allow", "_post"].iter().find_map(|s| rest.strip_suffix(s)).map(|o| (o, ()))
        else {
            continue;
        };
        for (n, r) in c.rules.iter().enumerate() {
            if !matches!(r.verdict, Verdict::Drop | Verdict::Reject) {
                continue;
            }
            let Some((family, addr)) = source(r) else { continue };
            let ports = r.dports();
            let whose = match owner.strip_prefix("policy_") {
                Some(p) => format!("policy {p}"),
                None => format!("zone {owner}"),
            };
            out.push(Block {
                what: format!(
                    "a rich rule of {whose} {}s source {addr}",
                    if r.verdict == Verdict::Reject { "reject" } else { "drop" }
                ),
                at: format!("rule {} of table inet {TABLE} chain {}", n + 1, c.name),
                family,
                addr,
                ports: if ports.is_empty() { None } else { Some(ports) },
                l4: r.conds.iter().find_map(|c| match c {
                    Cond::L4 { proto, negate: false } => Some(*proto),
                    _ => None,
                }),
                reject: r.verdict == Verdict::Reject,
            });
        }
    }
    out
}

/// A rule of another table's input hook (a firewalld direct rule, written with
/// iptables-nft) that drops or rejects `addr` on port `port` of `l4`.
fn covered(chains: &[ForeignChain], family: Family, addr: &str, l4p: u8, port: u16) -> bool {
    chains.iter().any(|c| {
        c.table != TABLE
            && c.applies_to(family)
            && c.hook.as_ref().is_some_and(|h| h.kind == "filter" && h.hook == Hook::Input)
            && c.rules.iter().any(|r| {
                matches!(r.verdict, Verdict::Drop | Verdict::Reject)
                    && source(r).is_some_and(|(f, a)| f == family && a == addr)
                    && r.dports().iter().any(|(lo, hi)| (*lo..=*hi).contains(&port))
                    && !r.conds.iter().any(|c| matches!(c, Cond::L4 { proto, negate: false } if *proto != l4p))
            })
    })
}

/// firewalld's blocks that NAT lets the forwards' traffic around (see the module).
pub(super) fn nat_bypassed_blocks(
    chains: &[ForeignChain],
    forwards: &[PlacedForward],
    d: &DispatchView,
) -> Vec<Finding> {
    let Some(input) = chains.iter().find(|c| {
        c.family == "inet"
            && c.table == TABLE
            && c.hook.as_ref().is_some_and(|h| h.kind == "filter" && h.hook == Hook::Input)
    }) else {
        return Vec::new();
    };
    let Some(accept_at) = input.rules.iter().position(accepts_dnat) else { return Vec::new() };
    let mut out = Vec::new();
    for b in blocks(chains) {
        for f in forwards {
            let public = f.forward.port.start;
            let (to_lo, to_hi) = (f.forward.to.start, f.forward.to.end);
            if !f.forward.family.families().contains(&b.family) {
                continue;
            }
            let hits = |p: u16| b.ports.as_ref().is_none_or(|ps| ps.iter().any(|(lo, hi)| (*lo..=*hi).contains(&p)));
            // Blocks of the public port only; a block that names the target port as well
            // is left to the rule itself.
            if !hits(public) || (b.ports.is_some() && hits(to_lo)) {
                continue;
            }
            let natted: Vec<Proto> = f
                .forward
                .proto
                .protos()
                .iter()
                .copied()
                .filter(|p| !d.steered(*p) && b.l4.is_none_or(|l| l == l4(*p)))
                .collect();
            let open: Vec<Proto> =
                natted.into_iter().filter(|p| !covered(chains, b.family, &b.addr, l4(*p), to_lo)).collect();
            if open.is_empty() {
                continue;
            }
            let fam = if b.family == Family::Ipv4 { "ipv4" } else { "ipv6" };
            let dport = if to_lo == to_hi { to_lo.to_string() } else { format!("{to_lo}:{to_hi}") };
            let target = if b.reject { "REJECT" } else { "DROP" };
            let rules: Vec<String> = open
                .iter()
                .map(|p| {
                    format!("{fam} filter INPUT 0 -s {} -p {} --dport {dport} -j {target}", b.addr, proto_word(l4(*p)))
                })
                .collect();
            let direct = rules
                .iter()
                .map(|r| {
                    format!("firewall-cmd --direct --add-rule {r} && firewall-cmd --permanent --direct --add-rule {r}")
                })
                .collect::<Vec<_>>()
                .join(" && ");
            let message = format!(
                "firewalld: {} ({}), but rule {} of table inet {TABLE} chain {} accepts every redirected connection (`ct status dnat accept`) before firewalld's zones and rich rules: in NAT mode the forward's traffic from {} to public port {public} reaches the application on target port {dport}",
                b.what,
                b.at,
                accept_at + 1,
                input.name,
                b.addr,
            );
            let why = "firewalld accepts redirected connections before its zones, so no zone or rich rule can; a direct rule is an iptables rule of table ip filter, which runs before firewalld's";
            let fix = match &d.steer_fix {
                Some(steer) if open.iter().all(|p| *p == Proto::Tcp) => format!(
                    "steer TCP forwards (settings.dispatch: auto or steer; this host can): packets keep their public port and are not redirected, so firewalld's zones and rich rules apply to them as written: {steer}; or block the target port too, with a firewalld direct rule ({why}): `{direct}`"
                ),
                _ => format!(
                    "block the target port too, with a firewalld direct rule ({why}): `{direct}`{}",
                    if d.steer_fix.is_none() && !d.steer { " (steer dispatch, where packets keep their public port, cannot run here)" } else { "" }
                ),
            };
            out.push(Finding {
                check: "foreign-block".into(),
                severity: Severity::Error,
                forward: Some(fwd_name(f)),
                message,
                fix,
            });
        }
    }
    out
}

#[cfg(test)]
mod complement_tests {
    use super::complement;

    #[test]
    fn the_ports_outside_some_ranges() {
        assert_eq!(complement(vec![(80, 80), (22, 22)]), vec![(0, 21), (23, 79), (81, u16::MAX)]);
        assert_eq!(complement(vec![(0, 10), (5, 20), (u16::MAX, u16::MAX)]), vec![(21, u16::MAX - 1)]);
        assert_eq!(complement(vec![(0, u16::MAX)]), vec![]);
    }
}
