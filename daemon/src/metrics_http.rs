//! The opt-in Prometheus endpoint (`settings.metrics.listen`): `GET /metrics` over
//! HTTP/1.x, one request per connection.
//!
//! It cannot stall the actor: the actor only hands over its plan (as for `portctl
//! status`); the kernel's counters are read here with a netlink socket of the endpoint's
//! own, and encoding and writing happen here too, each bounded by a timeout; at most
//! [`MAX_CONNECTIONS`] scrapes are served at once (more are answered 503 and closed
//! without being read).

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
/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// The request head must arrive within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
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

/// Serves scrapes until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, actor: Sender<Msg>, published: Arc<Published>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let reader = Arc::new(Mutex::new(None));
    let tracker = TaskTracker::new();
    loop {
        let mut stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("metrics listener: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let _ =
                stream.try_write(&response(503, "Service Unavailable", "text/plain", b"too many scrapes at once\n"));
            continue;
        };
        let (actor, published, reader) = (actor.clone(), published.clone(), reader.clone());
        tracker.spawn(async move {
            let answer = tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await;
            let reply = match answer {
                Err(_) => response(408, "Request Timeout", "text/plain", b"request not completed in time\n"),
                Ok(None) => response(400, "Bad Request", "text/plain", b"malformed request\n"),
                Ok(Some(head)) => route(&head, &actor, &published, &reader).await,
            };
            let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
                stream.write_all(&reply).await?;
                stream.shutdown().await
            })
            .await;
            drop(permit);
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
}

/// Reads up to the blank line that ends the head; `None` when it is too long or the
/// peer closed first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return String::from_utf8(head).ok();
        }
        if head.len() > MAX_HEAD {
            return None;
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
    let status = match tokio::time::timeout(ANSWER_TIMEOUT, crate::server::status_of(actor, reader)).await {
        Ok(r) => r,
        Err(_) => return response(503, "Service Unavailable", "text/plain", b"portd is busy; retry\n"),
    };
    let status = match status.result {
        Outcome::Ok(Body::Status(s)) => s,
        Outcome::Ok(_) => return response(500, "Internal Server Error", "text/plain", b"no status\n"),
        Outcome::Error { messages, .. } => {
            let text = format!("reading the kernel's counters failed: {}\n", messages.join("; "));
            return response(500, "Internal Server Error", "text/plain", text.as_bytes());
        }
    };
    let published = published.clone();
    match tokio::task::spawn_blocking(move || published.metrics.exposition(&status, format)).await {
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
