//! The [`Delta`] between two plans (elements to add and delete, or
//! "structural": replace the whole table), and making it the current plan.

use super::summary::summarize;
use super::summary::Summary;
use super::table::{placed_order, Plan};
use crate::element::Element;
use serde::{Deserialize, Serialize};

/// Element-level difference between two plans of the same skeleton.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Delta {
    /// True when table, chains or set definitions differ: only a full apply will do.
    pub structural: bool,
    /// Elements to delete, per set (before additions, so a changed map entry is replaced).
    pub del_elements: Vec<(String, Element)>,
    /// Elements to add, per set.
    pub add_elements: Vec<(String, Element)>,
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
            for e in a.elements.difference(&b.elements) {
                self.del_elements.push((a.name.clone(), e));
            }
            for e in b.elements.difference(&a.elements) {
                self.add_elements.push((b.name.clone(), e));
            }
        }
    }

    /// True when the kernel needs no change.
    pub fn is_empty(&self) -> bool {
        !self.structural && self.del_elements.is_empty() && self.add_elements.is_empty()
    }

    /// Number of kernel objects the delta touches.
    pub fn size(&self) -> usize {
        self.del_elements.len() + self.add_elements.len()
    }

    /// Applies the element changes (not the list of forwards) to `plan`.
    fn apply_objects(&self, plan: &mut Plan) {
        for (s, e) in &self.del_elements {
            plan.set_mut(s).elements.remove(e);
        }
        for (s, e) in &self.add_elements {
            plan.set_mut(s).elements.insert(e.clone());
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

impl Plan {
    /// The change from `old` to `new`: elements to add and delete.
    pub fn diff(old: &Plan, new: &Plan) -> Delta {
        let mut d = Delta { summary: summarize(old, new), ..Delta::default() };
        let same_shape = old.table == new.table
            && old.mark == new.mark
            && old.chains == new.chains
            && old.sets.len() == new.sets.len()
            && old.sets.iter().zip(&new.sets).all(|(a, b)| {
                a.name == b.name
                    && a.key == b.key
                    && a.data == b.data
                    && a.interval == b.interval
                    && a.counter == b.counter
            });
        if !same_shape {
            d.structural = true;
            return d;
        }
        d.objects_from(old, new);
        d
    }
}
