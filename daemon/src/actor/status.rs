//! Reads: the caller's grants, and the actor's part of a status (`PendingStatus`).

#![forbid(unsafe_code)]

use super::{accounts, Caller, Daemon, TRIM_AFTER_OBJECTS};
use portd_rules::policy::{self};
use portd_rules::proto::{ForwardState, ForwardStatus, GrantInfo, GrantsView, Status};
use portd_rules::Plan;

impl Daemon {
    /// The grants that apply to the caller, as it may read them.
    pub(super) fn grants_of(&self, caller: &Caller) -> GrantsView {
        let account = accounts::lookup(&caller.user);
        let groups = account.as_ref().map(|a| a.groups.clone()).unwrap_or_default();
        let mine: Vec<&portd_rules::Grant> = match &account {
            Some(a) => policy::grants_of(&self.config.grants, a),
            None => Vec::new(),
        };
        let default_mark = self.config.settings.mark;
        let grants = mine
            .into_iter()
            .map(|g| GrantInfo {
                via: match &g.subject {
                    portd_rules::GrantSubject::User(u) => portd_rules::owner::Owner::user_key(u),
                    portd_rules::GrantSubject::Group(g) => format!("group:{g}"),
                },
                ports: g.ports.iter().map(ToString::to_string).collect(),
                to: g.to.iter().map(ToString::to_string).collect(),
                protect: g.protect,
                local: g.local,
                marks: match &g.marks {
                    None if default_mark == 0 => vec!["0".into()],
                    None => vec![format!("{default_mark:#x}"), "0".into()],
                    Some(l) => l.iter().map(ToString::to_string).collect(),
                },
                max_forwards: g.max_forwards,
            })
            .collect();
        GrantsView { user: caller.user.clone(), groups, unrestricted: caller.uid == 0, default_mark, grants }
    }

    /// What a status needs from the actor: the plan and the suspended forwards. Cheap; the
    /// kernel is read by the caller.
    pub(super) fn pending_status(&mut self) -> PendingStatus {
        if self.plan.element_count() > TRIM_AFTER_OBJECTS {
            self.trim_soon();
        }
        let mut suspended = Vec::new();
        for (owner, list) in &self.eval.suspended {
            let Some(set) = self.users.get(owner) else { continue };
            for (name, reason) in list {
                if let Some(f) = set.forwards.iter().find(|f| f.name == *name) {
                    suspended.push(ForwardStatus {
                        owner: owner.to_string(),
                        forward: f.clone(),
                        // (a steered TCP forward without a mark of its own marks nothing)
                        mark: if self.steering.steers()
                            && f.mark.is_none()
                            && f.proto.protos() == [portd_rules::Proto::Tcp]
                        {
                            0
                        } else {
                            f.mark.unwrap_or(self.config.settings.mark)
                        },
                        packets: 0,
                        bytes: 0,
                        state: ForwardState::Suspended,
                        reason: Some(reason.to_string()),
                        dispatch: None,
                        listening: None,
                        listeners: Vec::new(),
                    });
                }
            }
        }
        let registered = self.steering.registered();
        // Before the caller reads the open connections: a connection that closes in
        // between is in neither (counted at the next status), never in both.
        let closed = self.steering.closed_counts();
        PendingStatus {
            closed,
            plan: self.plan.clone(),
            suspended,
            repairs: self.repairs,
            dispatch: if self.steering.steers() { "steer" } else { "nat" },
            ownership: if self.steering.kernel_ownership() { "kernel" } else { "polled" },
            dataplane_reason: self.steering.reason().map(str::to_string),
            registered,
        }
    }
}

/// A status waiting for the kernel's part: the actor's part (the plan, suspended
/// forwards, repairs, the data plane); read the kernel with it, then call
/// [`PendingStatus::status`].
pub struct PendingStatus {
    /// The plan the kernel should hold.
    pub plan: Plan,
    /// Forwards kept out of the kernel, with their reasons.
    pub suspended: Vec<ForwardStatus>,
    /// Repairs so far.
    pub repairs: u64,
    /// `steer` or `nat`.
    pub dispatch: &'static str,
    /// `kernel` or `polled`.
    pub ownership: &'static str,
    /// Why the BPF data plane is not used.
    pub dataplane_reason: Option<String>,
    /// Sockets registered per steered target port.
    pub registered: std::collections::BTreeMap<u16, usize>,
    /// What the closed connections of steered public ports received, `(port, v6)` →
    /// (segments, payload bytes).
    pub closed: portd_kernel::sockdiag::ConnCounts,
}

/// What the counters of each steered forward showed last, by element comment: a
/// forward's count is read in two steps (closed connections, then open ones), so a
/// connection that closes between them is missing from one status; its forward shows
/// the higher count it showed before rather than going back. Its count starts over
/// (as its elements' counters would) when it is forgotten ([`forget_shown`]: it left the
/// plan, or changed) and whenever its closed connections' total is lower than the last
/// status read (the data plane started the port's counts over: the port steered to
/// another target or owner, the map pinned anew; or a status from before a change
/// recorded it after the change).
static SHOWN: std::sync::Mutex<Option<std::collections::HashMap<String, Shown>>> = std::sync::Mutex::new(None);

/// One forward's entry in [`SHOWN`].
#[derive(Debug, Clone, Copy, Default)]
struct Shown {
    /// Its closed connections' (packets, bytes) as read.
    closed: (u64, u64),
    /// What it showed.
    shown: (u64, u64),
}

/// Forgets what these forwards showed (they leave the plan, or change).
pub(super) fn forget_shown<'a>(gone: impl Iterator<Item = &'a portd_rules::plan::PlacedForward>) {
    let mut shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(shown) = shown.as_mut() {
        for p in gone {
            shown.remove(&p.comment());
        }
    }
}

impl PendingStatus {
    /// The sockets on target ports, for [`PendingStatus::status`]: one read of the socket
    /// tables (NETLINK_SOCK_DIAG) for the whole status, none when no forward is active;
    /// `None` when it fails (then `listening` stays unknown).
    pub fn sockets(&self) -> Option<Vec<portd_kernel::sockdiag::Held>> {
        if self.plan.forwards.is_empty() {
            return Some(Vec::new());
        }
        portd_kernel::sockdiag::held().map_err(|e| tracing::debug!("reading listening sockets: {e}")).ok()
    }

    /// What the open connections of the socket-counted steered forwards have received,
    /// for [`PendingStatus::status`] (one sock_diag dump; `None` when it fails).
    pub fn connections(&self) -> Option<portd_kernel::sockdiag::OpenCounts> {
        let ports: std::collections::BTreeSet<u16> = self
            .plan
            .forwards
            .iter()
            .filter(|p| self.plan.counted_by_sockets(p))
            .flat_map(|p| p.forward.port.ports())
            .collect();
        portd_kernel::sockdiag::connections(&ports).map_err(|e| tracing::debug!("reading connections: {e}")).ok()
    }

    /// The status, given what the kernel holds (`None`: no table), the sockets on
    /// target ports (`None`: unknown) and what open steered connections received
    /// ([`PendingStatus::connections`]).
    pub fn status(
        self,
        obs: Option<&portd_kernel::nft::Observed>,
        sockets: Option<&[portd_kernel::sockdiag::Held]>,
        open: Option<&portd_kernel::sockdiag::OpenCounts>,
    ) -> Status {
        // The sockets by protocol and port, and a bit per (protocol, port) that has any, so
        // that the many target ports nothing holds cost a bit test, not a hash lookup.
        let mut by_port = std::collections::HashMap::<_, Vec<_>>::new();
        let mut held = vec![0u64; 2 * 65536 / 64];
        let bit = |proto, port: u16| usize::from(proto == portd_rules::Proto::Udp) * 65536 + usize::from(port);
        for h in sockets.unwrap_or_default() {
            let l =
                portd_rules::doctor::Listening { uid: h.uid, addr: h.addr, v6only: h.v6only, listening: h.listening };
            by_port.entry((h.proto, h.port)).or_default().push(l);
            held[bit(h.proto, h.port) / 64] |= 1 << (bit(h.proto, h.port) % 64);
        }
        let mut shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner());
        let shown = shown.get_or_insert_with(Default::default);
        let mut seen = std::collections::HashSet::new();
        let mut count = |p: &portd_rules::plan::PlacedForward| {
            let comment = p.comment();
            let (mut packets, mut bytes) = obs.and_then(|o| o.counters.get(&comment).copied()).unwrap_or((0, 0));
            if !self.plan.counted_by_sockets(p) {
                return (packets, bytes);
            }
            let mut closed = (0, 0);
            for port in p.forward.port.ports() {
                // An open connection on a steered public port is the forward's when its
                // socket has the uid of a socket listening on the target (an accepted
                // connection has its listener's): another uid's socket that holds the
                // public port (a client bound to it, a listener on it that got what the
                // forward does not steer) is not.
                let on_target = by_port.get(&(portd_rules::Proto::Tcp, p.forward.target_of(port)));
                let listens_as = |uid: &u32| on_target.is_some_and(|v| v.iter().any(|l| l.listening && l.uid == *uid));
                for fam in p.forward.family.families() {
                    let v6 = *fam == portd_rules::Family::Ipv6;
                    let (n, b) = self.closed.get(&(port, v6)).copied().unwrap_or((0, 0));
                    packets += n;
                    bytes += b;
                    closed = (closed.0 + n, closed.1 + b);
                    let range = (port, v6, 0)..=(port, v6, u32::MAX);
                    for ((_, _, uid), (n, b)) in open.into_iter().flat_map(|m| m.range(range.clone())) {
                        if listens_as(uid) {
                            packets += n;
                            bytes += b;
                        }
                    }
                }
            }
            let last = shown.entry(comment.clone()).or_default();
            let reset = closed.0 < last.closed.0 || closed.1 < last.closed.1;
            last.shown = if reset { (packets, bytes) } else { (last.shown.0.max(packets), last.shown.1.max(bytes)) };
            last.closed = closed;
            seen.insert(comment);
            last.shown
        };
        let on_port = |proto, port| {
            let b = bit(proto, port);
            if held[b / 64] & (1 << (b % 64)) == 0 {
                return Vec::new();
            }
            by_port.get(&(proto, port)).cloned().unwrap_or_default()
        };
        let on_port = sockets.map(|_| on_port);
        let in_sync = obs.is_some_and(|o| o.matches(&self.plan));
        let mut forwards: Vec<ForwardStatus> = self
            .plan
            .forwards
            .iter()
            .map(|p| {
                let (packets, bytes) = count(p);
                let protos = p.forward.proto.protos();
                let steered = self.plan.steer && protos.contains(&portd_rules::Proto::Tcp);
                let dispatch = match (steered, protos.len()) {
                    (true, 1) => "steer",
                    (true, _) => "steer+nat",
                    (false, _) => "nat",
                };
                let registered = |t: u16| self.registered.get(&t).is_some_and(|n| *n > 0);
                let target = portd_rules::listening::target(p, steered, registered, on_port);
                ForwardStatus {
                    dispatch: Some(dispatch.to_string()),
                    // Steered TCP alone needs no socket table.
                    listening: (sockets.is_some() || (steered && protos.len() == 1)).then_some(target.listening),
                    listeners: target.addresses,
                    owner: p.owner.clone(),
                    forward: p.forward.clone(),
                    mark: self.plan.packet_mark(p),
                    packets,
                    bytes,
                    state: ForwardState::Active,
                    reason: None,
                }
            })
            .collect();
        shown.retain(|c, _| seen.contains(c));
        forwards.extend(self.suspended);
        Status {
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            table: self.plan.table.clone(),
            in_sync,
            repairs: self.repairs,
            forwards,
            dispatch: self.dispatch.to_string(),
            ownership: self.ownership.to_string(),
            dataplane_reason: self.dataplane_reason,
            untracked: self.plan.steer.then(|| self.plan.untracks()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_kernel::sockdiag::{Held, OpenCounts};
    use portd_rules::model::{Forward, PortRange};
    use portd_rules::Proto;

    fn pending(forwards: &[Forward], closed: portd_kernel::sockdiag::ConnCounts) -> PendingStatus {
        let plan = portd_rules::plan::compile_dispatched("t", 1, true, &[("system", forwards.iter().collect())])
            .expect("compiles");
        PendingStatus {
            plan,
            suspended: Vec::new(),
            repairs: 0,
            dispatch: "steer",
            ownership: "kernel",
            dataplane_reason: None,
            registered: Default::default(),
            closed,
        }
    }

    fn listener(port: u16, uid: u32) -> Held {
        let addr = std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        Held { proto: Proto::Tcp, port, uid, addr, v6only: false, listening: true }
    }

    fn counts(s: &Status, name: &str) -> (u64, u64) {
        let f = s.forwards.iter().find(|f| f.forward.name == name).expect("forward");
        (f.packets, f.bytes)
    }

    /// A steered forward counts its closed connections of the families it steers and its
    /// open ones whose socket has the uid of a listener on its target: a socket of
    /// another uid on the public port (a client bound to it) is not the forward's; its
    /// count never goes back when a connection is in neither read, and starts over once
    /// the forward is forgotten.
    #[test]
    fn a_steered_forward_counts_its_own_sockets_only_and_never_goes_back() {
        let r = |p| PortRange { start: p, end: p };
        let web = Forward::new("web-counted", r(8000), r(8080));
        let closed = [((8000, false), (10, 1000)), ((8000, true), (5, 500)), ((9000, false), (99, 9999))].into();
        let sockets = [listener(8080, 1001), listener(9999, 1002)];
        let open: OpenCounts =
            [((8000, false, 1001), (3, 300)), ((8000, true, 1001), (2, 200)), ((8000, false, 1002), (70, 70_000))]
                .into();
        let s = pending(std::slice::from_ref(&web), closed).status(None, Some(&sockets), Some(&open));
        assert_eq!(counts(&s, "web-counted"), (20, 2000), "closed of both families + the listener uid's open ones");
        assert_eq!(s.forwards[0].mark, 0, "steered, no mark of its own: its packets get none");
        // A connection that closed between the two reads is in neither: the count stays.
        let closed = [((8000, false), (10, 1000)), ((8000, true), (5, 500))].into();
        let s = pending(std::slice::from_ref(&web), closed).status(None, Some(&sockets), Some(&open));
        assert_eq!(counts(&s, "web-counted"), (20, 2000));
        // The data plane started the port's counts over (another owner): so does the
        // forward's count, although the forward itself is the same.
        let closed = [((8000, false), (1, 100))].into();
        let s = pending(std::slice::from_ref(&web), closed).status(None, Some(&sockets), None);
        assert_eq!(counts(&s, "web-counted"), (1, 100));
        // Forgotten (the forward left the plan or changed): the count starts over.
        let placed = portd_rules::plan::PlacedForward { owner: "system".into(), forward: web.clone(), mark: 1 };
        forget_shown(std::iter::once(&placed));
        let s = pending(std::slice::from_ref(&web), Default::default()).status(None, Some(&sockets), None);
        assert_eq!(counts(&s, "web-counted"), (0, 0));
        // Without the listener table, open connections cannot be told apart: none counts.
        let s = pending(std::slice::from_ref(&web), Default::default()).status(None, None, Some(&open));
        assert_eq!(counts(&s, "web-counted"), (0, 0));
    }
}
