//! Netlink messages: the 16-byte header, the messages of one datagram, `NLMSG_ERROR`
//! answers with their extended ack, and building a request.
#![forbid(unsafe_code)]

use super::attr::{align4, attrs};

/// Length of `struct nlmsghdr`.
pub const HEADER_LEN: usize = 16;
/// `NLMSG_ERROR`: an error or (with errno 0) an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST`
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_CAPPED`: the error carries only the request's header.
const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS`: the error carries extended-ack attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's explanation.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLMSGERR_ATTR_OFFS`: offset of the refused attribute in the request.
const NLMSGERR_ATTR_OFFS: u16 = 2;

/// The fields of a netlink header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `nlmsg_len`: the whole message, header included.
    pub len: u32,
    /// `nlmsg_type`
    pub ty: u16,
    /// `nlmsg_flags`
    pub flags: u16,
    /// `nlmsg_seq`
    pub seq: u32,
    /// `nlmsg_pid`
    pub pid: u32,
}

/// The header at the start of `msg`, if it is long enough to hold one.
pub fn header(msg: &[u8]) -> Option<Header> {
    let u16_at = |i: usize| msg.get(i..i + 2).and_then(|b| b.try_into().ok()).map(u16::from_ne_bytes);
    let u32_at = |i: usize| msg.get(i..i + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
    Some(Header { len: u32_at(0)?, ty: u16_at(4)?, flags: u16_at(6)?, seq: u32_at(8)?, pid: u32_at(12)? })
}

/// One message of a datagram.
#[derive(Debug, Clone, Copy)]
pub struct Msg<'a> {
    /// Its header.
    pub header: Header,
    /// The whole message, header included.
    pub bytes: &'a [u8],
    /// Everything after the 16-byte header.
    pub body: &'a [u8],
}

/// Iterates the netlink messages in one received datagram, stopping at a malformed one.
pub fn messages(mut b: &[u8]) -> impl Iterator<Item = Msg<'_>> {
    std::iter::from_fn(move || {
        let header = header(b)?;
        let len = header.len as usize;
        if len < HEADER_LEN || len > b.len() {
            return None;
        }
        let msg = Msg { header, bytes: &b[..len], body: &b[HEADER_LEN..len] };
        b = &b[align4(len).min(b.len())..];
        Some(msg)
    })
}

/// An `NLMSG_ERROR` message: errno (0 for an acknowledgement), and the extended ack's
/// text and offset of the refused attribute when the socket asked for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlError {
    /// Positive errno, 0 for an acknowledgement.
    pub errno: i32,
    /// `NLMSGERR_ATTR_MSG`
    pub message: Option<String>,
    /// `NLMSGERR_ATTR_OFFS`
    pub offset: Option<u32>,
}

/// Parses a whole `NLMSG_ERROR` message (header included).
pub fn parse_error(msg: &[u8]) -> Option<NlError> {
    let h = header(msg)?;
    let error = i32::from_ne_bytes(msg.get(16..20)?.try_into().ok()?);
    let mut e = NlError { errno: -error, message: None, offset: None };
    if h.flags & NLM_F_ACK_TLVS == 0 {
        return Some(e);
    }
    // after the error code: the request's header, and its payload unless capped
    let req_len = u32::from_ne_bytes(msg.get(20..24)?.try_into().ok()?) as usize;
    let start = if h.flags & NLM_F_CAPPED != 0 { 20 + HEADER_LEN } else { 20 + align4(req_len) };
    for a in attrs(msg.get(start..)?, start) {
        match a.ty {
            NLMSGERR_ATTR_MSG => {
                let text = a.payload.split(|c| *c == 0).next().unwrap_or_default();
                e.message = Some(String::from_utf8_lossy(text).into_owned());
            }
            NLMSGERR_ATTR_OFFS => e.offset = a.payload.try_into().ok().map(u32::from_ne_bytes),
            _ => {}
        }
    }
    Some(e)
}

/// A request: header (`NLM_F_REQUEST` added to `flags`, port id 0 for the kernel to
/// fill) followed by `parts` in order, each padded to 4 bytes.
pub fn request(ty: u16, flags: u16, seq: u32, parts: &[&[u8]]) -> Vec<u8> {
    let len = HEADER_LEN + parts.iter().map(|p| align4(p.len())).sum::<usize>();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    for p in parts {
        super::attr::push_padded(&mut m, p);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_back() {
        let m = request(0x0101, 0x300, 7, &[&[2, 0, 0, 0], &[5, 0, 9, 0, 1]]);
        assert_eq!(m.len(), 28);
        let all: Vec<Msg<'_>> = messages(&m).collect();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].header, Header { len: 28, ty: 0x0101, flags: 0x301, seq: 7, pid: 0 });
        assert_eq!(all[0].body.len(), 12);
    }

    #[test]
    fn errors_carry_the_extended_ack() {
        // NLMSG_ERROR with ACK_TLVS|CAPPED: errno -22, the request's header, then MSG "bad" and OFFS 40.
        let mut m = request(NLMSG_ERROR, NLM_F_ACK_TLVS | NLM_F_CAPPED, 3, &[&(-22i32).to_ne_bytes()]);
        m.extend_from_slice(&request(0x0a0c, 0, 3, &[])[..16]);
        m.extend_from_slice(&[8, 0, 1, 0, b'b', b'a', b'd', 0]);
        m.extend_from_slice(&[8, 0, 2, 0]);
        m.extend_from_slice(&40u32.to_ne_bytes());
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        let e = parse_error(&m).expect("parses");
        assert_eq!(e, NlError { errno: 22, message: Some("bad".into()), offset: Some(40) });
        let ack = request(NLMSG_ERROR, 0, 4, &[&0i32.to_ne_bytes()]);
        assert_eq!(parse_error(&ack).map(|e| e.errno), Some(0));
        assert!(messages(&m[..20]).next().is_none(), "a message cut short is not returned");
    }
}
