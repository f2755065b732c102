//! The account database as portctl needs it: does a user exist, what is a group called,
//! is the caller in a group (in the database, and in this login's credentials).
//!
//! Through nix's wrappers of the reentrant libc lookups (`getpwnam_r`, `getgrgid_r`), so
//! NSS sources other than /etc/passwd (LDAP, systemd-userdb) are honoured.

use nix::unistd::{Gid, Uid};

/// True when the account database knows user `name`.
pub fn user_exists(name: &str) -> bool {
    matches!(nix::unistd::User::from_name(name), Ok(Some(_)))
}

/// Name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.name)
}

/// A group: its name and member names (supplementary members only).
pub struct Group {
    /// Group name.
    pub name: String,
    /// Users listed as members.
    pub members: Vec<String>,
}

/// The group with id `gid`, if the database has it.
pub fn group(gid: u32) -> Option<Group> {
    let g = nix::unistd::Group::from_gid(Gid::from_raw(gid)).ok().flatten()?;
    Some(Group { name: g.name, members: g.mem })
}

/// Primary group id of user `uid`, if it exists.
pub fn primary_gid(uid: u32) -> Option<u32> {
    nix::unistd::User::from_uid(Uid::from_raw(uid)).ok().flatten().map(|u| u.gid.as_raw())
}

/// The caller's real uid.
pub fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// True when this process carries group `gid` (effective or supplementary).
pub fn process_has_group(gid: u32) -> bool {
    let gid = Gid::from_raw(gid);
    nix::unistd::getegid() == gid || nix::unistd::getgroups().is_ok_and(|v| v.contains(&gid))
}
