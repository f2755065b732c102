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
