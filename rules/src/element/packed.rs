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
use crate::model::{Family, Proto};
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
    encode_parts(&e.key, e.data.as_ref(), e.comment.as_deref())
}

fn encode_parts(key: &[Value], data: Option<&Value>, comment: Option<&str>) -> Packed {
    let mut out = Vec::with_capacity(2 * INLINE);
    encode_key(&mut out, key);
    finish(&mut out, data, comment);
    Packed::new(&out)
}

/// Appends what follows the key: the data and the comment.
fn finish(out: &mut Vec<u8>, data: Option<&Value>, comment: Option<&str>) {
    match data {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_value(out, v);
        }
    }
    match comment {
        None => out.push(0),
        Some(c) => {
            out.push(1);
            put_name(out, c);
        }
    }
}

/// One field of a packed element, read in place without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRef<'a> {
    /// [`Value::NfProto`]
    NfProto(Family),
    /// [`Value::InetProto`]
    InetProto(Proto),
    /// [`Value::InetService`]
    InetService(u16),
    /// [`Value::Mark`]
    Mark(u32),
    /// [`Value::Ifname`]: the name's bytes
    Ifname(&'a [u8]),
    /// [`Value::Ipv4Net`]: address and prefix length
    Ipv4Net([u8; 4], u8),
    /// [`Value::Ipv6Net`]: address and prefix length
    Ipv6Net([u8; 16], u8),
}

impl<'a> From<&'a Value> for FieldRef<'a> {
    fn from(v: &'a Value) -> FieldRef<'a> {
        match v {
            Value::NfProto(f) => FieldRef::NfProto(*f),
            Value::InetProto(p) => FieldRef::InetProto(*p),
            Value::InetService(p) => FieldRef::InetService(*p),
            Value::Mark(m) => FieldRef::Mark(*m),
            Value::Ifname(n) => FieldRef::Ifname(n.as_bytes()),
            Value::Ipv4Net(n) => FieldRef::Ipv4Net(n.addr().octets(), n.prefix_len()),
            Value::Ipv6Net(n) => FieldRef::Ipv6Net(n.addr().octets(), n.prefix_len()),
        }
    }
}

/// A packed element, borrowed from its set: fields are read in place, for encoders that
/// need bytes rather than [`Element`] values.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ElementRef<'a>(&'a [u8]);

impl fmt::Debug for ElementRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.decode().fmt(f)
    }
}

/// One packed element, owned: built from a key in its packed form and a comment, to be
/// compared with a set's elements or put into one.
pub(crate) struct PackedElement(Packed);

impl PackedElement {
    /// The element of key `key` (as [`ElementRef::key_bytes`] gives it), no data, and
    /// `comment`.
    pub(crate) fn keyed(key: &[u8], comment: Option<&str>) -> PackedElement {
        let mut out = Vec::with_capacity(2 * INLINE);
        out.extend_from_slice(key);
        finish(&mut out, None, comment);
        PackedElement(Packed::new(&out))
    }

    /// Borrowed, like a set's elements.
    pub(crate) fn as_ref(&self) -> ElementRef<'_> {
        ElementRef(self.0.bytes())
    }
}

/// The packed form of a key, to find or compare keys without decoding elements.
pub(crate) fn key_bytes(out: &mut Vec<u8>, key: &[Value]) {
    out.clear();
    encode_key(out, key);
}

/// The parts of a packed element: key fields (at most 4, as portd's keys have), data
/// and comment.
pub struct Parts<'a> {
    /// Key fields, in order.
    pub key: [Option<FieldRef<'a>>; 4],
    /// The mapped value, for maps.
    pub data: Option<FieldRef<'a>>,
    /// The comment.
    pub comment: Option<&'a str>,
}

/// A borrowed reader of packed bytes; `None` when a name holds an escaped NUL (then
/// only [`decode`] can read it) or the key has more fields than [`Parts`] holds.
struct RefReader<'a>(&'a [u8]);

impl<'a> RefReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn name(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|b| *b == 0)?;
        let name = self.take(end)?;
        // 0x00 0x01 ends a name; 0x00 0xFF is an escaped NUL inside it
        (self.take(2)? == [0, 1]).then_some(name)
    }

    fn field(&mut self, t: u8) -> Option<Option<FieldRef<'a>>> {
        Some(Some(match t {
            tag::NFPROTO => FieldRef::NfProto(family_of_byte(self.byte()?)),
            tag::INET_PROTO => FieldRef::InetProto(proto_of_byte(self.byte()?)),
            tag::INET_SERVICE => FieldRef::InetService(u16::from_be_bytes(self.take(2)?.try_into().ok()?)),
            tag::MARK => FieldRef::Mark(u32::from_be_bytes(self.take(4)?.try_into().ok()?)),
            tag::IFNAME => FieldRef::Ifname(self.name()?),
            tag::IPV4_NET => FieldRef::Ipv4Net(self.take(4)?.try_into().ok()?, self.byte()?),
            tag::IPV6_NET => FieldRef::Ipv6Net(self.take(16)?.try_into().ok()?, self.byte()?),
            0 => return Some(None),
            _ => return None,
        }))
    }
}

impl<'a> ElementRef<'a> {
    /// The fields, read in place; `None` for the rare element that only [`decode`] reads
    /// (a name with a NUL byte, or a key of more than four fields).
    pub fn parts(&self) -> Option<Parts<'a>> {
        let mut r = RefReader(self.0);
        let mut key = [None; 4];
        let mut i = 0;
        loop {
            let t = r.byte()?;
            match r.field(t)? {
                None => break,
                Some(f) => {
                    *key.get_mut(i)? = Some(f);
                    i += 1;
                }
            }
        }
        let data = match r.byte()? {
            1 => {
                let t = r.byte()?;
                r.field(t)?
            }
            _ => None,
        };
        let comment = match r.byte()? {
            1 => Some(std::str::from_utf8(r.name()?).ok()?),
            _ => None,
        };
        Some(Parts { key, data, comment })
    }

    /// The element, decoded.
    pub fn decode(&self) -> Element {
        decode_bytes(self.0)
    }

    /// The packed key: its fields and the byte that ends it. Two elements of one set
    /// have the same key exactly when these bytes are equal.
    pub(crate) fn key_bytes(&self) -> &'a [u8] {
        let b = self.0;
        let mut i = 0;
        while let Some(&t) = b.get(i) {
            i += 1;
            i += match t {
                0 => return &b[..i],
                tag::NFPROTO | tag::INET_PROTO => 1,
                tag::INET_SERVICE => 2,
                tag::MARK => 4,
                tag::IPV4_NET => 5,
                tag::IPV6_NET => 17,
                // a name: its bytes up to 0x00 0x01 (0x00 0xFF is an escaped NUL)
                tag::IFNAME => {
                    let mut n = 0;
                    while let Some(&c) = b.get(i + n) {
                        n += if c == 0 { 2 } else { 1 };
                        if c == 0 && b.get(i + n - 1) == Some(&1) {
                            break;
                        }
                    }
                    n
                }
                // never written by `encode`
                _ => break,
            };
        }
        &b[..i.min(b.len())]
    }
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
    decode_bytes(p.bytes())
}

fn decode_bytes(bytes: &[u8]) -> Element {
    let mut r = Reader(bytes);
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

    /// Adds an element given by its parts, without building an [`Element`].
    pub fn insert_parts(&mut self, key: &[Value], data: Option<&Value>, comment: Option<&str>) -> bool {
        self.0.insert(encode_parts(key, data, comment))
    }

    /// The elements in order, borrowed in their packed form.
    pub fn refs(&self) -> impl Iterator<Item = ElementRef<'_>> + '_ {
        self.0.iter().map(|p| ElementRef(p.bytes()))
    }

    /// Adds a packed element (of a set of the same type); false if it was already there.
    pub fn insert_ref(&mut self, r: ElementRef<'_>) -> bool {
        self.0.insert(Packed::new(r.0))
    }

    /// Adds an owned packed element; false if it was already there.
    pub(crate) fn insert_packed(&mut self, p: PackedElement) -> bool {
        self.0.insert(p.0)
    }

    /// True if the packed element is there.
    pub fn contains_ref(&self, r: ElementRef<'_>) -> bool {
        self.0.contains(&Packed::new(r.0))
    }

    /// Adds every element of `other`.
    pub fn insert_all(&mut self, other: &Elements) {
        self.0.extend(other.0.iter().cloned());
    }

    /// Removes every element of `other`.
    pub fn remove_all(&mut self, other: &Elements) {
        for p in &other.0 {
            self.0.remove(p);
        }
    }

    /// Elements of `self` that `other` lacks, packed.
    pub fn without(&self, other: &Elements) -> Elements {
        Elements(self.0.difference(&other.0).cloned().collect())
    }

    /// Removes from `self` and `other` the elements they share.
    pub fn drop_common(&mut self, other: &mut Elements) {
        let common: Vec<Packed> = self.0.intersection(&other.0).cloned().collect();
        for p in &common {
            self.0.remove(p);
            other.0.remove(p);
        }
    }

    /// Keeps only the elements for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(ElementRef<'_>) -> bool) {
        self.0.retain(|p| keep(ElementRef(p.bytes())));
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
        self.with_key_ref(key).map(|r| r.decode())
    }

    /// [`Elements::with_key`], borrowed in its packed form.
    pub fn with_key_ref(&self, key: &[Value]) -> Option<ElementRef<'_>> {
        let mut probe = Vec::with_capacity(INLINE);
        encode_key(&mut probe, key);
        self.with_key_bytes(&probe)
    }

    /// [`Elements::with_key_ref`] of a packed key (see [`ElementRef::key_bytes`]).
    pub(crate) fn with_key_bytes(&self, key: &[u8]) -> Option<ElementRef<'_>> {
        let from = Packed::new(key);
        self.0.range(from..).next().filter(|p| p.bytes().starts_with(key)).map(|p| ElementRef(p.bytes()))
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
mod tests;
