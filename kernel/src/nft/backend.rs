//! [`Backend`]: the public face of the kernel side. Each method builds one batch (or one
//! dump) from a plan and hands it to the kept connection.
#![forbid(unsafe_code)]

use super::batch::{Builder, Subject};
use super::codec::Item;
use super::conn::Conn;
use super::error::{cstring, encode_err, BackendError};
use super::expr::{build_rule, chain_obj, SetIds};
use super::messages::SetMsg;
use super::observed::Observed;
use super::read::Reader;
use nftnl::{MsgType, ProtoFamily, Table};
use portd_rules::plan::{Delta, Plan, SetElements};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// How often `read` starts over when the table changes while it is dumped.
const READ_ATTEMPTS: u32 = 5;

/// The kernel side of portd: owns the table `inet <table>` and nothing else.
///
/// Changes go out on one netlink socket that stays open between them, in the network
/// namespace the first change was made in. Closing an nfnetlink socket makes nf_tables
/// wait for the deferred destruction of everything deleted since (an RCU grace period:
/// 7 to 30 ms here after deleting one element), so a socket per change would put that
/// wait on every removal.
pub struct Backend {
    table: String,
    tx: Mutex<Option<Conn>>,
    /// The netlink port id of `tx`'s socket (0: none opened yet), shared with whoever
    /// tells portd's own commits from others' (see [`Backend::commit_port`]).
    port: Arc<AtomicU32>,
    /// The size each set of the table was created with (`size N`), as far as this backend
    /// knows: set by a full apply, or read back from the kernel.
    sizes: Mutex<BTreeMap<String, u32>>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend").field("table", &self.table).finish_non_exhaustive()
    }
}

impl Backend {
    /// A backend for table `inet <table>`; no kernel access until a method is called.
    pub fn new(table: &str) -> Backend {
        Backend {
            table: table.to_string(),
            tx: Mutex::new(None),
            port: Arc::new(AtomicU32::new(0)),
            sizes: Mutex::new(BTreeMap::new()),
        }
    }

    /// The netlink port id of the socket this backend commits on, kept up to date when
    /// the socket is replaced (0 until the first change). The kernel puts the committing
    /// socket's port id in the `nlmsg_pid` of every notification of a transaction, its
    /// closing NFT_MSG_NEWGEN included; unlike the thread id in NFTA_GEN_PROC_PID, which
    /// the kernel gives as seen from the initial PID namespace, it is the same value
    /// portd sees in any PID namespace.
    pub fn commit_port(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.port)
    }

    /// Name of the table this backend owns.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Replaces the table with `plan` in one netlink batch: add table, delete table, add
    /// table, then sets with their elements, chains and rules. The kernel applies all of
    /// it or, on any error, none of it.
    pub fn apply(&self, plan: &Plan) -> Result<(), BackendError> {
        let table = self.table_of(plan)?;
        let ids = SetIds::of(plan);
        let t = Table::new(&table, ProtoFamily::Inet);
        let mut b = Builder::new(&table);
        // add table inet T; delete table inet T; add table inet T
        // (the first add makes the delete succeed when the table does not exist yet)
        b.push(&t, MsgType::Add, Subject::Table);
        b.push(&t, MsgType::Del, Subject::Table);
        b.push(&t, MsgType::Add, Subject::Table);
        for (i, set) in plan.sets.iter().enumerate() {
            // map NAME { type KEY : DATA; size N; counter; flags interval; elements = { ... } }
            let id = ids.by_index(i);
            let s = SetMsg::new(&table, set, id)?;
            b.push(&s, MsgType::Add, Subject::Set(&set.name));
            // encoded from the plan's packed elements, without decoding them
            let elements: Vec<Item<'_>> = set.elements.refs().map(Item).collect();
            b.push_elements(set, Some(id), &elements, MsgType::Add)?;
        }
        let mut chains = Vec::with_capacity(plan.chains.len());
        for c in &plan.chains {
            // chain NAME { type T hook H priority P; policy accept; }
            let chain = chain_obj(&t, c)?;
            b.push(&chain, MsgType::Add, Subject::Chain(&c.name));
            chains.push(chain);
        }
        for (c, chain) in plan.chains.iter().zip(&chains) {
            for r in &c.rules {
                let rule = build_rule(chain, r, &ids)?;
                b.push(&rule, MsgType::Add, Subject::Rule { chain: &c.name, rule: r });
            }
        }
        self.send(b)?;
        *lock(&self.sizes) = plan.sets.iter().filter_map(|s| Some((s.name.clone(), s.kernel_size()?))).collect();
        Ok(())
    }

    /// Changes the kernel from `old` to `new` element by element in one batch: delete
    /// elements, then add elements. A structural change
    /// (table, chains or set definitions) falls back to [`Backend::apply`] of `new`.
    pub fn apply_delta(&self, old: &Plan, new: &Plan) -> Result<(), BackendError> {
        let d = Plan::diff(old, new);
        if d.structural {
            return self.apply(new);
        }
        self.apply_changes(old, &d)
    }

    /// Changes the kernel from `old` to `new` when they differ in which chains the table
    /// has (a steer plan's NAT or raw chains coming or going) and in elements, but not in
    /// set definitions: one batch deletes the chains `new` lacks (base chains first, then
    /// the chains they jumped to; the kernel deletes their rules with them), changes the
    /// elements, and adds the chains `new` has more with their rules. The sets stay, and
    /// so do their counters. An error, and nothing changed, when a set definition or a
    /// chain of both differs: the caller replaces the table.
    pub fn apply_layout(&self, old: &Plan, new: &Plan) -> Result<(), BackendError> {
        let table = self.table_of(new)?;
        let (Some(d), Some((gone, come))) = (Plan::diff_elements(old, new), Plan::chain_changes(old, new)) else {
            return Err(encode_err(
                "change of the table's chains".to_string(),
                "the sets or a kept chain differ; replace the table",
            ));
        };
        self.check_sizes(old, &d)?;
        let ids = SetIds::of(new);
        let t = Table::new(&table, ProtoFamily::Inet);
        let mut b = Builder::new(&table);
        // delete chain inet T NAME: in the reverse of the plan's order (which puts a
        // chain before those that jump to it), so that nothing still jumps to a chain
        // when it goes
        for c in gone.iter().rev() {
            b.push(&chain_obj(&t, c)?, MsgType::Del, Subject::Chain(&c.name));
        }
        self.push_changes(&mut b, old, &d)?;
        let mut added = Vec::with_capacity(come.len());
        for c in &come {
            let chain = chain_obj(&t, c)?;
            b.push(&chain, MsgType::Add, Subject::Chain(&c.name));
            added.push(chain);
        }
        for (c, chain) in come.iter().zip(&added) {
            for r in &c.rules {
                let rule = build_rule(chain, r, &ids)?;
                b.push(&rule, MsgType::Add, Subject::Rule { chain: &c.name, rule: r });
            }
        }
        self.send(b)
    }

    /// Sends an element-level [`Delta`] from `current` in one batch. `current` supplies the
    /// table name, the set definitions (which a non-structural delta leaves as they are)
    /// and the number of elements each set holds before the change. Adds are exclusive,
    /// so a kernel that drifted from `current` refuses the whole batch.
    pub fn apply_changes(&self, current: &Plan, d: &Delta) -> Result<(), BackendError> {
        if d.structural {
            return Err(encode_err("element-level change".to_string(), "the delta is structural; use apply"));
        }
        if d.is_empty() {
            return Ok(());
        }
        let table = self.table_of(current)?;
        self.check_sizes(current, d)?;
        let mut b = Builder::new(&table);
        self.push_changes(&mut b, current, d)?;
        self.send(b)
    }

    /// A set the change would take past its size: the kernel would refuse the batch
    /// after working through it; say so before sending anything.
    fn check_sizes(&self, current: &Plan, d: &Delta) -> Result<(), BackendError> {
        let sizes = lock(&self.sizes);
        for set in &current.sets {
            let Some(&size) = sizes.get(&set.name) else { continue };
            let count = |list: &[SetElements]| {
                list.iter().filter(|s| s.set == set.name).map(|s| s.elements.len()).sum::<usize>()
            };
            let need = (set.elements.len() + count(&d.add_elements)).saturating_sub(count(&d.del_elements));
            if need > size as usize {
                return Err(BackendError::Outgrown { set: set.name.clone(), need, size });
            }
        }
        Ok(())
    }

    /// Pushes a delta's element deletions, then its additions, set by set.
    fn push_changes<'b>(&self, b: &mut Builder<'b>, current: &'b Plan, d: &'b Delta) -> Result<(), BackendError> {
        for (list, op) in [(&d.del_elements, MsgType::Del), (&d.add_elements, MsgType::Add)] {
            if let Some(s) = list.iter().find(|s| current.set(&s.set).is_none()) {
                return Err(encode_err(format!("change of set {}", s.set), "the plan has no such set"));
            }
            for set in &current.sets {
                // delete element inet T SET { ... } / add element inet T SET { ... }
                // encoded from the delta's packed elements, without decoding them
                let elements: Vec<Item<'_>> =
                    list.iter().filter(|s| s.set == set.name).flat_map(|s| s.elements.refs().map(Item)).collect();
                b.push_elements(set, None, &elements, op)?;
            }
        }
        Ok(())
    }

    /// What the kernel holds in the table now, decoded with the types of `expected`, or
    /// `None` when the table does not exist.
    pub fn read(&self, expected: &Plan) -> Result<Option<Observed>, BackendError> {
        let table = cstring("table name", &self.table)?;
        for _ in 0..READ_ATTEMPTS {
            let mut r = Reader::new(&table, &self.table)?;
            let raw = match r.read_all() {
                // A dump that a commit interrupted (NLM_F_DUMP_INTR): read again.
                Err(BackendError::Dump { source, .. }) if source.raw_os_error() == Some(libc::EINTR) => continue,
                other => other?,
            };
            let Some(raw) = raw else {
                return Ok(None);
            };
            if r.consistent() {
                let observed = raw.decode(expected);
                *lock(&self.sizes) = observed.set_sizes.clone();
                return Ok(Some(observed));
            }
        }
        Err(BackendError::Unstable { table: self.table.clone(), attempts: READ_ATTEMPTS })
    }

    /// Deletes the table; succeeds when it does not exist.
    pub fn remove(&self) -> Result<(), BackendError> {
        let table = cstring("table name", &self.table)?;
        let t = Table::new(&table, ProtoFamily::Inet);
        let mut b = Builder::new(&table);
        // add table inet T; delete table inet T (the add makes a missing table no error)
        b.push(&t, MsgType::Add, Subject::Table);
        b.push(&t, MsgType::Del, Subject::Table);
        self.send(b)
    }

    /// Sends a batch on the kept socket (opened on first use). A socket that saw any
    /// failure is closed rather than reused, so no stray answer can reach the next batch.
    fn send(&self, b: Builder<'_>) -> Result<(), BackendError> {
        let mut slot = lock(&self.tx);
        let mut conn = match slot.take() {
            Some(c) => c,
            None => {
                let c = Conn::open()?;
                self.port.store(c.portid(), Ordering::Relaxed);
                c
            }
        };
        conn.drain();
        let result = b.commit(&mut conn);
        if result.is_ok() {
            *slot = Some(conn);
        }
        result
    }

    /// The size each set was created with, as far as this backend knows.
    pub fn set_sizes(&self) -> BTreeMap<String, u32> {
        lock(&self.sizes).clone()
    }

    fn table_of(&self, plan: &Plan) -> Result<CString, BackendError> {
        if plan.table != self.table {
            return Err(encode_err(
                format!("plan for table inet {}", plan.table),
                format!("this backend owns table inet {} and touches no other", self.table),
            ));
        }
        cstring("table name", &self.table)
    }
}

/// Locks a mutex whose holder cannot leave it inconsistent (a poisoned lock is taken as is).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
