//! Exit codes, and which errors map to which.

use eventsource::Error;

/// The process's exit code (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The broker refused or failed the operation.
    Failure = 1,
    /// Bad arguments or configuration.
    Usage = 2,
    /// No such dead letter or consumer group.
    NotFound = 3,
    /// The broker could not be reached or did not answer in time.
    Connection = 4,
    /// A bulk operation stopped part way.
    Partial = 5,
}

/// Why the command failed: the message, a hint, the exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) message: String,
    pub(crate) hint: Option<String>,
}

impl Failure {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// An error while connecting: a configuration error is usage, anything
    /// else a connection failure.
    pub(crate) fn connecting(e: Error) -> Self {
        match e {
            Error::Config(_) => Failure::from(e),
            e => Failure::new(Exit::Connection, e.to_string())
                .hint("is the broker running, and is the URL right? (./scripts/services.sh starts the local ones)"),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let exit = match &e {
            Error::Config(_) => Exit::Usage,
            Error::NotFound { .. } => Exit::NotFound,
            Error::Timeout { .. } => Exit::Connection,
            _ => Exit::Failure,
        };
        Failure::new(exit, e.to_string())
    }
}
