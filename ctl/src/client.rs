//! One request, one response over the daemon's Unix socket.

use crate::{Exit, Failure};
use portd_rules::proto::{
    Body, Command, Outcome, Request, Response, MAX_ANSWER_BYTES, MAX_LINE_BYTES, PROTOCOL_VERSION,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Sends `command` and returns the daemon's answer, or a failure with the right exit code.
pub fn request(socket: &Path, command: Command) -> Result<Body, Failure> {
    request_within(socket, command, Duration::from_secs(120))
}

/// [`request`] waiting at most `timeout` for the answer.
pub fn request_within(socket: &Path, command: Command, timeout: Duration) -> Result<Body, Failure> {
    let unreachable = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                return Failure::new(
                    Exit::Denied,
                    format!("{}: permission denied; {}", socket.display(), access_hint(socket)),
                )
            }
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                "is portd running? (systemctl status portd)"
            }
            _ => "is portd running?",
        };
        Failure::new(Exit::Unreachable, format!("cannot reach portd at {}: {e}; {hint}", socket.display()))
    };
    let mut stream = UnixStream::connect(socket).map_err(unreachable)?;
    let io =
        |e: std::io::Error| Failure::new(Exit::Unreachable, format!("talking to portd at {}: {e}", socket.display()));
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    let req = Request { version: PROTOCOL_VERSION, command };
    let mut line =
        serde_json::to_vec(&req).map_err(|e| Failure::new(Exit::Rejected, format!("encoding request: {e}")))?;
    line.push(b'\n');
    if line.len() > MAX_LINE_BYTES {
        return Err(Failure::new(
            Exit::Rejected,
            format!("request is {} bytes; the daemon accepts at most {MAX_LINE_BYTES}", line.len()),
        ));
    }
    stream.write_all(&line).map_err(io)?;
    let mut reader = BufReader::new(stream.take(MAX_ANSWER_BYTES as u64 + 1));
    let mut answer = Vec::new();
    reader.read_until(b'\n', &mut answer).map_err(io)?;
    if answer.is_empty() {
        return Err(Failure::new(Exit::Unreachable, "portd closed the connection without answering"));
    }
    let resp: Response = serde_json::from_slice(&answer)
        .map_err(|e| Failure::new(Exit::Rejected, format!("unreadable answer from portd: {e}")))?;
    match resp.result {
        Outcome::Ok(body) => Ok(body),
        Outcome::Error { kind, messages, file: None, .. } => Err(Failure::daemon(kind, messages)),
        // An invalid file's problems, located, with the file the answer names once.
        Outcome::Error { file: Some(file), diagnostics, .. } if !diagnostics.is_empty() => Err(Failure::diagnostics(
            portd_rules::Diagnostics(diagnostics.into_iter().map(|p| p.in_file(&file)).collect()),
        )),
        // A daemon before `diagnostics`: each located line gets the file back.
        Outcome::Error { kind, messages, file: Some(file), .. } => Err(Failure::daemon(
            kind,
            messages
                .into_iter()
                .map(|m| match m.starts_with(|c: char| c.is_ascii_digit()) {
                    true => format!("{file}:{m}"),
                    false => format!("{file}: {m}"),
                })
                .collect(),
        )),
    }
}

/// What to do about a refused connection: name the group that owns the socket (or the
/// directory that could not be searched), and say that a new membership needs a new login.
pub fn access_hint(socket: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let (what, meta) = match std::fs::metadata(socket) {
        Ok(m) => ("the socket", m),
        Err(_) => match socket.parent().map(std::fs::metadata) {
            Some(Ok(m)) => ("its directory", m),
            _ => return "ask an operator for access to the socket's group".into(),
        },
    };
    let gid = meta.gid();
    let group = crate::account::group(gid);
    let name = group.as_ref().map_or_else(|| gid.to_string(), |g| g.name.clone());
    // Membership helps only where the group's bits let it in (write on the socket, search
    // on its directory), and never with root's group: no advice to join a group that
    // would not help, or that gives more than portd's socket.
    // Only the socket's own group is portd's to grant: a directory's group (the socket
    // missing, or `--socket` pointing anywhere) may give far more.
    if what != "the socket" || meta.mode() & 0o020 == 0 || gid == 0 {
        return format!(
            "{what} belongs to group `{name}` (mode {:04o}), which does not let that group in; ask an operator for access to portd's socket (settings.socket.group and mode in /etc/portd/portd.yaml)",
            meta.mode() & 0o7777
        );
    }
    let user = crate::account::user_name(crate::account::uid());
    let in_db = group.as_ref().is_some_and(|g| user.as_ref().is_some_and(|u| g.members.contains(u)))
        || crate::account::primary_gid(crate::account::uid()) == Some(gid);
    let me = user.unwrap_or_else(|| "$USER".into());
    if in_db && !crate::account::process_has_group(gid) {
        format!(
            "{what} belongs to group `{name}` (mode {:04o}); you are a member, but this login started before you were added: log out and in again (or run `newgrp {name}`)",
            meta.mode() & 0o7777
        )
    } else {
        format!(
            "{what} belongs to group `{name}` (mode {:04o}); ask an operator to run `usermod -aG {name} {me}`, then log in again (a new group membership applies to new logins only; `newgrp {name}` picks it up in this shell)",
            meta.mode() & 0o7777
        )
    }
}
