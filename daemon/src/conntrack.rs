//! Conntrack hygiene: when a forward's target changes or the forward goes away, the
//! established flows of the old mapping are deleted through ctnetlink, so the next
//! packet of a long-lived flow (UDP especially) is NATed afresh instead of following
//! the old target forever.
//!
//! Flows are found by dumping the conntrack table and matching the original tuple's
//! protocol and destination port (the public port) and the reply tuple's source port
//! (the old target); each match is deleted by its original tuple.

use crate::nlattr::{align4, find, find_raw, messages};
use portd_rules::model::{Family, Proto};
use portd_rules::plan::{names, Element, Plan, Value};
use std::collections::BTreeSet;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ZONE: u16 = 18;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// Forgets the flows of stale mappings on a thread of its own, in the order they were
/// handed over. A change is acknowledged once the kernel and the state file hold it; the
/// conntrack dump walks the host-wide hash table (about 12 ms on a 24 GiB machine) and is
/// kept off that path.
pub struct Cleaner {
    tx: std::sync::mpsc::Sender<Vec<Stale>>,
}

impl Cleaner {
    /// Starts the thread; it inherits the caller's network namespace and capabilities.
    pub fn spawn() -> io::Result<Cleaner> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Stale>>();
        std::thread::Builder::new().name("portd-conntrack".into()).spawn(move || {
            for stale in rx {
                match forget(&stale) {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(
                        "deleted {n} conntrack entr{} of removed or retargeted forwards",
                        if n == 1 { "y" } else { "ies" }
                    ),
                    Err(e) => tracing::warn!(
                        "deleting conntrack entries of old mappings: {e}; established flows keep their old target until they time out"
                    ),
                }
            }
        })?;
        Ok(Cleaner { tx })
    }

    /// Queues `stale` for deletion (nothing happens for an empty list).
    pub fn forget(&self, stale: Vec<Stale>) {
        if !stale.is_empty() && self.tx.send(stale).is_err() {
            tracing::warn!("the conntrack thread is gone; established flows keep their old target until they time out");
        }
    }
}

/// A mapping whose flows must be forgotten: public (family, proto, port) -> old target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stale {
    /// Address family.
    pub family: Family,
    /// Protocol.
    pub proto: Proto,
    /// Public port.
    pub port: u16,
    /// Target the flows were redirected to.
    pub old_to: u16,
}

/// Mappings of `old` that `new` removes or points elsewhere.
pub fn stale_mappings(old: &Plan, new: &Plan) -> Vec<Stale> {
    let (Some(o), Some(n)) = (old.set(names::TO), new.set(names::TO)) else { return Vec::new() };
    let new_map: std::collections::BTreeMap<Vec<Value>, Option<Value>> =
        n.elements.iter().map(|e| (e.key, e.data)).collect();
    let mut out = BTreeSet::new();
    for Element { key, data } in o.elements.iter() {
        if new_map.get(&key).is_some_and(|d| *d == data) {
            continue;
        }
        if let (
            [Value::NfProto(family), Value::InetProto(proto), Value::InetService(port)],
            Some(Value::InetService(to)),
        ) = (key.as_slice(), &data)
        {
            out.insert(Stale { family: *family, proto: *proto, port: *port, old_to: *to });
        }
    }
    out.into_iter().collect()
}

/// Mappings a delta drops or retargets: every deleted `fwd_to` entry (an unchanged one
/// is never in a delta).
pub fn stale_in_delta(d: &portd_rules::Delta) -> Vec<Stale> {
    d.del_elements
        .iter()
        .filter(|(s, _)| s == names::TO)
        .filter_map(|(_, e)| match (e.key.as_slice(), &e.data) {
            (
                [Value::NfProto(family), Value::InetProto(proto), Value::InetService(port)],
                Some(Value::InetService(to)),
            ) => Some(Stale { family: *family, proto: *proto, port: *port, old_to: *to }),
            _ => None,
        })
        .collect()
}

/// (protocol number, source port, destination port) of a CTA_TUPLE_* payload.
fn tuple_ports(t: &[u8]) -> Option<(u8, u16, u16)> {
    let p = find(t, CTA_TUPLE_PROTO)?;
    let num = *find(p, CTA_PROTO_NUM)?.first()?;
    let port = |ty| find(p, ty).filter(|v| v.len() >= 2).map(|v| u16::from_be_bytes([v[0], v[1]]));
    Some((num, port(CTA_PROTO_SRC_PORT)?, port(CTA_PROTO_DST_PORT)?))
}

struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2), result checked and owned.
        let raw =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fresh descriptor owned by nobody else.
        Ok(Socket { fd: unsafe { OwnedFd::from_raw_fd(raw) }, seq: 1 })
    }

    fn send(&mut self, msg_type: u16, flags: u16, family: u8, payload: &[u8]) -> io::Result<u32> {
        self.seq += 1;
        let len = 16 + 4 + payload.len();
        let mut m = Vec::with_capacity(len);
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&(((libc::NFNL_SUBSYS_CTNETLINK as u16) << 8) | msg_type).to_ne_bytes());
        m.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
        m.extend_from_slice(&self.seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(payload);
        // SAFETY: m is a valid buffer of its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Receives until NLMSG_DONE or an error/ack for `seq`, calling `f` on each data
    /// message's address family and attributes.
    fn recv(&mut self, seq: u32, mut f: impl FnMut(u8, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            for m in messages(&buf[..n as usize]) {
                if m.seq != seq {
                    continue;
                }
                match i32::from(m.ty) {
                    libc::NLMSG_DONE => return Ok(()),
                    libc::NLMSG_ERROR => {
                        let code = m.body.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                    }
                    _ => f(m.body.first().copied().unwrap_or(0), m.body.get(4..).unwrap_or(&[])),
                }
            }
        }
    }
}

/// How many flows this network namespace tracks, when the kernel says.
fn tracked_flows() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").ok()?.trim().parse().ok()
}

/// Deletes the conntrack entries of `stale` mappings; returns how many were deleted.
pub fn forget(stale: &[Stale]) -> io::Result<usize> {
    if stale.is_empty() {
        return Ok(0);
    }
    // The dump walks the whole conntrack hash table, which is shared by every namespace
    // of the host (about 12 ms per walk here), so skip it when this namespace tracks nothing.
    if tracked_flows() == Some(0) {
        return Ok(0);
    }
    let mut sock = Socket::open()?;
    let mut victims: Vec<(u8, Vec<u8>)> = Vec::new();
    // One dump of every family (AF_UNSPEC), one walk of the table.
    let seq = sock.send(IPCTNL_MSG_CT_GET, libc::NLM_F_DUMP as u16, libc::AF_UNSPEC as u8, &[])?;
    sock.recv(seq, |af, entry| {
        let family = match i32::from(af) {
            libc::AF_INET => Family::Ipv4,
            libc::AF_INET6 => Family::Ipv6,
            _ => return,
        };
        let (Some(orig), Some(reply)) = (find(entry, CTA_TUPLE_ORIG), find(entry, CTA_TUPLE_REPLY)) else { return };
        let (Some((num, _, dport)), Some((_, rsport, _))) = (tuple_ports(orig), tuple_ports(reply)) else { return };
        let hit = stale.iter().any(|s| {
            let p = match s.proto {
                Proto::Tcp => libc::IPPROTO_TCP as u8,
                Proto::Udp => libc::IPPROTO_UDP as u8,
            };
            s.family == family && p == num && s.port == dport && s.old_to == rsport
        });
        if hit {
            let mut payload = Vec::new();
            if let Some(raw) = find_raw(entry, CTA_TUPLE_ORIG) {
                payload.extend_from_slice(raw);
                payload.resize(align4(payload.len()), 0);
            }
            if let Some(raw) = find_raw(entry, CTA_ZONE) {
                payload.extend_from_slice(raw);
                payload.resize(align4(payload.len()), 0);
            }
            victims.push((af, payload));
        }
    })?;
    let mut deleted = 0;
    for (af, payload) in victims {
        let seq = sock.send(IPCTNL_MSG_CT_DELETE, libc::NLM_F_ACK as u16, af, &payload)?;
        match sock.recv(seq, |_, _| {}) {
            Ok(()) => deleted += 1,
            // Already gone (timed out or closed meanwhile): nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_rules::{compile, Forward, OwnedSet, PortRange};

    fn plan(to: Option<u16>) -> Plan {
        let forwards =
            to.map(|t| vec![Forward::new("dns", PortRange::single(53), PortRange::single(t))]).unwrap_or_default();
        compile("portd", 1, &[OwnedSet { owner: "system".into(), forwards }]).expect("plan")
    }

    #[test]
    fn changed_and_removed_targets_are_stale_unchanged_are_not() {
        assert!(stale_mappings(&plan(Some(5353)), &plan(Some(5353))).is_empty());
        let changed = stale_mappings(&plan(Some(5353)), &plan(Some(5354)));
        assert_eq!(changed.len(), 2, "ipv4 and ipv6: {changed:?}");
        assert!(changed.iter().all(|s| s.port == 53 && s.old_to == 5353 && s.proto == Proto::Tcp));
        assert_eq!(stale_mappings(&plan(Some(5353)), &plan(None)).len(), 2);
        assert!(stale_mappings(&plan(None), &plan(Some(5353))).is_empty());
    }
}
