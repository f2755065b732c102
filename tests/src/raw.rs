//! Direct system calls for tests that must be faster or more precise than a command:
//! a raw nf_tables socket, stopping and resuming a process.

// Each call below is a plain system call on values the test owns; blocks say so.

/// A raw nf_tables netlink socket of the namespace it was opened in, for tests that need
/// foreign changes faster than starting `nft` allows (the repair back-off's burst).
pub struct RawNft {
    fd: std::os::fd::OwnedFd,
    seq: u32,
}

impl RawNft {
    /// Opens a NETLINK_NETFILTER socket in the calling thread's network namespace.
    pub fn open() -> RawNft {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
        assert!(fd >= 0, "netlink socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        RawNft { fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }, seq: 1 }
    }

    /// Deletes table `inet NAME` in one batch; true when the kernel acknowledged it, false
    /// when it refused (no such table).
    pub fn delete_table(&mut self, name: &str) -> bool {
        use std::os::fd::AsRawFd;
        const NLM_F_REQUEST: u16 = 1;
        const NLM_F_ACK: u16 = 4;
        const BATCH_BEGIN: u16 = 0x10;
        const BATCH_END: u16 = 0x11;
        const SUBSYS_NFTABLES: u16 = 10;
        const NFT_MSG_DELTABLE: u16 = 2;
        const NFTA_TABLE_NAME: u16 = 1;
        const NFPROTO_INET: u8 = 1;
        let mut buf = Vec::new();
        let msg = |buf: &mut Vec<u8>, ty: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8], seq: u32| {
            let len = 16 + 4 + attrs.len();
            buf.extend_from_slice(&(len as u32).to_ne_bytes());
            buf.extend_from_slice(&ty.to_ne_bytes());
            buf.extend_from_slice(&flags.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&[family, 0]);
            buf.extend_from_slice(&res_id.to_be_bytes());
            buf.extend_from_slice(attrs);
        };
        let mut attr = Vec::new();
        let value: Vec<u8> = name.bytes().chain(std::iter::once(0)).collect();
        attr.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        attr.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
        attr.extend_from_slice(&value);
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let seq = self.seq;
        self.seq += 3;
        msg(&mut buf, BATCH_BEGIN, NLM_F_REQUEST, 0, SUBSYS_NFTABLES, &[], seq);
        msg(
            &mut buf,
            SUBSYS_NFTABLES << 8 | NFT_MSG_DELTABLE,
            NLM_F_REQUEST | NLM_F_ACK,
            NFPROTO_INET,
            0,
            &attr,
            seq + 1,
        );
        msg(&mut buf, BATCH_END, NLM_F_REQUEST, 0, SUBSYS_NFTABLES, &[], seq + 2);
        let fd = self.fd.as_raw_fd();
        // SAFETY: the buffer is valid for its length; an unconnected netlink socket sends to the kernel.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), 0) };
        assert_eq!(n, buf.len() as isize, "netlink send: {}", std::io::Error::last_os_error());
        let mut reply = [0u8; 8192];
        loop {
            // SAFETY: the buffer is valid for its length.
            let n = unsafe { libc::recv(fd, reply.as_mut_ptr().cast(), reply.len(), 0) };
            assert!(n >= 20, "netlink recv: {}", std::io::Error::last_os_error());
            let ty = u16::from_ne_bytes([reply[4], reply[5]]);
            let rseq = u32::from_ne_bytes([reply[8], reply[9], reply[10], reply[11]]);
            if ty == 2 && rseq == seq + 1 {
                // NLMSG_ERROR: 0 is the acknowledgement.
                return i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]) == 0;
            }
        }
    }
}

/// Stops process `pid` (SIGSTOP), so the test can look at the kernel at one instant.
pub fn freeze(pid: u32) {
    // SAFETY: kill(2) on a pid the test started.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    assert_eq!(rc, 0, "SIGSTOP {pid}: {}", std::io::Error::last_os_error());
}

/// Resumes a process stopped by [`freeze`].
pub fn thaw(pid: u32) {
    // SAFETY: as above.
    let rc = unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert_eq!(rc, 0, "SIGCONT {pid}: {}", std::io::Error::last_os_error());
}
