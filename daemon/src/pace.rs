//! Answer pacing: the bytes of answers each non-root account takes per second. A user
//! looping expensive reads (a doctor answer is 1 MB at 3,000 forwards) made portd copy
//! gigabytes a second into its sockets, and its own client read them, on the CPU root's
//! requests need. Each account has a bucket of [`Pacer::rate`] bytes, refilled at that
//! rate per second; an answer that overdraws it is sent once the debt is paid back.
//! Nothing is refused, and memory is not held longer than the wait.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One account's bucket: bytes available (negative: owed) as of `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    bytes: f64,
    at: Instant,
}

/// Buckets of answer bytes per account.
#[derive(Debug)]
pub struct Pacer {
    /// Bytes per second, and the bucket's size.
    rate: f64,
    buckets: Mutex<HashMap<u32, Bucket>>,
}

/// Accounts kept before full buckets are forgotten.
const KEEP: usize = 1024;

impl Pacer {
    /// Buckets of `rate` bytes, refilled at `rate` bytes a second.
    pub fn new(rate: usize) -> Pacer {
        Pacer { rate: rate.max(1) as f64, buckets: Mutex::default() }
    }

    /// Takes `bytes` from `account`'s bucket at `now`; how long to wait before sending.
    pub fn take(&self, account: u32, bytes: usize, now: Instant) -> Duration {
        let rate = self.rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= KEEP {
            // An account whose bucket refilled owes nothing: a new bucket is the same.
            buckets.retain(|_, b| b.bytes + now.saturating_duration_since(b.at).as_secs_f64() * rate < rate);
        }
        let b = buckets.entry(account).or_insert(Bucket { bytes: rate, at: now });
        b.bytes = (b.bytes + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(rate) - bytes as f64;
        b.at = now;
        if b.bytes >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.bytes / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_free_then_answers_wait_for_the_rate() {
        let p = Pacer::new(1000);
        let t = Instant::now();
        assert_eq!(p.take(7, 600, t), Duration::ZERO);
        assert_eq!(p.take(7, 400, t), Duration::ZERO, "the bucket's size is free");
        assert_eq!(p.take(7, 500, t), Duration::from_millis(500), "then the rate");
        assert_eq!(p.take(7, 500, t), Duration::from_secs(1), "debts add up");
        assert_eq!(p.take(8, 1000, t), Duration::ZERO, "another account has its own bucket");
        assert_eq!(p.take(7, 0, t + Duration::from_secs(2)), Duration::ZERO, "paid back");
        assert_eq!(p.take(7, 1000, t + Duration::from_secs(10)), Duration::ZERO, "refilled, never above its size");
        assert_eq!(p.take(7, 1, t + Duration::from_secs(10)), Duration::from_millis(1));
    }
}
