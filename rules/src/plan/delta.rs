//! The [`Delta`] between two plans (elements to add and delete, or
//! "structural": replace the whole table), and making it the current plan.

use super::summary::summarize;
use super::summary::Summary;
use super::table::{placed_order, Chain, Plan};
use crate::element::{Element, Elements};
use serde::{Deserialize, Serialize};

/// The elements a delta adds to or deletes from one set, packed as the set holds them:
/// from compile to netlink no element is decoded and the set is named once.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SetElements {
    /// The set's name.
    pub set: String,
    /// The elements, in the set's order.
    pub elements: Elements,
}

/// Element-level difference between two plans of the same skeleton.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Delta {
    /// True when table, chains or set definitions differ: only a full apply will do.
    pub structural: bool,
    /// Elements to delete (before additions, so a changed map entry is replaced): per
    /// set, in the plan's order of sets, each set at most once and never empty.
    pub del_elements: Vec<SetElements>,
    /// Elements to add, per set, likewise.
    pub add_elements: Vec<SetElements>,
    /// What changed, for humans.
    pub summary: Summary,
    /// The whole new plan, when [`Plan::change_owner`] computed it (a large change): then
    /// taking it is cheaper than applying the elements one by one.
    #[serde(skip)]
    pub whole: Option<Box<Plan>>,
}

impl Delta {
    /// Fills in the elements that differ between two plans of the same shape.
    pub(super) fn objects_from(&mut self, old: &Plan, new: &Plan) {
        for (a, b) in old.sets.iter().zip(&new.sets) {
            push(&mut self.del_elements, &a.name, a.elements.without(&b.elements));
            push(&mut self.add_elements, &b.name, b.elements.without(&a.elements));
        }
    }

    /// True when the kernel needs no change.
    pub fn is_empty(&self) -> bool {
        !self.structural && self.size() == 0
    }

    /// Number of kernel objects the delta touches.
    pub fn size(&self) -> usize {
        self.del_elements.iter().chain(&self.add_elements).map(|s| s.elements.len()).sum()
    }

    /// The elements deleted, decoded, with their set's name: for tests and messages,
    /// not for the path to the kernel.
    pub fn deleted(&self) -> impl Iterator<Item = (&str, Element)> + '_ {
        decoded(&self.del_elements)
    }

    /// The elements added, decoded, with their set's name (see [`Delta::deleted`]).
    pub fn added(&self) -> impl Iterator<Item = (&str, Element)> + '_ {
        decoded(&self.add_elements)
    }

    /// Applies the element changes (not the list of forwards) to `plan`.
    fn apply_objects(&self, plan: &mut Plan) {
        for s in &self.del_elements {
            plan.set_mut(&s.set).elements.remove_all(&s.elements);
        }
        for s in &self.add_elements {
            plan.set_mut(&s.set).elements.insert_all(&s.elements);
        }
    }

    /// Makes `plan` the new plan: takes the whole new plan when the delta carries one,
    /// otherwise applies it in place.
    pub fn take_into(&mut self, plan: &mut Plan) {
        match self.whole.take() {
            Some(whole) => *plan = *whole,
            None => self.apply_in_place(plan),
        }
    }

    /// Applies a delta from [`Plan::replace_owner`] to `plan` in place: elements and
    /// the list of placed forwards (kept in `compile`'s order).
    pub fn apply_in_place(&self, plan: &mut Plan) {
        self.apply_objects(plan);
        let gone = self.summary.removed.iter().chain(self.summary.changed.iter().map(|(o, _)| o));
        if self.summary.removed.len() + self.summary.changed.len() <= 64 {
            // A few: find each by binary search.
            for p in gone {
                let at = plan.forwards.partition_point(|q| placed_order(q) < placed_order(p));
                if plan.forwards.get(at).is_some_and(|q| placed_order(q) == placed_order(p)) {
                    plan.forwards.remove(at);
                }
            }
        } else {
            let gone: std::collections::HashSet<(&str, &str)> =
                gone.map(|p| (p.owner.as_str(), p.forward.name.as_str())).collect();
            plan.forwards.retain(|p| !gone.contains(&(p.owner.as_str(), p.forward.name.as_str())));
        }
        for p in self.summary.added.iter().chain(self.summary.changed.iter().map(|(_, n)| n)) {
            let at = plan.forwards.partition_point(|q| placed_order(q) < placed_order(p));
            plan.forwards.insert(at, p.clone());
        }
    }
}

/// Adds a set's elements to a list of a delta, unless there are none.
pub(super) fn push(list: &mut Vec<SetElements>, set: &str, elements: Elements) {
    if !elements.is_empty() {
        list.push(SetElements { set: set.to_string(), elements });
    }
}

fn decoded(list: &[SetElements]) -> impl Iterator<Item = (&str, Element)> + '_ {
    list.iter().flat_map(|s| s.elements.iter().map(move |e| (s.set.as_str(), e)))
}

impl Plan {
    /// The change from `old` to `new`: elements to add and delete.
    pub fn diff(old: &Plan, new: &Plan) -> Delta {
        let mut d = Delta { summary: summarize(old, new), ..Delta::default() };
        if old.chains != new.chains || !same_sets(old, new) {
            d.structural = true;
            return d;
        }
        d.objects_from(old, new);
        d
    }

    /// The element-level change from `old` to `new` when their table, mark and sets are
    /// defined alike, whatever their chains (see [`Plan::chain_changes`]); `None`
    /// otherwise.
    pub fn diff_elements(old: &Plan, new: &Plan) -> Option<Delta> {
        if !same_sets(old, new) {
            return None;
        }
        let mut d = Delta::default();
        d.objects_from(old, new);
        Some(d)
    }

    /// The chains to delete from `old` and to add from `new`, each in its plan's order:
    /// those only one plan has, and the base chains both have but with other rules (a
    /// base chain is replaced whole, in the same batch: nothing jumps to it). `None` when
    /// a regular chain both have differs between them.
    pub fn chain_changes<'a>(old: &'a Plan, new: &'a Plan) -> Option<(Vec<&'a Chain>, Vec<&'a Chain>)> {
        let find = |p: &'a Plan, name: &str| p.chains.iter().find(|c| c.name == name);
        let kept = |c: &Chain, other: &'a Plan| find(other, &c.name).is_some_and(|o| o == c);
        if old.chains.iter().any(|c| c.base.is_none() && find(new, &c.name).is_some_and(|n| n != c)) {
            return None;
        }
        let gone = old.chains.iter().filter(|c| !kept(c, new)).collect();
        let come = new.chains.iter().filter(|c| !kept(c, old)).collect();
        Some((gone, come))
    }
}

/// Same table, mark and set definitions (names, types, flags, in order).
fn same_sets(old: &Plan, new: &Plan) -> bool {
    old.table == new.table
        && old.mark == new.mark
        && old.sets.len() == new.sets.len()
        && old.sets.iter().zip(&new.sets).all(|(a, b)| {
            a.name == b.name && a.key == b.key && a.data == b.data && a.interval == b.interval && a.counter == b.counter
        })
}
