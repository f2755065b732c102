//! The actor's requests, one variant per operation it answers, each dispatched to its
//! handler; and the owner a request acts for.

#![forbid(unsafe_code)]

use super::change::Change;
use super::{accounts, Caller, Daemon, Error};
use portd_rules::policy::{Account, Owner, SetKey};
use portd_rules::proto::Body;
use portd_rules::Forward;

/// A request as the actor takes it. Rules files arrive parsed and validated and owners
/// parsed: the server does that at its edge, off the actor's thread.
#[derive(Debug)]
pub enum Request {
    /// Replace the caller's set (`portctl apply`).
    Apply {
        /// The file's forwards, validated.
        forwards: Vec<Forward>,
        /// Compute and report the change without applying it.
        dry_run: bool,
        /// Act for another owner (root only).
        owner: Option<Owner>,
    },
    /// Add one forward to the set (`portctl add`).
    Add {
        /// The forward as the wire carried it (validated here).
        forward: Forward,
        /// Act for another owner (root only).
        owner: Option<Owner>,
        /// Check and report the change without applying it.
        dry_run: bool,
        /// Replace a forward of the same name instead of refusing.
        replace: bool,
    },
    /// Remove one forward from the set, by name (`portctl remove`).
    Remove {
        /// Forward name.
        name: String,
        /// Act for another owner (root only).
        owner: Option<Owner>,
        /// Check and report the change without applying it.
        dry_run: bool,
        /// A set without that forward is no error.
        if_exists: bool,
    },
    /// A set as a rules file (`portctl export`).
    Export {
        /// Owner (default: the caller's).
        owner: Option<Owner>,
    },
    /// Re-read the config (`portctl reload`, root only).
    Reload {
        /// Report what it would change, without changing it.
        dry_run: bool,
        /// A config to preview instead of the file (`portd --check` against the running
        /// portd; only with `dry_run`, which the server makes sure of).
        config: Option<portd_rules::proto::ConfigText>,
    },
    /// What the caller may forward (`portctl grants`).
    Grants,
}

/// What the actor answers a request with; the server turns it into a wire answer.
pub type Answer = Result<Body, Error>;

impl Request {
    /// The owner the request acts for and the forward it names, for the journal fields of
    /// a refusal.
    pub(super) fn subject(&self, caller: &Caller) -> (String, Option<String>) {
        let (owner, forward) = match self {
            Request::Apply { owner, .. } | Request::Export { owner } => (owner.as_ref(), None),
            Request::Add { forward, owner, .. } => (owner.as_ref(), Some(forward.name.clone())),
            Request::Remove { name, owner, .. } => (owner.as_ref(), Some(name.clone())),
            Request::Reload { .. } | Request::Grants => (None, None),
        };
        (owner.map_or_else(|| caller.owner(), Clone::clone).to_string(), forward)
    }
}

impl Daemon {
    /// Answers one request.
    pub(super) fn handle(&mut self, caller: &Caller, request: Request) -> Answer {
        match request {
            Request::Apply { forwards, dry_run, owner } => {
                let (owner, account) = self.target_owner(caller, owner, forwards.is_empty())?;
                self.change(caller, &owner, &account, Change::Replace(forwards), dry_run)
            }
            Request::Add { mut forward, owner, dry_run, replace } => {
                let (owner, account) = self.target_owner(caller, owner, false)?;
                // Checked alone, in its one form (the same rules as a file's forward); its
                // overlap with the rest of the set (and other owners) is found by
                // change_owner through the keys it claims.
                let problems = portd_rules::validate::forward(&mut forward);
                let existing = self.users.get(&owner).and_then(|s| s.forwards.iter().find(|f| f.name == forward.name));
                if let Some(old) = existing {
                    // Already there as given: done, as ufw and firewall-cmd treat it.
                    if *old == forward {
                        return Ok(Body::changed(Default::default(), dry_run));
                    }
                    if !replace {
                        return Err(Error::invalid(format!(
                            "{owner} already has a forward `{}` with other settings; use `portctl add --replace` to change it, or remove it first",
                            forward.name
                        )));
                    }
                }
                if !problems.is_empty() {
                    return Err(Error::Invalid(problems.iter().map(ToString::to_string).collect()));
                }
                self.change(caller, &owner, &account, Change::Add(forward), dry_run)
            }
            Request::Remove { name, owner, dry_run, if_exists } => {
                let (owner, account) = self.target_owner(caller, owner, true)?;
                if !self.users.get(&owner).is_some_and(|s| s.forwards.iter().any(|f| f.name == name)) {
                    if if_exists {
                        return Ok(Body::changed(Default::default(), dry_run));
                    }
                    return Err(Error::invalid(format!(
                        "{owner} has no forward `{name}` (`--if-exists` makes that no error)"
                    )));
                }
                self.change(caller, &owner, &account, Change::Remove(name), dry_run)
            }
            Request::Export { owner } => {
                let owner = owner.unwrap_or_else(|| caller.owner());
                let forwards = match &owner {
                    Owner::System => self.config.forwards.clone(),
                    user => SetKey::of(user)
                        .and_then(|k| self.users.get(&k))
                        .map(|s| s.forwards.clone())
                        .unwrap_or_default(),
                };
                Ok(Body::Export { owner: owner.to_string(), forwards })
            }
            Request::Reload { dry_run, config } => {
                if caller.uid != 0 {
                    return Err(Error::denied("only root may reload the config (or send SIGHUP to portd)"));
                }
                self.reload(Some(caller), dry_run, config)
            }
            Request::Grants => Ok(Body::Grants(self.grants_of(caller))),
        }
    }

    /// The owner a request acts for, and that owner's account now. Only root may act for
    /// another owner; the system set is only changed through the config file.
    /// `removing`: the change only takes forwards away, which root may do for the set of
    /// a user that no longer exists (an account of the set's uid stands in for it).
    fn target_owner(&self, caller: &Caller, owner: Option<Owner>, removing: bool) -> Result<(SetKey, Account), Error> {
        let name = match owner {
            // A set is kept under its owner's name: one portd could not load again (a name
            // outside the one user-name rule) is refused before it is made.
            None if !portd_rules::owner::valid_user(&caller.user) => {
                return Err(Error::invalid(format!(
                    "your user name cannot own forwards: {}",
                    SetKey::of_user(&caller.user).err().unwrap_or_default()
                )))
            }
            None => caller.user.clone(),
            Some(Owner::System) => {
                return Err(Error::invalid(format!(
                    "the system set comes from {}; edit it and run `portctl reload`",
                    self.config_path.display()
                )))
            }
            Some(o @ Owner::User(_)) if caller.uid != 0 && o.user() != Some(caller.user.as_str()) => {
                return Err(Error::denied(format!(
                    "only root may act for another owner ({o}); you are {}",
                    caller.owner()
                )))
            }
            Some(Owner::User(n)) => n,
        };
        let key = SetKey::of_user(&name).map_err(Error::invalid)?;
        match accounts::lookup(&name) {
            Some(a) if caller.uid == 0 || a.uid == caller.uid => Ok((key, a)),
            Some(a) => Err(Error::denied(format!(
                "user name {name} belongs to uid {}, not to you (uid {})",
                a.uid, caller.uid
            ))),
            None if name == caller.user && caller.uid != 0 => Err(Error::denied(format!(
                "uid {} has no user name in the account database; grants are given to users",
                caller.uid
            ))),
            None => match self.users.get(&key) {
                Some(set) if removing => {
                    let uid = set.uid.unwrap_or(u32::MAX);
                    Ok((key, Account { name, uid, groups: Vec::new() }))
                }
                Some(_) => Err(Error::invalid(format!(
                    "there is no user `{name}` on this host; root can only remove the forwards of its set"
                ))),
                None => Err(Error::invalid(format!("there is no user `{name}` on this host"))),
            },
        }
    }
}
