//! The control server: accepts connections on the Unix socket, identifies callers by
//! SO_PEERCRED, reads newline-delimited JSON requests, parses and validates rules files
//! and owners off the actor's thread, forwards the actor's own requests to it, and is
//! the one place that turns the actor's answers into wire answers.
//!
//! A hostile or broken client affects only itself: lines are bounded (4 MiB) and so is
//! the memory all partial lines may hold together; a request must arrive within the read
//! timeout and an answer must be taken within the write timeout; a connection that keeps
//! sending malformed lines is closed; each non-root uid has its own caps on connections
//! and requests in flight, so one user cannot take the slots of others; root is always
//! accepted; a non-root caller without any grant is refused before its file is parsed;
//! parsing has a time budget and at most two run at once.

#![forbid(unsafe_code)]

mod requests;

use requests::handle;
pub use requests::status_of;

use crate::actor::{self, Caller, Msg, Published};
use crate::coalesce::Answer;
use portd_rules::proto::{decode_request, ErrorKind, Response, MAX_LINE_BYTES};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections of non-root callers served at once (root's are always taken).
    pub max_connections: usize,
    /// Most connections of one non-root uid.
    pub per_uid_connections: usize,
    /// Most requests of one non-root uid being worked on at once.
    pub per_uid_requests: usize,
    /// A request line must arrive within this time.
    pub read_timeout: Duration,
    /// An answer must be taken by the client within this time.
    pub write_timeout: Duration,
    /// Malformed lines in a row after which a connection is closed.
    pub max_bad_lines: usize,
    /// Bytes of partial request lines all non-root connections may hold together.
    pub buffer_budget: usize,
    /// Bytes of partial request lines the connections of one non-root account may hold.
    pub per_uid_buffer: usize,
    /// Longest a rules file may take to parse and validate.
    pub parse_budget: Duration,
    /// Parses running at once.
    pub parse_slots: usize,
    /// Memory the parses of non-root callers may take together, as estimated before
    /// parsing ([`portd_rules::load::parse_cost`]); a file estimated above it is refused
    /// before the parser allocates anything.
    pub parse_memory: usize,
    /// Bytes of answers per second each non-root account may take (see [`crate::pace`]).
    pub answer_rate: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            per_uid_connections: 64,
            per_uid_requests: 4,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_bad_lines: 3,
            buffer_budget: 64 << 20,
            per_uid_buffer: 16 << 20,
            parse_budget: Duration::from_secs(5),
            parse_slots: 2,
            parse_memory: 64 << 20,
            answer_rate: 16 << 20,
        }
    }
}

/// Counters shared by all connections.
struct Shared {
    limits: Limits,
    actor: Sender<Msg>,
    published: Arc<Published>,
    /// Non-root connections by uid.
    conns: Mutex<HashMap<u32, usize>>,
    /// Non-root requests in flight by uid.
    requests: Mutex<HashMap<u32, Arc<Semaphore>>>,
    /// Bytes of partial lines held by non-root connections.
    buffered: AtomicUsize,
    /// The same by account.
    buffered_by: Mutex<HashMap<u32, usize>>,
    /// Set when the buffers grew large, so freed memory is handed back once they drain.
    trim_pending: AtomicBool,
    parses: Arc<Semaphore>,
    /// One parse at a time per non-root account, so that no account takes every slot.
    parse_turns: Mutex<HashMap<u32, Arc<Semaphore>>>,
    /// KiB of [`Limits::parse_memory`] not taken by non-root parses in flight.
    parse_memory: Arc<Semaphore>,
    /// The backend status reads use (its own netlink socket), one read at a time.
    reader: Arc<Mutex<Option<portd_kernel::nft::Backend>>>,
    /// Root's.
    root_reader: Arc<Mutex<Option<portd_kernel::nft::Backend>>>,
    /// Answer bytes per second of non-root accounts.
    pacer: crate::pace::Pacer,
}

/// `account`'s semaphore of `permits` in `map`, made when it has none; semaphores no one
/// holds or waits for are dropped on the way.
fn account_semaphore(map: &Mutex<HashMap<u32, Arc<Semaphore>>>, account: u32, permits: usize) -> Arc<Semaphore> {
    let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
    m.retain(|_, s| Arc::strong_count(s) > 1 || s.available_permits() < permits);
    m.entry(account).or_insert_with(|| Arc::new(Semaphore::new(permits))).clone()
}

/// The heap is trimmed when partial lines held this much and then drained.
const TRIM_AFTER_BUFFERED: usize = 8 << 20;

/// Request lines up to this long are read whatever others hold (see [`Shared::buffer`]):
/// every request but an apply or check of a file fits.
const SHORT_LINE: usize = 64 << 10;

impl Shared {
    /// Takes a connection slot for `uid`, or says why not.
    /// `uid` is the account the caps count (see [`crate::subids`]); `peer` the socket's.
    fn admit(&self, uid: u32, peer: u32) -> Result<(), String> {
        if uid == 0 {
            return Ok(());
        }
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = c.values().sum();
        let mine = c.get(&uid).copied().unwrap_or(0);
        if mine >= self.limits.per_uid_connections {
            return Err(if uid == peer {
                format!("uid {uid} already has {mine} connections open (the limit per user); close some and retry")
            } else {
                format!(
                    "uid {peer} is a subordinate uid of uid {uid} (/etc/subuid), which already has {mine} connections open (the limit per user, its subordinate uids included); close some and retry"
                )
            });
        }
        if total >= self.limits.max_connections {
            return Err(format!("portd serves {total} connections already; retry later"));
        }
        *c.entry(uid).or_default() += 1;
        Ok(())
    }

    fn release(&self, uid: u32) {
        if uid == 0 {
            return;
        }
        let mut c = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&uid) {
            *n -= 1;
            if *n == 0 {
                c.remove(&uid);
            }
        }
    }

    fn request_slots(&self, uid: u32) -> Arc<Semaphore> {
        account_semaphore(&self.requests, uid, self.limits.per_uid_requests)
    }

    /// `account`'s turn to parse: one file of an account is parsed at a time.
    fn parse_turn(&self, account: u32) -> Arc<Semaphore> {
        account_semaphore(&self.parse_turns, account, 1)
    }

    /// Accounts `n` more buffered bytes of `account`'s line, which is `line` bytes long
    /// with them, or says which budget is spent: the account's own share first (so no
    /// one account fills the shared budget), then the shared one, which short lines do
    /// not wait for (a status or a change is never refused because others hold large
    /// requests; their bytes are bounded by the connections, and still counted).
    fn buffer(&self, account: u32, n: usize, line: usize) -> Result<(), Line> {
        let mut by = self.buffered_by.lock().unwrap_or_else(|p| p.into_inner());
        let mine = by.get(&account).copied().unwrap_or(0);
        if mine + n > self.limits.per_uid_buffer {
            return Err(Line::OwnShare);
        }
        let short = line <= SHORT_LINE;
        self.buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                (short || cur + n <= self.limits.buffer_budget).then_some(cur + n)
            })
            .map_err(|_| Line::Busy)?;
        by.insert(account, mine + n);
        if self.buffered.load(Ordering::Acquire) > TRIM_AFTER_BUFFERED {
            self.trim_pending.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn unbuffer(&self, account: u32, n: usize) {
        if n == 0 {
            return;
        }
        {
            let mut by = self.buffered_by.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(m) = by.get_mut(&account) {
                *m = m.saturating_sub(n);
                if *m == 0 {
                    by.remove(&account);
                }
            }
        }
        let left = self.buffered.fetch_sub(n, Ordering::AcqRel) - n;
        if left == 0 && self.trim_pending.swap(false, Ordering::AcqRel) {
            // The flood is over: hand its memory back to the system.
            tokio::task::spawn_blocking(actor::trim_heap);
        }
    }
}

/// Accepts until `shutdown` is cancelled, then waits for in-flight connections. Root's
/// connections are served on the current runtime, other callers' on `users` (whose
/// threads run at a lower priority), so that no amount of other users' reads takes
/// the CPU root's requests need.
pub async fn run(
    listener: UnixListener,
    actor: Sender<Msg>,
    published: Arc<Published>,
    shutdown: CancellationToken,
    limits: Limits,
    users: tokio::runtime::Handle,
) {
    let tracker = TaskTracker::new();
    // Suppressed refusals are summarised in the log every few seconds.
    let flushing = published.clone();
    let flush_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::refusals::FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = flush_stop.cancelled() => break,
                _ = tick.tick() => flushing.refusals.flush(),
            }
        }
        flushing.refusals.flush();
    });
    let shared = Arc::new(Shared {
        limits,
        actor,
        published,
        conns: Mutex::default(),
        requests: Mutex::default(),
        pacer: crate::pace::Pacer::new(limits.answer_rate),
        buffered: AtomicUsize::new(0),
        buffered_by: Mutex::default(),
        trim_pending: AtomicBool::new(false),
        parses: Arc::new(Semaphore::new(limits.parse_slots)),
        parse_turns: Mutex::default(),
        parse_memory: Arc::new(Semaphore::new((limits.parse_memory >> 10).min(Semaphore::MAX_PERMITS))),
        reader: Arc::default(),
        root_reader: Arc::default(),
    });
    loop {
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
        let mut peer = match peer_of(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("peer credentials unavailable, dropping connection: {e}");
                continue;
            }
        };
        let account = shared.published.subids.account_of(peer.uid);
        peer.account = account;
        if let Err(why) = shared.admit(account, peer.uid) {
            // Answer without waiting for a client that may not read: a full buffer just
            // drops the answer.
            if let Ok(line) = encode(&Response::error(ErrorKind::Denied, vec![why])) {
                let _ = stream.try_write(&line);
            }
            continue;
        }
        let shared = shared.clone();
        let token = shutdown.clone();
        if peer.uid == 0 {
            tracker.spawn(async move {
                serve(stream, &peer, &shared, token).await;
                shared.release(account);
            });
            continue;
        }
        // Registered anew with the users' runtime, whose threads then do all its I/O.
        let moved = stream.into_std();
        tracker.spawn_on(
            async move {
                match moved.and_then(UnixStream::from_std) {
                    Ok(stream) => serve(stream, &peer, &shared, token).await,
                    Err(e) => tracing::warn!("handing a connection to the users' runtime: {e}"),
                }
                shared.release(account);
            },
            &users,
        );
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
    /// The account its caps count against (`uid`, or the owner of its subordinate
    /// range: see [`crate::subids`]).
    account: u32,
}

fn peer_of(stream: &UnixStream) -> std::io::Result<Peer> {
    let cred = stream.peer_cred()?;
    Ok(Peer { uid: cred.uid(), pid: cred.pid(), account: cred.uid() })
}

/// The caller, identified by the kernel (SO_PEERCRED), never by the client. The name
/// comes from the account database, looked up only for requests that need it (status
/// does not), so a flood of connections costs no passwd lookups. Grants are judged on
/// the account database's groups of that name (see the policy core), so a forward is
/// judged the same way at apply and at every later reload.
fn caller_of(peer: &Peer, with_names: bool) -> Caller {
    let user = if with_names { actor::name_of(peer.uid) } else { None };
    Caller { uid: peer.uid, pid: peer.pid, user: user.unwrap_or_else(|| peer.uid.to_string()) }
}

fn encode(resp: &Response) -> std::io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(resp).map_err(std::io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// An answer: the request's own, or a coalesced read's, shared already encoded.
enum Reply {
    Own(Response),
    Shared(Arc<Answer>),
}

impl Reply {
    fn response(&self) -> &Response {
        match self {
            Reply::Own(r) => r,
            Reply::Shared(a) => &a.response,
        }
    }
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Own(r)
    }
}

/// Writes one answer within the write timeout.
async fn write(stream: &mut tokio::io::WriteHalf<UnixStream>, resp: &Response, limit: Duration) -> bool {
    let Ok(line) = encode(resp) else { return false };
    write_line(stream, &line, limit).await
}

/// Writes one encoded answer within the write timeout.
async fn write_line(stream: &mut tokio::io::WriteHalf<UnixStream>, line: &[u8], limit: Duration) -> bool {
    matches!(tokio::time::timeout(limit, stream.write_all(line)).await, Ok(Ok(())))
}

/// How reading one request line ended.
enum Line {
    /// A whole line (newline included).
    Whole,
    /// The client closed the connection.
    Closed,
    /// Longer than [`MAX_LINE_BYTES`].
    TooLong,
    /// The shared buffer budget is spent.
    Busy,
    /// The caller's own share of it is spent.
    OwnShare,
}

/// Reads one line into `line`, accounting non-root bytes against the shared budget
/// (`held` tracks what this connection holds).
async fn read_line(
    reader: &mut BufReader<tokio::io::ReadHalf<UnixStream>>,
    line: &mut Vec<u8>,
    shared: &Shared,
    peer: &Peer,
    held: &mut usize,
) -> std::io::Result<Line> {
    loop {
        let chunk = reader.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(if line.is_empty() { Line::Closed } else { Line::Whole });
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if line.len() + take > MAX_LINE_BYTES {
            return Ok(Line::TooLong);
        }
        if peer.uid != 0 {
            if let Err(refused) = shared.buffer(peer.account, take, line.len() + take) {
                return Ok(refused);
            }
            *held += take;
        }
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if done {
            return Ok(Line::Whole);
        }
    }
}

/// Serves one connection: any number of requests, one at a time.
async fn serve(stream: UnixStream, peer: &Peer, shared: &Shared, shutdown: CancellationToken) {
    let limits = shared.limits;
    let root = peer.uid == 0;
    let (rd, mut wr) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(64 * 1024, rd);
    let mut bad = 0;
    loop {
        let mut line = Vec::new();
        let mut held = 0;
        let read = read_line(&mut reader, &mut line, shared, peer, &mut held);
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => None,
            r = tokio::time::timeout(limits.read_timeout, read) => Some(r),
        };
        let refusal = match outcome {
            None => {
                shared.unbuffer(peer.account, held);
                return;
            }
            Some(Err(_)) if line.is_empty() => None,
            Some(Err(_)) => Some(format!("request not completed within {:?}", limits.read_timeout)),
            Some(Ok(Err(_))) | Some(Ok(Ok(Line::Closed))) => {
                shared.unbuffer(peer.account, held);
                return;
            }
            Some(Ok(Ok(Line::TooLong))) => {
                Some(format!("request line exceeds {MAX_LINE_BYTES} bytes; connection closed"))
            }
            Some(Ok(Ok(Line::Busy))) => Some(
                "portd is holding too many large requests from other users; retry in a moment (connection closed)"
                    .to_string(),
            ),
            Some(Ok(Ok(Line::OwnShare))) => Some(format!(
                "your connections hold {} MiB of unfinished requests already (the limit per user); finish or close them (connection closed)",
                limits.per_uid_buffer >> 20
            )),
            Some(Ok(Ok(Line::Whole))) if line.last() != Some(&b'\n') => {
                Some("request ended without a newline".to_string())
            }
            Some(Ok(Ok(Line::Whole))) => None,
        };
        if line.last() != Some(&b'\n') || refusal.is_some() {
            if let Some(msg) = refusal {
                drop(line);
                shared.unbuffer(peer.account, held);
                let _ = write(&mut wr, &Response::error(ErrorKind::Protocol, vec![msg]), limits.write_timeout).await;
            } else {
                shared.unbuffer(peer.account, held);
            }
            return;
        }
        let decoded = decode_request(&line);
        drop(line);
        shared.unbuffer(peer.account, held);
        let reply = match decoded {
            Err(e) => {
                bad += 1;
                let mut msgs = vec![e];
                if bad >= limits.max_bad_lines {
                    msgs.push(format!("{bad} malformed requests in a row; connection closed"));
                }
                shared.published.metrics.request("malformed", "protocol");
                Reply::Own(Response::error(ErrorKind::Protocol, msgs))
            }
            Ok(req) => {
                bad = 0;
                let command = crate::metrics::command_name(&req.command);
                let reply = handle(peer, shared, req.command).await;
                shared.published.metrics.request(command, crate::metrics::result_name(reply.response()));
                reply
            }
        };
        let (own, kept);
        let line: &[u8] = match reply {
            Reply::Own(resp) => match encode(&resp.capped()) {
                Ok(l) => {
                    own = l;
                    &own
                }
                Err(_) => return,
            },
            Reply::Shared(a) => {
                a.encode().await;
                kept = a;
                kept.line()
            }
        };
        if !root {
            // Paced per account: a loop of large answers waits for its turn.
            let wait = shared.pacer.take(peer.account, line.len(), std::time::Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
        let written = write_line(&mut wr, line, limits.write_timeout).await;
        if !written || bad >= limits.max_bad_lines {
            return;
        }
    }
}
