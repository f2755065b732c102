//! Conntrack hygiene: when a forward's target changes or the forward goes away, the
//! established flows of the old mapping are deleted through ctnetlink, so the next
//! packet of a long-lived flow (UDP especially) is NATed afresh instead of following
//! the old target forever. When a UDP forward comes, the flows on its public port that
//! were not redirected (a client that sent before the forward existed, or entries
//! another account primed from that port while it was free) go too, so those clients'
//! next datagrams reach the forward.
//!
//! Flows are found by dumping the conntrack table and matching the original tuple's
//! protocol and destination port (the public port) and the reply tuple's source port
//! (the old target); each match is deleted by its original tuple.
#![forbid(unsafe_code)]

use crate::netlink::{attr, find, find_raw, push_padded, Socket};
use portd_rules::model::{Family, Proto};
pub use portd_rules::plan::{fresh_in_delta, fresh_mappings, stale_in_delta, stale_mappings, Stale};
use std::io;

const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_ZONE: u16 = 18;
/// `IPS_SRC_NAT | IPS_DST_NAT`
const IPS_NAT_MASK: u32 = (1 << 4) | (1 << 5);
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

/// Forgets the flows of stale mappings on a thread of its own, in the order they were
/// handed over. A change is acknowledged once the kernel and the state file hold it; the
/// conntrack dump walks the host-wide hash table (about 12 ms on a 24 GiB machine) and is
/// kept off that path.
pub struct Cleaner {
    tx: std::sync::mpsc::Sender<Job>,
}

/// Called once the flows of a [`Cleaner::forget`] job are gone (or could not be).
pub type Done = Box<dyn FnOnce() + Send>;

/// What the cleaner's thread is asked to delete.
enum Job {
    /// the flows of mappings removed or retargeted
    Stale(Vec<Stale>, Option<Done>),
    /// the flows that were not redirected on the public ports of new UDP mappings
    Fresh(Vec<Stale>),
}

impl Cleaner {
    /// Starts the thread; it inherits the caller's network namespace and capabilities.
    /// Jobs queued while it works are done together, in one dump of the table: however
    /// fast changes come, the thread is at most one dump behind.
    pub fn spawn() -> io::Result<Cleaner> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("portd-conntrack".into()).spawn(move || {
            while let Ok(first) = rx.recv() {
                let (mut stale, mut fresh, mut done) = (Vec::new(), Vec::new(), Vec::new());
                for job in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                    match job {
                        Job::Stale(s, d) => {
                            stale.extend(s);
                            done.extend(d);
                        }
                        Job::Fresh(f) => fresh.extend(f),
                    }
                }
                match forget_both(&stale, &fresh) {
                    Ok((0, 0)) => {}
                    Ok((s, f)) => tracing::info!(
                        "deleted {s} conntrack entr{} of removed or retargeted forwards and {f} on the public ports of new UDP forwards (flows that began before them, not redirected)",
                        if s == 1 { "y" } else { "ies" }
                    ),
                    Err(e) => tracing::warn!(
                        "deleting conntrack entries of old mappings and on new UDP forwards' public ports: {e}; those flows keep going where they went until they time out"
                    ),
                }
                for d in done {
                    d();
                }
            }
        })?;
        Ok(Cleaner { tx })
    }

    /// Queues `stale` for deletion (nothing happens for an empty list); `done` is called
    /// once they are gone. False when the job could not be queued (`done` is dropped).
    pub fn forget(&self, stale: Vec<Stale>, done: Option<Done>) -> bool {
        if stale.is_empty() {
            return false;
        }
        if self.tx.send(Job::Stale(stale, done)).is_err() {
            tracing::warn!("the conntrack thread is gone; established flows keep their old target until they time out");
            return false;
        }
        true
    }

    /// Queues the public ports of `fresh` mappings (the UDP ones) for the deletion of
    /// the flows there that were not redirected.
    pub fn fresh(&self, mut fresh: Vec<Stale>) {
        fresh.retain(|m| m.proto == Proto::Udp);
        if !fresh.is_empty() && self.tx.send(Job::Fresh(fresh)).is_err() {
            tracing::warn!("the conntrack thread is gone; flows that began before a new UDP forward keep going where they went until they time out");
        }
    }
}

/// (protocol number, source port, destination port) of a CTA_TUPLE_* payload.
fn tuple_ports(t: &[u8]) -> Option<(u8, u16, u16)> {
    let p = find(t, CTA_TUPLE_PROTO)?;
    let num = *find(p, CTA_PROTO_NUM)?.first()?;
    let port = |ty| find(p, ty).filter(|v| v.len() >= 2).map(|v| u16::from_be_bytes([v[0], v[1]]));
    Some((num, port(CTA_PROTO_SRC_PORT)?, port(CTA_PROTO_DST_PORT)?))
}

/// Sends one ctnetlink request: `nfgenmsg` (family, version 0, resource id 0), then
/// `attrs`; returns its sequence number.
fn ct_request(sock: &mut Socket, msg_type: u16, flags: u16, family: u8, attrs: &[u8]) -> io::Result<u32> {
    let ty = ((libc::NFNL_SUBSYS_CTNETLINK as u16) << 8) | msg_type;
    sock.send_request(ty, flags, &[&[family, 0, 0, 0], attrs])
}

/// How many flows this network namespace tracks, when the kernel says.
fn tracked_flows() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count").ok()?.trim().parse().ok()
}

/// The conntrack table's entries and limit, from ctnetlink (IPCTNL_MSG_CT_GET_STATS);
/// `None` when the answer carries no counts. EOPNOTSUPP: conntrack is not loaded.
pub fn stats() -> io::Result<Option<(u64, u64)>> {
    let mut s = Socket::open(libc::NETLINK_NETFILTER)?;
    // NFNL_SUBSYS_CTNETLINK (1) << 8 | IPCTNL_MSG_CT_GET_STATS (5)
    let seq = s.send_request((1 << 8) | 5, libc::NLM_F_ACK as u16, &[&[libc::AF_UNSPEC as u8, 0, 0, 0]])?;
    let mut got = None;
    s.replies(seq, |m| {
        let attrs = m.body.get(4..).unwrap_or_default();
        let be = |ty| {
            find(attrs, ty).and_then(|v| v.get(..4)).map(|v| u64::from(u32::from_be_bytes([v[0], v[1], v[2], v[3]])))
        };
        // CTA_STATS_GLOBAL_ENTRIES (1), CTA_STATS_GLOBAL_MAX_ENTRIES (2)
        if let (Some(count), Some(max)) = (be(1), be(2)) {
            got = Some((count, max));
        }
    })?;
    Ok(got)
}

/// Deletes, in one dump of the table, the entries of `stale` mappings (original
/// destination port the public port, reply source port the old target) and the UDP
/// entries on the public ports of `fresh` mappings that no NAT rewrote and that this
/// host is an end of there: flows to the port of one of its addresses from before the
/// mapping, and flows from it (a socket that held the port then sent to clients' ports,
/// whose datagrams would match it in the reply direction and go nowhere). Returns how
/// many of each were deleted.
fn forget_both(stale: &[Stale], fresh: &[Stale]) -> io::Result<(usize, usize)> {
    if stale.is_empty() && fresh.is_empty() {
        return Ok((0, 0));
    }
    let local = if fresh.is_empty() { Vec::new() } else { local_addresses() };
    let (mut n_stale, mut n_fresh) = (0, 0);
    delete_where(|family, num, entry| {
        let Some(orig) = find(entry, CTA_TUPLE_ORIG) else { return false };
        let Some((_, sport, dport)) = tuple_ports(orig) else { return false };
        let old = !stale.is_empty()
            && find(entry, CTA_TUPLE_REPLY).and_then(tuple_ports).is_some_and(|(_, rsport, _)| {
                stale
                    .iter()
                    .any(|s| s.family == family && proto_num(s.proto) == num && s.port == dport && s.old_to == rsport)
            });
        if old {
            n_stale += 1;
            return true;
        }
        if fresh.is_empty() {
            return false;
        }
        let nat = find(entry, CTA_STATUS)
            .and_then(|v| v.get(..4))
            .is_some_and(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]) & IPS_NAT_MASK != 0);
        let (src, dst) = tuple_addrs(orig);
        // (all of 127.0.0.0/8 is this host's, as is every address of its interfaces)
        let is_local = |a: Option<std::net::IpAddr>| a.is_some_and(|a| a.is_loopback() || local.contains(&a));
        let hit = !nat
            && fresh.iter().any(|m| {
                m.family == family
                    && proto_num(m.proto) == num
                    && ((m.port == dport && is_local(dst)) || (m.port == sport && is_local(src)))
            });
        n_fresh += usize::from(hit);
        hit
    })?;
    Ok((n_stale, n_fresh))
}

/// The source and destination addresses of a CTA_TUPLE_* payload.
fn tuple_addrs(t: &[u8]) -> (Option<std::net::IpAddr>, Option<std::net::IpAddr>) {
    const CTA_TUPLE_IP: u16 = 1;
    let Some(ip) = find(t, CTA_TUPLE_IP) else { return (None, None) };
    let v4 = |ty| find(ip, ty).and_then(|v| <[u8; 4]>::try_from(v.get(..4)?).ok()).map(std::net::IpAddr::from);
    let v6 = |ty| find(ip, ty).and_then(|v| <[u8; 16]>::try_from(v.get(..16)?).ok()).map(std::net::IpAddr::from);
    // CTA_IP_V4_SRC 1, CTA_IP_V4_DST 2, CTA_IP_V6_SRC 3, CTA_IP_V6_DST 4
    (v4(1).or_else(|| v6(3)), v4(2).or_else(|| v6(4)))
}

/// This namespace's own addresses (loopback's included).
fn local_addresses() -> Vec<std::net::IpAddr> {
    let mut v: Vec<std::net::IpAddr> = nix::ifaddrs::getifaddrs()
        .map(|it| {
            it.filter_map(|i| {
                let a = i.address?;
                a.as_sockaddr_in()
                    .map(|s| std::net::IpAddr::V4(s.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())))
            })
            .collect()
        })
        .unwrap_or_default();
    v.push(std::net::Ipv6Addr::LOCALHOST.into());
    v
}

fn proto_num(p: Proto) -> u8 {
    match p {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
    }
}

/// Deletes every entry of this namespace's conntrack table for which `hit(family,
/// protocol number, attributes)` holds: one dump of every family, then one delete by
/// original tuple each; returns how many were deleted.
fn delete_where(mut hit: impl FnMut(Family, u8, &[u8]) -> bool) -> io::Result<usize> {
    // The dump walks the whole conntrack hash table, which is shared by every namespace
    // of the host (about 12 ms per walk here), so skip it when this namespace tracks nothing.
    if tracked_flows() == Some(0) {
        return Ok(0);
    }
    let mut sock = Socket::open(libc::NETLINK_NETFILTER)?;
    let mut victims: Vec<(u8, Vec<u8>)> = Vec::new();
    // One dump of every family (AF_UNSPEC), one walk of the table.
    let seq = ct_request(&mut sock, IPCTNL_MSG_CT_GET, libc::NLM_F_DUMP as u16, libc::AF_UNSPEC as u8, &[])?;
    sock.replies(seq, |m| {
        let af = m.body.first().copied().unwrap_or(0);
        let entry = m.body.get(4..).unwrap_or(&[]);
        let family = match i32::from(af) {
            libc::AF_INET => Family::Ipv4,
            libc::AF_INET6 => Family::Ipv6,
            _ => return,
        };
        let Some((num, _, _)) = find(entry, CTA_TUPLE_ORIG).and_then(tuple_ports) else { return };
        if hit(family, num, entry) {
            let mut payload = Vec::new();
            for ty in [CTA_TUPLE_ORIG, CTA_ZONE] {
                if let Some(raw) = find_raw(entry, ty) {
                    push_padded(&mut payload, raw);
                }
            }
            victims.push((af, payload));
        }
    })?;
    let mut deleted = 0;
    for (af, payload) in victims {
        let seq = ct_request(&mut sock, IPCTNL_MSG_CT_DELETE, libc::NLM_F_ACK as u16, af, &payload)?;
        match sock.replies(seq, |_| {}) {
            Ok(()) => deleted += 1,
            // Already gone (timed out or closed meanwhile): nothing to do.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// True when this namespace's conntrack table is full, or nearly (entries expire while
/// they are counted): new flows are dropped there.
fn table_full() -> bool {
    let read = |name: &str| {
        std::fs::read_to_string(format!("/proc/sys/net/netfilter/{name}")).ok()?.trim().parse::<u64>().ok()
    };
    match (read("nf_conntrack_count"), read("nf_conntrack_max")) {
        (Some(count), Some(max)) => max > 0 && count + max / 64 >= max,
        _ => false,
    }
}

/// Whether connection tracking runs in this network namespace: one UDP datagram to
/// itself over loopback, then ctnetlink deletes the flow it made (so the probe leaves
/// nothing behind). The kernel registers conntrack's hooks in a namespace only while a
/// rule there needs them (a `ct` expression, a NAT chain, iptables' `state`): a datagram
/// that left no flow passed no conntrack hook. An error means the probe could not run
/// (loopback down, no CAP_NET_ADMIN); callers assume conntrack runs.
pub fn active() -> io::Result<bool> {
    const CTA_TUPLE_IP: u16 = 1;
    const CTA_IP_V4_SRC: u16 = 1;
    const CTA_IP_V4_DST: u16 = 2;
    let udp = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    let me = udp.local_addr()?;
    udp.connect(me)?;
    // Sending runs the output path in this thread: a tracked flow is confirmed (at
    // postrouting) by the time send returns. Then the datagram must arrive, except where
    // systemd's IPAddressDeny= (which portd.service sets) drops it on its way out, after
    // postrouting, and send says EPERM: the flow was made all the same. A firewall rule
    // that drops loopback datagrams at output says EPERM too, before the flow is made:
    // there the answer is "off" whatever runs (a host where local DNS could not work).
    // A datagram lost otherwise (loopback down) leaves the answer unknown.
    // A full conntrack table refuses the flow with EPERM too: then conntrack runs (as
    // whoever filled it wants us to believe it does not).
    let refused = match udp.send(b"?") {
        Ok(_) => {
            udp.set_read_timeout(Some(std::time::Duration::from_millis(100)))?;
            udp.recv(&mut [0u8; 1])?;
            false
        }
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => true,
        Err(e) => return Err(e),
    };
    let lo = std::net::Ipv4Addr::LOCALHOST.octets();
    let port = me.port().to_be_bytes();
    let ip = [attr(CTA_IP_V4_SRC, &lo), attr(CTA_IP_V4_DST, &lo)].concat();
    let proto = [
        attr(CTA_PROTO_NUM, &[libc::IPPROTO_UDP as u8]),
        attr(CTA_PROTO_SRC_PORT, &port),
        attr(CTA_PROTO_DST_PORT, &port),
    ]
    .concat();
    let tuple = attr(CTA_TUPLE_ORIG, &[attr(CTA_TUPLE_IP, &ip), attr(CTA_TUPLE_PROTO, &proto)].concat());
    let mut sock = Socket::open(libc::NETLINK_NETFILTER)?;
    let seq = ct_request(&mut sock, IPCTNL_MSG_CT_DELETE, libc::NLM_F_ACK as u16, libc::AF_INET as u8, &tuple)?;
    match sock.replies(seq, |_| {}) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(refused && table_full()),
        // ctnetlink without conntrack in the kernel at all
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(e),
    }
}
