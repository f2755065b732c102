//! Drift detection: listens to the nf_tables netlink event group (NFNLGRP_NFTABLES) and
//! tells the actor when a committed transaction touched portd's table. No polling: the
//! kernel multicasts every committed change; we read the table name of each message and
//! act at the end of the transaction (NFT_MSG_NEWGEN).
//!
//! This only reads event headers, so it uses a plain netlink socket of the shared
//! [`portd::netlink`] layer, not nftnl/mnl.

use portd::netlink::{find, messages, Socket};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};

/// Thread id of the thread that commits portd's own transactions (the actor).
static COMMITTER: AtomicU32 = AtomicU32::new(0);

/// Marks the calling thread as the one whose transactions are portd's own. The kernel
/// names the committing thread (NFTA_GEN_PROC_PID is a thread id) in every NEWGEN.
pub fn mark_committer_thread() {
    // SAFETY: gettid(2) has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    COMMITTER.store(tid as u32, Ordering::Relaxed);
}

/// What a committed transaction did to our table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableEvent {
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

/// A netlink socket subscribed to nf_tables events.
pub struct Listener {
    sock: Socket,
    table: Vec<u8>,
}

const NFGENMSG_LEN: usize = 4;

impl Listener {
    /// Subscribes to NFNLGRP_NFTABLES in the caller's network namespace.
    pub fn new(table: &str) -> io::Result<Listener> {
        let sock = Socket::open(libc::NETLINK_NETFILTER)?;
        sock.subscribe(libc::NFNLGRP_NFTABLES)?;
        // A large receive buffer: a flush of a big table produces many messages. Failure
        // only means a smaller buffer (and, at worst, an overrun reported as Unknown).
        if let Err(e) = sock.set_recv_buffer(8 << 20) {
            tracing::warn!(
                "cannot enlarge the nf_tables event socket's buffer: {e}; a large flush may be seen as lost events"
            );
        }
        Ok(Listener { sock, table: table.as_bytes().to_vec() })
    }

    /// Blocks until a committed transaction touched our table, and says how.
    pub fn next(&self, buf: &mut Vec<u8>) -> io::Result<TableEvent> {
        let mut pending: Option<TableEvent> = None;
        loop {
            buf.resize(1 << 16, 0);
            let n = match self.sock.recv(buf) {
                Ok(n) => n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::ENOBUFS) => return Ok(TableEvent::Unknown),
                    Some(libc::EINTR) => continue,
                    _ => return Err(e),
                },
            };
            for m in messages(&buf[..n]) {
                let subsys = i32::from(m.header.ty >> 8);
                let msg = i32::from(m.header.ty & 0xff);
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
                    let c = if msg == libc::NFT_MSG_DELTABLE { TableEvent::TableDeleted } else { TableEvent::Edited };
                    pending = Some(match (pending, c) {
                        (Some(TableEvent::TableDeleted), _) | (_, TableEvent::TableDeleted) => TableEvent::TableDeleted,
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
