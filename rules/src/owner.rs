//! Who owns a set of forwards: the config file (`system`) or one user (`user:NAME`).
//! Parsed from text and printed back here only, with one rule for user names, so the
//! command line, the wire, the state file and the policy core agree on what an owner is.

use std::fmt;

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
}
