//! portd's kernel side: everything that talks to the kernel (netlink and BPF). The daemon
//! binary uses this crate and nothing below it; this crate uses `portd-rules` for the
//! plan it writes and nothing of the daemon.
//!
//! - [`netlink`]: generic netlink sockets, messages and attributes;
//! - [`nft`]: the nf_tables backend that owns portd's table;
//! - [`events`]: drift detection from the nf_tables event group;
//! - [`conntrack`]: deletion of the conntrack entries of retired mappings;
//! - [`sockdiag`]: the sockets that hold ports (NETLINK_SOCK_DIAG);
//! - [`bpf`]: the BPF data plane: TCP steering (sk_lookup) and target port reservations;
//! - [`Kernel`]: the seam the actor drives, implemented by the backend and by test fakes.

pub mod bpf;
pub mod conntrack;
pub mod events;
pub mod netlink;
pub mod nft;
mod seam;
pub mod sockdiag;

pub use seam::Kernel;
