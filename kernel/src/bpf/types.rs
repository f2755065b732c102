//! The typed rule sets the daemon hands to [`super::Dataplane::sync`], and the
//! events it gets back.

#![forbid(unsafe_code)]

use super::abi::{self, PortKey, SteerVal};

/// Transport protocol of a reservation or watched port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub(crate) fn number(self) -> u8 {
        match self {
            Proto::Tcp => abi::IPPROTO_TCP,
            Proto::Udp => abi::IPPROTO_UDP,
        }
    }

    pub(crate) fn from_number(n: u8) -> Option<Self> {
        match n {
            abi::IPPROTO_TCP => Some(Proto::Tcp),
            abi::IPPROTO_UDP => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// Address family of a bind or a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

/// Which families a steered forward takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Families {
    pub v4: bool,
    pub v6: bool,
}

impl Families {
    pub const BOTH: Families = Families { v4: true, v6: true };
}

/// A TCP forward steered from `public_port` to the socket(s) that
/// `owner_uid` listens with on `target_port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SteerEntry {
    pub public_port: u16,
    pub target_port: u16,
    pub owner_uid: u32,
    pub families: Families,
    /// Also steer connections that arrive on loopback (made on this host).
    pub local: bool,
}

impl SteerEntry {
    pub(crate) fn value(&self) -> SteerVal {
        let mut families = 0;
        if self.families.v4 {
            families |= abi::FAMILY_V4;
        }
        if self.families.v6 {
            families |= abi::FAMILY_V6;
        }
        SteerVal { target_port: self.target_port, families, flags: if self.local { abi::STEER_LOCAL } else { 0 } }
    }
}

/// `port` may be bound (for `proto`, any address, either family) by
/// `owner_uid` only; anyone else, root included, gets EACCES.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reservation {
    pub proto: Proto,
    pub port: u16,
    pub owner_uid: u32,
}

/// A public port that `owner_uid`'s forward uses: a bind of it by another uid
/// succeeds but yields a [`BindEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Watched {
    pub proto: Proto,
    pub port: u16,
    pub owner_uid: u32,
}

pub(crate) fn port_key(proto: Proto, port: u16) -> PortKey {
    PortKey { proto: proto.number(), pad: 0, port }
}

/// A bind of a watched port by a uid other than its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BindEvent {
    pub proto: Proto,
    pub port: u16,
    pub uid: u32,
    pub family: Family,
}

impl BindEvent {
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        let raw = abi::RawBindEvent::parse(bytes)?;
        Some(BindEvent {
            proto: Proto::from_number(raw.proto)?,
            port: raw.port,
            uid: raw.uid,
            family: if raw.family == abi::FAMILY_V6 { Family::V6 } else { Family::V4 },
        })
    }
}

/// What [`super::Dataplane::repair`] put back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// Programs attached again (their link pin was missing).
    pub reattached: Vec<&'static str>,
    /// Maps pinned again from the handles this process holds.
    pub repinned: Vec<&'static str>,
}

impl Repaired {
    pub fn is_empty(&self) -> bool {
        self.reattached.is_empty() && self.repinned.is_empty()
    }
}
