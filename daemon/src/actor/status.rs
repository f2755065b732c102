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
                        owner: owner.clone(),
                        forward: f.clone(),
                        mark: f.mark.unwrap_or(self.config.settings.mark),
                        packets: 0,
                        bytes: 0,
                        state: ForwardState::Suspended,
                        reason: Some(reason.to_string()),
                        dispatch: None,
                        listening: None,
                    });
                }
            }
        }
        let registered = self.steering.registered();
        PendingStatus {
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
}

impl PendingStatus {
    /// The status, given what the kernel holds (`None`: no table).
    pub fn status(self, obs: Option<&portd_kernel::nft::Observed>) -> Status {
        let in_sync = obs.is_some_and(|o| o.matches(&self.plan));
        let mut forwards: Vec<ForwardStatus> = self
            .plan
            .forwards
            .iter()
            .map(|p| {
                let (packets, bytes) = obs.and_then(|o| o.counters.get(&p.comment()).copied()).unwrap_or((0, 0));
                let protos = p.forward.proto.protos();
                let steered = self.plan.steer && protos.contains(&portd_rules::Proto::Tcp);
                let dispatch = match (steered, protos.len()) {
                    (true, 1) => "steer",
                    (true, _) => "steer+nat",
                    (false, _) => "nat",
                };
                let listening =
                    steered.then(|| p.forward.to.ports().all(|t| self.registered.get(&t).is_some_and(|n| *n > 0)));
                ForwardStatus {
                    dispatch: Some(dispatch.to_string()),
                    listening,
                    owner: p.owner.clone(),
                    forward: p.forward.clone(),
                    mark: p.mark,
                    packets,
                    bytes,
                    state: ForwardState::Active,
                    reason: None,
                }
            })
            .collect();
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
        }
    }
}
