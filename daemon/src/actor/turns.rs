//! The order the actor takes its messages in. One thread serves every account, so a
//! queue in arrival order lets one user's loop of applies (each a kernel batch and an
//! fsync) stand in front of everyone else's requests: with four in flight, root's
//! `portctl status` waited for all four. The actor takes what is waiting in this
//! order: messages that are not requests (status reads, signals, kernel events: each
//! cheap for the actor), then root's requests, then the request of the account served
//! longest ago (each account's own requests in their order), and a stop last, once
//! every request that came before it is answered. What one account adds to another's
//! wait is then one request, whatever it keeps in flight.

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};

/// How a message waits its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// At once, before any request.
    Now,
    /// A request of this account (root's go first).
    Account(u32),
    /// When nothing else waits.
    Last,
}

/// Accounts remembered beyond those with a request waiting.
const REMEMBERED: usize = 1024;

/// Messages waiting for the actor, taken in [`Turn`] order.
#[derive(Debug)]
pub(super) struct Turns<T> {
    waiting: VecDeque<T>,
    /// The tick each account was last served at.
    served: HashMap<u32, u64>,
    tick: u64,
}

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Turns { waiting: VecDeque::new(), served: HashMap::new(), tick: 0 }
    }
}

impl<T> Turns<T> {
    /// Adds a message that arrived.
    pub(super) fn push(&mut self, m: T) {
        self.waiting.push_back(m);
    }

    /// The message whose turn it is, if any waits.
    pub(super) fn next(&mut self, turn: impl Fn(&T) -> Turn) -> Option<T> {
        if let Some(i) = self.waiting.iter().position(|m| turn(m) == Turn::Now) {
            return self.waiting.remove(i);
        }
        // (false before true: root first; then the account served longest ago; the
        // first found, the oldest, among equals)
        let mut best: Option<(usize, u32, (bool, u64))> = None;
        for (i, m) in self.waiting.iter().enumerate() {
            if let Turn::Account(a) = turn(m) {
                let key = (a != 0, self.served.get(&a).copied().unwrap_or(0));
                if best.is_none_or(|(_, _, k)| key < k) {
                    best = Some((i, a, key));
                }
            }
        }
        let Some((i, account, _)) = best else {
            return self.waiting.pop_front();
        };
        self.tick += 1;
        self.served.insert(account, self.tick);
        if self.served.len() > REMEMBERED {
            let waiting: std::collections::HashSet<u32> = self
                .waiting
                .iter()
                .filter_map(|m| match turn(m) {
                    Turn::Account(a) => Some(a),
                    _ => None,
                })
                .collect();
            self.served.retain(|a, _| waiting.contains(a) || *a == account);
        }
        self.waiting.remove(i)
    }

    /// Drops the waiting messages `same` picks (repeats of one just taken).
    pub(super) fn discard(&mut self, same: impl Fn(&T) -> bool) {
        self.waiting.retain(|m| !same(m));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(m: &(Turn, u32)) -> Turn {
        m.0
    }

    fn order(turns: &mut Turns<(Turn, u32)>) -> Vec<u32> {
        std::iter::from_fn(|| turns.next(turn).map(|m| m.1)).collect()
    }

    #[test]
    fn one_account_in_a_loop_delays_others_by_one_request() {
        let mut t = Turns::default();
        // user 1001 has four requests waiting (1-4), then user 1002's (5), root's (6),
        // a status read (7) and 1002's second (8)
        for (who, id) in [(1001, 1), (1001, 2), (1001, 3), (1001, 4), (1002, 5), (0, 6)] {
            t.push((Turn::Account(who), id));
        }
        t.push((Turn::Now, 7));
        t.push((Turn::Account(1002), 8));
        assert_eq!(order(&mut t), vec![7, 6, 1, 5, 2, 8, 3, 4]);
        // A stop waits for the requests that came before it.
        t.push((Turn::Account(1001), 1));
        t.push((Turn::Last, 9));
        t.push((Turn::Now, 10));
        t.push((Turn::Account(0), 11));
        assert_eq!(order(&mut t), vec![10, 11, 1, 9]);
        t.push((Turn::Now, 1));
        t.push((Turn::Now, 1));
        t.push((Turn::Now, 2));
        t.next(turn);
        t.discard(|m| m.1 == 1);
        assert_eq!(order(&mut t), vec![2], "repeats dropped");
    }

    #[test]
    fn an_account_served_lately_waits_behind_one_that_was_not() {
        let mut t = Turns::default();
        t.push((Turn::Account(1001), 1));
        assert_eq!(order(&mut t), vec![1]);
        t.push((Turn::Account(1001), 2));
        t.push((Turn::Account(1002), 3));
        assert_eq!(order(&mut t), vec![3, 2], "1001 was served last");
        // many accounts: the memory is trimmed to those waiting, the order still holds
        for a in 0..2000 {
            t.push((Turn::Account(5000 + a), a));
            t.next(turn);
        }
        assert!(t.served.len() <= REMEMBERED + 1, "{}", t.served.len());
        t.push((Turn::Account(1001), 9));
        t.push((Turn::Account(6999), 10));
        assert_eq!(order(&mut t), vec![9, 10]);
    }
}
