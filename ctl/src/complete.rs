//! Dynamic shell completion (clap_complete's `COMPLETE=$SHELL portctl` protocol): forward
//! names for `remove` and `status`, owners for `--owner`, asked from the daemon. When the
//! daemon cannot be reached in time, there are simply no candidates: completion never
//! prints errors into the shell.

use clap_complete::engine::CompletionCandidate;
use portd_rules::proto::{Body, Command};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// How long a completion waits for the daemon.
const TIMEOUT: Duration = Duration::from_millis(500);

/// The value of `--NAME VALUE` or `--NAME=VALUE` on the command line being completed.
fn flag(name: &str) -> Option<OsString> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let long = format!("--{name}");
    let eq = format!("--{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        let s = a.to_str()?;
        if s == long {
            args.get(i + 1).cloned()
        } else {
            s.strip_prefix(&eq).map(OsString::from)
        }
    })
}

fn socket() -> PathBuf {
    flag("socket")
        .or_else(|| std::env::var_os("PORTD_SOCKET"))
        .map_or_else(|| PathBuf::from(crate::cli::DEFAULT_SOCKET), PathBuf::from)
}

fn ask(command: Command) -> Option<Body> {
    crate::client::request_within(&socket(), command, TIMEOUT).ok()
}

fn candidates(mut v: Vec<String>) -> Vec<CompletionCandidate> {
    v.sort();
    v.dedup();
    v.into_iter().map(CompletionCandidate::new).collect()
}

/// Every owner the daemon knows, and `system`.
pub fn owners() -> Vec<CompletionCandidate> {
    let mut v = vec![portd_rules::plan::SYSTEM_OWNER.to_string()];
    if let Some(Body::Status(s)) = ask(Command::Status) {
        v.extend(s.forwards.into_iter().map(|f| f.owner));
    }
    candidates(v)
}

/// Names of every forward (for `status NAME`).
pub fn all_forward_names() -> Vec<CompletionCandidate> {
    match ask(Command::Status) {
        Some(Body::Status(s)) => candidates(s.forwards.into_iter().map(|f| f.forward.name).collect()),
        _ => Vec::new(),
    }
}

/// Names of the forwards `remove` may remove: the caller's, or `--owner`'s.
pub fn my_forward_names() -> Vec<CompletionCandidate> {
    let owner = flag("owner").and_then(|o| o.into_string().ok());
    match ask(Command::Export { owner }) {
        Some(Body::Export { forwards, .. }) => candidates(forwards.into_iter().map(|f| f.name).collect()),
        _ => Vec::new(),
    }
}

/// The registration script for `shell`: what `portctl completions SHELL` prints and the
/// package installs. It calls `COMPLETE=SHELL portctl` for every completion.
pub fn registration(shell: crate::cli::ShellArg, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap_complete::env::EnvCompleter;
    let (name, bin) = ("portctl", "portctl");
    match shell {
        crate::cli::ShellArg::Bash => clap_complete::env::Bash.write_registration("COMPLETE", name, bin, bin, out),
        crate::cli::ShellArg::Zsh => clap_complete::env::Zsh.write_registration("COMPLETE", name, bin, bin, out),
        crate::cli::ShellArg::Fish => clap_complete::env::Fish.write_registration("COMPLETE", name, bin, bin, out),
    }
}
