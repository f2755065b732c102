//! `portd --remove-table`: deletes portd's table without a running daemon, for package
//! removal and for operators who stopped portd and want its rules gone.
//!
//! The shipped config keeps the rules in the kernel on every exit so that restarts and
//! upgrades drop no connection; this is the explicit removal that goes with it.

#![forbid(unsafe_code)]

use anyhow::Context;
use portd_kernel::nft::Backend;
use portd_rules::Plan;
use std::path::{Path, PathBuf};

/// The one way to stop portd for good: both units, or the socket starts it again at the
/// next `portctl` call (a metrics cron job, say). Said the same in the README, portd(8)
/// and the shipped config.
pub const STOP_BOTH: &str = "systemctl stop portd.socket portd.service";

/// Which table to remove (`--table` when given, else `settings.table` of the config), and
/// the control socket whose directory holds the running portd's lock (`--socket`, else
/// `settings.socket.path`).
pub fn target(config: &Path, table: Option<&str>, socket: Option<&Path>) -> anyhow::Result<(String, PathBuf)> {
    let parsed = std::fs::read_to_string(config)
        .ok()
        .and_then(|text| portd_rules::parse_config(&config.display().to_string(), &text).ok());
    let socket = socket
        .map(Path::to_path_buf)
        .or_else(|| parsed.as_ref().map(|c| PathBuf::from(&c.settings.socket.path)))
        .unwrap_or_else(|| PathBuf::from(portd_rules::Settings::default().socket.path));
    if let Some(t) = table {
        return Ok((t.to_string(), socket));
    }
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading {} (or name the table with --table NAME)", config.display()))?;
    let config = portd_rules::parse_config(&config.display().to_string(), &text)
        .map_err(|d| anyhow::anyhow!("{d}\n(fix the config, or name the table with --table NAME)"))?;
    Ok((config.settings.table, socket))
}

/// Refuses while a portd holds `table` (its lock next to `socket`): it would put the
/// table back within milliseconds, and the removal would only look done.
pub fn refuse_if_running(table: &str, socket: &Path) -> anyhow::Result<()> {
    match crate::lock::holder_of(socket, table) {
        None => Ok(()),
        Some(pid) => {
            let who = if pid.is_empty() { "a running portd".to_string() } else { format!("portd pid {pid}") };
            anyhow::bail!(
                "table inet {table} is held by {who}, which would put it back at once; nothing was removed. Stop portd and its socket first (the socket starts portd again at the next portctl call), then remove the table:\n    {STOP_BOTH} && portd --remove-table"
            )
        }
    }
}

/// Deletes `inet <table>` in one netlink batch. Returns false when there was no such table.
/// A running portd would put the table back at once: stop it first.
pub fn remove(table: &str) -> anyhow::Result<bool> {
    let backend = Backend::new(table);
    let hint = || format!("reading table inet {table} (needs root or CAP_NET_ADMIN)");
    let present = backend.read(&Plan::empty(table, 0)).with_context(hint)?.is_some();
    if present {
        backend.remove().with_context(|| format!("removing table inet {table} (needs root or CAP_NET_ADMIN)"))?;
    }
    Ok(present)
}
