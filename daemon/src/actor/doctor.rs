//! `portctl doctor` on the actor's side: the inputs only the actor knows (the
//! plan, suspensions, back-off), handed to a thread of its own that reads the
//! kernel and answers, so the actor stays responsive however large the host's ruleset.

#![forbid(unsafe_code)]

use super::Daemon;
use portd_rules::doctor::SelfState;
use portd_rules::proto::LegacyTables;
use std::time::Instant;
use tokio::sync::oneshot;

impl Daemon {
    /// Answers `doctor` from a thread of its own.
    /// `legacy_tables`: the loaded legacy iptables tables, as root's portctl saw them.
    pub(super) fn doctor(&mut self, legacy_tables: Option<LegacyTables>, reply: oneshot::Sender<super::Answer>) {
        let suspended = self
            .eval
            .suspended
            .iter()
            .flat_map(|(owner, list)| list.iter().map(move |(name, r)| (format!("{owner}/{name}"), r.to_string())))
            .collect();
        let owner_uids = self
            .accounts
            .iter()
            .filter_map(|(o, a)| a.as_ref().map(|a| (o.to_string(), a.uid)))
            .filter(|(_, uid)| *uid != 0)
            .collect();
        // In NAT mode, the command that turns steering on, when this host can steer.
        let steer_fix = match self.steering.could_steer() {
            Ok(()) if !self.steering.steers() => {
                let sed = format!("sed -i 's/^\\( *dispatch:\\).*/\\1 auto/' {}", self.config_path.display());
                // Under systemd, the unit's restart; the dispatch is chosen at start.
                Some(if std::env::var_os("INVOCATION_ID").is_some() {
                    format!("`{sed} && systemctl restart portd`")
                } else {
                    format!("`{sed}`, then restart portd")
                })
            }
            _ => None,
        };
        let inputs = crate::doctor::DoctorInputs {
            legacy_tables,
            dispatch: portd_rules::doctor::DispatchView { steer: self.plan.steer, steer_fix },
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
        crate::doctor::spawn(inputs, reply);
    }
}
