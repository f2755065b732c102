//! Errors of the data plane, one variant per phase.

#![forbid(unsafe_code)]

use std::{io, path::PathBuf};

/// Why [`super::Dataplane::open`], `sync`, `repair` or `remove` failed.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("{path} is not on a BPF filesystem: mount one (mount -t bpf bpf /sys/fs/bpf) and pin below it")]
    NotBpffs { path: PathBuf },
    #[error("pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "pin directory {path} {why}: another account may have prepared it to take over or switch off \
         portd's BPF data plane; remove it (as root) and restart portd (a bpffs mounted with mode 0700 keeps \
         other accounts out)"
    )]
    UnsafePinDir { path: PathBuf, why: String },
    #[error(
        "pin directory {path} belongs to another network namespace (cookie {pinned}, this one is {ours}): \
         each namespace needs its own pin directory; remove the stale one with --remove-table from its namespace"
    )]
    WrongNetns { path: PathBuf, pinned: u64, ours: u64 },
    #[error("network namespace of this thread: {0}")]
    Netns(#[source] io::Error),
    #[error("cgroup v2 root: {0}")]
    Cgroup(String),
    #[error("kernel BTF (/sys/kernel/btf/vmlinux, needs CONFIG_DEBUG_INFO_BTF): {0}")]
    Btf(#[source] aya::BtfError),
    #[error("loading the BPF object (maps pinned under {dir}): {source}")]
    Object {
        dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {program}: {action}: {source}")]
    Program {
        program: &'static str,
        action: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("program {program}: its attachment is not a BPF link (needs kernel 5.7+): {source}")]
    Link {
        program: &'static str,
        #[source]
        source: Box<aya::programs::links::LinkError>,
    },
    #[error("pinning {what} at {path}: {source}")]
    Pin {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("running the TCP socket iterator (needs CAP_PERFMON): {0}")]
    Iterator(#[source] io::Error),
    #[error("invalid rule set: {0}")]
    Invalid(String),
}

impl BpfError {
    pub(crate) fn map(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> BpfError {
        move |e| BpfError::Map { map, source: Box::new(e) }
    }

    pub(crate) fn program(
        program: &'static str,
        action: &'static str,
    ) -> impl FnOnce(aya::programs::ProgramError) -> BpfError {
        move |e| BpfError::Program { program, action, source: Box::new(e) }
    }

    pub(crate) fn pin_dir(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> BpfError {
        let path = path.into();
        move |source| BpfError::PinDir { path, source }
    }
}

/// Why this kernel or process cannot run the data plane; the daemon falls back
/// to NAT and says this.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("BPF data plane unavailable: {0}")]
pub struct Unsupported(pub String);
