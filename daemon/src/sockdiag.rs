//! The sockets that hold ports in portd's network namespace, from the kernel's socket
//! tables (NETLINK_SOCK_DIAG, inet_diag): TCP listeners and bound, unconnected UDP
//! sockets, IPv4 and IPv6, each with the uid that owns it. Used to refuse and suspend
//! user forwards whose target port another uid holds.

use crate::nlattr::messages;
use portd_rules::policy::Listeners;
use portd_rules::Proto;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` state bit.
const TCPF_LISTEN: u32 = 1 << 10;
/// `TCP_CLOSE` state bit: an unconnected UDP socket.
const TCPF_CLOSE: u32 = 1 << 7;
/// Size of `struct inet_diag_msg`.
const DIAG_MSG_LEN: usize = 72;

/// One socket that holds a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// TCP or UDP.
    pub proto: Proto,
    /// Local port.
    pub port: u16,
    /// Owner uid.
    pub uid: u32,
}

/// Reads every TCP listener and bound UDP socket of the namespace.
pub fn held() -> io::Result<Vec<Held>> {
    // SAFETY: plain socket(2); the result is checked and owned below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut out = Vec::new();
    let mut seq = 0;
    for (proto, ipproto, states) in
        [(Proto::Tcp, libc::IPPROTO_TCP, TCPF_LISTEN), (Proto::Udp, libc::IPPROTO_UDP, TCPF_CLOSE)]
    {
        for family in [libc::AF_INET, libc::AF_INET6] {
            seq += 1;
            dump(&fd, seq, family as u8, ipproto as u8, states, |port, uid| out.push(Held { proto, port, uid }))?;
        }
    }
    Ok(out)
}

/// Sends one inet_diag dump request and calls `f(port, uid)` for each socket.
fn dump(fd: &OwnedFd, seq: u32, family: u8, proto: u8, states: u32, mut f: impl FnMut(u16, u32)) -> io::Result<()> {
    // nlmsghdr (16) + inet_diag_req_v2 (56): family, protocol, ext, pad, states, sockid.
    let len = 16 + 56;
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[family, proto, 0, 0]);
    m.extend_from_slice(&states.to_ne_bytes());
    m.resize(len, 0);
    // SAFETY: `m` is a valid buffer of its length; the fd is a live netlink socket.
    let n = unsafe { libc::send(fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 1 << 15];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sock_diag socket closed"));
        }
        for msg in messages(&buf[..n as usize]) {
            if msg.seq != seq {
                continue;
            }
            match i32::from(msg.ty) {
                libc::NLMSG_DONE => return Ok(()),
                libc::NLMSG_ERROR => {
                    let code = msg.body.get(..4).map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    return if code == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-code)) };
                }
                _ => {
                    if let Some((port, uid)) = parse_diag_msg(msg.body) {
                        f(port, uid);
                    }
                }
            }
        }
    }
}

/// Local port and uid of one `struct inet_diag_msg`; `None` for an unbound socket.
fn parse_diag_msg(b: &[u8]) -> Option<(u16, u32)> {
    if b.len() < DIAG_MSG_LEN {
        return None;
    }
    // idiag_sport is big-endian at offset 4 (in the socket id); idiag_uid at 64.
    let port = u16::from_be_bytes([b[4], b[5]]);
    let uid = u32::from_ne_bytes([b[64], b[65], b[66], b[67]]);
    (port != 0).then_some((port, uid))
}

/// The listener table the policy reads, with user names for messages.
pub fn listeners() -> io::Result<Listeners> {
    let mut l = Listeners::default();
    for h in held()? {
        l.insert(h.proto, h.port, h.uid);
    }
    for uid in l.uids() {
        if let Ok(Some(u)) = nix::unistd::User::from_uid(uid.into()) {
            l.name_uid(uid, u.name);
        }
    }
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_port_and_uid_of_a_diag_message() {
        let mut b = vec![0u8; DIAG_MSG_LEN];
        b[0] = libc::AF_INET as u8;
        b[4..6].copy_from_slice(&8080u16.to_be_bytes());
        b[64..68].copy_from_slice(&1001u32.to_ne_bytes());
        assert_eq!(parse_diag_msg(&b), Some((8080, 1001)));
        b[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(parse_diag_msg(&b), None);
        assert_eq!(parse_diag_msg(&b[..40]), None);
    }

    /// Against the real kernel, in a fresh network namespace of this test's own.
    #[test]
    fn sees_a_listener_of_this_process() -> io::Result<()> {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root to enter a new network namespace (run the suite as root)");
        }
        let t = std::thread::spawn(|| -> io::Result<Vec<Held>> {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let tcp = std::net::TcpListener::bind("[::]:18080")?;
            let udp = std::net::UdpSocket::bind("127.0.0.1:18081")?;
            let held = held();
            drop((tcp, udp));
            held
        });
        let held = t.join().map_err(|_| io::Error::other("thread panicked"))??;
        let me = nix::unistd::geteuid().as_raw();
        assert!(held.contains(&Held { proto: Proto::Tcp, port: 18080, uid: me }), "{held:?}");
        assert!(held.contains(&Held { proto: Proto::Udp, port: 18081, uid: me }), "{held:?}");
        assert_eq!(held.len(), 2, "a fresh namespace holds only the test's sockets: {held:?}");
        Ok(())
    }
}
