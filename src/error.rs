//! Error kinds that carry their own exit code, and the one place that maps them.
//!
//! Everything below the top level returns typed errors; `main` turns an `anyhow::Error`
//! into an exit code by looking for a [`Error`] in its chain (see [`exit_code_of`]).

use std::fmt;

/// The exit codes of SPEC.md, decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Success (`health`: everything up).
    Ok = 0,
    /// The operation failed and the host is as it was (`health`: `health_url` not 2xx).
    Failed = 1,
    /// Usage or configuration error, found before anything changed.
    Usage = 2,
    /// Unreachable, timeout, auth refused, host key mismatch.
    Connection = 3,
    /// Refused by a precondition (lock held, confirmation declined, ...).
    Refused = 4,
    /// `health`: the API answers but another check failed.
    Degraded = 5,
    /// Failed and the host is not as it was.
    Stranded = 6,
    /// Interrupted by Ctrl-C after the host was brought back to a consistent state.
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind name used in `--json` error documents.
    pub fn kind(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Failed => "failed",
            Exit::Usage => "usage",
            Exit::Connection => "connection",
            Exit::Refused => "refused",
            Exit::Degraded => "degraded",
            Exit::Stranded => "stranded",
            Exit::Interrupted => "interrupted",
        }
    }
}

/// An error whose kind decides the exit code. `help` says what to do next.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    pub exit: Exit,
    pub message: String,
    pub help: Option<String>,
    /// What the host is left with, when it may differ from before (exit 6): the `"state"`
    /// of the JSON error document, and a `state:` line.
    pub state: Option<String>,
    #[source]
    pub source: Option<std::io::Error>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    fn new(exit: Exit, message: impl Into<String>) -> Self {
        Error {
            exit,
            message: message.into(),
            help: None,
            state: None,
            source: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    pub fn connection(message: impl Into<String>) -> Self {
        Self::new(Exit::Connection, message)
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Self::new(Exit::Refused, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(Exit::Failed, message)
    }

    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::new(Exit::Interrupted, message)
    }

    /// Failed part-way: the host is not as it was (exit 6), and `state` says what is where.
    pub fn stranded(message: impl Into<String>, state: impl Into<String>) -> Self {
        Self::new(Exit::Stranded, message).with_state(state)
    }

    pub fn with_state(mut self, state: impl Into<String>) -> Self {
        self.state = Some(state.into());
        self
    }

    pub fn with_source(mut self, source: std::io::Error) -> Self {
        self.source = Some(source);
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// The exit code for an error: the kind of the first [`Error`] in the chain, else 1.
pub fn exit_code_of(err: &anyhow::Error) -> Exit {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .map_or(Exit::Failed, |e| e.exit)
}

/// The `help:` line for an error, if any cause in the chain has one.
pub fn help_of(err: &anyhow::Error) -> Option<&str> {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<Error>())
        .and_then(|e| e.help.as_deref())
}

/// What the host is left with after this error: the first `state` in the chain; else
/// "unchanged", except after exit 6 (which always needs one: "unknown").
pub fn state_of(err: &anyhow::Error) -> String {
    let typed = err.chain().find_map(|cause| cause.downcast_ref::<Error>());
    match typed {
        Some(Error {
            state: Some(state), ..
        }) => state.clone(),
        Some(Error {
            exit: Exit::Stranded,
            ..
        }) => "unknown: see `ctops status`".into(),
        _ => "unchanged".into(),
    }
}

/// True when the error is a write to a closed pipe (`ctops logs api | head`).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn exit_code_is_found_through_context() {
        let err: anyhow::Error = Error::connection("no route").into();
        let err = err.context("while connecting");
        assert_eq!(exit_code_of(&err), Exit::Connection);
    }

    #[test]
    fn a_stranded_error_says_what_is_where_through_context() {
        let err: anyhow::Error = Error::stranded("up failed", "down: every service stopped").into();
        let err = err.context("rebuild");
        assert_eq!(exit_code_of(&err), Exit::Stranded);
        assert_eq!(state_of(&err), "down: every service stopped");
        let plain: anyhow::Error = Error::failed("nothing ran").into();
        assert_eq!(state_of(&plain), "unchanged");
        let bare: anyhow::Error = Error::new(Exit::Stranded, "lost").into();
        assert!(state_of(&bare).starts_with("unknown"));
    }

    #[test]
    fn untyped_errors_are_plain_failures() {
        let err = anyhow::anyhow!("boom");
        assert_eq!(exit_code_of(&err), Exit::Failed);
    }

    #[test]
    fn broken_pipe_is_recognised_through_context() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let err = Err::<(), _>(io).context("writing logs").unwrap_err();
        assert!(is_broken_pipe(&err));
    }
}
