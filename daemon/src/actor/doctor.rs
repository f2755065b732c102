//! `portctl doctor` on the actor's side: a snapshot of what only the actor knows (the
//! plan, suspensions, back-off), handed to a thread of its own that reads the
//! kernel and answers, so the actor stays responsive however large the host's ruleset.

#![forbid(unsafe_code)]

use super::Daemon;
use portd_rules::doctor::SelfState;
use portd_rules::proto::Response;
use std::time::Instant;
use tokio::sync::oneshot;

impl Daemon {
    /// Answers `doctor` from a thread of its own.
    pub(super) fn doctor(&mut self, reply: oneshot::Sender<Response>) {
        let suspended = self
            .eval
            .suspended
            .iter()
            .flat_map(|(owner, list)| list.iter().map(move |(name, r)| (format!("{owner}/{name}"), r.to_string())))
            .collect();
        let owner_uids = self
            .accounts
            .iter()
            .filter_map(|(o, a)| a.as_ref().map(|a| (o.clone(), a.uid)))
            .filter(|(_, uid)| *uid != 0)
            .collect();
        let snapshot = crate::doctor::Snapshot {
            forwards: self.plan.forwards.clone(),
            plan: self.plan.clone(),
            owner_uids,
            me: SelfState {
                // read by the doctor thread, off the actor
                in_sync: false,
                table: self.plan.table.clone(),
                backoff_hits: self.backoff.hits,
                standing_back_secs: self
                    .backoff
                    .deferred()
                    .map(|t| t.saturating_duration_since(Instant::now()).as_secs()),
                suspended,
            },
            dataplane_fallback: (self.config.settings.dispatch != portd_rules::Dispatch::Nat
                || self.config.settings.ownership != portd_rules::Ownership::Polled)
                .then(|| self.steering.reason().map(str::to_string))
                .flatten(),
        };
        crate::doctor::spawn(snapshot, reply);
    }
}
