//! The seam between the actor and the kernel: the four things the actor asks of the
//! nftables table it owns. [`crate::nft::Backend`] is the real one; the actor's unit
//! tests use a fake that records batches and can refuse them, so the shell (commits,
//! rollback, repair back-off) is tested without root.

#![forbid(unsafe_code)]

use crate::nft::{Backend, BackendError, Observed};
use portd_rules::{Delta, Plan};

/// What the actor needs from the kernel.
pub trait Kernel: Send {
    /// Replaces the whole table with `plan` in one batch.
    fn replace(&self, plan: &Plan) -> Result<(), BackendError>;
    /// Applies an element-level `delta` from `current` in one batch; refused (and nothing
    /// changed) when the kernel does not hold `current` or the delta is structural.
    fn change(&self, current: &Plan, delta: &Delta) -> Result<(), BackendError>;
    /// Changes the table from `current` to `new`, which differ in which chains the table
    /// has, keeping its sets and their counters; refused (and nothing changed) when their
    /// set definitions or a chain of both differ.
    fn relayout(&self, current: &Plan, new: &Plan) -> Result<(), BackendError>;
    /// Reads the table back (`None`: it does not exist), decoded with `plan`'s types.
    fn observe(&self, plan: &Plan) -> Result<Option<Observed>, BackendError>;
    /// Removes the table.
    fn remove(&self) -> Result<(), BackendError>;
    /// Whether connection tracking runs in the namespace ([`crate::conntrack::active`]);
    /// true when that cannot be told.
    fn conntrack_active(&self) -> bool {
        true
    }
}

impl Kernel for Backend {
    fn replace(&self, plan: &Plan) -> Result<(), BackendError> {
        self.apply(plan)
    }
    fn change(&self, current: &Plan, delta: &Delta) -> Result<(), BackendError> {
        self.apply_changes(current, delta)
    }
    fn relayout(&self, current: &Plan, new: &Plan) -> Result<(), BackendError> {
        self.apply_layout(current, new)
    }
    fn observe(&self, plan: &Plan) -> Result<Option<Observed>, BackendError> {
        self.read(plan)
    }
    fn remove(&self) -> Result<(), BackendError> {
        Backend::remove(self)
    }
    fn conntrack_active(&self) -> bool {
        crate::conntrack::active().unwrap_or_else(|e| {
            tracing::debug!("cannot tell whether conntrack runs here ({e}): steered connections are untracked");
            true
        })
    }
}
