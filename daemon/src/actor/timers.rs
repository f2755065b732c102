//! The actor's deadlines in one place: at most one per kind of timed work, the earliest
//! of which bounds the actor's wait for its next message. Times are passed in, so the
//! rules are tested without waiting.

#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

/// Work the actor does when its time comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Hand freed heap back to the system (after a large change or read).
    Trim,
    /// The repair back-off is over: check the table again.
    Repair,
    /// Check the sockets holding user forwards' target ports.
    Poll,
    /// Check whether conntrack runs in the namespace (steer plans untrack only then).
    Conntrack,
}

impl Timer {
    /// Every timer, in the order due ones run.
    const ALL: [Timer; 4] = [Timer::Trim, Timer::Repair, Timer::Poll, Timer::Conntrack];

    fn index(self) -> usize {
        self as usize
    }
}

/// A deadline per timer, and when a deadline that was put off was first due.
#[derive(Debug, Default)]
pub(super) struct Timers {
    at: [Option<Instant>; 4],
    first: [Option<Instant>; 4],
}

impl Timers {
    /// When `t` is due, if it is set.
    pub(super) fn at(&self, t: Timer) -> Option<Instant> {
        self.at[t.index()]
    }

    /// Sets `t` to `at` unless it is set already (an earlier request for the same work
    /// keeps its time).
    pub(super) fn set_unless_pending(&mut self, t: Timer, at: Instant) {
        self.at[t.index()].get_or_insert(at);
    }

    /// Sets `t` to `at`, or keeps the time it has when that is sooner: no stream of
    /// requests, however fast, can put the work off.
    pub(super) fn set_earliest(&mut self, t: Timer, at: Instant) {
        let slot = &mut self.at[t.index()];
        *slot = Some(slot.map_or(at, |cur| cur.min(at)));
    }

    /// Moves a pending `t` to `at`, but not beyond `max_wait` after it was first due;
    /// nothing pending, nothing set.
    pub(super) fn put_off(&mut self, t: Timer, at: Instant, max_wait: Duration) {
        let Some(cur) = self.at[t.index()] else { return };
        let first = *self.first[t.index()].get_or_insert(cur);
        self.at[t.index()] = Some(at.min(first + max_wait));
    }

    /// Clears `t`.
    pub(super) fn cancel(&mut self, t: Timer) {
        self.at[t.index()] = None;
        self.first[t.index()] = None;
    }

    /// The earliest deadline, which the actor waits for at most.
    pub(super) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// The timers due at `now`, cleared, in the order they run.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<Timer> {
        let due: Vec<Timer> = Timer::ALL.into_iter().filter(|t| self.at(*t).is_some_and(|at| at <= now)).collect();
        for t in &due {
            self.cancel(*t);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_earliest_deadline_bounds_the_wait_and_due_ones_are_taken_in_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        assert_eq!(t.next(), None, "nothing to wait for");
        t.set_earliest(Timer::Poll, t0 + 500 * MS);
        t.set_unless_pending(Timer::Trim, t0 + 100 * MS);
        t.set_earliest(Timer::Repair, t0 + 300 * MS);
        assert_eq!(t.next(), Some(t0 + 100 * MS));
        assert_eq!(t.take_due(t0 + 50 * MS), vec![]);
        assert_eq!(t.take_due(t0 + 300 * MS), vec![Timer::Trim, Timer::Repair]);
        assert_eq!((t.at(Timer::Trim), t.at(Timer::Repair)), (None, None), "taken once");
        assert_eq!(t.next(), Some(t0 + 500 * MS));
        t.cancel(Timer::Poll);
        assert_eq!(t.next(), None);
    }

    #[test]
    fn a_sooner_deadline_is_kept_and_a_pending_one_is_not_moved() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set_earliest(Timer::Poll, t0 + 500 * MS);
        t.set_earliest(Timer::Poll, t0 + 900 * MS);
        assert_eq!(t.at(Timer::Poll), Some(t0 + 500 * MS), "a check already due sooner keeps its time");
        t.set_earliest(Timer::Poll, t0 + 200 * MS);
        assert_eq!(t.at(Timer::Poll), Some(t0 + 200 * MS));
        t.set_unless_pending(Timer::Trim, t0 + 100 * MS);
        t.set_unless_pending(Timer::Trim, t0 + 700 * MS);
        assert_eq!(t.at(Timer::Trim), Some(t0 + 100 * MS));
    }

    #[test]
    fn a_pending_deadline_is_put_off_but_not_for_ever() {
        let t0 = Instant::now();
        let max = Duration::from_secs(2);
        let mut t = Timers::default();
        t.put_off(Timer::Trim, t0 + 100 * MS, max);
        assert_eq!(t.at(Timer::Trim), None, "nothing pending, nothing set");
        t.set_unless_pending(Timer::Trim, t0 + 10 * MS);
        t.put_off(Timer::Trim, t0 + 110 * MS, max);
        assert_eq!(t.at(Timer::Trim), Some(t0 + 110 * MS), "put off");
        t.put_off(Timer::Trim, t0 + 5_000 * MS, max);
        assert_eq!(t.at(Timer::Trim), Some(t0 + 10 * MS + max), "no later than max_wait after it was first due");
        assert_eq!(t.take_due(t0 + 10 * MS + max), vec![Timer::Trim]);
        t.set_unless_pending(Timer::Trim, t0 + 3_000 * MS);
        t.put_off(Timer::Trim, t0 + 3_100 * MS, max);
        assert_eq!(t.at(Timer::Trim), Some(t0 + 3_100 * MS), "a new deadline counts from its own first time");
    }
}
