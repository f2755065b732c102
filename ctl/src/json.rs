//! `--json` output: one shape per kind of answer, always an object on stdout with `ok`.
//!
//! - failure (any command): `{"ok": false, "error": {"kind", "messages": [...],
//!   "diagnostics": [{"file", "line", "column", "path", "message"}]}}`
//! - `check`: `{"ok": true, "file", "forwards": N}`
//! - `status`: `{"ok": true, "daemon_version", "table", "in_sync", "repairs", "forwards": [...]}`
//! - `apply`, `diff`, `add`, `remove`, `reload`: `{"ok": true, "dry_run", "added": [...],
//!   "removed": [...], "changed": [{"owner", "name", "old", "new"}], "suspended": [{"owner",
//!   "name", "forward", "reason"}], "omitted", "warnings": [...]}`
//! - `grants`: `{"ok": true, "user", "groups", "unrestricted", "default_mark", "grants":
//!   [{"via", "ports", "to", "protect", "local", "marks", "max_forwards"}]}`
//! - `export`: `{"ok": true, "owner", "forwards": [...]}`
//! - `plan`: `{"ok": true, "plan": {...}}`
//!
//! The wire protocol keeps its own shapes; this module is the only place that maps them.

use crate::Failure;
use portd_rules::plan::PlacedForward;
use portd_rules::proto::Body;
use serde_json::{json, Value};

/// Prints one JSON document on stdout.
pub fn print(v: &Value) {
    crate::output::out(serde_json::to_string_pretty(v).unwrap_or_default() + "\n");
}

/// A forward as placed by an owner: its owner, the forward and its effective mark.
fn placed(p: &PlacedForward) -> Value {
    json!({"owner": p.owner, "name": p.forward.name, "forward": p.forward, "mark": p.mark})
}

/// A successful answer of the daemon.
pub fn body(b: &Body) -> Value {
    match b {
        Body::Status(s) => {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("ok".into(), Value::Bool(true));
            }
            v
        }
        Body::Changed { summary, dry_run, omitted, warnings, suspended } => json!({
            "ok": true,
            "dry_run": dry_run,
            "added": summary.added.iter().map(placed).collect::<Vec<_>>(),
            "removed": summary.removed.iter().map(placed).collect::<Vec<_>>(),
            "changed": summary.changed.iter().map(|(old, new)| json!({
                "owner": new.owner,
                "name": new.forward.name,
                "old": placed(old),
                "new": placed(new),
            })).collect::<Vec<_>>(),
            "suspended": suspended.iter().map(|s| json!({
                "owner": s.owner,
                "name": s.forward.name,
                "forward": s.forward,
                "reason": s.reason,
            })).collect::<Vec<_>>(),
            "omitted": omitted,
            "warnings": warnings,
        }),
        Body::Grants(g) => {
            let mut v = serde_json::to_value(g).unwrap_or(Value::Null);
            if let Some(m) = v.as_object_mut() {
                m.insert("ok".into(), Value::Bool(true));
            }
            v
        }
        Body::Export { owner, forwards } => json!({"ok": true, "owner": owner, "forwards": forwards}),
        Body::Metrics { text } => json!({"ok": true, "metrics": text}),
        Body::Doctor { findings } => json!({"ok": true, "findings": findings}),
    }
}

/// A failure of any command.
pub fn failure(f: &Failure) -> Value {
    let mut error = json!({"kind": f.kind, "messages": f.lines});
    if let Some(d) = &f.diagnostics {
        error["diagnostics"] = json!(d);
    }
    json!({"ok": false, "error": error})
}
