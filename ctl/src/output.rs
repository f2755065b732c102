//! Human and JSON output of daemon answers.

use portd_rules::proto::{Body, ForwardStatus, GrantsView, Status};
use portd_rules::RulesFile;

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Columns of `status`: (header, right-aligned, cell).
type Column = (&'static str, bool, fn(&ForwardStatus) -> String);

fn list<T: ToString>(v: &[T]) -> String {
    if v.is_empty() {
        "any".into()
    } else {
        v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",")
    }
}

const NARROW: &[Column] = &[
    ("OWNER", false, |f| f.owner.clone()),
    ("NAME", false, |f| f.forward.name.clone()),
    ("PORT", false, |f| f.forward.port.to_string()),
    ("TO", false, |f| f.forward.to.to_string()),
    ("PROTO", false, |f| f.forward.proto.to_string()),
    ("FAMILY", false, |f| f.forward.family.to_string()),
    ("DISPATCH", false, |f| f.dispatch.clone().unwrap_or_else(|| "-".into())),
];
const COUNTERS: &[Column] = &[("PACKETS", true, |f| f.packets.to_string()), ("BYTES", true, |f| human_bytes(f.bytes))];
const WIDE: &[Column] = &[
    ("MARK", false, |f| if f.mark == 0 { "none".into() } else { format!("{:#x}", f.mark) }),
    ("LOCAL", false, |f| if f.forward.local { "yes".into() } else { "no".into() }),
    ("PROTECT", false, |f| if f.forward.protect { "yes".into() } else { "no".into() }),
    ("INTERFACES", false, |f| list(&f.forward.interfaces)),
    ("SOURCES", false, |f| list(&f.forward.sources)),
    ("LISTENING", false, |f| if f.listeners.is_empty() { "-".into() } else { f.listeners.join(", ") }),
];
const STATE: &[Column] = &[("STATE", false, |f| match (&f.reason, f.listening) {
    (Some(r), _) => format!("{} ({r})", f.state),
    (None, Some(false)) if f.listeners.is_empty() => format!("{} (nothing listens on {})", f.state, f.forward.to),
    (None, Some(false)) => format!("{} (not on every family: {})", f.state, f.listeners.join(", ")),
    (None, _) => f.state.to_string(),
})];
const DESCRIPTION: &[Column] = &[("DESCRIPTION", false, |f| f.forward.description.clone().unwrap_or_default())];

/// The status as a table; `wide` adds the columns that restrict a forward.
pub fn status_table(s: &Status, wide: bool) -> String {
    let mut cols: Vec<&Column> = NARROW.iter().collect();
    if wide {
        cols.extend(WIDE);
    }
    cols.extend(COUNTERS);
    cols.extend(STATE);
    if wide {
        cols.extend(DESCRIPTION);
    }
    let mut rows: Vec<Vec<String>> = vec![cols.iter().map(|c| c.0.to_string()).collect()];
    // Cells hold what clients wrote (names of owners, descriptions, reasons quoting them):
    // control and format characters are escaped, so no cell can break a row, reorder what
    // the terminal shows (bidi overrides) or hide text.
    rows.extend(
        s.forwards.iter().map(|f| cols.iter().map(|c| portd_rules::text::escape(&(c.2)(f)).into_owned()).collect()),
    );
    let widths: Vec<usize> =
        (0..cols.len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = format!(
        "portd {}  table inet {}  kernel {}  repairs {}\ndispatch {}  ownership {}{}{}\n\n",
        s.daemon_version,
        s.table,
        if s.in_sync { "in sync" } else { "OUT OF SYNC" },
        s.repairs,
        if s.dispatch.is_empty() { "nat" } else { &s.dispatch },
        if s.ownership.is_empty() { "polled" } else { &s.ownership },
        s.dataplane_reason.as_deref().map(|r| format!("  ({r})")).unwrap_or_default(),
        if s.untracked == Some(true) { "  untracked (conntrack runs here)" } else { "" },
    );
    if s.forwards.is_empty() {
        out.push_str("no forwards\n");
        return out;
    }
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&cols)
            .zip(&widths)
            .map(|((c, col), w)| if col.1 { format!("{c:>w$}") } else { format!("{c:<w$}") })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Writes `text` to stdout. A reader that went away (`portctl status | head -1`) ends
/// portctl quietly with success, as it ends `ls` or `rg`, instead of a panic; another
/// error ends it with exit 1 and says so.
pub fn out(text: impl AsRef<str>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_all(text.as_ref().as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("portctl: writing the answer to stdout: {e}");
        std::process::exit(1);
    }
}

/// Prints an answer for a terminal, or as JSON (see [`crate::json`]).
pub fn print_body(body: &Body, json: bool, wide: bool) {
    if json {
        crate::json::print(&crate::json::body(body));
        return;
    }
    match body {
        Body::Status(s) => out(status_table(s, wide)),
        Body::Changed { summary, dry_run, omitted, warnings, suspended } => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            if *dry_run {
                out("dry run, nothing applied:\n");
            }
            if summary.is_empty() && !suspended.is_empty() {
                // "no changes" would hide the suspensions listed below.
            } else {
                out(summary.to_string());
            }
            for s in suspended {
                let f = &s.forward;
                out(format!("! {}/{}: {} -> {} suspended ({})\n", s.owner, f.name, f.port, f.to, s.reason));
            }
            if *omitted > 0 {
                out(format!("... and {omitted} more change(s) not listed\n"));
            }
        }
        Body::Export { owner, forwards } => {
            out(format!("# owner: {owner}\n"));
            let doc = RulesFile { version: 1, forwards: forwards.clone() };
            out(serde_yaml::to_string(&doc).unwrap_or_default());
        }
        Body::Metrics { text } => out(text),
        Body::Grants(g) => out(grants_text(g)),
        Body::Doctor { findings } => out(doctor_text(findings)),
    }
}

/// `portctl grants` for a terminal: who the caller is, then one block per grant.
pub fn grants_text(g: &GrantsView) -> String {
    let mut out = if g.groups.is_empty() {
        format!("user {}\n", g.user)
    } else {
        format!("user {} (groups {})\n", g.user, g.groups.join(", "))
    };
    if g.unrestricted {
        out.push_str("root is held to no grant: any port, target, protect, local and mark\n");
    }
    if g.grants.is_empty() {
        if !g.unrestricted {
            out.push_str("no grant names you or one of your groups: you may not forward any port (ask an operator to add one to /etc/portd/portd.yaml)\n");
        }
        return out;
    }
    for (i, x) in g.grants.iter().enumerate() {
        let yes = |b: bool| if b { "allowed" } else { "not allowed" };
        out.push_str(&format!(
            "\ngrant {} (to {})\n  ports:        {}\n  to:           {}\n  protect:      {}\n  local:        {}\n  marks:        {}\n  max_forwards: {}\n",
            i + 1,
            x.via,
            x.ports.join(", "),
            x.to.join(", "),
            yes(x.protect),
            yes(x.local),
            x.marks.join(", "),
            x.max_forwards
        ));
    }
    if g.grants.len() > 1 {
        out.push_str(
            "\na forward is allowed when one grant allows all of it; your set may hold the largest max_forwards\n",
        );
    }
    out
}

/// `portctl doctor` for a terminal: one block per finding, most severe first, the fix
/// on its own line.
pub fn doctor_text(findings: &[portd_rules::doctor::Finding]) -> String {
    if findings.is_empty() {
        return "no problems found\n".into();
    }
    let mut sorted = findings.to_vec();
    portd_rules::doctor::sort(&mut sorted);
    let mut out = String::new();
    for f in &sorted {
        let forward = f.forward.as_deref().map(|n| format!(" {n}")).unwrap_or_default();
        out.push_str(&format!("{} [{}]{forward}\n  {}\n  fix: {}\n\n", f.severity, f.check, f.message, f.fix));
    }
    let errors = sorted.iter().filter(|f| f.severity == portd_rules::doctor::Severity::Error).count();
    out.push_str(&format!("{} finding(s), {errors} error(s)\n", sorted.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use portd_rules::model::PortRange;
    use portd_rules::proto::ForwardState;
    use portd_rules::Forward;

    #[test]
    fn status_wide_prints_no_raw_control_or_format_character() {
        // A description persisted before such text was refused, and a reason quoting it.
        let mut forward = Forward::new("web", PortRange::single(80), PortRange::single(8080));
        forward.description = Some("shop \u{202E}gnp.exe\u{2028}x\r\nportd 9.9 in sync\u{2066}".into());
        let status = Status {
            daemon_version: "0.1.0".into(),
            table: "portd".into(),
            in_sync: true,
            repairs: 0,
            dispatch: "steer".into(),
            ownership: "kernel".into(),
            dataplane_reason: None,
            untracked: None,
            forwards: vec![ForwardStatus {
                owner: "user:web".into(),
                forward,
                mark: 1,
                packets: 0,
                bytes: 0,
                state: ForwardState::Suspended,
                reason: Some("invalid: \u{202E}\u{7}".into()),
                dispatch: None,
                listening: None,
                listeners: Vec::new(),
            }],
        };
        let table = status_table(&status, true);
        assert!(!table.chars().any(|c| c != '\n' && portd_rules::text::is_unprintable(c)), "{table:?}");
        assert_eq!(table.lines().count(), 5, "two header lines, a blank line, the header row and one row: {table}");
        assert!(table.contains("shop \\u{202e}gnp.exe\\u{2028}x\\r\\nportd 9.9 in sync\\u{2066}"), "{table}");
        assert!(table.contains("invalid: \\u{202e}\\u{7}"), "{table}");
    }
}
