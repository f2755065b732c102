//! Wire types of the control protocol: newline-delimited JSON, one request and one
//! response per line, each carrying [`PROTOCOL_VERSION`].

use crate::model::Forward;
use crate::plan::Summary;
use serde::{Deserialize, Serialize};

/// Version carried by every request and response.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line the daemon accepts, newline included.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;
/// Longest answer line a client accepts: a status of 60,000 forwards is about 15 MiB.
pub const MAX_ANSWER_BYTES: usize = 512 * 1024 * 1024;

/// A request line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// Must equal [`PROTOCOL_VERSION`].
    pub version: u32,
    /// What to do.
    pub command: Command,
}

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", deny_unknown_fields)]
pub enum Command {
    /// Daemon state and every forward.
    Status,
    /// Replace the caller's set with the forwards of a rules file.
    Apply {
        /// File name, for diagnostics.
        file: String,
        /// File contents (re-validated by the daemon).
        text: String,
        /// Compute and report the change without applying it.
        dry_run: bool,
        /// Act for another owner (root only).
        owner: Option<String>,
    },
    /// Add one forward to the caller's set.
    Add {
        /// The forward.
        forward: Forward,
        /// Act for another owner (root only).
        owner: Option<String>,
        /// Check and report the change without applying it.
        #[serde(default)]
        dry_run: bool,
        /// When the set already has a forward of this name, replace it (one batch)
        /// instead of refusing.
        #[serde(default)]
        replace: bool,
    },
    /// Remove one forward from the caller's set.
    Remove {
        /// Forward name.
        name: String,
        /// Act for another owner (root only).
        owner: Option<String>,
        /// Check and report the change without applying it.
        #[serde(default)]
        dry_run: bool,
        /// A set without that forward is no error: nothing changes.
        #[serde(default)]
        if_exists: bool,
    },
    /// A set as a rules file.
    Export {
        /// Owner (default: the caller's).
        owner: Option<String>,
    },
    /// Re-read the daemon config (root only).
    Reload {
        /// Report what the config on disk would add, remove and suspend, without
        /// applying it.
        #[serde(default)]
        dry_run: bool,
        /// With `dry_run`: preview this config instead of the file on disk (`portd
        /// --check` sends the file it checked).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<ConfigText>,
    },
    /// What the caller may forward: the grants that apply to it.
    Grants,
    /// The Prometheus exposition (text format 0.0.4), as the metrics endpoint serves it.
    Metrics,
    /// Why traffic may not arrive: findings about every forward.
    Doctor {
        /// The legacy iptables tables loaded in the caller's namespace, which the kernel
        /// shows only to root (`/proc/self/net/ip_tables_names` is 0440): root's portctl
        /// sends them so that the daemon, unprivileged but with CAP_NET_ADMIN, reads those
        /// tables. Taken from uid 0 only; absent, the daemon reads the names itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        legacy_tables: Option<LegacyTables>,
    },
}

/// A daemon config sent to be previewed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigText {
    /// File name, for diagnostics.
    pub file: String,
    /// File contents.
    pub text: String,
}

/// Names of the loaded legacy iptables tables, per family (`None`: unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyTables {
    /// `ip_tables_names`: iptables-legacy.
    pub v4: Option<Vec<String>>,
    /// `ip6_tables_names`: ip6tables-legacy.
    pub v6: Option<Vec<String>>,
}

impl LegacyTables {
    /// The built-in legacy tables; a name outside these is never asked for (asking for
    /// a table by name makes the kernel load its module).
    pub const KNOWN: [&'static str; 5] = ["filter", "nat", "mangle", "raw", "security"];

    /// Reads the names files of this process's namespace (root only): a missing file
    /// means the legacy module is not loaded, no table.
    pub fn read() -> LegacyTables {
        let one = |path: &str| match std::fs::read_to_string(path) {
            Ok(l) => Some(l.split_whitespace().map(str::to_string).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(Vec::new()),
            Err(_) => None,
        };
        LegacyTables { v4: one("/proc/self/net/ip_tables_names"), v6: one("/proc/self/net/ip6_tables_names") }
    }
}

/// Why a request failed; maps to portctl's exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Invalid input (exit 1).
    Invalid,
    /// Conflict with another forward (exit 1).
    Conflict,
    /// The kernel refused the change (exit 1).
    Kernel,
    /// The caller may not do this (exit 4).
    Denied,
    /// Malformed or unsupported request (exit 1).
    Protocol,
    /// Something else failed inside the daemon (exit 1).
    Internal,
}

/// One forward in a status report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardStatus {
    /// Owner.
    pub owner: String,
    /// The forward as applied.
    pub forward: Forward,
    /// The mark the forward's packets get (0: none, as for a steered forward without a
    /// mark of its own).
    pub mark: u32,
    /// Packets counted (client to server direction).
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
    /// `active` (in the kernel) or `suspended` (kept, but out of the kernel).
    #[serde(default)]
    pub state: ForwardState,
    /// Why the forward is suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How its connections reach the target: `steer` (TCP, sk_lookup to the owner's
    /// socket), `nat`, or `steer+nat` (`proto: both`: TCP steered, UDP NATed). Active
    /// forwards only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<String>,
    /// An active forward: whether its target takes its connections now, on every target
    /// port, protocol and family (steered TCP: a socket registered for steering; NAT: a
    /// socket that takes each family of the forward). Absent when it could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listening: Option<bool>,
    /// The distinct `PROTO ADDRESS` of the sockets on its target ports (`tcp [::]`,
    /// `tcp 127.0.0.1`, `udp [::] v6only`), at most 8.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<String>,
}

/// Whether a forward is in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardState {
    /// In the kernel.
    #[default]
    Active,
    /// Kept in the state but out of the kernel until what it needs is allowed again.
    Suspended,
}

impl std::fmt::Display for ForwardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForwardState::Active => "active",
            ForwardState::Suspended => "suspended",
        })
    }
}

/// Daemon state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Daemon version.
    pub daemon_version: String,
    /// nftables table.
    pub table: String,
    /// True when the kernel holds exactly the desired plan.
    pub in_sync: bool,
    /// Times the table was repaired after a foreign change.
    pub repairs: u64,
    /// How TCP forwards reach their target: `steer` or `nat`.
    #[serde(default)]
    pub dispatch: String,
    /// How target ports of user forwards are kept for their owner: `kernel` or `polled`.
    #[serde(default)]
    pub ownership: String,
    /// Why the BPF data plane is not used (dispatch nat, ownership polled), if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_reason: Option<String>,
    /// Steer only: whether raw chains untrack steered connections, which they do while
    /// conntrack runs in the namespace (another program's rules, or portd's NAT forwards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub untracked: Option<bool>,
    /// Every forward.
    pub forwards: Vec<ForwardStatus>,
}

/// Most added, removed or changed forwards listed one by one in an answer.
pub const MAX_LISTED_CHANGES: usize = 500;

impl Body {
    /// A `Changed` answer whose lists are cut to [`MAX_LISTED_CHANGES`] each.
    pub fn changed(mut summary: Summary, dry_run: bool) -> Body {
        let mut omitted = 0;
        let mut cut = |len: usize| {
            omitted += len.saturating_sub(MAX_LISTED_CHANGES);
            len.min(MAX_LISTED_CHANGES)
        };
        let n = cut(summary.added.len());
        summary.added.truncate(n);
        let n = cut(summary.removed.len());
        summary.removed.truncate(n);
        let n = cut(summary.changed.len());
        summary.changed.truncate(n);
        Body::Changed { summary, dry_run, omitted, warnings: Vec::new(), suspended: Vec::new() }
    }
}

/// A forward a change suspends: kept in its owner's set, out of the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// Owner (`user:NAME`).
    pub owner: String,
    /// The forward.
    pub forward: Forward,
    /// Why it may not run.
    pub reason: String,
}

/// What a caller may forward.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantsView {
    /// The caller's user name.
    pub user: String,
    /// The caller's groups (primary and supplementary), as the account database has them.
    pub groups: Vec<String>,
    /// Root is held to no grant.
    pub unrestricted: bool,
    /// `settings.mark`: the mark of a forward without `mark:`.
    pub default_mark: u32,
    /// The grants that name the caller or one of its groups, in config order.
    pub grants: Vec<GrantInfo>,
}

/// One grant as its subject sees it. Ranges are written as in the config (`80`,
/// `8000-8099`, `0x10-0x1f`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantInfo {
    /// `user:NAME` or `group:NAME`: whom the config grants it to.
    pub via: String,
    /// Public ports that may be forwarded.
    pub ports: Vec<String>,
    /// Target ports that may be forwarded to.
    pub to: Vec<String>,
    /// May a forward set `protect: true`.
    pub protect: bool,
    /// May a forward keep `local: true` (redirect the host's own connections).
    pub local: bool,
    /// Marks a forward may carry (effective marks; 0 leaves packets unmarked).
    pub marks: Vec<String>,
    /// Most forwards the caller's set may hold.
    pub max_forwards: u32,
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Body {
    /// Answer to status.
    Status(Status),
    /// Answer to apply, add, remove, reload.
    Changed {
        /// What changed (or would change, for a dry run), at most [`MAX_LISTED_CHANGES`]
        /// entries per kind.
        summary: Summary,
        /// Nothing was applied.
        dry_run: bool,
        /// Changes left out of `summary` to keep the answer small.
        #[serde(default)]
        omitted: usize,
        /// Things the caller should know that did not stop the change (e.g. nothing
        /// listens on a target port yet).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
        /// Forwards the change takes out of the kernel but keeps, with the reason (a
        /// reload under narrower grants); they are not listed in `summary.removed`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        suspended: Vec<Suspension>,
    },
    /// Answer to grants.
    Grants(GrantsView),
    /// Answer to export: a rules file.
    Export {
        /// Owner exported.
        owner: String,
        /// Its forwards.
        forwards: Vec<Forward>,
    },
    /// Answer to metrics.
    Metrics {
        /// The exposition in the Prometheus text format.
        text: String,
    },
    /// Answer to doctor, most severe first.
    Doctor {
        /// What is wrong, with the fix.
        findings: Vec<crate::doctor::Finding>,
    },
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Always [`PROTOCOL_VERSION`].
    pub version: u32,
    /// The outcome.
    pub result: Outcome,
}

/// Success or a failure with its causes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Success.
    Ok(Body),
    /// Failure.
    Error {
        /// Class of failure.
        kind: ErrorKind,
        /// One cause per entry; at most [`MAX_ERROR_MESSAGES`] and a last one counting the
        /// rest. For an invalid file, each is `line:column: path: message` and the file is
        /// named once, in `file`.
        messages: Vec<String>,
        /// The invalid file the messages are located in (bounded in length, control
        /// characters escaped); absent for other failures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        file: Option<String>,
        /// For an invalid file, its problems as values, in `messages`' order and under the
        /// same cap: what clients read instead of parsing `messages`. Absent for other
        /// failures (and from daemons before it), where `messages` is all there is.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        diagnostics: Vec<Problem>,
    },
}

/// One located problem of the file an error answer names (in `file`, once).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// Field path such as `forwards[0].port`; empty for the whole document.
    #[serde(default)]
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Problem {
    /// The problem of a diagnostic, without its file.
    pub fn of(d: &crate::Diagnostic) -> Problem {
        Problem { line: d.line, column: d.column, path: d.path.clone(), message: d.message.clone() }
    }
    /// The diagnostic of this problem in `file`.
    pub fn in_file(self, file: &str) -> crate::Diagnostic {
        crate::Diagnostic {
            file: file.to_string(),
            line: self.line,
            column: self.column,
            path: self.path,
            message: self.message,
        }
    }
}

/// Most causes an error answer lists, the last counting those left out: as many as a
/// file's listed problems and its summary line.
pub const MAX_ERROR_MESSAGES: usize = crate::load::MAX_DIAGNOSTICS + 1;

impl Response {
    /// A success.
    pub fn ok(body: Body) -> Response {
        Response { version: PROTOCOL_VERSION, result: Outcome::Ok(body) }
    }
    /// A failure.
    pub fn error(kind: ErrorKind, messages: Vec<String>) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            result: Outcome::Error { kind, messages, file: None, diagnostics: Vec::new() },
        }
    }
    /// A file refused as invalid: its name once (as the caller bounded it, see
    /// [`crate::diag::bounded_file_name`]), and its problems without it, as text (for
    /// clients before `diagnostics`) and as values.
    pub fn invalid_file(file: String, diagnostics: &crate::Diagnostics) -> Response {
        Response {
            version: PROTOCOL_VERSION,
            result: Outcome::Error {
                kind: ErrorKind::Invalid,
                messages: diagnostics.0.iter().map(|d| d.located()).collect(),
                file: Some(file),
                diagnostics: diagnostics.0.iter().map(Problem::of).collect(),
            },
        }
    }
    /// The answer with at most [`MAX_ERROR_MESSAGES`] causes and as many problems, the
    /// rest counted ("… and 2,480 more"), so an answer's size does not grow with the
    /// number of problems.
    pub fn capped(mut self) -> Response {
        if let Outcome::Error { messages, diagnostics, .. } = &mut self.result {
            if messages.len() > MAX_ERROR_MESSAGES {
                let more = messages.len() - (MAX_ERROR_MESSAGES - 1);
                messages.truncate(MAX_ERROR_MESSAGES - 1);
                messages.push(format!("… and {} more", crate::load::thousands(more)));
            }
            if diagnostics.len() > MAX_ERROR_MESSAGES {
                let more = diagnostics.len() - (MAX_ERROR_MESSAGES - 1);
                diagnostics.truncate(MAX_ERROR_MESSAGES - 1);
                let message = format!("… and {} more", crate::load::thousands(more));
                diagnostics.push(Problem { line: 0, column: 0, path: String::new(), message });
            }
        }
        self
    }
}

/// Decodes one request line, checking its version.
pub fn decode_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_LINE_BYTES {
        return Err(format!("request line is {} bytes; the limit is {MAX_LINE_BYTES}", line.len()));
    }
    let req: Request = serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    if req.version != PROTOCOL_VERSION {
        return Err(format!(
            "protocol version {} is not supported; this daemon speaks version {PROTOCOL_VERSION}",
            req.version
        ));
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad_file(n: usize) -> String {
        let mut t = String::from("version: 1\nforwards:\n");
        for i in 0..n {
            t.push_str(&format!("  - {{name: f{i}, port: 70000, to: 0}}\n"));
        }
        t
    }

    #[test]
    fn an_invalid_file_is_answered_with_its_problems_as_values_and_as_text() {
        let text = bad_file(3);
        let d = crate::parse_rules("rules.yaml", &text).expect_err("ports out of range");
        let r = Response::invalid_file("rules.yaml".into(), &d).capped();
        let Outcome::Error { kind, messages, file, diagnostics } = &r.result else { panic!("{r:?}") };
        assert_eq!((*kind, file.as_deref()), (ErrorKind::Invalid, Some("rules.yaml")));
        assert_eq!(diagnostics.len(), messages.len());
        for (p, m) in diagnostics.iter().zip(messages) {
            assert!(p.line > 0 && p.column > 0 && !p.path.is_empty(), "{p:?}");
            assert_eq!(format!("rules.yaml:{m}"), p.clone().in_file("rules.yaml").to_string());
        }
        assert_eq!(d.0.into_iter().map(|d| Problem::of(&d)).collect::<Vec<_>>(), *diagnostics);
        let line = serde_json::to_string(&r).expect("json");
        assert_eq!(line.matches("rules.yaml").count(), 1, "the file is named once: {line}");
        assert_eq!(serde_json::from_str::<Response>(&line).expect("decodes"), r);
    }

    #[test]
    fn problems_are_capped_like_messages_and_the_answer_stays_smaller_than_the_file() {
        let text = bad_file(1_300);
        let d = crate::parse_rules("rules.yaml", &text).expect_err("ports out of range");
        let r = Response::invalid_file("rules.yaml".into(), &d).capped();
        let Outcome::Error { messages, diagnostics, .. } = &r.result else { panic!("{r:?}") };
        assert!(messages.len() <= MAX_ERROR_MESSAGES && diagnostics.len() <= MAX_ERROR_MESSAGES);
        let last = diagnostics.last().expect("problems");
        assert_eq!((last.line, last.message.contains("more")), (0, true), "{last:?}");
        let mut many = d.clone();
        many.0.extend(d.0.iter().cloned());
        let r2 = Response::invalid_file("rules.yaml".into(), &many).capped();
        let Outcome::Error { messages, diagnostics, .. } = &r2.result else { panic!("{r2:?}") };
        assert_eq!((messages.len(), diagnostics.len()), (MAX_ERROR_MESSAGES, MAX_ERROR_MESSAGES));
        assert_eq!(diagnostics.last().map(|p| p.message.as_str()), Some(messages[MAX_ERROR_MESSAGES - 1].as_str()));
        let line = serde_json::to_string(&r).expect("json");
        assert!(line.len() < text.len(), "answer {} B, file {} B", line.len(), text.len());
    }

    #[test]
    fn other_failures_and_older_answers_carry_no_problems() {
        let r = Response::error(ErrorKind::Denied, vec!["no".into()]);
        let line = serde_json::to_string(&r).expect("json");
        assert_eq!(line, r#"{"version":1,"result":{"error":{"kind":"denied","messages":["no"]}}}"#);
        let old = r#"{"version":1,"result":{"error":{"kind":"invalid","messages":["3:5: forwards[0].port: bad"],"file":"r.yaml"}}}"#;
        let r: Response = serde_json::from_str(old).expect("an answer of an older daemon");
        assert!(matches!(r.result, Outcome::Error { diagnostics, .. } if diagnostics.is_empty()));
    }
}
