//! Human and JSON output of daemon answers.

use portd_rules::proto::{Body, Status};
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

fn status_table(s: &Status) -> String {
    let mut rows = vec![["OWNER", "NAME", "PORT", "TO", "PROTO", "FAMILY", "PACKETS", "BYTES", "STATE"]
        .map(String::from)
        .to_vec()];
    for f in &s.forwards {
        rows.push(vec![
            f.owner.clone(),
            f.forward.name.clone(),
            f.forward.port.to_string(),
            f.forward.to.to_string(),
            f.forward.proto.to_string(),
            f.forward.family.to_string(),
            f.packets.to_string(),
            human_bytes(f.bytes),
            match &f.reason {
                Some(r) => format!("{} ({r})", f.state),
                None => f.state.to_string(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..9).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = format!(
        "portd {}  table inet {}  kernel {}  repairs {}\n\n",
        s.daemon_version,
        s.table,
        if s.in_sync { "in sync" } else { "OUT OF SYNC" },
        s.repairs
    );
    if s.forwards.is_empty() {
        out.push_str("no forwards\n");
        return out;
    }
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if (6..8).contains(&i) {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Prints an answer for a terminal, or as JSON.
pub fn print_body(body: &Body, json: bool) {
    if json {
        println!("{}", serde_json::to_string_pretty(body).unwrap_or_default());
        return;
    }
    match body {
        Body::Status(s) => print!("{}", status_table(s)),
        Body::Changed { summary, dry_run, omitted, warnings } => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            if *dry_run {
                println!("dry run, nothing applied:");
            }
            print!("{summary}");
            if *omitted > 0 {
                println!("... and {omitted} more change(s) not listed");
            }
        }
        Body::Export { owner, forwards } => {
            println!("# owner: {owner}");
            let doc = RulesFile { version: 1, forwards: forwards.clone() };
            print!("{}", serde_yaml::to_string(&doc).unwrap_or_default());
        }
    }
}
