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
    let unreachable = |e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                return Failure::new(
                    Exit::Denied,
                    format!(
                        "{}: permission denied; ask an operator to add you to the socket's group (usually `portd`)",
                        socket.display()
                    ),
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
    stream.set_read_timeout(Some(Duration::from_secs(120))).map_err(io)?;
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
        Outcome::Error { kind, messages } => Err(Failure::many(kind.into(), messages)),
    }
}
