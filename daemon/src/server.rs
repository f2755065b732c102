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

/// The peer's credentials as the kernel reports them at connect time.
struct Peer {
    uid: u32,
    pid: Option<i32>,
}

fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer { uid: cred.uid(), pid: cred.pid() })
}

/// The caller, identified by the kernel (SO_PEERCRED), never by the client. The name
/// comes from the account database, looked up only for requests that need it (status
/// does not), so a flood of connections costs no passwd lookups. Grants are judged on
/// the account database's groups of that name (see the policy core), so a forward is
/// judged the same way at apply and at every later reload.
fn caller_of(peer: &Peer, with_names: bool) -> Caller {
    let user = if with_names { crate::actor::name_of(peer.uid) } else { None };
    Caller { uid: peer.uid, pid: peer.pid, user: user.unwrap_or_else(|| peer.uid.to_string()) }
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
