//! The library's error type and its mapping onto the wire's [`ErrorCode`].
//!
//! Library code returns [`Error`]: `thiserror` variants that carry their `source` plus the
//! context a user needs (which file, which field, which session). Messages are lowercase and
//! never contain secret material. `anyhow` is used only in the binary layer (`commands/`),
//! where errors are printed with `{:#}`.

use std::path::PathBuf;

use crate::protocol::{ErrorCode, WireError};

/// Errors raised by the elhaz library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No home directory could be determined for the platform paths.
    #[error("cannot determine a home directory: set HOME or ELHAZ_HOME")]
    NoHome,

    /// An I/O operation failed; `context` says what we were doing.
    #[error("{context}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A path or file does not have the ownership or mode we require.
    #[error("refusing insecure path: {0}")]
    Insecure(String),

    /// A file or directory elhaz trusts fails the ownership/mode rule of [`crate::fsafe`].
    #[error("refusing {}: {problem}; {fix}", .path.display())]
    UnsafePath {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it (owner, mode, symlink).
        problem: String,
        /// The command or step that fixes it.
        fix: String,
    },

    /// A session name does not match `[A-Za-z0-9._-]{1,64}`.
    #[error(
        "invalid session name {0:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ - (not starting with '.' or '-')"
    )]
    InvalidName(String),

    /// A config file does not exist.
    #[error("no session config named {name:?} (expected {})", .file.display())]
    ConfigNotFound {
        /// Session name.
        name: String,
        /// Where we looked.
        file: PathBuf,
    },

    /// A config file already exists and `--force` was not given.
    #[error("session config {name:?} already exists at {} (use --force to overwrite)", .file.display())]
    ConfigExists {
        /// Session name.
        name: String,
        /// The existing file.
        file: PathBuf,
    },

    /// A config or settings file failed to parse or validate.
    #[error("invalid config {}: {message}", .file.display())]
    InvalidConfig {
        /// The offending file (or `<flags>` / `<stdin>`).
        file: PathBuf,
        /// What is wrong, naming line, column and field where known.
        message: String,
    },

    /// Another daemon already owns the run directory.
    #[error("elhaz daemon is already running{}", .pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning {
        /// Its pid, if the pid file could be read.
        pid: Option<u32>,
    },

    /// The daemon is not running (and autostart was not possible or allowed).
    #[error("{0}")]
    NotRunning(String),

    /// The process listening on a daemon socket runs as someone we do not trust.
    #[error(
 "refusing the daemon at {}: it runs as uid {uid}, not as {expected}; nothing was sent to it. Someone else may be listening on your socket: check `ls -ld` of its directory and who runs it, or for a shared daemon set `[client] shared` (or ELHAZ_SHARED) to the user it runs as",
        .socket.display()
    )]
    WrongDaemon {
        /// The socket.
        socket: PathBuf,
        /// The peer's uid, from the kernel.
        uid: u32,
        /// Who it should have been.
        expected: String,
    },

    /// The audit line of a credential could not be written, so the credential was not served.
    #[error(
        "the audit trail in {} cannot be written, so no credential is served (free space, or \
         set `audit_fail_open = true` in elhaz.toml to serve without it)", .dir.display()
    )]
    Audit {
        /// The log directory.
        dir: PathBuf,
        /// Why the write failed.
        #[source]
        source: std::io::Error,
    },

    /// The daemon answered with an error.
    #[error("{}", .0.message)]
    Remote(WireError),

    /// A frame violated the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// Builds an [`Error::Io`] from a context message.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The wire error a daemon handler sends for this error.
    pub fn to_wire(&self) -> WireError {
        let code = match self {
            Error::InvalidName(_) => ErrorCode::BadRequest,
            Error::ConfigNotFound { .. } => ErrorCode::NotFound,
            Error::ConfigExists { .. } => ErrorCode::Conflict,
            Error::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            Error::Remote(w) => return w.clone(),
            Error::Protocol(_) => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        };
        // `{:#}`-style: include the source chain, which never holds secrets.
        WireError::new(code, display_chain(self))
    }
}

/// Formats an error with its chain of sources, `a: b: c`.
pub fn display_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let m = e.to_string();
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = e.source();
    }
    s
}
