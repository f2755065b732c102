//! The sockets that hold ports in portd's network namespace, from the kernel's socket
//! tables (NETLINK_SOCK_DIAG, inet_diag): TCP listeners and bound, unconnected UDP
//! sockets, IPv4 and IPv6, each with the uid that owns it, its bound address and whether
//! it is v6-only. Used to refuse and suspend user forwards whose target port another uid
//! holds, and by doctor to tell an application bound to loopback or to IPv6 only; also
//! the owner of one connection (a metrics scraper on loopback), looked up by its addresses.

#![forbid(unsafe_code)]

use crate::netlink::Socket;
use portd_rules::policy::Listeners;
use portd_rules::Proto;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `TCP_LISTEN`, and its state bit.
const TCP_LISTEN: u8 = 10;
const TCPF_LISTEN: u32 = 1 << TCP_LISTEN;
/// `TCP_BOUND_INACTIVE` state bit (Linux 6.8): a TCP socket bound, neither listening nor
/// connected. Older kernels have no socket in that state and report none.
const TCPF_BOUND_INACTIVE: u32 = 1 << 13;
/// `TCP_CLOSE` state bit: an unconnected UDP socket.
const TCPF_CLOSE: u32 = 1 << 7;
/// `1 << TCP_ESTABLISHED`: a connected UDP socket.
const TCPF_ESTABLISHED: u32 = 1 << 1;
/// The states of a connected TCP socket that still has its own counters (established
/// and closing; a TIME_WAIT socket has none, and SYN_SENT is a client's):
/// ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING.
const TCPF_CONNECTED: u32 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11);
/// `INET_DIAG_INFO`: the attribute with `struct tcp_info`, asked for by bit
/// `1 << (INET_DIAG_INFO - 1)` of `idiag_ext`.
const INET_DIAG_INFO: u16 = 2;
/// Offsets in `struct tcp_info` (linux/tcp.h) of `tcpi_bytes_received` (u64) and
/// `tcpi_segs_in` (u32), both there since Linux 4.2.
const TCPI_BYTES_RECEIVED: usize = 128;
const TCPI_SEGS_IN: usize = 140;
/// Size of `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// Size of `struct inet_diag_msg`.
const DIAG_MSG_LEN: usize = 72;
/// `INET_DIAG_SKV6ONLY` (linux/inet_diag.h): a u8 the kernel adds, unasked, to every
/// IPv6 socket it reports in state LISTEN or CLOSE.
const INET_DIAG_SKV6ONLY: u16 = 11;

/// One socket that holds a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// TCP or UDP.
    pub proto: Proto,
    /// Local port.
    pub port: u16,
    /// Owner uid.
    pub uid: u32,
    /// Bound address (`0.0.0.0` or `::` for any).
    pub addr: IpAddr,
    /// An IPv6 socket that takes no IPv4 (`IPV6_V6ONLY`); false for IPv4 sockets.
    pub v6only: bool,
    /// It takes connections or datagrams: a TCP listener, any bound UDP socket (false
    /// for a TCP socket bound without listening).
    pub listening: bool,
}

/// Reads every TCP listener and bound UDP socket of the namespace, connected ones
/// included (a UDP socket bound to a port and connected to one client still takes that
/// client's datagrams to the port).
pub fn held() -> io::Result<Vec<Held>> {
    held_in(TCPF_LISTEN)
}

/// [`held`], and TCP sockets bound without listening (Linux 6.8 and later report them):
/// every socket that keeps a port from another program.
pub fn holding() -> io::Result<Vec<Held>> {
    held_in(TCPF_LISTEN | TCPF_BOUND_INACTIVE)
}

/// [`held`], TCP sockets of the states `tcp` (bits) included.
fn held_in(tcp: u32) -> io::Result<Vec<Held>> {
    let mut sock = Socket::open(libc::NETLINK_SOCK_DIAG)?;
    let mut out = Vec::new();
    for (proto, ipproto, states) in
        [(Proto::Tcp, libc::IPPROTO_TCP, tcp), (Proto::Udp, libc::IPPROTO_UDP, TCPF_CLOSE | TCPF_ESTABLISHED)]
    {
        for family in [libc::AF_INET, libc::AF_INET6] {
            dump(&mut sock, family as u8, ipproto as u8, states, |s| {
                let listening = proto == Proto::Udp || s.state == TCP_LISTEN;
                out.push(Held { proto, port: s.port, uid: s.uid, addr: s.addr, v6only: s.v6only, listening })
            })?;
        }
    }
    Ok(out)
}

/// What TCP connections received, per local port and family: `(port, v6)` → (segments,
/// bytes of sequence space: payload, and one for a FIN).
pub type ConnCounts = std::collections::BTreeMap<(u16, bool), (u64, u64)>;

/// What open TCP connections received, per local port, family and owner uid:
/// `(port, v6, uid)` → (segments, bytes of sequence space).
pub type OpenCounts = std::collections::BTreeMap<(u16, bool, u32), (u64, u64)>;

/// What the open TCP connections on these local ports have received, per port, family
/// (an IPv4 connection to a dual-stack socket under IPv4) and the socket's uid (an
/// accepted connection has its listener's), from each socket's own counters
/// (`tcp_info`). With the totals of the closed ones (the BPF data plane's `counts`) this
/// is a steered forward's count: nothing is counted per packet.
pub fn connections(ports: &std::collections::BTreeSet<u16>) -> io::Result<OpenCounts> {
    let mut out = OpenCounts::new();
    if ports.is_empty() {
        return Ok(out);
    }
    for c in connections_on(&port_runs(ports))? {
        if ports.contains(&c.port) {
            let sum = out.entry((c.port, c.v6, c.uid)).or_insert((0, 0));
            sum.0 += c.segs;
            sum.1 += c.bytes;
        }
    }
    Ok(out)
}

/// The ports as inclusive runs of consecutive ports; past [`MAX_FILTER_RUNS`] runs, the
/// span from the first to the last.
fn port_runs(ports: &std::collections::BTreeSet<u16>) -> Vec<(u16, u16)> {
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match runs.last_mut() {
            Some(r) if r.1.checked_add(1) == Some(p) => r.1 = p,
            _ => runs.push((p, p)),
        }
    }
    if runs.len() > MAX_FILTER_RUNS {
        let (lo, hi) = (runs[0].0, runs[runs.len() - 1].1);
        runs = vec![(lo, hi)];
    }
    runs
}

/// Port runs the kernel-side filter tests one by one (20 bytes of filter each).
const MAX_FILTER_RUNS: usize = 64;

/// Every open TCP connection whose local port is in one of `runs`, as the kernel's
/// filter leaves them: a busy host's other connections (its own clients, from ephemeral
/// ports) are not even copied out.
fn connections_on(runs: &[(u16, u16)]) -> io::Result<Vec<Connection>> {
    let mut sock = Socket::open(libc::NETLINK_SOCK_DIAG)?;
    let filter = port_filter(runs);
    let mut out = Vec::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
        let ext = 1u8 << (INET_DIAG_INFO - 1);
        dump_with(&mut sock, family as u8, libc::IPPROTO_TCP as u8, TCPF_CONNECTED, ext, &filter, |b| {
            out.extend(parse_connection(b));
        })?;
    }
    Ok(out)
}

/// `INET_DIAG_REQ_BYTECODE` (linux/inet_diag.h): a filter program run on each socket.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// Filter operations (`struct inet_diag_bc_op`: code, yes, no): local port ≥ / ≤ the
/// value in the operation after them; an unconditional jump (to `no`).
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;
const INET_DIAG_BC_JMP: u8 = 1;

/// The request attribute with a filter program that keeps sockets whose local port is in
/// one of `runs`: per run, `port >= lo` and `port <= hi` (two 4-byte operations each, the
/// second carrying the port), then, but after the last run, a jump to the end. A test
/// that fails jumps to the next run, or after the last one 4 bytes past the end, which
/// rejects the socket; the kernel accepts a socket whose program runs exactly to the
/// end. Every `yes` goes to the next operation, so that the kernel's audit, which
/// follows them, passes every operation (`inet_diag_bc_audit`).
fn port_filter(runs: &[(u16, u16)]) -> Vec<u8> {
    let n = runs.len();
    let len = 20 * n - 4;
    let mut bc = Vec::with_capacity(len);
    let mut op = |code: u8, yes: u8, no: usize| {
        bc.extend_from_slice(&[code, yes]);
        bc.extend_from_slice(&(no as u16).to_ne_bytes());
    };
    for (i, &(lo, hi)) in runs.iter().enumerate() {
        let at = 20 * i;
        let last = i + 1 == n;
        // where a failed test goes: the next run, or past the end
        let fail = |from: usize| if last { len + 4 - from } else { at + 20 - from };
        op(INET_DIAG_BC_S_GE, 8, fail(at));
        op(0, 0, usize::from(lo));
        op(INET_DIAG_BC_S_LE, 8, fail(at + 8));
        op(0, 0, usize::from(hi));
        if !last {
            op(INET_DIAG_BC_JMP, 4, len - (at + 16));
        }
    }
    crate::netlink::attr::attr(INET_DIAG_REQ_BYTECODE, &bc)
}

/// One open connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Connection {
    port: u16,
    v6: bool,
    uid: u32,
    /// segments received
    segs: u64,
    /// bytes of sequence space received
    bytes: u64,
}

/// One connected socket's [`Connection`]; `None` without the `tcp_info` attribute.
fn parse_connection(b: &[u8]) -> Option<Connection> {
    if b.len() < DIAG_MSG_LEN {
        return None;
    }
    let port = u16::from_be_bytes([b[4], b[5]]);
    let uid = u32::from_ne_bytes([b[64], b[65], b[66], b[67]]);
    // An IPv6 socket's IPv4 connection has a v4-mapped source, ::ffff:a.b.c.d.
    let v6 = b[0] == libc::AF_INET6 as u8 && !(b[8..18].iter().all(|x| *x == 0) && b[18..20] == [0xff, 0xff]);
    let info = crate::netlink::attr::find(&b[DIAG_MSG_LEN..], INET_DIAG_INFO)?;
    let bytes = u64::from_ne_bytes(info.get(TCPI_BYTES_RECEIVED..TCPI_BYTES_RECEIVED + 8)?.try_into().ok()?);
    let segs = u32::from_ne_bytes(info.get(TCPI_SEGS_IN..TCPI_SEGS_IN + 4)?.try_into().ok()?);
    Some(Connection { port, v6, uid, segs: u64::from(segs), bytes })
}

/// What one `struct inet_diag_msg` (and its attributes) says of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Diag {
    state: u8,
    port: u16,
    uid: u32,
    addr: IpAddr,
    v6only: bool,
}

/// The uid owning the TCP socket of this namespace whose own address is `local` and whose
/// peer is `remote`, by one exact lookup in the kernel's connection table (its cost does
/// not grow with the sockets there are); `None` when there is no such socket. Addresses
/// of either family; IPv4 in IPv6 (`::ffff:a.b.c.d`) is looked up as IPv4.
pub fn tcp_uid(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<u32>> {
    let (l, r) = (local.ip().to_canonical(), remote.ip().to_canonical());
    let octets = |ip: IpAddr| -> ([u8; 16], u8) {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(a) => {
                b[..4].copy_from_slice(&a.octets());
                (b, libc::AF_INET as u8)
            }
            IpAddr::V6(a) => (a.octets(), libc::AF_INET6 as u8),
        }
    };
    let ((src, lf), (dst, rf)) = (octets(l), octets(r));
    if lf != rf {
        return Ok(None);
    }
    // inet_diag_req_v2: family, protocol, ext, pad, states (every one), then the socket
    // id: sport and dport (big-endian) at 8 and 10, src at 12, dst at 28, the interface
    // at 44 (any), the cookie at 48 (INET_DIAG_NOCOOKIE: not checked).
    let mut req = [0u8; REQ_LEN];
    req[..4].copy_from_slice(&[lf, libc::IPPROTO_TCP as u8, 0, 0]);
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    req[8..10].copy_from_slice(&local.port().to_be_bytes());
    req[10..12].copy_from_slice(&remote.port().to_be_bytes());
    req[12..28].copy_from_slice(&src);
    req[28..44].copy_from_slice(&dst);
    req[48..56].fill(0xff);
    let mut sock = Socket::open(libc::NETLINK_SOCK_DIAG)?;
    let seq = sock.send_request(SOCK_DIAG_BY_FAMILY, libc::NLM_F_ACK as u16, &[&req])?;
    // An IPv4 connection of an IPv6 socket (a dual-stack client connected to
    // ::ffff:127.0.0.1) is found by its IPv4 addresses, and answered with them written in
    // IPv6: that is the same socket.
    let mut mapped = req;
    if let (IpAddr::V4(l4), IpAddr::V4(r4)) = (l, r) {
        mapped[12..28].copy_from_slice(&l4.to_ipv6_mapped().octets());
        mapped[28..44].copy_from_slice(&r4.to_ipv6_mapped().octets());
    }
    let mut uid = None;
    let replies = sock.replies(seq, |m| {
        // The kernel falls back to a listener on the asked local address when no
        // connection has these addresses, and names no owner (uid 0, inode 0) for a
        // connection that has closed (TIME_WAIT): only a live socket with exactly the
        // asked ports and addresses (the reply's at 4, the request's at 8) names its owner.
        let b = m.body;
        let exact = b.len() >= DIAG_MSG_LEN && (b[4..40] == req[8..44] || b[4..40] == mapped[8..44]);
        if exact && b[68..72] != [0; 4] {
            uid = Some(u32::from_ne_bytes([b[64], b[65], b[66], b[67]]));
        }
    });
    match replies {
        Ok(()) => Ok(uid),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Sends one inet_diag dump request and calls `f` for each bound socket.
fn dump(sock: &mut Socket, family: u8, proto: u8, states: u32, mut f: impl FnMut(Diag)) -> io::Result<()> {
    dump_with(sock, family, proto, states, 0, &[], |b| {
        if let Some(d) = parse_diag_msg(b) {
            f(d);
        }
    })
}

/// One inet_diag dump request asking for the extensions `ext`, with the request
/// attributes `attrs` (a filter); `f` gets each message body (`struct inet_diag_msg` and
/// its attributes).
fn dump_with(
    sock: &mut Socket,
    family: u8,
    proto: u8,
    states: u32,
    ext: u8,
    attrs: &[u8],
    mut f: impl FnMut(&[u8]),
) -> io::Result<()> {
    // inet_diag_req_v2 (56 bytes): family, protocol, ext, pad, states, then a zero sockid.
    let mut req = Vec::with_capacity(REQ_LEN);
    req.extend_from_slice(&[family, proto, ext, 0]);
    req.extend_from_slice(&states.to_ne_bytes());
    req.resize(REQ_LEN, 0);
    let seq = sock.send_request(SOCK_DIAG_BY_FAMILY, libc::NLM_F_DUMP as u16, &[&req, attrs])?;
    sock.replies(seq, |m| f(m.body))
}

/// One `struct inet_diag_msg` and the attributes after it; `None` for an unbound socket.
fn parse_diag_msg(b: &[u8]) -> Option<Diag> {
    if b.len() < DIAG_MSG_LEN {
        return None;
    }
    // idiag_family at 0; in the socket id, idiag_sport (big-endian) at 4 and idiag_src
    // (4 or 16 bytes, network order) at 8; idiag_uid at 64.
    let port = u16::from_be_bytes([b[4], b[5]]);
    let uid = u32::from_ne_bytes([b[64], b[65], b[66], b[67]]);
    let (addr, v6only) = if b[0] == libc::AF_INET6 as u8 {
        let src: [u8; 16] = b[8..24].try_into().ok()?;
        let v6only =
            crate::netlink::attr::find(&b[DIAG_MSG_LEN..], INET_DIAG_SKV6ONLY).is_some_and(|v| v.first() == Some(&1));
        (IpAddr::V6(Ipv6Addr::from(src)), v6only)
    } else {
        (IpAddr::V4(Ipv4Addr::new(b[8], b[9], b[10], b[11])), false)
    };
    (port != 0).then_some(Diag { state: b[1], port, uid, addr, v6only })
}

/// The listener table the policy reads, with user names for messages: every socket that
/// holds a port, so TCP sockets bound without listening too (which keep the port from
/// its owner's app as surely as a listener). When `known` holds
/// the same sockets it is returned as it is; otherwise only uids it does not name are
/// given to `name` (the daemon's account lookup), so the periodic check costs no lookups
/// while nothing changes.
pub fn listeners(known: Option<&Listeners>, name: impl Fn(u32) -> Option<String>) -> io::Result<Listeners> {
    let mut l = Listeners::default();
    for h in holding()? {
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

    /// Runs `f` on a thread of its own in a fresh network namespace with loopback up (a
    /// child process the thread forks shares it). Needs root.
    fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root to enter a new network namespace (run the suite as root)");
        }
        let t = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
            if !up.success() {
                return Err(io::Error::other(format!("ip link set lo up: {up}")));
            }
            f()
        });
        t.join().map_err(|_| io::Error::other("thread panicked"))?
    }

    #[test]
    fn reads_port_uid_and_address_of_a_diag_message() {
        let mut b = vec![0u8; DIAG_MSG_LEN];
        b[0] = libc::AF_INET as u8;
        b[4..6].copy_from_slice(&8080u16.to_be_bytes());
        b[8..12].copy_from_slice(&[127, 0, 0, 1]);
        b[64..68].copy_from_slice(&1001u32.to_ne_bytes());
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(parse_diag_msg(&b), Some(Diag { state: b[1], port: 8080, uid: 1001, addr: lo, v6only: false }));
        b[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(parse_diag_msg(&b), None);
        assert_eq!(parse_diag_msg(&b[..40]), None);
    }

    #[test]
    fn reads_v6only_from_the_attribute_after_the_message() {
        let mut b = vec![0u8; DIAG_MSG_LEN];
        b[0] = libc::AF_INET6 as u8;
        b[4..6].copy_from_slice(&8080u16.to_be_bytes());
        b[8..24].copy_from_slice(&Ipv6Addr::LOCALHOST.octets());
        let plain = parse_diag_msg(&b).expect("a bound socket");
        assert_eq!((plain.addr, plain.v6only), (IpAddr::V6(Ipv6Addr::LOCALHOST), false));
        // INET_DIAG_SHUTDOWN (8) first, then INET_DIAG_SKV6ONLY = 1.
        b.extend_from_slice(&[5, 0, 8, 0, 0, 0, 0, 0]);
        b.extend_from_slice(&[5, 0, INET_DIAG_SKV6ONLY as u8, 0, 1, 0, 0, 0]);
        assert!(parse_diag_msg(&b).expect("a bound socket").v6only);
        let n = b.len();
        b[n - 4] = 0;
        assert!(!parse_diag_msg(&b).expect("a bound socket").v6only);
    }

    /// Against the real kernel, in a fresh network namespace of this test's own: the
    /// open connections' own counters, and only those of the ports asked for (the
    /// kernel's filter leaves out the other port and the clients' ephemeral ports).
    #[test]
    fn counts_what_open_connections_received_on_the_ports_asked_for() -> io::Result<()> {
        use std::io::Write;
        let (got, asked) = in_new_netns(|| {
            let mut keep = Vec::new();
            for (port, n) in [(18080u16, 1000usize), (28080, 3000)] {
                let l = std::net::TcpListener::bind(("127.0.0.1", port))?;
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
                c.write_all(&vec![1u8; n])?;
                let (s, _) = l.accept()?;
                keep.push((l, c, s));
            }
            let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let mut got = connections_on(&[(18080, 18080)])?;
            while got.iter().map(|c| c.bytes).sum::<u64>() < 1000 && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
                got = connections_on(&[(18080, 18080)])?;
            }
            let asked = connections(&[18080, 28080].into())?;
            drop(keep);
            Ok((got, asked))
        })?;
        assert_eq!(got.len(), 1, "only the server side of the connection on 18080: {got:?}");
        let c = got[0];
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!((c.port, c.v6, c.uid, c.bytes), (18080, false, me, 1000), "{got:?}");
        assert!(c.segs >= 2, "its handshake ACK and data at least: {c:?}");
        assert_eq!(asked.get(&(28080, false, me)).map(|c| c.1), Some(3000), "{asked:?}");
        assert_eq!(asked.len(), 2, "{asked:?}");
        Ok(())
    }

    /// The client side of a loopback connection is found by its two addresses, with its
    /// owner's uid (a client of uid 65534, the server's side root's, so that swapped
    /// addresses would name the wrong one), for IPv4, IPv4 written in IPv6 and IPv6; a
    /// wrong port, and a connection that has closed, find nothing.
    #[test]
    fn finds_the_owner_of_one_connection_by_its_addresses() -> io::Result<()> {
        use std::io::{BufRead, Write};
        let found = in_new_netns(|| {
            let mut found = Vec::new();
            // (the third: an IPv6 socket's connection to ::ffff:127.0.0.1, IPv4 on the wire)
            for (host, v6, to) in
                [("127.0.0.1", false, "127.0.0.1"), ("::1", true, "::1"), ("127.0.0.1", true, "::ffff:127.0.0.1")]
            {
                let l = std::net::TcpListener::bind((host, 19649))?;
                let code = format!(
                    "import socket,sys,time\ns=socket.socket(socket.AF_INET{})\ns.connect(('{to}',19649))\nprint(s.getsockname()[1], flush=True)\nsys.stdin.readline()\n",
                    if v6 { "6" } else { "" }
                );
                let mut child = std::process::Command::new("setpriv")
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", &code])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .spawn()?;
                let mut line = String::new();
                std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
                let port: u16 = line.trim().parse().map_err(|_| io::Error::other(format!("client said {line:?}")))?;
                let (server_side, client) = l.accept()?;
                assert_eq!(client.port(), port);
                let ours = server_side.local_addr()?;
                let to_v6 = |a: SocketAddr| match a {
                    SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), a.port()),
                    a => a,
                };
                found.push(tcp_uid(client, ours)?);
                found.push(tcp_uid(to_v6(client), to_v6(ours))?);
                found.push(tcp_uid(ours, client)?);
                found.push(tcp_uid(client, SocketAddr::new(ours.ip(), 19650))?);
                child.stdin.take().expect("stdin").write_all(b"\n")?;
                child.wait()?;
                drop(server_side);
                // The client closed first: its side is in TIME_WAIT, with no owner.
                std::thread::sleep(std::time::Duration::from_millis(100));
                found.push(tcp_uid(client, ours)?);
            }
            Ok(found)
        })?;
        let none = None;
        let (nobody, root) = (Some(65534), Some(0));
        assert_eq!(
            found,
            [nobody, nobody, root, none, none, nobody, nobody, root, none, none, nobody, nobody, root, none, none]
        );
        Ok(())
    }

    #[test]
    fn the_port_filter_tests_each_run_and_rejects_past_the_end() {
        let ports: std::collections::BTreeSet<u16> = [80, 443, 444, 445, 8443].into();
        assert_eq!(port_runs(&ports), [(80, 80), (443, 445), (8443, 8443)]);
        let many: std::collections::BTreeSet<u16> = (0..200).map(|i| 1000 + 2 * i).collect();
        assert_eq!(port_runs(&many), [(1000, 1398)], "past 64 runs, the span");
        let f = port_filter(&[(80, 80), (443, 445)]);
        let ne = |v: u16| v.to_ne_bytes();
        // attribute header: length 4 + 36, type 1
        assert_eq!(&f[..4], &[&ne(40)[..], &ne(1)[..]].concat()[..]);
        let ops: Vec<(u8, u8, u16)> =
            f[4..].chunks(4).map(|o| (o[0], o[1], u16::from_ne_bytes([o[2], o[3]]))).collect();
        let (ge, le, jmp) = (INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE, INET_DIAG_BC_JMP);
        assert_eq!(
            ops,
            [
                (ge, 8, 20), // to the next run
                (0, 0, 80),
                (le, 8, 12),
                (0, 0, 80),
                (jmp, 4, 20), // to the end: accepted
                (ge, 8, 20),  // 16 bytes left: 4 past the end, rejected
                (0, 0, 443),
                (le, 8, 12),
                (0, 0, 445)
            ]
        );
    }

    /// The filter against the real kernel: connections on each run are reported, the
    /// rest are not (its audit would refuse a malformed program with EINVAL).
    #[test]
    fn the_kernel_runs_the_port_filter() -> io::Result<()> {
        let got = in_new_netns(|| {
            let mut keep = Vec::new();
            for port in [18080u16, 18443, 18444, 18500] {
                let l = std::net::TcpListener::bind(("127.0.0.1", port))?;
                let c = std::net::TcpStream::connect(("127.0.0.1", port))?;
                let (s, _) = l.accept()?;
                keep.push((l, c, s));
            }
            let mut got: Vec<u16> = connections_on(&[(18080, 18080), (18443, 18444)])?.iter().map(|c| c.port).collect();
            got.sort_unstable();
            Ok(got)
        })?;
        assert_eq!(got, [18080, 18443, 18444], "the accepted sides on the runs, nothing else");
        Ok(())
    }

    /// Against the real kernel, in a fresh network namespace of this test's own.
    #[test]
    fn sees_a_listener_of_this_process() -> io::Result<()> {
        let held = in_new_netns(|| {
            let tcp = std::net::TcpListener::bind("[::]:18080")?;
            let udp = std::net::UdpSocket::bind("127.0.0.1:18081")?;
            // A v6-only listener (IPV6_V6ONLY set before bind).
            let only = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None)?;
            only.set_only_v6(true)?;
            only.bind(&"[::]:18082".parse::<std::net::SocketAddr>().map_err(io::Error::other)?.into())?;
            only.listen(1)?;
            let held = held();
            drop((tcp, udp, only));
            held
        })?;
        let me = nix::unistd::geteuid().as_raw();
        let any6 = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let lo4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let tcp = Held { proto: Proto::Tcp, port: 18080, uid: me, addr: any6, v6only: false, listening: true };
        assert!(held.contains(&tcp), "{held:?}");
        assert!(
            held.contains(&Held { proto: Proto::Udp, port: 18081, uid: me, addr: lo4, v6only: false, listening: true }),
            "{held:?}"
        );
        assert!(
            held.contains(&Held { proto: Proto::Tcp, port: 18082, uid: me, addr: any6, v6only: true, listening: true }),
            "{held:?}"
        );
        assert_eq!(held.len(), 3, "a fresh namespace holds only the test's sockets: {held:?}");
        Ok(())
    }
}
