//! Coalesced reads: concurrent expensive reads of one kind (doctor, other users'
//! status, metrics scrapes) share one kernel dump and one result. The first reader
//! starts the read; whoever arrives while it runs waits for the same answer; the next
//! reader after it finished starts a new one. If the reader that started it goes away,
//! a waiting one carries the read on.
//!
//! The result is shared encoded too: its answer line is made once, off the async
//! workers ([`Answer::encode`]), and every reader writes the same bytes. A doctor's answer at 30,000 forwards
//! is several MB of JSON; encoding it for every reader of a loop was what let users
//! without a grant starve root's status of CPU.

#![forbid(unsafe_code)]

use portd_rules::proto::{ErrorKind, Response};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::OnceCell;

/// One read's result, shared by its readers, with its answer line made once.
#[derive(Debug)]
pub struct Answer {
    /// The result.
    pub response: Response,
    line: OnceLock<Vec<u8>>,
}

impl Answer {
    /// Wraps a result.
    pub fn new(response: Response) -> Answer {
        Answer { response, line: OnceLock::new() }
    }

    /// The answer as one protocol line (newline included), encoded on first use.
    pub fn line(&self) -> &[u8] {
        self.line.get_or_init(|| encode_line(&self.response))
    }

    /// Encodes the line on a blocking thread if no reader did yet: the async workers stay
    /// free for root's requests while a large answer is made. Readers arriving meanwhile
    /// wait for the same encoding.
    pub async fn encode(self: &Arc<Self>) {
        if self.line.get().is_none() {
            let a = self.clone();
            let _ = tokio::task::spawn_blocking(move || {
                a.line();
            })
            .await;
        }
    }
}

/// `response` as one protocol line; an answer that cannot be encoded becomes an error line.
pub fn encode_line(response: &Response) -> Vec<u8> {
    let mut line = serde_json::to_vec(response).unwrap_or_else(|e| {
        let r = Response::error(ErrorKind::Internal, vec![format!("encoding the answer failed: {e}")]);
        serde_json::to_vec(&r).unwrap_or_default()
    });
    line.push(b'\n');
    line
}

/// One kind of read in flight, if any.
#[derive(Debug, Default)]
pub struct Flight {
    slot: Mutex<Option<Arc<OnceCell<Arc<Answer>>>>>,
    /// Reads started (kernel dumps).
    started: AtomicU64,
    /// The last answer and when its read ended, handed out again within `reuse`.
    last: Mutex<Option<(std::time::Instant, Arc<Answer>)>>,
}

impl Flight {
    /// The answer of the read in flight, or of one `read` started now.
    pub async fn run<F, Fut>(&self, kind: &'static str, read: F) -> Arc<Answer>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Response>,
    {
        self.run_reusing(kind, std::time::Duration::ZERO, read).await
    }

    /// [`Flight::run`], answering with the last result while it is younger than `reuse`:
    /// callers in a loop then cost one read per `reuse`, not one after another.
    pub async fn run_reusing<F, Fut>(&self, kind: &'static str, reuse: std::time::Duration, read: F) -> Arc<Answer>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Response>,
    {
        if !reuse.is_zero() {
            let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, r)) = last.as_ref().filter(|(at, _)| at.elapsed() < reuse) {
                return r.clone();
            }
        }
        let cell = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| Arc::new(OnceCell::new())).clone()
        };
        let answer = cell
            .get_or_init(|| async {
                let n = self.started.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(read = kind, started = n, "coalesced read: {kind} read from the kernel ({n} so far)");
                Arc::new(Answer::new(read().await))
            })
            .await
            .clone();
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &cell)) {
            *slot = None;
            if !reuse.is_zero() {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((std::time::Instant::now(), answer.clone()));
            }
        }
        answer
    }
}

/// How long a doctor's answer serves later doctors: a diagnosis, not a live view.
pub const DOCTOR_REUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The coalesced reads of the daemon.
#[derive(Debug, Default)]
pub struct Reads {
    /// `doctor`, for every caller (its answer does not depend on who asks); a result is
    /// handed out again for [`DOCTOR_REUSE`].
    pub doctor: Flight,
    /// `status` and `metrics` requests of users other than root (root reads fresh).
    pub status: Flight,
    /// Scrapes of the metrics endpoint.
    pub scrape: Flight,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_readers_share_one_read() {
        let f = Arc::new(Flight::default());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                f.run("test", || async {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    Response::error(ErrorKind::Internal, vec!["x".into()])
                })
                .await
            }));
        }
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.expect("reader"));
        }
        assert!(answers.iter().all(|a| Arc::ptr_eq(a, &answers[0])), "one answer, shared");
        assert!(answers[0].line().ends_with(b"\n"), "encoded as one line");
        assert_eq!(f.started.load(Ordering::Relaxed), 1);
        f.run("test", || async { Response::error(ErrorKind::Internal, vec![]) }).await;
        assert_eq!(f.started.load(Ordering::Relaxed), 2, "a later reader reads again");
    }
}
