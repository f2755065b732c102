//! The BPF data plane as the actor drives it: whether TCP forwards are steered
//! (`settings.dispatch`) and target ports reserved in the kernel (`settings.ownership`),
//! decided once at start from the settings and what the kernel allows, and the data
//! plane's maps kept in step with every plan the kernel takes.

#![forbid(unsafe_code)]

use portd_kernel::bpf::{self, BindEvent, BpfError, Dataplane, Families, Reservation, SteerEntry, Watched};
use portd_rules::model::{FamilySel, Proto};
use portd_rules::plan::SYSTEM_OWNER;
use portd_rules::{Dispatch, Ownership, Plan, Settings};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The owner uid of a system forward's target: any process may serve it.
const ANY_UID: u32 = bpf::ANY_UID;

/// The default bpffs mount.
pub const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// The pin directory of `table` under the bpffs mount `bpffs`.
pub fn pin_dir(bpffs: &Path, table: &str) -> PathBuf {
    bpffs.join("portd").join(table)
}

/// What the data plane does in this run, and why it does less than the settings ask.
pub struct Steering {
    dp: Option<Dataplane>,
    /// Where the data plane is (or would be) pinned.
    pins: PathBuf,
    /// The bpffs mount it is pinned under.
    bpffs: PathBuf,
    steer: bool,
    kernel_ownership: bool,
    /// Why BPF is not used (the settings, or what the kernel or the unit lacks).
    reason: Option<String>,
    /// What the maps hold since the last sync, to skip syncs that change nothing.
    synced: Option<Wanted>,
    /// The target ports this run added to the namespace's `ip_local_reserved_ports`
    /// (those the operator had listed already are not ours to take out).
    local_reserved: BTreeSet<u16>,
    /// The reserved target ports at the last write of it.
    local_wanted: BTreeSet<u16>,
    /// Why `ip_local_reserved_ports` could not be written, logged once.
    local_reserved_error: Option<String>,
    /// When the maps were last read back (see [`MAPS_CHECK`]).
    maps_read: Instant,
}

/// How often the listener check reads the maps back and puts right what differs from
/// what portd wrote (an entry deleted or changed behind its back, say with bpftool);
/// `portctl reload` does it at once. Between two, a change costs only what it changes.
pub const MAPS_CHECK: Duration = Duration::from_secs(60);

#[derive(PartialEq, Eq, Default)]
struct Wanted {
    steer: Vec<SteerEntry>,
    reserved: Vec<Reservation>,
    watched: Vec<Watched>,
}

impl Steering {
    /// No data plane; `reason` says why.
    pub fn off(reason: impl Into<String>) -> Steering {
        Steering {
            dp: None,
            pins: PathBuf::new(),
            bpffs: PathBuf::new(),
            steer: false,
            kernel_ownership: false,
            reason: Some(reason.into()),
            synced: None,
            local_reserved: BTreeSet::new(),
            local_wanted: BTreeSet::new(),
            local_reserved_error: None,
            maps_read: Instant::now(),
        }
    }

    /// Detaches and unpins the data plane (a clean stop with `on_exit: remove`).
    pub fn remove(&mut self) {
        if self.dp.take().is_none() {
            return;
        }
        self.synced = None;
        self.reserve_local(BTreeSet::new());
        match Dataplane::remove_for(&self.pins, crate::actor::sys_uid_max()) {
            Ok(_) => tracing::info!("BPF data plane removed from {}", self.pins.display()),
            Err(e) => tracing::error!("removing the BPF data plane at {}: {e}", self.pins.display()),
        }
    }

    /// Loads (or re-opens the pinned) data plane when the settings want it and the
    /// kernel allows it. `steer` and `kernel` settings fail the start when it cannot run;
    /// `auto` falls back with the reason, which status, doctor and the metrics show.
    pub fn start(settings: &Settings, bpffs: &Path) -> anyhow::Result<Steering> {
        let pins = pin_dir(bpffs, &settings.table);
        if settings.dispatch == Dispatch::Nat && settings.ownership == Ownership::Polled {
            // A data plane left pinned by an earlier run with other settings would go on
            // steering: take it away.
            match Dataplane::remove_for(&pins, crate::actor::sys_uid_max()) {
                Ok(true) => tracing::info!(
                    "removed the BPF data plane pinned at {} (dispatch: nat, ownership: polled)",
                    pins.display()
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!("removing the BPF data plane pinned at {}: {e}", pins.display()),
            }
            return Ok(Steering {
                pins,
                bpffs: bpffs.to_owned(),
                ..Steering::off("settings.dispatch is nat and settings.ownership is polled")
            });
        }
        let opened = bpf::probe(bpffs)
            .map_err(|u| u.0)
            .and_then(|()| {
                bpf::can_create_map().map_err(|e| {
                    format!("the bpf system call fails ({e}): a seccomp filter refuses it (a container's: systemd-nspawn allows it with --system-call-filter=bpf)")
                })
            })
            .and_then(|()| Dataplane::open_for(&pins, crate::actor::sys_uid_max()).map_err(|e| e.to_string()));
        match opened {
            Ok(dp) => Ok(Steering {
                // What an earlier run added to ip_local_reserved_ports, ours to take out.
                local_reserved: dp.local_ports().unwrap_or_else(|e| {
                    tracing::warn!("reading which ports an earlier run added to ip_local_reserved_ports: {e}");
                    BTreeSet::new()
                }),
                dp: Some(dp),
                pins,
                bpffs: bpffs.to_owned(),
                steer: settings.dispatch != Dispatch::Nat,
                kernel_ownership: settings.ownership != Ownership::Polled,
                reason: None,
                synced: None,
                local_wanted: BTreeSet::new(),
                local_reserved_error: None,
                maps_read: Instant::now(),
            }),
            Err(reason) => {
                if settings.dispatch == Dispatch::Steer {
                    anyhow::bail!("settings.dispatch is steer, but the BPF data plane cannot run here: {reason}; use dispatch: auto or nat");
                }
                if settings.ownership == Ownership::Kernel {
                    anyhow::bail!("settings.ownership is kernel, but the BPF data plane cannot run here: {reason}; use ownership: auto or polled");
                }
                tracing::warn!("BPF data plane unavailable ({reason}): TCP forwards use NAT and target ports are checked by polling");
                Ok(Steering { pins, bpffs: bpffs.to_owned(), ..Steering::off(reason) })
            }
        }
    }

    /// Whether this process could steer (for doctor's fix in NAT mode): the data plane is
    /// loaded, or the probe passes and the bpf system call creates a map.
    pub fn could_steer(&self) -> Result<(), String> {
        if self.dp.is_some() {
            return Ok(());
        }
        if self.bpffs.as_os_str().is_empty() {
            return Err(self.reason.clone().unwrap_or_default());
        }
        bpf::probe(&self.bpffs).map_err(|u| u.0)?;
        bpf::can_create_map().map_err(|e| format!("the bpf system call: {e}"))
    }

    /// TCP forwards are steered.
    pub fn steers(&self) -> bool {
        self.steer
    }

    /// Target ports are reserved in the kernel.
    pub fn kernel_ownership(&self) -> bool {
        self.kernel_ownership
    }

    /// Why the data plane is not used, if it is not.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// A copy of the bind events' descriptor, for a thread that waits on it.
    pub fn events_fd(&self) -> Option<OwnedFd> {
        self.dp.as_ref().and_then(|d| d.events_fd().as_fd().try_clone_to_owned().ok())
    }

    /// Binds of watched public ports by other uids since the last call.
    pub fn drain_events(&mut self) -> Vec<BindEvent> {
        self.dp.as_mut().map(Dataplane::drain_events).unwrap_or_default()
    }

    /// Sockets registered per target port (empty unless TCP forwards are steered).
    pub fn registered(&self) -> BTreeMap<u16, usize> {
        self.dp.as_ref().filter(|_| self.steer).and_then(|d| d.registered().ok()).unwrap_or_default()
    }

    /// What the closed connections of each steered public port received, `(port, v6)` →
    /// (segments, payload bytes) (empty unless TCP forwards are steered).
    pub fn closed_counts(&self) -> portd_kernel::sockdiag::ConnCounts {
        let dp = self.dp.as_ref().filter(|_| self.steer);
        dp.and_then(|d| d.closed_counts().map_err(|e| tracing::debug!("reading steered counts: {e}")).ok())
            .unwrap_or_default()
    }

    /// Makes the next [`Steering::sync`] read the maps (and `ip_local_reserved_ports`)
    /// back and write what differs, even when the plan did not change.
    pub fn reread(&mut self) {
        self.synced = None;
        // ip_local_reserved_ports is read again too: entries of ours that the operator's
        // rewrite of it (`sysctl --system`) dropped are put back.
        self.local_wanted.clear();
        self.maps_read = Instant::now();
        if let Some(dp) = self.dp.as_mut() {
            dp.forget_written();
        }
    }

    /// True when the maps were last read back [`MAPS_CHECK`] ago or more.
    pub fn maps_check_due(&self) -> bool {
        self.dp.is_some() && self.maps_read.elapsed() >= MAPS_CHECK
    }

    /// Puts back detached programs and deleted pins.
    pub fn repair(&mut self) {
        if let Some(dp) = self.dp.as_mut() {
            match dp.repair() {
                Ok(r) if r.is_empty() => {}
                Ok(r) => tracing::warn!(
                    action = "repair",
                    "BPF data plane repaired: attached again {:?}, pinned again {:?}",
                    r.reattached,
                    r.repinned
                ),
                Err(e) => tracing::error!("repairing the BPF data plane: {e}"),
            }
        }
    }

    /// Makes the data plane's maps follow `plan`: every steered TCP forward's public
    /// ports to its targets, and, with kernel ownership, every user forward's target
    /// ports reserved for its uid and its public ports watched. `uid_of` gives the uid
    /// a user set is bound to.
    pub fn sync(
        &mut self,
        plan: &Plan,
        kept: &[(&str, &portd_rules::model::Forward)],
        uid_of: impl Fn(&str) -> Option<u32>,
    ) -> Result<(), BpfError> {
        let Some(dp) = self.dp.as_mut() else { return Ok(()) };
        let want = wanted(plan, kept, self.steer, self.kernel_ownership, uid_of);
        if self.synced.as_ref() == Some(&want) {
            return Ok(());
        }
        self.synced = None;
        dp.sync(&want.steer, &want.reserved, &want.watched)?;
        // users' public ports too: an automatic choice (sendto() or connect() without a
        // bind, listen() on port 0) is seen by no bind hook, and a UDP socket or a
        // connecting TCP socket on a public port takes the forward's clients that match it
        let ports = want.reserved.iter().map(|r| r.port).chain(want.watched.iter().map(|w| w.port)).collect();
        self.synced = Some(want);
        self.reserve_local(ports);
        Ok(())
    }

    /// Keeps reserved target ports and users' public ports out of automatic port
    /// selection (`bind` to port 0, UDP's implicit bind, `connect()` without a bind), which
    /// the bind hooks do not see: the namespace's `ip_local_reserved_ports` holds the
    /// operator's own entries and ours.
    fn reserve_local(&mut self, ports: BTreeSet<u16>) {
        if ports == self.local_wanted {
            return;
        }
        match bpf::reserve_local_ports(&self.local_reserved, &ports) {
            Ok(added) => {
                if let Some(dp) = self.dp.as_mut() {
                    if let Err(e) = dp.record_local_ports(&self.local_reserved, &added) {
                        tracing::warn!("recording which ports portd added to ip_local_reserved_ports: {e}; a restart may leave them there");
                    }
                }
                self.local_reserved = added;
                self.local_wanted = ports;
                self.local_reserved_error = None;
            }
            Err(e) => {
                let e = e.to_string();
                if self.local_reserved_error.as_deref() != Some(e.as_str()) {
                    tracing::warn!("keeping reserved target ports out of automatic port selection (ip_local_reserved_ports): {e}; a socket bound to port 0 may still land on one");
                }
                self.local_reserved_error = Some(e);
            }
        }
    }
}

fn bpf_proto(p: Proto) -> bpf::Proto {
    match p {
        Proto::Tcp => bpf::Proto::Tcp,
        Proto::Udp => bpf::Proto::Udp,
    }
}

/// The data plane's entries for `plan`, and the target reservations and watched public
/// ports of `kept`: user forwards suspended for now that keep their ports (an app
/// restarting while another uid's socket holds its target, a forward standing back for
/// a service on its public port), so no third uid takes their ports meanwhile. Duplicates (a public port
/// steered by a forward per family) keep the first in plan order.
fn wanted(
    plan: &Plan,
    kept: &[(&str, &portd_rules::model::Forward)],
    steer: bool,
    ownership: bool,
    uid_of: impl Fn(&str) -> Option<u32>,
) -> Wanted {
    let mut w = Wanted::default();
    let (mut steered, mut reserved, mut watched) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    // A user forward's claim for `uid`: its target reserved and its public port watched,
    // the first claim on each only.
    let mut claim = |w: &mut Wanted, proto: Proto, port: u16, target: u16, uid: u32| {
        if reserved.insert((proto, target)) {
            w.reserved.push(Reservation { proto: bpf_proto(proto), port: target, owner_uid: uid });
        }
        if watched.insert((proto, port)) {
            w.watched.push(Watched { proto: bpf_proto(proto), port, owner_uid: uid });
        }
    };
    for p in &plan.forwards {
        let user = p.owner != SYSTEM_OWNER;
        let uid = if user {
            match uid_of(&p.owner) {
                Some(u) => u,
                None => continue,
            }
        } else {
            ANY_UID
        };
        let f = &p.forward;
        let families = match f.family {
            FamilySel::Both => Families::BOTH,
            FamilySel::Ipv4 => Families { v4: true, v6: false },
            FamilySel::Ipv6 => Families { v4: false, v6: true },
        };
        for port in f.port.ports() {
            let target = f.target_of(port);
            for &proto in f.proto.protos() {
                if steer && proto == Proto::Tcp && steered.insert(port) {
                    w.steer.push(SteerEntry {
                        public_port: port,
                        target_port: target,
                        owner_uid: uid,
                        families,
                        local: f.local,
                    });
                }
                if user && ownership {
                    claim(&mut w, proto, port, target, uid);
                }
            }
        }
    }
    // A target port has one owner in the maps. A system forward the operator pointed at
    // a user forward's target is served by that user's app (the only uid that may bind
    // it); two users on one target (a state from before the policy refused it) keep the
    // first in plan order, and the other's entries are left out.
    let mut owner_of: BTreeMap<u16, u32> = BTreeMap::new();
    for e in w.steer.iter().filter(|e| e.owner_uid != ANY_UID) {
        owner_of.entry(e.target_port).or_insert(e.owner_uid);
    }
    w.steer.retain_mut(|e| match owner_of.get(&e.target_port) {
        Some(&uid) if e.owner_uid == ANY_UID => {
            e.owner_uid = uid;
            true
        }
        Some(&uid) => e.owner_uid == uid,
        None => true,
    });
    for (owner, f) in kept.iter().filter(|_| ownership) {
        let Some(uid) = uid_of(owner) else { continue };
        for port in f.port.ports() {
            for &proto in f.proto.protos() {
                // its public port too: no other user binds it while the forward waits
                claim(&mut w, proto, port, f.target_of(port), uid);
            }
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_rules::model::{Forward, PortRange, ProtoSel};

    #[test]
    fn system_forwards_steer_for_any_uid_and_user_forwards_reserve_their_targets() {
        let mut web = Forward::new("web", PortRange { start: 80, end: 81 }, PortRange { start: 8080, end: 8081 });
        web.proto = ProtoSel::Both;
        let sys = Forward::new("ssh", PortRange::single(22), PortRange::single(2222));
        let plan =
            portd_rules::plan::compile_dispatched("t", 1, true, &[("system", vec![&sys]), ("user:web", vec![&web])])
                .expect("compiles");
        let steered = |w: &Wanted| -> Vec<(u16, u16, u32)> {
            w.steer.iter().map(|s| (s.public_port, s.target_port, s.owner_uid)).collect()
        };
        let w = wanted(&plan, &[], true, true, |o| (o == "user:web").then_some(1000));
        assert_eq!(steered(&w), vec![(22, 2222, ANY_UID), (80, 8080, 1000), (81, 8081, 1000)]);
        assert_eq!(w.reserved.len(), 4, "both protocols of both target ports: {:?}", w.reserved);
        assert!(w.reserved.iter().all(|r| r.owner_uid == 1000 && (8080..=8081).contains(&r.port)));
        assert_eq!(w.watched.len(), 4);
        let nat = wanted(&plan, &[], false, false, |_| Some(1000));
        assert!(nat.steer.is_empty() && nat.reserved.is_empty() && nat.watched.is_empty());
        let gone = wanted(&plan, &[], true, true, |_| None);
        assert_eq!(gone.steer.len(), 1, "a user set without a uid gets nothing");
        // A suspended forward that keeps its ports keeps its target's reservation and its
        // public port's watch (no other user binds it meanwhile); it is not steered.
        let waiting = Forward::new("api", PortRange::single(82), PortRange::single(8082));
        let kept = wanted(&plan, &[("user:web", &waiting)], true, true, |o| (o == "user:web").then_some(1000));
        assert_eq!(kept.steer.len(), 3, "not steered while suspended");
        assert!(kept.reserved.iter().any(|r| r.port == 8082 && r.owner_uid == 1000), "{:?}", kept.reserved);
        assert_eq!(kept.watched.len(), 5);
        assert!(kept.watched.iter().any(|w| w.port == 82 && w.owner_uid == 1000), "{:?}", kept.watched);
        // A system forward pointed at the user's target is served by the user's app.
        let idle = Forward::new("idle", PortRange::single(90), PortRange::single(8080));
        let shared =
            portd_rules::plan::compile_dispatched("t", 1, true, &[("system", vec![&idle]), ("user:web", vec![&web])])
                .expect("compiles");
        let w = wanted(&shared, &[], true, true, |o| (o == "user:web").then_some(1000));
        assert_eq!(steered(&w), vec![(90, 8080, 1000), (80, 8080, 1000), (81, 8081, 1000)]);
    }
}
