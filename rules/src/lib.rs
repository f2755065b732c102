//! portd-rules: everything between a YAML file and the nftables ruleset it means.
//!
//! Pure code: parsing strings, validation with located diagnostics, compilation of
//! owners' forward sets into a [`Plan`], element-level diffs, nft(8) text rendering,
//! and the wire types of the control protocol. No I/O besides parsing, no `unsafe`.

#![forbid(unsafe_code)]

pub mod budget;
pub mod diag;
pub mod doctor;
mod element;
mod listeners;
pub mod listening;
pub mod load;
mod locate;
pub mod model;
pub mod owner;
pub mod plan;
pub mod policy;
pub mod proto;
pub mod render;
mod shape;
pub mod text;
pub mod validate;

pub use diag::{Diagnostic, Diagnostics};
pub use load::{parse_config, parse_rules, MAX_FILE_BYTES};
pub use model::{
    Config, Dispatch, Family, FamilySel, Forward, Grant, GrantSubject, ListenerCheck, MarkRange, OnExit, Ownership,
    PortRange, Proto, ProtoSel, RulesFile, Settings, SocketSettings,
};
pub use plan::{compile, Conflict, Delta, OwnedSet, Plan, Summary};
