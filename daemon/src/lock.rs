//! One portd per table: an exclusive `flock` on `<socket dir>/table-<TABLE>.lock`, taken
//! before anything touches the kernel. The file holds the pid of the portd that has it; the
//! kernel drops the lock when that process ends, however it ends, so a stale file is harmless.

#![forbid(unsafe_code)]

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The held lock; released when dropped (or when the process ends).
pub struct TableLock {
    _file: Flock<std::fs::File>,
}

/// The lock file for `table` next to `socket`.
pub fn path(socket: &Path, table: &str) -> PathBuf {
    socket.parent().unwrap_or(Path::new("/")).join(format!("table-{table}.lock"))
}

/// Takes the lock for `table`, or explains which portd holds it.
pub fn take(socket: &Path, table: &str) -> anyhow::Result<TableLock> {
    let p = path(socket, table);
    // First a look that writes nothing, so that a running portd is named even when this
    // one could not use the directory itself (another user's, e.g. portd's under systemd).
    if let Some(pid) = holder(&p) {
        return Err(refusal(table, &p, &pid));
    }
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        anyhow::bail!("{} is not a lock file path", p.display());
    };
    // The socket's directory, checked like the socket's own: no symlinks, nobody else can write it.
    let dir = crate::safedir::Dir::open(dir, 0o755).context("runtime directory")?;
    let file = dir.open_rw(name, 0o644).with_context(|| format!("opening the lock file {}", p.display()))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(refusal(table, &p, text.trim()));
        }
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", p.display())),
    };
    file.set_len(0).and_then(|_| file.rewind()).with_context(|| format!("writing {}", p.display()))?;
    writeln!(file, "{}", std::process::id()).with_context(|| format!("writing {}", p.display()))?;
    Ok(TableLock { _file: file })
}

/// The pid of the portd that holds the lock of `table` next to `socket` (empty when it
/// wrote none), without taking or creating anything; `None` when no portd holds it.
pub fn holder_of(socket: &Path, table: &str) -> Option<String> {
    holder(&path(socket, table))
}

/// The pid written in the lock file at `p` when another process holds the lock (empty
/// when it holds it but wrote no pid); `None` when the file is absent or not locked.
/// Opens read-only, without following a symlink or waiting on a FIFO.
fn holder(p: &Path) -> Option<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(p).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => None,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            Some(text.trim().to_string())
        }
        Err(_) => None,
    }
}

/// The refusal naming the holder; the file's text is shown only when it is a pid.
fn refusal(table: &str, p: &Path, pid: &str) -> anyhow::Error {
    let is_pid = !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit());
    let who = if !is_pid { "another portd".to_string() } else { format!("portd pid {pid}") };
    anyhow::anyhow!(
        "table inet {table} is already managed by {who} (lock {}); stop it first, or run this one with another --table and --socket",
        p.display()
    )
}
