//! Subordinate uids (`/etc/subuid`): a rootless container's processes run as uids of
//! ranges given to one account, and the control socket's per-uid caps count them as
//! that account. Read at start and at every reload.

#![forbid(unsafe_code)]

use std::sync::RwLock;

/// Where the ranges are read.
pub const PATH: &str = "/etc/subuid";

/// One `owner:start:count` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: u32,
    /// One past the last uid.
    end: u64,
    /// The account the caps count these uids as.
    account: u32,
}

/// The subordinate uid ranges of the host.
#[derive(Debug, Default)]
pub struct SubIds(RwLock<Vec<Range>>);

/// Parses `/etc/subuid` text: `name:start:count` or `uid:start:count` per line; lines
/// that do not parse, and names `resolve` does not know, are skipped. A range of root's
/// counts as an account of its own (keyed by its first uid): its containers run
/// unprivileged, and must not escape the caps as root.
fn parse(text: &str, resolve: impl Fn(&str) -> Option<u32>) -> Vec<Range> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split(':');
        let (Some(who), Some(start), Some(count), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(start), Ok(count)) = (start.parse::<u32>(), count.parse::<u64>()) else { continue };
        if start == 0 || count == 0 {
            continue;
        }
        let owner = match who.parse::<u32>() {
            Ok(uid) => Some(uid),
            Err(_) => resolve(who),
        };
        let Some(owner) = owner else { continue };
        let account = if owner == 0 { start } else { owner };
        out.push(Range { start, end: u64::from(start) + count, account });
    }
    out.sort_by_key(|r| r.start);
    out
}

impl SubIds {
    /// Reads [`PATH`] again (a missing file is no ranges); returns how many ranges it holds.
    pub fn reload(&self) -> usize {
        let ranges = match std::fs::read_to_string(PATH) {
            Ok(text) => parse(&text, |name| nix::unistd::User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::warn!("reading {PATH}: {e}; subordinate uids are counted as themselves");
                Vec::new()
            }
        };
        let n = ranges.len();
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = ranges;
        n
    }

    /// The account `uid` counts as: the owner of a subordinate range holding it, else itself.
    /// Root is always itself.
    pub fn account_of(&self, uid: u32) -> u32 {
        if uid == 0 {
            return 0;
        }
        let ranges = self.0.read().unwrap_or_else(|p| p.into_inner());
        let i = ranges.partition_point(|r| r.start <= uid);
        // Ranges may overlap: the nearest ones starting at or below `uid` are looked at.
        ranges[..i].iter().rev().take(16).find(|r| u64::from(uid) < r.end).map_or(uid, |r| r.account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_and_uid_and_roots_own() {
        let text =
            "alice:100000:65536\n1001:165536:65536\nroot:300000:10\n# comment\nbad line\nghost:400000:10\nx:1:y\n";
        let r = parse(text, |n| match n {
            "alice" => Some(1000),
            "root" => Some(0),
            _ => None,
        });
        let s = SubIds(RwLock::new(r));
        assert_eq!(s.account_of(100_000), 1000);
        assert_eq!(s.account_of(165_535), 1000);
        assert_eq!(s.account_of(165_536), 1001);
        assert_eq!(s.account_of(231_071), 1001);
        assert_eq!(s.account_of(231_072), 231_072);
        assert_eq!(s.account_of(300_005), 300_000, "root's range is an account of its own");
        assert_eq!(s.account_of(400_001), 400_001, "an unknown name maps nothing");
        assert_eq!(s.account_of(0), 0);
        assert_eq!(s.account_of(1000), 1000);
    }
}
