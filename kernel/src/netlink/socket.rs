//! A raw `AF_NETLINK` socket: opening and binding it, subscribing to multicast groups,
//! sizing its buffers, sending requests and reading their replies until the kernel is done.
//! This and [`super::buf`] hold the only system calls of the netlink layer.

use super::msg::{self, messages, Msg, NLMSG_DONE, NLMSG_ERROR};
use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `SOL_NETLINK`
pub const SOL_NETLINK: c_int = 270;

/// setsockopt(2) with a plain value (an int, a `timeval`, ...).
pub fn setsockopt<T: Copy>(fd: &impl AsRawFd, level: c_int, name: c_int, value: &T) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<T>()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `value` points to a live, initialised `T` of `len` bytes that the kernel only
    // reads; an invalid descriptor or option is reported through the return code.
    let rc = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// setsockopt(2) with an int value.
pub fn setsockopt_int(fd: &impl AsRawFd, level: c_int, name: c_int, value: c_int) -> io::Result<()> {
    setsockopt(fd, level, name, &value)
}

/// Sets a socket buffer (`SO_SNDBUF` or `SO_RCVBUF`) to `bytes`: first past the
/// system limit with the `*FORCE` option (needs CAP_NET_ADMIN), else up to the limit.
pub fn set_buffer(fd: &impl AsRawFd, force: c_int, plain: c_int, bytes: usize) -> io::Result<()> {
    let want = c_int::try_from(bytes).unwrap_or(c_int::MAX / 2);
    setsockopt_int(fd, libc::SOL_SOCKET, force, want).or_else(|_| setsockopt_int(fd, libc::SOL_SOCKET, plain, want))
}

/// recv(2) into `buf`; `flags` as for recv(2) (e.g. `MSG_DONTWAIT`).
pub fn recv(fd: &impl AsRawFd, buf: &mut [u8], flags: c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of its whole length, which is what we pass.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Discards every datagram already queued on `fd`, without blocking.
pub fn drain(fd: &impl AsRawFd, buf: &mut [u8]) {
    // Stops at the first error too: EAGAIN (nothing left) is the expected one, and any
    // other error will show again on the next blocking receive.
    while matches!(recv(fd, buf, libc::MSG_DONTWAIT), Ok(n) if n > 0) {}
}

/// A raw netlink socket of one protocol, bound to a port id the kernel chose.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Socket {
    /// Opens and binds a `protocol` socket (`NETLINK_NETFILTER`, `NETLINK_SOCK_DIAG`, ...)
    /// in the calling thread's network namespace.
    pub fn open(protocol: c_int) -> io::Result<Socket> {
        // SAFETY: socket(2) has no memory preconditions; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, open descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is a valid value (port id 0: the kernel picks one).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a live sockaddr_nl and we pass its exact size.
        let rc = unsafe {
            libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), size_of::<libc::sockaddr_nl>() as libc::socklen_t)
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket { fd, seq: 1 })
    }

    /// Joins multicast group `group` (e.g. `NFNLGRP_NFTABLES`).
    pub fn subscribe(&self, group: c_int) -> io::Result<()> {
        setsockopt_int(self, SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, group)
    }

    /// Sets the receive buffer to `bytes` (past the system limit when allowed).
    pub fn set_recv_buffer(&self, bytes: usize) -> io::Result<()> {
        set_buffer(self, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, bytes)
    }

    /// Receives one datagram into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv(self, buf, 0)
    }

    /// Sends one request whose body is `parts` (e.g. a protocol header and attributes);
    /// returns its sequence number.
    pub fn send_request(&mut self, ty: u16, flags: u16, parts: &[&[u8]]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let m = msg::request(ty, flags, self.seq, parts);
        // SAFETY: `m` is a live buffer of `m.len()` bytes that the kernel only reads.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) };
        match usize::try_from(n) {
            Err(_) => Err(io::Error::last_os_error()),
            Ok(n) if n != m.len() => Err(io::Error::other(format!("sent {n} of {} bytes", m.len()))),
            Ok(_) => Ok(self.seq),
        }
    }

    /// Receives the replies to request `seq` until `NLMSG_DONE` or its acknowledgement,
    /// calling `each` on every other message; an error answer becomes the error.
    pub fn replies(&mut self, seq: u32, mut each: impl FnMut(&Msg<'_>)) -> io::Result<()> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match self.recv(&mut buf) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the netlink socket was closed")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for m in messages(&buf[..n]) {
                if m.header.seq != seq {
                    continue;
                }
                match m.header.ty {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = msg::parse_error(m.bytes).map_or(0, |e| e.errno);
                        return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(errno)) };
                    }
                    _ => each(&m),
                }
            }
        }
    }
}
