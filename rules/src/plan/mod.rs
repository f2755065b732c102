//! The [`Plan`]: exactly what goes into the kernel, as a plain comparable value.
//!
//! Dispatch is O(1) in the number of forwards: the chains are a fixed skeleton of
//! rules, each doing one hash or interval lookup keyed by `l4proto . dport` (forwards of
//! both families) or `nfproto . l4proto . dport`; every forward contributes only set and
//! map elements, and counts its traffic in counters carried by its own elements.
//! Changing one forward is therefore a small element-level [`Delta`].

//!
//! - `table`: the vocabulary ([`Plan`], [`Set`], [`Chain`], [`Rule`], [`names`], ...).
//! - [`compile`](fn@compile): the skeleton every plan shares, and compiling owners' sets.
//! - `changes`: one owner's forwards replaced, added or removed as a [`Delta`].
//! - `delta`: the [`Delta`] between two plans, and making it the current plan.
//! - `summary`: the [`Summary`] of a change, for answers and logs.
//! - `stale`: the redirections a change removes or retargets ([`Stale`]), whose
//!   established flows must be forgotten.
//!
//! Values and elements live in the leaf module `element`, re-exported here.

mod changes;
mod compile;
mod delta;
mod stale;
mod summary;
mod table;

pub use crate::element::{Element, ElementRef, Elements, FieldRef, FieldType, Parts, Value};
pub(crate) use compile::Counting;
pub use compile::{compile, compile_borrowed, compile_dispatched};
pub use delta::{Delta, SetElements};
pub use stale::{fresh_in_delta, fresh_mappings, stale_in_delta, stale_mappings, Stale};
pub use summary::Summary;
pub use table::{
    element_comment, names, BaseChain, Chain, ChainType, Conflict, Hook, KeyExpr, OwnedSet, PlacedForward, Plan, Rule,
    Set, MIN_SET_SIZE, SYSTEM_OWNER,
};
