//! portctl: the control CLI of portd. `check` and `plan` work offline; every other
//! command talks to the daemon over its Unix socket.
#![forbid(unsafe_code)]

mod cli;
mod client;
mod man;
mod output;

use clap::{CommandFactory, Parser};
use cli::{Cli, Cmd, FamilyArg, ProtoArg, ShellArg};
use portd_rules::proto::{Command, ErrorKind};
use portd_rules::{compile, parse_rules, render::render, OwnedSet};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

/// Exit codes of DESIGN.md.
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
    lines: Vec<String>,
    /// Lines already carry their location (`file:line:col:`) and print as they are.
    located: bool,
}

impl Failure {
    fn new(code: Exit, line: impl Into<String>) -> Failure {
        Failure { code, lines: vec![line.into()], located: false }
    }

    fn diagnostics(d: portd_rules::Diagnostics) -> Failure {
        Failure { code: Exit::Rejected, lines: d.0.iter().map(|d| d.to_string()).collect(), located: true }
    }

    fn many(code: Exit, lines: Vec<String>) -> Failure {
        Failure { code, lines, located: false }
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

fn read_file(path: &Path) -> Result<String, Failure> {
    let meta = std::fs::metadata(path).map_err(|e| Failure::new(Exit::Rejected, format!("{}: {e}", path.display())))?;
    if meta.len() > portd_rules::MAX_FILE_BYTES as u64 {
        return Err(Failure::new(
            Exit::Rejected,
            format!("{}: file is {} bytes; the limit is 16 MiB", path.display(), meta.len()),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| Failure::new(Exit::Rejected, format!("{}: {e}", path.display())))
}

fn check(file: &Path, json: bool) -> Result<Exit, Failure> {
    let text = read_file(file)?;
    match parse_rules(&file.display().to_string(), &text) {
        Ok(r) => {
            if json {
                println!("{}", serde_json::json!({"valid": true, "forwards": r.forwards.len(), "diagnostics": []}));
            } else {
                eprintln!("{}: ok, {} forward(s)", file.display(), r.forwards.len());
            }
            Ok(Exit::Ok)
        }
        Err(d) => {
            if json {
                println!("{}", serde_json::json!({"valid": false, "diagnostics": d.0}));
            }
            Err(Failure::diagnostics(d))
        }
    }
}

fn run(cli: Cli) -> Result<Exit, Failure> {
    let sock = cli.socket.clone();
    let json = cli.json;
    let send = |command: Command| client::request(&sock, command);
    match cli.command {
        Cmd::Check { file } => check(&file, json),
        Cmd::Plan { file, table, mark } => {
            let text = read_file(&file)?;
            let rules = parse_rules(&file.display().to_string(), &text).map_err(Failure::diagnostics)?;
            let plan = compile(&table, mark, &[OwnedSet { owner: "system".into(), forwards: rules.forwards }])
                .map_err(|c| Failure::many(Exit::Rejected, c.iter().map(|c| c.to_string()).collect()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&plan).unwrap_or_default());
            } else {
                print!("{}", render(&plan));
            }
            Ok(Exit::Ok)
        }
        Cmd::Apply { file, dry_run, owner } => apply(&file, dry_run, owner, json, send),
        Cmd::Diff { file, owner } => apply(&file, true, owner, json, send),
        Cmd::Status => {
            let body = send(Command::Status)?;
            output::print_body(&body, json);
            Ok(Exit::Ok)
        }
        Cmd::Add { name, port, to, proto, family, no_local, interfaces, sources, mark, protect, owner } => {
            let parse = |what: &str, s: &str| {
                portd_rules::PortRange::parse(s).map_err(|e| Failure::new(Exit::Usage, format!("{what}: {e}")))
            };
            let mut f = portd_rules::Forward::new(&name, parse("PORT", &port)?, parse("TO", &to)?);
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
            f.sources = sources
                .iter()
                .map(|s| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| Failure::new(Exit::Usage, format!("--source: `{s}` is not an address or network")))
                })
                .collect::<Result<_, _>>()?;
            f.mark = mark;
            f.protect = protect;
            // Validate offline first so mistakes are reported without a daemon.
            portd_rules::load::validate_forwards("portctl add", std::slice::from_ref(&f))
                .map_err(|d| Failure::many(Exit::Rejected, d.0.iter().map(|d| d.message.clone()).collect()))?;
            let body = send(Command::Add { forward: f, owner })?;
            output::print_body(&body, json);
            Ok(Exit::Ok)
        }
        Cmd::Remove { name, owner } => {
            let body = send(Command::Remove { name, owner })?;
            output::print_body(&body, json);
            Ok(Exit::Ok)
        }
        Cmd::Export { owner } => {
            let body = send(Command::Export { owner })?;
            output::print_body(&body, json);
            Ok(Exit::Ok)
        }
        Cmd::Reload => {
            let body = send(Command::Reload)?;
            output::print_body(&body, json);
            Ok(Exit::Ok)
        }
        Cmd::Completions { shell } => {
            let shell = match shell {
                ShellArg::Bash => clap_complete::Shell::Bash,
                ShellArg::Zsh => clap_complete::Shell::Zsh,
                ShellArg::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut Cli::command(), "portctl", &mut std::io::stdout());
            Ok(Exit::Ok)
        }
        Cmd::Man { dir } => {
            man::write(&dir, Cli::command())
                .map_err(|e| Failure::new(Exit::Rejected, format!("writing man pages to {}: {e}", dir.display())))?;
            Ok(Exit::Ok)
        }
    }
}

fn apply(
    file: &Path,
    dry_run: bool,
    owner: Option<String>,
    json: bool,
    send: impl Fn(Command) -> Result<portd_rules::proto::Body, Failure>,
) -> Result<Exit, Failure> {
    let text = read_file(file)?;
    let name = file.display().to_string();
    // The daemon validates the file (it trusts no client), so it is parsed here only when
    // the daemon refuses it or cannot be reached: then mistakes are reported with their
    // locations either way, even when the daemon is down.
    let body = match send(Command::Apply { file: name.clone(), text: text.clone(), dry_run, owner }) {
        Err(f) if matches!(f.code, Exit::Rejected | Exit::Unreachable) => {
            parse_rules(&name, &text).map_err(Failure::diagnostics)?;
            return Err(f);
        }
        other => other?,
    };
    output::print_body(&body, json);
    Ok(Exit::Ok)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { Exit::Usage } else { Exit::Ok };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let code = match run(cli) {
        Ok(code) => code,
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
