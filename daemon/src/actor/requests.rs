//! The actor's answers to requests: each operation dispatched to its handler, and the
//! owner a request acts for.

#![forbid(unsafe_code)]

use super::change::Change;
use super::{accounts, err, Caller, Daemon, Failure, Op};
use portd_rules::policy::{self, Account, Owner};
use portd_rules::proto::{Body, Command, ErrorKind};

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
            Command::Add { mut forward, owner, dry_run, replace } => {
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
                        return Err(err(
                            ErrorKind::Invalid,
                            format!(
                                "{owner} already has a forward `{}` with other settings; use `portctl add --replace` to change it, or remove it first",
                                forward.name
                            ),
                        ));
                    }
                }
                if !problems.is_empty() {
                    return Err((ErrorKind::Invalid, problems.iter().map(ToString::to_string).collect()));
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
            Command::Doctor { .. } => Err(err(ErrorKind::Protocol, "doctor is answered by a thread of its own")),
            Command::Reload { dry_run, config } => {
                if caller.uid != 0 {
                    return Err(err(ErrorKind::Denied, "only root may reload the config (or send SIGHUP to portd)"));
                }
                if config.is_some() && !dry_run {
                    return Err(err(ErrorKind::Protocol, "a config sent with a reload is only previewed (dry_run)"));
                }
                self.reload(Some(caller), dry_run, config)
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
            Some(a) if caller.uid == 0 || a.uid == caller.uid => Ok((Owner::user_key(&name), a)),
            Some(a) => Err(err(
                ErrorKind::Denied,
                format!("user name {name} belongs to uid {}, not to you (uid {})", a.uid, caller.uid),
            )),
            None if name == caller.user && caller.uid != 0 => Err(err(
                ErrorKind::Denied,
                format!("uid {} has no user name in the account database; grants are given to users", caller.uid),
            )),
            None => {
                let key = Owner::user_key(&name);
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
}
