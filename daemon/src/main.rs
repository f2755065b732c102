//! portd: keeps nftables redirect and mark rules in the kernel from declarative YAML and
//! serves portctl over a Unix socket.
//!
//! Start order: parse flags and config (exit with the reason on error), lock the table
//! (one portd per table: a lock file next to the socket), take the socket
//! (systemd's, or bind our own and set its group and mode while we may still chown),
//! drop every capability except CAP_NET_ADMIN, restore persisted sets and apply them,
//! then READY=1.

mod actor;
mod check;
mod coalesce;
mod dataplane;
mod doctor;
mod lock;
mod metrics;
mod metrics_http;
mod notify;
mod pace;
mod privs;
mod process_metrics;
mod refusals;
mod remove_table;
mod safedir;
mod server;
mod state;
mod subids;

use actor::{Daemon, Msg, Overrides};
use anyhow::Context;
use clap::Parser;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixListener as StdListener;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// portd: port forwarding firewall daemon (nftables).
#[derive(Debug, Parser)]
#[command(name = "portd", version, about)]
struct Args {
    /// Daemon config file.
    #[arg(long, default_value = "/etc/portd/portd.yaml")]
    config: PathBuf,
    /// Control socket path (overrides settings.socket.path).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Directory for persisted sets (overrides settings.state_dir).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// nftables table name (overrides settings.table).
    #[arg(long)]
    table: Option<String>,
    /// Remove portd's table (--table, else the config's settings.table) from the kernel
    /// and exit; no daemon needed. Exit 0 also when there is no such table; exit 1,
    /// removing nothing, while a portd holds the table (stop it first: `systemctl stop
    /// portd.socket portd.service`).
    #[arg(long)]
    remove_table: bool,
    /// bpffs mount under which the BPF data plane is pinned, in portd/TABLE.
    #[arg(long, default_value = dataplane::DEFAULT_BPFFS)]
    bpffs: PathBuf,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Validate the config and exit: 0 when valid, 1 with every located error otherwise.
    /// Touches no kernel state; when a portd runs, also shows what a reload of this file
    /// would add, remove and suspend (as root), and exits 1 if it would refuse it.
    #[arg(long)]
    check: bool,
}

fn init_logging(verbose: u8) {
    use tracing_subscriber::prelude::*;
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PORTD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Under systemd, stderr is connected to the journal: log to journald directly.
    if stderr_is_journal() {
        if let Ok(layer) = tracing_journald::layer() {
            // Fields become PORTD_OWNER, PORTD_UID, PORTD_USER, PORTD_ACTION, PORTD_FORWARD, ...
            let layer = layer.with_syslog_identifier("portd".into()).with_field_prefix(Some("PORTD".into()));
            tracing_subscriber::registry().with(filter).with(layer).init();
            return;
        }
    }
    // Colour only for a person at a terminal, never into files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(move || EscapingStderr { ansi })
        .init();
}

/// Stderr that writes each log record as one line: control and format characters inside
/// a record (a CR or LF from a client-chosen name that reached a message) are escaped, so
/// no record can forge another. The formatter hands over each record whole, its final
/// newline last; ESC is kept only for the colours of a terminal.
struct EscapingStderr {
    ansi: bool,
}

impl std::io::Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(b) => (b, "\n"),
            None => (buf, ""),
        };
        let text = String::from_utf8_lossy(body);
        let mut out = String::with_capacity(text.len() + 1);
        for c in text.chars() {
            match c {
                '\x1b' if self.ansi => out.push(c),
                '\\' => out.push(c),
                c => portd_rules::text::push_escaped(&mut out, c),
            }
        }
        out.push_str(end);
        std::io::Write::write_all(&mut std::io::stderr().lock(), out.as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::Write::flush(&mut std::io::stderr())
    }
}

/// True when stderr is the journal stream systemd names in JOURNAL_STREAM ("dev:inode"),
/// not merely inherited from a parent that had it.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else { return false };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else { return false };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

/// The listening sockets from systemd socket activation (LISTEN_FDS for our pid): the
/// control socket, and the metrics endpoint's when a socket named `metrics`
/// (portd-metrics.socket) is passed too.
fn activated_sockets() -> anyhow::Result<(Option<StdListener>, Option<std::net::TcpListener>)> {
    let (mut control, mut metrics) = (None, None);
    for (fd, name) in sd_notify::listen_fds_with_names(false).context("reading LISTEN_FDS and LISTEN_FDNAMES")? {
        if name == "metrics" && metrics.is_none() {
            // SAFETY: systemd passed us this descriptor (LISTEN_PID matched); we take ownership once.
            metrics = Some(unsafe { std::net::TcpListener::from_raw_fd(fd) });
        } else if control.is_none() {
            // SAFETY: as above.
            control = Some(unsafe { StdListener::from_raw_fd(fd) });
        } else {
            tracing::warn!("systemd passed an unexpected socket `{name}` (fd {fd}); ignoring it");
        }
    }
    Ok((control, metrics))
}

/// Binds the control socket in a directory that only root or portd can write (checked),
/// created with its mode (through the umask, never a chmod of the path) and its group set
/// without following symlinks.
fn bind_socket(path: &Path, group: Option<&str>, mode: u32) -> anyhow::Result<StdListener> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        anyhow::bail!("{} is not a socket path", path.display());
    };
    let dir = safedir::Dir::open(parent, 0o755).context("socket directory")?;
    match dir.kind(name).with_context(|| format!("checking {}", path.display()))? {
        Some(nix::sys::stat::SFlag::S_IFSOCK) => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "another daemon is listening on {}; stop it, or give this portd another --socket",
                    path.display()
                );
            }
            dir.unlink(name).with_context(|| format!("removing stale socket {}", path.display()))?
        }
        Some(_) => anyhow::bail!("{} exists and is not a socket; remove it or choose another --socket", path.display()),
        None => {}
    }
    let umask = nix::sys::stat::Mode::from_bits_truncate(!mode & 0o777);
    let old = nix::sys::stat::umask(umask);
    let bound = StdListener::bind(path);
    nix::sys::stat::umask(old);
    let l = bound.with_context(|| format!("binding {}", path.display()))?;
    if let Some(g) = group {
        match nix::unistd::Group::from_name(g)? {
            Some(gr) => {
                dir.chgrp(name, gr.gid.as_raw()).with_context(|| format!("setting group {g} on {}", path.display()))?
            }
            None => tracing::warn!("group `{g}` does not exist; socket {} keeps its default group", path.display()),
        }
    }
    Ok(l)
}

/// Watches nf_tables events and wakes the actor when another program committed.
fn spawn_drift_listener(
    listener: portd_kernel::events::TableWatcher,
    tx: std::sync::mpsc::Sender<Msg>,
) -> anyhow::Result<()> {
    std::thread::Builder::new().name("portd-events".into()).spawn(move || {
        let mut buf = Vec::new();
        loop {
            match listener.next(&mut buf) {
                Ok(change) => {
                    if tx.send(Msg::Drift(change)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!("nf_tables event listener stopped: {e}; foreign changes will not be repaired");
                    return;
                }
            }
        }
    })?;
    Ok(())
}

/// Waits for bind events of the data plane and wakes the actor, which drains them; the
/// next wait starts once the actor has (the descriptor stays readable until then).
fn spawn_bind_watcher(fd: std::os::fd::OwnedFd, tx: std::sync::mpsc::Sender<Msg>) -> anyhow::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    std::thread::Builder::new().name("portd-binds".into()).spawn(move || loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {
                let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
                if tx.send(Msg::BindEvents { ack: ack_tx }).is_err() || ack_rx.recv().is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::error!("waiting for bind events: {e}; binds of public ports are seen at the next poll only");
                return;
            }
        }
    })?;
    Ok(())
}

/// Watches /etc for a new or rewritten passwd or group file (tools replace them by
/// rename, as nscd expects) and tells the actor. Without inotify, accounts are looked up
/// again at every reload only, which the log says.
fn spawn_account_watcher(tx: std::sync::mpsc::Sender<Msg>) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let watch = || -> nix::Result<Inotify> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC)?;
        ino.add_watch("/etc", AddWatchFlags::IN_CLOSE_WRITE | AddWatchFlags::IN_MOVED_TO)?;
        Ok(ino)
    };
    let ino = match watch() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(
                "watching /etc/passwd and /etc/group (inotify): {e}; account changes take effect at the next reload"
            );
            return;
        }
    };
    let spawned = std::thread::Builder::new().name("portd-accounts".into()).spawn(move || loop {
        match ino.read_events() {
            Ok(events) => {
                let ours = events.iter().any(|e| {
                    e.name.as_ref().is_some_and(|n| n == "passwd" || n == "group" || n == "shadow" || n == "gshadow")
                });
                if ours && tx.send(Msg::AccountsChanged).is_err() {
                    return;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                tracing::warn!(
                    "watching /etc for account changes stopped: {e}; account changes take effect at the next reload"
                );
                return;
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!("starting the account watcher: {e}; account changes take effect at the next reload");
    }
}

/// One malloc arena for every thread. Requests are parsed on blocking threads and
/// applied on the actor's: with an arena per thread, the memory a large file took stays
/// in its parsing thread's arena, and a daemon holding 10,000 forwards sat at 32 MiB
/// after an apply instead of 16 MiB. portd's threads rarely allocate at the same time.
fn one_malloc_arena() {
    // SAFETY: mallopt only sets an allocator parameter; it is called before any other
    // thread exists. A refusal (0) leaves glibc's default, which is only less frugal.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Niceness of the threads that serve non-root callers (see [`users_runtime`]).
const USERS_NICE: libc::c_int = 10;

/// The runtime that serves the connections of non-root callers: its threads run at
/// niceness [`USERS_NICE`], so when the CPU is short, the kernel's scheduler serves
/// root's requests, the actor and drift repair first, whatever other users ask for.
fn users_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("portd-users")
        .on_thread_start(|| {
            // SAFETY: setpriority with PRIO_PROCESS and 0 changes the niceness of the
            // calling thread only (Linux keeps it per thread); it touches no memory.
            // Lowering one's own priority needs no privilege; on failure the thread keeps
            // the daemon's priority.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, USERS_NICE);
            }
        })
        .enable_all()
        .build()
}

fn main() -> std::process::ExitCode {
    one_malloc_arena();
    let args = Args::parse();
    if args.remove_table {
        return remove_table_command(&args);
    }
    if args.check {
        return check::run(&args.config, args.table.as_deref(), args.socket.as_deref());
    }
    init_logging(args.verbose);
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once: the log goes to stderr, or to the journal that stderr would reach. Each
            // line of it (the located errors of a config) is a record of its own, since a
            // record's line breaks are escaped.
            for line in format!("{e:#}").lines() {
                tracing::error!("{line}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// `portd --remove-table`: one line on stdout saying what was done, or the error on stderr.
fn remove_table_command(args: &Args) -> std::process::ExitCode {
    let result = remove_table::target(&args.config, args.table.as_deref(), args.socket.as_deref()).and_then(
        |(table, socket)| {
            remove_table::refuse_if_running(&table, &socket)?;
            let pins = dataplane::pin_dir(&args.bpffs, &table);
            let unpinned = portd_kernel::bpf::Dataplane::remove_for(&pins, actor::sys_uid_max())
                .with_context(|| format!("removing the BPF data plane pinned at {}", pins.display()))?;
            if unpinned {
                println!("removed the BPF data plane pinned at {}", pins.display());
            }
            remove_table::remove(&table).map(|removed| (table, removed || unpinned))
        },
    );
    match result {
        Ok((table, true)) => {
            println!("removed table inet {table}");
            std::process::ExitCode::SUCCESS
        }
        Ok((table, false)) => {
            println!("table inet {table} does not exist; nothing to remove");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    // 1. Config: refuse to start on any error, before touching anything.
    let config = check::load(&args.config).map_err(|lines| anyhow::anyhow!("{}", lines.join("\n")))?;
    let overrides = Overrides { table: args.table.clone(), state_dir: args.state_dir.clone() };
    let config = actor::effective(config, &overrides);

    // 2. One portd per table: lock it before anything touches the kernel or the socket.
    let socket_path = args.socket.clone().unwrap_or_else(|| PathBuf::from(&config.settings.socket.path));
    let _lock = lock::take(&socket_path, &config.settings.table)?;

    // 3. Socket: systemd's (read before the runtime starts) or our own.
    let (activated, activated_metrics) = activated_sockets()?;
    let (listener, own_socket) = match activated {
        Some(l) => (l, None),
        None => (
            bind_socket(&socket_path, config.settings.socket.group.as_deref(), config.settings.socket.mode)?,
            Some(socket_path.clone()),
        ),
    };
    listener.set_nonblocking(true)?;
    // The metrics endpoint: systemd's (portd-metrics.socket), else our own when
    // configured; otherwise no TCP socket at all.
    let metrics_settings = config.settings.metrics.clone();
    let metrics_listener = match (activated_metrics, config.settings.metrics.clone()) {
        (Some(l), want) => {
            l.set_nonblocking(true).context("the metrics socket from systemd")?;
            if let (Some(want), Ok(have)) = (want, l.local_addr()) {
                if want.listen != have {
                    tracing::warn!(
                        "settings.metrics.listen is {} but systemd passed the metrics socket {have} (portd-metrics.socket); serving on {have}",
                        want.listen
                    );
                }
            }
            Some(l)
        }
        (None, Some(m)) => Some(metrics_http::bind(m.listen)?),
        (None, None) => None,
    };

    // Room for the connection limit: raise the soft descriptor limit to the hard one.
    // Failing leaves the soft limit as it was: fewer simultaneous connections, still correct.
    let nofile = nix::sys::resource::Resource::RLIMIT_NOFILE;
    match nix::sys::resource::getrlimit(nofile) {
        Ok((_, hard)) => {
            if let Err(e) = nix::sys::resource::setrlimit(nofile, hard.min(65536), hard) {
                tracing::warn!(
                    "cannot raise the open-file limit to {}: {e}; fewer connections fit at once",
                    hard.min(65536)
                );
            }
        }
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}; keeping it as it is"),
    }

    // 4. The BPF data plane (while every capability is still there), then privileges.
    let steering = dataplane::Steering::start(&config.settings, &args.bpffs)?;
    let bind_events = steering.events_fd();
    privs::drop_to_net_admin(bind_events.is_some())?;

    // 5. Restore and apply, on the actor's thread, then READY=1.
    let (tx, rx) = std::sync::mpsc::channel::<Msg>();
    let table = config.settings.table.clone();
    let published = std::sync::Arc::new(actor::Published::default());
    published.subids.reload();
    let kernel = Box::new(portd_kernel::nft::Backend::new(&config.settings.table));
    let own_port = kernel.commit_port();
    let mut daemon = Daemon::start(args.config.clone(), config, overrides, published.clone(), kernel, steering)?;
    let events =
        portd_kernel::events::TableWatcher::new(&table, own_port).context("subscribing to nf_tables events")?;
    daemon.attach_events(events.subscription());
    daemon.attach_self(tx.clone());
    let status = daemon.status_line();
    let actor = std::thread::Builder::new().name("portd-actor".into()).spawn(move || daemon.run(rx))?;
    spawn_drift_listener(events, tx.clone())?;
    if let Some(fd) = bind_events {
        spawn_bind_watcher(fd, tx.clone())?;
    }
    spawn_account_watcher(tx.clone());
    notify::ready(&status);
    tracing::info!("ready: {status}");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let users_rt = users_runtime()?;
    let users = users_rt.handle().clone();
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let shutdown = CancellationToken::new();
        if let Some(l) = metrics_listener {
            let l = tokio::net::TcpListener::from_std(l)?;
            tracing::info!("serving metrics on http://{}/metrics", l.local_addr()?);
            // systemd's socket without settings.metrics: loopback scrapers only.
            let allow = metrics_settings.unwrap_or_else(|| portd_rules::model::MetricsSettings {
                listen: l.local_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 9649))),
                allow: portd_rules::model::MetricsSettings::loopback(),
            });
            tokio::spawn(metrics_http::run(l, tx.clone(), published.clone(), shutdown.clone(), allow));
        }
        let limits = server::Limits::default();
        let server = tokio::spawn(server::run(listener, tx.clone(), published, shutdown.clone(), limits, users));
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading {}", args.config.display());
                    let _ = tx.send(Msg::Reload);
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        tracing::info!("stopping: no new connections, finishing requests in flight");
        shutdown.cancel();
        let _ = server.await;
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let _ = tx.send(Msg::Shutdown { reply: done_tx });
        let _ = done_rx.await;
        anyhow::Ok(())
    })?;
    drop(users_rt);
    let _ = actor.join();
    if let Some(p) = own_socket {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
