//! The sockets that hold ports in portd's network namespace, from the kernel's socket
//! tables (NETLINK_SOCK_DIAG, inet_diag): TCP listeners and bound, unconnected UDP
//! sockets, IPv4 and IPv6, each with the uid that owns it. Used to refuse and suspend
//! user forwards whose target port another uid holds.

#![forbid(unsafe_code)]

use crate::netlink::Socket;
use portd_rules::policy::Listeners;
use portd_rules::Proto;
use std::io;

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN` state bit.
const TCPF_LISTEN: u32 = 1 << 10;
/// `TCP_CLOSE` state bit: an unconnected UDP socket.
const TCPF_CLOSE: u32 = 1 << 7;
/// `1 << TCP_ESTABLISHED`: a connected UDP socket.
const TCPF_ESTABLISHED: u32 = 1 << 1;
/// Size of `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
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

/// Reads every TCP listener and bound UDP socket of the namespace, connected ones
/// included (a UDP socket bound to a port and connected to one client still takes that
/// client's datagrams to the port).
pub fn held() -> io::Result<Vec<Held>> {
    let mut sock = Socket::open(libc::NETLINK_SOCK_DIAG)?;
    let mut out = Vec::new();
    for (proto, ipproto, states) in
        [(Proto::Tcp, libc::IPPROTO_TCP, TCPF_LISTEN), (Proto::Udp, libc::IPPROTO_UDP, TCPF_CLOSE | TCPF_ESTABLISHED)]
    {
        for family in [libc::AF_INET, libc::AF_INET6] {
            dump(&mut sock, family as u8, ipproto as u8, states, |port, uid| out.push(Held { proto, port, uid }))?;
        }
    }
    Ok(out)
}

/// Sends one inet_diag dump request and calls `f(port, uid)` for each socket.
fn dump(sock: &mut Socket, family: u8, proto: u8, states: u32, mut f: impl FnMut(u16, u32)) -> io::Result<()> {
    // inet_diag_req_v2 (56 bytes): family, protocol, ext, pad, states, then a zero sockid.
    let mut req = Vec::with_capacity(REQ_LEN);
    req.extend_from_slice(&[family, proto, 0, 0]);
    req.extend_from_slice(&states.to_ne_bytes());
    req.resize(REQ_LEN, 0);
    let seq = sock.send_request(SOCK_DIAG_BY_FAMILY, libc::NLM_F_DUMP as u16, &[&req])?;
    sock.replies(seq, |m| {
        if let Some((port, uid)) = parse_diag_msg(m.body) {
            f(port, uid);
        }
    })
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

/// The listener table the policy reads, with user names for messages. When `known` holds
/// the same sockets it is returned as it is; otherwise only uids it does not name are
/// given to `name` (the daemon's account lookup), so the periodic check costs no lookups
/// while nothing changes.
pub fn listeners(known: Option<&Listeners>, name: impl Fn(u32) -> Option<String>) -> io::Result<Listeners> {
    let mut l = Listeners::default();
    for h in held()? {
        l.insert(h.proto, h.port, h.uid);
    }
    if let Some(k) = known.filter(|k| k.same_sockets(&l)) {
        return Ok(k.clone());
    }
    l.name_uids(known, name);
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
