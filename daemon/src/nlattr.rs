//! Reading netlink attributes (type-length-value, 4-byte aligned) from raw messages, for
//! the two modules that read kernel messages without nftnl: events and conntrack.

/// Rounds a length up to netlink's 4-byte alignment.
pub fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message header's fields that portd reads, and the message body.
pub struct Msg<'a> {
    /// `nlmsg_type`
    pub ty: u16,
    /// `nlmsg_seq`
    pub seq: u32,
    /// Everything after the 16-byte header.
    pub body: &'a [u8],
}

/// Iterates the netlink messages in one received datagram, stopping at a malformed one.
pub fn messages(mut b: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    std::iter::from_fn(move || {
        if b.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < 16 || len > b.len() {
            return None;
        }
        let msg = Msg {
            ty: u16::from_ne_bytes([b[4], b[5]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            body: &b[16..len],
        };
        b = &b[align4(len).min(b.len())..];
        Some(msg)
    })
}

/// Iterates attributes: (type without the nested/byte-order flags, payload, whole attribute).
pub fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8], &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let item = (ty, &b[4..len], &b[..len]);
        b = &b[align4(len).min(b.len())..];
        Some(item)
    })
}

/// Payload of the first attribute of type `ty`.
pub fn find(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, ..)| *t == ty).map(|(_, p, _)| p)
}

/// The whole first attribute of type `ty` (header included), to send it back as it is.
pub fn find_raw(b: &[u8], ty: u16) -> Option<&[u8]> {
    attrs(b).find(|(t, ..)| *t == ty).map(|(_, _, raw)| raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_aligned_attributes_and_stops_at_garbage() {
        // type 1: "ab" (len 6, padded to 8); type 2 with the nested flag: u32.
        let mut b = vec![6, 0, 1, 0, b'a', b'b', 0, 0, 8, 0, 2, 0x80, 1, 2, 3, 4];
        assert_eq!(find(&b, 1), Some(&b"ab"[..]));
        assert_eq!(find(&b, 2), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(find_raw(&b, 2).map(<[u8]>::len), Some(8));
        b.extend_from_slice(&[200, 0, 3, 0]);
        assert_eq!(attrs(&b).count(), 2, "a length past the end ends the walk");
    }
}
