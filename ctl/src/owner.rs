//! Owner names on the command line: `system`, `user:NAME`, or a bare user NAME that
//! means `user:NAME`, checked the same way by every command that takes `--owner` (as clap
//! value parsers, so a wrong owner is a usage error, exit 2, before anything is sent).

use crate::account;
use portd_rules::owner::Owner;

/// Checks the form of an owner and returns it as the daemon names it: `system`, or
/// `user:NAME` (written so, or as the bare NAME) with a valid user name. The form and the
/// name rule are the policy core's ([`Owner::parse_lenient`]).
pub fn parse(s: &str) -> Result<String, String> {
    Owner::parse_lenient(s).map(|o| o.to_string())
}

/// Like [`parse`], and the user must exist: for commands that give an owner forwards.
/// (`status` and `export` take any well-formed owner, so a departed user's set can be read.)
pub fn parse_existing(s: &str) -> Result<String, String> {
    let o = parse(s)?;
    if let Some(name) = Owner::user_of(&o) {
        if !account::user_exists(name) {
            return Err(format!("there is no user `{name}` on this host (see `getent passwd {name}`)"));
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert!(parse("system").is_ok());
        assert!(parse("user:www-data").is_ok());
        assert_eq!(parse("www-data").as_deref(), Ok("user:www-data"), "a bare name is a user");
        assert_eq!(parse("system").as_deref(), Ok("system"));
        assert!(parse("user:").is_err());
        assert!(parse("group:x").is_err());
        assert!(parse("web server").is_err());
        assert_eq!(parse_existing("root").as_deref(), Ok("user:root"));
        assert!(parse_existing("user:root").is_ok());
        let e = parse_existing("user:nosuchuser-pd").expect_err("unknown user");
        assert!(e.contains("no user `nosuchuser-pd`"), "{e}");
    }
}
