//! The account database as portctl needs it: does a user exist, what is a group called,
//! is the caller in a group (in the database, and in this login's credentials).
//!
//! Asked through `getent(1)`, which runs the system's NSS with its own shared C library,
//! so every source of /etc/nsswitch.conf (files, systemd-userdb, LDAP) is honoured. portctl
//! itself does not load NSS modules: a statically linked portctl (the packaged one, for a
//! fast start) cannot load them, and only the rare paths below need the database (an
//! `--owner` check, the hint after a refused connection).

use std::process::{Command, Stdio};

/// One entry of `getent DATABASE KEY`, split at ':' (`Ok(None)`: there is none), or why
/// getent could not be run.
fn getent(database: &str, key: &str) -> std::io::Result<Option<Vec<String>>> {
    let out = Command::new("getent").args([database, "--", key]).stdin(Stdio::null()).stderr(Stdio::null()).output()?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().map(|l| l.split(':').map(String::from).collect()))
}

/// The passwd entry of a user name or uid.
fn passwd(key: &str) -> Option<Vec<String>> {
    getent("passwd", key).ok().flatten().filter(|f| f.len() >= 4)
}

/// True when the account database knows user `name`. When the database cannot be asked
/// (no getent), the name is taken as it is: the daemon checks it again.
pub fn user_exists(name: &str) -> bool {
    match getent("passwd", name) {
        // getent looks an all-digit key up as a uid: the entry must carry the name itself.
        Ok(entry) => entry.is_some_and(|f| f.first().is_some_and(|n| n == name)),
        Err(_) => true,
    }
}

/// Name of user `uid`, if it has one.
pub fn user_name(uid: u32) -> Option<String> {
    passwd(&uid.to_string()).map(|mut f| f.swap_remove(0))
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
    let f = getent("group", &gid.to_string()).ok().flatten().filter(|f| f.len() >= 4)?;
    let members = f[3].split(',').filter(|m| !m.is_empty()).map(String::from).collect();
    Some(Group { name: f[0].clone(), members })
}

/// Primary group id of user `uid`, if it exists.
pub fn primary_gid(uid: u32) -> Option<u32> {
    passwd(&uid.to_string())?[3].parse().ok()
}

/// The caller's real uid.
pub fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}

/// True when this process carries group `gid` (effective or supplementary).
pub fn process_has_group(gid: u32) -> bool {
    let gid = nix::unistd::Gid::from_raw(gid);
    nix::unistd::getegid() == gid || nix::unistd::getgroups().is_ok_and(|v| v.contains(&gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_read_through_getent() {
        assert!(user_exists("root"));
        assert!(!user_exists("nosuchuser-pd"));
        // An all-digit key is a uid to getent; it is not the user named "0".
        assert!(!user_exists("0"));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(primary_gid(0), Some(0));
        assert_eq!(group(0).map(|g| g.name).as_deref(), Some("root"));
        assert!(user_name(u32::MAX - 7).is_none());
    }
}
