//! Bind events of watched ports, from the `events` ring buffer.

#![forbid(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd};

use super::{BindEvent, Dataplane};

impl Dataplane {
    /// Readable (epoll, tokio `AsyncFd`) when events are waiting; then call
    /// [`Dataplane::drain_events`].
    pub fn events_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// Takes every waiting event (binds of a watched public port by a uid
    /// other than its forward's owner; the bind itself succeeded).
    pub fn drain_events(&mut self) -> Vec<BindEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            out.extend(BindEvent::parse(&item));
        }
        out
    }
}
