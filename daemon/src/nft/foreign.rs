//! Reading the other tables of the namespace for `portctl doctor`: every chain of the
//! families ip, ip6 and inet (hook, priority, policy, type) and the text of each rule,
//! through a connection of its own, so it can run on any thread. portd's own table is
//! left out; nothing is written. The read is bounded: past [`MAX_FOREIGN_RULES`] rules the rest
//! are counted, not kept.

use super::conn::{Conn, Fail, Generation};
use super::consts as k;
use super::error::{hint, BackendError};
use super::raw::{owned_str, rule_text, RawChain, RawRule};
use nftnl::nftnl_sys as sys;
use portd_rules::doctor::{parse_rule, BaseHook, ForeignChain, Hook};
use std::collections::HashMap;

/// Most rules kept from one read.
pub const MAX_FOREIGN_RULES: usize = 20_000;
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
                if let Some(i) = index.get(&(family.to_string(), table, chain)) {
                    out.chains[*i].rules.push(parse_rule(&rule_text(&rule)));
                    kept += 1;
                }
            }
            Ok(())
        },
    )
    .map_err(|f| fail("rules", f))?;
    Ok(out)
}
