//! The policy core: who owns a set, what a grant allows, and which forwards of the user
//! sets are active (in the kernel) or suspended (kept, out of the kernel) and why.
//!
//! Values in, decisions out. The daemon looks up accounts and sockets and reads the clock;
//! this module only decides, so every rule of delegation is unit-tested without root.
//!
//! A user forward is judged at apply, at every reload, at every start, and (for listener
//! ownership) once a second. What it needs, in order: a valid definition, the account
//! that applied it (same name, same uid), a grant that allows its ports, targets,
//! `protect`, `local` and mark, room in the grant's quota, no socket of another uid on its
//! target port, and no other owner's forward on its public port (the system set first,
//! then forwards active before, then the rest).

use crate::model::{Config, Family, Forward, Grant, GrantSubject, ListenerCheck, PortRange, Proto};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

pub use crate::listeners::{who, Listeners};
pub use crate::owner::{valid_user, Owner, SetKey, SYSTEM};

/// A user as the account database describes it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Names of its primary and supplementary groups.
    pub groups: Vec<String>,
}

/// One user's set as kept by the daemon: the uid that applied it and its forwards
/// (active and suspended alike).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserSet {
    /// The uid the set belongs to (`None` only for state written before sets were bound).
    pub uid: Option<u32>,
    /// The forwards, in the order they were first added.
    pub forwards: Vec<Forward>,
}

/// Why a forward is not in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The persisted definition is invalid (message names the file and line).
    Invalid(String),
    /// The account that applied the set no longer exists.
    UserGone {
        /// The user name.
        user: String,
    },
    /// The name now belongs to another uid than the one that applied the set.
    UidChanged {
        /// The user name.
        user: String,
        /// The uid the set belongs to.
        bound: u32,
        /// The uid the name has now.
        now: u32,
    },
    /// No grant allows it (message names the field).
    NotGranted(String),
    /// The set holds more forwards than the grant's `max_forwards`.
    Quota {
        /// The quota.
        max: u32,
    },
    /// The set would place more kernel elements than the grant's `max_elements` or
    /// `max_source_elements`.
    Elements {
        /// `max_elements` or `max_source_elements`.
        field: &'static str,
        /// The budget.
        max: u64,
        /// What the set up to and including this forward would place.
        cost: u64,
    },
    /// Another owner's forward claims the same public port/proto/family.
    Conflict(String),
    /// A socket of another uid holds the target port.
    Listener {
        /// The port.
        port: u16,
        /// Its protocol.
        proto: Proto,
        /// `uid N (name)`.
        holder: String,
    },
    /// A socket of another uid serves the public port: the forward would take its
    /// clients (a service that came back after the forward was applied).
    Shadows {
        /// The public port.
        port: u16,
        /// Its protocol.
        proto: Proto,
        /// `uid N (name)`.
        holder: String,
    },
}

impl Reason {
    /// True for reasons that keep the forward's public ports reserved while suspended:
    /// another user cannot take the public port of an app that is restarting, nor the
    /// public port of a forward standing back for a service of another uid (which
    /// would hand it to the first owner that asks when the service goes).
    pub fn keeps_claim(&self) -> bool {
        matches!(self, Reason::Listener { .. } | Reason::Shadows { .. })
    }
    /// True when the refusal is the caller's lack of rights (exit 4), not a bad file or
    /// conflict (exit 1).
    pub fn is_denial(&self) -> bool {
        !matches!(self, Reason::Invalid(_) | Reason::Conflict(_))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Invalid(m) => write!(f, "invalid: {m}"),
            Reason::UserGone { user } => write!(f, "user {user} no longer exists"),
            Reason::UidChanged { user, bound, now } => write!(
                f,
                "the set was applied by uid {bound}, but the name {user} now belongs to uid {now}; it is never handed to another account"
            ),
            Reason::NotGranted(m) => f.write_str(m),
            Reason::Quota { max } => write!(f, "over the grant's max_forwards ({max})"),
            Reason::Elements { field, max, cost } => write!(
                f,
                "the set would place {cost} {} in the kernel; your grant allows {field}: {max}",
                if *field == "max_elements" { "elements" } else { "source elements" }
            ),
            Reason::Conflict(m) => f.write_str(m),
            Reason::Listener { port, proto, holder } => {
                write!(f, "target port {port}/{proto} is held by a socket of {holder}")
            }
            Reason::Shadows { port, proto, holder } => {
                write!(f, "public port {port}/{proto} is served by a socket of {holder}; the forward would take its clients")
            }
        }
    }
}

/// The grants that apply to `account`: by user name, or by one of its groups.
pub fn grants_of<'g>(grants: &'g [Grant], account: &Account) -> Vec<&'g Grant> {
    grants
        .iter()
        .filter(|g| match &g.subject {
            GrantSubject::User(u) => *u == account.name,
            GrantSubject::Group(g) => account.groups.iter().any(|x| x == g),
        })
        .collect()
}

/// The quota of a user's set: the largest `max_forwards` of its grants (0 with none).
pub fn quota(grants: &[&Grant]) -> u32 {
    grants.iter().map(|g| g.max_forwards).max().unwrap_or(0)
}

fn ranges(v: &[PortRange]) -> String {
    v.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
}

/// Checks one forward against the user's grants: one grant must allow its public and
/// target ranges, `protect`, `local` and effective mark. The error names the field.
pub fn authorize(grants: &[&Grant], user: &str, f: &Forward, default_mark: u32) -> Result<(), String> {
    if grants.is_empty() {
        return Err(format!("forward `{}`: user {user} has no grant", f.name));
    }
    let mark = f.mark.unwrap_or(default_mark);
    let mut best: Option<String> = None;
    for g in grants {
        if !g.ports.iter().any(|r| r.contains(&f.port)) || !g.to.iter().any(|r| r.contains(&f.to)) {
            continue;
        }
        let refusal = if f.protect && !g.protect {
            Some(format!("forward `{}`: protect: your grant does not allow `protect: true`", f.name))
        } else if f.local && !g.local {
            Some(format!(
                "forward `{}`: local: your grant does not allow redirecting the host's own connections; set `local: false`",
                f.name
            ))
        } else if !g.allows_mark(mark, default_mark) {
            let allowed = match &g.marks {
                None => format!("{default_mark:#x} (settings.mark) or 0"),
                Some(l) => l.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", "),
            };
            Some(format!("forward `{}`: mark: {mark:#x} is not allowed by your grant (allowed: {allowed})", f.name))
        } else {
            None
        };
        match refusal {
            None => return Ok(()),
            Some(r) => {
                best.get_or_insert(r);
            }
        }
    }
    Err(best.unwrap_or_else(|| {
        let allowed: Vec<String> =
            grants.iter().map(|g| format!("ports [{}] to [{}]", ranges(&g.ports), ranges(&g.to))).collect();
        format!("forward `{}` ({} -> {}) is outside your grants: {}", f.name, f.port, f.to, allowed.join("; "))
    }))
}

/// Problems of one forward's own definition, as `(field, message)`: the rules of
/// [`crate::validate::forward`], which every entry path calls, on a copy of `f`.
pub fn check_definition(f: &Forward) -> Vec<(&'static str, String)> {
    crate::validate::forward(&mut f.clone()).into_iter().map(|p| (p.field, p.message)).collect()
}

/// The element budgets of a user's set: the largest `max_elements` and
/// `max_source_elements` of its grants (0 with none).
pub fn element_budget(grants: &[&Grant]) -> crate::budget::Cost {
    crate::budget::Cost {
        elements: grants.iter().map(|g| g.max_elements).max().unwrap_or(0),
        sources: grants.iter().map(|g| g.max_source_elements).max().unwrap_or(0),
    }
}

/// What the judge needs besides the set itself.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    /// Every grant of the config.
    pub grants: &'a [Grant],
    /// `settings.mark`.
    pub default_mark: u32,
    /// `settings.listener_check`.
    pub listener_check: ListenerCheck,
    /// The sockets of the namespace, when checked.
    pub listeners: Option<&'a Listeners>,
    /// The highest uid whose socket on a forward's public port makes it stand back
    /// ([`Reason::Shadows`]). `u32::MAX` for a new forward: it may not take over any
    /// other account's port. For a forward in place, the highest uid of a system
    /// account: a service of root or a system account that comes back on the public
    /// port gets it back, while a user's socket bound there later (a public port of
    /// 1024 or more is open to every account's bind; the kernel hook refuses it where
    /// target ports are reserved) gets none of the forward's connections and no say.
    pub shadowed_by: u32,
}

impl Judge<'_> {
    /// The reason each forward of one user set cannot be active, if any (same order as
    /// `set.forwards`), leaving conflicts between owners to [`place`]. `account` is what
    /// the account database says of the set's user now; `invalid` holds the definition
    /// problems found when the set was loaded, by forward name.
    pub fn judge(
        &self,
        user: &str,
        set: &UserSet,
        account: Option<&Account>,
        invalid: &BTreeMap<String, String>,
    ) -> Vec<Option<Reason>> {
        let account_problem = match account {
            None => Some(Reason::UserGone { user: user.to_string() }),
            Some(a) => set.uid.filter(|b| *b != a.uid).map(|bound| Reason::UidChanged {
                user: user.to_string(),
                bound,
                now: a.uid,
            }),
        };
        let mine = account.map(|a| grants_of(self.grants, a)).unwrap_or_default();
        let max = quota(&mine) as usize;
        let budget = element_budget(&mine);
        let mut spent = crate::budget::Cost::default();
        set.forwards
            .iter()
            .enumerate()
            .map(|(i, f)| {
                if let Some(m) = invalid.get(&f.name) {
                    return Some(Reason::Invalid(m.clone()));
                }
                let account = match (&account_problem, account) {
                    (Some(r), _) => return Some(r.clone()),
                    (None, None) => return Some(Reason::UserGone { user: user.to_string() }),
                    (None, Some(a)) => a,
                };
                if account.uid == 0 {
                    return None;
                }
                if let Err(m) = authorize(&mine, user, f, self.default_mark) {
                    return Some(Reason::NotGranted(m));
                }
                if i >= max {
                    return Some(Reason::Quota { max: max as u32 });
                }
                let mut after = spent;
                after += crate::budget::cost(f, self.default_mark);
                if after.elements > budget.elements {
                    return Some(Reason::Elements {
                        field: "max_elements",
                        max: budget.elements,
                        cost: after.elements,
                    });
                }
                if after.sources > budget.sources {
                    return Some(Reason::Elements {
                        field: "max_source_elements",
                        max: budget.sources,
                        cost: after.sources,
                    });
                }
                spent = after;
                if self.listener_check == ListenerCheck::Enforce {
                    if let Some(l) = self.listeners {
                        return target_taken(l, f, account.uid)
                            .or_else(|| public_shadowed(l, f, account.uid, self.shadowed_by));
                    }
                }
                None
            })
            .collect()
    }
}

/// A socket of another uid on `f`'s target ports, as a reason.
pub fn target_taken(l: &Listeners, f: &Forward, uid: u32) -> Option<Reason> {
    f.proto.protos().iter().find_map(|&proto| {
        l.foreign_in(proto, f.to, uid).map(|(port, holder)| Reason::Listener { port, proto, holder: l.who(holder) })
    })
}

/// A socket of another uid, up to `max_holder`, on `f`'s public ports, as a reason.
pub fn public_shadowed(l: &Listeners, f: &Forward, uid: u32, max_holder: u32) -> Option<Reason> {
    f.proto.protos().iter().find_map(|&proto| {
        l.held_in(proto, f.port, |h| h != uid && h <= max_holder).map(|(port, holder)| Reason::Shadows {
            port,
            proto,
            holder: l.who(holder),
        })
    })
}

/// A socket of another uid on `f`'s public ports (a service the forward would shadow).
pub fn public_taken(l: &Listeners, f: &Forward, uid: u32) -> Option<String> {
    f.proto.protos().iter().find_map(|&proto| {
        l.foreign_in(proto, f.port, uid).map(|(port, holder)| {
            format!(
                "forward `{}`: public port {port}/{proto} is served by a socket of {}; the forward would take its traffic",
                f.name,
                l.who(holder)
            )
        })
    })
}

/// Target ports of `f` on which nothing listens yet (the app may start later).
pub fn target_unserved(l: &Listeners, f: &Forward) -> Option<String> {
    let missing: Vec<String> =
        f.proto.protos().iter().filter(|&&p| !l.any_in(p, f.to)).map(|p| format!("{}/{p}", f.to)).collect();
    (!missing.is_empty()).then(|| format!("forward `{}`: nothing listens on {} yet", f.name, missing.join(" and ")))
}

/// Public port claims placed so far, as disjoint ranges per family and protocol.
#[derive(Debug, Default)]
pub struct PlacedClaims<'a> {
    /// (family, proto, start) -> (end, owner, forward name), borrowed from the sets
    placed: BTreeMap<(Family, Proto, u16), (u16, &'a str, &'a str)>,
}

impl<'a> PlacedClaims<'a> {
    /// The owner and name of a placed forward overlapping `f`'s public ports, if any.
    pub fn clash(&self, f: &Forward) -> Option<(&str, &str)> {
        for &fam in f.family.families() {
            for &proto in f.proto.protos() {
                let below = self.placed.range((fam, proto, 0)..=(fam, proto, f.port.end)).next_back();
                if let Some(((_, _, _), (end, owner, name))) = below {
                    if *end >= f.port.start {
                        return Some((owner, name));
                    }
                }
            }
        }
        None
    }
    /// Places `f` (which must not clash).
    pub fn put(&mut self, owner: &'a str, f: &'a Forward) {
        for &fam in f.family.families() {
            for &proto in f.proto.protos() {
                self.placed.insert((fam, proto, f.port.start), (f.port.end, owner, f.name.as_str()));
            }
        }
    }
}

/// Target ports placed so far, per protocol: each is one owner's (that owner's app serves
/// it, and with `ownership: kernel` it is reserved for the owner's uid), whoever placed it
/// first keeps it; one owner's forwards may share a target.
#[derive(Debug, Default)]
pub struct TargetClaims<'a> {
    placed: std::collections::HashMap<(Proto, u16), (&'a str, &'a str)>,
}

impl<'a> TargetClaims<'a> {
    /// The first target port of `f` that another owner's forward holds: (port, protocol,
    /// owner, name).
    pub fn clash(&self, owner: &str, f: &Forward) -> Option<(u16, Proto, &'a str, &'a str)> {
        self.clash_on(owner, f, f.to)
    }

    /// The first of `ports` (of `f`'s protocols) that is a target port of another
    /// owner's forward: (port, protocol, owner, name).
    fn clash_on(&self, owner: &str, f: &Forward, ports: PortRange) -> Option<(u16, Proto, &'a str, &'a str)> {
        f.proto.protos().iter().find_map(|&proto| {
            ports.ports().find_map(|port| {
                let (o, n) = self.placed.get(&(proto, port)).filter(|(o, _)| *o != owner)?;
                Some((port, proto, *o, *n))
            })
        })
    }
    /// Places `f`'s target ports (a port placed already keeps its first owner).
    pub fn put(&mut self, owner: &'a str, f: &'a Forward) {
        for &proto in f.proto.protos() {
            for port in f.to.ports() {
                self.placed.entry((proto, port)).or_insert((owner, f.name.as_str()));
            }
        }
    }
}

fn target_of_another(f: &Forward, port: u16, proto: Proto, owner: &str, name: &str) -> String {
    format!(
        "forward `{}`: target port {port}/{proto} is the target of {owner}/{name}; a target port serves one owner",
        f.name
    )
}

/// A refusal for each forward of `fresh` (owner `owner`) with a target port of another
/// owner's forward in `others`.
pub fn targets_taken<'a, I>(others: I, owner: &str, fresh: &[Forward]) -> Vec<String>
where
    I: Iterator<Item = (&'a str, &'a Forward)> + Clone,
{
    on_others_targets(others, owner, fresh, |f| f.to, target_of_another)
}

/// A refusal for each forward of `fresh` (owner `owner`) with a public port that is a
/// target port of another owner's forward in `others`: that owner's app listens there
/// (its port reserved for it), and this forward would take the port's own clients and
/// keep the app from binding it again while it restarts.
pub fn publics_on_targets<'a, I>(others: I, owner: &str, fresh: &[Forward]) -> Vec<String>
where
    I: Iterator<Item = (&'a str, &'a Forward)> + Clone,
{
    let refuse = |f: &Forward, port: u16, proto: Proto, o: &str, n: &str| {
        format!("forward `{}`: public port {port}/{proto} is the target of {o}/{n}; that owner's app serves it", f.name)
    };
    on_others_targets(others, owner, fresh, |f| f.port, refuse)
}

/// A refusal (`refuse(forward, port, protocol, owner, name)`) for each forward of
/// `fresh` whose ports `ports_of` picks include a target port of another owner's
/// forward in `others`. A few fresh forwards are compared with each of the others (no
/// index to build: one `portctl add` stays cheap in a large plan).
fn on_others_targets<'a, I>(
    others: I,
    owner: &str,
    fresh: &[Forward],
    ports_of: impl Fn(&Forward) -> PortRange,
    refuse: impl Fn(&Forward, u16, Proto, &str, &str) -> String,
) -> Vec<String>
where
    I: Iterator<Item = (&'a str, &'a Forward)> + Clone,
{
    if fresh.len() <= 16 {
        return fresh
            .iter()
            .filter_map(|f| {
                let ports = ports_of(f);
                others.clone().filter(|(o, _)| *o != owner).find_map(|(o, g)| {
                    let proto = *f.proto.protos().iter().find(|p| g.proto.protos().contains(p))?;
                    ports.overlaps(&g.to).then(|| refuse(f, ports.start.max(g.to.start), proto, o, &g.name))
                })
            })
            .collect();
    }
    let mut claims = TargetClaims::default();
    for (o, g) in others.filter(|(o, _)| *o != owner) {
        claims.put(o, g);
    }
    fresh
        .iter()
        .filter_map(|f| claims.clash_on(owner, f, ports_of(f)).map(|(port, proto, o, n)| refuse(f, port, proto, o, n)))
        .collect()
}

/// (owner, name, reason) of forwards newly suspended, and (owner, name) of forwards resumed.
pub type Transitions<'a> = (Vec<(&'a SetKey, &'a str, &'a Reason)>, Vec<(&'a SetKey, &'a str)>);

/// The decision for every user forward.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Owner -> the names of the forwards to put in the kernel (the forwards themselves
    /// are the owner's set's: [`Evaluation::active_forwards`]).
    pub active: BTreeMap<SetKey, BTreeSet<String>>,
    /// Owner -> (forward name, reason) of each suspended forward.
    pub suspended: BTreeMap<SetKey, Vec<(String, Reason)>>,
}

impl Evaluation {
    /// The active forwards of every owner, in set order, taken from `users`.
    pub fn active_forwards<'a>(
        &'a self,
        users: &'a BTreeMap<SetKey, UserSet>,
    ) -> impl Iterator<Item = (&'a SetKey, Vec<&'a Forward>)> + 'a {
        self.active.iter().filter_map(move |(owner, names)| {
            let set = users.get(owner)?;
            Some((owner, set.forwards.iter().filter(|f| names.contains(&f.name)).collect()))
        })
    }

    /// The suspended forwards that keep their ports ([`Reason::keeps_claim`]), taken from
    /// `users`.
    pub fn kept_forwards<'a>(
        &'a self,
        users: &'a BTreeMap<SetKey, UserSet>,
    ) -> impl Iterator<Item = (&'a SetKey, &'a Forward)> + 'a {
        self.suspended.iter().flat_map(move |(owner, list)| {
            list.iter().filter(|(_, r)| r.keeps_claim()).filter_map(move |(name, _)| {
                Some((owner, users.get(owner)?.forwards.iter().find(|f| f.name == *name)?))
            })
        })
    }

    /// The reason a forward is suspended, if it is (`owner` as written).
    pub fn reason(&self, owner: &str, name: &str) -> Option<&Reason> {
        self.suspended.get(owner)?.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }
    /// Number of suspended forwards.
    pub fn suspended_count(&self) -> usize {
        self.suspended.values().map(Vec::len).sum()
    }
    /// (owner, name, reason) of forwards suspended in `self` but not in `before`, and
    /// (owner, name) of those suspended in `before` but not in `self`.
    pub fn transitions<'a>(&'a self, before: &'a Evaluation) -> Transitions<'a> {
        let flat = |e: &'a Evaluation| -> BTreeMap<(&'a SetKey, &'a str), &'a Reason> {
            e.suspended.iter().flat_map(|(o, v)| v.iter().map(move |(n, r)| ((o, n.as_str()), r))).collect()
        };
        let (now, was) = (flat(self), flat(before));
        let suspended = now.iter().filter(|(k, r)| was.get(*k) != Some(*r)).map(|((o, n), r)| (*o, *n, *r)).collect();
        let resumed = was.keys().filter(|k| !now.contains_key(*k)).copied().collect();
        (suspended, resumed)
    }
}

/// Decides every user forward: judged per set, then placed after the system set —
/// forwards active in `before` first, so a forward that was suspended never displaces
/// one that is running, then the rest in owner and set order.
pub fn evaluate(
    judge: &Judge,
    config: &Config,
    users: &BTreeMap<SetKey, UserSet>,
    accounts: &BTreeMap<SetKey, Option<Account>>,
    invalid: &BTreeMap<SetKey, BTreeMap<String, String>>,
    before: &Evaluation,
) -> Evaluation {
    let none = BTreeMap::new();
    let mut claims = PlacedClaims::default();
    // System forwards claim no target here: one the operator points at a user forward's
    // target shares that user's app (an apply aimed at a system forward's target is
    // refused at the socket).
    let mut targets = TargetClaims::default();
    for f in &config.forwards {
        claims.put(SYSTEM, f);
    }
    let mut out = Evaluation::default();
    // (owner, index, forward) of each forward that passed the per-set judge.
    let mut candidates: Vec<(&SetKey, &Forward, bool)> = Vec::new();
    for (owner, set) in users {
        let user = owner.user().unwrap_or(owner.as_str());
        let account = accounts.get(owner).and_then(Option::as_ref);
        let verdicts = judge.judge(user, set, account, invalid.get(owner).unwrap_or(&none));
        for (f, v) in set.forwards.iter().zip(verdicts) {
            match v {
                None => {
                    let was_active = before.active.get(owner).is_some_and(|a| a.contains(&f.name));
                    candidates.push((owner, f, was_active));
                }
                Some(r) => {
                    if r.keeps_claim() && claims.clash(f).is_none() {
                        claims.put(owner.as_str(), f);
                        targets.put(owner.as_str(), f);
                    }
                    out.suspended.entry(owner.clone()).or_default().push((f.name.clone(), r));
                }
            }
        }
    }
    for pass in [true, false] {
        for (owner, f, was_active) in &candidates {
            if *was_active != pass {
                continue;
            }
            let clash = match (claims.clash(f), targets.clash(owner.as_str(), f)) {
                (Some((o, n)), _) => Some(format!("its public port is taken by {o}/{n}")),
                (None, Some((port, proto, o, n))) => Some(format!("its target port {port}/{proto} is {o}/{n}'s")),
                (None, None) => None,
            };
            match clash {
                Some(why) => {
                    out.suspended.entry((*owner).clone()).or_default().push((f.name.clone(), Reason::Conflict(why)));
                }
                None => {
                    claims.put(owner.as_str(), f);
                    targets.put(owner.as_str(), f);
                }
            }
        }
    }
    // Active forwards in set order.
    for (owner, set) in users {
        let suspended: BTreeSet<&str> =
            out.suspended.get(owner).map(|v| v.iter().map(|(n, _)| n.as_str()).collect()).unwrap_or_default();
        let active: BTreeSet<String> =
            set.forwards.iter().filter(|f| !suspended.contains(f.name.as_str())).map(|f| f.name.clone()).collect();
        if !active.is_empty() {
            out.active.insert(owner.clone(), active);
        }
    }
    out
}

/// More repairs than this within [`REPAIR_WINDOW`] means another program is fighting us.
pub const REPAIR_BURST: usize = 50;
/// Window for [`REPAIR_BURST`].
pub const REPAIR_WINDOW: Duration = Duration::from_secs(1);
/// How long to stand back when another program keeps changing the table.
pub const REPAIR_BACKOFF: Duration = Duration::from_secs(5);

/// What to do about a foreign change of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Put the table back now.
    Now,
    /// Another program keeps changing it: stand back until this instant, then check.
    StandBack(Instant),
    /// Already standing back: the deferred check will look.
    Wait,
}

/// The repair back-off: at most [`REPAIR_BURST`] repairs in [`REPAIR_WINDOW`], then
/// [`REPAIR_BACKOFF`] without repairs. The caller passes the clock.
#[derive(Debug, Default)]
pub struct Backoff {
    recent: VecDeque<Instant>,
    until: Option<Instant>,
    /// Times the back-off was hit.
    pub hits: u64,
}

impl Backoff {
    /// Decides about a drifted table at `now`; a `Now` decision counts as a repair.
    pub fn on_drift(&mut self, now: Instant) -> Repair {
        if let Some(u) = self.until {
            if now < u {
                return Repair::Wait;
            }
            self.until = None;
        }
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > REPAIR_WINDOW) {
            self.recent.pop_front();
        }
        if self.recent.len() >= REPAIR_BURST {
            self.recent.clear();
            let until = now + REPAIR_BACKOFF;
            self.until = Some(until);
            self.hits += 1;
            return Repair::StandBack(until);
        }
        self.recent.push_back(now);
        Repair::Now
    }
    /// When the deferred check is due, if standing back.
    pub fn deferred(&self) -> Option<Instant> {
        self.until
    }
    /// True (once) when the stand-back period is over at `now`: time to check again.
    pub fn due(&mut self, now: Instant) -> bool {
        match self.until {
            Some(u) if u <= now => {
                self.until = None;
                true
            }
            _ => false,
        }
    }
}
