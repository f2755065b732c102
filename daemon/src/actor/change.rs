//! Changes of one owner's set: judged by the policy core, then kernel first, then the
//! state file, then the answer (rolled back when the state write fails).

#![forbid(unsafe_code)]

use super::{Caller, Daemon, Error, LOG_FORWARDS, TRIM_AFTER_OBJECTS};
use crate::notify;
use crate::state::Record;
use portd_rules::plan::PlacedForward;
use portd_rules::policy::{self, Account, Reason, SetKey, UserSet};
use portd_rules::proto::Body;
use portd_rules::{Forward, ListenerCheck};
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

/// Adds warnings to a `Changed` answer.
pub(super) fn with_warnings(mut body: Body, w: Vec<String>) -> Body {
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
    /// Judges a change of a user's set before it is made: every reason the policy would
    /// suspend a forward refuses it; sockets on the public port refuse it; a target with no
    /// listener yet is a warning. Not called for root's own set, which is not judged.
    pub(super) fn judge_change(
        &self,
        account: &Account,
        set: &UserSet,
        fresh: &[Forward],
    ) -> Result<Vec<String>, Error> {
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
            // a new forward takes over no account's port
            shadowed_by: u32::MAX,
        };
        let mut verdicts = judge.judge(&account.name, set, Some(account), &Default::default());
        // A changed forward whose public ports the owner's live forwards hold already is
        // judged as one in place: another user's socket there (bound before the forward,
        // or while ownership is polled) does not keep the owner from changing its own.
        let held: Vec<&Forward> = self
            .eval
            .active_forwards(&self.users)
            .filter(|(o, _)| o.user() == Some(account.name.as_str()))
            .flat_map(|(_, fs)| fs)
            .collect();
        let in_place = |f: &Forward| {
            f.proto.protos().iter().all(|p| {
                held.iter()
                    .any(|h| h.proto.protos().contains(p) && h.port.start <= f.port.start && f.port.end <= h.port.end)
            })
        };
        let again: Vec<bool> = verdicts
            .iter()
            .zip(&set.forwards)
            .map(|(v, f)| matches!(v, Some(Reason::Shadows { .. })) && in_place(f))
            .collect();
        if again.contains(&true) {
            let kept = policy::Judge { shadowed_by: self.recent.sys_uid_max(), ..judge };
            let in_place_verdicts = kept.judge(&account.name, set, Some(account), &Default::default());
            for ((v, a), redo) in verdicts.iter_mut().zip(in_place_verdicts).zip(again) {
                if redo {
                    *v = a;
                }
            }
        }
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
        // A target another account's socket held lately (a service restarting): see
        // `recent`. Judged for the forwards this change brings (not those it keeps) whose
        // target no such socket holds now (that is judged above).
        let mut recent_refusals = 0;
        if let Some(l) = &listeners {
            let now = std::time::Instant::now();
            for f in fresh {
                if policy::target_taken(l, f, account.uid).is_some() {
                    continue;
                }
                let held = f.proto.protos().iter().find_map(|&p| {
                    self.recent.foreign(p, f.to, account.uid, now).map(|(port, uid, ago)| (port, p, uid, ago))
                });
                let Some((port, proto, uid, ago)) = held else { continue };
                let who = policy::who(uid, super::accounts::name_of(uid).as_deref());
                let m = format!(
                    "forward `{}`: target port {port}/{proto} was held by a socket of {who} {} s ago; a target is reserved for its owner, so it must not be another account's port (a service restarting)",
                    f.name,
                    ago.as_secs()
                );
                if check == ListenerCheck::Enforce {
                    recent_refusals += 1;
                    messages.push(format!(
                        "{m}: forward to another port, or wait {} min",
                        super::recent::RECENT.as_secs() / 60
                    ));
                } else {
                    warnings.push(m);
                }
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
        // (a target held lately is refused like one held now: exit 4)
        if recent_refusals == 0 && refusals.iter().all(|r| !r.is_denial()) && refusals.len() == messages.len() {
            Err(Error::Invalid(messages))
        } else {
            Err(Error::Denied(messages))
        }
    }

    /// What root should know of the forwards it brings in, as ufw warns: a public port a
    /// local service (root's own included) already serves, whose traffic the forward would
    /// take, and a target nothing listens on. Root's set is not judged: warnings only.
    pub(super) fn unjudged_warnings(&self, fresh: &[Forward]) -> Vec<String> {
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

    /// Claims the ports of `forwards` (of `owner`, bound to `uid`) in the data plane,
    /// beside every claim of the plan; true when it did (kernel ownership only).
    fn claim_ahead(&mut self, owner: &SetKey, uid: u32, forwards: &[Forward]) -> bool {
        if forwards.is_empty() || !self.steering.kernel_ownership() {
            return false;
        }
        let extra: Vec<(&str, &Forward)> = forwards.iter().map(|f| (owner.as_str(), f)).collect();
        self.sync_dataplane_with(&extra, Some((owner.as_str(), uid)));
        true
    }

    /// Changes `owner`'s set: judged, then kernel first, then the state file; only then
    /// is the change acknowledged and kept in memory.
    ///
    /// Once a user's change has passed its checks, the forwards it brings claim their
    /// ports in the data plane (their public ports watched, their targets reserved, with
    /// kernel ownership): from then on no other account can bind them. The change is
    /// then judged again with the socket tables read after the claim, so a socket bound
    /// between the first reading and the claim refuses it too; only then does its NAT
    /// rule go in. (Before, a new UDP forward's NAT went live a few milliseconds before
    /// its public port was watched, and an account that saw it over loopback bound the
    /// port in between and took the datagrams of the clients it primed conntrack for.)
    /// A change refused or failing after the claim gives it back.
    pub(super) fn change(
        &mut self,
        caller: &Caller,
        owner: &SetKey,
        account: &Account,
        change: Change,
        dry_run: bool,
    ) -> Result<Body, Error> {
        let t0 = Instant::now();
        let mark = self.config.settings.mark;
        let empty = UserSet::default();
        let current = self.users.get(owner).unwrap_or(&empty);
        if let Some(bound) = current.uid.filter(|b| *b != account.uid) {
            if caller.uid != 0 {
                return Err(Error::denied(format!(
                    "the set {owner} belongs to uid {bound}, an earlier account named {}; it is never handed to another account (root can empty it: `portctl apply --owner {owner}` with `forwards: []`)",
                    account.name
                )));
            }
        }
        // The record that makes the change, the one that takes it back, and the forwards
        // it brings in.
        let (record, undo, fresh): (Record, Record, &[Forward]) = match &change {
            Change::Replace(new) => (
                Record::between(owner.as_str(), Some(account.uid), &current.forwards, new),
                Record::between(owner.as_str(), current.uid, new, &current.forwards),
                new,
            ),
            Change::Add(f) => (
                Record { owner: owner.to_string(), uid: Some(account.uid), put: vec![f.clone()], remove: vec![] },
                Record { owner: owner.to_string(), uid: current.uid, put: vec![], remove: vec![f.name.clone()] },
                std::slice::from_ref(f),
            ),
            Change::Remove(name) => (
                Record { owner: owner.to_string(), uid: Some(account.uid), put: vec![], remove: vec![name.clone()] },
                Record {
                    owner: owner.to_string(),
                    uid: current.uid,
                    put: current.forwards.iter().filter(|f| f.name == *name).cloned().collect(),
                    remove: vec![],
                },
                &[],
            ),
        };
        // The set after the change, judged unless it is root's own (removals need no judge).
        let after = match &change {
            _ if account.uid == 0 => None,
            Change::Remove(_) => None,
            Change::Replace(new) => Some(UserSet { uid: Some(account.uid), forwards: new.clone() }),
            Change::Add(f) => {
                // (`--replace`: in the place of the forward of that name, which is judged
                // no more and counts against no quota)
                let mut after = UserSet { uid: Some(account.uid), forwards: current.forwards.clone() };
                after.forwards.retain(|g| g.name != f.name);
                after.forwards.push(f.clone());
                Some(after)
            }
        };
        let warnings = match &after {
            None if account.uid == 0 => self.unjudged_warnings(fresh),
            None => Vec::new(),
            Some(after) => self.judge_change(account, after, fresh)?,
        };
        // Forwards of other owners suspended for their listener keep their public port.
        self.check_reserved(owner, fresh)?;
        // A target port is one owner's: another owner's app must not get this forward's
        // clients, nor its reservation. That holds for a forward of another owner that
        // stands back for now but keeps its claim (its target stays reserved for it; the
        // newcomer would get the reservation until the next check). (Running forwards
        // the change keeps as they are were judged when they came: a system forward the
        // operator pointed at one of them since shares its app. A suspended one is
        // judged again.)
        // (and the old target of a UDP forward whose old flows are not deleted yet)
        let kept = super::retiring::claims_beside_the_plan(&self.eval, &self.users, &self.retiring);
        let others = self.plan.forwards.iter().map(|p| (p.owner.as_str(), &p.forward)).chain(kept.iter().copied());
        let changed: Vec<Forward> = fresh
            .iter()
            .filter(|f| !current.forwards.contains(f) || self.eval.reason(owner.as_str(), &f.name).is_some())
            .cloned()
            .collect();
        let mut taken = policy::targets_taken(others.clone(), owner.as_str(), &changed);
        taken.extend(policy::publics_on_targets(others, owner.as_str(), &changed));
        if !taken.is_empty() {
            return Err(Error::Conflict(taken));
        }
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
            Change::Replace(new) => self.plan.replace_owner(owner.as_str(), new, mark),
            Change::Add(f) => self.plan.change_owner(owner.as_str(), &[], std::slice::from_ref(f), mark),
            Change::Remove(name) => self.plan.change_owner(owner.as_str(), &[name.as_str()], &[], mark),
        };
        let mut delta = delta.map_err(|c| Error::Conflict(c.iter().map(|c| c.to_string()).collect()))?;
        for f in dropped {
            delta.summary.removed.push(PlacedForward {
                owner: owner.to_string(),
                mark: f.mark.unwrap_or(mark),
                forward: f,
            });
        }
        // A large file leaves freed memory behind even when nothing changes.
        if fresh.len() > TRIM_AFTER_OBJECTS {
            super::schedule_trim(&mut self.timers);
        }
        if dry_run || (delta.is_empty() && record.is_empty() && current.uid == Some(account.uid)) {
            return Ok(with_warnings(Body::changed(delta.summary.with_packet_marks(&self.plan), dry_run), warnings));
        }
        let ahead = after.is_some() && self.claim_ahead(owner, account.uid, &changed);
        if let (true, Some(after)) = (ahead, &after) {
            if let Err(e) = self.judge_change(account, after, fresh) {
                self.sync_dataplane();
                return Err(e);
            }
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
        if let Err(source) = self.commit(&delta, whole) {
            if ahead {
                self.sync_dataplane();
            }
            return Err(Error::KernelRefused { what: "the change", source });
        }
        let t_kernel = t0.elapsed();
        record.apply(&mut self.users);
        if let Err(e) = self.store.commit(&self.users, &record) {
            // Not acknowledged unless persisted: put the sets and the kernel back as they were.
            undo.apply(&mut self.users);
            if let Err(e2) = self.kernel.replace(&self.plan) {
                tracing::error!("rolling back after a failed save: {e2}");
            }
            if ahead {
                self.sync_dataplane();
            }
            return Err(Error::RolledBack(e.to_string()));
        }
        let t_save = t0.elapsed();
        let size = delta.size();
        // (the old targets of retired UDP mappings stay reserved until their flows go)
        // (a mapping deleted and added again as it was, a renamed forward's, is neither)
        let mut fresh_mappings = portd_kernel::conntrack::fresh_in_delta(&delta);
        let mut stale = portd_kernel::conntrack::stale_in_delta(&delta);
        let added: std::collections::BTreeSet<_> = fresh_mappings.iter().copied().collect();
        let same: std::collections::BTreeSet<_> = stale.iter().copied().filter(|s| added.contains(s)).collect();
        stale.retain(|s| !same.contains(s));
        fresh_mappings.retain(|s| !same.contains(s));
        self.forget_flows(stale, Some((owner.as_str(), account.uid)));
        delta.take_into(&mut self.plan);
        let shown = std::mem::take(&mut delta.summary).with_packet_marks(&self.plan);
        let t_plan = t0.elapsed();
        self.sync_dataplane();
        let t_dataplane = t0.elapsed();
        self.accounts.insert(owner.clone(), Some(account.clone()));
        self.note_change(owner, &change);
        tracing::debug!(
            "change phases: compile {t_compile:?}, kernel {:?} ({size} objects), save {:?}, plan {:?}, data plane {:?}; held the actor {} µs",
            t_kernel - t_compile,
            t_save - t_kernel,
            t_plan - t_save,
            t_dataplane - t_plan,
            t0.elapsed().as_micros()
        );
        tracing::info!(
            uid = caller.uid,
            user = %caller.user,
            owner = %owner,
            forward = %changed_names(&shown),
            action = "change",
            "applied change for {} (pid {}): {}",
            caller.who(),
            caller.pid.map_or("?".to_string(), |p| p.to_string()),
            shown.log_line(LOG_FORWARDS)
        );
        for w in &warnings {
            tracing::info!(owner = %owner, "{w}");
        }
        self.conntrack.fresh(fresh_mappings);
        notify::status(&self.status_line());
        if size > TRIM_AFTER_OBJECTS {
            self.trim_soon();
        }
        self.schedule_poll();
        Ok(with_warnings(Body::changed(shown, false), warnings))
    }

    /// Refuses forwards whose public port a suspended forward of another owner keeps (see
    /// [`policy::Reason::keeps_claim`]).
    pub(super) fn check_reserved(&self, owner: &SetKey, fresh: &[Forward]) -> Result<(), Error> {
        let mut claims = policy::PlacedClaims::default();
        let mut any = false;
        for (o, f) in self.eval.kept_forwards(&self.users).filter(|(o, _)| *o != owner) {
            claims.put(o.as_str(), f);
            any = true;
        }
        if !any {
            return Ok(());
        }
        let clashes: Vec<String> = fresh
            .iter()
            .filter_map(|f| {
                claims.clash(f).map(|(o, n)| {
                    format!(
                        "forward `{}`: its public port belongs to {o}/{n} (suspended for now, it keeps the port)",
                        f.name
                    )
                })
            })
            .collect();
        if clashes.is_empty() {
            Ok(())
        } else {
            Err(Error::Conflict(clashes))
        }
    }

    /// Keeps the evaluation in step with a change that was judged and applied.
    pub(super) fn note_change(&mut self, owner: &SetKey, change: &Change) {
        match change {
            Change::Replace(new) => {
                self.eval.suspended.remove(owner);
                if new.is_empty() {
                    self.eval.active.remove(owner);
                } else {
                    self.eval.active.insert(owner.clone(), new.iter().map(|f| f.name.clone()).collect());
                }
            }
            Change::Add(f) => {
                self.eval.active.entry(owner.clone()).or_default().insert(f.name.clone());
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
}
