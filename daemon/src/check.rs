//! `portd --check`: the daemon config validated like `nginx -t`. Reads the file and
//! compiles its system set without touching the kernel; then, when a portd holds the
//! table, asks it over the control socket what a reload of this file would add, remove
//! and suspend (the answer of `portctl reload --dry-run`, for the file checked).

#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

/// Reads and validates the config, and checks that the accounts it names exist; on
/// failure, one located problem per line.
pub fn load(path: &Path) -> Result<portd_rules::Config, Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![format!("{}: cannot read the config: {e}; pass the right file with --config", path.display())]
    })?;
    let file = path.display().to_string();
    let config =
        portd_rules::parse_config(&file, &text).map_err(|d| d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>())?;
    let unknown = unknown_accounts(&file, &text, &config);
    if !unknown.is_empty() {
        return Err(unknown.0.iter().map(|d| d.to_string()).collect());
    }
    Ok(config)
}

/// Grants of users and groups the account database does not know, and a socket group
/// written in `text` that does not exist, located. A typo there would otherwise grant
/// nothing, or leave the socket in root's group. (The default group, `portd`, may be
/// absent where portd runs without its package: the socket then keeps its group, with a
/// warning at start.)
pub fn unknown_accounts(file: &str, text: &str, config: &portd_rules::Config) -> portd_rules::Diagnostics {
    use nix::unistd::{Group, User};
    let mut problems = Vec::new();
    let group_exists = |g: &str| Group::from_name(g).ok().flatten().is_some();
    let written = || portd_rules::load::writes(text, "settings.socket.group");
    if let Some(g) = config.settings.socket.group.as_deref().filter(|g| !group_exists(g) && written()) {
        problems.push((
            "settings.socket.group".to_string(),
            format!(
                "there is no group `{g}` on this host (see `getent group {g}`); the socket would stay in root's group: create it (`groupadd --system {g}`) or fix the name"
            ),
        ));
    }
    for (i, grant) in config.grants.iter().enumerate() {
        match &grant.subject {
            portd_rules::GrantSubject::User(u) if User::from_name(u).ok().flatten().is_none() => problems.push((
                format!("grants[{i}].user"),
                format!(
                    "there is no user `{u}` on this host (see `getent passwd {u}`); create it first or fix the name"
                ),
            )),
            portd_rules::GrantSubject::Group(g) if !group_exists(g) => problems.push((
                format!("grants[{i}].group"),
                format!(
                    "there is no group `{g}` on this host (see `getent group {g}`); create it first or fix the name"
                ),
            )),
            _ => {}
        }
    }
    portd_rules::load::locate(file, text, problems)
}

/// Validates the config at `path` (with `--table` and `--socket`, if given) and prints
/// the verdict: problems on stderr and exit 1, or a one-line summary on stdout; then the
/// running portd's preview of a reload, exit 1 when it would refuse the file.
pub fn run(path: &Path, table: Option<&str>, socket: Option<&Path>) -> ExitCode {
    let verdict = load(path).and_then(|mut config| {
        if let Some(t) = table {
            config.settings.table = t.to_string();
        }
        let system =
            portd_rules::OwnedSet { owner: portd_rules::plan::SYSTEM_OWNER.into(), forwards: config.forwards.clone() };
        portd_rules::compile(&config.settings.table, config.settings.mark, &[system])
            .map_err(|c| c.iter().map(|c| format!("{}: {c}", path.display())).collect::<Vec<_>>())?;
        Ok(config)
    });
    match verdict {
        Ok(c) => {
            println!(
                "{}: ok: table inet {}, socket {}, {} grant(s), {} system forward(s)",
                path.display(),
                c.settings.table,
                c.settings.socket.path,
                c.grants.len(),
                c.forwards.len()
            );
            let socket = socket.map_or_else(|| std::path::PathBuf::from(&c.settings.socket.path), Path::to_path_buf);
            against_running(path, &c.settings.table, &socket)
        }
        Err(lines) => {
            for l in &lines {
                eprintln!("{l}");
            }
            eprintln!("{}: {} problem(s); portd would refuse to start with it", path.display(), lines.len());
            ExitCode::FAILURE
        }
    }
}

/// The running portd's preview of a reload of `path`: printed, exit 1 when it would refuse
/// it. Without a portd holding the table (the lock next to the socket), nothing connects:
/// a socket-activated unit is not started by a check.
fn against_running(path: &Path, table: &str, socket: &Path) -> ExitCode {
    use portd_rules::proto::{Body, Outcome};
    let Some(pid) = crate::lock::holder_of(socket, table) else {
        println!("no portd holds table inet {table}: the file was checked alone");
        return ExitCode::SUCCESS;
    };
    // The lock file holds the pid, unless its portd could not write it.
    let pid = if pid.is_empty() { "unknown".to_string() } else { pid };
    let cannot = |why: String| {
        eprintln!(
            "note: cannot ask the running portd (pid {pid}) what a reload would change: {why}; `portctl reload --dry-run` as root shows it for its own config file"
        );
        ExitCode::SUCCESS
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return cannot(format!("{}: {e}", path.display())),
    };
    let config = portd_rules::proto::ConfigText { file: path.display().to_string(), text };
    let command = portd_rules::proto::Command::Reload { dry_run: true, config: Some(config) };
    let answer = match ask(socket, command) {
        Ok(a) => a,
        Err(e) => return cannot(format!("{}: {e}", socket.display())),
    };
    match answer.result {
        Outcome::Ok(Body::Changed { summary, warnings, suspended, omitted, .. }) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            println!("against the running portd (pid {pid}), a reload of this file would:");
            // "no changes" would hide the suspensions listed below.
            if !summary.is_empty() || suspended.is_empty() {
                print!("{summary}");
            }
            for s in suspended {
                let f = &s.forward;
                println!("! {}/{}: {} -> {} suspended ({})", s.owner, f.name, f.port, f.to, s.reason);
            }
            if omitted > 0 {
                println!("... and {omitted} more change(s) not listed");
            }
            ExitCode::SUCCESS
        }
        Outcome::Ok(other) => cannot(format!("unexpected answer {other:?}")),
        Outcome::Error { kind: portd_rules::proto::ErrorKind::Denied, messages, .. } => cannot(messages.join("; ")),
        Outcome::Error { messages, file, .. } => {
            eprintln!("the running portd (pid {pid}) would refuse a reload of this file:");
            for m in messages {
                match &file {
                    Some(f) if m.starts_with(|c: char| c.is_ascii_digit()) => eprintln!("{f}:{m}"),
                    Some(f) => eprintln!("{f}: {m}"),
                    None => eprintln!("{m}"),
                }
            }
            ExitCode::FAILURE
        }
    }
}

/// One request on a fresh connection to the control socket, and its answer.
fn ask(socket: &Path, command: portd_rules::proto::Command) -> std::io::Result<portd_rules::proto::Response> {
    use std::io::{BufRead, Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let request = portd_rules::proto::Request { version: portd_rules::proto::PROTOCOL_VERSION, command };
    let mut line = serde_json::to_vec(&request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut answer = String::new();
    std::io::BufReader::new(s).take(portd_rules::proto::MAX_ANSWER_BYTES as u64).read_line(&mut answer)?;
    serde_json::from_str(&answer).map_err(|e| std::io::Error::other(format!("an answer that is not JSON ({e})")))
}
