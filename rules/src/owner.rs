//! Who owns a set of forwards: the config file (`system`) or one user (`user:NAME`).
//! Parsed from text and printed back here only, with one rule for user names, so the
//! command line, the wire, the state file and the policy core agree on what an owner is.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Owner name of the config file's forwards.
pub const SYSTEM: &str = "system";

/// How a user owner is written before its name.
const USER_PREFIX: &str = "user:";

/// Who owns a set: the config file, or one user.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// The config file's `forwards`.
    System,
    /// `user:NAME`: what that user applied through the socket.
    User(String),
}

impl Owner {
    /// Parses `system` or `user:NAME`, with a message saying what an owner looks like.
    pub fn parse(s: &str) -> Result<Owner, String> {
        if s == SYSTEM {
            return Ok(Owner::System);
        }
        match s.strip_prefix(USER_PREFIX) {
            Some(name) if valid_user(name) => Ok(Owner::User(name.to_string())),
            Some(name) => Err(not_a_user(name)),
            None => Err(format!("`{s}` is not an owner; owners are `system` or `user:NAME`")),
        }
    }

    /// Like [`Owner::parse`], and a bare NAME means `user:NAME`: how a command line
    /// (`--owner`) may write it.
    pub fn parse_lenient(s: &str) -> Result<Owner, String> {
        if s == SYSTEM || s.starts_with(USER_PREFIX) {
            return Owner::parse(s);
        }
        if valid_user(s) {
            Ok(Owner::User(s.to_string()))
        } else {
            Err(format!("`{s}` is not an owner; owners are `system`, `user:NAME` or a user NAME"))
        }
    }

    /// The user's name, for a user owner.
    pub fn user(&self) -> Option<&str> {
        match self {
            Owner::System => None,
            Owner::User(n) => Some(n),
        }
    }

    /// The owner of user `name`'s set, as written (`user:NAME`).
    pub fn user_key(name: &str) -> String {
        format!("{USER_PREFIX}{name}")
    }

    /// The user's name in an owner as written, for a user owner with a valid name.
    pub fn user_of(s: &str) -> Option<&str> {
        s.strip_prefix(USER_PREFIX).filter(|n| valid_user(n))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::System => f.write_str(SYSTEM),
            Owner::User(n) => write!(f, "{USER_PREFIX}{n}"),
        }
    }
}

/// The key of a user set, as the daemon and the policy core hold sets: the owner as
/// written (`user:NAME`), with whether it names a user decided once, by [`Owner::parse`],
/// when the key is made.
///
/// Every set the daemon creates is a user's. A set loaded from a state file may be keyed
/// by text that names no user (`bogus`, `system`, `user:a b`): it keeps that key as
/// written, so its forwards are reported suspended under it and saved back unchanged,
/// and [`SetKey::user`] is `None` (no account can match it). Keys compare, order and hash
/// as the text they print, so a map of sets iterates (and a state file lists them) in
/// the order of their owners as written, and a set is found by the owner a plan names
/// (`PlacedForward::owner`, a `&str`) without parsing it.
#[derive(Debug, Clone)]
pub struct SetKey {
    written: String,
    user: bool,
}

impl SetKey {
    /// The key of user `name`'s set; `Err` with the reason when `name` is outside the
    /// user-name rule.
    pub fn of_user(name: &str) -> Result<SetKey, String> {
        let written = Owner::user_key(name);
        match Owner::parse(&written)? {
            Owner::User(_) => Ok(SetKey { written, user: true }),
            Owner::System => Err(not_a_user(name)),
        }
    }

    /// The key of a user owner's set; `None` for `system`, which has no user set.
    pub fn of(owner: &Owner) -> Option<SetKey> {
        owner.user().map(|name| SetKey { written: Owner::user_key(name), user: true })
    }

    /// A key as a state file writes it, whatever it holds.
    pub fn read(written: String) -> SetKey {
        let user = matches!(Owner::parse(&written), Ok(Owner::User(_)));
        SetKey { written, user }
    }

    /// The owner as written (`user:NAME`, or the unreadable key as it was read).
    pub fn as_str(&self) -> &str {
        &self.written
    }

    /// The user's name, when the key names a user.
    pub fn user(&self) -> Option<&str> {
        self.user.then(|| self.written.strip_prefix(USER_PREFIX)).flatten()
    }

    /// The owner, when the key names a user.
    pub fn owner(&self) -> Option<Owner> {
        self.user().map(|n| Owner::User(n.to_string()))
    }
}

impl fmt::Display for SetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

// Equality, order and hash are the written text's (`user` follows from it), as `Borrow`
// requires.
impl PartialEq for SetKey {
    fn eq(&self, other: &SetKey) -> bool {
        self.written == other.written
    }
}
impl Eq for SetKey {}
impl PartialOrd for SetKey {
    fn partial_cmp(&self, other: &SetKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for SetKey {
    fn cmp(&self, other: &SetKey) -> Ordering {
        self.written.cmp(&other.written)
    }
}
impl Hash for SetKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.written.hash(h);
    }
}
impl Borrow<str> for SetKey {
    fn borrow(&self) -> &str {
        &self.written
    }
}

fn not_a_user(name: &str) -> String {
    format!(
        "`{}` is not a user name (letters, digits, '_', '-', '.', and a final '$', at most 32)",
        name.escape_debug()
    )
}

/// True for a user name portd accepts in an owner (`user:NAME`): POSIX portable
/// characters and a final `$` (as useradd allows, for machine accounts), at most 32, not
/// starting with '-'. A caller whose account name is outside this rule is refused when it
/// asks for a change, so that every set a user could apply is one portd can load again.
pub fn valid_user(s: &str) -> bool {
    let body = s.strip_suffix('$').unwrap_or(s);
    !body.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && body.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_rule_for_every_form() {
        let longest = "a".repeat(32);
        let too_long = "a".repeat(33);
        for parse in [Owner::parse, Owner::parse_lenient] {
            assert_eq!(parse(&format!("user:{longest}")), Ok(Owner::User(longest.clone())));
            let e = parse(&format!("user:{too_long}")).expect_err("33 characters");
            assert!(e.contains("at most 32"), "{e}");
            assert!(parse("user:-rf").is_err());
            assert!(parse("user:").is_err());
            assert!(parse("user:a b").is_err());
            assert_eq!(parse("system"), Ok(Owner::System));
        }
        assert_eq!(Owner::parse_lenient("www-data"), Ok(Owner::User("www-data".into())));
        assert_eq!(Owner::parse("user:host$"), Ok(Owner::User("host$".into())));
        for bad in ["user:$", "user:a$b", "user:a$$"] {
            assert!(Owner::parse(bad).is_err(), "{bad}");
        }
        assert!(Owner::parse("www-data").is_err(), "the wire writes owners in full");
        assert!(Owner::parse_lenient(&too_long).is_err());
        assert_eq!(Owner::user_of(&format!("user:{too_long}")), None);
        assert_eq!(Owner::user_of("user:web"), Some("web"));
        assert_eq!(Owner::user_of("system"), None);
    }

    #[test]
    fn printed_as_parsed() {
        for s in ["system", "user:web", "user:a.b_c-d"] {
            let o = Owner::parse(s).expect("valid");
            assert_eq!(o.to_string(), s);
            assert_eq!(Owner::parse(&o.to_string()), Ok(o.clone()));
        }
        assert_eq!(Owner::user_key("web"), Owner::User("web".into()).to_string());
    }

    #[test]
    fn set_keys_name_users_or_keep_what_was_read() {
        let web = SetKey::of_user("web").expect("valid");
        assert_eq!((web.as_str(), web.user(), web.owner()), ("user:web", Some("web"), Some(Owner::User("web".into()))));
        assert_eq!(SetKey::of(&Owner::User("web".into())), Some(web.clone()));
        assert_eq!(SetKey::of(&Owner::System), None);
        assert_eq!(SetKey::read("user:web".into()).user(), Some("web"));
        assert!(SetKey::of_user("a b").is_err());
        for odd in ["bogus", "system", "user:a b", "user:", ""] {
            let k = SetKey::read(odd.into());
            assert_eq!((k.as_str(), k.user(), k.owner()), (odd, None, None));
            assert_eq!(k.to_string(), odd);
        }
        // ordered as written, and found by the text
        let keys: std::collections::BTreeMap<SetKey, u8> =
            ["user:b", "bogus", "user:a", "system"].iter().map(|k| (SetKey::read(k.to_string()), 0)).collect();
        let order: Vec<&str> = keys.keys().map(SetKey::as_str).collect();
        assert_eq!(order, ["bogus", "system", "user:a", "user:b"]);
        assert!(keys.contains_key("user:a") && keys.contains_key("bogus"));
    }
}
