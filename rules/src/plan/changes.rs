//! Incremental changes: one owner's forwards replaced, added or removed, as a [`Delta`]
//! that costs O(change), not O(plan).

use super::compile::{key, port_key, skeleton, LAYOUT_SETS};
use super::delta::{Delta, SetElements};
use super::summary::Summary;
use super::table::{element_comment, names, placed_order, Conflict, PlacedForward, Plan};
use crate::element::{key_bytes, PackedElement, Value};
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
        if let Some(mut d) = self.large_change(owner, remove, put, default_mark) {
            d.structural = d.whole.as_ref().is_some_and(|w| w.chains != self.chains);
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
        // The target maps hold one element per claimed key, with the holder's comment:
        // the NAT maps, and the steer maps where a steer plan keeps its TCP forwards.
        let leaving: std::collections::HashSet<String> = removed.iter().map(PlacedForward::comment).collect();
        let pairs = [(names::TO, names::TO_FAMILY), (names::STEER, names::STEER_FAMILY)]
            .map(|(both, one)| (self.set(both), self.set(one)));
        let mut conflicts = Vec::new();
        for a in &added {
            let f = &a.forward;
            let clash = f.claims().find_map(|(fam, proto, port)| {
                let holder = pairs.iter().find_map(|(both, one)| {
                    both.and_then(|s| s.elements.with_key_ref(&port_key(proto, port)))
                        .or_else(|| one.and_then(|s| s.elements.with_key_ref(&key(fam, proto, port))))
                })?;
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

        // The elements of the forwards that leave and of those that come, per set (the
        // skeleton's sets, in order, in both), packed; an element in both stays.
        let (mut del, mut add) = (self.contributions(&removed), self.contributions(&added));
        for (d, a) in del.iter_mut().zip(add.iter_mut()) {
            d.elements.drop_common(&mut a.elements);
        }
        // Protected target ports may be shared by several forwards: the element of such a
        // port stays while a forward still protects it, and carries the comment of the
        // first of them in `compile`'s order, so it is replaced when that one changes.
        let slot = |list: &mut Vec<SetElements>| list.iter_mut().position(|s| s.set == names::PROTECT);
        if let (Some(di), Some(ai)) = (slot(&mut del), slot(&mut add)) {
            let (was, comes) = (std::mem::take(&mut del[di].elements), std::mem::take(&mut add[ai].elements));
            let touched: BTreeSet<&[u8]> = was.refs().chain(comes.refs()).map(|r| r.key_bytes()).collect();
            let protect = self.set(names::PROTECT);
            let mut probe = Vec::new();
            for k in touched {
                let old = protect.and_then(|set| set.elements.with_key_bytes(k));
                let first = self
                    .forwards
                    .iter()
                    .filter(|p| !leaving.contains(&p.comment()))
                    .chain(&added)
                    .filter(|p| {
                        protected_keys(p).any(|pk| {
                            key_bytes(&mut probe, &pk);
                            probe == k
                        })
                    })
                    .min_by(|a, b| placed_order(a).cmp(&placed_order(b)));
                let new = first.map(|p| PackedElement::keyed(k, Some(&element_comment(&p.owner, &p.forward.name))));
                if old != new.as_ref().map(PackedElement::as_ref) {
                    if let Some(o) = old {
                        del[di].elements.insert_ref(o);
                    }
                    if let Some(n) = new {
                        add[ai].elements.insert_packed(n);
                    }
                }
            }
        }
        // An element the plan holds already is added only when it is deleted first.
        for (d, a) in del.iter().zip(add.iter_mut()) {
            let have = self.set(&a.set).map(|s| &s.elements);
            a.elements.retain(|r| !have.is_some_and(|h| h.contains_ref(r)) || d.elements.contains_ref(r));
        }
        del.retain(|s| !s.elements.is_empty());
        add.retain(|s| !s.elements.is_empty());

        Ok(self.fit_layout(Delta { structural: false, del_elements: del, add_elements: add, summary, whole: None }))
    }

    /// A change that fills a set the chains of a steer plan follow (its NAT maps,
    /// `fwd_steer_more`, `fwd_protect`), or empties one, may change which chains or rules
    /// the table needs: when it does, it is structural and carries the whole new plan.
    fn fit_layout(&self, mut d: Delta) -> Delta {
        if !self.steer {
            return d;
        }
        let filled = |list: &[SetElements], name: &str| {
            list.iter().filter(|s| s.set == name).map(|s| s.elements.len()).sum::<usize>()
        };
        let holds_after = |n: &str| {
            self.set(n).map_or(0, |s| s.elements.len()) + filled(&d.add_elements, n) > filled(&d.del_elements, n)
        };
        if LAYOUT_SETS.iter().all(|n| self.holds(n) == holds_after(n)) {
            return d;
        }
        let mut whole = self.clone();
        d.apply_in_place(&mut whole);
        if !whole.fit_chains() {
            return d;
        }
        d.structural = true;
        d.whole = Some(Box::new(whole));
        d
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

impl Plan {
    /// The elements a group of forwards contributes, per set of the skeleton (all of
    /// them, in order, empty ones too), packed.
    fn contributions(&self, group: &[PlacedForward]) -> Vec<SetElements> {
        let mut mini = skeleton(&self.table, self.mark, self.steer);
        for p in group {
            mini.place(&p.owner, &p.forward, p.mark);
        }
        mini.sets.into_iter().map(|s| SetElements { set: s.name, elements: s.elements }).collect()
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
