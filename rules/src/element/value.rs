//! [`Value`], [`Element`] and [`FieldType`], with the explicit tag and order of values.

use crate::model::{Family, Proto};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;

/// Type of one field of a set key or of a map's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// `nf_proto` (1 byte)
    NfProto,
    /// `inet_proto` (1 byte)
    InetProto,
    /// `inet_service` (2 bytes, network order)
    InetService,
    /// `ifname` (16 bytes)
    Ifname,
    /// `ipv4_addr`
    Ipv4Addr,
    /// `ipv6_addr`
    Ipv6Addr,
    /// `mark` (4 bytes, host order)
    Mark,
}

/// One field value of an element. Values order by variant first (in the order below,
/// which is that of their explicit tag bytes), then by payload, with IPv4 before IPv6 and
/// TCP before UDP (explicit bytes too); the packed encoding sorts the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// `ipv4` / `ipv6`
    NfProto(Family),
    /// `tcp` / `udp`
    InetProto(Proto),
    /// a port
    InetService(u16),
    /// an interface name
    Ifname(String),
    /// an IPv4 network (an interval element)
    Ipv4Net(Ipv4Net),
    /// an IPv6 network (an interval element)
    Ipv6Net(Ipv6Net),
    /// a packet mark
    Mark(u32),
}

/// One set element or map entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Element {
    /// Key fields, one per [`crate::plan::Set::key`] field.
    pub key: Vec<Value>,
    /// Mapped value, for maps.
    pub data: Option<Value>,
    /// The element's comment in the kernel: `OWNER/NAME` of the forward that put it there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Tag bytes of the [`Value`] variants, in their order; the packed encoding starts every
/// field with one. 0 is reserved (it ends a key).
pub(crate) mod tag {
    /// [`super::Value::NfProto`]
    pub const NFPROTO: u8 = 1;
    /// [`super::Value::InetProto`]
    pub const INET_PROTO: u8 = 2;
    /// [`super::Value::InetService`]
    pub const INET_SERVICE: u8 = 3;
    /// [`super::Value::Ifname`]
    pub const IFNAME: u8 = 4;
    /// [`super::Value::Ipv4Net`]
    pub const IPV4_NET: u8 = 5;
    /// [`super::Value::Ipv6Net`]
    pub const IPV6_NET: u8 = 6;
    /// [`super::Value::Mark`]
    pub const MARK: u8 = 7;
}

/// The byte of a family in the packed encoding and in the order of values.
pub(crate) const fn family_byte(f: Family) -> u8 {
    match f {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
    }
}

/// The family of a [`family_byte`].
pub(crate) const fn family_of_byte(b: u8) -> Family {
    if b == 0 {
        Family::Ipv4
    } else {
        Family::Ipv6
    }
}

/// The byte of a protocol in the packed encoding and in the order of values.
pub(crate) const fn proto_byte(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 0,
        Proto::Udp => 1,
    }
}

/// The protocol of a [`proto_byte`].
pub(crate) const fn proto_of_byte(b: u8) -> Proto {
    if b == 0 {
        Proto::Tcp
    } else {
        Proto::Udp
    }
}

impl Value {
    /// The tag byte of this value's variant (see [`tag`]).
    pub(crate) const fn tag(&self) -> u8 {
        match self {
            Value::NfProto(_) => tag::NFPROTO,
            Value::InetProto(_) => tag::INET_PROTO,
            Value::InetService(_) => tag::INET_SERVICE,
            Value::Ifname(_) => tag::IFNAME,
            Value::Ipv4Net(_) => tag::IPV4_NET,
            Value::Ipv6Net(_) => tag::IPV6_NET,
            Value::Mark(_) => tag::MARK,
        }
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::NfProto(a), Value::NfProto(b)) => family_byte(*a).cmp(&family_byte(*b)),
            (Value::InetProto(a), Value::InetProto(b)) => proto_byte(*a).cmp(&proto_byte(*b)),
            (Value::InetService(a), Value::InetService(b)) => a.cmp(b),
            (Value::Ifname(a), Value::Ifname(b)) => a.cmp(b),
            (Value::Ipv4Net(a), Value::Ipv4Net(b)) => (a.addr(), a.prefix_len()).cmp(&(b.addr(), b.prefix_len())),
            (Value::Ipv6Net(a), Value::Ipv6Net(b)) => (a.addr(), a.prefix_len()).cmp(&(b.addr(), b.prefix_len())),
            (Value::Mark(a), Value::Mark(b)) => a.cmp(b),
            _ => self.tag().cmp(&other.tag()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Value) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
