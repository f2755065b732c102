//! The one commit path to the kernel (`commit`: a delta, else the whole table), kernel
//! calls made quietly when large, and the repair of a table another program changed.

#![forbid(unsafe_code)]

use super::*;

impl Daemon {
    /// Puts the table back when another program deleted or edited it.
    pub(super) fn repair_if_drifted(&mut self, change: portd_kernel::events::TableEvent) {
        if self.backoff.deferred().is_some() {
            return;
        }
        // A deleted table needs no comparison: rebuild at once.
        let ok = change != portd_kernel::events::TableEvent::TableDeleted
            && match self.kernel.observe(&self.plan) {
                Ok(Some(obs)) => obs.matches(&self.plan),
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!("reading the kernel state after a foreign change: {e}");
                    false
                }
            };
        if ok {
            self.drift_since = None;
            return;
        }
        let since = *self.drift_since.get_or_insert_with(Instant::now);
        match self.backoff.on_drift(Instant::now()) {
            Repair::Wait => {}
            Repair::StandBack(until) => {
                // checked again when the back-off is over
                self.timers.set_earliest(super::Timer::Repair, until);
                tracing::error!(
                    action = "standback",
                    "another program changed table inet {} {} times in {:?}; standing back for {:?}",
                    self.plan.table,
                    policy::REPAIR_BURST,
                    policy::REPAIR_WINDOW,
                    until.saturating_duration_since(Instant::now())
                );
            }
            Repair::Now => match self.timed(|k, plan| k.replace(plan), self.plan.element_count()) {
                Ok(()) => {
                    self.repairs += 1;
                    self.drift_since = None;
                    self.published.metrics.repaired(since.elapsed());
                    tracing::warn!(
                        table = %self.plan.table,
                        repairs = self.repairs,
                        action = "repair",
                        "table was {} by another program; restored",
                        if change == portd_kernel::events::TableEvent::TableDeleted { "deleted" } else { "changed" }
                    );
                }
                Err(e) => tracing::error!("restoring the table: {e}"),
            },
        }
    }

    /// The one way a change reaches the kernel: `delta` (from the current plan) as one
    /// element-level batch, else — the kernel drifted from what portd believes, or the
    /// change is structural — the whole new table, from `whole`, replaced in one batch.
    /// The time the kernel took goes to `portd_apply_duration_seconds`.
    pub(super) fn commit<'p>(
        &self,
        delta: &portd_rules::Delta,
        whole: impl FnOnce() -> std::borrow::Cow<'p, Plan>,
    ) -> Result<(), portd_kernel::nft::BackendError> {
        if delta.is_empty() {
            return Ok(());
        }
        // Once the change is in, the forwards it removes or changes start their counts over.
        let s = &delta.summary;
        let forget = || super::status::forget_shown(s.removed.iter().chain(s.changed.iter().map(|c| &c.0)));
        let t = Instant::now();
        if !delta.structural {
            match self.kernel_call(delta.size(), |k| k.change(&self.plan, delta)) {
                Ok(()) => {
                    self.published.metrics.applied(t.elapsed());
                    forget();
                    return Ok(());
                }
                Err(e @ portd_kernel::nft::BackendError::Outgrown { .. }) => {
                    tracing::info!("{e}; replacing the whole table with sets sized anew (counters start over)")
                }
                Err(e) => tracing::warn!("element-level change refused ({e}); replacing the whole table"),
            }
        }
        let whole = whole();
        let t = Instant::now();
        self.kernel_call(whole.element_count(), |k| self.relayout_or_replace(k, &whole))?;
        self.published.metrics.applied(t.elapsed());
        forget();
        Ok(())
    }

    /// Moves the kernel from the current plan to `new`, which may need other chains: by
    /// adding and deleting chains where only they and elements differ (sets and counters
    /// stay), else by replacing the table.
    pub(super) fn relayout_or_replace(
        &self,
        k: &dyn Kernel,
        new: &Plan,
    ) -> Result<(), portd_kernel::nft::BackendError> {
        if self.plan.chains != new.chains {
            match k.relayout(&self.plan, new) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!("changing the table's chains in place: {e}; replacing the table"),
            }
        }
        k.replace(new)
    }

    /// Runs a kernel call touching `objects` kernel objects; a large one quietly (see
    /// [`portd_kernel::events::Subscription::quietly`]), noting when another program committed meanwhile.
    pub(super) fn kernel_call<T>(
        &self,
        objects: usize,
        f: impl FnOnce(&dyn Kernel) -> Result<T, portd_kernel::nft::BackendError>,
    ) -> Result<T, portd_kernel::nft::BackendError> {
        let Some(events) = self.events.as_ref().filter(|_| objects >= QUIET_MIN_OBJECTS) else {
            return f(self.kernel.as_ref());
        };
        let (r, missed) = events.quietly(|| f(self.kernel.as_ref()));
        if missed {
            self.missed.set(true);
        }
        r
    }

    /// Runs one kernel call on the current plan (touching `objects` objects) and records
    /// its duration when it succeeds.
    pub(super) fn timed<T>(
        &self,
        f: impl FnOnce(&dyn Kernel, &Plan) -> Result<T, portd_kernel::nft::BackendError>,
        objects: usize,
    ) -> Result<T, portd_kernel::nft::BackendError> {
        let t = Instant::now();
        let r = self.kernel_call(objects, |k| f(k, &self.plan));
        if r.is_ok() {
            self.published.metrics.applied(t.elapsed());
        }
        r
    }
}
