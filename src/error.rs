//! The crate's one error type and its mapping to the exit codes in
//! docs/conventions.md. Variants carry their context (path, program, file/line) so
//! that a message says where and why; `source` chains are kept.

use std::path::PathBuf;
use std::time::Duration;

/// Exit codes (docs/conventions.md).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const WARNINGS: u8 = 3;
    pub const DATA: u8 = 65;
    pub const UNAVAILABLE: u8 = 69;
    pub const IO: u8 = 74;
    pub const LOCKED: u8 = 75;
    pub const PERMISSIONS: u8 = 77;
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Every configuration error found, already formatted
    /// `file:line:column: dotted.path: message`.
    #[error("{}", .0.join("\n"))]
    Config(Vec<String>),

    #[error("{path}: insecure permissions: {message} (use --insecure-permissions to override)")]
    InsecurePermissions { path: PathBuf, message: String },

    #[error("workflow '{workflow}' is already running ({holder})")]
    Locked { workflow: String, holder: String },

    #[error("{path}: unsafe or malformed archive: {message}")]
    UnsafeArchive {
        path: PathBuf,
        message: String,
        /// The decoder's own error (zstd, tar, JSON), when one said so.
        #[source]
        source: Option<std::io::Error>,
    },

    #[error("{path}: checksum mismatch: expected {expected}, got {actual}")]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("state database {path}: {source}")]
    State {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("command {program}: {message}")]
    Command { program: String, message: String },

    #[error("{what} timed out after {}s", .after.as_secs())]
    Timeout { what: String, after: Duration },

    /// A script failed: compile error, runtime error, deadline.
    #[error("{file}:{line}: {message}")]
    Script {
        file: String,
        line: usize,
        message: String,
    },

    #[error("{0}")]
    Usage(String),

    #[error("{0}")]
    Unreachable(String),

    /// A workflow ran and reported failure (one or more services failed).
    #[error("{0}")]
    WorkflowFailed(String),

    /// The run was cancelled (or the task it was doing was stopped for it).
    #[error("cancelled")]
    Cancelled,

    /// A Proxmox VE / Backup Server client error, with its own kind and
    /// exit code. The message is the PVE error's; `source()` is the PVE
    /// error itself, so callers can downcast to its variant.
    #[error("{0}")]
    Pve(#[from] crate::pve::PveError),

    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The process exit code for this error (docs/conventions.md).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => exit::CONFIG,
            Error::InsecurePermissions { .. } => exit::PERMISSIONS,
            Error::Locked { .. } => exit::LOCKED,
            Error::UnsafeArchive { .. } | Error::ChecksumMismatch { .. } => exit::DATA,
            Error::Io { .. } | Error::State { .. } => exit::IO,
            Error::Usage(_) => exit::USAGE,
            Error::Unreachable(_) => exit::UNAVAILABLE,
            Error::Pve(e) => e.exit_code(),
            Error::Command { .. }
            | Error::Cancelled
            | Error::Timeout { .. }
            | Error::Script { .. }
            | Error::WorkflowFailed(_)
            | Error::Other(_) => exit::FAILED,
        }
    }

    /// A short machine-readable kind, used in JSON output and in the maps
    /// thrown to scripts (`e.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::InsecurePermissions { .. } => "permissions",
            Error::Locked { .. } => "locked",
            Error::UnsafeArchive { .. } => "unsafe_archive",
            Error::ChecksumMismatch { .. } => "checksum_mismatch",
            Error::Io { source, .. } if is_disk_full(source) => "disk_full",
            Error::Io { .. } => "io",
            Error::State { .. } => "state",
            Error::Command { .. } => "command",
            Error::Timeout { .. } => "timeout",
            Error::Script { .. } => "script",
            Error::Usage(_) => "usage",
            Error::Unreachable(_) => "unreachable",
            Error::WorkflowFailed(_) => "workflow_failed",
            Error::Cancelled => "cancelled",
            Error::Pve(e) => e.kind(),
            Error::Other(_) => "error",
        }
    }

    /// Whether this error means the machine's storage failed us (a full
    /// disk, an I/O error, the state DB): exit 74 for the run it fails.
    pub fn is_storage_kind(kind: &str) -> bool {
        matches!(kind, "io" | "disk_full" | "state")
    }

    /// Transient failures worth retrying (timeouts, lock contention, remote
    /// unreachable); everything else is permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Pve(e) => e.is_retryable(),
            _ => matches!(
                self,
                Error::Timeout { .. } | Error::Locked { .. } | Error::Unreachable(_)
            ),
        }
    }
}

/// ENOSPC or EDQUOT: no room left for what was being written.
fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pve::PveError;
    use std::error::Error as _;

    #[test]
    fn a_pve_error_keeps_its_source_kind_and_exit_code() {
        let cases = [
            (
                PveError::Unreachable("pve1:8006: connection refused".into()),
                "unreachable",
                exit::UNAVAILABLE,
            ),
            (
                PveError::PinMismatch {
                    url: "https://pve1:8006".into(),
                    seen: "AA:BB".into(),
                },
                "tls_pin_mismatch",
                exit::UNAVAILABLE,
            ),
            (
                PveError::Config("global.proxmox.api_url is not set".into()),
                "config",
                exit::CONFIG,
            ),
            (
                PveError::Locked {
                    guest: "VM 100".into(),
                    lock: "backup".into(),
                    detail: String::new(),
                },
                "guest_locked",
                exit::FAILED,
            ),
        ];
        for (inner, kind, code) in cases {
            let (inner_kind, inner_code, text) =
                (inner.kind(), inner.exit_code(), inner.to_string());
            let err: Error = inner.into();
            assert_eq!(err.kind(), inner_kind);
            assert_eq!(err.kind(), kind);
            assert_eq!(err.exit_code(), inner_code);
            assert_eq!(err.exit_code(), code);
            assert_eq!(err.to_string(), text);
            let Error::Pve(wrapped) = &err else {
                panic!("not kept typed: {err:?}");
            };
            assert_eq!(wrapped.kind(), kind);
            let source = err.source().expect("the PVE error is the source");
            assert_eq!(
                source.downcast_ref::<PveError>().map(PveError::kind),
                Some(kind)
            );
        }
    }

    #[test]
    fn cancelled_has_its_own_kind() {
        let err = Error::Cancelled;
        assert_eq!(err.kind(), "cancelled");
        assert_eq!(err.exit_code(), exit::FAILED);
        assert_eq!(err.to_string(), "cancelled");
        assert!(!err.is_retryable());
        assert_ne!(err.kind(), Error::Other("cancelled".into()).kind());
    }
}
