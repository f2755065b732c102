//! Refused requests in the log: escaped, bounded and rate-limited per uid.
//!
//! Every refusal of a non-root caller is logged, as long as that uid stays within
//! [`PER_WINDOW`] records and [`BYTES_PER_WINDOW`] bytes a minute; beyond that they are
//! counted and summarised every [`FLUSH_EVERY`] ("… 2,480 more refusals from uid 1001
//! suppressed"). What the client chose (owner, forward name, the causes quoting its file)
//! is escaped with [`portd_rules::text::escape`] and cut short, so CR and LF cannot start a
//! forged line and one request cannot write megabytes. Root's refusals are never held back.

#![forbid(unsafe_code)]

use portd_rules::diag::bounded;
use portd_rules::text::escape;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusals of one uid logged one by one per window.
pub const PER_WINDOW: usize = 10;
/// Bytes of refusal records one uid may write per window.
pub const BYTES_PER_WINDOW: usize = 32 << 10;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How often suppressed refusals are summarised.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Causes of one refusal that are logged.
const LOGGED_CAUSES: usize = 5;
/// Longest logged cause, owner or forward name, in characters.
const CAUSE_CHARS: usize = 300;
const NAME_CHARS: usize = 64;

/// One refused request, as the server or the actor saw it.
pub struct Refusal<'a> {
    /// The caller's uid (SO_PEERCRED).
    pub uid: u32,
    /// Its name from the account database, or the uid.
    pub user: &'a str,
    /// The owner the request named (chosen by the client).
    pub owner: &'a str,
    /// The forward it named, if any (chosen by the client).
    pub forward: Option<&'a str>,
    /// What was refused: "apply of uid 1001 (web)".
    pub what: &'a str,
    /// Why.
    pub causes: &'a [String],
}

#[derive(Debug)]
struct Bucket {
    since: Instant,
    logged: usize,
    bytes: usize,
    suppressed: usize,
}

/// The per-uid rate limit of refusal records.
#[derive(Debug, Default)]
pub struct Refusals {
    buckets: Mutex<HashMap<u32, Bucket>>,
}

/// `s` escaped and cut to `max` characters.
fn clean(s: &str, max: usize) -> String {
    bounded(escape(s).into_owned(), max)
}

impl Refusals {
    /// Logs `r` unless its uid is over its budget; then counts it for the next summary.
    pub fn log(&self, r: &Refusal) {
        self.log_at(r, Instant::now());
    }

    fn log_at(&self, r: &Refusal, now: Instant) {
        let mut causes: Vec<String> = r.causes.iter().take(LOGGED_CAUSES).map(|m| clean(m, CAUSE_CHARS)).collect();
        if r.causes.len() > LOGGED_CAUSES {
            causes.push(format!("and {} more", portd_rules::load::thousands(r.causes.len() - LOGGED_CAUSES)));
        }
        let (user, owner, what) =
            (clean(r.user, NAME_CHARS), clean(r.owner, NAME_CHARS), clean(r.what, 2 * NAME_CHARS));
        let forward = r.forward.map(|f| clean(f, NAME_CHARS));
        let text = format!("{what} refused: {}", causes.join("; "));
        if r.uid != 0 {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let b = buckets.entry(r.uid).or_insert(Bucket { since: now, logged: 0, bytes: 0, suppressed: 0 });
            if now.duration_since(b.since) >= WINDOW {
                (b.since, b.logged, b.bytes) = (now, 0, 0);
            }
            let size = text.len() + user.len() + owner.len() + forward.as_ref().map_or(0, |f| f.len());
            if b.logged >= PER_WINDOW || b.bytes + size > BYTES_PER_WINDOW {
                b.suppressed += 1;
                return;
            }
            b.logged += 1;
            b.bytes += size;
        }
        tracing::warn!(uid = r.uid, user = %user, owner = %owner, forward = forward.as_deref(), action = "refuse", "{text}");
    }

    /// Logs how many refusals each uid had suppressed since the last summary, and forgets
    /// uids whose window ended. Called every [`FLUSH_EVERY`].
    pub fn flush(&self) {
        self.flush_at(Instant::now());
    }

    fn flush_at(&self, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        for (uid, b) in buckets.iter_mut() {
            if b.suppressed > 0 {
                tracing::warn!(
                    uid = *uid,
                    action = "refuse",
                    "… {} more refusals from uid {uid} suppressed (at most {PER_WINDOW} are logged per uid and minute)",
                    portd_rules::load::thousands(b.suppressed)
                );
                b.suppressed = 0;
            }
        }
        buckets.retain(|_, b| now.duration_since(b.since) < WINDOW);
    }

    /// Uids with a live window (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[cfg(test)]
    fn suppressed(&self, uid: u32) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).get(&uid).map_or(0, |b| b.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_over_its_budget_is_counted_then_forgotten_after_the_window() {
        let r = Refusals::default();
        let causes = vec!["no grant".to_string()];
        let refusal =
            Refusal { uid: 1001, user: "a\r\nb", owner: "user:x", forward: None, what: "apply", causes: &causes };
        let t = Instant::now();
        for _ in 0..PER_WINDOW + 25 {
            r.log_at(&refusal, t);
        }
        assert_eq!(r.suppressed(1001), 25);
        // Root is never held back.
        for _ in 0..PER_WINDOW + 5 {
            r.log_at(&Refusal { uid: 0, ..refusal }, t);
        }
        assert_eq!(r.suppressed(0), 0);
        r.flush_at(t + FLUSH_EVERY);
        assert_eq!(r.suppressed(1001), 0, "summarised");
        assert_eq!(r.tracked(), 1, "the window still runs");
        r.flush_at(t + WINDOW);
        assert_eq!(r.tracked(), 0, "forgotten once the window ended");
    }
}
