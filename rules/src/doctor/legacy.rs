//! Legacy (non-nft) iptables tables as the kernel hands them out (`IPT_SO_GET_ENTRIES`,
//! `IP6T_SO_GET_ENTRIES`): the entries of each built-in chain decoded into the
//! [`ForeignChain`] form the chain walk reads. Decoded: protocol, input interface,
//! the `tcp`/`udp` matches' destination ports, and the standard (ACCEPT, DROP, RETURN),
//! REJECT, DNAT and REDIRECT targets; anything else is a condition or verdict doctor
//! cannot decide. User-defined chains are not followed (a jump is undecided).

use super::{BaseHook, Cond, ForeignChain, Hook, Rule, Verdict};

/// What `IPT_SO_GET_INFO` says of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// Bit per built-in hook.
    pub valid_hooks: u32,
    /// Offset of each hook's first entry.
    pub hook_entry: [u32; 5],
    /// Offset of each hook's policy entry.
    pub underflow: [u32; 5],
    /// Entries in the table (policies and chain heads included).
    pub num_entries: u32,
    /// Bytes of all entries.
    pub size: u32,
}

/// Size of `struct ipt_getinfo` (and of ip6t_getinfo).
pub const GETINFO_LEN: usize = 84;
/// Offset of the entries in `struct ipt_get_entries`.
pub const GET_ENTRIES_HEADER: usize = 40;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn name_at(b: &[u8], at: usize, len: usize) -> String {
    b.get(at..at + len).unwrap_or(&[]).iter().take_while(|c| **c != 0).map(|c| char::from(*c)).collect()
}

/// Decodes `struct ipt_getinfo`.
pub fn parse_info(b: &[u8]) -> Option<Info> {
    let mut hook_entry = [0; 5];
    let mut underflow = [0; 5];
    for i in 0..5 {
        hook_entry[i] = u32_at(b, 36 + 4 * i)?;
        underflow[i] = u32_at(b, 56 + 4 * i)?;
    }
    Some(Info { valid_hooks: u32_at(b, 32)?, hook_entry, underflow, num_entries: u32_at(b, 76)?, size: u32_at(b, 80)? })
}

/// Offsets inside one entry, by family.
struct Layout {
    proto: usize,
    invflags: usize,
    iniface: usize,
    addrs: std::ops::Range<usize>,
    target_offset: usize,
    next_offset: usize,
    elems: usize,
}

const V4: Layout =
    Layout { proto: 80, invflags: 83, iniface: 16, addrs: 0..16, target_offset: 88, next_offset: 90, elems: 112 };
const V6: Layout =
    Layout { proto: 128, invflags: 132, iniface: 64, addrs: 0..64, target_offset: 140, next_offset: 142, elems: 168 };

/// One decoded entry: its rule, and its target's name ("" for the standard one, "ERROR"
/// for chain heads and the end).
fn entry(e: &[u8], l: &Layout) -> Option<(Rule, String, Option<i32>)> {
    let target_offset = usize::from(u16_at(e, l.target_offset)?);
    let mut conds = Vec::new();
    if e.get(l.addrs.clone())?.iter().any(|b| *b != 0) {
        conds.push(Cond::Unknown("source or destination address".into()));
    }
    let inv = *e.get(l.invflags)?;
    let proto = u16_at(e, l.proto)?;
    if proto != 0 {
        conds.push(Cond::L4 { proto: proto as u8, negate: inv & 0x40 != 0 });
    }
    let iif = name_at(e, l.iniface, 16);
    if !iif.is_empty() {
        if iif.ends_with('+') {
            conds.push(Cond::Unknown(format!("-i {iif}")));
        } else {
            conds.push(Cond::Iif { name: iif, negate: inv & 0x01 != 0 });
        }
    }
    if !name_at(e, l.iniface + 16, 16).is_empty() {
        conds.push(Cond::Unknown("-o".into()));
    }
    let mut at = l.elems;
    while at + 32 <= target_offset {
        let size = usize::from(u16_at(e, at)?);
        let name = name_at(e, at + 2, 29);
        let data = e.get(at + 32..at + size)?;
        conds.extend(super::xt_match(&name, *e.get(at + 31)?, data));
        if size < 32 {
            return None;
        }
        at += size;
    }
    let tname = name_at(e, target_offset + 2, 29);
    let tdata = e.get(target_offset + 32..).unwrap_or(&[]);
    let mut standard = None;
    let verdict = match tname.as_str() {
        "" => {
            let v = i32::from_ne_bytes(tdata.get(0..4)?.try_into().ok()?);
            standard = Some(v);
            match v {
                -1 => Verdict::Drop,
                -2 => Verdict::Accept,
                -5 => Verdict::Return,
                v if v >= 0 => Verdict::Unknown("jump to a user-defined chain".into()),
                _ => Verdict::Unknown(format!("verdict {v}")),
            }
        }
        "REJECT" => Verdict::Reject,
        "DNAT" => Verdict::Dnat,
        // IPv4: nf_nat_ipv4_multi_range_compat: rangesize, then flags, min_ip, max_ip, min
        // port (big-endian) at 16. IPv6: nf_nat_range: flags, min_addr, max_addr (16 bytes
        // each), min port at 36.
        "REDIRECT" => {
            let at = if l.proto == V6.proto { 36 } else { 16 };
            Verdict::Redirect(tdata.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]])))
        }
        n if super::rule::NON_TERMINAL_TARGETS.contains(&n) => Verdict::Continue,
        "ERROR" => Verdict::Unknown("ERROR".into()),
        other => Verdict::Unknown(other.to_string()),
    };
    Some((Rule { conds, verdict }, tname, standard))
}

/// Priorities of the legacy tables' hooks, as nf_tables names them.
fn priority(table: &str) -> i32 {
    match table {
        "raw" => -300,
        "mangle" => -150,
        "nat" => -100,
        "security" => 50,
        _ => 0,
    }
}

/// The built-in chains of one legacy table from its entries (`blob`: the bytes after the
/// `ipt_get_entries` header). `v6` for ip6tables.
pub fn chains(table: &str, v6: bool, info: &Info, blob: &[u8]) -> Result<Vec<ForeignChain>, String> {
    let l = if v6 { V6 } else { V4 };
    // Every entry by offset.
    let mut entries = Vec::new();
    let mut at = 0usize;
    while at < blob.len().min(info.size as usize) {
        let e = &blob[at..];
        let next = usize::from(u16_at(e, l.next_offset).ok_or("truncated entry")?);
        if next < l.elems || at + next > blob.len() {
            return Err(format!("entry at offset {at} has a bad size {next}"));
        }
        let (rule, _, standard) = entry(&e[..next], &l).ok_or(format!("entry at offset {at} cannot be decoded"))?;
        entries.push((at as u32, rule, standard));
        at += next;
    }
    const HOOKS: [(Hook, &str); 5] = [
        (Hook::Prerouting, "PREROUTING"),
        (Hook::Input, "INPUT"),
        (Hook::Forward, "FORWARD"),
        (Hook::Output, "OUTPUT"),
        (Hook::Postrouting, "POSTROUTING"),
    ];
    let mut out = Vec::new();
    for (i, (hook, name)) in HOOKS.iter().enumerate() {
        if info.valid_hooks & (1 << i) == 0 {
            continue;
        }
        let (first, policy) = (info.hook_entry[i], info.underflow[i]);
        let rules: Vec<Rule> =
            entries.iter().filter(|(o, _, _)| *o >= first && *o < policy).map(|(_, r, _)| r.clone()).collect();
        let policy_drop = entries.iter().find(|(o, _, _)| *o == policy).is_some_and(|(_, _, v)| *v == Some(-1));
        out.push(ForeignChain {
            family: if v6 { "ip6 (legacy)" } else { "ip (legacy)" }.into(),
            table: table.to_string(),
            name: name.to_string(),
            hook: Some(BaseHook {
                kind: if table == "nat" { "nat" } else { "filter" }.into(),
                hook: *hook,
                priority: priority(table),
                policy_drop,
            }),
            rules,
        });
    }
    Ok(out)
}
