//! The opt-in Prometheus endpoint (`settings.metrics.listen`): `GET /metrics` over
//! HTTP/1.x, one request per connection.
//!
//! It cannot stall the actor: the actor only hands over its plan (as for `portctl
//! status`); the kernel's counters are read here with a netlink socket of the endpoint's
//! own, and encoding and writing happen here too, each bounded by a timeout; at most
//! [`MAX_CONNECTIONS`] scrapes are served at once (more are answered 503 and closed
//! without being read).
//!
//! Who may connect is bounded three ways: peers outside `settings.metrics.allow`
//! (default loopback) are closed unanswered; each peer may hold [`PER_PEER`] connections
//! and all peers together [`MAX_OPEN`], where a loopback peer is its account, whatever
//! address of 127.0.0.0/8 or ::1 it connects from (the uid owning its socket, a
//! subordinate uid counted as the account it belongs to: root's scraper is never counted
//! with another local account's connections, and root's own are outside the total); and
//! a request head must arrive within [`READ_TIMEOUT`], so idle connections free their
//! slot quickly. Requests wait their turn for one of [`MAX_CONNECTIONS`] scrapes in the
//! order they came (root's have [`ROOT_SCRAPES`] of their own), so peers that scrape
//! back to back delay another scraper by their turns, never refuse it.

#![forbid(unsafe_code)]

use crate::actor::{Msg, Published};
use crate::metrics::Format;
use anyhow::Context;
use portd_rules::proto::{Body, Outcome};
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Scrapes served at once.
pub const MAX_CONNECTIONS: usize = 8;
/// Scrapes served at once for root, besides [`MAX_CONNECTIONS`].
pub const ROOT_SCRAPES: usize = 2;
/// Connections open at once, all peers but root's together.
pub const MAX_OPEN: usize = 64;
/// Connections open at once per peer (its address, or for a loopback peer its account).
pub const PER_PEER: usize = 4;
/// Longest request head, its final blank line included.
const MAX_HEAD: usize = 8 * 1024;
/// The request head must arrive within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// The actor must answer, and the scraper take the answer, within this time each.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the endpoint's socket (before privileges are dropped, so a port below 1024
/// works); the error names the address.
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr).with_context(|| {
        format!(
            "binding the metrics listener {addr} (settings.metrics.listen): choose a free address or stop what holds it \
             (under systemd, whose unit forbids IP sockets, enable portd-metrics.socket instead)"
        )
    })?;
    l.set_nonblocking(true).with_context(|| format!("metrics listener {addr}"))?;
    Ok(l)
}

/// A peer as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PeerKey {
    /// A loopback peer: the account owning its socket (every local account may connect
    /// from any address of 127.0.0.0/8).
    Account(u32),
    /// Another host; all loopback peers whose socket could not be found are one.
    Addr(std::net::IpAddr),
}

impl PeerKey {
    fn is_root(self) -> bool {
        self == PeerKey::Account(0)
    }
}

/// Open connections per peer.
#[derive(Default)]
struct Open {
    per_peer: std::collections::HashMap<PeerKey, usize>,
    total: usize,
}

impl Open {
    fn admit(&mut self, key: PeerKey) -> bool {
        let root = key.is_root();
        let mine = self.per_peer.get(&key).copied().unwrap_or(0);
        if mine >= PER_PEER * if root { 4 } else { 1 } || (!root && self.total >= MAX_OPEN) {
            return false;
        }
        *self.per_peer.entry(key).or_default() += 1;
        if !root {
            self.total += 1;
        }
        true
    }
    fn release(&mut self, key: PeerKey) {
        if let Some(n) = self.per_peer.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&key);
            }
        }
        if !key.is_root() {
            self.total = self.total.saturating_sub(1);
        }
    }
}

/// Serves scrapes until `shutdown` is cancelled; `allow` lists the networks scrapers may
/// connect from.
pub async fn run(
    listener: TcpListener,
    actor: Sender<Msg>,
    published: Arc<Published>,
    shutdown: CancellationToken,
    allow: portd_rules::model::MetricsSettings,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let root_slots = Arc::new(Semaphore::new(ROOT_SCRAPES));
    let open = Arc::new(Mutex::new(Open::default()));
    let reader = Arc::new(Mutex::new(None));
    let tracker = TaskTracker::new();
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("metrics listener: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !allow.allows(peer.ip()) {
            // Not in settings.metrics.allow: closed unanswered.
            continue;
        }
        let ip = peer.ip().to_canonical();
        let uid = match (ip.is_loopback(), stream.local_addr()) {
            // The client's socket, found by one exact lookup (not a read of every socket
            // of the namespace, which any local account can make long).
            (true, Ok(local)) => portd_kernel::sockdiag::tcp_uid(peer, local).ok().flatten(),
            _ => None,
        };
        let key = match uid {
            Some(uid) => PeerKey::Account(published.subids.account_of(uid)),
            // (a loopback peer whose socket was not found: one peer whatever its address)
            None if ip.is_loopback() => PeerKey::Addr(std::net::Ipv4Addr::LOCALHOST.into()),
            None => PeerKey::Addr(ip),
        };
        if !open.lock().unwrap_or_else(|p| p.into_inner()).admit(key) {
            let _ = stream.try_write(&response(503, "Service Unavailable", "text/plain", b"too many connections\n"));
            continue;
        }
        let slots = if key.is_root() { root_slots.clone() } else { slots.clone() };
        let (actor, published, reader, open) = (actor.clone(), published.clone(), reader.clone(), open.clone());
        tracker.spawn(async move {
            let answer = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await;
            let reply = match answer {
                Err(_) => response(408, "Request Timeout", "text/plain", b"request not completed in time\n"),
                Ok(Head::Closed) => Vec::new(),
                Ok(Head::TooLong) => {
                    response(431, "Request Header Fields Too Large", "text/plain", b"request head over 8 KiB\n")
                }
                Ok(Head::Malformed) => response(400, "Bad Request", "text/plain", b"malformed request\n"),
                // In turn (the semaphore is first come, first served).
                Ok(Head::Whole(head)) => match tokio::time::timeout(ANSWER_TIMEOUT, slots.acquire_owned()).await {
                    Ok(Ok(_permit)) => route(&head, &actor, &published, &reader).await,
                    _ => response(503, "Service Unavailable", "text/plain", b"too many scrapes at once; retry\n"),
                },
            };
            let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
                stream.write_all(&reply).await?;
                stream.shutdown().await
            })
            .await;
            open.lock().unwrap_or_else(|p| p.into_inner()).release(key);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

/// How reading a request head ended.
enum Head {
    Whole(String),
    Closed,
    TooLong,
    Malformed,
}

/// Reads up to the blank line that ends the head, never more than [`MAX_HEAD`] bytes.
async fn read_head(stream: &mut TcpStream) -> Head {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let room = (MAX_HEAD + 1).saturating_sub(head.len()).min(buf.len());
        let n = match stream.read(&mut buf[..room]).await {
            Ok(0) | Err(_) => return Head::Closed,
            Ok(n) => n,
        };
        // The terminator may straddle two reads: search from just before the new bytes.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + from) {
            if end + 4 > MAX_HEAD {
                return Head::TooLong;
            }
            head.truncate(end);
            return String::from_utf8(head).map_or(Head::Malformed, Head::Whole);
        }
        if head.len() > MAX_HEAD {
            return Head::TooLong;
        }
    }
}

/// The answer to one request head.
async fn route(
    head: &str,
    actor: &Sender<Msg>,
    published: &Arc<Published>,
    reader: &Arc<Mutex<Option<portd_kernel::nft::Backend>>>,
) -> Vec<u8> {
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, target, version) = (first.next(), first.next(), first.next());
    if !version.is_some_and(|v| v.starts_with("HTTP/1.")) || first.next().is_some() {
        return response(400, "Bad Request", "text/plain", b"malformed request line\n");
    }
    let path = target.unwrap_or_default().split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return response(404, "Not Found", "text/plain", b"portd serves only GET /metrics\n");
    }
    if method != Some("GET") {
        return response(405, "Method Not Allowed\r\nAllow: GET", "text/plain", b"only GET /metrics\n");
    }
    let accept = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("accept").then(|| value.trim().to_string())
    });
    let format = Format::from_accept(accept.as_deref());
    let status = match tokio::time::timeout(
        ANSWER_TIMEOUT,
        published.reads.scrape.run("scrape", || crate::server::status_of(actor, reader)),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => return response(503, "Service Unavailable", "text/plain", b"portd is busy; retry\n"),
    };
    match &status.response.result {
        Outcome::Ok(Body::Status(_)) => {}
        Outcome::Ok(_) => return response(500, "Internal Server Error", "text/plain", b"no status\n"),
        Outcome::Error { messages, .. } => {
            let text = format!("reading the kernel's counters failed: {}\n", messages.join("; "));
            return response(500, "Internal Server Error", "text/plain", text.as_bytes());
        }
    }
    let published = published.clone();
    let exposition = move || match &status.response.result {
        Outcome::Ok(Body::Status(s)) => published.metrics.exposition(s, format),
        _ => String::new(),
    };
    match tokio::task::spawn_blocking(exposition).await {
        Ok(text) => response(200, "OK", format.content_type(), text.as_bytes()),
        Err(_) => response(500, "Internal Server Error", "text/plain", b"encoding failed\n"),
    }
}

/// A whole HTTP/1.1 response that closes the connection (`reason` may carry further
/// header lines after the status line).
fn response(code: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}
