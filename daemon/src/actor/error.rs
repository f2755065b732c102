//! Why the actor refused or failed a request: one variant per cause, each with the wire
//! kind it is answered with. Only the server turns one into an answer.

#![forbid(unsafe_code)]

use portd_kernel::nft::BackendError;
use portd_rules::proto::ErrorKind;

/// A request the actor refused, or one it could not carry out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is not valid as given (a forward's definition, a name, an owner): one
    /// problem per entry.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The config file on disk is not valid (a reload): its located problems.
    #[error("{}", located(.0))]
    InvalidConfig(portd_rules::Diagnostics),
    /// The caller may not do this: one reason per entry.
    #[error("{}", .0.join("; "))]
    Denied(Vec<String>),
    /// Forwards claim what forwards of other owners (or of the same set) hold.
    #[error("{}", .0.join("; "))]
    Conflict(Vec<String>),
    /// The kernel refused a change; nothing was changed.
    #[error("the kernel refused {what}; nothing was changed: {source}")]
    KernelRefused {
        /// `the change`, `the new config`
        what: &'static str,
        /// what the kernel said
        source: BackendError,
    },
    /// The kernel took the change but it could not be saved: it was taken back.
    #[error("{0}; the change was rolled back")]
    RolledBack(String),
    /// Something else failed inside the daemon.
    #[error("{0}")]
    Internal(String),
}

fn located(d: &portd_rules::Diagnostics) -> String {
    d.0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// A request refused as invalid, for one reason.
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::Invalid(vec![message.into()])
    }

    /// A request the caller may not make, for one reason.
    pub fn denied(message: impl Into<String>) -> Error {
        Error::Denied(vec![message.into()])
    }

    /// The class of failure an answer carries.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) | Error::InvalidConfig(_) => ErrorKind::Invalid,
            Error::Denied(_) => ErrorKind::Denied,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::KernelRefused { .. } => ErrorKind::Kernel,
            Error::RolledBack(_) | Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The causes, one per entry, as an answer lists them.
    pub fn messages(&self) -> Vec<String> {
        match self {
            Error::Invalid(m) | Error::Denied(m) | Error::Conflict(m) => m.clone(),
            Error::InvalidConfig(d) => d.0.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_has_its_kind_and_its_messages() {
        let d = portd_rules::parse_rules("r.yaml", "version: 1\nforwards:\n  - {name: a, port: 0, to: 1}\n")
            .expect_err("port 0");
        let e = Error::InvalidConfig(d.clone());
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert_eq!(e.messages(), d.0.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert!(e.messages()[0].starts_with("r.yaml:3:"), "{:?}", e.messages());
        let e = Error::Conflict(vec!["a".into(), "b".into()]);
        assert_eq!(
            (e.kind(), e.messages(), e.to_string()),
            (ErrorKind::Conflict, vec!["a".into(), "b".into()], "a; b".into())
        );
        assert_eq!(Error::denied("no").kind(), ErrorKind::Denied);
        let e = Error::RolledBack("saving: disk full".into());
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.messages(), vec!["saving: disk full; the change was rolled back".to_string()]);
        let e = Error::KernelRefused {
            what: "the change",
            source: BackendError::Unstable { table: "t".into(), attempts: 0 },
        };
        assert_eq!(e.kind(), ErrorKind::Kernel);
        assert!(e.messages()[0].starts_with("the kernel refused the change; nothing was changed: "), "{e}");
    }
}
