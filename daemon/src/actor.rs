//! The one actor that owns the kernel backend and the desired state. Connection
//! handlers send it [`Msg`]s and await the reply; it runs on its own thread because
//! netlink calls block, and it checks the kernel for drift between messages.

use crate::notify;
use crate::state::{Record, Store};
use portd::nft::Backend;
use portd_rules::plan::SYSTEM_OWNER;
use portd_rules::proto::{Body, Command, ErrorKind, ForwardStatus, Response, Status};
use portd_rules::{compile, parse_config, parse_rules, Config, Forward, GrantSubject, OnExit, OwnedSet, Plan};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// More repairs than this within [`REPAIR_WINDOW`] means another program is fighting us.
const REPAIR_BURST: usize = 50;
/// Window for [`REPAIR_BURST`].
const REPAIR_WINDOW: Duration = Duration::from_secs(1);
/// How long to stand back when another program keeps changing the table.
const REPAIR_BACKOFF: Duration = Duration::from_secs(5);

/// Who sent a request, from SO_PEERCRED and the account database.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid, when the kernel reports one.
    pub pid: Option<i32>,
    /// User name (or the uid as text when it has none).
    pub user: String,
    /// Names of the primary and supplementary groups.
    pub groups: Vec<String>,
}

impl Caller {
    /// The caller's own owner name.
    pub fn owner(&self) -> String {
        format!("user:{}", self.user)
    }
}

/// Messages to the actor.
// Each message moves once through a channel: boxing the request would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Msg {
    /// A client request.
    Request { caller: Caller, command: Command, reply: oneshot::Sender<Response> },
    /// SIGHUP: reload the config.
    Reload,
    /// Clean stop: apply `on_exit` and end.
    Shutdown { reply: oneshot::Sender<()> },
    /// A committed nf_tables transaction touched our table.
    Drift(crate::events::Change),
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
    users: BTreeMap<String, Vec<Forward>>,
    store: Store,
    backend: Backend,
    conntrack: crate::conntrack::Cleaner,
    plan: Plan,
    repairs: u64,
    recent_repairs: std::collections::VecDeque<Instant>,
    /// A check deferred by the repair back-off.
    deferred_check: Option<Instant>,
    /// When to hand freed heap back to the system (after a large change or read).
    trim_at: Option<Instant>,
}

type Failure = (ErrorKind, Vec<String>);

/// A file's located problems as a refusal.
fn invalid(d: portd_rules::Diagnostics) -> Failure {
    (ErrorKind::Invalid, d.0.iter().map(|d| d.to_string()).collect())
}

/// A change of one owner's set.
enum Change {
    /// The whole set (`portctl apply`).
    Replace(Vec<Forward>),
    /// One more forward (`portctl add`).
    Add(Forward),
    /// One forward fewer, by name (`portctl remove`).
    Remove(String),
}

fn err(kind: ErrorKind, msg: impl Into<String>) -> Failure {
    (kind, vec![msg.into()])
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

/// Returns freed heap to the system; glibc keeps it otherwise (freed pages between live
/// allocations are only released by malloc_trim, in every arena).
fn trim_heap() {
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Daemon {
    /// Restores persisted sets and puts the plan into the kernel. Called before READY=1.
    pub fn start(config_path: PathBuf, config: Config, overrides: Overrides) -> anyhow::Result<Daemon> {
        let mut store = Store::new(std::path::Path::new(&config.settings.state_dir));
        let persisted = store.load()?;
        let backend = Backend::new(&config.settings.table);
        let mut d = Daemon {
            config_path,
            plan: Plan::empty(&config.settings.table),
            config,
            overrides,
            users: BTreeMap::new(),
            store,
            backend,
            conntrack: crate::conntrack::Cleaner::spawn()?,
            repairs: 0,
            recent_repairs: Default::default(),
            deferred_check: None,
            trim_at: None,
        };
        // The config's set first, then each persisted set as an incremental change, so a
        // set that conflicts with what is already placed is skipped, not fatal.
        let mut plan = d.compile_with(&d.config, &BTreeMap::new()).map_err(|c| anyhow::anyhow!(c.join("; ")))?;
        for (owner, forwards) in persisted.sets {
            match plan.replace_owner(&owner, &forwards, d.config.settings.mark) {
                Ok(mut delta) => {
                    delta.take_into(&mut plan);
                    d.users.insert(owner, forwards);
                }
                Err(c) => {
                    let c: Vec<String> = c.iter().map(|c| c.to_string()).collect();
                    tracing::error!(owner = %owner, "persisted set not restored: {}", c.join("; "));
                }
            }
        }
        // Keep counters when the kernel already holds a table of ours (e.g. after a crash).
        let current = d.backend.read(&plan)?;
        match current {
            Some(obs) if obs.matches(&plan) => {}
            _ => d.backend.apply(&plan)?,
        }
        d.plan = plan;
        d.trim_soon();
        tracing::info!(
            table = %d.config.settings.table,
            forwards = d.plan.forwards.len(),
            owners = d.users.len() + 1,
            "rules are in the kernel"
        );
        Ok(d)
    }

    fn sets(config: &Config, users: &BTreeMap<String, Vec<Forward>>) -> Vec<OwnedSet> {
        let mut v = vec![OwnedSet { owner: SYSTEM_OWNER.into(), forwards: config.forwards.clone() }];
        v.extend(users.iter().map(|(o, f)| OwnedSet { owner: o.clone(), forwards: f.clone() }));
        v
    }

    fn compile_with(&self, config: &Config, users: &BTreeMap<String, Vec<Forward>>) -> Result<Plan, Vec<String>> {
        compile(&config.settings.table, config.settings.mark, &Self::sets(config, users))
            .map_err(|c| c.iter().map(|c| c.to_string()).collect())
    }

    /// One-line summary for systemd's STATUS=.
    pub fn status_line(&self) -> String {
        format!(
            "{} forward(s) from {} owner(s) in table inet {}",
            self.plan.forwards.len(),
            self.plan.forwards.iter().map(|f| &f.owner).collect::<std::collections::BTreeSet<_>>().len(),
            self.plan.table
        )
    }

    /// Runs until a Shutdown message (or every sender is gone).
    pub fn run(mut self, rx: Receiver<Msg>) {
        crate::events::mark_committer_thread();
        loop {
            let wake = match (self.deferred_check, self.trim_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let msg = match wake {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match msg {
                Ok(Msg::Request { caller, command, reply }) => {
                    let resp = match self.handle(&caller, command) {
                        Ok(body) => Response::ok(body),
                        Err((kind, messages)) => {
                            tracing::warn!(
                                uid = caller.uid,
                                pid = caller.pid,
                                "request refused: {}",
                                messages.join("; ")
                            );
                            Response::error(kind, messages)
                        }
                    };
                    let _ = reply.send(resp);
                }
                Ok(Msg::Reload) => {
                    notify::reloading();
                    if let Err((_, m)) = self.reload(None) {
                        tracing::error!("reload failed, keeping the running config: {}", m.join("; "));
                    }
                    notify::ready(&self.status_line());
                }
                Ok(Msg::Shutdown { reply }) => {
                    self.stop();
                    let _ = reply.send(());
                    return;
                }
                Ok(Msg::Drift(change)) => self.repair_if_drifted(change),
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    if self.trim_at.is_some_and(|t| t <= now) {
                        self.trim_at = None;
                        trim_heap();
                    }
                    if self.deferred_check.is_some_and(|t| t <= now) {
                        self.deferred_check = None;
                        self.repair_if_drifted(crate::events::Change::Unknown);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.stop();
                    return;
                }
            }
        }
    }

    fn stop(&mut self) {
        notify::stopping();
        match self.config.settings.on_exit {
            OnExit::Remove => match self.backend.remove() {
                Ok(()) => tracing::info!(table = %self.plan.table, "stopped; table removed (on_exit: remove)"),
                Err(e) => tracing::error!("removing table on exit: {e}"),
            },
            OnExit::Keep => tracing::info!(table = %self.plan.table, "stopped; rules kept (on_exit: keep)"),
        }
    }

    /// Puts the table back when another program deleted or edited it.
    fn repair_if_drifted(&mut self, change: crate::events::Change) {
        if self.deferred_check.is_some() {
            return;
        }
        // A deleted table needs no comparison: rebuild at once.
        let ok = change != crate::events::Change::TableDeleted
            && match self.backend.read(&self.plan) {
                Ok(Some(obs)) => obs.matches(&self.plan),
                Ok(None) => false,
                Err(e) => {
                    tracing::warn!("reading the kernel state after a foreign change: {e}");
                    false
                }
            };
        if ok {
            return;
        }
        let now = Instant::now();
        while self.recent_repairs.front().is_some_and(|t| now.duration_since(*t) > REPAIR_WINDOW) {
            self.recent_repairs.pop_front();
        }
        if self.recent_repairs.len() >= REPAIR_BURST {
            tracing::error!(
                "another program changed table inet {} {} times in {:?}; standing back for {:?}",
                self.plan.table,
                self.recent_repairs.len(),
                REPAIR_WINDOW,
                REPAIR_BACKOFF
            );
            self.recent_repairs.clear();
            self.deferred_check = Some(now + REPAIR_BACKOFF);
            return;
        }
        match self.backend.apply(&self.plan) {
            Ok(()) => {
                self.repairs += 1;
                self.recent_repairs.push_back(now);
                tracing::warn!(
                    table = %self.plan.table,
                    repairs = self.repairs,
                    "table was {} by another program; restored",
                    if change == crate::events::Change::TableDeleted { "deleted" } else { "changed" }
                );
            }
            Err(e) => tracing::error!("restoring the table: {e}"),
        }
    }

    fn target_owner(&self, caller: &Caller, owner: Option<String>) -> Result<String, Failure> {
        match owner {
            None => Ok(caller.owner()),
            Some(o) if caller.uid != 0 && o != caller.owner() => Err(err(
                ErrorKind::Denied,
                format!("only root may act for another owner ({o}); you are {}", caller.owner()),
            )),
            Some(o) if o == SYSTEM_OWNER => Err(err(
                ErrorKind::Invalid,
                format!("the system set comes from {}; edit it and run `portctl reload`", self.config_path.display()),
            )),
            Some(o) => match o.strip_prefix("user:") {
                Some(name) if portd_rules::load::valid_user(name) => Ok(o),
                _ => Err(err(ErrorKind::Invalid, format!("`{o}` is not an owner; owners are `system` or `user:NAME`"))),
            },
        }
    }

    /// Every forward must lie inside a grant of the caller (root needs none).
    fn authorize(&self, caller: &Caller, forwards: &[Forward]) -> Result<(), Failure> {
        if caller.uid == 0 {
            return Ok(());
        }
        let mine: Vec<_> = self
            .config
            .grants
            .iter()
            .filter(|g| match &g.subject {
                GrantSubject::User(u) => *u == caller.user,
                GrantSubject::Group(g) => caller.groups.contains(g),
            })
            .collect();
        let denied: Vec<String> = forwards
            .iter()
            .filter(|f| !mine.iter().any(|g| g.allows(f)))
            .map(|f| {
                if mine.is_empty() {
                    format!(
                        "forward `{}` ({} -> {}): user {} has no grant in {}",
                        f.name,
                        f.port,
                        f.to,
                        caller.user,
                        self.config_path.display()
                    )
                } else {
                    let allowed: Vec<String> = mine
                        .iter()
                        .map(|g| {
                            let p: Vec<String> = g.ports.iter().map(|p| p.to_string()).collect();
                            let t: Vec<String> = g.to.iter().map(|p| p.to_string()).collect();
                            format!("ports [{}] to [{}]", p.join(", "), t.join(", "))
                        })
                        .collect();
                    format!(
                        "forward `{}` ({} -> {}) is outside your grants: {}",
                        f.name,
                        f.port,
                        f.to,
                        allowed.join("; ")
                    )
                }
            })
            .collect();
        if denied.is_empty() {
            Ok(())
        } else {
            Err((ErrorKind::Denied, denied))
        }
    }

    /// Puts `plan` into the kernel as an element-level delta from the current plan. The
    /// delta is strict (exclusive adds), so if the kernel drifted from what portd believes
    /// it refuses it; then the whole table is replaced atomically instead.
    fn commit(&self, plan: &Plan) -> Result<(), portd::nft::BackendError> {
        match self.backend.apply_delta(&self.plan, plan) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!("element-level change refused ({e}); replacing the whole table");
                self.backend.apply(plan)
            }
        }
    }

    /// Changes `owner`'s set. Kernel first, then the state file; only then is the change
    /// acknowledged and kept in memory.
    fn change(&mut self, caller: &Caller, owner: &str, change: Change, dry_run: bool) -> Result<Body, Failure> {
        let t0 = Instant::now();
        let mark = self.config.settings.mark;
        // Only the forwards that differ are compiled: O(change), not O(table).
        let mut delta = match &change {
            Change::Replace(forwards) => self.plan.replace_owner(owner, forwards, mark),
            Change::Add(f) => self.plan.change_owner(owner, &[], std::slice::from_ref(f), mark),
            Change::Remove(name) => self.plan.change_owner(owner, &[name.as_str()], &[], mark),
        }
        .map_err(|c| (ErrorKind::Conflict, c.iter().map(|c| c.to_string()).collect()))?;
        if dry_run || delta.summary.is_empty() {
            return Ok(Body::changed(delta.summary, dry_run));
        }
        let t_compile = t0.elapsed();
        if let Err(e) = self.backend.apply_changes(&self.plan, &delta) {
            tracing::warn!("element-level change refused ({e}); replacing the whole table");
            let mut whole = self.plan.clone();
            delta.apply_in_place(&mut whole);
            self.backend.apply(&whole).map_err(|e| {
                err(ErrorKind::Kernel, format!("the kernel refused the change; nothing was changed: {e}"))
            })?;
        }
        let t_kernel = t0.elapsed();
        let record = Record::of(owner, &delta.summary);
        record.apply(&mut self.users);
        if let Err(e) = self.store.commit(&self.users, &record) {
            // Not acknowledged unless persisted: put the sets and the kernel back as they were.
            Record::undoing(owner, &delta.summary).apply(&mut self.users);
            if let Err(e2) = self.backend.apply(&self.plan) {
                tracing::error!("rolling back after a failed save: {e2}");
            }
            return Err(err(ErrorKind::Internal, format!("{e}; the change was rolled back")));
        }
        let t_save = t0.elapsed();
        delta.take_into(&mut self.plan);
        tracing::debug!(
            "change phases: compile {t_compile:?}, kernel {:?} ({} objects), save {:?}",
            t_kernel - t_compile,
            delta.size(),
            t_save - t_kernel
        );
        tracing::info!(
            uid = caller.uid,
            pid = caller.pid,
            owner = %owner,
            "applied change for uid {} (pid {}): {}",
            caller.uid,
            caller.pid.map_or("?".to_string(), |p| p.to_string()),
            delta.summary.log_line(LOG_FORWARDS)
        );
        self.conntrack.forget(crate::conntrack::stale_in_delta(&delta));
        notify::status(&self.status_line());
        if delta.size() > TRIM_AFTER_OBJECTS {
            self.trim_soon();
        }
        Ok(Body::changed(delta.summary, false))
    }

    fn reload(&mut self, caller: Option<&Caller>) -> Result<Body, Failure> {
        let text = std::fs::read_to_string(&self.config_path)
            .map_err(|e| err(ErrorKind::Invalid, format!("{}: {e}", self.config_path.display())))?;
        let config = parse_config(&self.config_path.display().to_string(), &text)
            .map_err(|d| (ErrorKind::Invalid, d.0.iter().map(|d| d.to_string()).collect()))?;
        let config = effective(config, &self.overrides);
        if config.settings.table != self.config.settings.table
            || config.settings.state_dir != self.config.settings.state_dir
            || config.settings.socket != self.config.settings.socket
        {
            return Err(err(
                ErrorKind::Invalid,
                "settings.table, settings.state_dir and settings.socket only change on restart; revert them or restart portd",
            ));
        }
        let plan = self.compile_with(&config, &self.users).map_err(|c| (ErrorKind::Conflict, c))?;
        let delta = Plan::diff(&self.plan, &plan);
        if !delta.is_empty() {
            self.commit(&plan).map_err(|e| {
                err(ErrorKind::Kernel, format!("the kernel refused the new config; nothing was changed: {e}"))
            })?;
        }
        let (uid, pid) = caller.map_or((None, None), |c| (Some(c.uid), c.pid));
        tracing::info!(
            uid,
            pid,
            "reloaded {} (by {}): {}",
            self.config_path.display(),
            uid.map_or("SIGHUP".to_string(), |u| format!("uid {u}")),
            delta.summary.log_line(LOG_FORWARDS)
        );
        self.conntrack.forget(crate::conntrack::stale_mappings(&self.plan, &plan));
        self.config = config;
        self.plan = plan;
        notify::status(&self.status_line());
        Ok(Body::changed(delta.summary, false))
    }

    /// Schedules [`trim_heap`] shortly after the current request.
    fn trim_soon(&mut self) {
        self.trim_at.get_or_insert_with(|| Instant::now() + TRIM_DELAY);
    }

    fn status(&mut self) -> Result<Body, Failure> {
        if self.plan.element_count() > TRIM_AFTER_OBJECTS {
            self.trim_soon();
        }
        let obs = self.backend.read(&self.plan).map_err(|e| err(ErrorKind::Kernel, e.to_string()))?;
        let in_sync = obs.as_ref().is_some_and(|o| o.matches(&self.plan));
        let forwards = self
            .plan
            .forwards
            .iter()
            .map(|p| {
                let (packets, bytes) = obs.as_ref().and_then(|o| o.counters.get(&p.counter).copied()).unwrap_or((0, 0));
                ForwardStatus { owner: p.owner.clone(), forward: p.forward.clone(), mark: p.mark, packets, bytes }
            })
            .collect();
        Ok(Body::Status(Status {
            daemon_version: env!("CARGO_PKG_VERSION").into(),
            table: self.plan.table.clone(),
            in_sync,
            repairs: self.repairs,
            forwards,
        }))
    }

    fn handle(&mut self, caller: &Caller, command: Command) -> Result<Body, Failure> {
        match command {
            Command::Status => self.status(),
            Command::Apply { file, text, dry_run, owner } => {
                let owner = self.target_owner(caller, owner)?;
                let rules = parse_rules(&file, &text).map_err(invalid)?;
                self.authorize(caller, &rules.forwards)?;
                self.change(caller, &owner, Change::Replace(rules.forwards), dry_run)
            }
            Command::Add { forward, owner, dry_run } => {
                let owner = self.target_owner(caller, owner)?;
                if self.plan.placed(&owner, &forward.name).is_some() {
                    return Err(err(
                        ErrorKind::Invalid,
                        format!("{owner} already has a forward `{}`; remove it first or use apply", forward.name),
                    ));
                }
                // Validate the new forward alone; its overlap with the rest of the set (and
                // with other owners) is found by change_owner through the keys it claims.
                let mut checked = portd_rules::load::validate_forwards("request", std::slice::from_ref(&forward))
                    .map_err(|d| (ErrorKind::Invalid, d.0.iter().map(|d| d.message.clone()).collect()))?;
                self.authorize(caller, &checked)?;
                let Some(forward) = checked.pop() else {
                    return Err(err(ErrorKind::Invalid, "no forward in the request"));
                };
                self.change(caller, &owner, Change::Add(forward), dry_run)
            }
            Command::Remove { name, owner, dry_run } => {
                let owner = self.target_owner(caller, owner)?;
                if self.plan.placed(&owner, &name).is_none() {
                    return Err(err(ErrorKind::Invalid, format!("{owner} has no forward `{name}`")));
                }
                self.change(caller, &owner, Change::Remove(name), dry_run)
            }
            Command::Export { owner } => {
                let owner = owner.unwrap_or_else(|| caller.owner());
                let forwards = if owner == SYSTEM_OWNER {
                    self.config.forwards.clone()
                } else {
                    self.users.get(&owner).cloned().unwrap_or_default()
                };
                Ok(Body::Export { owner, forwards })
            }
            Command::Reload => {
                if caller.uid != 0 {
                    return Err(err(ErrorKind::Denied, "only root may reload the config (or send SIGHUP to portd)"));
                }
                self.reload(Some(caller))
            }
        }
    }
}
