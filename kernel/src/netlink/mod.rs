//! Netlink plumbing shared by every conversation portd has with the kernel: the nf_tables
//! backend ([`crate::nft`]), the nf_tables event listener, conntrack cleanup and socket
//! diagnostics. One attribute walker, one header and error parser, one socket with one
//! `setsockopt` wrapper, so each protocol module only knows its own message types.
//!
//! - [`attr`]: type-length-value attributes (4-byte aligned), read and appended.
//! - [`msg`]: message headers, the messages of a datagram, `NLMSG_ERROR` with its
//!   extended ack, and request building.
//! - [`socket`]: a raw `AF_NETLINK` socket (any protocol: `NETLINK_NETFILTER`,
//!   `NETLINK_SOCK_DIAG`, ...), group subscription, buffer sizing, request and dump loop.
//! - [`buf`]: a receive buffer aligned for netlink headers, for libraries that cast it.

pub mod attr;
pub mod buf;
pub mod msg;
pub mod socket;

pub use attr::{align4, attr, attrs, find, find_raw, push_padded, Attr};
pub use buf::AlignedBuf;
pub use msg::{header, messages, parse_error, Header, Msg, NlError, HEADER_LEN};
pub use socket::{setsockopt, setsockopt_int, Socket};
