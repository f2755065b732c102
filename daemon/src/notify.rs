//! systemd notification: READY=1 once the rules are in the kernel, STATUS= with a
//! one-line summary, STOPPING=1 on stop. Without NOTIFY_SOCKET these do nothing.
#![forbid(unsafe_code)]

use sd_notify::NotifyState;

/// Tells systemd the service is ready.
pub fn ready(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Updates the one-line status.
pub fn status(status: &str) {
    let _ = sd_notify::notify(false, &[NotifyState::Status(status)]);
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Tells systemd a reload is in progress.
pub fn reloading() {
    let _ = sd_notify::notify(false, &[NotifyState::Reloading]);
}
