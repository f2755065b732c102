//! Located diagnostics: what was wrong, in which file, at which line, column and field.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One problem in an input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// File name as given by the caller.
    pub file: String,
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// Field path such as `forwards[0].port`; empty for the whole document.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl Diagnostics {
    /// Number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when there are no problems.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Longest file name a daemon's answer names, in characters.
pub const MAX_FILE_NAME_CHARS: usize = 256;

/// `s` cut to `max` characters (and `…`) when longer; short strings are returned as they
/// are, without copying.
pub fn bounded(s: String, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s,
        Some((at, _)) => {
            let mut out = s;
            out.truncate(at);
            out.push('…');
            out
        }
    }
}

/// A client-chosen file name as the daemon names it: control and format characters
/// escaped, at most [`MAX_FILE_NAME_CHARS`] characters, so a name can neither bloat an
/// answer nor forge a line.
pub fn bounded_file_name(name: &str) -> String {
    let mut out = String::new();
    for (n, c) in name.chars().enumerate() {
        if n == MAX_FILE_NAME_CHARS {
            out.push('…');
            break;
        }
        crate::text::push_escaped(&mut out, c);
    }
    out
}

impl Diagnostic {
    /// The diagnostic without its file name: `line:column: path: message`, for an answer
    /// that names the file once.
    pub fn located(&self) -> String {
        let mut s = String::new();
        if self.line > 0 {
            s.push_str(&format!("{}:{}: ", self.line, self.column));
        }
        if !self.path.is_empty() {
            s.push_str(&self.path);
            s.push_str(": ");
        }
        s.push_str(&self.message);
        s
    }
}
