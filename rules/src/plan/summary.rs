//! The [`Summary`] of a change: forwards added, removed and changed, for answers and logs.

use super::table::{PlacedForward, Plan};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Added, removed and changed forwards, for humans.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Summary {
    /// Forwards new in the new plan.
    pub added: Vec<PlacedForward>,
    /// Forwards gone from the new plan.
    pub removed: Vec<PlacedForward>,
    /// Forwards present in both with different settings: (old, new).
    pub changed: Vec<(PlacedForward, PlacedForward)>,
}

impl Summary {
    /// The summary to show: each forward with the mark its packets get in `plan`
    /// ([`Plan::packet_mark`]; none for a steered forward without a mark of its own). For
    /// answers and logs only: a delta's own summary keeps the marks forwards are placed
    /// with, which applying it puts into the plan.
    pub fn with_packet_marks(mut self, plan: &Plan) -> Summary {
        let changed = self.changed.iter_mut().flat_map(|(o, n)| [o, n]);
        for p in self.added.iter_mut().chain(self.removed.iter_mut()).chain(changed) {
            p.mark = plan.packet_mark(p);
        }
        self
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

fn describe_forward(p: &PlacedForward) -> String {
    let f = &p.forward;
    let mut s = format!("{}/{}: {} -> {} {} {}", p.owner, f.name, f.port, f.to, f.proto, f.family);
    if !f.local {
        s.push_str(" local=false");
    }
    if !f.interfaces.is_empty() {
        s.push_str(&format!(" interfaces={}", f.interfaces.join(",")));
    }
    if !f.sources.is_empty() {
        let v: Vec<String> = f.sources.iter().map(|s| s.to_string()).collect();
        s.push_str(&format!(" sources={}", v.join(",")));
    }
    if p.mark != 0 {
        s.push_str(&format!(" mark={:#x}", p.mark));
    }
    if f.protect {
        s.push_str(" protect");
    }
    if let Some(d) = &f.description {
        s.push_str(&format!(" description={d:?}"));
    }
    s
}

impl Summary {
    /// One entry per forward: `+ added`, `~ old` then `becomes new` (joined by
    /// `changed_sep`), `- removed`.
    fn entries<'a>(&'a self, changed_sep: &'a str) -> impl Iterator<Item = String> + 'a {
        let added = self.added.iter().map(|a| format!("+ {}", describe_forward(a)));
        let changed = self.changed.iter().map(move |(o, n)| {
            let to = describe_forward(n);
            format!("~ {}{changed_sep}becomes {}", describe_forward(o), to.split_once(": ").map_or("", |x| x.1))
        });
        let removed = self.removed.iter().map(|r| format!("- {}", describe_forward(r)));
        added.chain(changed).chain(removed)
    }

    /// The change on one line for a log: at most `limit` forwards, then how many more.
    pub fn log_line(&self, limit: usize) -> String {
        let total = self.added.len() + self.changed.len() + self.removed.len();
        if total == 0 {
            return "no changes".into();
        }
        let mut parts: Vec<String> = self.entries(" ").take(limit).collect();
        if total > limit {
            parts.push(format!(
                "... and {} more ({} added, {} changed, {} removed in all)",
                total - limit,
                self.added.len(),
                self.changed.len(),
                self.removed.len()
            ));
        }
        parts.join("; ")
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no changes");
        }
        for entry in self.entries("\n  ") {
            writeln!(f, "{entry}")?;
        }
        Ok(())
    }
}

pub(super) fn summarize(old: &Plan, new: &Plan) -> Summary {
    let index = |p: &Plan| -> BTreeMap<(String, String), PlacedForward> {
        p.forwards.iter().map(|f| ((f.owner.clone(), f.forward.name.clone()), f.clone())).collect()
    };
    let (o, n) = (index(old), index(new));
    let mut s = Summary::default();
    for (k, nf) in &n {
        match o.get(k) {
            None => s.added.push(nf.clone()),
            Some(of) if of != nf => s.changed.push((of.clone(), nf.clone())),
            Some(_) => {}
        }
    }
    for (k, of) in &o {
        if !n.contains_key(k) {
            s.removed.push(of.clone());
        }
    }
    s
}
