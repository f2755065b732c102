//! Counting NAT forwards by their conntrack entries. A redirected connection has a
//! conntrack entry anyway, and with per-flow accounting (`nf_conntrack_acct`) the kernel
//! counts its packets and bytes there as it passes conntrack, so no chain of portd's has
//! to see the connection's packets after its first one. A forward's count is then:
//!
//! - what its flows that still have an entry received (original direction), read with
//!   one ctnetlink dump ([`open`]) when a status asks;
//! - plus what its flows whose entries were destroyed received, from the destroy events
//!   of ctnetlink, which [`Closed`] follows on a thread of its own while the plan holds
//!   NAT forwards, and which the daemon keeps across restarts.
//!
//! A flow belongs to the forward whose public port is its original destination port and
//! whose target is its reply source port ([`Key`]), as for [`crate::conntrack::forget`].
#![forbid(unsafe_code)]

use crate::conntrack::{ct_request, tracked_flows, tuple_ports, CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, IPCTNL_MSG_CT_GET};
use crate::netlink::{find, messages, Socket};
use portd_rules::model::{Family, Proto};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};

const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
/// `IPS_DST_NAT`: the flow's destination was rewritten (a redirect).
const IPS_DST_NAT: u32 = 1 << 5;
/// `NFNLGRP_CONNTRACK_DESTROY`
const GROUP_DESTROY: i32 = 3;
/// Where per-flow accounting is switched on, per network namespace.
pub const ACCT_SYSCTL: &str = "/proc/sys/net/netfilter/nf_conntrack_acct";

/// The forward a redirected flow belongs to: family, protocol, public port, target port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// address family of the flow
    pub family: Family,
    /// transport protocol
    pub proto: Proto,
    /// public port (the original destination port)
    pub port: u16,
    /// target port (the reply's source port)
    pub to: u16,
}

/// (packets, bytes) a client sent, per forward key.
pub type Counts = HashMap<Key, (u64, u64)>;

/// Turns per-flow accounting on in this network namespace; true when it was off. Flows
/// that began while it was off carry no counters (they count nothing).
pub fn account() -> io::Result<bool> {
    if std::fs::read_to_string(ACCT_SYSCTL)?.trim() != "0" {
        return Ok(false);
    }
    std::fs::write(ACCT_SYSCTL, "1")?;
    Ok(true)
}

/// One ctnetlink entry (`af` and the attributes after its `nfgenmsg`): its forward key
/// and what its original direction carried, if it was redirected and is accounted.
fn entry(af: u8, attrs: &[u8]) -> Option<(Key, (u64, u64))> {
    let family = match i32::from(af) {
        libc::AF_INET => Family::Ipv4,
        libc::AF_INET6 => Family::Ipv6,
        _ => return None,
    };
    let status = find(attrs, CTA_STATUS).and_then(|v| v.get(..4))?;
    if u32::from_be_bytes([status[0], status[1], status[2], status[3]]) & IPS_DST_NAT == 0 {
        return None;
    }
    let (num, _, port) = tuple_ports(find(attrs, CTA_TUPLE_ORIG)?)?;
    let (_, to, _) = tuple_ports(find(attrs, CTA_TUPLE_REPLY)?)?;
    let proto = match i32::from(num) {
        libc::IPPROTO_TCP => Proto::Tcp,
        libc::IPPROTO_UDP => Proto::Udp,
        _ => return None,
    };
    let c = find(attrs, CTA_COUNTERS_ORIG)?;
    let be64 = |ty| find(c, ty).and_then(|v| v.get(..8)).and_then(|v| v.try_into().ok()).map(u64::from_be_bytes);
    Some((Key { family, proto, port, to }, (be64(CTA_COUNTERS_PACKETS)?, be64(CTA_COUNTERS_BYTES)?)))
}

fn add(counts: &mut Counts, key: Key, (p, b): (u64, u64)) {
    let c = counts.entry(key).or_insert((0, 0));
    *c = (c.0.saturating_add(p), c.1.saturating_add(b));
}

/// What the flows of `keys` that have a conntrack entry now received: one dump of the
/// namespace's entries (none when it tracks nothing or `keys` is empty).
pub fn open(keys: &HashSet<Key>) -> io::Result<Counts> {
    let mut counts = Counts::new();
    if keys.is_empty() || tracked_flows() == Some(0) {
        return Ok(counts);
    }
    let mut sock = Socket::open(libc::NETLINK_NETFILTER)?;
    let seq = ct_request(&mut sock, IPCTNL_MSG_CT_GET, libc::NLM_F_DUMP as u16, libc::AF_UNSPEC as u8, &[])?;
    sock.replies(seq, |m| {
        let af = m.body.first().copied().unwrap_or(0);
        if let Some((key, n)) = entry(af, m.body.get(4..).unwrap_or_default()) {
            if keys.contains(&key) {
                add(&mut counts, key, n);
            }
        }
    })?;
    Ok(counts)
}

/// What destroyed flows of the tracked keys received, from ctnetlink's destroy events.
#[derive(Default)]
struct Shared {
    /// the keys counted; events of other flows are left out
    tracked: HashSet<Key>,
    counts: Counts,
    /// datagrams of events the socket had no room for (their flows are not counted)
    lost: u64,
    /// counts changed since [`Closed::changed`] last said so
    dirty: bool,
}

/// Follows the destroy events of the namespace's conntrack entries while some key is
/// tracked, adding what each flow of a tracked key received to its count.
pub struct Closed {
    shared: Arc<Mutex<Shared>>,
    /// the event socket, opened with the first tracked key, and whether it listens now
    socket: Option<(Arc<Socket>, bool)>,
    /// why the events cannot be followed, said once
    failed: bool,
}

impl Closed {
    /// Nothing tracked yet; `restored` are counts kept from an earlier run.
    pub fn new(restored: Counts) -> Closed {
        let shared = Shared { counts: restored, ..Shared::default() };
        Closed { shared: Arc::new(Mutex::new(shared)), socket: None, failed: false }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts the flows of `keys` from now on: the counts of other keys go (a forward
    /// removed or retargeted starts over), accounting is switched on and the events are
    /// listened to while `keys` is not empty, and not listened to when it is.
    pub fn track(&mut self, keys: HashSet<Key>) {
        let any = !keys.is_empty();
        {
            let mut s = self.lock();
            s.counts.retain(|k, _| keys.contains(k));
            s.tracked = keys;
        }
        if any {
            match account() {
                Ok(true) => tracing::info!("per-flow conntrack accounting switched on ({ACCT_SYSCTL}): NAT forwards are counted by their flows"),
                Ok(false) => {}
                Err(e) => {
                    if !self.failed {
                        tracing::error!("cannot switch on per-flow conntrack accounting ({ACCT_SYSCTL}: {e}): NAT forwards count nothing");
                    }
                    self.failed = true;
                }
            }
        }
        if let Err(e) = self.listen(any) {
            if !self.failed {
                tracing::error!("cannot follow conntrack's destroy events ({e}): NAT forwards count open flows only");
            }
            self.failed = true;
        }
    }

    fn listen(&mut self, on: bool) -> io::Result<()> {
        if self.socket.is_none() {
            if !on {
                return Ok(());
            }
            let sock = Arc::new(Socket::open(libc::NETLINK_NETFILTER)?);
            // Room for bursts: each event is about 250 bytes.
            sock.set_recv_buffer(8 << 20)?;
            let (reader, shared) = (sock.clone(), self.shared.clone());
            std::thread::Builder::new().name("portd-flows".into()).spawn(move || follow(&reader, &shared))?;
            self.socket = Some((sock, false));
        }
        let Some((sock, listening)) = self.socket.as_mut() else { return Ok(()) };
        if *listening != on {
            let opt = if on { libc::NETLINK_ADD_MEMBERSHIP } else { libc::NETLINK_DROP_MEMBERSHIP };
            crate::netlink::setsockopt_int(&**sock, libc::SOL_NETLINK, opt, GROUP_DESTROY)?;
            *listening = on;
        }
        Ok(())
    }

    /// The tracked keys (what [`open`] reads).
    pub fn tracked(&self) -> HashSet<Key> {
        self.lock().tracked.clone()
    }

    /// What destroyed flows of each tracked key received.
    pub fn counts(&self) -> Counts {
        self.lock().counts.clone()
    }

    /// The counts, when they changed since the last call (for keeping them).
    pub fn changed(&self) -> Option<Counts> {
        let mut s = self.lock();
        std::mem::take(&mut s.dirty).then(|| s.counts.clone())
    }

    /// Event datagrams lost so far (the socket was full).
    pub fn lost(&self) -> u64 {
        self.lock().lost
    }
}

/// The event thread: adds each destroyed flow of a tracked key to its count.
fn follow(sock: &Socket, shared: &Mutex<Shared>) {
    let mut buf = vec![0u8; 1 << 16];
    let event = ((libc::NFNL_SUBSYS_CTNETLINK as u16) << 8) | IPCTNL_MSG_CT_DELETE;
    loop {
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
                s.lost += 1;
                if s.lost.is_power_of_two() {
                    tracing::warn!(
                        "conntrack destroy events were lost ({} times so far): NAT forwards' counters miss what those flows received",
                        s.lost
                    );
                }
                continue;
            }
            Err(e) => {
                tracing::error!("following conntrack's destroy events: {e}; NAT forwards count open flows only");
                return;
            }
        };
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        for m in messages(&buf[..n]) {
            if m.header.ty != event {
                continue;
            }
            let af = m.body.first().copied().unwrap_or(0);
            if let Some((key, c)) = entry(af, m.body.get(4..).unwrap_or_default()) {
                if s.tracked.contains(&key) {
                    add(&mut s.counts, key, c);
                    s.dirty = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::attr;

    fn ct(af: i32, status: u32, dport: u16, rsport: u16, counters: Option<(u64, u64)>) -> Vec<u8> {
        let proto = |s: u16, d: u16| {
            attr(
                2,
                &[attr(1, &[libc::IPPROTO_TCP as u8]), attr(2, &s.to_be_bytes()), attr(3, &d.to_be_bytes())].concat(),
            )
        };
        let mut v = [
            attr(CTA_TUPLE_ORIG, &proto(40000, dport)),
            attr(CTA_TUPLE_REPLY, &proto(rsport, 40000)),
            attr(CTA_STATUS, &status.to_be_bytes()),
        ]
        .concat();
        if let Some((p, b)) = counters {
            v.extend(attr(
                CTA_COUNTERS_ORIG,
                &[attr(CTA_COUNTERS_PACKETS, &p.to_be_bytes()), attr(CTA_COUNTERS_BYTES, &b.to_be_bytes())].concat(),
            ));
        }
        let _ = af;
        v
    }

    #[test]
    fn a_redirected_accounted_flow_is_its_forwards_and_nothing_else_is() {
        let key = Key { family: Family::Ipv4, proto: Proto::Tcp, port: 80, to: 8080 };
        let e = ct(libc::AF_INET, IPS_DST_NAT | 0x8, 80, 8080, Some((7, 420)));
        assert_eq!(entry(libc::AF_INET as u8, &e), Some((key, (7, 420))));
        let v6 = entry(libc::AF_INET6 as u8, &e).expect("v6");
        assert_eq!(v6.0.family, Family::Ipv6);
        // not redirected, not accounted, not IP
        assert_eq!(entry(libc::AF_INET as u8, &ct(libc::AF_INET, 0x8, 80, 8080, Some((7, 420)))), None);
        assert_eq!(entry(libc::AF_INET as u8, &ct(libc::AF_INET, IPS_DST_NAT, 80, 8080, None)), None);
        assert_eq!(entry(libc::AF_BRIDGE as u8, &e), None);
    }

    #[test]
    fn tracking_other_keys_drops_the_counts_of_the_old_ones() {
        let a = Key { family: Family::Ipv4, proto: Proto::Udp, port: 53, to: 5353 };
        let b = Key { to: 5354, ..a };
        let mut c = Closed::new(Counts::from([(a, (1, 2)), (b, (3, 4))]));
        c.lock().tracked = HashSet::from([a, b]);
        assert_eq!(c.counts().len(), 2);
        // (no listening: an empty set opens no socket)
        c.track(HashSet::new());
        assert!(c.counts().is_empty());
        assert!(c.socket.is_none());
        assert_eq!(c.changed(), None);
    }
}
