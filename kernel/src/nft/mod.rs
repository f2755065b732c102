//! Kernel backend: puts a [`Plan`](portd_rules::plan::Plan) into nf_tables over netlink and reads it back.
//!
//! This is the only module of portd that speaks nf_tables (through `nftnl` and `mnl`).
//! [`Backend::apply`] replaces portd's own `inet` table in one atomic batch,
//! [`Backend::apply_delta`] changes only set elements and counters, and [`Backend::read`]
//! dumps the table into an [`Observed`] value that [`Observed::matches`] compares with a
//! plan. Every object is built attribute for attribute as nft(8) 1.0.6 builds the text of
//! [`portd_rules::render::render`] (sets with the same key types, lengths, flags and
//! userdata, rules with the same expressions and registers), so `nft list table` cannot
//! tell a table made here from one made by `nft -f`.
//!
//! Netlink I/O: changes go out on one kept socket (reads open their own, so they act in
//! the network namespace of the calling thread); the whole batch is sent in one `sendto`
//! (the kernel only treats what arrives in one message as a transaction), and then the
//! answer to every message it sent is awaited. Set elements go in chunks of at most
//! 32 KiB, below the 64 KiB limit of a netlink attribute and the 128 KiB pages of the
//! batch. The first refusal names the refused object, down to the element, from the
//! kernel's extended ack.
//!
//! The seams, in the order data flows through them:
//!
//! - `backend`: [`Backend`], the only public entry: apply, apply a delta, read, remove.
//! - `codec`: keys, map data and set definitions as bytes, and back (pure).
//! - `messages`: counter, set and set-element messages nftnl lacks (libnftnl objects).
//! - `expr`: plan rules as nf_tables expressions, chains (libnftnl objects).
//! - `batch`: one transaction and the subject of each message, for error messages.
//! - `conn`: the libmnl socket: send a batch, wait for every answer; GET and dump.
//! - `raw`: owned libnftnl objects and the printed text of a rule.
//! - `read`: dump the table into libnftnl objects and decode it.
//! - `foreign`: the base chains and rules of every other table, for `portctl doctor`.
//! - `observed`: [`Observed`], what the kernel holds, and its differences from a plan.
//! - `error`: [`BackendError`] and the hint for each errno.
//!
//! Generic netlink (attributes, headers, errors, sockets) lives in [`crate::netlink`].

mod backend;
mod batch;
mod codec;
mod conn;
mod consts;
mod error;
mod expr;
mod foreign;
mod messages;
mod observed;
mod raw;
mod read;

pub use backend::Backend;
pub use codec::SetShape;
pub use error::BackendError;
pub use foreign::{read_foreign, ForeignRead, MAX_FOREIGN_RULES};
pub use observed::{Observed, ObservedChain, ObservedHook};

/// The plan the unit tests of the codec and of observed state encode: one forward with
/// sources and an interface, so every set is used.
#[cfg(test)]
fn sample_plan() -> portd_rules::Plan {
    use portd_rules::model::{FamilySel, Forward, PortRange};
    use portd_rules::plan::{compile, OwnedSet};
    let mut f = Forward::new("web", PortRange::single(80), PortRange::single(8080));
    f.sources = vec!["203.0.113.7/24".parse().expect("net"), "2001:db8::/32".parse().expect("net")];
    f.interfaces = vec!["eth0".into()];
    // one family and a mark of its own: elements in every keyed-by-family set
    let mut g = Forward::new("dns", PortRange::single(53), PortRange::single(5353));
    g.family = FamilySel::Ipv4;
    g.mark = Some(7);
    compile("portd", 1, &[OwnedSet { owner: "system".into(), forwards: vec![f, g] }]).expect("compiles")
}
