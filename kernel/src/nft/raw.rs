//! Owned libnftnl objects: allocation, freeing, and the text libnftnl prints for a rule's
//! expressions (the form in which rules are compared with a plan).

use crate::netlink::AlignedBuf;
use nftnl::nftnl_sys as sys;
use nftnl::{MsgType, NlMsg};
use std::ffi::{c_char, c_int, c_void, CStr};
use std::ptr::NonNull;

/// A libnftnl allocation; allocation only fails when memory is exhausted, and then we
/// abort like the allocator and `nftnl` itself do.
pub(super) fn alloc<T>(p: *mut T) -> NonNull<T> {
    match NonNull::new(p) {
        Some(p) => p,
        None => std::process::abort(),
    }
}

macro_rules! raw_object {
    ($name:ident, $ty:ident, $alloc:ident, $free:ident) => {
        /// An owned libnftnl object.
        pub(super) struct $name(pub(super) NonNull<sys::$ty>);
        impl $name {
            pub(super) fn new() -> $name {
                // SAFETY: allocation only; see `alloc`.
                $name(alloc(unsafe { sys::$alloc() }))
            }
        }
        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: allocated by the matching alloc and freed only here.
                unsafe { sys::$free(self.0.as_ptr()) }
            }
        }
    };
}
raw_object!(RawTable, nftnl_table, nftnl_table_alloc, nftnl_table_free);
raw_object!(RawChain, nftnl_chain, nftnl_chain_alloc, nftnl_chain_free);
raw_object!(RawRule, nftnl_rule, nftnl_rule_alloc, nftnl_rule_free);
raw_object!(RawSetObj, nftnl_set, nftnl_set_alloc, nftnl_set_free);

/// A string attribute that libnftnl returns as a pointer (NULL when unset).
pub(super) fn owned_str(p: *const c_char) -> Option<String> {
    // SAFETY: libnftnl returns NULL or a NUL-terminated string that the object owns.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// A rule as libnftnl prints its expressions: `[ NAME BODY] [ NAME BODY] ...`.
pub(super) fn rule_text(r: &RawRule) -> String {
    unsafe extern "C" fn one(e: *mut sys::nftnl_expr, data: *mut c_void) -> c_int {
        // SAFETY: `data` is the Vec<String> that `rule_text` passes and nothing else borrows
        // during the walk; `e` is a live expression of the rule.
        unsafe {
            let out = &mut *data.cast::<Vec<String>>();
            let name = owned_str(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16)).unwrap_or_default();
            let mut buf = [0 as c_char; 4096];
            // snprintf NUL-terminates within the buffer, truncating a longer text
            if sys::nftnl_expr_snprintf(buf.as_mut_ptr(), buf.len(), e, sys::NFTNL_OUTPUT_DEFAULT, 0) < 0 {
                return -1;
            }
            let body = owned_str(buf.as_ptr()).unwrap_or_default();
            out.push(format!("[ {name} {body}]"));
        }
        0
    }
    let mut parts: Vec<String> = Vec::new();
    // SAFETY: `r` is a live rule; the callback only reads its expressions and appends to
    // `parts`, which outlives the call and is not otherwise borrowed meanwhile.
    if unsafe { sys::nftnl_expr_foreach(r.0.as_ptr(), Some(one), (&raw mut parts).cast()) } < 0 {
        // a text no plan produces, so the rule shows as a difference rather than vanishing
        parts.push("[ unprintable expression ]".to_string());
    }
    parts.join(" ")
}

/// The text of `rule` as a dump of it would read: encoded into `buf` (at least
/// nft_nlmsg_maxsize() bytes), parsed back by libnftnl and printed; `None` if libnftnl
/// cannot parse its own encoding.
pub(super) fn reparsed_text(rule: &nftnl::Rule<'_>, buf: &mut AlignedBuf) -> Option<String> {
    // libnftnl does not always clear attribute padding (objref names are not
    // NUL-terminated), so start from zeros as the kernel's own dump does
    buf.bytes_mut().fill(0);
    if buf.bytes().len() < nftnl::nft_nlmsg_maxsize() as usize {
        return None;
    }
    // SAFETY: the buffer has at least nft_nlmsg_maxsize() bytes (checked above), as
    // `NlMsg::write` requires.
    unsafe { rule.write(buf.as_mut_ptr().cast(), 0, MsgType::Add) };
    let parsed = RawRule::new();
    // SAFETY: the buffer holds the complete, aligned rule message just written; `parsed`
    // is a live rule object.
    if unsafe { sys::nftnl_rule_nlmsg_parse(buf.as_ptr().cast(), parsed.0.as_ptr()) } < 0 {
        return None;
    }
    Some(rule_text(&parsed))
}
