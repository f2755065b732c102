//! The account database (NSS), for the policy core: a user's uid and groups now.
//! Lookups happen at apply, reload and start only, never per packet or per poll.

#![forbid(unsafe_code)]

use portd_rules::policy::{Account, SetKey};
use std::collections::BTreeMap;
use std::ffi::CString;

/// The account named `name`, with the names of its primary and supplementary groups;
/// `None` when no such user exists (or the database cannot say).
pub fn lookup(name: &str) -> Option<Account> {
    let user = nix::unistd::User::from_name(name).ok().flatten()?;
    let cname = CString::new(name).ok()?;
    let gids = nix::unistd::getgrouplist(&cname, user.gid).unwrap_or_else(|_| vec![user.gid]);
    let mut groups: Vec<String> =
        gids.into_iter().filter_map(|g| nix::unistd::Group::from_gid(g).ok().flatten().map(|g| g.name)).collect();
    groups.sort();
    groups.dedup();
    Some(Account { name: user.name, uid: user.uid.as_raw(), groups })
}

/// The name of `uid`, if it has one.
pub fn name_of(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(uid.into()).ok().flatten().map(|u| u.name)
}

/// Looks up the user of every set's owner in `owners` (`None` for a key that names no
/// user).
pub fn lookup_owners<'a>(owners: impl Iterator<Item = &'a SetKey>) -> BTreeMap<SetKey, Option<Account>> {
    owners.map(|o| (o.clone(), o.user().and_then(lookup))).collect()
}

/// The highest uid of a system account: `SYS_UID_MAX` of /etc/login.defs, else
/// `UID_MIN` less one, else 999 (Debian's). Root and these are the accounts services
/// run as.
pub fn sys_uid_max() -> u32 {
    parse_sys_uid_max(&std::fs::read_to_string("/etc/login.defs").unwrap_or_default())
}

/// [`sys_uid_max`] of login.defs text.
pub fn parse_sys_uid_max(defs: &str) -> u32 {
    let value = |key: &str| {
        defs.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(key)).then(|| w.next()?.parse::<u32>().ok()).flatten()
        })
    };
    value("SYS_UID_MAX").or_else(|| value("UID_MIN").map(|m| m.saturating_sub(1))).unwrap_or(999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_accounts_end_where_login_defs_says() {
        assert_eq!(parse_sys_uid_max("# c\nUID_MIN\t\t 1000\nSYS_UID_MAX  499\n"), 499);
        assert_eq!(parse_sys_uid_max("UID_MIN 2000\n"), 1999);
        assert_eq!(parse_sys_uid_max(""), 999);
    }
}
