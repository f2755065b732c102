//! The actor's answers to requests: owner resolution, changes of one owner's set (judged
//! by the policy core, kernel first, then the state file, then the answer), reload,
//! status and export.

#![forbid(unsafe_code)]

use super::{accounts, err, Caller, Daemon, Failure, Op, LOG_FORWARDS, TRIM_AFTER_OBJECTS};
use crate::notify;
use crate::state::Record;
use portd_rules::plan::PlacedForward;
use portd_rules::policy::{self, Account, Owner, Reason, UserSet};
use portd_rules::proto::{
    Body, Command, ErrorKind, ForwardState, ForwardStatus, GrantInfo, GrantsView, Status, Suspension,
};
use portd_rules::{parse_config, Forward, ListenerCheck, Plan};
use std::time::Instant;

/// A change of one owner's set.
pub(super) enum Change {
    /// The whole set (`portctl apply`).
    Replace(Vec<Forward>),
    /// One more forward (`portctl add`).
    Add(Forward),
    /// One forward fewer, by name (`portctl remove`).
    Remove(String),
}

/// A file's located problems as a refusal.
fn invalid(d: portd_rules::Diagnostics) -> Failure {
    (ErrorKind::Invalid, d.0.iter().map(|d| d.to_string()).collect())
}

/// Adds warnings to a `Changed` answer.
fn with_warnings(mut body: Body, w: Vec<String>) -> Body {
    if let Body::Changed { warnings, .. } = &mut body {
        *warnings = w;
    }
    body
}

/// The names of the forwards a change touched, for the journal's PORTD_FORWARD: one name
/// when one forward changed (so `journalctl PORTD_FORWARD=web` finds it), else the
/// first [`LOG_FORWARDS`] joined by commas.
fn changed_names(s: &portd_rules::plan::Summary) -> String {
    let names: Vec<&str> = s
        .added
        .iter()
        .chain(&s.removed)
        .chain(s.changed.iter().map(|(_, n)| n))
        .map(|p| p.forward.name.as_str())
        .collect();
    let mut out = names.iter().take(LOG_FORWARDS).copied().collect::<Vec<_>>().join(",");
    if names.len() > LOG_FORWARDS {
        out.push_str(&format!(",+{}", names.len() - LOG_FORWARDS));
    }
    out
}

impl Daemon {
    pub(super) fn handle(&mut self, caller: &Caller, op: Op) -> Result<Body, Failure> {
        let command = match op {
            Op::Apply { forwards, dry_run, owner } => {
                let (owner, account) = self.target_owner(caller, owner, forwards.is_empty())?;
                return self.change(caller, &owner, &account, Change::Replace(forwards), dry_run);
            }
            Op::Command(c) => c,
        };
        match command {
            Command::Status | Command::Metrics => self.status(),
            Command::Apply { .. } => Err(err(ErrorKind::Protocol, "apply reaches the daemon's core parsed")),
            Command::Add { forward, owner, dry_run, replace } => {
                let (owner, account) = self.target_owner(caller, owner, false)?;
                let existing = self.users.get(&owner).and_then(|s| s.forwards.iter().find(|f| f.name == forward.name));
                if let Some(old) = existing {
                    // Already there as given: done, as ufw and firewall-cmd treat it.
                    if *old == forward {
                        return Ok(Body::changed(Default::default(), dry_run));
                    }
                    if !replace {
                        return Err(err(
                            ErrorKind::Invalid,
                            format!(
                                "{owner} already has a forward `{}` with other settings; use `portctl add --replace` to change it, or remove it first",
                                forward.name
                            ),
                        ));
                    }
                }
                // Checked alone; its overlap with the rest of the set (and other owners) is
                // found by change_owner through the keys it claims.
                let problems = policy::check_definition(&forward);
                if !problems.is_empty() {
                    return Err((ErrorKind::Invalid, problems.into_iter().map(|(f, m)| format!("{f}: {m}")).collect()));
                }
                self.change(caller, &owner, &account, Change::Add(forward), dry_run)
            }
            Command::Remove { name, owner, dry_run, if_exists } => {
                let (owner, account) = self.target_owner(caller, owner, true)?;
                if !self.users.get(&owner).is_some_and(|s| s.forwards.iter().any(|f| f.name == name)) {
                    if if_exists {
                        return Ok(Body::changed(Default::default(), dry_run));
                    }
                    return Err(err(
                        ErrorKind::Invalid,
                        format!("{owner} has no forward `{name}` (`--if-exists` makes that no error)"),
                    ));
                }
                self.change(caller, &owner, &account, Change::Remove(name), dry_run)
            }
            Command::Export { owner } => {
                let owner = match owner {
                    None => caller.owner(),
                    Some(o) => Owner::parse(&o).map_err(|e| err(ErrorKind::Invalid, e))?.to_string(),
                };
                let forwards = if owner == policy::SYSTEM {
                    self.config.forwards.clone()
                } else {
                    self.users.get(&owner).map(|s| s.forwards.clone()).unwrap_or_default()
                };
                Ok(Body::Export { owner, forwards })
            }
            Command::Doctor => Err(err(ErrorKind::Protocol, "doctor is answered by a thread of its own")),
            Command::Reload { dry_run } => {
                if caller.uid != 0 {
                    return Err(err(ErrorKind::Denied, "only root may reload the config (or send SIGHUP to portd)"));
                }
                self.reload(Some(caller), dry_run)
            }
            Command::Grants => Ok(Body::Grants(self.grants_of(caller))),
        }
    }

    /// The owner a request acts for, and that owner's account now. Only root may act for
    /// another owner; the system set is only changed through the config file.
    /// `removing`: the change only takes forwards away, which root may do for the set of
    /// a user that no longer exists (an account of the set's uid stands in for it).
    fn target_owner(
        &self,
        caller: &Caller,
        owner: Option<String>,
        removing: bool,
    ) -> Result<(String, Account), Failure> {
        let name = match owner {
            None => caller.user.clone(),
            Some(o) => match Owner::parse(&o).map_err(|e| err(ErrorKind::Invalid, e))? {
                Owner::System => {
                    return Err(err(
                        ErrorKind::Invalid,
                        format!(
                            "the system set comes from {}; edit it and run `portctl reload`",
                            self.config_path.display()
                        ),
                    ))
                }
                Owner::User(n) if caller.uid != 0 && n != caller.user => {
                    return Err(err(
                        ErrorKind::Denied,
                        format!("only root may act for another owner ({o}); you are {}", caller.owner()),
                    ))
                }
                Owner::User(n) => n,
            },
        };
        match accounts::lookup(&name) {
            Some(a) if caller.uid == 0 || a.uid == caller.uid => Ok((format!("user:{name}"), a)),
            Some(a) => Err(err(
                ErrorKind::Denied,
                format!("user name {name} belongs to uid {}, not to you (uid {})", a.uid, caller.uid),
            )),
            None if name == caller.user && caller.uid != 0 => Err(err(
                ErrorKind::Denied,
                format!("uid {} has no user name in the account database; grants are given to users", caller.uid),
            )),
            None => {
                let key = format!("user:{name}");
                match self.users.get(&key) {
                    Some(set) if removing => {
                        let uid = set.uid.unwrap_or(u32::MAX);
                        Ok((key, Account { name, uid, groups: Vec::new() }))
                    }
                    Some(_) => Err(err(
                        ErrorKind::Invalid,
                        format!("there is no user `{name}` on this host; root can only remove the forwards of its set"),
                    )),
                    None => Err(err(ErrorKind::Invalid, format!("there is no user `{name}` on this host"))),
                }
            }
        }
    }

    /// Judges a change of a user's set before it is made: every reason the policy would
    /// suspend a forward refuses it; sockets on the public port refuse it; a target with no
    /// listener yet is a warning. Not called for root's own set, which is not judged.
    fn judge_change(&self, account: &Account, set: &UserSet, fresh: &[Forward]) -> Result<Vec<String>, Failure> {
        let mut warnings = Vec::new();
        let check = self.config.settings.listener_check;
        let listeners = if check == ListenerCheck::Off {
            None
        } else {
            match portd_kernel::sockdiag::listeners(self.listeners.as_ref(), super::accounts::name_of) {
                Ok(l) => Some(l),
                Err(e) => {
                    warnings.push(format!("the listener check could not run (reading the socket tables: {e})"));
                    None
                }
            }
        };
        let judge = policy::Judge {
            grants: &self.config.grants,
            default_mark: self.config.settings.mark,
            listener_check: check,
            listeners: listeners.as_ref(),
        };
        let verdicts = judge.judge(&account.name, set, Some(account), &Default::default());
        let fresh_names: std::collections::HashSet<&str> = fresh.iter().map(|f| f.name.as_str()).collect();
        let mut refusals: Vec<&Reason> = Vec::new();
        for (f, v) in set.forwards.iter().zip(&verdicts) {
            // Forwards already in the set and not part of this change keep their state.
            if !fresh_names.contains(f.name.as_str()) {
                continue;
            }
            if let Some(r) = v {
                refusals.push(r);
            }
        }
        let mut messages: Vec<String> = Vec::new();
        let mut quota_refused = false;
        for r in &refusals {
            match r {
                Reason::Quota { max } if !quota_refused => {
                    quota_refused = true;
                    messages.push(format!(
                        "your set would hold {} forwards; your grant allows max_forwards: {max}",
                        set.forwards.len()
                    ));
                }
                Reason::Quota { .. } => {}
                // One answer for the budget: every forward after the first over it repeats it.
                Reason::Elements { .. } if messages.iter().any(|m| m.contains("your grant allows max_")) => {}
                Reason::Listener { .. } => messages.push(format!("{r}; stop that socket or forward to another port")),
                Reason::Shadows { .. } => {
                    messages.push(format!("{r}; stop that service first or use another public port"))
                }
                other => messages.push(other.to_string()),
            }
        }
        if let Some(l) = &listeners {
            for f in fresh {
                // enforced by the judge above (Reason::Shadows)
                if check != ListenerCheck::Enforce {
                    if let Some(m) = policy::public_taken(l, f, account.uid) {
                        warnings.push(m);
                    }
                }
                if check == ListenerCheck::Warn {
                    if let Some(r) = policy::target_taken(l, f, account.uid) {
                        warnings.push(format!("forward `{}`: {r}", f.name));
                    }
                }
                if let Some(m) = policy::target_unserved(l, f) {
                    warnings.push(m);
                }
            }
        }
        if messages.is_empty() {
            return Ok(warnings);
        }
        let kind =
            if refusals.iter().all(|r| !r.is_denial()) && !messages.is_empty() && refusals.len() == messages.len() {
                ErrorKind::Invalid
            } else {
                ErrorKind::Denied
            };
        Err((kind, messages))
    }

    /// What root should know of the forwards it brings in, as ufw warns: a public port a
    /// local service (root's own included) already serves, whose traffic the forward would
    /// take, and a target nothing listens on. Root's set is not judged: warnings only.
    fn unjudged_warnings(&self, fresh: &[Forward]) -> Vec<String> {
        if fresh.is_empty() || self.config.settings.listener_check == ListenerCheck::Off {
            return Vec::new();
        }
        let l = match portd_kernel::sockdiag::listeners(self.listeners.as_ref(), super::accounts::name_of) {
            Ok(l) => l,
            Err(e) => return vec![format!("the listener check could not run (reading the socket tables: {e})")],
        };
        let mut warnings = Vec::new();
        for f in fresh {
            // No uid is u32::MAX: every holder counts, root's too.
            warnings.extend(policy::public_taken(&l, f, u32::MAX));
            warnings.extend(policy::target_unserved(&l, f));
        }
        warnings
    }

    /// Changes `owner`'s set: judged, then kernel first, then the state file; only then
    /// is the change acknowledged and kept in memory.
    fn change(
        &mut self,
        caller: &Caller,
        owner: &str,
        account: &Account,
        change: Change,
        dry_run: bool,
    ) -> Result<Body, Failure> {
        let t0 = Instant::now();
        let mark = self.config.settings.mark;
        let empty = UserSet::default();
        let current = self.users.get(owner).unwrap_or(&empty);
        if let Some(bound) = current.uid.filter(|b| *b != account.uid) {
            if caller.uid != 0 {
                return Err(err(
                    ErrorKind::Denied,
                    format!(
                        "the set {owner} belongs to uid {bound}, an earlier account named {}; it is never handed to another account (root can empty it: `portctl apply --owner {owner}` with `forwards: []`)",
                        account.name
                    ),
                ));
            }
        }
        // The record that makes the change, the one that takes it back, and the forwards
        // it brings in.
        let (record, undo, fresh): (Record, Record, &[Forward]) = match &change {
            Change::Replace(new) => (
                Record::between(owner, Some(account.uid), &current.forwards, new),
                Record::between(owner, current.uid, new, &current.forwards),
                new,
            ),
            Change::Add(f) => (
                Record { owner: owner.into(), uid: Some(account.uid), put: vec![f.clone()], remove: vec![] },
                Record { owner: owner.into(), uid: current.uid, put: vec![], remove: vec![f.name.clone()] },
                std::slice::from_ref(f),
            ),
            Change::Remove(name) => (
                Record { owner: owner.into(), uid: Some(account.uid), put: vec![], remove: vec![name.clone()] },
                Record {
                    owner: owner.into(),
                    uid: current.uid,
                    put: current.forwards.iter().filter(|f| f.name == *name).cloned().collect(),
                    remove: vec![],
                },
                &[],
            ),
        };
        // The set after the change, judged unless it is root's own (removals need no judge).
        let warnings = match &change {
            _ if account.uid == 0 => self.unjudged_warnings(fresh),
            Change::Remove(_) => Vec::new(),
            Change::Replace(new) => {
                let after = UserSet { uid: Some(account.uid), forwards: new.clone() };
                self.judge_change(account, &after, fresh)?
            }
            Change::Add(f) => {
                let mut after = UserSet { uid: Some(account.uid), forwards: current.forwards.clone() };
                after.forwards.push(f.clone());
                self.judge_change(account, &after, fresh)?
            }
        };
        // Forwards of other owners suspended for their listener keep their public port.
        self.check_reserved(owner, fresh)?;
        // Suspended forwards the change drops leave the state only (listed in the summary).
        let dropped: Vec<Forward> = match self.eval.suspended.get(owner) {
            None => Vec::new(),
            Some(list) => {
                let gone: std::collections::HashSet<&str> = record.remove.iter().map(String::as_str).collect();
                current
                    .forwards
                    .iter()
                    .filter(|f| gone.contains(f.name.as_str()) && list.iter().any(|(n, _)| *n == f.name))
                    .cloned()
                    .collect()
            }
        };
        // Only the forwards that differ are compiled: O(change), not O(table).
        let delta = match &change {
            Change::Replace(new) => self.plan.replace_owner(owner, new, mark),
            Change::Add(f) => self.plan.change_owner(owner, &[], std::slice::from_ref(f), mark),
            Change::Remove(name) => self.plan.change_owner(owner, &[name.as_str()], &[], mark),
        };
        let mut delta = delta.map_err(|c| (ErrorKind::Conflict, c.iter().map(|c| c.to_string()).collect()))?;
        for f in dropped {
            delta.summary.removed.push(PlacedForward { owner: owner.into(), mark: f.mark.unwrap_or(mark), forward: f });
        }
        // A large file leaves freed memory behind even when nothing changes.
        if fresh.len() > TRIM_AFTER_OBJECTS {
            super::schedule_trim(&mut self.trim_at);
        }
        if dry_run || (delta.is_empty() && record.is_empty() && current.uid == Some(account.uid)) {
            return Ok(with_warnings(Body::changed(delta.summary, dry_run), warnings));
        }
        let t_compile = t0.elapsed();
        // A large change computed the new plan whole already; otherwise it is made here,
        // when the kernel refuses the element-level change.
        let whole = || match &delta.whole {
            Some(w) => std::borrow::Cow::Borrowed(&**w),
            None => {
                let mut whole = self.plan.clone();
                delta.apply_in_place(&mut whole);
                std::borrow::Cow::Owned(whole)
            }
        };
        self.commit(&delta, whole)
            .map_err(|e| err(ErrorKind::Kernel, format!("the kernel refused the change; nothing was changed: {e}")))?;
        let t_kernel = t0.elapsed();
        record.apply(&mut self.users);
        if let Err(e) = self.store.commit(&self.users, &record) {
            // Not acknowledged unless persisted: put the sets and the kernel back as they were.
            undo.apply(&mut self.users);
            if let Err(e2) = self.kernel.replace(&self.plan) {
                tracing::error!("rolling back after a failed save: {e2}");
            }
            return Err(err(ErrorKind::Internal, format!("{e}; the change was rolled back")));
        }
        let t_save = t0.elapsed();
        let size = delta.size();
        let stale = portd_kernel::conntrack::stale_in_delta(&delta);
        delta.take_into(&mut self.plan);
        self.sync_dataplane();
        self.accounts.insert(owner.to_string(), Some(account.clone()));
        self.note_change(owner, &change);
        tracing::debug!(
            "change phases: compile {t_compile:?}, kernel {:?} ({size} objects), save {:?}",
            t_kernel - t_compile,
            t_save - t_kernel
        );
        tracing::info!(
            uid = caller.uid,
            user = %caller.user,
            owner = %owner,
            forward = %changed_names(&delta.summary),
            action = "change",
            "applied change for {} (pid {}): {}",
            caller.who(),
            caller.pid.map_or("?".to_string(), |p| p.to_string()),
            delta.summary.log_line(LOG_FORWARDS)
        );
        for w in &warnings {
            tracing::info!(owner = %owner, "{w}");
        }
        self.conntrack.forget(stale);
        notify::status(&self.status_line());
        if size > TRIM_AFTER_OBJECTS {
            self.trim_soon();
        }
        self.schedule_poll();
        Ok(with_warnings(Body::changed(delta.summary, false), warnings))
    }

    /// Refuses forwards whose public port a listener-suspended forward of another owner
    /// keeps.
    fn check_reserved(&self, owner: &str, fresh: &[Forward]) -> Result<(), Failure> {
        let mut claims = policy::Claims::default();
        let mut any = false;
        for (o, list) in &self.eval.suspended {
            if o == owner {
                continue;
            }
            for (name, r) in list {
                if !r.keeps_claim() {
                    continue;
                }
                if let Some(f) = self.users.get(o).and_then(|s| s.forwards.iter().find(|f| f.name == *name)) {
                    claims.put(o, f);
                    any = true;
                }
            }
        }
        if !any {
            return Ok(());
        }
        let clashes: Vec<String> = fresh
            .iter()
            .filter_map(|f| {
                claims.clash(f).map(|(o, n)| {
                    format!(
                        "forward `{}`: its public port belongs to {o}/{n} (suspended while its target port is taken)",
                        f.name
                    )
                })
            })
            .collect();
        if clashes.is_empty() {
            Ok(())
        } else {
            Err((ErrorKind::Conflict, clashes))
        }
    }

    /// Keeps the evaluation in step with a change that was judged and applied.
    fn note_change(&mut self, owner: &str, change: &Change) {
        match change {
            Change::Replace(new) => {
                self.eval.suspended.remove(owner);
                if new.is_empty() {
                    self.eval.active.remove(owner);
                } else {
                    self.eval.active.insert(owner.to_string(), new.iter().map(|f| f.name.clone()).collect());
                }
            }
            Change::Add(f) => {
                self.eval.active.entry(owner.to_string()).or_default().insert(f.name.clone());
            }
            Change::Remove(name) => {
                if let Some(v) = self.eval.active.get_mut(owner) {
                    v.remove(name);
                    if v.is_empty() {
                        self.eval.active.remove(owner);
                    }
                }
                if let Some(v) = self.eval.suspended.get_mut(owner) {
                    v.retain(|(n, _)| n != name);
                    if v.is_empty() {
                        self.eval.suspended.remove(owner);
                    }
                }
            }
        }
    }

    /// Re-reads the config file and puts its rules into the kernel; with `dry_run`, only
    /// reports what it would add, remove and suspend, and changes nothing.
    pub(super) fn reload(&mut self, caller: Option<&Caller>, dry_run: bool) -> Result<Body, Failure> {
        let text = std::fs::read_to_string(&self.config_path)
            .map_err(|e| err(ErrorKind::Invalid, format!("{}: {e}", self.config_path.display())))?;
        let file = self.config_path.display().to_string();
        let config = parse_config(&file, &text).map_err(invalid)?;
        // A grant of an unknown account is refused at start; a running portd keeps going
        // (a user deleted since is how forwards get suspended) and says so.
        let warnings: Vec<String> =
            crate::check::unknown_accounts(&file, &text, &config).0.iter().map(|d| d.to_string()).collect();
        let config = super::effective(config, &self.overrides);
        if config.settings.table != self.config.settings.table
            || config.settings.state_dir != self.config.settings.state_dir
            || config.settings.socket != self.config.settings.socket
            || config.settings.metrics != self.config.settings.metrics
        {
            return Err(err(
                ErrorKind::Invalid,
                "settings.table, settings.state_dir, settings.socket and settings.metrics only change on restart; revert them or restart portd",
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
                return Err((ErrorKind::Conflict, c));
            }
        };
        let delta = Plan::diff(&self.plan, &plan);
        // The delta's summary also says which forwards leave the plan: the answer's copy
        // lists suspended forwards apart.
        let mut shown = delta.summary.clone();
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
        if let Err(e) = self.commit(&delta, || std::borrow::Cow::Borrowed(&plan)) {
            undo(self, before);
            return Err(err(ErrorKind::Kernel, format!("the kernel refused the new config; nothing was changed: {e}")));
        }
        let by = caller.map_or("SIGHUP".to_string(), |c| c.who());
        tracing::info!(
            uid = caller.map(|c| c.uid),
            user = caller.map(|c| c.user.as_str()),
            action = "reload",
            "reloaded {} (by {by}): {}",
            self.config_path.display(),
            delta.summary.log_line(LOG_FORWARDS)
        );
        for w in &warnings {
            tracing::warn!("{w}");
        }
        self.log_transitions(&before, "by the reload");
        self.publish();
        self.conntrack.forget(portd_kernel::conntrack::stale_mappings(&self.plan, &plan));
        self.plan = plan;
        self.sync_dataplane();
        self.schedule_poll();
        notify::status(&self.status_line());
        Ok(answer(shown))
    }

    /// The forwards the current evaluation suspends that `before` did not, with their
    /// reasons; they leave `summary.removed` (an answer's copy, never a delta's), which
    /// then lists only forwards that are gone.
    fn suspensions(&self, before: &policy::Evaluation, summary: &mut portd_rules::plan::Summary) -> Vec<Suspension> {
        let (now, _) = self.eval.transitions(before);
        let mut out = Vec::new();
        for (owner, name, reason) in now {
            let Some(f) = self.users.get(owner).and_then(|s| s.forwards.iter().find(|f| f.name == name)) else {
                continue;
            };
            summary.removed.retain(|p| !(p.owner == owner && p.forward.name == name));
            out.push(Suspension { owner: owner.to_string(), forward: f.clone(), reason: reason.to_string() });
        }
        out
    }

    /// The grants that apply to the caller, as it may read them.
    fn grants_of(&self, caller: &Caller) -> GrantsView {
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
                    portd_rules::GrantSubject::User(u) => format!("user:{u}"),
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

    /// Status read in the actor (the server reads the kernel off the actor instead, from
    /// a [`Snapshot`]).
    fn status(&mut self) -> Result<Body, Failure> {
        let snap = self.snapshot();
        let obs = self.kernel.observe(&snap.plan).map_err(|e| err(ErrorKind::Kernel, e.to_string()))?;
        Ok(Body::Status(snap.status(obs.as_ref())))
    }

    /// What a status needs from the actor: the plan and the suspended forwards. Cheap; the
    /// kernel is read by the caller.
    pub(super) fn snapshot(&mut self) -> Snapshot {
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
        let mut registered = std::collections::BTreeMap::new();
        if self.steering.steers() {
            for p in self.plan.forwards.iter().filter(|p| p.forward.proto.protos().contains(&portd_rules::Proto::Tcp)) {
                for port in p.forward.to.ports() {
                    if let Some(n) = self.steering.registered(port) {
                        registered.insert(port, n);
                    }
                }
            }
        }
        Snapshot {
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

/// The actor's part of a status: read the kernel with it, then call [`Snapshot::status`].
pub struct Snapshot {
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

impl Snapshot {
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
