//! Reading the other tables of the namespace for `portctl doctor`: every chain of the
//! families ip, ip6 and inet (hook, priority, policy, type) and the text of each rule,
//! through a connection of its own, so it can run on any thread. portd's own table is
//! left out; nothing is written. The read is bounded: past [`MAX_FOREIGN_RULES`] rules the rest
//! are counted, not kept.

use super::conn::{Conn, Fail, Generation};
use super::consts as k;
use super::error::{hint, BackendError};
use super::raw::{owned_str, RawChain, RawRule, RawSetObj};
use nftnl::nftnl_sys as sys;
use portd_rules::doctor::{parse_rule_in, BaseHook, ForeignChain, Hook};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};

/// Most rules kept from one read.
pub const MAX_FOREIGN_RULES: usize = 20_000;
/// Most anonymous port sets whose elements are read (`tcp dport { 22, 80 }`).
pub const MAX_FOREIGN_SETS: usize = 2_000;
/// NFT_SET_ANONYMOUS
const SET_ANONYMOUS: u32 = 0x1;
/// NFT_SET_INTERVAL
const SET_INTERVAL: u32 = 0x4;
/// NFT_SET_ELEM_INTERVAL_END
const ELEM_INTERVAL_END: u32 = 0x1;
/// NFPROTO_UNSPEC: dump objects of every family.
const NFPROTO_UNSPEC: u16 = 0;

/// What a read of the other tables found.
#[derive(Debug, Default)]
pub struct ForeignRead {
    /// Every chain of every other ip, ip6 and inet table, with its rules.
    pub chains: Vec<ForeignChain>,
    /// Rules that were not kept because the read reached [`MAX_FOREIGN_RULES`].
    pub rules_left_out: usize,
}

fn family_name(f: u32) -> Option<&'static str> {
    match f {
        1 => Some("inet"),
        2 => Some("ip"),
        10 => Some("ip6"),
        _ => None,
    }
}

/// Reads the chains and rules of every table but `inet <own_table>`.
pub fn read_foreign(own_table: &str) -> Result<ForeignRead, BackendError> {
    let mut conn = Conn::open()?;
    let mut gen = Generation::default();
    let fail = |what: &'static str, f: Fail| match f {
        Fail::Kernel(source) => {
            BackendError::Dump { what, table: "(every table)".into(), hint: hint(source.raw_os_error()), source }
        }
        Fail::Decode(reason) => BackendError::Decode { what, reason },
    };
    let mine = |family: &str, table: &str| family == "inet" && table == own_table;
    let mut out = ForeignRead::default();
    let mut index: HashMap<(String, String, String), usize> = HashMap::new();
    // nft list chains
    conn.request_in(
        NFPROTO_UNSPEC,
        k::NFT_MSG_GETCHAIN,
        k::NLM_F_DUMP,
        |_| {},
        &mut gen,
        |msg| {
            let chain = RawChain::new();
            // SAFETY: `msg` is one complete, aligned netlink message; `chain` is live.
            unsafe {
                let p = chain.0.as_ptr();
                if sys::nftnl_chain_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                    return Err("malformed chain".into());
                }
                let Some(family) = family_name(sys::nftnl_chain_get_u32(p, sys::NFTNL_CHAIN_FAMILY as u16)) else {
                    return Ok(());
                };
                let table = owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_TABLE as u16)).unwrap_or_default();
                if mine(family, &table) {
                    return Ok(());
                }
                let name = owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_NAME as u16)).unwrap_or_default();
                let hook = if sys::nftnl_chain_is_set(p, sys::NFTNL_CHAIN_HOOKNUM as u16) {
                    Hook::from_num(sys::nftnl_chain_get_u32(p, sys::NFTNL_CHAIN_HOOKNUM as u16)).map(|hook| BaseHook {
                        kind: owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_TYPE as u16)).unwrap_or_default(),
                        hook,
                        priority: sys::nftnl_chain_get_s32(p, sys::NFTNL_CHAIN_PRIO as u16),
                        // NF_DROP is 0, NF_ACCEPT 1
                        policy_drop: sys::nftnl_chain_is_set(p, sys::NFTNL_CHAIN_POLICY as u16)
                            && sys::nftnl_chain_get_u32(p, sys::NFTNL_CHAIN_POLICY as u16) == 0,
                    })
                } else {
                    None
                };
                index.insert((family.to_string(), table.clone(), name.clone()), out.chains.len());
                out.chains.push(ForeignChain { family: family.into(), table, name, hook, rules: Vec::new() });
            }
            Ok(())
        },
    )
    .map_err(|f| fail("chains", f))?;
    let sets = key_sets(&mut conn, &mut gen, own_table).map_err(|f| fail("sets", f))?;
    // nft list ruleset: the rules, in chain order
    let r = RawRule::new();
    let mut kept = 0usize;
    conn.request_in(
        NFPROTO_UNSPEC,
        k::NFT_MSG_GETRULE,
        k::NLM_F_DUMP,
        // SAFETY: `request_in` hands over a header it built in a buffer large enough for
        // the payload, and the (empty: every table) rule object is live.
        |nlh| unsafe { sys::nftnl_rule_nlmsg_build_payload(nlh, r.0.as_ptr()) },
        &mut gen,
        |msg| {
            if kept >= MAX_FOREIGN_RULES {
                out.rules_left_out += 1;
                return Ok(());
            }
            let rule = RawRule::new();
            // SAFETY: `msg` is one complete, aligned netlink message; `rule` is live.
            unsafe {
                let p = rule.0.as_ptr();
                if sys::nftnl_rule_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                    return Err("malformed rule".into());
                }
                let Some(family) = family_name(sys::nftnl_rule_get_u32(p, sys::NFTNL_RULE_FAMILY as u16)) else {
                    return Ok(());
                };
                let table = owned_str(sys::nftnl_rule_get_str(p, sys::NFTNL_RULE_TABLE as u16)).unwrap_or_default();
                if mine(family, &table) {
                    return Ok(());
                }
                let chain = owned_str(sys::nftnl_rule_get_str(p, sys::NFTNL_RULE_CHAIN as u16)).unwrap_or_default();
                let resolve = |set: &str| sets.get(&(family.to_string(), table.clone(), set.to_string())).cloned();
                let parsed = parse_rule_in(&text_with_match_info(&rule), &resolve);
                if let Some(i) = index.get(&(family.to_string(), table, chain)) {
                    out.chains[*i].rules.push(parsed);
                    kept += 1;
                }
            }
            Ok(())
        },
    )
    .map_err(|f| fail("rules", f))?;
    Ok(out)
}

type SetKey = (String, String, String);

/// A rule as libnftnl prints it, except that xtables matches (iptables-nft's `-m
/// conntrack`, `-m tcp`) carry their info bytes: `[ match name N rev R info HEX ]`.
fn text_with_match_info(r: &RawRule) -> String {
    unsafe extern "C" fn one(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the Vec<String> that `text_with_match_info` passes and nothing
        // else borrows during the walk; `e` is a live expression of the rule; a non-NULL
        // info pointer is valid for the `len` bytes libnftnl reports.
        unsafe {
            let out = &mut *data.cast::<Vec<String>>();
            let name = owned_str(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16)).unwrap_or_default();
            if name == "match" {
                let mt = owned_str(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_MT_NAME as u16)).unwrap_or_default();
                let rev = sys::nftnl_expr_get_u32(e, sys::NFTNL_EXPR_MT_REV as u16);
                let mut len = 0u32;
                let p = sys::nftnl_expr_get(e, sys::NFTNL_EXPR_MT_INFO as u16, &raw mut len);
                let info: String = if p.is_null() {
                    String::new()
                } else {
                    std::slice::from_raw_parts(p.cast::<u8>(), len as usize)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                };
                out.push(format!("[ match name {mt} rev {rev} info {info} ]"));
                return 0;
            }
            let mut buf = [0 as c_char; 4096];
            if sys::nftnl_expr_snprintf(buf.as_mut_ptr(), buf.len(), e, sys::NFTNL_OUTPUT_DEFAULT, 0) < 0 {
                return -1;
            }
            out.push(format!("[ {name} {}]", owned_str(buf.as_ptr()).unwrap_or_default()));
        }
        0
    }
    let mut parts: Vec<String> = Vec::new();
    // SAFETY: `r` is a live rule; the callback only reads its expressions and appends to
    // `parts`, which outlives the call and is not otherwise borrowed meanwhile.
    if unsafe { sys::nftnl_expr_foreach(r.0.as_ptr(), Some(one), (&raw mut parts).cast()) } < 0 {
        parts.push("[ unprintable expression ]".to_string());
    }
    parts.join(" ")
}

/// The anonymous sets of other tables with 2-byte keys (ports, read big-endian) and
/// 4-byte keys (`ct state`: host order), as inclusive ranges.
fn key_sets(conn: &mut Conn, gen: &mut Generation, own_table: &str) -> Result<HashMap<SetKey, Vec<(u32, u32)>>, Fail> {
    // nft list sets (anonymous ones included)
    let mut found: Vec<(u16, String, String, u32, u32)> = Vec::new();
    let s = RawSetObj::new();
    conn.request_in(
        NFPROTO_UNSPEC,
        k::NFT_MSG_GETSET,
        k::NLM_F_DUMP,
        // SAFETY: `request_in` hands over a header it built in a buffer large enough for
        // the payload, and the (empty: every table) set object is live.
        |nlh| unsafe { sys::nftnl_set_nlmsg_build_payload(nlh, s.0.as_ptr()) },
        gen,
        |msg| {
            let set = RawSetObj::new();
            // SAFETY: `msg` is one complete, aligned netlink message; `set` is live.
            unsafe {
                let p = set.0.as_ptr();
                if sys::nftnl_set_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                    return Err("malformed set".into());
                }
                let family = sys::nftnl_set_get_u32(p, sys::NFTNL_SET_FAMILY as u16);
                let table = owned_str(sys::nftnl_set_get_str(p, sys::NFTNL_SET_TABLE as u16)).unwrap_or_default();
                let name = owned_str(sys::nftnl_set_get_str(p, sys::NFTNL_SET_NAME as u16)).unwrap_or_default();
                let flags = sys::nftnl_set_get_u32(p, sys::NFTNL_SET_FLAGS as u16);
                let key_len = sys::nftnl_set_get_u32(p, sys::NFTNL_SET_KEY_LEN as u16);
                let Some(fam) = family_name(family) else { return Ok(()) };
                if flags & SET_ANONYMOUS != 0
                    && (key_len == 2 || key_len == 4)
                    && !(fam == "inet" && table == own_table)
                    && found.len() < MAX_FOREIGN_SETS
                {
                    found.push((family as u16, table, name, flags, key_len));
                }
            }
            Ok(())
        },
    )?;
    let mut out = HashMap::new();
    for (family, table, name, flags, key_len) in found {
        let (Ok(ct), Ok(cn)) = (CString::new(table.as_str()), CString::new(name.as_str())) else { continue };
        let s = RawSetObj::new();
        // SAFETY: `s` is live; the names are NUL-terminated and copied.
        unsafe {
            sys::nftnl_set_set_str(s.0.as_ptr(), sys::NFTNL_SET_TABLE as u16, ct.as_ptr());
            sys::nftnl_set_set_str(s.0.as_ptr(), sys::NFTNL_SET_NAME as u16, cn.as_ptr());
        }
        let mut elems: Vec<(u32, bool)> = Vec::new();
        conn.request_in(
            family,
            k::NFT_MSG_GETSETELEM,
            k::NLM_F_DUMP,
            // SAFETY: as for the set dump; the object is live.
            |nlh| unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.0.as_ptr()) },
            gen,
            |msg| {
                let set = RawSetObj::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                if unsafe { sys::nftnl_set_elems_nlmsg_parse(msg.as_ptr().cast(), set.0.as_ptr()) } < 0 {
                    return Err(format!("malformed elements of set {name}"));
                }
                // SAFETY: `set` is live; the callback only appends to `elems`, which
                // outlives the call and is not otherwise borrowed meanwhile.
                let rc =
                    unsafe { sys::nftnl_set_elem_foreach(set.0.as_ptr(), Some(key_elem), (&raw mut elems).cast()) };
                if rc < 0 {
                    return Err(format!("cannot walk the elements of set {name}"));
                }
                Ok(())
            },
        )?;
        let family = family_name(u32::from(family)).unwrap_or("inet").to_string();
        let top = if key_len == 2 { u32::from(u16::MAX) } else { u32::MAX };
        out.insert((family, table, name), ranges(elems, flags & SET_INTERVAL != 0, top));
    }
    Ok(out)
}

/// Appends one element's key (2 bytes big-endian, 4 bytes host order) and interval-end
/// flag to the `Vec<(u32, bool)>` at `data`.
unsafe extern "C" fn key_elem(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> c_int {
    // SAFETY: `data` is the Vec that `key_sets` passes and nothing else borrows during
    // the walk; `e` is a live element; a non-NULL key is valid for `len` bytes.
    unsafe {
        let out = &mut *data.cast::<Vec<(u32, bool)>>();
        let mut len = 0u32;
        let p = sys::nftnl_set_elem_get(e, sys::NFTNL_SET_ELEM_KEY as u16, &raw mut len);
        let end = sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_FLAGS as u16)
            && sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16) & ELEM_INTERVAL_END != 0;
        if !p.is_null() {
            let b = std::slice::from_raw_parts(p.cast::<u8>(), len as usize);
            match b.len() {
                2 => out.push((u32::from(u16::from_be_bytes([b[0], b[1]])), end)),
                4 => out.push((u32::from_ne_bytes([b[0], b[1], b[2], b[3]]), end)),
                _ => {}
            }
        }
    }
    0
}

/// Inclusive ranges from a set's elements: single ports, or (interval sets) starts
/// paired with the interval ends that follow them.
fn ranges(mut elems: Vec<(u32, bool)>, interval: bool, top: u32) -> Vec<(u32, u32)> {
    if !interval {
        return elems.into_iter().map(|(p, _)| (p, p)).collect();
    }
    elems.sort();
    let mut out = Vec::new();
    let mut start: Option<u32> = None;
    for (port, end) in elems {
        if end {
            if let Some(s) = start.take() {
                out.push((s, port.saturating_sub(1)));
            }
        } else {
            if let Some(s) = start {
                out.push((s, port.saturating_sub(1)));
            }
            start = Some(port);
        }
    }
    if let Some(s) = start {
        out.push((s, top));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn interval_elements_pair_into_ranges() {
        assert_eq!(super::ranges(vec![(80, false), (22, false)], false, 65535), vec![(80, 80), (22, 22)]);
        // nft: { 22, 1000-2000 } as an interval set: 22, 23 (end), 1000, 2001 (end)
        let e = vec![(2001, true), (22, false), (1000, false), (23, true)];
        assert_eq!(super::ranges(e, true, 65535), vec![(22, 22), (1000, 2000)]);
        assert_eq!(super::ranges(vec![(1000, false)], true, 65535), vec![(1000, 65535)]);
    }
}
