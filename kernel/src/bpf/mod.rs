//! The BPF data plane: steers TCP forwards to their owner's listening socket
//! (sk_lookup, no NAT) and reserves target ports for their owner (cgroup bind
//! hooks). `kernel/bpf/README.md` describes the programs, maps and pins.
//!
//! One [`Dataplane`] serves the network namespace of the thread that opens
//! it, and must be used from a thread of that namespace. Everything is pinned
//! under the pin directory, so programs stay attached while the daemon
//! restarts; [`Dataplane::remove`] takes them away.

mod abi;
mod error;
mod events;
mod hooks;
mod link_update;
mod load;
mod ports;
mod probe;
mod sync;
mod sys;
mod types;

use std::path::PathBuf;

use aya::{
    maps::{MapData, RingBuf},
    programs::links::PinnedLink,
    Ebpf,
};

pub use error::{BpfError, Unsupported};
pub use ports::{read_reserved_ports, reserve_local_ports};
pub use probe::{can_create_map, probe, KERNEL_FLOOR};
pub use types::{BindEvent, Families, Family, Proto, Repaired, Reservation, SteerEntry, Watched};

/// Sockets that can be registered for one target port (members of a
/// SO_REUSEPORT group, a v4 and a v6 socket, …).
pub const SLOTS_PER_PORT: usize = abi::SLOTS as usize;
/// Most entries of each rule set [`Dataplane::sync`] takes (every port).
pub const MAX_PORTS: usize = abi::MAX_PORTS;
/// The owner of a system forward (from the root-written configuration): a
/// [`SteerEntry`] with this `owner_uid` goes to a socket of any uid listening
/// on its target. Never the owner of a [`Reservation`] or a [`Watched`] port
/// (`sync` refuses it); `(uid_t)-1` is no real uid.
pub const ANY_UID: u32 = abi::ANY_UID;

/// The loaded, attached and pinned programs and maps of one portd instance.
pub struct Dataplane {
    pin_dir: PathBuf,
    /// The highest uid of a system account (see [`Dataplane::open_for`]).
    sys_uid_max: u32,
    netns_cookie: u64,
    ebpf: Ebpf,
    /// One per [`hooks::Hook`], in `Hook::ALL` order.
    links: Vec<PinnedLink>,
    events: RingBuf<MapData>,
    /// A second handle on the ring buffer map, to pin it again if needed.
    events_map: MapData,
    /// What the last successful `sync` wrote: the next one diffs against it
    /// instead of reading every map back. `None` (after `open`, a `repair` that
    /// put something back, a failed `sync` or [`Dataplane::forget_written`]):
    /// read the maps.
    written: Option<sync::Written>,
}

impl std::fmt::Debug for Dataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataplane")
            .field("pin_dir", &self.pin_dir)
            .field("netns_cookie", &self.netns_cookie)
            .finish_non_exhaustive()
    }
}
