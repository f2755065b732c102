//! The control server: accepts connections on the Unix socket, reads newline-delimited
//! JSON requests with a size limit and a read timeout, identifies callers by
//! SO_PEERCRED, and forwards requests to the actor. A bad client affects only itself.

use crate::actor::{Caller, Msg};
use portd_rules::proto::{decode_request, ErrorKind, Response, MAX_LINE_BYTES};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections served at once; more wait in the backlog.
    pub max_connections: usize,
    /// A request line must arrive within this time.
    pub read_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_connections: 1024, read_timeout: Duration::from_secs(10) }
    }
}

/// Accepts until `shutdown` is cancelled, then waits for in-flight connections.
pub async fn run(listener: UnixListener, actor: Sender<Msg>, shutdown: CancellationToken, limits: Limits) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let actor = actor.clone();
        let token = shutdown.clone();
        tracker.spawn(async move {
            serve(stream, actor, token, limits).await;
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(30), tracker.wait()).await.is_err() {
        tracing::warn!("in-flight requests did not finish within 30 s");
    }
}

/// Supplementary groups of the peer at connect time (SO_PEERGROUPS, Linux 4.13+).
fn peer_groups(stream: &UnixStream) -> std::io::Result<Vec<libc::gid_t>> {
    use std::os::fd::AsRawFd;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is valid for `len` bytes and the fd is a live socket.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// The peer's credentials as the kernel reports them at connect time.
struct Peer {
    uid: u32,
    gid: u32,
    pid: Option<i32>,
    groups: Vec<libc::gid_t>,
}

fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer { uid: cred.uid(), gid: cred.gid(), pid: cred.pid(), groups: peer_groups(stream)? })
}

/// The caller, identified by the kernel (SO_PEERCRED and SO_PEERGROUPS), never by the
/// client. Names come from the account database, looked up only for requests that need
/// them (status does not), so a flood of connections costs no passwd/group lookups.
fn caller_of(peer: &Peer, with_names: bool) -> Caller {
    if !with_names {
        return Caller { uid: peer.uid, pid: peer.pid, user: peer.uid.to_string(), groups: Vec::new() };
    }
    let user = nix::unistd::User::from_uid(peer.uid.into()).ok().flatten();
    let name = user.as_ref().map_or_else(|| peer.uid.to_string(), |u| u.name.clone());
    let mut groups: Vec<String> = std::iter::once(&peer.gid)
        .chain(&peer.groups)
        .filter_map(|g| nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(*g)).ok().flatten().map(|g| g.name))
        .collect();
    groups.sort();
    groups.dedup();
    Caller { uid: peer.uid, pid: peer.pid, user: name, groups }
}

async fn write(stream: &mut tokio::io::WriteHalf<UnixStream>, resp: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

/// Serves one connection: any number of requests, one at a time.
async fn serve(stream: UnixStream, actor: Sender<Msg>, shutdown: CancellationToken, limits: Limits) {
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("peer credentials unavailable, dropping connection: {e}");
            return;
        }
    };
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = BufReader::new(rd);
    loop {
        let mut line = Vec::new();
        let read = async {
            // Read at most MAX_LINE_BYTES + 1 so an endless line cannot grow memory.
            let mut limited = (&mut reader).take(MAX_LINE_BYTES as u64 + 1);
            limited.read_until(b'\n', &mut line).await
        };
        let n = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = tokio::time::timeout(limits.read_timeout, read) => match r {
                Err(_) => {
                    if !line.is_empty() {
                        let _ = write(&mut wr, &Response::error(ErrorKind::Protocol, vec![format!("request not completed within {:?}", limits.read_timeout)])).await;
                    }
                    return;
                }
                Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
            },
        };
        if n == 0 {
            return;
        }
        if line.last() != Some(&b'\n') {
            let msg = if line.len() > MAX_LINE_BYTES {
                format!("request line exceeds {MAX_LINE_BYTES} bytes; connection closed")
            } else {
                "request ended without a newline".to_string()
            };
            let _ = write(&mut wr, &Response::error(ErrorKind::Protocol, vec![msg])).await;
            return;
        }
        let resp = match decode_request(&line) {
            Err(e) => Response::error(ErrorKind::Protocol, vec![e]),
            Ok(req) => {
                let (tx, rx) = oneshot::channel();
                let caller = caller_of(&peer, !matches!(req.command, portd_rules::proto::Command::Status));
                if actor.send(Msg::Request { caller, command: req.command, reply: tx }).is_err() {
                    return;
                }
                match rx.await {
                    Ok(r) => r,
                    Err(_) => Response::error(ErrorKind::Internal, vec!["the daemon is stopping".into()]),
                }
            }
        };
        if write(&mut wr, &resp).await.is_err() {
            return;
        }
    }
}
