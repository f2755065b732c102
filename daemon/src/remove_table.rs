//! `portd --remove-table`: deletes portd's table without a running daemon, for package
//! removal and for operators who stopped portd and want its rules gone.
//!
//! The shipped config keeps the rules in the kernel on every exit so that restarts and
//! upgrades drop no connection; this is the explicit removal that goes with it.

use anyhow::Context;
use portd_kernel::nft::Backend;
use portd_rules::Plan;
use std::path::Path;

/// Which table to remove: `--table` when given, else `settings.table` of the config.
pub fn table_name(config: &Path, table: Option<&str>) -> anyhow::Result<String> {
    if let Some(t) = table {
        return Ok(t.to_string());
    }
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("reading {} (or name the table with --table NAME)", config.display()))?;
    let config = portd_rules::parse_config(&config.display().to_string(), &text)
        .map_err(|d| anyhow::anyhow!("{d}\n(fix the config, or name the table with --table NAME)"))?;
    Ok(config.settings.table)
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
