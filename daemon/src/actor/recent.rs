//! Who held a port lately. A grant's `to` range lets its user reserve any target port in
//! it that is free, and a reserved port refuses every other account's bind, root's
//! included: a service's port in that range would become the user's in the seconds the
//! service restarts (an upgrade, a crash), and the service would then fail to come back
//! while the user's app took its clients. So a new forward may not take a target port
//! that a service's socket held within [`RECENT`]. Only system accounts' sockets are
//! remembered (root and uids up to `SYS_UID_MAX` of /etc/login.defs, 999 by default:
//! the accounts services run as), so that no user can keep a port from another by
//! listening on it for a moment; nor are ports of the ephemeral range
//! (`ip_local_port_range`), where every client's socket comes and goes.

#![forbid(unsafe_code)]

use portd_rules::model::PortRange;
use portd_rules::policy::Listeners;
use portd_rules::Proto;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a socket of another account keeps a port from new forwards after it is gone.
pub(super) const RECENT: Duration = Duration::from_secs(600);

/// The last time each uid was seen holding each port, for [`RECENT`].
#[derive(Debug)]
pub(super) struct RecentHolders {
    seen: BTreeMap<(Proto, u16), BTreeMap<u32, Instant>>,
    /// The namespace's ephemeral port range, not remembered.
    ephemeral: (u16, u16),
    /// The highest uid of a system account.
    sys_uid_max: u32,
}

impl Default for RecentHolders {
    fn default() -> Self {
        RecentHolders {
            seen: BTreeMap::new(),
            ephemeral: ephemeral_range().unwrap_or((32768, 60999)),
            sys_uid_max: super::accounts::sys_uid_max(),
        }
    }
}

/// `net.ipv4.ip_local_port_range` of the calling thread's namespace (it covers IPv6 too).
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|p| p.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

impl RecentHolders {
    /// The highest uid of a system account.
    pub(super) fn sys_uid_max(&self) -> u32 {
        self.sys_uid_max
    }

    /// Records the sockets of `l` as seen at `now`, and forgets what is older than [`RECENT`].
    pub(super) fn record(&mut self, l: &Listeners, now: Instant) {
        let (lo, hi) = self.ephemeral;
        for (proto, port, uid) in l.sockets() {
            if uid <= self.sys_uid_max && !(lo..=hi).contains(&port) {
                self.seen.entry((proto, port)).or_default().insert(uid, now);
            }
        }
        self.seen.retain(|_, uids| {
            uids.retain(|_, at| now.saturating_duration_since(*at) < RECENT);
            !uids.is_empty()
        });
    }

    /// A port of `range`/`proto` that a uid other than `uid` held within [`RECENT`] of
    /// `now`: the port, that uid, and how long ago.
    pub(super) fn foreign(
        &self,
        proto: Proto,
        range: PortRange,
        uid: u32,
        now: Instant,
    ) -> Option<(u16, u32, Duration)> {
        self.seen.range((proto, range.start)..=(proto, range.end)).find_map(|((_, port), uids)| {
            uids.iter().find_map(|(u, at)| {
                let ago = now.saturating_duration_since(*at);
                (*u != uid && ago < RECENT).then_some((*port, *u, ago))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_other_accounts_for_a_while_and_not_the_ephemeral_range() {
        let mut r = RecentHolders { seen: BTreeMap::new(), ephemeral: (32768, 60999), sys_uid_max: 999 };
        let t0 = Instant::now();
        let mut l = Listeners::default();
        l.insert(Proto::Tcp, 5432, 104);
        l.insert(Proto::Udp, 40000, 0);
        // A user's socket keeps nothing from anyone.
        l.insert(Proto::Tcp, 5433, 1002);
        r.record(&l, t0);
        r.record(&Listeners::default(), t0 + Duration::from_secs(5));
        let range = PortRange::parse("5000-6000").expect("range");
        let later = t0 + Duration::from_secs(30);
        assert_eq!(r.foreign(Proto::Tcp, range, 1001, later), Some((5432, 104, Duration::from_secs(30))));
        assert_eq!(r.foreign(Proto::Tcp, range, 104, later), None, "its own port");
        assert_eq!(r.foreign(Proto::Tcp, PortRange::single(5433), 1001, later), None, "a user's");
        assert_eq!(r.foreign(Proto::Udp, range, 1001, later), None, "another protocol");
        assert_eq!(r.foreign(Proto::Udp, PortRange::single(40000), 1001, later), None, "ephemeral");
        let gone = t0 + RECENT + Duration::from_secs(1);
        assert_eq!(r.foreign(Proto::Tcp, range, 1001, gone), None, "forgotten after RECENT");
        r.record(&Listeners::default(), gone);
        assert!(r.seen.is_empty());
    }
}
