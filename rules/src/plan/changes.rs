//! Incremental changes: one owner's forwards replaced, added or removed, as a [`Delta`]
//! that costs O(change), not O(plan).

use super::compile::{key, port_key};
use super::delta::Delta;
use super::summary::Summary;
use super::table::{element_comment, names, placed_order, Conflict, PlacedForward, Plan};
use crate::element::{Element, Value};
use crate::model::Forward;
use std::collections::BTreeSet;

/// Above this many forwards (and a quarter of the plan), a change is computed by
/// compiling the whole new plan instead of element by element.
const LARGE_CHANGE: usize = 256;

impl Plan {
    /// The element-level delta that replaces `owner`'s forwards with `forwards`.
    ///
    /// Costs O(size of the owner's set + size of the change), not O(plan): only
    /// forwards that differ contribute elements, and conflicts are looked up by key.
    /// `delta.apply_in_place` then gives exactly `compile` of the new sets.
    pub fn replace_owner(&self, owner: &str, forwards: &[Forward], default_mark: u32) -> Result<Delta, Vec<Conflict>> {
        // change_owner skips the forwards that are already placed as they are.
        let seen: std::collections::HashSet<&str> = forwards.iter().map(|f| f.name.as_str()).collect();
        let remove: Vec<&str> =
            self.owned_by(owner).iter().map(|p| p.forward.name.as_str()).filter(|n| !seen.contains(n)).collect();
        self.change_owner(owner, &remove, forwards, default_mark)
    }

    /// The element-level delta that removes `owner`'s forwards named in `remove` (unknown
    /// names are ignored) and adds or replaces the forwards in `put`, by name.
    ///
    /// Costs O(size of the change · log plan): the forwards concerned are found by binary
    /// search and conflicts are looked up by key, so one `portctl add` in a plan of
    /// 60,000 forwards touches a handful of objects.
    pub fn change_owner(
        &self,
        owner: &str,
        remove: &[&str],
        put: &[Forward],
        default_mark: u32,
    ) -> Result<Delta, Vec<Conflict>> {
        if let Some(d) = self.large_change(owner, remove, put, default_mark) {
            return Ok(d);
        }
        let mut removed: Vec<PlacedForward> = Vec::new();
        let mut added: Vec<PlacedForward> = Vec::new();
        let mut summary = Summary::default();
        for f in put {
            let mark = f.mark.unwrap_or(default_mark);
            let old = self.placed(owner, &f.name);
            if old.is_some_and(|o| o.forward == *f && o.mark == mark) {
                continue;
            }
            let placed = PlacedForward { owner: owner.to_string(), forward: f.clone(), mark };
            match old {
                Some(o) => {
                    summary.changed.push((o.clone(), placed.clone()));
                    removed.push(o.clone());
                    added.push(placed);
                }
                None => {
                    summary.added.push(placed.clone());
                    added.push(placed);
                }
            }
        }
        for name in remove {
            if let Some(o) = self.placed(owner, name) {
                summary.removed.push(o.clone());
                removed.push(o.clone());
            }
        }
        summary.added.sort_by(|a, b| a.forward.name.cmp(&b.forward.name));
        summary.removed.sort_by(|a, b| a.forward.name.cmp(&b.forward.name));
        summary.changed.sort_by(|a, b| a.0.forward.name.cmp(&b.0.forward.name));

        // Conflicts: a key of an added forward held by a forward that stays.
        // The target maps hold one element per claimed key, with the holder's comment.
        let leaving: std::collections::HashSet<String> = removed.iter().map(PlacedForward::comment).collect();
        let (both, one) = (self.set(names::TO), self.set(names::TO_FAMILY));
        let mut conflicts = Vec::new();
        for a in &added {
            let f = &a.forward;
            let clash = f.claims().find_map(|(fam, proto, port)| {
                let holder = both
                    .and_then(|s| s.elements.with_key_ref(&port_key(proto, port)))
                    .or_else(|| one.and_then(|s| s.elements.with_key_ref(&key(fam, proto, port))))?;
                let decoded;
                let c = match holder.parts() {
                    Some(p) => p.comment.unwrap_or_default(),
                    None => {
                        decoded = holder.decode().comment.unwrap_or_default();
                        decoded.as_str()
                    }
                };
                if leaving.contains(c) {
                    return None;
                }
                let (oo, on) =
                    self.by_comment(c).map_or(("?".into(), "?".into()), |p| (p.owner.clone(), p.forward.name.clone()));
                Some(Conflict {
                    owner: owner.to_string(),
                    name: f.name.clone(),
                    other_owner: oo,
                    other_name: on,
                    port,
                    proto,
                    family: fam,
                })
            });
            conflicts.extend(clash);
        }
        if !conflicts.is_empty() {
            return Err(conflicts);
        }

        let mut del = self.contributions(&removed);
        let mut add = self.contributions(&added);
        let both: Vec<(String, Element)> = del.intersection(&add).cloned().collect();
        for e in &both {
            del.remove(e);
            add.remove(e);
        }
        // Protected target ports may be shared by several forwards: the element of such a
        // port stays while a forward still protects it, and carries the comment of the
        // first of them in `compile`'s order, so it is replaced when that one changes.
        let touched: BTreeSet<Vec<Value>> =
            del.iter().chain(&add).filter(|(s, _)| s == names::PROTECT).map(|(_, e)| e.key.clone()).collect();
        del.retain(|(s, _)| s != names::PROTECT);
        add.retain(|(s, _)| s != names::PROTECT);
        for k in touched {
            let old = self.set(names::PROTECT).and_then(|set| set.elements.with_key(&k));
            let first = self
                .forwards
                .iter()
                .filter(|p| !leaving.contains(&p.comment()))
                .chain(&added)
                .filter(|p| protected_keys(p).any(|pk| k == pk))
                .min_by(|a, b| placed_order(a).cmp(&placed_order(b)));
            let new = first.map(|p| Element {
                key: k.clone(),
                data: None,
                comment: Some(element_comment(&p.owner, &p.forward.name)),
            });
            if old != new {
                del.extend(old.map(|e| (names::PROTECT.to_string(), e)));
                add.extend(new.map(|e| (names::PROTECT.to_string(), e)));
            }
        }
        let present = |s: &str, e: &Element| self.set(s).is_some_and(|set| set.elements.contains(e));
        add.retain(|(s, e)| !present(s, e) || del.contains(&(s.clone(), e.clone())));

        Ok(Delta {
            structural: false,
            del_elements: del.into_iter().collect(),
            add_elements: add.into_iter().collect(),
            summary,
            whole: None,
        })
    }
}

impl Plan {
    /// A large change (more than [`LARGE_CHANGE`] forwards and a quarter of the plan),
    /// computed by compiling the whole new plan: two linear merges of sorted sets cost less
    /// than looking up every element of the change. `None` when the change is small, or
    /// when compiling finds a conflict: then [`Plan::change_owner`] goes element by element,
    /// which names the conflicting forwards from the point of view of `owner`.
    fn large_change(&self, owner: &str, remove: &[&str], put: &[Forward], default_mark: u32) -> Option<Delta> {
        let mine = self.owned_by(owner);
        if remove.len() + put.len() <= LARGE_CHANGE.max(self.forwards.len() / 4) {
            return None;
        }
        // The owner's forwards after the change, by name.
        let gone: std::collections::HashSet<&str> =
            remove.iter().copied().chain(put.iter().map(|f| f.name.as_str())).collect();
        let mut after: Vec<&Forward> =
            mine.iter().map(|p| &p.forward).filter(|f| !gone.contains(f.name.as_str())).chain(put).collect();
        after.sort_by(|a, b| a.name.cmp(&b.name));
        // Large only if that many forwards really differ (an apply of a big set that
        // changes one forward is a small change).
        let (mut differ, mut i) = (0, 0);
        for f in &after {
            while mine.get(i).is_some_and(|p| p.forward.name < f.name) {
                differ += 1;
                i += 1;
            }
            match mine.get(i) {
                Some(p) if p.forward.name == f.name => {
                    differ += usize::from(p.forward != **f || p.mark != f.mark.unwrap_or(default_mark));
                    i += 1;
                }
                _ => differ += 1,
            }
        }
        differ += mine.len() - i;
        if differ <= LARGE_CHANGE.max(self.forwards.len() / 4) {
            return None;
        }
        let new = self.recompiled_with(owner, &after, default_mark)?;
        // What changed: a merge of the old and new forwards of the owner, both by name.
        let now = new.owned_by(owner);
        let mut summary = Summary::default();
        let (mut i, mut j) = (0, 0);
        while i < mine.len() || j < now.len() {
            match (mine.get(i), now.get(j)) {
                (Some(o), Some(n)) if o.forward.name == n.forward.name => {
                    if o != n {
                        summary.changed.push((o.clone(), n.clone()));
                    }
                    i += 1;
                    j += 1;
                }
                (Some(o), Some(n)) if o.forward.name < n.forward.name => {
                    summary.removed.push(o.clone());
                    i += 1;
                }
                (Some(o), None) => {
                    summary.removed.push(o.clone());
                    i += 1;
                }
                (_, Some(n)) => {
                    summary.added.push(n.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        let mut d = Delta { summary, ..Delta::default() };
        d.objects_from(self, &new);
        d.whole = Some(Box::new(new));
        Some(d)
    }
}

/// The keys of the local ports a forward protects (none unless `protect` is set).
fn protected_keys(p: &PlacedForward) -> impl Iterator<Item = [Value; 3]> + '_ {
    let f = &p.forward;
    let on = if f.protect { f.family.families() } else { &[] };
    on.iter().flat_map(move |&fam| {
        f.proto
            .protos()
            .iter()
            .flat_map(move |&proto| f.port.ports().map(move |port| key(fam, proto, f.target_of(port))))
    })
}
