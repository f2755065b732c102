//! Throwaway network namespaces, private bpffs mounts, threads that run as
//! another uid, and small TCP servers and clients for the data plane tests.
//!
//! These tests need root on a real kernel; they fail with the reason when
//! something is missing, they never skip.

#![allow(dead_code)]

use std::{
    ffi::CString,
    fs::File,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::{fd::AsRawFd, unix::ffi::OsStrExt},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc, Arc,
    },
    thread,
    time::Duration,
};

use portd_kernel::bpf::{Dataplane, Families, Proto, Reservation, SteerEntry};
use socket2::{Domain, Socket, Type};

pub const OWNER: u32 = 40001;
pub const OTHER: u32 = 40002;

pub const SRV4: &str = "10.77.0.1";
pub const SRV6: &str = "fd77::1";

/// Fails the test, loudly, when it cannot run here.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the BPF data plane tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN)");
    assert!(Path::new("/sys/kernel/btf/vmlinux").exists(), "kernel without BTF: /sys/kernel/btf/vmlinux missing");
    if let Err(e) = portd_kernel::bpf::probe(Path::new("/sys/fs/bpf")) {
        // The host's bpffs may be missing: only the other checks matter here.
        assert!(e.0.starts_with("bpffs"), "{e}");
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A network namespace named under /run/netns, deleted on drop.
pub struct Netns {
    pub name: String,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Netns {
    pub fn new() -> Netns {
        let name = format!("portd-bpf-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(None, || std::fs::write(&path, value)).unwrap_or_else(|e| panic!("{path} = {value}: {e}"));
    }

    /// Runs `f` on a thread inside this namespace, as `uid` (and gid) when
    /// given, and waits for it.
    pub fn run<R: Send>(&self, uid: Option<u32>, f: impl FnOnce() -> R + Send) -> R {
        let path = self.path();
        thread::scope(|s| {
            s.spawn(|| {
                enter(&path, uid);
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// Like [`Netns::run`] without waiting.
    pub fn spawn<R: Send + 'static>(
        &self,
        uid: Option<u32>,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> thread::JoinHandle<R> {
        let path = self.path();
        thread::spawn(move || {
            enter(&path, uid);
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// Moves the calling thread into the namespace at `path`, and to `uid` when
/// given. Both only affect this thread: setns(CLONE_NEWNET) is per thread, and
/// the raw setresuid syscall (unlike glibc's wrapper) changes only the
/// calling thread's credentials, dropping its capabilities like a real user.
fn enter(path: &Path, uid: Option<u32>) {
    let f = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    // SAFETY: f is an open namespace file for the duration of the call.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {}: {}", path.display(), io::Error::last_os_error());
    if let Some(uid) = uid {
        // SAFETY: plain syscalls on integers; only this thread's credentials change.
        unsafe {
            assert_eq!(libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()), 0);
            assert_eq!(libc::syscall(libc::SYS_setresgid, uid, uid, uid), 0, "setresgid");
            assert_eq!(libc::syscall(libc::SYS_setresuid, uid, uid, uid), 0, "setresuid");
        }
    }
}

/// Two namespaces joined by a veth pair: `srv` has 10.77.0.1 and fd77::1,
/// `cli` has .2 and ::2, so connections from `cli` arrive on a real device.
pub struct Pair {
    pub srv: Netns,
    pub cli: Netns,
}

impl Pair {
    pub fn new() -> Pair {
        let (srv, cli) = (Netns::new(), Netns::new());
        run("ip", &["-n", &srv.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &cli.name]);
        for (ns, n) in [(&srv, 1), (&cli, 2)] {
            let dev = if n == 1 { "v0" } else { "v1" };
            run("ip", &["-n", &ns.name, "addr", "add", &format!("10.77.0.{n}/24"), "dev", dev]);
            run("ip", &["-n", &ns.name, "addr", "add", &format!("fd77::{n}/64"), "dev", dev, "nodad"]);
            run("ip", &["-n", &ns.name, "link", "set", dev, "up"]);
        }
        Pair { srv, cli }
    }
}

/// A private bpffs instance on a temporary directory; unmounting it at the
/// end unpins (and so detaches) whatever a test left there.
pub struct Bpffs {
    dir: tempfile::TempDir,
}

impl Bpffs {
    pub fn new() -> Bpffs {
        let dir = tempfile::tempdir().expect("temporary directory");
        let target = CString::new(dir.path().as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe { libc::mount(c"bpf".as_ptr(), target.as_ptr(), c"bpf".as_ptr(), 0, std::ptr::null()) };
        assert_eq!(rc, 0, "mount -t bpf bpf {}: {}", dir.path().display(), io::Error::last_os_error());
        Bpffs { dir }
    }

    /// The pin directory a daemon would pass: `<bpffs>/portd/<table>`.
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.path().join("portd").join("test")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let target = CString::new(self.dir.path().as_os_str().as_bytes()).expect("path without NUL");
        // SAFETY: target is a NUL-terminated path that outlives the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// How a test server's socket is set up.
#[derive(Clone, Copy, Debug)]
pub enum Bind {
    /// `[::]:port`, taking IPv4 too.
    DualStack,
    V6Only,
    V4,
    V4Loopback,
}

/// A listening socket in a namespace, owned by a uid; every accepted
/// connection is answered with `<tag> <local address>` and closed. Dropping it
/// closes the socket.
pub struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    pub accepted: Arc<AtomicUsize>,
}

impl Server {
    pub fn start(ns: &Netns, uid: u32, bind: Bind, port: u16, reuseport: bool, tag: &'static str) -> Server {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (ready_tx, ready_rx) = mpsc::channel();
        let (s, a) = (stop.clone(), accepted.clone());
        let thread = ns.spawn(Some(uid), move || {
            let listener = match listen(bind, port, reuseport) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        let local = conn.local_addr().map(|a| a.to_string()).unwrap_or_default();
                        let _ = conn.write_all(format!("{tag} {local}").as_bytes());
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(2)),
                    Err(e) => panic!("accept: {e}"),
                }
            }
            // Stop listening before the descriptor goes: a process another test forks
            // holds a copy of this test's descriptors until it execs, and a close alone
            // would leave the socket listening (taking connections, holding the port)
            // until then. A shut-down listener leaves the listening hash and the
            // sockmap at once, and a later bind with SO_REUSEADDR does not conflict.
            let _ = socket2::SockRef::from(&listener).shutdown(std::net::Shutdown::Both);
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("server {tag} ({bind:?} port {port} as uid {uid}): {e}"),
            Err(e) => panic!("server {tag} did not start: {e}"),
        }
        Server { stop, thread: Some(thread), accepted }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listen(bind: Bind, port: u16, reuseport: bool) -> io::Result<std::net::TcpListener> {
    let (domain, addr): (Domain, SocketAddr) = match bind {
        Bind::DualStack | Bind::V6Only => (Domain::IPV6, SocketAddr::from(([0u16; 8], port))),
        Bind::V4 => (Domain::IPV4, SocketAddr::from(([0, 0, 0, 0], port))),
        Bind::V4Loopback => (Domain::IPV4, SocketAddr::from(([127, 0, 0, 1], port))),
    };
    let sock = Socket::new(domain, Type::STREAM, None)?;
    if domain == Domain::IPV6 {
        sock.set_only_v6(matches!(bind, Bind::V6Only))?;
    }
    sock.set_reuse_address(true)?;
    if reuseport {
        sock.set_reuse_port(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(128)?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Connects from inside `ns` (as root) and returns the server's answer,
/// `<tag> <local address it saw>`.
pub fn connect(ns: &Netns, addr: &str) -> io::Result<String> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    ns.run(None, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })
}

/// Asserts a connection to `addr` from `ns` is steered to the server tagged
/// `tag`, and that the server saw the public port as its local port.
#[track_caller]
pub fn assert_steered(ns: &Netns, addr: &str, tag: &str) {
    let answer = connect(ns, addr).unwrap_or_else(|e| panic!("connect to {addr} from {}: {e}", ns.name));
    let public: SocketAddr = addr.parse().expect("socket address");
    let (got_tag, local) = answer.split_once(' ').unwrap_or_else(|| panic!("answer {answer:?}"));
    assert_eq!(got_tag, tag, "connection to {addr} went to the wrong server");
    let local: SocketAddr = local.parse().expect("server's local address");
    assert_eq!(local.port(), public.port(), "server saw local {local} for a connection to {addr}");
}

#[track_caller]
pub fn assert_refused(ns: &Netns, addr: &str) {
    match connect(ns, addr) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("connection to {addr} from {}: expected a refusal, got {other:?}", ns.name),
    }
}

/// Binds `proto` `addr` in `ns` as `uid`; returns the OS error number on failure.
pub fn try_bind(ns: &Netns, uid: Option<u32>, udp: bool, addr: &str) -> Result<(), i32> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    ns.run(uid, move || {
        let domain = if addr.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
        let ty = if udp { Type::DGRAM } else { Type::STREAM };
        let sock = Socket::new(domain, ty, None).map_err(|e| e.raw_os_error().unwrap_or(-1))?;
        if addr.is_ipv6() {
            let _ = sock.set_only_v6(true);
        }
        sock.bind(&addr.into()).map_err(|e| e.raw_os_error().unwrap_or(-1))
    })
}

/// Port 80 steered to 8080 of [`OWNER`], both families.
pub fn steer_80(local: bool) -> Vec<SteerEntry> {
    vec![SteerEntry { public_port: 80, target_port: 8080, owner_uid: OWNER, families: Families::BOTH, local }]
}

/// Port 8080, TCP and UDP, reserved for [`OWNER`].
pub fn reserve_8080() -> Vec<Reservation> {
    [Proto::Tcp, Proto::Udp].map(|proto| Reservation { proto, port: 8080, owner_uid: OWNER }).to_vec()
}

/// Opens the data plane for `ns` under `bpffs` and syncs `steer` with the
/// target reserved for its owner.
pub fn open(ns: &Netns, bpffs: &Bpffs, steer: &[SteerEntry]) -> Dataplane {
    let pin = bpffs.pin_dir();
    ns.run(None, || {
        let mut dp = Dataplane::open(&pin).unwrap_or_else(|e| panic!("open {}: {e}", pin.display()));
        dp.sync(steer, &reserve_8080(), &[]).unwrap_or_else(|e| panic!("sync: {e}"));
        dp
    })
}
