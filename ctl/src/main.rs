//! portctl: the control CLI of portd. `check` and `plan` work offline; every other
//! command talks to the daemon over its Unix socket.
#![forbid(unsafe_code)]

mod account;
mod cli;
mod client;
mod complete;
mod json;
mod man;
mod output;
mod owner;

use clap::{CommandFactory, Parser};
use cli::{Cli, Cmd, FamilyArg, ProtoArg};
use portd_rules::proto::{Body, Command, ErrorKind};
use portd_rules::{parse_rules, render::render};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Exit codes, as portctl(1) lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Rejected: invalid file, conflict, kernel refused.
    Rejected = 1,
    /// Usage error.
    Usage = 2,
    /// Daemon unreachable.
    Unreachable = 3,
    /// Permission denied.
    Denied = 4,
}

/// A failure: an exit code and one cause per line.
#[derive(Debug)]
pub struct Failure {
    code: Exit,
    /// Class of failure for `--json`: the daemon's error kind, or `usage`, `unreachable`,
    /// `denied`, `invalid` for failures found by portctl itself.
    kind: String,
    lines: Vec<String>,
    /// Lines already carry their location (`file:line:col:`) and print as they are.
    located: bool,
    /// The located problems of a file, for `--json`.
    diagnostics: Option<Vec<portd_rules::Diagnostic>>,
}

impl Failure {
    fn new(code: Exit, line: impl Into<String>) -> Failure {
        Failure::many(code, vec![line.into()])
    }

    /// A file's located problems, found by portctl or answered by the daemon.
    fn diagnostics(d: portd_rules::Diagnostics) -> Failure {
        Failure {
            code: Exit::Rejected,
            kind: "invalid".into(),
            lines: d.0.iter().map(|d| d.to_string()).collect(),
            located: true,
            diagnostics: Some(d.0),
        }
    }

    /// Names `file` in the located problems (and their lines) instead of the name they
    /// came with.
    fn locate_in(&mut self, file: &str) {
        if let Some(d) = &mut self.diagnostics {
            for p in d.iter_mut() {
                p.file = file.to_string();
            }
            self.lines = d.iter().map(ToString::to_string).collect();
        }
    }

    fn many(code: Exit, lines: Vec<String>) -> Failure {
        let kind = match code {
            Exit::Ok | Exit::Rejected => "invalid",
            Exit::Usage => "usage",
            Exit::Unreachable => "unreachable",
            Exit::Denied => "denied",
        };
        Failure { code, kind: kind.into(), lines, located: false, diagnostics: None }
    }

    /// A refusal by the daemon: its kind, and messages that are located when the daemon
    /// found a file invalid.
    fn daemon(kind: ErrorKind, lines: Vec<String>) -> Failure {
        let name = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from));
        Failure {
            code: kind.into(),
            kind: name.unwrap_or_else(|| "internal".into()),
            located: kind == ErrorKind::Invalid,
            lines,
            diagnostics: None,
        }
    }
}

impl From<ErrorKind> for Exit {
    fn from(k: ErrorKind) -> Exit {
        match k {
            ErrorKind::Denied => Exit::Denied,
            _ => Exit::Rejected,
        }
    }
}

/// Reads a rules file, or standard input for `-`; returns the name to report it by.
fn read_input(path: &Path) -> Result<(String, String), Failure> {
    if path.as_os_str() != "-" {
        return Ok((path.display().to_string(), read_file(path)?));
    }
    let name = "<stdin>".to_string();
    let mut buf = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(std::io::stdin().lock(), portd_rules::MAX_FILE_BYTES as u64 + 1),
        &mut buf,
    )
    .map_err(|e| Failure::new(Exit::Rejected, format!("reading standard input: {e}")))?;
    if buf.len() > portd_rules::MAX_FILE_BYTES {
        return Err(Failure::new(Exit::Rejected, format!("{name}: more than 16 MiB; the limit is 16 MiB")));
    }
    let text = String::from_utf8(buf).map_err(|e| Failure::new(Exit::Rejected, format!("{name}: not UTF-8: {e}")))?;
    Ok((name, text))
}

/// A rules file, read to at most 16 MiB whatever it is: a regular file (its size says
/// so first), or a pipe, FIFO or device (`<(generate)`, /dev/zero), read through the
/// same bound; opened without blocking, so a FIFO that no one writes reads as empty
/// instead of hanging.
fn read_file(path: &Path) -> Result<String, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |e: std::io::Error| Failure::new(Exit::Rejected, format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(fail)?;
    if meta.len() > portd_rules::MAX_FILE_BYTES as u64 {
        return Err(Failure::new(
            Exit::Rejected,
            format!("{}: file is {} bytes; the limit is 16 MiB", path.display(), meta.len()),
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(fail)?;
    // (then blocking reads: a pipe's writer may still be writing)
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&file),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| fail(e.into()))?;
    let mut buf = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, portd_rules::MAX_FILE_BYTES as u64 + 1), &mut buf)
        .map_err(fail)?;
    if buf.len() > portd_rules::MAX_FILE_BYTES {
        return Err(Failure::new(Exit::Rejected, format!("{}: more than 16 MiB; the limit is 16 MiB", path.display())));
    }
    String::from_utf8(buf).map_err(|e| Failure::new(Exit::Rejected, format!("{}: not UTF-8: {e}", path.display())))
}

fn check(file: &Path, json: bool) -> Result<Exit, Failure> {
    let (name, text) = read_input(file)?;
    let r = parse_rules(&name, &text).map_err(Failure::diagnostics)?;
    if json {
        json::print(&serde_json::json!({"ok": true, "file": name, "forwards": r.forwards.len()}));
    } else {
        eprintln!("{name}: ok, {} forward(s)", r.forwards.len());
    }
    Ok(Exit::Ok)
}

/// True for a change answer that changed nothing.
fn is_unchanged(body: &Body) -> bool {
    matches!(body, Body::Changed { summary, omitted: 0, suspended, .. } if summary.is_empty() && suspended.is_empty())
}

/// Keeps the forwards `names`, `owner` and `port` select; a name that matches none is an
/// error.
fn filter_status(body: Body, names: &[String], owner: Option<&str>, port: Option<u16>) -> Result<Body, Failure> {
    let Body::Status(mut s) = body else { return Ok(body) };
    if let Some(o) = owner {
        s.forwards.retain(|f| f.owner == o);
    }
    if let Some(p) = port {
        s.forwards.retain(|f| f.forward.port.contains(&portd_rules::PortRange::single(p)));
    }
    if !names.is_empty() {
        let missing: Vec<String> = names
            .iter()
            .filter(|n| !s.forwards.iter().any(|f| &f.forward.name == *n))
            .map(|n| match owner {
                Some(o) => format!("{o} has no forward named `{n}`"),
                None => format!("no forward named `{n}`"),
            })
            .collect();
        if !missing.is_empty() {
            return Err(Failure::many(Exit::Rejected, missing));
        }
        s.forwards.retain(|f| names.contains(&f.forward.name));
    }
    Ok(Body::Status(s))
}

fn run(cli: Cli) -> Result<Exit, Failure> {
    let sock = cli.socket.clone();
    let json = cli.json;
    let send = |command: Command| client::request(&sock, command);
    match cli.command {
        Cmd::Check { file } => check(&file, json),
        Cmd::Plan { file, table, mark, dispatch, conntrack } => {
            let (name, text) = read_input(&file)?;
            let rules = parse_rules(&name, &text).map_err(Failure::diagnostics)?;
            let sets = [("system", rules.forwards.iter().collect())];
            let mut plan = portd_rules::plan::compile_dispatched(&table, mark, dispatch == "steer", &sets)
                .map_err(|c| Failure::many(Exit::Rejected, c.iter().map(|c| c.to_string()).collect()))?;
            plan.set_conntrack(conntrack);
            if json {
                json::print(&serde_json::json!({"ok": true, "plan": plan}));
            } else {
                output::out(render(&plan));
            }
            Ok(Exit::Ok)
        }
        Cmd::Apply { file, dry_run, owner } => apply(&file, dry_run, owner, json, send).map(|_| Exit::Ok),
        Cmd::Diff { file, owner, exit_code } => {
            let pending = apply(&file, true, owner, json, send)?;
            Ok(if exit_code && pending { Exit::Rejected } else { Exit::Ok })
        }
        Cmd::Status { names, owner, port, wide } => {
            let body = filter_status(send(Command::Status)?, &names, owner.as_deref(), port)?;
            output::print_body(&body, json, wide);
            Ok(Exit::Ok)
        }
        Cmd::Add {
            name,
            port,
            to,
            proto,
            family,
            no_local,
            interfaces,
            sources,
            mark,
            protect,
            description,
            dry_run,
            replace,
            owner,
        } => {
            // Every value of the forward is checked by the rules a rules file's forward is
            // checked by, all at once, and refused the same way (exit 1), before anything
            // is sent.
            let f = portd_rules::validate::assemble(&name, &port, &to, &sources, |f| {
                f.proto = match proto {
                    ProtoArg::Tcp => portd_rules::ProtoSel::Tcp,
                    ProtoArg::Udp => portd_rules::ProtoSel::Udp,
                    ProtoArg::Both => portd_rules::ProtoSel::Both,
                };
                f.family = match family {
                    FamilyArg::Ipv4 => portd_rules::FamilySel::Ipv4,
                    FamilyArg::Ipv6 => portd_rules::FamilySel::Ipv6,
                    FamilyArg::Both => portd_rules::FamilySel::Both,
                };
                f.local = !no_local;
                f.interfaces = interfaces;
                f.protect = protect;
                f.description = description;
                match mark.as_deref().map(cli::parse_mark) {
                    None => Vec::new(),
                    Some(Ok(m)) => {
                        f.mark = Some(m);
                        Vec::new()
                    }
                    Some(Err(e)) => vec![portd_rules::validate::Problem { field: "mark", index: None, message: e }],
                }
            })
            .map_err(|p| Failure::many(Exit::Rejected, p.iter().map(ToString::to_string).collect()))?;
            let body = send(Command::Add { forward: f, owner, dry_run, replace })?;
            output::print_body(&body, json, false);
            if !json && is_unchanged(&body) {
                output::out(format!("unchanged: forward `{name}` is already there as given\n"));
            }
            Ok(Exit::Ok)
        }
        Cmd::Remove { name, owner, dry_run, if_exists } => {
            let body = send(Command::Remove { name: name.clone(), owner, dry_run, if_exists })?;
            output::print_body(&body, json, false);
            if !json && is_unchanged(&body) {
                output::out(format!("unchanged: there is no forward `{name}` to remove\n"));
            }
            Ok(Exit::Ok)
        }
        Cmd::Export { owner } => {
            let body = send(Command::Export { owner })?;
            output::print_body(&body, json, false);
            Ok(Exit::Ok)
        }
        Cmd::Reload { dry_run } => {
            let body = send(Command::Reload { dry_run, config: None })?;
            output::print_body(&body, json, false);
            Ok(Exit::Ok)
        }
        Cmd::Grants => {
            let body = send(Command::Grants)?;
            output::print_body(&body, json, false);
            Ok(Exit::Ok)
        }
        Cmd::Metrics => {
            let body = send(Command::Metrics)?;
            output::print_body(&body, json, false);
            Ok(Exit::Ok)
        }
        Cmd::Doctor { names, owner } => {
            // Root sees which legacy iptables tables are loaded; the daemon's user does not.
            let legacy_tables = nix::unistd::geteuid().is_root().then(portd_rules::proto::LegacyTables::read);
            let mut body = send(Command::Doctor { legacy_tables })?;
            if let Body::Doctor { findings } = &mut body {
                // A finding names its forward `OWNER/NAME`; findings about no forward stay.
                findings.retain(|f| match f.forward.as_deref().and_then(|w| w.rsplit_once('/')) {
                    None => true,
                    Some((o, n)) => {
                        (names.is_empty() || names.iter().any(|x| x == n)) && owner.as_deref().is_none_or(|x| x == o)
                    }
                });
            }
            output::print_body(&body, json, false);
            let error = matches!(&body, Body::Doctor { findings } if findings.iter().any(|f| f.severity == portd_rules::doctor::Severity::Error));
            Ok(if error { Exit::Rejected } else { Exit::Ok })
        }
        Cmd::Completions { shell } => {
            complete::registration(shell, &mut std::io::stdout())
                .map_err(|e| Failure::new(Exit::Rejected, format!("writing completions: {e}")))?;
            Ok(Exit::Ok)
        }
        Cmd::Man { dir } => {
            man::write(&dir, Cli::command())
                .map_err(|e| Failure::new(Exit::Rejected, format!("writing man pages to {}: {e}", dir.display())))?;
            Ok(Exit::Ok)
        }
    }
}

/// Sends a rules file to be applied (or compared, `dry_run`) and prints the answer;
/// returns whether it lists any change.
fn apply(
    file: &Path,
    dry_run: bool,
    owner: Option<String>,
    json: bool,
    send: impl Fn(Command) -> Result<portd_rules::proto::Body, Failure>,
) -> Result<bool, Failure> {
    let (name, text) = read_input(file)?;
    // The daemon validates the file (it trusts no client) and answers its problems
    // located; they are printed with the name portctl was given (the answer's is cut and
    // escaped). The file is parsed here only when the daemon cannot be reached, or when a
    // daemon before located answers refuses it: then mistakes are reported with their
    // locations either way, even when the daemon is down.
    let body = match send(Command::Apply { file: name.clone(), text: text.clone(), dry_run, owner }) {
        Err(mut f) if f.diagnostics.is_some() => {
            f.locate_in(&name);
            return Err(f);
        }
        Err(f) if matches!(f.code, Exit::Rejected | Exit::Unreachable) => {
            parse_rules(&name, &text).map_err(Failure::diagnostics)?;
            return Err(f);
        }
        other => other?,
    };
    output::print_body(&body, json, false);
    Ok(!is_unchanged(&body))
}

fn main() -> ExitCode {
    // `COMPLETE=bash portctl ...`: answer the shell's completion request and exit. Asked
    // only when the variable is set: it reads the working directory and copies the
    // arguments before it looks.
    if std::env::var_os("COMPLETE").is_some() {
        clap_complete::CompleteEnv::with_factory(Cli::command).complete();
    }
    // Known before parsing, so that even a usage error is answered in JSON.
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(Exit::Ok as u8);
        }
        Err(e) => {
            if json {
                let text = e.render().to_string();
                let lines: Vec<String> = text
                    .lines()
                    .map(|l| l.strip_prefix("error: ").unwrap_or(l).trim().to_string())
                    .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
                    .collect();
                json::print(&json::failure(&Failure::many(Exit::Usage, lines)));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(Exit::Usage as u8);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
        Err(f) if json => {
            json::print(&json::failure(&f));
            f.code
        }
        Err(f) => {
            let mut err = std::io::stderr().lock();
            for l in &f.lines {
                let _ = if f.located { writeln!(err, "{l}") } else { writeln!(err, "portctl: {l}") };
            }
            f.code
        }
    };
    let _ = std::io::stdout().flush();
    ExitCode::from(code as u8)
}
