//! Starting the actor: restoring persisted sets, checking them like files from their
//! users, binding them to uids, and putting the first plan into the kernel.

#![forbid(unsafe_code)]

use super::*;

impl Daemon {
    /// Restores persisted sets, judges them, and puts the plan into the kernel. Called
    /// before READY=1.
    pub fn start(
        config_path: PathBuf,
        config: Config,
        overrides: Overrides,
        published: std::sync::Arc<Published>,
        kernel: Box<dyn Kernel>,
        steering: crate::dataplane::Steering,
    ) -> anyhow::Result<Daemon> {
        let t0 = Instant::now();
        let mut store = Store::new(std::path::Path::new(&config.settings.state_dir));
        let mut persisted = store.load()?;
        let t_load = t0.elapsed();
        for p in &persisted.unreadable {
            tracing::error!("{p}; left out (a copy of the file is kept next to it as sets.json.unreadable)");
        }
        let mut d = Daemon {
            config_path,
            plan: Plan::empty_with(&config.settings.table, config.settings.mark, steering.steers()),
            config,
            overrides,
            users: std::mem::take(&mut persisted.sets),
            invalid: BTreeMap::new(),
            accounts: BTreeMap::new(),
            listeners: None,
            listener_error: None,
            recent: Default::default(),
            eval: Evaluation::default(),
            store,
            kernel,
            conntrack: portd_kernel::conntrack::Cleaner::spawn()?,
            repairs: 0,
            backoff: Backoff::default(),
            timers: Default::default(),
            missed: std::cell::Cell::new(false),
            events: None,
            published,
            drift_since: None,
            conntrack_off_since: None,
            steering,
            retiring: Default::default(),
        };
        d.publish();
        d.validate_loaded(&persisted);
        drop(persisted);
        d.accounts = accounts::lookup_owners(d.users.keys());
        d.bind_unbound_sets();
        d.refresh_listeners();
        let t_check = t0.elapsed();
        d.eval = d.evaluate(&Evaluation::default());
        if d.plan.steer {
            d.plan.conntrack = d.kernel.conntrack_active();
            d.timers.set_earliest(Timer::Conntrack, Instant::now() + CONNTRACK_POLL);
        }
        let plan = d.desired_plan().map_err(|c| anyhow::anyhow!(c.join("; ")))?;
        let t_plan = t0.elapsed();
        // Keep counters when the kernel already holds exactly this table (a restart).
        let kept = match d.kernel.observe(&plan)? {
            Some(obs) if obs.matches(&plan) => true,
            _ => {
                let t = Instant::now();
                d.kernel_call(plan.element_count(), |k| k.replace(&plan))?;
                d.published.metrics.applied(t.elapsed());
                false
            }
        };
        tracing::debug!(
            "start phases: load {t_load:?}, checks {:?}, plan {:?}, kernel {:?} ({})",
            t_check - t_load,
            t_plan - t_check,
            t0.elapsed() - t_plan,
            if kept { "table kept" } else { "table replaced" }
        );
        if !kept {
            // UDP flows that began on a public port before its forward did
            d.conntrack.fresh(portd_kernel::conntrack::fresh_mappings(&d.plan, &plan));
        }
        d.plan = plan;
        d.sync_dataplane();
        d.log_transitions(&Evaluation::default(), "at start");
        d.trim_soon();
        d.schedule_poll();
        tracing::info!(
            table = %d.config.settings.table,
            forwards = d.plan.forwards.len(),
            suspended = d.eval.suspended_count(),
            owners = d.users.len() + 1,
            "rules are in the kernel"
        );
        Ok(d)
    }

    /// Checks every persisted forward like a file from a user: owner, name, ranges,
    /// interfaces, sources, duplicate names. Problems suspend the forward, located.
    pub(super) fn validate_loaded(&mut self, persisted: &crate::state::Persisted) {
        for (owner, set) in self.users.iter_mut() {
            // a key of the state file that names no user (`bogus`): its forwards stay suspended
            let owner_ok = owner.user().is_some();
            let mut seen = std::collections::HashSet::new();
            for f in set.forwards.iter_mut() {
                // The same rules as a file's forward, and the same one form.
                let mut problems: Vec<String> = portd_rules::validate::forward(f)
                    .into_iter()
                    .map(|p| format!("{owner} forward `{}`: {p}", f.name.escape_debug()))
                    .collect();
                if !owner_ok {
                    problems.push(format!("`{}` is not a user owner (`user:NAME`)", owner.as_str().escape_debug()));
                }
                if !seen.insert(f.name.as_str()) {
                    problems.push(format!("{owner}: duplicate name `{}`", f.name.escape_debug()));
                }
                if !problems.is_empty() {
                    // located only now: a start builds no location for the forwards that are fine
                    let at = persisted.origin(owner.as_str(), &f.name);
                    for p in problems.iter_mut() {
                        *p = format!("{at}: {p}");
                    }
                    for p in &problems {
                        tracing::error!(owner = %owner, uid = set.uid, forward = %f.name.escape_debug(), action = "suspend", "persisted forward is invalid and stays suspended: {p}");
                    }
                    self.invalid.entry(owner.clone()).or_default().insert(f.name.clone(), problems.join("; "));
                }
            }
        }
    }

    /// Sets of the first state format carry no uid: bind them to their name's uid now.
    pub(super) fn bind_unbound_sets(&mut self) {
        let mut changed = false;
        for (owner, set) in self.users.iter_mut() {
            if set.uid.is_none() {
                if let Some(Some(a)) = self.accounts.get(owner) {
                    set.uid = Some(a.uid);
                    changed = true;
                    tracing::info!(owner = %owner, uid = a.uid, user = %a.name, action = "bind", "set {owner} bound to uid {} ({})", a.uid, a.name);
                }
            }
        }
        if changed {
            if let Err(e) = self.store.save(&self.users) {
                tracing::warn!("recording the uid of each set: {e}");
            }
        }
    }
}
