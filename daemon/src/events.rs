//! Drift detection: listens to the nf_tables netlink event group (NFNLGRP_NFTABLES) and
//! tells the actor when a committed transaction touched portd's table. No polling: the
//! kernel multicasts every committed change; we read the table name of each message and
//! act at the end of the transaction (NFT_MSG_NEWGEN).
//!
//! This only reads event headers, so it uses a plain netlink socket, not nftnl/mnl.

use crate::nlattr::{find, messages};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

/// Thread id of the thread that commits portd's own transactions (the actor).
static COMMITTER: AtomicU32 = AtomicU32::new(0);

/// Marks the calling thread as the one whose transactions are portd's own. The kernel
/// names the committing thread (NFTA_GEN_PROC_PID is a thread id) in every NEWGEN.
pub fn mark_committer_thread() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    COMMITTER.store(tid as u32, Ordering::Relaxed);
}
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// What a committed transaction did to our table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The table itself was deleted (flush ruleset, `nft delete table`).
    TableDeleted,
    /// Something inside the table changed (rules, chains, sets, elements, objects).
    Edited,
    /// Events were lost (socket buffer overrun): the table must be checked.
    Unknown,
}

/// The committing thread of a NEWGEN message (NFTA_GEN_PROC_PID, big-endian u32).
fn gen_pid(payload: &[u8]) -> Option<u32> {
    let v = find(payload.get(NFGENMSG_LEN..)?, 2)?;
    Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
}

/// setsockopt(2) with an int value.
fn set_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: the option value is a c_int of the given size and the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A netlink socket subscribed to nf_tables events.
pub struct Listener {
    fd: OwnedFd,
    table: Vec<u8>,
}

const NFGENMSG_LEN: usize = 4;

impl Listener {
    /// Subscribes to NFNLGRP_NFTABLES in the caller's network namespace.
    pub fn new(table: &str) -> io::Result<Listener> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is a valid value; we fill the family.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the given length.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        set_int(&fd, libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, libc::NFNLGRP_NFTABLES)?;
        // A large receive buffer: a flush of a big table produces many messages. Failure
        // only means a smaller buffer (and, at worst, an overrun reported as Unknown).
        let _ = set_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
        Ok(Listener { fd, table: table.as_bytes().to_vec() })
    }

    /// Blocks until a committed transaction touched our table, and says how.
    pub fn next(&self, buf: &mut Vec<u8>) -> io::Result<Change> {
        let mut pending: Option<Change> = None;
        loop {
            buf.resize(1 << 16, 0);
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS) => return Ok(Change::Unknown),
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                }
            }
            for m in messages(&buf[..n as usize]) {
                let subsys = i32::from(m.ty >> 8);
                let msg = i32::from(m.ty & 0xff);
                if subsys != libc::NFNL_SUBSYS_NFTABLES {
                    continue;
                }
                if msg == libc::NFT_MSG_NEWGEN {
                    // End of a transaction; ignore the ones portd itself committed.
                    let ours = gen_pid(m.body) == Some(COMMITTER.load(Ordering::Relaxed));
                    if let Some(c) = pending.take() {
                        if !ours {
                            return Ok(c);
                        }
                    }
                } else if self.concerns_us(m.body) {
                    let c = if msg == libc::NFT_MSG_DELTABLE { Change::TableDeleted } else { Change::Edited };
                    pending = Some(match (pending, c) {
                        (Some(Change::TableDeleted), _) | (_, Change::TableDeleted) => Change::TableDeleted,
                        _ => c,
                    });
                }
            }
        }
    }

    /// True when the message is about an inet table with our name. In every nf_tables
    /// message the table name is attribute 1 (NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, ...).
    fn concerns_us(&self, payload: &[u8]) -> bool {
        if payload.len() < NFGENMSG_LEN || i32::from(payload[0]) != libc::NFPROTO_INET {
            return false;
        }
        find(&payload[NFGENMSG_LEN..], 1)
            .map(|v| v.split(|b| *b == 0).next().unwrap_or(v))
            .is_some_and(|name| name == self.table.as_slice())
    }
}
