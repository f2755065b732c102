//! Netlink attributes: `{u16 len, u16 type, payload}` records, each padded to 4 bytes.
#![forbid(unsafe_code)]

/// Flags in the high bits of an attribute type (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`).
const TYPE_MASK: u16 = 0x3fff;

/// Rounds a length up to netlink's 4-byte alignment.
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One attribute of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'b> {
    /// Type without the nested and byte-order flags.
    pub ty: u16,
    /// Offset of the attribute's header within its message.
    pub at: usize,
    /// Payload (after the 4-byte header, without padding).
    pub payload: &'b [u8],
    /// The whole attribute, header included, without padding: to send it back as it is.
    pub raw: &'b [u8],
}

/// The attributes in `b`, whose first byte is byte `base` of its message (so that
/// [`Attr::at`] can be compared with the offsets of an extended ack). The walk stops at
/// the first malformed attribute (shorter than its header or longer than what is left).
pub fn attrs(b: &[u8], base: usize) -> impl Iterator<Item = Attr<'_>> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let rest = b.get(pos..)?;
        let len = u16::from_ne_bytes(rest.get(0..2)?.try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(rest.get(2..4)?.try_into().ok()?) & TYPE_MASK;
        if len < 4 {
            return None;
        }
        let raw = rest.get(..len)?;
        let attr = Attr { ty, at: base + pos, payload: &raw[4..], raw };
        pos += align4(len);
        Some(attr)
    })
}

/// Payload of the first attribute of type `ty`.
pub fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b, 0).find(|a| a.ty == ty).map(|a| a.payload)
}

/// The whole first attribute of type `ty` (header included), to send it back as it is.
pub fn find_raw(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b, 0).find(|a| a.ty == ty).map(|a| a.raw)
}

/// Appends `bytes` (a whole attribute or a fixed header) and pads `out` to 4 bytes.
pub fn push_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.resize(align4(out.len()), 0);
}

/// One attribute of type `ty` (header and payload), padded to 4 bytes; a nested
/// attribute's payload is its attributes, concatenated.
pub fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
    let len = 4 + payload.len();
    let mut out = Vec::with_capacity(align4(len));
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&ty.to_ne_bytes());
    push_padded(&mut out, payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_attributes_walk_back() {
        let inner = [attr(1, b"ab"), attr(2, &7u32.to_ne_bytes())].concat();
        let b = [attr(3, &inner), attr(4, &[])].concat();
        assert_eq!(b.len(), 4 + 16 + 4);
        let nested = find(&b, 3).expect("3");
        assert_eq!(find(nested, 1), Some(&b"ab"[..]));
        assert_eq!(find(nested, 2), Some(&7u32.to_ne_bytes()[..]));
        assert_eq!(find(&b, 4), Some(&[][..]));
    }

    #[test]
    fn walks_aligned_attributes_and_stops_at_garbage() {
        // type 1: "ab" (len 6, padded to 8); type 2 with the nested flag: u32.
        let mut b = vec![6, 0, 1, 0, b'a', b'b', 0, 0, 8, 0, 2, 0x80, 1, 2, 3, 4];
        assert_eq!(find(&b, 1), Some(&b"ab"[..]));
        assert_eq!(find(&b, 2), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(find_raw(&b, 2).map(<[u8]>::len), Some(8));
        b.extend_from_slice(&[200, 0, 3, 0]);
        assert_eq!(attrs(&b, 0).count(), 2, "a length past the end ends the walk");
        let b2 = [2u8, 0, 1, 0];
        assert_eq!(attrs(&b2, 0).count(), 0, "a length shorter than the header ends the walk");
    }

    #[test]
    fn offsets_count_from_the_message_start() {
        let b = [6u8, 0, 1, 0, b'a', b'b', 0, 0, 8, 0, 2, 0, 1, 2, 3, 4];
        let at: Vec<usize> = attrs(&b, 20).map(|a| a.at).collect();
        assert_eq!(at, [20, 28]);
        let mut out = vec![1u8];
        push_padded(&mut out, &[2, 3]);
        assert_eq!(out, [1, 2, 3, 0]);
    }
}
