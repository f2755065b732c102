//! The netfilter netlink connection of the backend (through libmnl): batches out and
//! their acknowledgements back, and GET requests with their dumps.

use super::consts as k;
use super::error::{hint, BackendError};
use crate::netlink::{self, header, parse_error, AlignedBuf, NlError};
use nftnl::nftnl_sys::{self as sys, libc::nlmsghdr};
use std::collections::BTreeSet;
use std::io;

/// Receive buffer: the kernel sends at most 32 KiB of dump per datagram.
const RECV_BYTES: usize = 128 * 1024;
/// How long to wait for any one reply of the kernel.
const REPLY_TIMEOUT_SECS: i64 = 30;

/// A netfilter netlink socket in the calling thread's network namespace.
pub(super) struct Conn {
    pub(super) sock: mnl::Socket,
    portid: u32,
    buf: AlignedBuf,
    seq: u32,
}

// SAFETY: a Conn is the only owner of its socket and buffer; libmnl keeps no per-thread
// state for a socket, so it may be used from whichever thread holds the Conn.
unsafe impl Send for Conn {}

impl Conn {
    pub(super) fn open() -> Result<Conn, BackendError> {
        let sock = mnl::Socket::new(mnl::Bus::Netfilter).map_err(|source| {
            let hint = hint(source.raw_os_error());
            BackendError::Socket { source, hint }
        })?;
        // Error replies carry the kernel's explanation and the offending attribute, but
        // not a copy of the (possibly 64 KiB) request. Both are optional comforts: a
        // kernel without them (before 4.12) still reports the errno.
        for (name, what) in [(k::NETLINK_EXT_ACK, "extended acks"), (k::NETLINK_CAP_ACK, "capped acks")] {
            if let Err(e) = netlink::setsockopt_int(&sock, netlink::socket::SOL_NETLINK, name, 1) {
                tracing::debug!("netfilter netlink socket without {what}: {e}; kernel errors will be less detailed");
            }
        }
        let timeout = libc::timeval { tv_sec: REPLY_TIMEOUT_SECS, tv_usec: 0 };
        netlink::setsockopt(&sock, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)
            .map_err(|source| BackendError::Socket { hint: hint(source.raw_os_error()), source })?;
        let portid = sock.portid();
        Ok(Conn { sock, portid, buf: AlignedBuf::new(RECV_BYTES), seq: 0 })
    }

    /// The socket's netlink port id (unique in its network namespace while it is open).
    pub(super) fn portid(&self) -> u32 {
        self.portid
    }

    /// Makes room for a batch of `bytes` and the answers to its `messages`: the kernel
    /// refuses a send larger than the send buffer, and drops answers that overflow the
    /// receive buffer. Forcing needs CAP_NET_ADMIN, which every change needs anyway.
    pub(super) fn size_buffers(&self, bytes: usize, messages: usize) {
        for (force, plain, n, what) in [
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, bytes + 64 * 1024, "send"),
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, messages * 2048 + 256 * 1024, "receive"),
        ] {
            if let Err(e) = netlink::socket::set_buffer(&self.sock, force, plain, n) {
                tracing::warn!(
                    "cannot size the netfilter socket's {what} buffer to {n} bytes: {e}; a large batch may be refused"
                );
            }
        }
    }

    /// Discards whatever answers are still queued (the acknowledgement of a batch's end
    /// message arrives after those of its contents, which is all a commit waits for).
    pub(super) fn drain(&mut self) {
        netlink::socket::drain(&self.sock, self.buf.bytes_mut());
    }

    fn recv(&mut self) -> io::Result<usize> {
        self.sock.recv_raw(self.buf.bytes_mut())
    }

    /// Receives the answer to every one of the `total` messages of a sent batch (sequence
    /// numbers from `first`); the first refusal becomes the error, its object named by
    /// `describe(index of the message, offset of the refused attribute)`.
    pub(super) fn wait_acks(
        &mut self,
        first: u32,
        total: usize,
        describe: impl Fn(usize, Option<u32>) -> String,
    ) -> Result<(), BackendError> {
        let mut pending = vec![true; total];
        let mut missing = total;
        while missing > 0 {
            let n = self.recv().map_err(|source| BackendError::Ack { missing, total, source })?;
            let data = &self.buf.bytes()[..n];
            for msg in mnl::NlMessages::new(data) {
                let msg = msg.map_err(|source| BackendError::Ack { missing, total, source })?;
                let Some(h) = header(msg) else { continue };
                if h.ty != netlink::msg::NLMSG_ERROR {
                    continue;
                }
                let index = h.seq.checked_sub(first).map(|i| i as usize).filter(|i| *i < total);
                if let Err(source) = mnl::cb_run(msg, 0, self.portid) {
                    let e = parse_error(msg).unwrap_or(NlError {
                        errno: source.raw_os_error().unwrap_or(0),
                        message: None,
                        offset: None,
                    });
                    let object = match index {
                        Some(i) => describe(i, e.offset),
                        None => "the batch".to_string(),
                    };
                    return Err(BackendError::Rejected {
                        object,
                        seq: h.seq,
                        errno: e.errno,
                        reason: io::Error::from_raw_os_error(e.errno).to_string(),
                        detail: e.message.map(|m| format!(": {m}")).unwrap_or_default(),
                        hint: hint(Some(e.errno)),
                    });
                }
                if let Some(i) = index {
                    if std::mem::take(&mut pending[i]) {
                        missing -= 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends one GET request (payload written by `payload`) and hands every reply to
    /// `each` until the kernel is done. Records generation ids and interrupted dumps.
    pub(super) fn request(
        &mut self,
        ty: u16,
        flags: u16,
        payload: impl FnOnce(*mut nlmsghdr),
        gen: &mut Generation,
        each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), Fail> {
        self.request_in(k::NFPROTO_INET, ty, flags, payload, gen, each)
    }

    /// [`Conn::request`] for objects of `family` (NFPROTO_UNSPEC: every family).
    pub(super) fn request_in(
        &mut self,
        family: u16,
        ty: u16,
        flags: u16,
        payload: impl FnOnce(*mut nlmsghdr),
        gen: &mut Generation,
        mut each: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> Result<(), Fail> {
        self.seq += 1;
        let seq = self.seq;
        let mut req = AlignedBuf::new(8192);
        // SAFETY: an 8 KiB buffer is plenty for a header and a table, set or chain name.
        let len = unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(req.as_mut_ptr().cast(), ty, family, flags, seq);
            payload(nlh);
            (*nlh).nlmsg_len as usize
        };
        self.sock.send(&req.bytes()[..len]).map_err(Fail::Kernel)?;
        let mut decode_error = None;
        loop {
            let n = self.recv().map_err(Fail::Kernel)?;
            let data = &self.buf.bytes()[..n];
            for msg in mnl::NlMessages::new(data) {
                let msg = msg.map_err(Fail::Kernel)?;
                let Some(h) = header(msg) else { continue };
                if h.ty < k::NLMSG_MIN_TYPE || h.seq != seq {
                    continue;
                }
                gen.seen(msg, h.flags);
                if let Err(e) = each(msg) {
                    decode_error.get_or_insert(e);
                }
            }
            match mnl::cb_run(data, seq, self.portid) {
                Ok(mnl::CbResult::Stop) => break,
                Ok(mnl::CbResult::Ok) => {}
                Err(e) => return Err(Fail::Kernel(e)),
            }
        }
        match decode_error {
            Some(e) => Err(Fail::Decode(e)),
            None => Ok(()),
        }
    }
}

/// Why a GET request failed.
pub(super) enum Fail {
    Kernel(io::Error),
    Decode(String),
}

/// The ruleset generations a read saw: one, or the read must start over.
#[derive(Default)]
pub(super) struct Generation {
    pub(super) ids: BTreeSet<u16>,
    pub(super) interrupted: bool,
}

impl Generation {
    pub(super) fn seen(&mut self, msg: &[u8], flags: u16) {
        // nfgenmsg.res_id: the low 16 bits of the ruleset generation, big endian
        if let Some(id) = msg.get(18..20) {
            self.ids.insert(u16::from_be_bytes([id[0], id[1]]));
        }
        self.interrupted |= flags & k::NLM_F_DUMP_INTR != 0;
    }
}
