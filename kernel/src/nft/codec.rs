//! Encoding of keys, map data and set definitions as nft(8) 1.0.6 sends them, and
//! decoding of the elements a dump returns. Pure functions of plan values and bytes.
#![forbid(unsafe_code)]

use super::consts as k;
use portd_rules::model::{Family, Proto};
use portd_rules::plan::{Element, ElementRef, FieldRef, FieldType, Set, Value};
use portd_rules::render;
use std::net::{Ipv4Addr, Ipv6Addr};

/// How nft(8) represents one key field: datatype, length in bytes, byte order.
pub(super) fn field_spec(t: FieldType) -> Option<(u32, u32, u32)> {
    Some(match t {
        FieldType::NfProto => (k::TYPE_NFPROTO, 1, k::BYTEORDER_HOST),
        FieldType::InetProto => (k::TYPE_INET_PROTOCOL, 1, k::BYTEORDER_BIG),
        FieldType::InetService => (k::TYPE_INET_SERVICE, 2, k::BYTEORDER_BIG),
        FieldType::Ifname => (k::TYPE_IFNAME, 16, k::BYTEORDER_HOST),
        FieldType::Ipv4Addr => (k::TYPE_IPADDR, 4, k::BYTEORDER_BIG),
        FieldType::Ipv6Addr => (k::TYPE_IP6ADDR, 16, k::BYTEORDER_BIG),
        FieldType::Mark => (k::TYPE_MARK, 4, k::BYTEORDER_HOST),
    })
}

/// Length of a field in a concatenation: every field starts on a 4-byte register.
pub(super) fn reg_len(len: u32) -> u32 {
    len.div_ceil(4) * 4
}

/// Kernel definition of a set: the attributes that `apply` sets from a plan [`Set`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetShape {
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// nft datatype of the key (concatenations: 6 bits per field).
    pub key_type: u32,
    /// Key length in bytes.
    pub key_len: u32,
    /// Datatype of map data (0: none).
    pub data_type: u32,
    /// Length of map data (0: none).
    pub data_len: u32,
    /// Object type of object maps (0: none; portd's sets are never object maps).
    pub obj_type: u32,
    /// Every element carries a counter (the set's one expression is `counter`).
    pub counter: bool,
}

impl SetShape {
    /// The kernel definition `apply` gives `set`.
    pub fn of(set: &Set) -> Result<SetShape, String> {
        let mut shape = SetShape::default();
        let concat = set.key.len() > 1;
        for t in &set.key {
            let (id, len, _) = field_spec(*t).ok_or_else(|| format!("{t:?} cannot be part of a key"))?;
            shape.key_type = (shape.key_type << k::TYPE_BITS) | id;
            shape.key_len += if concat { reg_len(len) } else { len };
        }
        if set.key.is_empty() {
            return Err("the key has no fields".into());
        }
        if set.interval {
            shape.flags |= k::NFT_SET_INTERVAL;
            if concat {
                shape.flags |= k::NFT_SET_CONCAT;
            }
        }
        shape.counter = set.counter;
        match set.data {
            None => {}
            Some(t) => {
                let (id, len, _) = field_spec(t).ok_or_else(|| format!("{t:?} cannot be map data"))?;
                shape.flags |= k::NFT_SET_MAP;
                shape.data_type = id;
                shape.data_len = len;
            }
        }
        Ok(shape)
    }
}

/// The userdata nft(8) 1.0.6 attaches to a set: key and data byte order, an (empty)
/// typeof record for concatenated keys, and the data-interval flag of maps. `nft list`
/// reads it back, so it is reproduced byte for byte.
pub(super) fn set_udata(set: &Set) -> Vec<u8> {
    fn put_u32(out: &mut Vec<u8>, ty: u8, v: u32) {
        out.extend_from_slice(&[ty, 4]);
        out.extend_from_slice(&v.to_ne_bytes());
    }
    let mut out = Vec::new();
    let key_order = match set.key.as_slice() {
        [one] => field_spec(*one).map_or(k::BYTEORDER_INVALID, |s| s.2),
        _ => k::BYTEORDER_INVALID,
    };
    put_u32(&mut out, k::UDATA_SET_KEYBYTEORDER, key_order);
    if let Some(d) = set.data.and_then(field_spec) {
        put_u32(&mut out, k::UDATA_SET_DATABYTEORDER, d.2);
    }
    if set.key.len() > 1 {
        // nest { TYPEOF_EXPR: EXPR_CONCAT, TYPEOF_DATA: nest { } }
        out.extend_from_slice(&[k::UDATA_SET_KEY_TYPEOF, 8]);
        put_u32(&mut out, k::UDATA_SET_TYPEOF_EXPR, k::EXPR_CONCAT);
        out.extend_from_slice(&[k::UDATA_SET_TYPEOF_DATA, 0]);
    }
    if set.data.is_some() {
        put_u32(&mut out, k::UDATA_SET_DATA_INTERVAL, 0);
    }
    out
}

/// One element as netlink bytes.
pub(super) struct EncodedElem {
    pub(super) key: Vec<u8>,
    pub(super) key_end: Option<Vec<u8>>,
    pub(super) data: Option<Vec<u8>>,
    /// `NFTA_SET_ELEM_USERDATA`: the comment as nft(8) writes it.
    pub(super) udata: Option<Vec<u8>>,
}

impl EncodedElem {
    /// Bytes this element takes in a set-element message.
    pub(super) fn wire_len(&self) -> usize {
        let value = |len: usize| 8 + len.div_ceil(4) * 4;
        4 + value(self.key.len())
            + self.key_end.as_ref().map_or(0, |v| value(v.len()))
            + self.data.as_ref().map_or(0, |v| value(v.len()))
            + self.udata.as_ref().map_or(0, |u| 4 + u.len().div_ceil(4) * 4)
    }
}

/// The bytes of one value, as nft(8) puts it into a key or map data.
fn value_bytes(v: &Value) -> Result<Vec<u8>, String> {
    let field = match v {
        Value::NfProto(f) => FieldRef::NfProto(*f),
        Value::InetProto(p) => FieldRef::InetProto(*p),
        Value::InetService(p) => FieldRef::InetService(*p),
        Value::Mark(m) => FieldRef::Mark(*m),
        Value::Ifname(name) => FieldRef::Ifname(name.as_bytes()),
        Value::Ipv4Net(n) if n.prefix_len() == 32 => return Ok(n.addr().octets().to_vec()),
        Value::Ipv6Net(n) if n.prefix_len() == 128 => return Ok(n.addr().octets().to_vec()),
        Value::Ipv4Net(_) | Value::Ipv6Net(_) => {
            return Err(format!("network {} needs an interval set", render::value(v)))
        }
    };
    let mut out = Vec::with_capacity(16);
    // every field but a network has its bytes
    field_bytes(field, &mut out).unwrap_or(Ok(()))?;
    Ok(out)
}

/// Encodes `e` for `set`: fields padded to registers in concatenations, networks of
/// interval sets as first and last address (`KEY` and `KEY_END`).
pub(super) fn encode_element(set: &Set, e: &Element, with_data: bool) -> Result<EncodedElem, String> {
    if e.key.len() != set.key.len() {
        return Err(format!("it has {} key fields, the set's key has {}", e.key.len(), set.key.len()));
    }
    let concat = set.key.len() > 1;
    let (mut key, mut end) = (Vec::new(), Vec::new());
    for v in &e.key {
        let (first, last) = match v {
            Value::Ipv4Net(n) if set.interval => (n.network().octets().to_vec(), n.broadcast().octets().to_vec()),
            Value::Ipv6Net(n) if set.interval => (n.network().octets().to_vec(), n.broadcast().octets().to_vec()),
            _ => {
                let b = value_bytes(v)?;
                (b.clone(), b)
            }
        };
        let width = if concat { reg_len(first.len() as u32) as usize } else { first.len() };
        for (out, mut b) in [(&mut key, first), (&mut end, last)] {
            b.resize(width, 0);
            out.extend_from_slice(&b);
        }
    }
    let mut out = EncodedElem { key, key_end: set.interval.then_some(end), data: None, udata: None };
    if !with_data {
        return Ok(out);
    }
    out.udata = e.comment.as_deref().map(comment_udata).transpose()?;
    match (set.data, &e.data) {
        (None, None) => {}
        (Some(_), Some(v)) => out.data = Some(value_bytes(v)?),
        (None, Some(_)) => return Err("it has data but the set is not a map".into()),
        (Some(_), None) => return Err("it has no data but the set is a map".into()),
    }
    Ok(out)
}

/// An element on its way into a batch, in the packed form its plan's set (or a delta)
/// holds it: encoded without decoding it, save for the rare element only
/// [`encode_element`] encodes.
#[derive(Clone, Copy)]
pub(super) struct Item<'a>(pub(super) ElementRef<'a>);

impl Item<'_> {
    /// Encodes the element for `set` (see [`encode_element`]).
    pub(super) fn encode(&self, set: &Set, with_data: bool) -> Result<EncodedElem, String> {
        match encode_packed(set, &self.0, with_data) {
            Some(done) => done,
            None => encode_element(set, &self.0.decode(), with_data),
        }
    }

    /// The element as nft(8) writes it, for messages.
    pub(super) fn text(&self) -> String {
        element_text(&self.0.decode())
    }
}

/// The bytes of one field, appended to `out` (what [`value_bytes`] returns for a value);
/// `None` for networks, which only [`encode_element`] encodes.
fn field_bytes(f: FieldRef<'_>, out: &mut Vec<u8>) -> Option<Result<(), String>> {
    match f {
        FieldRef::NfProto(Family::Ipv4) => out.push(k::NFPROTO_IPV4),
        FieldRef::NfProto(Family::Ipv6) => out.push(k::NFPROTO_IPV6),
        FieldRef::InetProto(Proto::Tcp) => out.push(libc::IPPROTO_TCP as u8),
        FieldRef::InetProto(Proto::Udp) => out.push(libc::IPPROTO_UDP as u8),
        FieldRef::InetService(p) => out.extend_from_slice(&p.to_be_bytes()),
        FieldRef::Mark(m) => out.extend_from_slice(&m.to_ne_bytes()),
        FieldRef::Ifname(name) => {
            if name.len() > 15 || name.contains(&0) {
                let name = String::from_utf8_lossy(name);
                return Some(Err(format!(
                    "interface name `{}` is longer than 15 bytes or has a NUL",
                    name.escape_debug()
                )));
            }
            out.extend_from_slice(name);
            out.resize(out.len() + 16 - name.len(), 0);
        }
        FieldRef::Ipv4Net(..) | FieldRef::Ipv6Net(..) => return None,
    }
    Some(Ok(()))
}

/// [`encode_element`] of a packed element, read in place; `None` when it takes the
/// general path (interval sets, networks, names with a NUL byte).
fn encode_packed(set: &Set, r: &ElementRef<'_>, with_data: bool) -> Option<Result<EncodedElem, String>> {
    if set.interval {
        return None;
    }
    let parts = r.parts()?;
    let fields: Vec<FieldRef<'_>> = parts.key.iter().flatten().copied().collect();
    if fields.len() != set.key.len() {
        return Some(Err(format!("it has {} key fields, the set's key has {}", fields.len(), set.key.len())));
    }
    let concat = set.key.len() > 1;
    let mut key = Vec::with_capacity(16);
    for f in fields {
        let start = key.len();
        if let Err(e) = field_bytes(f, &mut key)? {
            return Some(Err(e));
        }
        if concat {
            key.resize(start + reg_len((key.len() - start) as u32) as usize, 0);
        }
    }
    let mut out = EncodedElem { key, key_end: None, data: None, udata: None };
    if !with_data {
        return Some(Ok(out));
    }
    out.udata = match parts.comment.map(comment_udata).transpose() {
        Ok(u) => u,
        Err(e) => return Some(Err(e)),
    };
    match (set.data, parts.data) {
        (None, None) => {}
        (Some(_), Some(f)) => {
            let mut data = Vec::with_capacity(4);
            if let Err(e) = field_bytes(f, &mut data)? {
                return Some(Err(e));
            }
            out.data = Some(data);
        }
        (None, Some(_)) => return Some(Err("it has data but the set is not a map".into())),
        (Some(_), None) => return Some(Err("it has no data but the set is a map".into())),
    }
    Some(Ok(out))
}

/// Longest element comment nft(8) accepts (NFT_USERDATA_MAXLEN is 256 bytes, nft
/// limits comments to 128 characters).
const COMMENT_MAX: usize = 128;

/// An element comment as nft(8) stores it: one userdata TLV of type
/// `NFTNL_UDATA_SET_ELEM_COMMENT` holding the text and its terminating NUL.
pub(super) fn comment_udata(comment: &str) -> Result<Vec<u8>, String> {
    if comment.len() > COMMENT_MAX || comment.bytes().any(|b| b == 0 || b == b'"' || b.is_ascii_control()) {
        return Err(format!(
            "comment `{}` is longer than {COMMENT_MAX} bytes or has a quote, NUL or control character",
            comment.escape_debug()
        ));
    }
    let len = u8::try_from(comment.len() + 1).map_err(|_| format!("comment `{comment}` is too long"))?;
    let mut out = vec![k::UDATA_SET_ELEM_COMMENT, len];
    out.extend_from_slice(comment.as_bytes());
    out.push(0);
    Ok(out)
}

/// The comment in an element's userdata, if it has one (other TLVs, such as nft's
/// element flags, are skipped).
pub(super) fn udata_comment(mut udata: &[u8]) -> Result<Option<String>, String> {
    while let [ty, len, rest @ ..] = udata {
        let len = usize::from(*len);
        let value = rest.get(..len).ok_or("the element's userdata is truncated")?;
        if *ty == k::UDATA_SET_ELEM_COMMENT {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return String::from_utf8(text.to_vec()).map(Some).map_err(|_| "the element's comment is not UTF-8".into());
        }
        udata = &rest[len..];
    }
    Ok(None)
}

/// An element as nft(8) writes it, e.g. `ipv4 . tcp . 80 comment "system/web" : 8080`.
pub(super) fn element_text(e: &Element) -> String {
    let key: Vec<String> = e.key.iter().map(render::value).collect();
    let mut out = key.join(" . ");
    if let Some(c) = &e.comment {
        out.push_str(&format!(" comment \"{c}\""));
    }
    if let Some(d) = &e.data {
        out.push_str(&format!(" : {}", render::value(d)));
    }
    out
}

/// `e` with networks reduced to their prefix, as the kernel stores them.
pub(super) fn normalize(e: &Element) -> Element {
    let key = e
        .key
        .iter()
        .map(|v| match v {
            Value::Ipv4Net(n) => Value::Ipv4Net(n.trunc()),
            Value::Ipv6Net(n) => Value::Ipv6Net(n.trunc()),
            v => v.clone(),
        })
        .collect();
    Element { key, data: e.data.clone(), comment: e.comment.clone() }
}

/// Decodes a kernel element with the field types of `set`.
pub(super) fn decode_element(set: &Set, raw: &RawElem) -> Result<Element, String> {
    let concat = set.key.len() > 1;
    let mut at = 0usize;
    let mut key = Vec::with_capacity(set.key.len());
    let end_bytes = raw.key_end.as_deref();
    for t in &set.key {
        let (_, len, _) = field_spec(*t).ok_or_else(|| format!("{t:?} cannot be part of a key"))?;
        let width = if concat { reg_len(len) } else { len } as usize;
        let field = raw.key.get(at..at + len as usize).ok_or("the key is too short")?;
        let field_end = match end_bytes {
            Some(b) => b.get(at..at + len as usize).ok_or("the key end is too short")?,
            None => field,
        };
        at += width;
        let value = match t {
            FieldType::Ipv4Addr => {
                let a = u32::from_be_bytes(field.try_into().map_err(|_| "bad IPv4 address")?);
                let b = u32::from_be_bytes(field_end.try_into().map_err(|_| "bad IPv4 address")?);
                let net = v4_prefix(a, b)
                    .ok_or_else(|| format!("{} - {} is not a network", Ipv4Addr::from(a), Ipv4Addr::from(b)))?;
                Value::Ipv4Net(net)
            }
            FieldType::Ipv6Addr => {
                let a = u128::from_be_bytes(field.try_into().map_err(|_| "bad IPv6 address")?);
                let b = u128::from_be_bytes(field_end.try_into().map_err(|_| "bad IPv6 address")?);
                let net = v6_prefix(a, b)
                    .ok_or_else(|| format!("{} - {} is not a network", Ipv6Addr::from(a), Ipv6Addr::from(b)))?;
                Value::Ipv6Net(net)
            }
            t => {
                if field != field_end {
                    return Err(format!("an interval over a {t:?} field"));
                }
                decode_value(*t, field)?
            }
        };
        key.push(value);
    }
    if at != raw.key.len() {
        return Err(format!("the key has {} bytes, the set's type needs {at}", raw.key.len()));
    }
    let data = match set.data {
        None if raw.data.is_none() => None,
        None => return Err("it has data but the plan's set is not a map".into()),
        Some(t) => Some(decode_value(t, raw.data.as_deref().ok_or("it has no data")?)?),
    };
    let comment = raw.udata.as_deref().map(udata_comment).transpose()?.flatten();
    Ok(Element { key, data, comment })
}

/// Decodes one non-network value of exactly its own length.
fn decode_value(t: FieldType, b: &[u8]) -> Result<Value, String> {
    let bad = || format!("{} bytes are no {t:?}", b.len());
    Ok(match (t, b) {
        (FieldType::NfProto, [k::NFPROTO_IPV4]) => Value::NfProto(Family::Ipv4),
        (FieldType::NfProto, [k::NFPROTO_IPV6]) => Value::NfProto(Family::Ipv6),
        (FieldType::InetProto, [p]) if i32::from(*p) == libc::IPPROTO_TCP => Value::InetProto(Proto::Tcp),
        (FieldType::InetProto, [p]) if i32::from(*p) == libc::IPPROTO_UDP => Value::InetProto(Proto::Udp),
        (FieldType::InetService, [a, b]) => Value::InetService(u16::from_be_bytes([*a, *b])),
        (FieldType::Mark, [a, b, c, d]) => Value::Mark(u32::from_ne_bytes([*a, *b, *c, *d])),
        (FieldType::Ifname, b) if b.len() == 16 => {
            let name = b.split(|c| *c == 0).next().unwrap_or_default();
            Value::Ifname(String::from_utf8(name.to_vec()).map_err(|_| "interface name is not UTF-8")?)
        }
        (FieldType::NfProto | FieldType::InetProto, [v]) => return Err(format!("unknown {t:?} {v}")),
        _ => return Err(bad()),
    })
}

/// The network whose first and last address are `a` and `b`, if there is one.
fn v4_prefix(a: u32, b: u32) -> Option<ipnet::Ipv4Net> {
    let host = a ^ b;
    (host & host.wrapping_add(1) == 0 && a & host == 0)
        .then(|| ipnet::Ipv4Net::new(a.into(), (32 - host.count_ones()) as u8).ok())
        .flatten()
}

/// The network whose first and last address are `a` and `b`, if there is one.
fn v6_prefix(a: u128, b: u128) -> Option<ipnet::Ipv6Net> {
    let host = a ^ b;
    (host & host.wrapping_add(1) == 0 && a & host == 0)
        .then(|| ipnet::Ipv6Net::new(a.into(), (128 - host.count_ones()) as u8).ok())
        .flatten()
}

/// One element as the kernel dumped it.
pub(super) struct RawElem {
    pub(super) key: Vec<u8>,
    pub(super) key_end: Option<Vec<u8>>,
    pub(super) data: Option<Vec<u8>>,
    pub(super) udata: Option<Vec<u8>>,
    /// Packets and bytes of its counter, in a set whose elements count.
    pub(super) counter: Option<(u64, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_rules::plan::names;

    use super::super::sample_plan as plan;

    #[test]
    fn shapes_are_what_nft_sends() {
        let p = plan();
        let shape = |n| SetShape::of(p.set(n).expect("set")).expect("shape");
        // values from `nft --debug=netlink` of the rendered plan
        assert_eq!(
            shape(names::TO_FAMILY),
            SetShape { flags: 8, key_type: 0x230d, key_len: 12, data_type: 13, data_len: 2, ..Default::default() }
        );
        // inet_proto . inet_service: two fields, each in a 4-byte register
        assert_eq!(
            shape(names::TO),
            SetShape { flags: 8, key_type: 0x30d, key_len: 8, data_type: 13, data_len: 2, ..Default::default() }
        );
        assert_eq!(shape(names::MARK).data_type, 19);
        assert_eq!(shape(names::COUNT), SetShape { key_type: 0x30d, key_len: 8, counter: true, ..Default::default() });
        assert_eq!(shape(names::IFACE).key_type, 0x8c369);
        assert_eq!(shape(names::IFACE).key_len, 28);
        assert_eq!(shape(names::SRC4), SetShape { flags: 0x84, key_type: 0xc347, key_len: 12, ..Default::default() });
        assert_eq!(shape(names::SRC6).key_len, 24);
    }

    #[test]
    fn udata_is_what_nft_sends() {
        let p = plan();
        let to = set_udata(p.set(names::TO_FAMILY).expect("set"));
        assert_eq!(to, [0, 4, 0, 0, 0, 0, 1, 4, 2, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0]);
        let local = set_udata(p.set(names::NOLOCAL).expect("set"));
        assert_eq!(local, [0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn elements_round_trip() {
        let p = plan();
        for set in &p.sets {
            for e in set.elements.iter() {
                let enc = encode_element(set, &e, true).expect("encodes");
                let raw =
                    RawElem { key: enc.key, key_end: enc.key_end, data: enc.data, udata: enc.udata, counter: None };
                assert_eq!(decode_element(set, &raw).expect("decodes"), normalize(&e), "set {}", set.name);
            }
        }
        let src4 = p.set(names::SRC4).expect("set");
        let e = src4.elements.iter().next().expect("element");
        let enc = encode_element(src4, &e, true).expect("encodes");
        // tcp . 80 . 203.0.113.0 - tcp . 80 . 203.0.113.255, each field in a 4-byte register
        assert_eq!(enc.key, [6, 0, 0, 0, 0, 80, 0, 0, 203, 0, 113, 0]);
        assert_eq!(enc.key_end, Some(vec![6, 0, 0, 0, 0, 80, 0, 0, 203, 0, 113, 255]));
    }

    #[test]
    fn packed_elements_encode_like_decoded_ones() {
        let p = plan();
        let mut fast = 0;
        for set in &p.sets {
            for r in set.elements.refs() {
                let e = r.decode();
                let slow = encode_element(set, &e, true).expect("encodes");
                let packed = Item(r).encode(set, true).expect("encodes");
                assert_eq!(
                    (packed.key, packed.key_end, packed.data, packed.udata),
                    (slow.key, slow.key_end, slow.data, slow.udata),
                    "set {}",
                    set.name
                );
                fast += usize::from(encode_packed(set, &r, true).is_some());
            }
        }
        assert!(fast >= 6, "elements of hash sets take the packed path: {fast}");
    }

    #[test]
    fn comments_are_what_nft_sends() {
        // `nft --debug=netlink add element inet t m { ipv4 . tcp . 80 comment "system/web" : 8080 }`
        // sends userdata 00 0b "system/web" 00
        let u = comment_udata("system/web").expect("encodes");
        assert_eq!(u, b"\x00\x0bsystem/web\x00");
        assert_eq!(udata_comment(&u), Ok(Some("system/web".into())));
        // nft's element flags TLV (type 1) before the comment is skipped
        let mut with_flags = vec![1, 4, 0, 0, 0, 0];
        with_flags.extend_from_slice(&u);
        assert_eq!(udata_comment(&with_flags), Ok(Some("system/web".into())));
        assert_eq!(udata_comment(&[1, 4, 0, 0, 0, 0]), Ok(None));
        assert!(udata_comment(&[0, 9, b'a']).is_err());
        assert!(comment_udata("a\"b").is_err());
        assert!(comment_udata(&"x".repeat(129)).is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(v4_prefix(0x0a000000, 0x0a0000ff), "10.0.0.0/24".parse().ok());
        assert_eq!(v4_prefix(0, u32::MAX), "0.0.0.0/0".parse().ok());
        assert_eq!(v4_prefix(0x0a000001, 0x0a0000ff), None);
        assert_eq!(v4_prefix(0x0a000000, 0x0a0000fe), None);
        assert_eq!(v6_prefix(1, 1), "::1/128".parse().ok());
    }
}
