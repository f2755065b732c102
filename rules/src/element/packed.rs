//! [`Elements`]: the elements of one set, kept as short byte strings.
//!
//! A plan of 10,000 forwards holds 60,000 elements. As [`Element`] values (a vector of
//! tagged values each, one heap block per element and one per name) they took about 200
//! bytes apiece; packed, a typical element is 10 to 38 bytes stored inline in the B-tree.
//! The encoding preserves order: packed elements sort exactly as the [`Element`]s they
//! encode, so iteration order (and thus rendering and batching) is unchanged.
//!
//! Layout: each key field is a tag byte (see `value::tag`) and its payload; then 0x00 ends the key; then 0x00 for no data or 0x01 and the data field;
//! then 0x00 for no comment or 0x01 and the comment as a name.
//! Payloads are fixed-width big-endian integers, except names, whose bytes are written
//! with 0x00 escaped as 0x00 0xFF and end with 0x00 0x01.

use super::value::{family_byte, family_of_byte, proto_byte, proto_of_byte, tag, Element, Value};
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Bytes kept inline; longer encodings (long counter or interface names) go to the heap.
const INLINE: usize = 38;

#[derive(Clone)]
enum Packed {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Packed {
    fn new(bytes: &[u8]) -> Packed {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= INLINE => {
                let mut buf = [0; INLINE];
                buf[..bytes.len()].copy_from_slice(bytes);
                Packed::Inline { len, buf }
            }
            _ => Packed::Heap(bytes.into()),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Packed::Inline { len, buf } => &buf[..usize::from(*len)],
            Packed::Heap(b) => b,
        }
    }
}

impl PartialEq for Packed {
    fn eq(&self, other: &Packed) -> bool {
        self.bytes() == other.bytes()
    }
}
impl Eq for Packed {}
impl PartialOrd for Packed {
    fn partial_cmp(&self, other: &Packed) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Packed {
    fn cmp(&self, other: &Packed) -> Ordering {
        self.bytes().cmp(other.bytes())
    }
}

fn put_name(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    out.push(v.tag());
    match v {
        Value::NfProto(f) => out.push(family_byte(*f)),
        Value::InetProto(p) => out.push(proto_byte(*p)),
        Value::InetService(port) => out.extend_from_slice(&port.to_be_bytes()),
        Value::Ifname(n) => put_name(out, n),
        Value::Ipv4Net(n) => {
            out.extend_from_slice(&n.addr().octets());
            out.push(n.prefix_len());
        }
        Value::Ipv6Net(n) => {
            out.extend_from_slice(&n.addr().octets());
            out.push(n.prefix_len());
        }
        Value::Mark(m) => out.extend_from_slice(&m.to_be_bytes()),
    }
}

fn encode_key(out: &mut Vec<u8>, key: &[Value]) {
    for v in key {
        put_value(out, v);
    }
    out.push(0);
}

fn encode(e: &Element) -> Packed {
    let mut out = Vec::with_capacity(INLINE);
    encode_key(&mut out, &e.key);
    match &e.data {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_value(&mut out, v);
        }
    }
    match &e.comment {
        None => out.push(0),
        Some(c) => {
            out.push(1);
            put_name(&mut out, c);
        }
    }
    Packed::new(&out)
}

/// Reads back what `encode` wrote. The input is always our own encoding; a malformed
/// tail (impossible) ends the element early rather than panicking.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        let n = N.min(self.0.len());
        a[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        a
    }

    fn byte(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    fn name(&mut self) -> String {
        let mut out = Vec::new();
        while let Some((&b, rest)) = self.0.split_first() {
            self.0 = rest;
            if b != 0 {
                out.push(b);
                continue;
            }
            match self.byte() {
                0xff => out.push(0),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn value(&mut self, t: u8) -> Option<Value> {
        Some(match t {
            tag::NFPROTO => Value::NfProto(family_of_byte(self.byte())),
            tag::INET_PROTO => Value::InetProto(proto_of_byte(self.byte())),
            tag::INET_SERVICE => Value::InetService(u16::from_be_bytes(self.take())),
            tag::IFNAME => Value::Ifname(self.name()),
            tag::IPV4_NET => {
                let a = Ipv4Addr::from(self.take::<4>());
                Value::Ipv4Net(Ipv4Net::new(a, self.byte()).unwrap_or_default())
            }
            tag::IPV6_NET => {
                let a = Ipv6Addr::from(self.take::<16>());
                Value::Ipv6Net(Ipv6Net::new(a, self.byte()).unwrap_or_default())
            }
            tag::MARK => Value::Mark(u32::from_be_bytes(self.take())),
            _ => return None,
        })
    }
}

fn decode(p: &Packed) -> Element {
    let mut r = Reader(p.bytes());
    let mut key = Vec::with_capacity(3);
    loop {
        let tag = r.byte();
        match r.value(tag) {
            Some(v) => key.push(v),
            None => break,
        }
    }
    let data = if r.byte() == 1 {
        let tag = r.byte();
        r.value(tag)
    } else {
        None
    };
    let comment = (r.byte() == 1).then(|| r.name());
    Element { key, data, comment }
}

/// The elements of one set, ordered as [`Element`] orders them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Elements(BTreeSet<Packed>);

impl Elements {
    /// No elements.
    pub fn new() -> Elements {
        Elements::default()
    }

    /// Adds an element; false if it was already there.
    pub fn insert(&mut self, e: Element) -> bool {
        self.0.insert(encode(&e))
    }

    /// Removes an element; false if it was not there.
    pub fn remove(&mut self, e: &Element) -> bool {
        self.0.remove(&encode(e))
    }

    /// True if the element is there.
    pub fn contains(&self, e: &Element) -> bool {
        self.0.contains(&encode(e))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The elements in order, decoded.
    pub fn iter(&self) -> impl Iterator<Item = Element> + '_ {
        self.0.iter().map(decode)
    }

    /// Elements of `self` that `other` lacks, in order.
    pub fn difference<'a>(&'a self, other: &'a Elements) -> impl Iterator<Item = Element> + 'a {
        self.0.difference(&other.0).map(decode)
    }

    /// The first element whose key is `key` (of a map: the entry for that key).
    pub fn with_key(&self, key: &[Value]) -> Option<Element> {
        let mut probe = Vec::with_capacity(INLINE);
        encode_key(&mut probe, key);
        let from = Packed::new(&probe);
        self.0.range(from..).next().filter(|p| p.bytes().starts_with(&probe)).map(decode)
    }
}

impl fmt::Debug for Elements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<Element> for Elements {
    fn from_iter<I: IntoIterator<Item = Element>>(iter: I) -> Elements {
        Elements(iter.into_iter().map(|e| encode(&e)).collect())
    }
}

impl Extend<Element> for Elements {
    fn extend<I: IntoIterator<Item = Element>>(&mut self, iter: I) {
        self.0.extend(iter.into_iter().map(|e| encode(&e)));
    }
}

/// The elements of a set, decoded, consuming it.
pub struct IntoIter(std::collections::btree_set::IntoIter<Packed>);

impl Iterator for IntoIter {
    type Item = Element;

    fn next(&mut self) -> Option<Element> {
        self.0.next().map(|p| decode(&p))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl IntoIterator for Elements {
    type Item = Element;
    type IntoIter = IntoIter;

    fn into_iter(self) -> IntoIter {
        IntoIter(self.0.into_iter())
    }
}

impl Serialize for Elements {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for Elements {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Elements, D::Error> {
        Ok(Vec::<Element>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, Proto};

    fn samples() -> Vec<Element> {
        let k = |f, p, port| vec![Value::NfProto(f), Value::InetProto(p), Value::InetService(port)];
        let mut v = Vec::new();
        for f in [Family::Ipv4, Family::Ipv6] {
            for p in [Proto::Tcp, Proto::Udp] {
                for port in [1, 80, 255, 256, 8080, 65535] {
                    v.push(Element { key: k(f, p, port), data: None, comment: None });
                    v.push(Element {
                        key: k(f, p, port),
                        data: Some(Value::InetService(port ^ 0x5a5a)),
                        comment: None,
                    });
                    v.push(Element {
                        key: k(f, p, port),
                        data: Some(Value::Mark(u32::from(port) << 16)),
                        comment: None,
                    });
                    for name in [
                        "",
                        "a",
                        "a\0",
                        "a\0b",
                        "ab",
                        "c_user_root_p1025_0123abcd",
                        "c_a_very_long_owner_name_indeed_1234",
                    ] {
                        v.push(Element { key: k(f, p, port), data: None, comment: Some(name.into()) });
                        let mut key = k(f, p, port);
                        key.push(Value::Ifname(name.into()));
                        v.push(Element { key, data: None, comment: None });
                    }
                    for (a, len) in [([10, 0, 0, 0], 8), ([10, 0, 0, 0], 16), ([192, 168, 1, 7], 32)] {
                        let key = vec![
                            Value::InetProto(p),
                            Value::InetService(port),
                            Value::Ipv4Net(Ipv4Net::new(a.into(), len).expect("net")),
                        ];
                        v.push(Element { key, data: None, comment: None });
                    }
                    let six = Ipv6Net::new("2001:db8::".parse().expect("addr"), 32).expect("net");
                    v.push(Element {
                        key: vec![Value::InetService(port), Value::Ipv6Net(six)],
                        data: None,
                        comment: None,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn round_trips_and_sorts_like_the_values() {
        let all = samples();
        for e in &all {
            assert_eq!(&decode(&encode(e)), e);
        }
        let by_value: BTreeSet<Element> = all.iter().cloned().collect();
        let packed: Elements = all.iter().cloned().collect();
        assert_eq!(packed.len(), by_value.len());
        assert!(packed.iter().eq(by_value.iter().cloned()), "same order as Element's Ord");
    }

    #[test]
    fn finds_a_map_entry_by_key_and_takes_set_operations() {
        let all = samples();
        let packed: Elements = all.iter().cloned().collect();
        let key = vec![Value::NfProto(Family::Ipv6), Value::InetProto(Proto::Udp), Value::InetService(8080)];
        let first = packed.with_key(&key).expect("present");
        assert_eq!(first.key, key);
        assert_eq!(first.data, None, "no data sorts first");
        let missing = vec![Value::NfProto(Family::Ipv6), Value::InetProto(Proto::Udp), Value::InetService(8081)];
        assert_eq!(packed.with_key(&missing), None);
        let mut fewer = packed.clone();
        assert!(fewer.remove(&first));
        assert!(!fewer.contains(&first));
        assert_eq!(packed.difference(&fewer).collect::<Vec<_>>(), vec![first.clone()]);
        assert!(fewer.insert(first));
        assert_eq!(fewer, packed);
    }

    #[test]
    fn typical_elements_stay_inline() {
        let e = Element {
            key: vec![Value::NfProto(Family::Ipv4), Value::InetProto(Proto::Tcp), Value::InetService(1025)],
            data: Some(Value::InetService(8025)),
            // the comment `compile` gives an element of forward p1025 of user root
            comment: Some("user:root/p1025".into()),
        };
        assert!(matches!(encode(&e), Packed::Inline { .. }), "{:?}", encode(&e).bytes());
        assert_eq!(decode(&encode(&e)), e);
        assert!(std::mem::size_of::<Packed>() <= 40, "{}", std::mem::size_of::<Packed>());
    }
}
