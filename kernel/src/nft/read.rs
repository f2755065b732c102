//! Reading the table back: one dump per object type into libnftnl objects, then decoding
//! with the types of the expected plan into an [`Observed`].

use super::codec::SetShape;
use super::codec::{decode_element, RawElem};
use super::conn::{Conn, Fail, Generation};
use super::consts as k;
use super::error::{hint, BackendError};
use super::observed::{Observed, ObservedChain, ObservedHook};
use super::raw::{owned_str, rule_text, RawChain, RawRule, RawSetObj, RawTable};
use nftnl::nftnl_sys as sys;
use portd_rules::plan::Plan;
use std::collections::BTreeSet;
use std::ffi::{c_int, c_void, CStr, CString};

/// Everything dumped from the table, not yet decoded.
pub(super) struct RawTableState {
    sets: Vec<(String, SetShape, Option<u32>, Vec<RawElem>)>,
    chains: Vec<ObservedChain>,
    orphan_rules: Vec<String>,
}

/// One attempt at dumping the table.
pub(super) struct Reader<'t> {
    conn: Conn,
    table: &'t CStr,
    name: &'t str,
    gen: Generation,
}

impl<'t> Reader<'t> {
    pub(super) fn new(table: &'t CStr, name: &'t str) -> Result<Reader<'t>, BackendError> {
        Ok(Reader { conn: Conn::open()?, table, name, gen: Generation::default() })
    }

    pub(super) fn consistent(&self) -> bool {
        self.gen.ids.len() <= 1 && !self.gen.interrupted
    }

    fn fail(&self, what: &'static str, f: Fail) -> BackendError {
        match f {
            Fail::Kernel(source) => {
                BackendError::Dump { what, table: self.name.to_string(), hint: hint(source.raw_os_error()), source }
            }
            Fail::Decode(reason) => BackendError::Decode { what, reason },
        }
    }

    /// Dumps table, sets, elements, chains and rules; `None` if there is no table.
    pub(super) fn read_all(&mut self) -> Result<Option<RawTableState>, BackendError> {
        if !self.table_exists()? {
            return Ok(None);
        }
        let mut sets = Vec::new();
        for (set_name, shape, size) in self.set_shapes()? {
            let elements = self.elements(&set_name)?;
            sets.push((set_name, shape, size, elements));
        }
        let mut chains = self.chains()?;
        let orphan_rules = self.rules(&mut chains)?;
        Ok(Some(RawTableState { sets, chains, orphan_rules }))
    }

    /// Whether the table exists.
    fn table_exists(&mut self) -> Result<bool, BackendError> {
        let table = self.table;
        // nft list table inet T (existence only)
        let t = RawTable::new();
        // SAFETY: `t` is a live table object; the name is NUL-terminated and copied.
        named(unsafe { sys::nftnl_table_set_str(t.0.as_ptr(), sys::NFTNL_TABLE_NAME as u16, table.as_ptr()) })?;
        let got = self.conn.request(
            k::NFT_MSG_GETTABLE,
            k::NLM_F_ACK,
            // SAFETY: `request` hands over a header it built in a buffer large enough for the
            // payload, and the object is live.
            |nlh| unsafe { sys::nftnl_table_nlmsg_build_payload(nlh, t.0.as_ptr()) },
            &mut self.gen,
            |_| Ok(()),
        );
        match got {
            Ok(()) => Ok(true),
            Err(Fail::Kernel(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(f) => Err(self.fail("definition", f)),
        }
    }

    /// Name and definition of every set.
    fn set_shapes(&mut self) -> Result<Vec<(String, SetShape, Option<u32>)>, BackendError> {
        let table = self.table;
        let name = self.name;
        let mine = |t: Option<String>| t.as_deref() == Some(name);
        // nft list sets table inet T
        let mut shapes: Vec<(String, SetShape, Option<u32>)> = Vec::new();
        let s = RawSetObj::new();
        // SAFETY: `s` is a live set object; the name is NUL-terminated and copied.
        named(unsafe { sys::nftnl_set_set_str(s.0.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr()) })?;
        let got = self.conn.request(
            k::NFT_MSG_GETSET,
            k::NLM_F_DUMP,
            // SAFETY: `request` hands over a header it built in a buffer large enough for the
            // payload, and the object is live.
            |nlh| unsafe { sys::nftnl_set_nlmsg_build_payload(nlh, s.0.as_ptr()) },
            &mut self.gen,
            |msg| {
                let set = RawSetObj::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                unsafe {
                    let p = set.0.as_ptr();
                    if sys::nftnl_set_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                        return Err("malformed set".into());
                    }
                    if !mine(owned_str(sys::nftnl_set_get_str(p, sys::NFTNL_SET_TABLE as u16))) {
                        return Ok(());
                    }
                    let name =
                        owned_str(sys::nftnl_set_get_str(p, sys::NFTNL_SET_NAME as u16)).ok_or("set without a name")?;
                    let get = |attr: u32| sys::nftnl_set_get_u32(p, attr as u16);
                    let shape = SetShape {
                        flags: get(sys::NFTNL_SET_FLAGS),
                        key_type: get(sys::NFTNL_SET_KEY_TYPE),
                        key_len: get(sys::NFTNL_SET_KEY_LEN),
                        data_type: get(sys::NFTNL_SET_DATA_TYPE),
                        data_len: get(sys::NFTNL_SET_DATA_LEN),
                        obj_type: get(sys::NFTNL_SET_OBJ_TYPE),
                        counter: set_expressions(&set) == [c"counter"],
                    };
                    let size = sys::nftnl_set_is_set(p, sys::NFTNL_SET_DESC_SIZE as u16)
                        .then(|| get(sys::NFTNL_SET_DESC_SIZE))
                        .filter(|s| *s > 0);
                    shapes.push((name, shape, size));
                }
                Ok(())
            },
        );
        got.map_err(|f| self.fail("sets", f))?;
        Ok(shapes)
    }

    /// The elements of set `set_name`, as dumped.
    fn elements(&mut self, set_name: &str) -> Result<Vec<RawElem>, BackendError> {
        let table = self.table;
        // nft list set inet T NAME, for each set
        let cname =
            CString::new(set_name).map_err(|_| self.fail("sets", Fail::Decode("set name with a NUL byte".into())))?;
        let s = RawSetObj::new();
        // SAFETY: `s` is a live set object; the names are NUL-terminated and copied.
        named(unsafe { sys::nftnl_set_set_str(s.0.as_ptr(), sys::NFTNL_SET_TABLE as u16, table.as_ptr()) })?;
        // SAFETY: as above.
        named(unsafe { sys::nftnl_set_set_str(s.0.as_ptr(), sys::NFTNL_SET_NAME as u16, cname.as_ptr()) })?;
        let mut elements = Vec::new();
        let got = self.conn.request(
            k::NFT_MSG_GETSETELEM,
            k::NLM_F_DUMP,
            // SAFETY: `request` hands over a header it built in a buffer large enough for the
            // payload, and the object is live.
            |nlh| unsafe { sys::nftnl_set_elems_nlmsg_build_payload(nlh, s.0.as_ptr()) },
            &mut self.gen,
            |msg| {
                let set = RawSetObj::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                if unsafe { sys::nftnl_set_elems_nlmsg_parse(msg.as_ptr().cast(), set.0.as_ptr()) } < 0 {
                    return Err(format!("malformed elements of set {set_name}"));
                }
                collect_elements(&set, &mut elements)
                    .map_err(|()| format!("cannot walk the elements of set {set_name}"))
            },
        );
        got.map_err(|f| self.fail("set elements", f))?;
        Ok(elements)
    }

    /// The chains with their hooks (rules come separately).
    fn chains(&mut self) -> Result<Vec<ObservedChain>, BackendError> {
        let name = self.name;
        let mine = |t: Option<String>| t.as_deref() == Some(name);
        // nft list chains table inet T (the kernel does not filter chain dumps by table)
        let mut chains = Vec::new();
        let got = self.conn.request(
            k::NFT_MSG_GETCHAIN,
            k::NLM_F_DUMP,
            |_| {},
            &mut self.gen,
            |msg| {
                let chain = RawChain::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                unsafe {
                    let p = chain.0.as_ptr();
                    if sys::nftnl_chain_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                        return Err("malformed chain".into());
                    }
                    if !mine(owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_TABLE as u16))) {
                        return Ok(());
                    }
                    let name = owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_NAME as u16))
                        .ok_or("chain without a name")?;
                    let hook = sys::nftnl_chain_is_set(p, sys::NFTNL_CHAIN_HOOKNUM as u16).then(|| ObservedHook {
                        kind: owned_str(sys::nftnl_chain_get_str(p, sys::NFTNL_CHAIN_TYPE as u16)).unwrap_or_default(),
                        hook: sys::nftnl_chain_get_u32(p, sys::NFTNL_CHAIN_HOOKNUM as u16),
                        priority: sys::nftnl_chain_get_s32(p, sys::NFTNL_CHAIN_PRIO as u16),
                        policy: sys::nftnl_chain_get_u32(p, sys::NFTNL_CHAIN_POLICY as u16),
                    });
                    chains.push(ObservedChain { name, hook, rules: Vec::new() });
                }
                Ok(())
            },
        );
        got.map_err(|f| self.fail("chains", f))?;
        Ok(chains)
    }

    /// The rules, appended to their chains in dump order; returns those of unknown chains.
    fn rules(&mut self, chains: &mut [ObservedChain]) -> Result<Vec<String>, BackendError> {
        let table = self.table;
        let name = self.name;
        let mine = |t: Option<String>| t.as_deref() == Some(name);
        // nft list table inet T: the rules, in chain order
        let mut orphan_rules = Vec::new();
        let r = RawRule::new();
        // SAFETY: `r` is a live rule object; the name is NUL-terminated and copied.
        named(unsafe { sys::nftnl_rule_set_str(r.0.as_ptr(), sys::NFTNL_RULE_TABLE as u16, table.as_ptr()) })?;
        let got = self.conn.request(
            k::NFT_MSG_GETRULE,
            k::NLM_F_DUMP,
            // SAFETY: `request` hands over a header it built in a buffer large enough for the
            // payload, and the object is live.
            |nlh| unsafe { sys::nftnl_rule_nlmsg_build_payload(nlh, r.0.as_ptr()) },
            &mut self.gen,
            |msg| {
                let rule = RawRule::new();
                // SAFETY: `msg` is one complete, aligned netlink message.
                unsafe {
                    let p = rule.0.as_ptr();
                    if sys::nftnl_rule_nlmsg_parse(msg.as_ptr().cast(), p) < 0 {
                        return Err("malformed rule".into());
                    }
                    if !mine(owned_str(sys::nftnl_rule_get_str(p, sys::NFTNL_RULE_TABLE as u16))) {
                        return Ok(());
                    }
                    let chain = owned_str(sys::nftnl_rule_get_str(p, sys::NFTNL_RULE_CHAIN as u16)).unwrap_or_default();
                    let text = rule_text(&rule);
                    match chains.iter_mut().find(|c| c.name == chain) {
                        Some(c) => c.rules.push(text),
                        None => orphan_rules.push(format!("rule in unknown chain {chain}: {text}")),
                    }
                }
                Ok(())
            },
        );
        got.map_err(|f| self.fail("rules", f))?;
        Ok(orphan_rules)
    }
}

/// The names of a set's expressions (`counter` for a set whose elements count).
fn set_expressions(set: &RawSetObj) -> Vec<&'static CStr> {
    unsafe extern "C" fn one(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the Vec that `set_expressions` passes and nothing else borrows
        // during the walk; `e` is a live expression of the set, whose name libnftnl
        // returns as a pointer to its static table of expression types.
        unsafe {
            let out = &mut *data.cast::<Vec<&'static CStr>>();
            let name = sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16);
            out.push(if name.is_null() { c"" } else { CStr::from_ptr(name) });
        }
        0
    }
    let mut out: Vec<&'static CStr> = Vec::new();
    // SAFETY: `set` is live; the callback only reads its expressions and appends to `out`,
    // which outlives the call and is not otherwise borrowed meanwhile.
    unsafe { sys::nftnl_set_expr_foreach(set.0.as_ptr(), Some(one), (&raw mut out).cast()) };
    out
}

/// Packets and bytes of an element's counter, if it has one.
///
/// # Safety
/// `e` must be a live element of a parsed set-element message.
unsafe fn element_counter(e: *mut sys::nftnl_set_elem) -> Option<(u64, u64)> {
    unsafe extern "C" fn one(x: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the Option that `element_counter` passes; `x` is a live
        // expression of the element; counter attributes are read only from a counter.
        unsafe {
            let name = sys::nftnl_expr_get_str(x, sys::NFTNL_EXPR_NAME as u16);
            if !name.is_null() && CStr::from_ptr(name) == c"counter" {
                let packets = sys::nftnl_expr_get_u64(x, sys::NFTNL_EXPR_CTR_PACKETS as u16);
                let bytes = sys::nftnl_expr_get_u64(x, sys::NFTNL_EXPR_CTR_BYTES as u16);
                *data.cast::<Option<(u64, u64)>>() = Some((packets, bytes));
            }
        }
        0
    }
    let mut out: Option<(u64, u64)> = None;
    // SAFETY: `e` is live (the caller's promise); the callback writes only to `out`,
    // which outlives the call.
    unsafe { sys::nftnl_set_elem_expr_foreach(e, Some(one), (&raw mut out).cast()) };
    out
}

/// Copies the elements of a parsed set-element message.
fn collect_elements(set: &RawSetObj, out: &mut Vec<RawElem>) -> Result<(), ()> {
    unsafe extern "C" fn one(e: *mut sys::nftnl_set_elem, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the Vec<RawElem> that `collect_elements` passes and nothing else
        // borrows during the walk; `e` is a live element of the set; a non-NULL attribute
        // pointer is valid for the `len` bytes libnftnl reports.
        unsafe {
            let out = &mut *data.cast::<Vec<RawElem>>();
            let get = |attr: u32| {
                let mut len = 0u32;
                let p = sys::nftnl_set_elem_get(e, attr as u16, &raw mut len);
                (!p.is_null() && sys::nftnl_set_elem_is_set(e, attr as u16))
                    .then(|| std::slice::from_raw_parts(p.cast::<u8>(), len as usize).to_vec())
            };
            out.push(RawElem {
                key: get(sys::NFTNL_SET_ELEM_KEY).unwrap_or_default(),
                key_end: get(sys::NFTNL_SET_ELEM_KEY_END),
                data: get(sys::NFTNL_SET_ELEM_DATA),
                udata: get(sys::NFTNL_SET_ELEM_USERDATA),
                counter: element_counter(e),
            });
        }
        0
    }
    // SAFETY: `set` is live; the callback only reads its elements and appends to `out`,
    // which outlives the call and is not otherwise borrowed meanwhile.
    let rc = unsafe { sys::nftnl_set_elem_foreach(set.0.as_ptr(), Some(one), (out as *mut Vec<RawElem>).cast()) };
    if rc < 0 {
        Err(())
    } else {
        Ok(())
    }
}

/// Checks a libnftnl string setter used to build a dump request (it fails only when
/// memory runs out).
fn named(rc: c_int) -> Result<(), BackendError> {
    if rc < 0 {
        return Err(BackendError::Encode {
            what: "dump request".to_string(),
            reason: "libnftnl refused the table or set name (out of memory)".to_string(),
        });
    }
    Ok(())
}

impl RawTableState {
    /// Decodes the dump with the set types of `expected`.
    pub(super) fn decode(self, expected: &Plan) -> Observed {
        let mut o = Observed { chains: self.chains, problems: self.orphan_rules, ..Observed::default() };
        for (name, shape, size, raw) in self.sets {
            o.set_shapes.insert(name.clone(), shape);
            if let Some(size) = size {
                o.set_sizes.insert(name.clone(), size);
            }
            let Some(set) = expected.set(&name) else {
                o.problems.push(format!("set {name} ({} elements) is not in the plan", raw.len()));
                continue;
            };
            match SetShape::of(set) {
                Ok(want) if want == shape => {}
                _ => {
                    o.problems.push(format!("set {name} has a different type than in the plan: {shape:?}"));
                    continue;
                }
            }
            let mut elements = BTreeSet::new();
            let mut bad = Vec::new();
            for r in &raw {
                match decode_element(set, r) {
                    Ok(e) => {
                        if let (Some((p, b)), Some(c)) = (r.counter, &e.comment) {
                            let sum = o.counters.entry(c.clone()).or_insert((0, 0));
                            *sum = (sum.0.saturating_add(p), sum.1.saturating_add(b));
                        }
                        elements.insert(e);
                    }
                    Err(e) => bad.push(e),
                }
            }
            if let Some(first) = bad.first() {
                o.problems.push(format!("set {name}: {} elements cannot be decoded, e.g.: {first}", bad.len()));
            } else {
                o.sets.insert(name, elements);
            }
        }
        o
    }
}
