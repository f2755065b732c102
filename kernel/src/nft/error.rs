//! The backend's error type, one variant per netlink phase, and what to do about an errno.
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::io;

/// Why the kernel backend failed, one variant per netlink phase.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The netfilter netlink socket could not be opened or configured.
    #[error("cannot open a netfilter netlink socket: {source}; {hint}")]
    Socket {
        /// what the system said
        source: io::Error,
        /// what to do
        hint: &'static str,
    },
    /// Something of the plan cannot be put into a netlink message; nothing was sent.
    #[error("cannot encode {what}: {reason}; nothing was sent to the kernel")]
    Encode {
        /// the object
        what: String,
        /// what is wrong with it
        reason: String,
    },
    /// An element-level change would take a set past the size it was created with (the
    /// kernel's limit); nothing was sent. Replacing the table creates larger sets.
    #[error("set {set} would hold {need} elements, more than the {size} it was created for; nothing was sent")]
    Outgrown {
        /// the set
        set: String,
        /// elements after the change
        need: usize,
        /// its size in the kernel
        size: u32,
    },
    /// The batch could not be sent; nothing was changed.
    #[error("cannot send the batch ({bytes} bytes) to the kernel: {source}; {hint}")]
    Send {
        /// size of the batch
        bytes: usize,
        /// what the system said
        source: io::Error,
        /// what to do
        hint: &'static str,
    },
    /// The kernel refused one message of the batch and rolled back all of it.
    #[error(
        "kernel refused {object}: {reason}{detail}; {hint} (the kernel rolled back the whole batch, nothing changed)"
    )]
    Rejected {
        /// the refused object, e.g. `set fwd_to, element ipv4 . tcp . 80 : 8080`
        object: String,
        /// sequence number of the refused message
        seq: u32,
        /// kernel errno
        errno: i32,
        /// the errno as text
        reason: String,
        /// the kernel's extended-ack message, as `: ...`, or empty
        detail: String,
        /// what to do
        hint: &'static str,
    },
    /// The kernel's answers to a batch were lost: whether it was applied is unknown.
    #[error("lost the kernel's answer to the batch ({missing} of {total} messages unacknowledged): {source}; read the table to see what the kernel holds")]
    Ack {
        /// messages without an answer
        missing: usize,
        /// messages in the batch
        total: usize,
        /// what the system said
        source: io::Error,
    },
    /// A dump request failed.
    #[error("cannot read the {what} of table inet {table}: {source}; {hint}")]
    Dump {
        /// what was being read
        what: &'static str,
        /// the table
        table: String,
        /// what the kernel said
        source: io::Error,
        /// what to do
        hint: &'static str,
    },
    /// A reply of the kernel could not be parsed.
    #[error("cannot decode the kernel's {what}: {reason}")]
    Decode {
        /// what was being read
        what: &'static str,
        /// what is wrong
        reason: String,
    },
    /// The table changed during every attempt to read it.
    #[error("table inet {table} kept changing while it was read ({attempts} attempts); try again")]
    Unstable {
        /// the table
        table: String,
        /// attempts made
        attempts: u32,
    },
}

impl BackendError {
    /// The kernel errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            BackendError::Rejected { errno, .. } => Some(*errno),
            BackendError::Socket { source, .. }
            | BackendError::Send { source, .. }
            | BackendError::Ack { source, .. }
            | BackendError::Dump { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// What to do about a kernel errno.
pub(super) fn hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM | libc::EACCES) => {
            "need CAP_NET_ADMIN: run portd as root or grant it that capability"
        }
        Some(libc::ENOENT) => {
            "something it refers to does not exist (table, set, chain or counter), e.g. the table was deleted meanwhile; a full apply recreates everything"
        }
        Some(libc::EEXIST) => {
            "it is already in the kernel, so the kernel holds something portd did not expect; a full apply replaces the table"
        }
        Some(libc::EINVAL) => {
            "the kernel rejected its attributes (a key or value of the wrong type or length, or a feature this kernel lacks)"
        }
        Some(libc::ENOBUFS | libc::EMSGSIZE | libc::ENOSPC) => {
            "too much for one netlink message or socket buffer; change fewer forwards at once, or raise net.core.wmem_max and net.core.rmem_max"
        }
        Some(libc::EOPNOTSUPP) => {
            "this kernel lacks an nf_tables feature portd needs (nft_redir, nft_fib_inet, nft_objref, nft_ct, concatenated interval sets)"
        }
        Some(libc::EBUSY) => "it is still in use (a counter referenced by a map element, or a chain by a rule)",
        Some(libc::ENOTEMPTY) => "it overlaps an interval already in the set",
        Some(libc::ENOMEM) => "the kernel ran out of memory",
        Some(libc::EAGAIN) => "the kernel did not answer in time",
        Some(libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT) => {
            "this kernel has no nf_tables netlink support (CONFIG_NF_TABLES)"
        }
        _ => "see the kernel log (dmesg) for details",
    }
}

pub(super) fn encode_err(what: impl Into<String>, reason: impl Into<String>) -> BackendError {
    BackendError::Encode { what: what.into(), reason: reason.into() }
}

pub(super) fn cstring(what: &str, s: &str) -> Result<CString, BackendError> {
    CString::new(s).map_err(|_| encode_err(format!("{what} `{}`", s.escape_debug()), "it contains a NUL byte"))
}
