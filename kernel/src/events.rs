//! Drift detection: listens to the nf_tables netlink event group (NFNLGRP_NFTABLES) and
//! tells the actor when a committed transaction touched portd's table. No polling: the
//! kernel multicasts every committed change; we read the table name of each message and
//! act at the end of the transaction (NFT_MSG_NEWGEN).
//!
//! This only reads event headers, so it uses a plain netlink socket of the shared
//! [`crate::netlink`] layer, not nftnl/mnl.

#![forbid(unsafe_code)]

use crate::netlink::{find, messages, setsockopt_int, Socket};
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// What a committed transaction did to our table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableEvent {
    /// The table itself was deleted (flush ruleset, `nft delete table`).
    TableDeleted,
    /// Something inside the table changed (rules, chains, sets, elements, objects).
    Edited,
    /// Events were lost (socket buffer overrun): the table must be checked.
    Unknown,
    /// Another program committed a transaction that left our table alone (a firewall
    /// loaded its rules): whether conntrack runs may have changed.
    Elsewhere,
}

/// A netlink socket subscribed to nf_tables events.
pub struct TableWatcher {
    sock: Arc<Socket>,
    table: Vec<u8>,
    /// The netlink port id portd commits from ([`crate::nft::Backend::commit_port`]).
    own_port: Arc<AtomicU32>,
}

/// The listener's membership of the event group, held by the actor: it steps out of the
/// group for a large commit of portd's own ([`Subscription::quietly`]) while the
/// listener's thread keeps reading the same socket.
#[derive(Clone)]
pub struct Subscription {
    sock: Arc<Socket>,
}

/// NFTA_GEN_ID
const NFTA_GEN_ID: u16 = 1;

/// The ruleset's generation (NFT_MSG_GETGEN): every committed transaction adds one.
fn generation() -> io::Result<u32> {
    let mut s = Socket::open(libc::NETLINK_NETFILTER)?;
    let ty = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | libc::NFT_MSG_GETGEN as u16;
    // struct nfgenmsg { family: AF_UNSPEC, version: NFNETLINK_V0, res_id: 0 }
    let seq = s.send_request(ty, libc::NLM_F_ACK as u16, &[&[libc::AF_UNSPEC as u8, 0, 0, 0]])?;
    let mut id = None;
    s.replies(seq, |m| {
        if i32::from(m.header.ty & 0xff) == libc::NFT_MSG_NEWGEN {
            let attrs = m.body.get(NFGENMSG_LEN..).unwrap_or_default();
            id = find(attrs, NFTA_GEN_ID).and_then(|v| v.get(..4)).map(|v| {
                let mut b = [0; 4];
                b.copy_from_slice(v);
                u32::from_be_bytes(b)
            });
        }
    })?;
    id.ok_or_else(|| io::Error::other("the kernel answered NFT_MSG_GETGEN without a generation"))
}

const NFGENMSG_LEN: usize = 4;

impl Subscription {
    /// Runs a large commit of portd's own (`f`, at most one transaction) with portd's event
    /// listener out of the event group.
    ///
    /// While anyone in any network namespace listens to nf_tables events, the kernel builds
    /// a notification for every element a batch adds or deletes: for 20,000 elements a sixth
    /// of the kernel's work, all of it for portd's own listener (when nothing else listens),
    /// which skips portd's own transactions anyway. The generation number is read before and
    /// after: if it moved by more than `f`'s own commit, another program committed while
    /// portd did not listen, and the second value is true so that the caller checks the
    /// table.
    pub fn quietly<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> (Result<T, E>, bool) {
        let Ok(before) = generation() else { return (f(), false) };
        let group = libc::NFNLGRP_NFTABLES;
        if setsockopt_int(self.sock.as_ref(), libc::SOL_NETLINK, libc::NETLINK_DROP_MEMBERSHIP, group).is_err() {
            return (f(), false);
        }
        let result = f();
        let rejoined = setsockopt_int(self.sock.as_ref(), libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, group);
        if let Err(e) = &rejoined {
            tracing::error!("rejoining the nf_tables event group: {e}; foreign changes may go unnoticed");
        }
        let ours = u32::from(result.is_ok());
        let missed = match generation() {
            Ok(after) => after.wrapping_sub(before) != ours,
            Err(_) => true,
        };
        (result, missed || rejoined.is_err())
    }
}

impl TableWatcher {
    /// Subscribes to NFNLGRP_NFTABLES in the caller's network namespace. Transactions
    /// committed from the netlink port `own_port` holds are portd's own and not reported.
    pub fn new(table: &str, own_port: Arc<AtomicU32>) -> io::Result<TableWatcher> {
        let sock = Arc::new(Socket::open(libc::NETLINK_NETFILTER)?);
        sock.subscribe(libc::NFNLGRP_NFTABLES)?;
        // A large receive buffer: a flush of a big table produces many messages. Failure
        // only means a smaller buffer (and, at worst, an overrun reported as Unknown).
        if let Err(e) = sock.set_recv_buffer(8 << 20) {
            tracing::warn!(
                "cannot enlarge the nf_tables event socket's buffer: {e}; a large flush may be seen as lost events"
            );
        }
        Ok(TableWatcher { sock, table: table.as_bytes().to_vec(), own_port })
    }

    /// The listener's membership of the event group, for [`Subscription::quietly`].
    pub fn subscription(&self) -> Subscription {
        Subscription { sock: Arc::clone(&self.sock) }
    }

    /// Blocks until another program committed a transaction, and says how it touched
    /// our table.
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
                    // End of a transaction; ignore the ones portd itself committed. The
                    // kernel addresses every notification of a transaction to the port id
                    // of the socket that committed it; NFTA_GEN_PROC_PID would be no help
                    // in a PID namespace of its own (a container), where it names a thread
                    // id of the initial namespace that portd cannot know.
                    let own = self.own_port.load(Ordering::Relaxed);
                    let ours = own != 0 && m.header.pid == own;
                    match pending.take() {
                        Some(c) if !ours => return Ok(c),
                        None if !ours => return Ok(TableEvent::Elsewhere),
                        _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// `nft CMD...` in the calling thread's network namespace (a child inherits it).
    fn nft(args: &[&str]) -> Result<(), String> {
        let out = Command::new("nft").args(args).output().map_err(|e| format!("nft: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    #[test]
    fn a_quiet_commit_notices_another_programs_commit_made_meanwhile() {
        // A network namespace of this thread's own, as root (the tests run as root).
        let r = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("this test needs root for a network namespace of its own (unshare: {e})"))?;
            let listener =
                TableWatcher::new("portd", Arc::new(AtomicU32::new(0))).map_err(|e| format!("subscribing: {e}"))?;
            let events = listener.subscription();
            let one = || nft(&["add", "table", "inet", "portd"]);
            let (r, missed) = events.quietly(one);
            r?;
            assert!(!missed, "one commit of its own: nothing missed");
            let (r, missed) =
                events.quietly(|| nft(&["add", "table", "ip", "mine"]).and(nft(&["add", "table", "ip", "other"])));
            r?;
            assert!(missed, "a second commit inside the window is another program's");
            let (r, missed) = events.quietly(|| nft(&["add", "chain", "inet", "nosuch", "c"]));
            assert!(r.is_err(), "a refused batch commits nothing");
            assert!(!missed, "a refused batch of its own: nothing missed");
            // The listener is back in the group: another program's change is heard.
            nft(&["add", "chain", "inet", "portd", "c"])?;
            let mut buf = Vec::new();
            assert_eq!(listener.next(&mut buf).map_err(|e| e.to_string())?, TableEvent::Edited);
            Ok::<(), String>(())
        })
        .join()
        .expect("test thread");
        if let Err(e) = r {
            panic!("{e}");
        }
    }
}
