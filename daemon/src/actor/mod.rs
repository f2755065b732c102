//! The one actor that owns the kernel backend and the desired state. Connection
//! handlers send it [`Msg`]s and await the reply; it runs on its own thread because
//! netlink calls block, and it checks the kernel for drift between messages.
//!
//! It is the I/O shell around the policy core ([`portd_rules::policy`]): it looks up
//! accounts and sockets, asks the core which user forwards are active and which are
//! suspended, and puts the result into the kernel (kernel first, then the state file,
//! then the answer).

mod accounts;
mod change;
mod doctor;
mod drift;
mod error;
mod recent;
mod reload;
mod requests;
mod retiring;
mod start;
mod status;
mod timers;
mod turns;

use crate::notify;
use crate::state::Store;
use portd_kernel::Kernel;
use portd_rules::policy::{self, Backoff, Evaluation, Judge, Listeners, Repair, SetKey, UserSet};
use portd_rules::proto::LegacyTables;
use portd_rules::{Config, ListenerCheck, OnExit, Plan};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use timers::{Timer, Timers};
use tokio::sync::oneshot;

pub use accounts::{lookup as lookup_account, name_of, sys_uid_max};
pub use error::Error;
pub use requests::{Answer, Request};
pub use status::PendingStatus;

/// How often live user forwards are re-checked against the sockets of other uids.
const LISTENER_POLL: Duration = Duration::from_millis(500);
/// How often a steer plan checks whether another program turned conntrack on (or off):
/// until it does, that program's conntrack may track steered connections.
const CONNTRACK_POLL: Duration = Duration::from_secs(2);
/// How soon after another program's nftables commit conntrack is checked.
const CONNTRACK_SOON: Duration = Duration::from_millis(20);
/// How long conntrack must stay off before the raw untrack chains go: a firewall that
/// reloads (`nft flush ruleset`, then its rules again) turns conntrack off for a moment,
/// and connections made when it comes back would be tracked until portd noticed.
const CONNTRACK_HOLD: Duration = Duration::from_secs(5);
/// Binds of public ports by other uids logged one by one per batch of events (the rest
/// are counted in one record).
const BIND_LOG_MAX: usize = 20;

/// What the actor publishes for the server: the grants, to refuse callers without any
/// before their file is parsed.
#[derive(Debug, Default)]
pub struct Published {
    /// The current config's grants.
    pub grants: std::sync::RwLock<Vec<portd_rules::Grant>>,
    /// The live metrics instruments, updated by the actor and the server.
    pub metrics: crate::metrics::Metrics,
    /// Refused requests' log records, rate-limited per uid.
    pub refusals: crate::refusals::Refusals,
    /// Subordinate uid ranges, which the socket's per-uid caps count as their owner.
    pub subids: crate::subids::SubIds,
    /// Expensive reads in flight, shared by concurrent readers.
    pub reads: crate::coalesce::Reads,
}

/// Who sent a request, from SO_PEERCRED and the account database.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid, when the kernel reports one.
    pub pid: Option<i32>,
    /// User name (or the uid as text when it has none).
    pub user: String,
}

impl Caller {
    /// The caller's own owner.
    pub fn owner(&self) -> policy::Owner {
        policy::Owner::User(self.user.clone())
    }
    /// A caller whose name the actor looks up when it takes the request (with the account
    /// lookups it makes for the request anyway): one thread hop fewer than a lookup by the
    /// server first.
    pub fn unnamed(uid: u32, pid: Option<i32>) -> Caller {
        Caller { uid, pid, user: String::new() }
    }
    /// Fills in the name of an [`unnamed`](Caller::unnamed) caller.
    fn name(&mut self) {
        if self.user.is_empty() {
            self.user = name_of(self.uid).unwrap_or_else(|| self.uid.to_string());
        }
    }
    /// `uid 1001 (web)`, for logs.
    pub fn who(&self) -> String {
        if self.user == self.uid.to_string() {
            format!("uid {}", self.uid)
        } else {
            format!("uid {} ({})", self.uid, self.user)
        }
    }
}

/// Messages to the actor.
pub enum Msg {
    /// A client request.
    Request { caller: Caller, request: Request, reply: oneshot::Sender<Answer> },
    /// The plan and suspended forwards, for a status read off the actor's thread.
    Status { reply: oneshot::Sender<PendingStatus> },
    /// `portctl doctor`: answered by a thread of its own, from what the actor hands it.
    /// `legacy_tables`: the loaded legacy iptables tables as root's portctl read them.
    Doctor { legacy_tables: Option<LegacyTables>, reply: oneshot::Sender<Answer> },
    /// SIGHUP: reload the config.
    Reload,
    /// Clean stop: apply `on_exit` and end.
    Shutdown { reply: oneshot::Sender<()> },
    /// A committed nf_tables transaction touched our table.
    Drift(portd_kernel::events::TableEvent),
    /// The data plane reported binds of watched public ports; `ack` lets the waiting
    /// thread watch again once they are drained.
    BindEvents { ack: std::sync::mpsc::SyncSender<()> },
    /// /etc/passwd or /etc/group was replaced or written: judge every user set again.
    AccountsChanged,
    /// The conntrack thread deleted the flows of retired mappings (`job`, see
    /// [`retiring`]): their old targets' reservations may go.
    FlowsForgotten { job: u64 },
}

/// Settings the actor needs that come from flags rather than the config file.
pub struct Overrides {
    /// `--table`
    pub table: Option<String>,
    /// `--state-dir`
    pub state_dir: Option<PathBuf>,
}

/// The actor's state.
pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    overrides: Overrides,
    /// Every user set, active and suspended forwards alike, as persisted.
    users: BTreeMap<SetKey, UserSet>,
    /// Definition problems found when the state was loaded: owner -> name -> message.
    invalid: BTreeMap<SetKey, BTreeMap<String, String>>,
    /// The account behind each user set, as of the last start, reload or apply.
    accounts: BTreeMap<SetKey, Option<policy::Account>>,
    /// The sockets of the namespace at the last check.
    listeners: Option<Listeners>,
    /// Why a listener check failed, logged once until it works again.
    listener_error: Option<String>,
    /// Which other accounts held which ports lately, for new forwards' targets.
    recent: recent::RecentHolders,
    /// The policy's decision for every user forward; the plan holds its active ones.
    eval: Evaluation,
    store: Store,
    kernel: Box<dyn Kernel>,
    conntrack: portd_kernel::conntrack::Cleaner,
    plan: Plan,
    repairs: u64,
    backoff: Backoff,
    /// When to trim the heap, check the listeners, and repair again after the back-off.
    timers: Timers,
    /// A large commit ran while another program committed too, unheard: check the table.
    missed: std::cell::Cell<bool>,
    /// The drift listener's membership of the nf_tables event group, once it listens
    /// ([`Daemon::attach_events`]); large commits step out of it.
    events: Option<portd_kernel::events::Subscription>,
    /// What the server reads: the current grants.
    published: std::sync::Arc<Published>,
    /// Since when the kernel differs from the plan (a foreign change not yet repaired).
    drift_since: Option<Instant>,
    /// Since when the conntrack check has found conntrack off while the plan still
    /// untracks (see [`CONNTRACK_HOLD`]).
    conntrack_off_since: Option<Instant>,
    /// The BPF data plane: steering and kernel reservations, or why not.
    steering: crate::dataplane::Steering,
    /// Old targets of UDP forwards kept reserved until their flows are gone.
    retiring: retiring::Retiring,
}

/// Applies flag overrides to a freshly parsed config.
pub fn effective(mut config: Config, o: &Overrides) -> Config {
    if let Some(t) = &o.table {
        config.settings.table = t.clone();
    }
    if let Some(d) = &o.state_dir {
        config.settings.state_dir = d.display().to_string();
    }
    config
}

/// A change is logged with at most this many forwards, then how many more.
const LOG_FORWARDS: usize = 20;
/// A change or read of more kernel objects than this is followed by [`trim_heap`].
const TRIM_AFTER_OBJECTS: usize = 1000;
/// How long after such a request the heap is trimmed: by then the answer has been sent
/// and the connection's buffers, the parsed file and the delta have all been freed.
const TRIM_DELAY: Duration = Duration::from_millis(100);
/// A request puts a pending trim off by [`TRIM_DELAY`] (malloc_trim holds the heap for a
/// few milliseconds at 10,000 forwards: a request arriving meanwhile waits), but not
/// beyond this long after it was first due.
const TRIM_MAX_WAIT: Duration = Duration::from_secs(2);

/// Kernel calls touching more objects than this run with the event listener out of the
/// event group (see [`portd_kernel::events::Subscription::quietly`]).
const QUIET_MIN_OBJECTS: usize = 1000;

/// Returns freed heap to the system; glibc keeps it otherwise (freed pages between live
/// allocations are only released by malloc_trim, in every arena).
pub fn trim_heap() {
    // SAFETY: malloc_trim only releases free heap pages; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Daemon {
    /// Hands the actor the drift listener's membership of the event group: from now on,
    /// large commits are made with the listener out of it (see [`QUIET_MIN_OBJECTS`]).
    pub fn attach_events(&mut self, events: portd_kernel::events::Subscription) {
        self.events = Some(events);
    }

    /// Hands the current grants to the server.
    fn publish(&self) {
        let mut g = self.published.grants.write().unwrap_or_else(|p| p.into_inner());
        *g = self.config.grants.clone();
        drop(g);
        self.published.subids.reload();
    }

    fn judge(&self) -> Judge<'_> {
        Judge {
            grants: &self.config.grants,
            default_mark: self.config.settings.mark,
            listener_check: self.config.settings.listener_check,
            listeners: self.listeners.as_ref(),
            shadowed_by: self.recent.sys_uid_max(),
        }
    }

    /// The policy's decision for every user forward, given what is active now.
    fn evaluate(&self, before: &Evaluation) -> Evaluation {
        policy::evaluate(&self.judge(), &self.config, &self.users, &self.accounts, &self.invalid, before)
    }

    /// The whole plan of the system set and the active user forwards.
    fn desired_plan(&self) -> Result<Plan, Vec<String>> {
        let mut sets = vec![(policy::SYSTEM, self.config.forwards.iter().collect())];
        sets.extend(self.eval.active_forwards(&self.users).map(|(o, f)| (o.as_str(), f)));
        portd_rules::plan::compile_dispatched(
            &self.config.settings.table,
            self.config.settings.mark,
            self.steering.steers(),
            &sets,
        )
        .map(|mut plan| {
            plan.set_conntrack(self.plan.conntrack);
            plan
        })
        .map_err(|c| c.iter().map(|c| c.to_string()).collect())
    }

    /// Brings the data plane's maps in step with the plan the kernel now holds.
    fn sync_dataplane(&mut self) {
        self.sync_dataplane_with(&[], None);
    }

    /// [`Daemon::sync_dataplane`], with the claims of `extra` forwards besides those of
    /// the plan, the suspended forwards that keep theirs and the retiring ones; `extra_uid`
    /// is the uid of `extra`'s owner when its set is not bound yet.
    fn sync_dataplane_with(&mut self, extra: &[(&str, &portd_rules::model::Forward)], extra_uid: Option<(&str, u32)>) {
        let users = &self.users;
        let mut kept = retiring::claims_beside_the_plan(&self.eval, users, &self.retiring);
        kept.extend_from_slice(extra);
        let retiring = &self.retiring;
        let uid_of = |owner: &str| {
            users
                .get(owner)
                .and_then(|s| s.uid)
                .or_else(|| extra_uid.filter(|(o, _)| *o == owner).map(|(_, u)| u))
                .or_else(|| retiring.forwards().find(|(o, _, _)| *o == owner).map(|(_, u, _)| u))
        };
        if let Err(e) = self.steering.sync(&self.plan, &kept, uid_of) {
            tracing::error!("updating the BPF data plane: {e}; steered forwards may refuse connections until it works");
        }
    }

    /// The account database changed (a user deleted, a uid recycled, a user taken out of
    /// a granting group): every set is judged against it at once, not at the next reload.
    fn on_accounts_changed(&mut self) {
        let accounts = accounts::lookup_owners(self.users.keys());
        if accounts == self.accounts {
            return;
        }
        self.accounts = accounts;
        if let Err(e) = self.reevaluate("by a change of the account database") {
            tracing::error!("applying a change of the account database: {e}");
        }
    }

    /// Binds of a user forward's public port by other uids (a service coming back that
    /// the forward would shadow): the binds join the listener table and the forwards are judged at
    /// once, not at the next poll.
    fn on_bind_events(&mut self) {
        let events = self.steering.drain_events();
        if events.is_empty() {
            return;
        }
        // The event is the evidence (the kernel let the bind through): no dump of the
        // socket tables before acting on it (the next poll reads them whole). A bind the
        // table already records changes nothing: one uid binding and closing a port in a
        // loop costs one judgement and one log record per poll, not one per bind.
        let mut l = self.listeners.take().unwrap_or_default();
        let mut fresh = 0;
        for e in &events {
            let proto = match e.proto {
                portd_kernel::bpf::Proto::Tcp => portd_rules::Proto::Tcp,
                portd_kernel::bpf::Proto::Udp => portd_rules::Proto::Udp,
            };
            if l.holders(proto, e.port).any(|u| u == e.uid) {
                continue;
            }
            fresh += 1;
            if fresh <= BIND_LOG_MAX {
                tracing::info!(uid = e.uid, "port {}/{proto} was bound by uid {}", e.port, e.uid);
            }
            // bound, perhaps not yet listening: the socket table may not show it yet
            l.insert(proto, e.port, e.uid);
            if let Some(name) = accounts::name_of(e.uid) {
                l.name_uid(e.uid, name);
            }
        }
        if fresh > BIND_LOG_MAX {
            tracing::info!("{} more binds of public ports by other uids, not logged one by one", fresh - BIND_LOG_MAX);
        }
        self.listeners = Some(l);
        if fresh == 0 {
            return;
        }
        if let Err(e) = self.reevaluate("by a bind of its public port") {
            tracing::error!("applying a bind of a public port: {e}");
        }
    }

    /// True when some user forward has its listeners checked.
    fn has_checked_forwards(&self) -> bool {
        self.config.settings.listener_check != ListenerCheck::Off
            && self.users.iter().any(|(o, s)| {
                !s.forwards.is_empty() && self.accounts.get(o).and_then(Option::as_ref).is_some_and(|a| a.uid != 0)
            })
    }

    /// True when users may add forwards whose targets are checked: then the sockets are
    /// read even while no user forward exists, to know who held which port lately.
    fn watches_holders(&self) -> bool {
        self.config.settings.listener_check != ListenerCheck::Off && !self.config.grants.is_empty()
    }

    /// Reads the sockets of the namespace (when any user forward needs them, or users
    /// may add some: see [`recent`]).
    fn refresh_listeners(&mut self) {
        if !self.has_checked_forwards() {
            self.listeners = None;
            if self.watches_holders() {
                // Who holds what, without judging forwards on it (there are none).
                if let Ok(l) = portd_kernel::sockdiag::listeners(None, |_| None) {
                    self.recent.record(&l, Instant::now());
                }
            }
            return;
        }
        match portd_kernel::sockdiag::listeners(self.listeners.as_ref(), accounts::name_of) {
            Ok(l) => {
                if self.listener_error.take().is_some() {
                    tracing::info!("listener checks work again");
                }
                self.recent.record(&l, Instant::now());
                self.listeners = Some(l);
            }
            Err(e) => {
                let e = format!("reading the socket tables (NETLINK_SOCK_DIAG): {e}");
                if self.listener_error.as_deref() != Some(e.as_str()) {
                    tracing::error!("{e}; user forwards are not checked against other uids' sockets until it works");
                }
                self.listener_error = Some(e);
                self.listeners = None;
            }
        }
    }

    /// Schedules the next listener check. A check already due sooner keeps its time: no
    /// stream of changes, however fast, can put the check off.
    fn schedule_poll(&mut self) {
        if self.has_checked_forwards() || self.watches_holders() {
            self.timers.set_earliest(Timer::Poll, Instant::now() + LISTENER_POLL);
        } else {
            self.timers.cancel(Timer::Poll);
        }
    }

    /// Logs each forward that was suspended or resumed since `before`.
    fn log_transitions(&self, before: &Evaluation, when: &str) {
        let (suspended, resumed) = self.eval.transitions(before);
        for (owner, name, reason) in suspended {
            let (uid, user) = self.owner_account(owner);
            tracing::warn!(owner = %owner, uid, user, forward = %name.escape_debug(), action = "suspend", "forward {owner}/{} suspended {when}: {reason}", name.escape_debug());
        }
        for (owner, name) in resumed {
            let (uid, user) = self.owner_account(owner);
            tracing::info!(owner = %owner, uid, user, forward = %name, action = "resume", "forward {owner}/{name} resumed {when}: allowed again");
        }
    }

    /// The uid a user set is bound to and the user's name, for the journal fields.
    fn owner_account<'a>(&self, owner: &'a SetKey) -> (Option<u32>, Option<&'a str>) {
        let uid = self.users.get(owner).and_then(|s| s.uid);
        (uid, owner.user())
    }

    /// Re-judges every user forward (after a reload or a listener change) and puts the
    /// result into the kernel as one batch.
    fn reevaluate(&mut self, when: &str) -> Result<(), Error> {
        let before = std::mem::take(&mut self.eval);
        self.eval = self.evaluate(&before);
        if self.eval == before {
            return Ok(());
        }
        let plan = match self.desired_plan() {
            Ok(p) => p,
            Err(c) => {
                self.eval = before;
                return Err(Error::Conflict(c));
            }
        };
        self.claim_resumed(&plan);
        if let Err(source) = self.commit(&Plan::diff(&self.plan, &plan), || std::borrow::Cow::Borrowed(&plan)) {
            self.eval = before;
            self.sync_dataplane();
            return Err(Error::KernelRefused { what: "the change", source });
        }
        self.forget_flows(portd_kernel::conntrack::stale_mappings(&self.plan, &plan), None);
        self.conntrack.fresh(portd_kernel::conntrack::fresh_mappings(&self.plan, &plan));
        self.plan = plan;
        self.sync_dataplane();
        self.log_transitions(&before, when);
        notify::status(&self.status_line());
        Ok(())
    }

    /// One-line summary for systemd's STATUS=.
    pub fn status_line(&self) -> String {
        let suspended = self.eval.suspended_count();
        format!(
            "{} forward(s) from {} owner(s) in table inet {}{}",
            self.plan.forwards.len(),
            owner_count(&self.plan.forwards),
            self.plan.table,
            if suspended > 0 { format!(", {suspended} suspended") } else { String::new() }
        )
    }

    /// Runs until a Shutdown message (or every sender is gone).
    pub fn run(mut self, rx: Receiver<Msg>) {
        let mut waiting = turns::Turns::default();
        loop {
            if self.missed.take() {
                tracing::info!(
                    "another program committed to nf_tables during a large change of portd's; checking the table"
                );
                self.repair_if_drifted(portd_kernel::events::TableEvent::Unknown);
            }
            // Everything that arrived waits its turn (see `turns`); with nothing waiting,
            // the next message or timer.
            while let Ok(m) = rx.try_recv() {
                waiting.push(m);
            }
            let subids = &self.published.subids;
            let next = waiting.next(|m| match m {
                Msg::Request { caller, .. } => turns::Turn::Account(subids.account_of(caller.uid)),
                Msg::Shutdown { .. } => turns::Turn::Last,
                _ => turns::Turn::Now,
            });
            if matches!(next, Some(Msg::AccountsChanged)) {
                // one look at the account database answers every change waiting
                waiting.discard(|m| matches!(m, Msg::AccountsChanged));
            }
            let msg = match (next, self.timers.next()) {
                (Some(m), _) => Ok(m),
                (None, Some(at)) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                (None, None) => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Doctor { legacy_tables, reply }) => self.doctor(legacy_tables, reply),
                Ok(Msg::Request { mut caller, request, reply }) => {
                    caller.name();
                    let (owner, forward) = request.subject(&caller);
                    let answer = self.handle(&caller, request);
                    if let Err(e) = &answer {
                        let what = format!(
                            "request of {} (pid {})",
                            caller.who(),
                            caller.pid.map_or("?".to_string(), |p| p.to_string())
                        );
                        self.published.refusals.log(&crate::refusals::Refusal {
                            uid: caller.uid,
                            user: &caller.user,
                            owner: &owner,
                            forward: forward.as_deref(),
                            what: &what,
                            causes: &e.messages(),
                        });
                    }
                    let _ = reply.send(answer);
                    // From the end of the request: an apply takes tens of ms itself.
                    self.put_off_trim();
                }
                Ok(Msg::Status { reply }) => {
                    let _ = reply.send(self.pending_status());
                }
                Ok(Msg::Reload) => {
                    notify::reloading();
                    if let Err(e) = self.reload(None, false, None) {
                        tracing::error!("reload failed, keeping the running config: {e}");
                    }
                    notify::ready(&self.status_line());
                }
                Ok(Msg::Shutdown { reply }) => {
                    self.stop();
                    let _ = reply.send(());
                    return;
                }
                Ok(Msg::Drift(portd_kernel::events::TableEvent::Elsewhere)) => {
                    // A firewall may have turned conntrack on or off: check soon, once
                    // for a burst of commits.
                    if self.plan.steer {
                        self.timers.set_earliest(Timer::Conntrack, Instant::now() + CONNTRACK_SOON);
                    }
                }
                Ok(Msg::Drift(change)) => {
                    self.repair_if_drifted(change);
                    self.steering.repair();
                }
                Ok(Msg::AccountsChanged) => self.on_accounts_changed(),
                Ok(Msg::FlowsForgotten { job }) => self.flows_forgotten(job),
                Ok(Msg::BindEvents { ack }) => {
                    self.on_bind_events();
                    let _ = ack.send(());
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            }
            let now = Instant::now();
            for timer in self.timers.take_due(now) {
                match timer {
                    Timer::Trim => trim_heap(),
                    Timer::Repair => {
                        if self.backoff.due(now) {
                            self.repair_if_drifted(portd_kernel::events::TableEvent::Unknown);
                        }
                    }
                    Timer::Poll => self.poll_listeners(),
                    Timer::Conntrack => self.poll_conntrack(),
                }
            }
        }
    }

    /// The periodic conntrack check of steer plans: where another program's rules turned
    /// conntrack on, raw chains untrack steered connections at once; where nothing has
    /// for [`CONNTRACK_HOLD`], they go (steered packets then pass one chain of portd's).
    /// Only chains change.
    fn poll_conntrack(&mut self) {
        if !self.plan.steer {
            return;
        }
        self.timers.set_earliest(Timer::Conntrack, Instant::now() + CONNTRACK_POLL);
        let on = self.kernel.conntrack_active();
        if on {
            self.conntrack_off_since = None;
        }
        if on == self.plan.conntrack {
            return;
        }
        if !on {
            let since = *self.conntrack_off_since.get_or_insert_with(Instant::now);
            if since.elapsed() < CONNTRACK_HOLD {
                let next = since + CONNTRACK_HOLD;
                self.timers.set_earliest(Timer::Conntrack, next);
                return;
            }
        }
        self.conntrack_off_since = None;
        let mut new = self.plan.clone();
        if !new.set_conntrack(on) {
            self.plan.conntrack = on;
            return;
        }
        let t = Instant::now();
        match self.kernel_call(new.element_count(), |k| self.relayout_or_replace(k, &new)) {
            Ok(()) => {
                self.published.metrics.applied(t.elapsed());
                tracing::info!(
                    "conntrack {} in this namespace: steered connections {}",
                    if on { "runs" } else { "no longer runs" },
                    if on { "are untracked by raw chains now" } else { "pass no raw chain now" }
                );
                self.plan = new;
            }
            Err(e) => tracing::error!("adapting the table to conntrack ({e}); trying again in {CONNTRACK_POLL:?}"),
        }
    }

    /// The periodic listener check: suspends user forwards whose target port a socket of
    /// another uid holds, and resumes them when it is theirs or free again.
    fn poll_listeners(&mut self) {
        self.timers.cancel(Timer::Poll);
        self.steering.repair();
        if self.steering.maps_check_due() {
            self.steering.reread();
            self.sync_dataplane();
        }
        let old = self.listeners.clone();
        self.refresh_listeners();
        if self.listeners != old {
            if let Err(e) = self.reevaluate("by the listener check") {
                tracing::error!("applying the listener check: {e}");
            }
        }
        self.schedule_poll();
    }

    fn stop(&mut self) {
        notify::stopping();
        match self.config.settings.on_exit {
            OnExit::Remove => {
                match self.kernel.remove() {
                    Ok(()) => tracing::info!(table = %self.plan.table, "stopped; table removed (on_exit: remove)"),
                    Err(e) => tracing::error!("removing table on exit: {e}"),
                }
                self.steering.remove();
            }
            OnExit::Keep => tracing::info!(table = %self.plan.table, "stopped; rules kept (on_exit: keep)"),
        }
    }

    /// Puts a pending trim off while requests keep coming (see [`TRIM_MAX_WAIT`]).
    fn put_off_trim(&mut self) {
        self.timers.put_off(Timer::Trim, Instant::now() + TRIM_DELAY, TRIM_MAX_WAIT);
    }

    /// Schedules [`trim_heap`] shortly after the current request.
    fn trim_soon(&mut self) {
        schedule_trim(&mut self.timers);
    }
}

/// Schedules [`trim_heap`] [`TRIM_DELAY`] from now unless a trim is pending already; a
/// free function so that a request can schedule one while it borrows other fields.
fn schedule_trim(timers: &mut Timers) {
    timers.set_unless_pending(Timer::Trim, Instant::now() + TRIM_DELAY);
}

/// Number of owners in `forwards`, which a plan keeps grouped by owner: one binary
/// search per owner, so a STATUS= line after each change costs O(owners · log N), not a
/// sort of every forward.
fn owner_count(forwards: &[portd_rules::plan::PlacedForward]) -> usize {
    let mut rest = forwards;
    let mut n = 0;
    while let Some(first) = rest.first() {
        n += 1;
        rest = &rest[rest.partition_point(|p| p.owner == first.owner).max(1)..];
    }
    n
}

#[cfg(test)]
mod tests;
