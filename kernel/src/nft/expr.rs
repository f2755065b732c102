//! Expressions and rules: each plan rule as the nf_tables expressions nft(8) builds from
//! its text, and the chains that carry them.

use super::consts as k;
use super::error::{cstring, encode_err, BackendError};
use super::raw::alloc;
use nftnl::expr::Expression;
use nftnl::nftnl_sys as sys;
use nftnl::{Chain, Table};
use portd_rules::model::{Family, Proto};
use portd_rules::plan::{self, ChainType, Hook, KeyExpr, Plan};
use portd_rules::render;
use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::ptr::NonNull;

/// One nf_tables expression with exactly the attributes nft(8) gives it; the comment on
/// each variant is how libnftnl prints it.
enum Expr {
    /// `[ meta load KEY => reg DREG ]`
    Meta { key: u32, dreg: u32 },
    /// `[ meta set KEY with reg SREG ]`
    MetaSet { key: u32, sreg: u32 },
    /// `[ payload load LENb @ BASE header + OFFSET => reg DREG ]`
    Payload { base: u32, offset: u32, len: u32, dreg: u32 },
    /// `[ cmp OP reg SREG DATA ]`
    Cmp { op: u32, sreg: u32, data: Vec<u8> },
    /// `[ bitwise reg R = ( reg R & MASK ) ^ XOR ]` on a 4-byte register
    Bitwise32 { reg: u32, mask: u32, xor: u32 },
    /// `[ byteorder reg R = hton(reg R, SIZE, LEN) ]`
    Hton { reg: u32, size: u32, len: u32 },
    /// `[ lookup reg SREG set NAME (dreg DREG) FLAGS ]`; the flags are always sent
    /// (`0x0` or `0x1` for `!=`) because the kernel always reports them.
    Lookup { set: CString, set_id: u32, sreg: u32, dreg: Option<u32>, invert: bool },
    /// `[ fib daddr type => reg DREG ]`
    FibDaddrType { dreg: u32 },
    /// `[ ct load KEY => reg DREG ]`
    Ct { key: u32, dreg: u32 },
    /// `[ ct load KEY => reg DREG , dir original ]`
    CtOriginal { key: u32, dreg: u32 },
    /// `[ redir proto_min reg R proto_max reg R flags 0x2 ]` (the kernel reports
    /// proto_max equal to proto_min when only the latter is given, so both are sent)
    Redir { reg: u32 },
    /// `[ immediate reg 0 VERDICT (-> CHAIN) ]`
    Verdict { code: i32, chain: Option<CString> },
    /// `[ notrack ]`
    Notrack,
    /// `[ reject type 1 code 0 ]` (`reject with tcp reset`)
    RejectTcpReset,
}

impl Expr {
    /// The libnftnl name of the expression type.
    fn name(&self) -> &'static CStr {
        match self {
            Expr::Meta { .. } | Expr::MetaSet { .. } => c"meta",
            Expr::Payload { .. } => c"payload",
            Expr::Cmp { .. } => c"cmp",
            Expr::Bitwise32 { .. } => c"bitwise",
            Expr::Hton { .. } => c"byteorder",
            Expr::Lookup { .. } => c"lookup",
            Expr::FibDaddrType { .. } => c"fib",
            Expr::Ct { .. } | Expr::CtOriginal { .. } => c"ct",
            Expr::Redir { .. } => c"redir",
            Expr::Verdict { .. } => c"immediate",
            Expr::Notrack => c"notrack",
            Expr::RejectTcpReset => c"reject",
        }
    }

    /// A new libnftnl expression with these attributes, and whether libnftnl took all of
    /// them (it refuses data longer than the attribute holds, or memory runs out).
    fn build(&self) -> (NonNull<sys::nftnl_expr>, bool) {
        // SAFETY: the name is a NUL-terminated static string; NULL (out of memory) aborts in `alloc`.
        let expr = alloc(unsafe { sys::nftnl_expr_alloc(self.name().as_ptr()) });
        let e = expr.as_ptr();
        let ok = Cell::new(true);
        // In the three setters: `e` is the live expression allocated above and owned by
        // this function until it is returned; each attribute below belongs to the type
        // named by `self.name()`; libnftnl copies strings and data.
        let u32_ = |attr: u32, v: u32| {
            // SAFETY: see above; setting a u32 cannot fail.
            unsafe { sys::nftnl_expr_set_u32(e, attr as u16, v) }
        };
        let bytes = |attr: u32, b: &[u8]| {
            // SAFETY: see above; `b` is live for `b.len()` bytes.
            let rc = unsafe { sys::nftnl_expr_set(e, attr as u16, b.as_ptr().cast(), b.len() as u32) };
            if rc < 0 {
                ok.set(false);
            }
        };
        let str_ = |attr: u32, s: &CStr| {
            // SAFETY: see above; `s` is NUL-terminated.
            let rc = unsafe { sys::nftnl_expr_set_str(e, attr as u16, s.as_ptr()) };
            if rc < 0 {
                ok.set(false);
            }
        };
        match self {
            Expr::Meta { key, dreg } => {
                u32_(sys::NFTNL_EXPR_META_KEY, *key);
                u32_(sys::NFTNL_EXPR_META_DREG, *dreg);
            }
            Expr::MetaSet { key, sreg } => {
                u32_(sys::NFTNL_EXPR_META_KEY, *key);
                u32_(sys::NFTNL_EXPR_META_SREG, *sreg);
            }
            Expr::Payload { base, offset, len, dreg } => {
                u32_(sys::NFTNL_EXPR_PAYLOAD_DREG, *dreg);
                u32_(sys::NFTNL_EXPR_PAYLOAD_BASE, *base);
                u32_(sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset);
                u32_(sys::NFTNL_EXPR_PAYLOAD_LEN, *len);
            }
            Expr::Cmp { op, sreg, data } => {
                u32_(sys::NFTNL_EXPR_CMP_SREG, *sreg);
                u32_(sys::NFTNL_EXPR_CMP_OP, *op);
                bytes(sys::NFTNL_EXPR_CMP_DATA, data);
            }
            Expr::Bitwise32 { reg, mask, xor } => {
                u32_(sys::NFTNL_EXPR_BITWISE_SREG, *reg);
                u32_(sys::NFTNL_EXPR_BITWISE_DREG, *reg);
                u32_(sys::NFTNL_EXPR_BITWISE_LEN, 4);
                bytes(sys::NFTNL_EXPR_BITWISE_MASK, &mask.to_ne_bytes());
                bytes(sys::NFTNL_EXPR_BITWISE_XOR, &xor.to_ne_bytes());
            }
            Expr::Hton { reg, size, len } => {
                u32_(sys::NFTNL_EXPR_BYTEORDER_SREG, *reg);
                u32_(sys::NFTNL_EXPR_BYTEORDER_DREG, *reg);
                u32_(sys::NFTNL_EXPR_BYTEORDER_OP, k::NFT_BYTEORDER_HTON);
                u32_(sys::NFTNL_EXPR_BYTEORDER_LEN, *len);
                u32_(sys::NFTNL_EXPR_BYTEORDER_SIZE, *size);
            }
            Expr::Lookup { set, set_id, sreg, dreg, invert } => {
                u32_(sys::NFTNL_EXPR_LOOKUP_SREG, *sreg);
                if let Some(d) = dreg {
                    u32_(sys::NFTNL_EXPR_LOOKUP_DREG, *d);
                }
                str_(sys::NFTNL_EXPR_LOOKUP_SET, set);
                u32_(sys::NFTNL_EXPR_LOOKUP_SET_ID, *set_id);
                u32_(sys::NFTNL_EXPR_LOOKUP_FLAGS, if *invert { k::NFT_LOOKUP_F_INV } else { 0 });
            }
            Expr::FibDaddrType { dreg } => {
                u32_(sys::NFTNL_EXPR_FIB_DREG, *dreg);
                u32_(sys::NFTNL_EXPR_FIB_RESULT, k::NFT_FIB_RESULT_ADDRTYPE);
                u32_(sys::NFTNL_EXPR_FIB_FLAGS, k::NFTA_FIB_F_DADDR);
            }
            Expr::Ct { key, dreg } => {
                u32_(sys::NFTNL_EXPR_CT_DREG, *dreg);
                u32_(sys::NFTNL_EXPR_CT_KEY, *key);
            }
            Expr::CtOriginal { key, dreg } => {
                u32_(sys::NFTNL_EXPR_CT_DREG, *dreg);
                u32_(sys::NFTNL_EXPR_CT_KEY, *key);
                // SAFETY: as for the setters above; setting a u8 cannot fail.
                unsafe { sys::nftnl_expr_set_u8(e, sys::NFTNL_EXPR_CT_DIR as u16, 0) }
            }
            Expr::Redir { reg } => {
                u32_(sys::NFTNL_EXPR_REDIR_REG_PROTO_MIN, *reg);
                u32_(sys::NFTNL_EXPR_REDIR_REG_PROTO_MAX, *reg);
                u32_(sys::NFTNL_EXPR_REDIR_FLAGS, k::NF_NAT_RANGE_PROTO_SPECIFIED);
            }
            Expr::Verdict { code, chain } => {
                u32_(sys::NFTNL_EXPR_IMM_DREG, k::NFT_REG_VERDICT);
                u32_(sys::NFTNL_EXPR_IMM_VERDICT, *code as u32);
                if let Some(c) = chain {
                    str_(sys::NFTNL_EXPR_IMM_CHAIN, c);
                }
            }
            Expr::Notrack => {}
            Expr::RejectTcpReset => {
                u32_(sys::NFTNL_EXPR_REJECT_TYPE, k::NFT_REJECT_TCP_RST);
                u32_(sys::NFTNL_EXPR_REJECT_CODE, 0);
            }
        }
        (expr, ok.get())
    }
}

/// An expression added to a rule; a refused attribute is noted in `refused`, since
/// `Expression::to_expr` has no way to return an error.
struct Checked<'a> {
    expr: &'a Expr,
    refused: &'a Cell<bool>,
}

impl Expression for Checked<'_> {
    fn to_expr(&self, _rule: &nftnl::Rule<'_>) -> NonNull<sys::nftnl_expr> {
        let (e, ok) = self.expr.build();
        if !ok {
            self.refused.set(true);
        }
        e
    }
}

/// Set IDs of one plan: nft numbers the sets of a batch 1, 2, ... in order, and rules
/// and element messages name a set created in the same batch by name and ID.
pub(super) struct SetIds(HashMap<String, u32>);

impl SetIds {
    pub(super) fn of(plan: &Plan) -> SetIds {
        SetIds(plan.sets.iter().enumerate().map(|(i, s)| (s.name.clone(), i as u32 + 1)).collect())
    }

    pub(super) fn by_index(&self, i: usize) -> u32 {
        i as u32 + 1
    }

    fn get(&self, name: &str) -> Result<(CString, u32), String> {
        let id = self.0.get(name).ok_or_else(|| format!("the plan has no set {name}"))?;
        let c = CString::new(name).map_err(|_| format!("set name `{}` has a NUL byte", name.escape_debug()))?;
        Ok((c, *id))
    }
}

/// `meta nfproto . meta l4proto . th dport` into reg 1, reg 9 and reg 10.
fn load_key() -> [Expr; 3] {
    [
        Expr::Meta { key: k::NFT_META_NFPROTO, dreg: k::NFT_REG_1 },
        Expr::Meta { key: k::NFT_META_L4PROTO, dreg: k::NFT_REG32_01 },
        Expr::Payload { base: k::NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: k::NFT_REG32_02 },
    ]
}

/// `meta l4proto . th dport` into reg 1 and reg 9.
fn load_port_key() -> [Expr; 2] {
    [
        Expr::Meta { key: k::NFT_META_L4PROTO, dreg: k::NFT_REG_1 },
        Expr::Payload { base: k::NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: k::NFT_REG32_01 },
    ]
}

/// The expressions loading `key` into reg 1 onwards.
fn load(key: KeyExpr) -> Vec<Expr> {
    match key {
        KeyExpr::Family => load_key().into(),
        KeyExpr::Port => load_port_key().into(),
        KeyExpr::OrigFamily => load_original(KeyExpr::Family),
        KeyExpr::OrigPort => load_original(KeyExpr::Port),
    }
}

/// [`load`] with the source port (`th sport`) in place of the destination port.
fn load_sport(key: KeyExpr) -> Vec<Expr> {
    let mut x = load(key);
    for e in &mut x {
        if let Expr::Payload { base: k::NFT_PAYLOAD_TRANSPORT_HEADER, offset, .. } = e {
            *offset = 0;
        }
    }
    x
}

/// [`load`] with the original direction's destination port of the packet's conntrack
/// entry (`ct original proto-dst`, the public port before NAT) in place of `th dport`.
fn load_original(key: KeyExpr) -> Vec<Expr> {
    let mut x = load(key);
    for e in &mut x {
        if let Expr::Payload { base: k::NFT_PAYLOAD_TRANSPORT_HEADER, dreg, .. } = *e {
            *e = Expr::CtOriginal { key: k::NFT_CT_PROTO_DST, dreg };
        }
    }
    x
}

/// `meta l4proto PROTO` (`op` NFT_CMP_EQ) or `meta l4proto != PROTO` (NFT_CMP_NEQ).
fn l4proto(op: u32, p: Proto) -> [Expr; 2] {
    let n = match p {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
    };
    [Expr::Meta { key: k::NFT_META_L4PROTO, dreg: k::NFT_REG_1 }, Expr::Cmp { op, sreg: k::NFT_REG_1, data: vec![n] }]
}

/// `iif "lo"` (`op` NFT_CMP_EQ) or `iif != "lo"` (NFT_CMP_NEQ): the loopback device is
/// ifindex 1 in every namespace.
fn iif_loopback(op: u32) -> [Expr; 2] {
    [
        Expr::Meta { key: k::NFT_META_IIF, dreg: k::NFT_REG_1 },
        Expr::Cmp { op, sreg: k::NFT_REG_1, data: 1u32.to_ne_bytes().to_vec() },
    ]
}

/// `iifname != "lo"`
fn not_loopback() -> [Expr; 2] {
    let mut lo = b"lo".to_vec();
    lo.resize(16, 0);
    [
        Expr::Meta { key: k::NFT_META_IIFNAME, dreg: k::NFT_REG_1 },
        Expr::Cmp { op: k::NFT_CMP_NEQ, sreg: k::NFT_REG_1, data: lo },
    ]
}

/// The part of `ip(6) saddr` checks shared by the NAT and steer rules:
/// `meta nfproto FAMILY KEY @KEYS meta l4proto . th dport . ip(6) saddr != @ALLOWED`.
fn source_not_allowed(family: Family, keys: &str, allowed: &str, ids: &SetIds) -> Result<Vec<Expr>, String> {
    // nft byte-swaps l4proto for the interval lookup
    let (nfproto, offset, len) = match family {
        Family::Ipv4 => (k::NFPROTO_IPV4, 12, 4),
        Family::Ipv6 => (k::NFPROTO_IPV6, 8, 16),
    };
    let mut x = vec![
        Expr::Meta { key: k::NFT_META_NFPROTO, dreg: k::NFT_REG_1 },
        Expr::Cmp { op: k::NFT_CMP_EQ, sreg: k::NFT_REG_1, data: vec![nfproto] },
    ];
    x.extend(load_key());
    x.push(lookup(ids, keys, None, false)?);
    x.push(Expr::Meta { key: k::NFT_META_L4PROTO, dreg: k::NFT_REG_1 });
    x.push(Expr::Hton { reg: k::NFT_REG_1, size: 2, len: 1 });
    x.push(Expr::Payload { base: k::NFT_PAYLOAD_TRANSPORT_HEADER, offset: 2, len: 2, dreg: k::NFT_REG32_01 });
    x.push(Expr::Payload { base: k::NFT_PAYLOAD_NETWORK_HEADER, offset, len, dreg: k::NFT_REG32_02 });
    x.push(lookup(ids, allowed, None, true)?);
    Ok(x)
}

/// `KEY @KEYS KEY . iifname != @ALLOWED`
fn iface_not_allowed(keys: &str, allowed: &str, ids: &SetIds) -> Result<Vec<Expr>, String> {
    let mut x: Vec<Expr> = load_key().into();
    x.push(lookup(ids, keys, None, false)?);
    x.extend(load_key());
    x.push(Expr::Meta { key: k::NFT_META_IIFNAME, dreg: k::NFT_REG32_03 });
    x.push(lookup(ids, allowed, None, true)?);
    Ok(x)
}

/// `fib daddr type local`
fn fib_daddr_local() -> [Expr; 2] {
    [
        Expr::FibDaddrType { dreg: k::NFT_REG_1 },
        Expr::Cmp { op: k::NFT_CMP_EQ, sreg: k::NFT_REG_1, data: k::RTN_LOCAL.to_ne_bytes().to_vec() },
    ]
}

fn lookup(ids: &SetIds, set: &str, dreg: Option<u32>, invert: bool) -> Result<Expr, String> {
    let (set, set_id) = ids.get(set)?;
    Ok(Expr::Lookup { set, set_id, sreg: k::NFT_REG_1, dreg, invert })
}

fn jump(chain: &str) -> Result<Expr, String> {
    let c = CString::new(chain).map_err(|_| format!("chain name `{}` has a NUL byte", chain.escape_debug()))?;
    Ok(Expr::Verdict { code: k::NFT_JUMP, chain: Some(c) })
}

fn goto(chain: &str) -> Result<Expr, String> {
    let c = CString::new(chain).map_err(|_| format!("chain name `{}` has a NUL byte", chain.escape_debug()))?;
    Ok(Expr::Verdict { code: k::NFT_GOTO, chain: Some(c) })
}

/// The expressions of one plan rule, as nft(8) builds them from `render::rule(r)`.
fn rule_exprs(r: &plan::Rule, ids: &SetIds) -> Result<Vec<Expr>, String> {
    let mut x = Vec::new();
    match r {
        plan::Rule::JumpIfLocal { chain } => {
            // fib daddr type local jump CHAIN
            x.extend(fib_daddr_local());
            x.push(jump(chain)?);
        }
        plan::Rule::JumpIfLocalKeyNotIn { set, chain } => {
            // fib daddr type local meta nfproto . meta l4proto . th dport != @SET jump CHAIN
            x.extend(fib_daddr_local());
            x.extend(load_key());
            x.push(lookup(ids, set, None, true)?);
            x.push(jump(chain)?);
        }
        plan::Rule::ReturnUnlessIface { keys, allowed } => {
            // meta nfproto . meta l4proto . th dport @KEYS
            //   meta nfproto . meta l4proto . th dport . iifname != @ALLOWED return
            x.extend(iface_not_allowed(keys, allowed, ids)?);
            x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
        }
        plan::Rule::ReturnUnlessSource { family, keys, allowed } => {
            // meta nfproto ipv4 meta nfproto . meta l4proto . th dport @KEYS
            //   meta l4proto . th dport . ip saddr != @ALLOWED return   (ipv6: ip6 saddr)
            x.extend(source_not_allowed(*family, keys, allowed, ids)?);
            x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
        }
        plan::Rule::Notrack { set, key, sport, if_local } => {
            // (meta nfproto .) meta l4proto . th dport|sport @SET (fib daddr type local)
            //   notrack return
            x.extend(if *sport { load_sport(*key) } else { load(*key) });
            x.push(lookup(ids, set, None, false)?);
            if *if_local {
                x.extend(fib_daddr_local());
            }
            x.push(Expr::Notrack);
            x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
        }
        plan::Rule::GotoIfRedirected { chain } => {
            // ct direction original ct status dnat goto CHAIN
            x.push(Expr::Ct { key: k::NFT_CT_DIRECTION, dreg: k::NFT_REG_1 });
            x.push(Expr::Cmp { op: k::NFT_CMP_EQ, sreg: k::NFT_REG_1, data: vec![k::IP_CT_DIR_ORIGINAL] });
            x.push(Expr::Ct { key: k::NFT_CT_STATUS, dreg: k::NFT_REG_1 });
            x.push(Expr::Bitwise32 { reg: k::NFT_REG_1, mask: k::IPS_DST_NAT, xor: 0 });
            x.push(Expr::Cmp { op: k::NFT_CMP_NEQ, sreg: k::NFT_REG_1, data: 0u32.to_ne_bytes().to_vec() });
            x.push(goto(chain)?);
        }
        plan::Rule::ReturnIfKeyIn { set } => {
            // meta nfproto . meta l4proto . th dport @SET return
            x.extend(load_key());
            x.push(lookup(ids, set, None, false)?);
            x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
        }
        plan::Rule::ReturnUnlessTcp => {
            // meta l4proto != tcp return
            x.extend(l4proto(k::NFT_CMP_NEQ, Proto::Tcp));
            x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
        }
        plan::Rule::GotoIfLoopback { chain } => {
            // iif "lo" goto CHAIN
            x.extend(iif_loopback(k::NFT_CMP_EQ));
            x.push(goto(chain)?);
        }
        plan::Rule::GotoIfKeyIn { set, chain } => {
            // meta nfproto . meta l4proto . th dport @SET goto CHAIN
            x.extend(load_key());
            x.push(lookup(ids, set, None, false)?);
            x.push(goto(chain)?);
        }
        plan::Rule::DropProtected { set } => {
            // iif != "lo" meta nfproto . meta l4proto . th dport @SET drop
            x.extend(iif_loopback(k::NFT_CMP_NEQ));
            x.extend(load_key());
            x.push(lookup(ids, set, None, false)?);
            x.push(Expr::Verdict { code: k::NF_DROP, chain: None });
        }
        plan::Rule::RejectUnlessIface { keys, allowed } => {
            // iifname != "lo" meta l4proto tcp KEY @KEYS KEY . iifname != @ALLOWED reject with tcp reset
            x.extend(not_loopback());
            x.extend(l4proto(k::NFT_CMP_EQ, Proto::Tcp));
            x.extend(iface_not_allowed(keys, allowed, ids)?);
            x.push(Expr::RejectTcpReset);
        }
        plan::Rule::RejectUnlessSource { family, keys, allowed } => {
            // iifname != "lo" meta l4proto tcp meta nfproto ipv4 KEY @KEYS
            //   meta l4proto . th dport . ip saddr != @ALLOWED reject with tcp reset
            x.extend(not_loopback());
            x.extend(l4proto(k::NFT_CMP_EQ, Proto::Tcp));
            x.extend(source_not_allowed(*family, keys, allowed, ids)?);
            x.push(Expr::RejectTcpReset);
        }
        plan::Rule::Redirect { proto, map, key } => {
            // meta l4proto tcp redirect to (meta nfproto .) meta l4proto . th dport map @MAP
            x.extend(l4proto(k::NFT_CMP_EQ, *proto));
            x.extend(load(*key));
            x.push(lookup(ids, map, Some(k::NFT_REG_1), false)?);
            x.push(Expr::Redir { reg: k::NFT_REG_1 });
        }
        plan::Rule::CountSetMark { set, map, key, proto } => {
            x.extend(proto.iter().flat_map(|p| l4proto(k::NFT_CMP_EQ, *p)));
            // meta nfproto . meta l4proto . th dport @SET
            //   meta mark set meta nfproto . meta l4proto . th dport map @MAP
            x.extend(load(*key));
            x.push(lookup(ids, set, None, false)?);
            x.extend(load(*key));
            x.push(lookup(ids, map, Some(k::NFT_REG_1), false)?);
            x.push(Expr::MetaSet { key: k::NFT_META_MARK, sreg: k::NFT_REG_1 });
        }
        plan::Rule::ReturnIfLoopback => {
            // iif "lo" return
            x.extend(iif_loopback(k::NFT_CMP_EQ));
            x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
        }
        plan::Rule::Count { set, key, mark, then_return, proto } => {
            x.extend(proto.iter().flat_map(|p| l4proto(k::NFT_CMP_EQ, *p)));
            // (meta nfproto .) meta l4proto . th dport @SET (meta mark set MARK) (return)
            x.extend(load(*key));
            x.push(lookup(ids, set, None, false)?);
            if *mark != 0 {
                // meta mark set meta mark | MARK: the mark's bits, every other bit left alone
                x.push(Expr::Meta { key: k::NFT_META_MARK, dreg: k::NFT_REG_1 });
                x.push(Expr::Bitwise32 { reg: k::NFT_REG_1, mask: !*mark, xor: *mark });
                x.push(Expr::MetaSet { key: k::NFT_META_MARK, sreg: k::NFT_REG_1 });
            }
            if *then_return {
                x.push(Expr::Verdict { code: k::NFT_RETURN, chain: None });
            }
        }
        plan::Rule::DropUnredirected { set } => {
            // ct state new iifname != "lo" ct status & dnat == 0
            //   meta nfproto . meta l4proto . th dport @SET drop
            x.push(Expr::Ct { key: k::NFT_CT_STATE, dreg: k::NFT_REG_1 });
            x.push(Expr::Bitwise32 { reg: k::NFT_REG_1, mask: k::CT_STATE_NEW, xor: 0 });
            x.push(Expr::Cmp { op: k::NFT_CMP_NEQ, sreg: k::NFT_REG_1, data: 0u32.to_ne_bytes().to_vec() });
            x.extend(not_loopback());
            x.push(Expr::Ct { key: k::NFT_CT_STATUS, dreg: k::NFT_REG_1 });
            x.push(Expr::Bitwise32 { reg: k::NFT_REG_1, mask: k::IPS_DST_NAT, xor: 0 });
            x.push(Expr::Cmp { op: k::NFT_CMP_EQ, sreg: k::NFT_REG_1, data: 0u32.to_ne_bytes().to_vec() });
            x.extend(load_key());
            x.push(lookup(ids, set, None, false)?);
            x.push(Expr::Verdict { code: k::NF_DROP, chain: None });
        }
    }
    Ok(x)
}

pub(super) fn build_rule<'c>(
    chain: &'c Chain<'c>,
    r: &plan::Rule,
    ids: &SetIds,
) -> Result<nftnl::Rule<'c>, BackendError> {
    let exprs = rule_exprs(r, ids).map_err(|e| encode_err(format!("rule `{}`", render::rule(r)), e))?;
    let mut rule = nftnl::Rule::new(chain);
    let refused = Cell::new(false);
    for expr in &exprs {
        rule.add_expr(&Checked { expr, refused: &refused });
    }
    if refused.get() {
        return Err(encode_err(
            format!("rule `{}`", render::rule(r)),
            "libnftnl refused an attribute of its expressions (out of memory, or data longer than the attribute)",
        ));
    }
    Ok(rule)
}

pub(super) fn hook_num(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => k::NF_INET_PRE_ROUTING,
        Hook::Input => k::NF_INET_LOCAL_IN,
        Hook::Output => k::NF_INET_LOCAL_OUT,
    }
}

pub(super) fn chain_obj<'t>(t: &'t Table, c: &plan::Chain) -> Result<Chain<'t>, BackendError> {
    let name = cstring("chain", &c.name)?;
    let mut chain = Chain::new(&name, t);
    if let Some(b) = &c.base {
        let hook = match b.hook {
            Hook::Prerouting => nftnl::Hook::PreRouting,
            Hook::Input => nftnl::Hook::In,
            Hook::Output => nftnl::Hook::Out,
        };
        chain.set_hook(hook, b.priority);
        chain.set_type(match b.kind {
            ChainType::Filter => nftnl::ChainType::Filter,
            ChainType::Nat => nftnl::ChainType::Nat,
        });
        chain.set_policy(nftnl::Policy::Accept);
    }
    Ok(chain)
}
