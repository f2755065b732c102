//! Shared helpers of the end-to-end tests: throwaway network namespaces joined by a
//! veth pair, the real `portd` and `portctl` binaries, and small traffic probes.
//!
//! Every helper fails loudly (panics with the reason) when the machine cannot run it:
//! these tests never skip in silence.

use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod raw;
mod users;

pub use raw::{freeze, thaw, RawNft};
pub use users::{connect_as, TestUser};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Server address of the veth pair (IPv4).
pub const SRV4: &str = "10.250.0.1";
/// Client address (IPv4).
pub const CLI4: &str = "10.250.0.2";
/// Server address (IPv6).
pub const SRV6: &str = "fd00:250::1";
/// Client address (IPv6).
pub const CLI6: &str = "fd00:250::2";

/// Path of a workspace binary: `$PORTD_BIN`/`$PORTCTL_BIN`, else next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let var = format!("{}_BIN", name.to_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(p.exists(), "{} not found; run `cargo build --workspace --bins` first or set {var}", p.display());
    p
}

/// Runs a command, panicking with its output when it cannot start.
pub fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn must(cmd: &str, args: &[&str]) -> String {
    let o = sh(cmd, args);
    assert!(o.status.success(), "{cmd} {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Panics with a clear reason unless we are root and can create namespaces.
pub fn require_root() {
    let uid = must("id", &["-u"]);
    assert_eq!(uid.trim(), "0", "these tests create network namespaces and need root; run tests/run as root");
}

/// A "server" and a "client" network namespace joined by a veth pair, removed on drop.
pub struct Net {
    /// Server namespace name.
    pub srv: String,
    /// Client namespace name.
    pub cli: String,
    /// Scratch directory for configs, state and sockets.
    pub dir: PathBuf,
}

impl Net {
    /// Creates both namespaces with IPv4 and IPv6 addresses and checks they can talk.
    pub fn setup() -> Net {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id());
        let (srv, cli) = (format!("pds{id}"), format!("pdc{id}"));
        let dir = std::env::temp_dir().join(format!("portd-e2e-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        for ns in [&srv, &cli] {
            let o = sh("ip", &["netns", "add", ns]);
            assert!(
                o.status.success(),
                "`ip netns add` failed (need root and iproute2): {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let net = Net { srv, cli, dir };
        must(
            "ip",
            &["link", "add", "vsrv", "netns", &net.srv, "type", "veth", "peer", "name", "vcli", "netns", &net.cli],
        );
        for (ns, dev, a4, a6) in [(&net.srv, "vsrv", SRV4, SRV6), (&net.cli, "vcli", CLI4, CLI6)] {
            net.exec_ok(ns, "ip", &["link", "set", "lo", "up"]);
            net.exec_ok(ns, "ip", &["addr", "add", &format!("{a4}/24"), "dev", dev]);
            net.exec_ok(ns, "ip", &["addr", "add", &format!("{a6}/64"), "dev", dev, "nodad"]);
            net.exec_ok(ns, "ip", &["link", "set", dev, "up"]);
        }
        net
    }

    /// Runs a command in namespace `ns`.
    pub fn exec(&self, ns: &str, cmd: &str, args: &[&str]) -> Output {
        let mut a = vec!["netns", "exec", ns, cmd];
        a.extend_from_slice(args);
        sh("ip", &a)
    }

    /// Runs a command in namespace `ns` and returns stdout, panicking on failure.
    pub fn exec_ok(&self, ns: &str, cmd: &str, args: &[&str]) -> String {
        let o = self.exec(ns, cmd, args);
        assert!(o.status.success(), "{cmd} {args:?} in {ns} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// `nft list table inet NAME` in the server namespace, or None when absent.
    pub fn table(&self, name: &str) -> Option<String> {
        let o = self.exec(&self.srv, "nft", &["list", "table", "inet", name]);
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Starts a TCP server in `ns` on `port` (both families) that answers `reply` to every connection.
    pub fn tcp_app(&self, ns: &str, port: u16, reply: &str) -> Bg {
        self.tcp_app_of(ns, None, port, reply)
    }

    /// Like [`Net::tcp_app`], run as `user` (a socket of that user's uid).
    pub fn tcp_app_as(&self, ns: &str, user: &str, port: u16, reply: &str) -> Bg {
        self.tcp_app_of(ns, Some(user), port, reply)
    }

    fn tcp_app_of(&self, ns: &str, user: Option<&str>, port: u16, reply: &str) -> Bg {
        self.tcp_app_on(ns, user, &format!("TCP6-LISTEN:{port},fork,reuseaddr,ipv6only=0"), port, reply)
    }

    /// Like [`Net::tcp_app`], on socat's listen address `listen` (such as
    /// `TCP-LISTEN:8080,bind=127.0.0.1`), which must listen on `port`.
    pub fn tcp_app_on(&self, ns: &str, user: Option<&str>, listen: &str, port: u16, reply: &str) -> Bg {
        let bg = self.socat_as(ns, user, listen, reply);
        wait_for(|| self.exec(ns, "ss", &["-Htln", &format!("sport = :{port}")]).stdout.len() > 1, "tcp app to listen");
        bg
    }

    /// A UDP app in `ns` run as `user`, on `port` (both families), answering every
    /// datagram with `reply`; returns once its socket is bound.
    pub fn udp_app_as(&self, ns: &str, user: &str, port: u16, reply: &str) -> Bg {
        let bg = self.socat_as(ns, Some(user), &format!("UDP6-RECVFROM:{port},fork"), reply);
        wait_for(|| self.exec(ns, "ss", &["-Huln", &format!("sport = :{port}")]).stdout.len() > 1, "udp app to bind");
        bg
    }

    /// socat in `ns` (as `user`, else root) on `listen`, answering `reply`.
    fn socat_as(&self, ns: &str, user: Option<&str>, listen: &str, reply: &str) -> Bg {
        let sys = format!("SYSTEM:echo {reply}");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]);
        if let Some(user) = user {
            let gid = must("id", &["-g", user]);
            cmd.args(["setpriv", &format!("--reuid={user}"), &format!("--regid={}", gid.trim()), "--clear-groups"]);
        }
        let child = cmd
            .args(["socat", listen, &sys])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is needed for traffic tests (apt-get install socat)");
        Bg(child)
    }

    /// Connects from `ns` to `addr` (an IP, v6 without brackets) on `port`; returns the reply, trimmed.
    pub fn tcp_get(&self, ns: &str, addr: &str, port: u16) -> Option<String> {
        let target = if addr.contains(':') {
            format!("TCP:[{addr}]:{port},connect-timeout=2")
        } else {
            format!("TCP:{addr}:{port},connect-timeout=2")
        };
        let o = self.exec(ns, "timeout", &["3", "socat", "-T2", "-", &target]);
        let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
        (o.status.success() && !s.is_empty()).then_some(s)
    }
}

impl Net {
    /// This test's own bpffs instance, mounted at `DIR/bpffs` on first use and unmounted
    /// when the `Net` is dropped, which detaches whatever portd pinned there: kernel tests
    /// never leave programs attached to the host.
    pub fn bpffs(&self) -> PathBuf {
        let dir = self.dir.join("bpffs");
        let mounted = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split_whitespace().nth(1) == Some(dir.to_str().unwrap_or("")));
        if !mounted {
            std::fs::create_dir_all(&dir).expect("bpffs dir");
            let o = sh("mount", &["-t", "bpf", "bpf", dir.to_str().expect("utf-8 path")]);
            assert!(
                o.status.success(),
                "mounting a bpffs for the test failed (needs root and CONFIG_BPF_SYSCALL): {}",
                err(&o)
            );
        }
        dir
    }

    /// A command run in namespace `ns` through nsenter, which keeps /sys as it is (so
    /// bpffs and cgroup2 stay visible), unlike `ip netns exec`.
    pub fn nsenter(&self, ns: &str, cmd: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{ns}")).arg(cmd);
        c
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let pids = sh("ip", &["netns", "pids", &self.srv]);
        for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
            let _ = sh("kill", &["-9", pid]);
        }
        let bpffs = self.dir.join("bpffs");
        if bpffs.exists() {
            let _ = sh("umount", &[bpffs.to_str().unwrap_or_default()]);
        }
        let _ = sh("ip", &["netns", "del", &self.srv]);
        let _ = sh("ip", &["netns", "del", &self.cli]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A background process killed on drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` for up to 10 s.
pub fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// A running portd in the server namespace.
pub struct Portd {
    /// The process (`ip netns exec` execs portd, so this is portd's pid).
    pub child: Child,
    /// Control socket.
    pub socket: PathBuf,
    /// Config file.
    pub config: PathBuf,
    /// State directory.
    pub state: PathBuf,
}

/// A daemon config for tests: socket, state and grants in the scratch directory.
pub fn config(net: &Net, extra: &str) -> String {
    format!(
        "version: 1\nsettings:\n  table: portd\n  socket: {{path: {}, group: null, mode: \"0666\"}}\n  state_dir: {}\n{extra}",
        net.dir.join("portd.sock").display(),
        net.dir.join("state").display()
    )
}

impl Portd {
    /// Writes `config_text` and starts portd; returns once the socket answers.
    pub fn start(net: &Net, config_text: &str) -> Portd {
        Self::start_with(net, config_text, None)
    }

    /// Starts portd with NOTIFY_SOCKET set when `notify` is given.
    pub fn start_with(net: &Net, config_text: &str, notify: Option<&Path>) -> Portd {
        Self::start_wrapped(net, config_text, notify, &[])
    }

    /// Starts portd in a PID namespace of its own too, as in a container (`unshare --pid
    /// --fork`: the child is unshare, which kills portd when it is killed).
    pub fn start_in_pid_namespace(net: &Net, config_text: &str) -> Portd {
        Self::start_wrapped(net, config_text, None, &["unshare", "--pid", "--fork", "--kill-child"])
    }

    /// Starts portd with `env` set (PORTD_LOG, say).
    pub fn start_env(net: &Net, config_text: &str, env: &[(&str, &str)]) -> Portd {
        Self::start_full(net, config_text, None, &[], env)
    }

    fn start_wrapped(net: &Net, config_text: &str, notify: Option<&Path>, wrapper: &[&str]) -> Portd {
        Self::start_full(net, config_text, notify, wrapper, &[])
    }

    fn start_full(
        net: &Net,
        config_text: &str,
        notify: Option<&Path>,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Portd {
        let config = net.dir.join("portd.yaml");
        std::fs::write(&config, config_text).expect("write config");
        let socket = net.dir.join("portd.sock");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.srv]).args(wrapper).arg(bin("portd")).arg("--config").arg(&config);
        cmd.stdout(Stdio::null()).stderr(std::fs::File::create(net.dir.join("portd.log")).expect("log"));
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", n);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().expect("start portd");
        let d = Portd { child, socket: socket.clone(), config, state: net.dir.join("state") };
        if notify.is_none() {
            d.wait_ready(net);
        }
        d
    }

    /// Starts portd with the BPF data plane: entered with nsenter (`ip netns exec` hides
    /// bpffs) and pinned in the test's own bpffs ([`Net::bpffs`]); `extra_args` go to portd.
    pub fn start_bpf(net: &Net, config_text: &str, extra_args: &[&str]) -> Portd {
        let config = net.dir.join("portd.yaml");
        std::fs::write(&config, config_text).expect("write config");
        let socket = net.dir.join("portd.sock");
        let mut cmd = net.nsenter(&net.srv, bin("portd"));
        cmd.arg("--config").arg(&config).arg("--bpffs").arg(net.bpffs()).args(extra_args);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(net.dir.join("portd.log")).expect("log");
        cmd.stdout(Stdio::null()).stderr(log);
        let child = cmd.spawn().expect("start portd");
        let d = Portd { child, socket: socket.clone(), config, state: net.dir.join("state") };
        d.wait_ready(net);
        d
    }

    /// Waits until `portctl status` answers.
    pub fn wait_ready(&self, net: &Net) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if self.ctl(&["status"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "portd did not answer; its log:\n{}",
            std::fs::read_to_string(net.dir.join("portd.log")).unwrap_or_default()
        );
    }

    /// Runs portctl as root against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("portctl")).arg("--socket").arg(&self.socket).args(args).output().expect("run portctl")
    }

    /// `portctl status --json`, parsed.
    pub fn status_json(&self) -> serde_json::Value {
        let o = self.ctl(&["status", "--json"]);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("status --json: {e}: {}", err(&o)))
    }

    /// Runs portctl as another user (and groups) through setpriv.
    pub fn ctl_as(&self, user: &str, groups: &str, args: &[&str]) -> Output {
        let mut c = Command::new("setpriv");
        let gid = must("id", &["-g", user]);
        c.args([format!("--reuid={user}"), format!("--regid={}", gid.trim())]);
        if groups.is_empty() {
            c.arg("--clear-groups");
        } else {
            c.arg(format!("--groups={groups}"));
        }
        c.arg(bin("portctl")).arg("--socket").arg(&self.socket).args(args).output().expect("run setpriv portctl")
    }

    /// Sends a signal.
    pub fn signal(&self, sig: &str) {
        must("kill", &[&format!("-{sig}"), &self.child.id().to_string()]);
    }

    /// Waits for the process to exit and returns its status code.
    pub fn wait(&mut self) -> Option<i32> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("portd did not exit");
    }

    /// The daemon's log so far.
    pub fn log(net: &Net) -> String {
        std::fs::read_to_string(net.dir.join("portd.log")).unwrap_or_default()
    }
}

impl Drop for Portd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A datagram socket standing in for systemd's NOTIFY_SOCKET.
pub struct NotifyListener {
    sock: UnixDatagram,
    /// Its path.
    pub path: PathBuf,
}

impl NotifyListener {
    /// Binds a notify socket in `dir`.
    pub fn new(dir: &Path) -> NotifyListener {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        NotifyListener { sock, path }
    }

    /// Receives messages until one contains `needle`; returns it.
    pub fn wait_for(&self, needle: &str) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.sock.recv(&mut buf).unwrap_or_else(|e| panic!("no `{needle}` on NOTIFY_SOCKET: {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.lines().any(|l| l == needle) {
                return msg;
            }
        }
    }
}

/// stdout of an Output as text.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of an Output as text.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes a file in `dir` and returns its path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let mut f = std::fs::File::create(&p).expect("create");
    f.write_all(text.as_bytes()).expect("write");
    p
}

/// Reads a whole file.
pub fn read(p: &Path) -> String {
    let mut s = String::new();
    std::fs::File::open(p).and_then(|mut f| f.read_to_string(&mut s)).expect("read");
    s
}

/// Runs `f` on a fresh thread that has entered network namespace `ns` (sockets it opens
/// live there), so tests can time connections without spawning a process per attempt.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f).join().expect("netns thread")
}

/// Connects to `addr` until the reply is `expect`, for at most `limit`; returns the time taken.
pub fn time_until_reply(addr: std::net::SocketAddr, expect: &str, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut buf = String::new();
            if s.read_to_string(&mut buf).is_ok() && buf.trim() == expect {
                return Some(t.elapsed());
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

/// Median and maximum of durations, in milliseconds.
pub fn median_max_ms(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

/// The forwards of a `status --json` answer as sorted `owner/name` strings.
pub fn placed_names(status: &serde_json::Value) -> Vec<String> {
    let mut names: Vec<String> = status["forwards"]
        .as_array()
        .expect("forwards list")
        .iter()
        .map(|f| format!("{}/{}", f["owner"].as_str().unwrap_or(""), f["forward"]["name"].as_str().unwrap_or("")))
        .collect();
    names.sort();
    names
}

/// Trial count: `$NAME` if set, else `default`.
pub fn trials(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Like [`in_netns`] but returns at once with the thread's handle.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
        f()
    })
}

/// Sends one request line on a fresh connection to `socket` and returns the answer, parsed.
pub fn request(socket: &Path, req: &serde_json::Value) -> serde_json::Value {
    use std::io::BufRead;
    let mut s =
        std::os::unix::net::UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    let mut line = serde_json::to_vec(req).expect("request json");
    line.push(b'\n');
    s.write_all(&line).unwrap_or_else(|e| panic!("send {req}: {e}"));
    let mut answer = String::new();
    std::io::BufReader::new(&s).read_line(&mut answer).unwrap_or_else(|e| panic!("answer to {req}: {e}"));
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer to {req} is not JSON ({e}): {answer:?}"))
}

/// An `apply` request of `text` as a rules file.
pub fn apply_request(text: &str) -> serde_json::Value {
    serde_json::json!({"version": 1, "command": {"op": "apply", "file": "test.yaml", "text": text, "dry_run": false, "owner": null}})
}

/// Raises this process's open-file limit to its hard limit (tests holding 1,000+ sockets).
pub fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    assert_eq!(rc, 0, "setrlimit(NOFILE, {}): {}", lim.rlim_max, std::io::Error::last_os_error());
    lim.rlim_cur
}

/// Number of sockets process `pid` holds open.
pub fn socket_fds(pid: u32) -> usize {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().and_then(|e| std::fs::read_link(e.path()).ok()))
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Joins every thread, then re-raises the first panic among them.
pub fn join_all<T>(threads: Vec<std::thread::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::new();
    let mut panic = None;
    for t in threads {
        match t.join() {
            Ok(v) => results.push(v),
            Err(p) => {
                panic.get_or_insert(p);
            }
        }
    }
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
    results
}

/// A UDP server in namespace `ns` on `port` (both families) answering `reply` to every
/// datagram, until `stop` is set.
pub fn udp_answerer(
    ns: &str,
    port: u16,
    reply: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    spawn_in_netns(ns, move || {
        let s = std::net::UdpSocket::bind(("::", port)).unwrap_or_else(|e| panic!("bind udp {port}: {e}"));
        s.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(reply.as_bytes(), from);
            }
        }
    })
}

/// The status entry of `owner`/`name`, if listed.
pub fn forward_status(status: &serde_json::Value, owner: &str, name: &str) -> Option<serde_json::Value> {
    status["forwards"].as_array()?.iter().find(|f| f["owner"] == owner && f["forward"]["name"] == name).cloned()
}
