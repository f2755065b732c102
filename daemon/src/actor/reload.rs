//! Reloading the config: the new grants and system set judged, placed and committed.

#![forbid(unsafe_code)]

use super::change::with_warnings;
use super::{accounts, Caller, Daemon, Error, LOG_FORWARDS};
use crate::notify;
use portd_rules::policy::{self};
use portd_rules::proto::{Body, ConfigText, Suspension};
use portd_rules::{parse_config, Plan};

impl Daemon {
    /// Re-reads the config file and puts its rules into the kernel; with `dry_run`, only
    /// reports what it would add, remove and suspend, and changes nothing. The outcome of
    /// a real reload goes to the metrics.
    /// `given`: a config to preview instead of the file (with `dry_run` only).
    pub(super) fn reload(
        &mut self,
        caller: Option<&Caller>,
        dry_run: bool,
        given: Option<ConfigText>,
    ) -> Result<Body, Error> {
        let r = self.reload_config(caller, dry_run, given);
        if !dry_run {
            self.published.metrics.reloaded(r.is_ok());
        }
        r
    }

    fn reload_config(
        &mut self,
        caller: Option<&Caller>,
        dry_run: bool,
        given: Option<ConfigText>,
    ) -> Result<Body, Error> {
        let (file, text) = match given {
            Some(c) => (c.file, c.text),
            None => (
                self.config_path.display().to_string(),
                std::fs::read_to_string(&self.config_path)
                    .map_err(|e| Error::invalid(format!("{}: {e}", self.config_path.display())))?,
            ),
        };
        let config = parse_config(&file, &text).map_err(Error::InvalidConfig)?;
        // A grant of an unknown account is refused at start; a running portd keeps going
        // (a user deleted since is how forwards get suspended) and says so.
        let warnings: Vec<String> =
            crate::check::unknown_accounts(&file, &text, &config).0.iter().map(|d| d.to_string()).collect();
        let config = super::effective(config, &self.overrides);
        if config.settings.table != self.config.settings.table
            || config.settings.state_dir != self.config.settings.state_dir
            || config.settings.socket != self.config.settings.socket
            || config.settings.metrics != self.config.settings.metrics
            || config.settings.dispatch != self.config.settings.dispatch
            || config.settings.ownership != self.config.settings.ownership
        {
            return Err(Error::invalid(
                "settings.table, settings.state_dir, settings.socket, settings.metrics, settings.dispatch and settings.ownership only change on restart; revert them or restart portd",
            ));
        }
        let old_config = std::mem::replace(&mut self.config, config);
        let old_accounts = std::mem::replace(&mut self.accounts, accounts::lookup_owners(self.users.keys()));
        let old_listeners = if dry_run { Some(self.listeners.clone()) } else { None };
        self.refresh_listeners();
        let before = std::mem::take(&mut self.eval);
        self.eval = self.evaluate(&before);
        let undo = |d: &mut Daemon, before: policy::Evaluation| {
            d.config = old_config.clone();
            d.accounts = old_accounts.clone();
            d.eval = before;
        };
        let plan = match self.desired_plan() {
            Ok(p) => p,
            Err(c) => {
                undo(self, before);
                return Err(Error::Conflict(c));
            }
        };
        let delta = Plan::diff(&self.plan, &plan);
        // The delta's summary also says which forwards leave the plan: the answer's copy
        // lists suspended forwards apart.
        let mut shown = delta.summary.clone().with_packet_marks(&plan);
        // (for the log, before the suspended forwards leave it)
        let log_line = shown.log_line(LOG_FORWARDS);
        let suspended = self.suspensions(&before, &mut shown);
        let answer = |summary| {
            let mut body = with_warnings(Body::changed(summary, dry_run), warnings.clone());
            if let Body::Changed { suspended: s, .. } = &mut body {
                *s = suspended.clone();
            }
            body
        };
        if dry_run {
            let body = answer(shown);
            undo(self, before);
            if let Some(l) = old_listeners {
                self.listeners = l;
            }
            return Ok(body);
        }
        self.claim_resumed(&plan);
        if let Err(source) = self.commit(&delta, || std::borrow::Cow::Borrowed(&plan)) {
            undo(self, before);
            self.sync_dataplane();
            return Err(Error::KernelRefused { what: "the new config", source });
        }
        let by = caller.map_or("SIGHUP".to_string(), |c| c.who());
        tracing::info!(
            uid = caller.map(|c| c.uid),
            user = caller.map(|c| c.user.as_str()),
            action = "reload",
            "reloaded {} (by {by}): {}",
            self.config_path.display(),
            log_line
        );
        for w in &warnings {
            tracing::warn!("{w}");
        }
        self.log_transitions(&before, "by the reload");
        self.publish();
        self.forget_flows(portd_kernel::conntrack::stale_mappings(&self.plan, &plan), None);
        self.conntrack.fresh(portd_kernel::conntrack::fresh_mappings(&self.plan, &plan));
        self.plan = plan;
        // A reload also puts right what was changed in the maps behind portd's back.
        self.steering.reread();
        self.sync_dataplane();
        self.schedule_poll();
        notify::status(&self.status_line());
        Ok(answer(shown))
    }

    /// The forwards the current evaluation suspends that `before` did not, with their
    /// reasons; they leave `summary.removed` (an answer's copy, never a delta's), which
    /// then lists only forwards that are gone.
    pub(super) fn suspensions(
        &self,
        before: &policy::Evaluation,
        summary: &mut portd_rules::plan::Summary,
    ) -> Vec<Suspension> {
        let (now, _) = self.eval.transitions(before);
        let mut out = Vec::new();
        for (owner, name, reason) in now {
            let Some(f) = self.users.get(owner).and_then(|s| s.forwards.iter().find(|f| f.name == name)) else {
                continue;
            };
            summary.removed.retain(|p| !(p.owner == owner.as_str() && p.forward.name == name));
            out.push(Suspension { owner: owner.to_string(), forward: f.clone(), reason: reason.to_string() });
        }
        out
    }
}
