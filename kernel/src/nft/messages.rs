//! Netlink objects nftnl does not provide: set definitions and chunks of set elements,
//! each an owned libnftnl object that writes itself into a batch.

use super::codec::{field_spec, set_udata, Item, SetShape};
use super::consts as k;
use super::error::{cstring, encode_err, BackendError};
use super::raw::alloc;
use crate::netlink::AlignedBuf;
use nftnl::nftnl_sys as sys;
use nftnl::{MsgType, NlMsg};
use portd_rules::plan::Set;
use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::NonNull;

/// Upper bound of the element list of one set-element message. The kernel's limit is
/// 64 KiB (a netlink attribute length is 16 bits); half of it keeps well clear.
pub(super) const ELEMS_BYTES: usize = 32 * 1024;

/// A set or map definition (`NFT_MSG_NEWSET`) built as nft(8) builds it.
pub(super) struct SetMsg {
    raw: NonNull<sys::nftnl_set>,
}

impl SetMsg {
    pub(super) fn new(table: &CStr, set: &Set, id: u32) -> Result<SetMsg, BackendError> {
        let what = || format!("set {}", set.name);
        let shape = SetShape::of(set).map_err(|e| encode_err(what(), e))?;
        let name = cstring("set", &set.name)?;
        let udata = set_udata(set);
        // concatenated interval sets also describe their field lengths: inet_proto . inet_service . ipv4_addr is 1, 2, 4
        let fields: Vec<u8> = set.key.iter().filter_map(|t| field_spec(*t)).map(|s| s.1 as u8).collect();
        // SAFETY: allocation only; NULL (out of memory) aborts in `alloc`.
        let msg = SetMsg { raw: alloc(unsafe { sys::nftnl_set_alloc() }) };
        let s = msg.raw.as_ptr();
        // SAFETY: `s` is the live set allocated above (freed only when `msg` drops);
        // strings are NUL-terminated and, like data, copied by libnftnl.
        let ok = unsafe {
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, u32::from(k::NFPROTO_INET));
            let mut ok = sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr()) == 0;
            ok &= sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr()) == 0;
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, shape.flags);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, shape.key_type);
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, shape.key_len);
            if shape.flags & k::NFT_SET_MAP != 0 {
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_TYPE as u16, shape.data_type);
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_LEN as u16, shape.data_len);
            }
            if let Some(size) = set.kernel_size() {
                // size N: the hash table is built for it once
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DESC_SIZE as u16, size);
            }
            if shape.counter {
                // counter: every element gets a counter of its own; the set owns the template
                let expr = alloc(sys::nftnl_expr_alloc(c"counter".as_ptr()));
                sys::nftnl_set_add_expr(s, expr.as_ptr());
            }
            if shape.flags & k::NFT_SET_CONCAT != 0 {
                ok &= sys::nftnl_set_set_data(
                    s,
                    sys::NFTNL_SET_DESC_CONCAT as u16,
                    fields.as_ptr().cast(),
                    fields.len() as u32,
                ) == 0;
            }
            ok &= sys::nftnl_set_set_data(s, sys::NFTNL_SET_USERDATA as u16, udata.as_ptr().cast(), udata.len() as u32)
                == 0;
            ok
        };
        if !ok {
            return Err(encode_err(what(), format!("libnftnl refused its description ({} key fields)", fields.len())));
        }
        Ok(msg)
    }
}

// SAFETY: a set definition is a few hundred bytes, far below nft_nlmsg_maxsize().
unsafe impl NlMsg for SetMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        let flags = k::NLM_F_CREATE | k::NLM_F_EXCL | k::NLM_F_ACK;
        // SAFETY: the caller provides a buffer of nft_nlmsg_maxsize() bytes.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf.cast::<c_char>(), k::NFT_MSG_NEWSET, k::NFPROTO_INET, flags, seq);
            sys::nftnl_set_nlmsg_build_payload(nlh, self.raw.as_ptr());
        }
    }
}

impl Drop for SetMsg {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_set_alloc and freed only here.
        unsafe { sys::nftnl_set_free(self.raw.as_ptr()) }
    }
}

/// One `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` message: a chunk of a set's elements.
pub(super) struct ElemMsg {
    raw: NonNull<sys::nftnl_set>,
}

impl ElemMsg {
    /// Encodes elements from the front of `elements` until the message holds
    /// [`ELEMS_BYTES`] (at least one); returns it and how many elements it took. An
    /// element that cannot be encoded is returned as its index and the reason.
    pub(super) fn chunk(
        table: &CStr,
        set: &Set,
        id: Option<u32>,
        elements: &[Item<'_>],
        with_data: bool,
    ) -> Result<(ElemMsg, usize), (usize, String)> {
        let name = CString::new(set.name.as_str()).map_err(|_| (0, "the set name has a NUL byte".to_string()))?;
        // SAFETY: allocation only; NULL (out of memory) aborts in `alloc`.
        let msg = ElemMsg { raw: alloc(unsafe { sys::nftnl_set_alloc() }) };
        let s = msg.raw.as_ptr();
        // SAFETY: `s` is the live set allocated above, used only as a container for
        // elements; strings are NUL-terminated and copied by libnftnl.
        let named = unsafe {
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FAMILY as u16, u32::from(k::NFPROTO_INET));
            if let Some(id) = id {
                sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
            }
            sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr()) == 0
                && sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr()) == 0
        };
        if !named {
            return Err((0, "libnftnl refused the table or set name (out of memory)".to_string()));
        }
        let (mut bytes, mut taken) = (0, 0);
        for (i, e) in elements.iter().enumerate() {
            let enc = e.encode(set, with_data).map_err(|r| (i, r))?;
            let len = enc.wire_len();
            if taken > 0 && bytes + len > ELEMS_BYTES {
                break;
            }
            bytes += len;
            taken += 1;
            // SAFETY: `el` is a fresh element that the set owns once added (and frees with
            // itself); `s` is live; data and strings are live for the calls and copied.
            let ok = unsafe {
                let el = alloc(sys::nftnl_set_elem_alloc()).as_ptr();
                sys::nftnl_set_elem_add(s, el);
                let put = |attr: u32, b: &[u8]| {
                    sys::nftnl_set_elem_set(el, attr as u16, b.as_ptr().cast(), b.len() as u32) == 0
                };
                let mut ok = put(sys::NFTNL_SET_ELEM_KEY, &enc.key);
                if let Some(end) = &enc.key_end {
                    ok &= put(sys::NFTNL_SET_ELEM_KEY_END, end);
                }
                if let Some(data) = &enc.data {
                    ok &= put(sys::NFTNL_SET_ELEM_DATA, data);
                }
                if let Some(udata) = &enc.udata {
                    ok &= put(sys::NFTNL_SET_ELEM_USERDATA, udata);
                }
                ok
            };
            if !ok {
                return Err((i, "libnftnl refused its key or data (longer than the attribute holds)".to_string()));
            }
        }
        Ok((msg, taken))
    }
}

impl ElemMsg {
    /// The message as the batch carries it (sequence number 0), in a zeroed buffer.
    pub(super) fn encoded(&self, op: MsgType) -> AlignedBuf {
        let mut buf = AlignedBuf::new(nftnl::nft_nlmsg_maxsize() as usize);
        // SAFETY: the buffer has nft_nlmsg_maxsize() bytes, as `NlMsg::write` requires.
        unsafe { self.write(buf.as_mut_ptr().cast(), 0, op) };
        buf
    }
}

// SAFETY: `chunk` keeps the element list below ELEMS_BYTES (32 KiB), and the names are
// at most a few hundred bytes, so the message stays below nft_nlmsg_maxsize().
unsafe impl NlMsg for ElemMsg {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, msg_type: MsgType) {
        let (ty, flags) = match msg_type {
            MsgType::Add => (k::NFT_MSG_NEWSETELEM, k::NLM_F_CREATE | k::NLM_F_EXCL | k::NLM_F_ACK),
            MsgType::Del => (k::NFT_MSG_DELSETELEM, k::NLM_F_ACK),
        };
        // SAFETY: the caller provides a buffer of nft_nlmsg_maxsize() bytes.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(buf.cast::<c_char>(), ty, k::NFPROTO_INET, flags, seq);
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, self.raw.as_ptr());
        }
    }
}

impl Drop for ElemMsg {
    fn drop(&mut self) {
        // SAFETY: allocated by nftnl_set_alloc and freed only here (with its elements).
        unsafe { sys::nftnl_set_free(self.raw.as_ptr()) }
    }
}
