//! The few facts the loader asks the system directly: the netns cookie, the
//! filesystem type of a path, where cgroup v2 is mounted, our capabilities.

use std::{
    ffi::CString,
    fs::File,
    io,
    mem::MaybeUninit,
    os::{fd::AsRawFd, fd::FromRawFd, fd::OwnedFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
};

const SO_NETNS_COOKIE: libc::c_int = 71;
pub(crate) const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The cookie of the calling thread's network namespace (Linux 5.14+). Asked
/// of an AF_UNIX socket: the daemon's unit allows no inet sockets.
pub(crate) fn netns_cookie() -> io::Result<u64> {
    // SAFETY: socket() takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are live locals of the sizes passed.
    let rc = unsafe {
        libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE, (&raw mut cookie).cast(), &raw mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// This process's effective uid.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}

/// The calling thread's network namespace (not the process's: a thread may
/// have entered another one with setns).
pub(crate) fn netns_file() -> io::Result<File> {
    File::open("/proc/thread-self/ns/net")
}

/// The `f_type` of the filesystem holding `path`.
pub(crate) fn fs_type(path: &Path) -> io::Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut st = MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: c is a NUL-terminated path, st points to a statfs-sized buffer.
    let rc = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs succeeded and filled the structure (it was zeroed too).
    #[allow(clippy::unnecessary_cast)]
    Ok(unsafe { st.assume_init() }.f_type as i64)
}

/// Whether `path`, or its nearest existing ancestor, is on bpffs.
pub(crate) fn on_bpffs(path: &Path) -> bool {
    path.ancestors().find(|p| p.exists()).is_some_and(|p| fs_type(p).is_ok_and(|t| t == BPF_FS_MAGIC))
}

/// Mount point of the cgroup v2 hierarchy's root, from /proc/self/mountinfo
/// (/sys/fs/cgroup on systemd hosts, /sys/fs/cgroup/unified on hybrid ones).
pub(crate) fn cgroup2_root() -> Result<PathBuf, String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    cgroup2_in(&info)
}

fn cgroup2_in(mountinfo: &str) -> Result<PathBuf, String> {
    mountinfo
        .lines()
        .find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fields: Vec<&str> = left.split(' ').collect();
            let mount_point = fields.get(4)?;
            (right.split(' ').next() == Some("cgroup2") && fields.get(3) == Some(&"/"))
                .then(|| PathBuf::from(unescape_mountinfo(mount_point)))
        })
        .ok_or_else(|| "no cgroup2 filesystem mounted (mount -t cgroup2 none /sys/fs/cgroup)".to_string())
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// Effective capabilities of this thread, as a bit set.
pub(crate) fn effective_caps() -> io::Result<u64> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no CapEff line in /proc/thread-self/status"))
}

pub(crate) const CAP_NET_ADMIN: u32 = 12;
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_PERFMON: u32 = 38;
pub(crate) const CAP_BPF: u32 = 39;

/// The running kernel's (major, minor), from uname(2) (a unit with
/// ProcSubset=pid has no /proc/sys).
pub(crate) fn kernel_version() -> Option<(u32, u32)> {
    let mut uts = MaybeUninit::<libc::utsname>::zeroed();
    // SAFETY: uts points to a utsname-sized buffer.
    if unsafe { libc::uname(uts.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: uname succeeded and filled the structure (it was zeroed too).
    let uts = unsafe { uts.assume_init() };
    let release: String = uts.release.iter().take_while(|&&c| c != 0).map(|&c| char::from(c as u8)).collect();
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_root_mount() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_in(hybrid), Ok(PathBuf::from("/sys/fs/cgroup/unified")));
        // A bind mount of a sub-cgroup is not the root.
        let sub = "40 25 0:31 /system.slice /mnt/cg rw - cgroup2 cgroup2 rw\n\
                   41 25 0:31 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_in(sub), Ok(PathBuf::from("/sys/fs/cgroup")));
        assert!(cgroup2_in("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n").is_err());
    }

    #[test]
    fn reads_the_kernel_version_and_netns_cookie() {
        assert!(kernel_version().is_some_and(|v| v >= (3, 0)));
        let a = netns_cookie().expect("SO_NETNS_COOKIE");
        assert_eq!(netns_cookie().expect("SO_NETNS_COOKIE"), a);
    }
}
