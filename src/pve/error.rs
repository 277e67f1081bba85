//! Errors of the PVE/PBS clients, with a kind scripts can match on
//! (`e.kind == "guest_locked"`) and an exit code; the crate's error wraps it
//! as [`Error::Pve`](crate::error::Error::Pve), keeping both.

use crate::error::exit;
use std::collections::BTreeMap;
use std::time::Duration;

pub type PveResult<T> = Result<T, PveError>;

#[derive(Debug, thiserror::Error)]
pub enum PveError {
    /// The server's certificate matched none of the pinned fingerprints;
    /// the handshake was aborted before any request was sent.
    #[error("TLS certificate of {url} does not match the pinned fingerprint(s); the server presented {seen} (update proxmox.fingerprint if the certificate was renewed on purpose)")]
    PinMismatch { url: String, seen: String },

    /// The server's certificate failed verification (unknown CA, wrong
    /// host name, expired). Final: retrying cannot change the answer.
    #[error("TLS certificate of {url} was refused: {message} (pin it with fingerprint, give its CA in ca_file, or renew it)")]
    Tls { url: String, message: String },

    /// Connect/IO failures, and 595/596 after the retries.
    #[error("{0}")]
    Unreachable(String),

    /// 401: bad token, expired ticket, missing CSRF token.
    #[error("authentication failed ({status}): {message}")]
    Auth { status: u16, message: String },

    /// 400 with the schema validator's per-parameter errors.
    #[error("{method} {path}: parameter verification failed: {}", fmt_errors(.errors))]
    Params {
        method: String,
        path: String,
        errors: BTreeMap<String, String>,
    },

    /// Any other HTTP error answer.
    #[error("{method} {path}: HTTP {status}: {message}")]
    Api {
        method: String,
        path: String,
        status: u16,
        message: String,
    },

    /// A guest holds a lock (`backup`, `snapshot`, ...). Never removed by us.
    #[error("{guest} is locked ({lock}){detail}")]
    Locked {
        guest: String,
        lock: String,
        detail: String,
    },

    /// A task ended with an error exit status.
    #[error("task failed: {status}{}\n--- task {upid}, last log lines\n{log_tail}", first_error(.log_tail))]
    TaskFailed {
        upid: String,
        status: String,
        log_tail: String,
    },

    #[error("{what} timed out after {}s", .after.as_secs())]
    Timeout { what: String, after: Duration },

    /// We stopped waiting for a task that has not ended: it is left
    /// running on its node and still holds the guest's lock.
    #[error("task {upid} ({worker}) is still running on node {node} after {}s and holds the guest's lock until it ends; it was left running (watch or stop it in the node's task list)", .after.as_secs())]
    TaskTimeout {
        upid: String,
        worker: String,
        node: String,
        after: Duration,
    },

    /// A value we refuse before calling (snapshot name rules, ...).
    #[error("{0}")]
    Invalid(String),

    /// The answer did not have the shape we rely on.
    #[error("unexpected answer from {what}: {message}")]
    Decode { what: String, message: String },

    /// A local command (pct, qm, pvesh, proxmox-backup-client) failed.
    #[error("{program}: {message}")]
    Command { program: String, message: String },

    /// Configuration problem found when building a client.
    #[error("{0}")]
    Config(String),
}

/// The first `ERROR: ...` line of a task log, as ` (reason)`.
fn first_error(log: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix("ERROR: "))
        .map(|l| format!(" ({l})"))
        .unwrap_or_default()
}

fn fmt_errors(e: &BTreeMap<String, String>) -> String {
    e.iter()
        .map(|(k, v)| format!("{k}: {}", v.trim_end()))
        .collect::<Vec<_>>()
        .join("; ")
}

impl PveError {
    /// The kind thrown to scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            PveError::PinMismatch { .. } => "tls_pin_mismatch",
            PveError::Tls { .. } => "tls",
            PveError::Unreachable(_) => "unreachable",
            PveError::Auth { .. } => "auth",
            PveError::Params { .. } => "invalid_parameter",
            PveError::Api { .. } => "api",
            PveError::Locked { .. } => "guest_locked",
            PveError::TaskFailed { .. } => "task_failed",
            PveError::Timeout { .. } | PveError::TaskTimeout { .. } => "timeout",
            PveError::Invalid(_) => "invalid_argument",
            PveError::Decode { .. } => "api",
            PveError::Command { .. } => "command",
            PveError::Config(_) => "config",
        }
    }

    /// The process exit code (docs/conventions.md): an unreachable remote or a
    /// refused TLS certificate 69, a configuration problem 78, anything else
    /// a failure (1).
    pub fn exit_code(&self) -> u8 {
        match self {
            PveError::PinMismatch { .. } | PveError::Tls { .. } | PveError::Unreachable(_) => {
                exit::UNAVAILABLE
            }
            PveError::Config(_) => exit::CONFIG,
            PveError::Auth { .. }
            | PveError::Params { .. }
            | PveError::Api { .. }
            | PveError::Locked { .. }
            | PveError::TaskFailed { .. }
            | PveError::Timeout { .. }
            | PveError::TaskTimeout { .. }
            | PveError::Invalid(_)
            | PveError::Decode { .. }
            | PveError::Command { .. } => exit::FAILED,
        }
    }

    /// Transient failures (network, 595/596, lock held by a running task).
    /// A refused certificate never is.
    pub fn is_retryable(&self) -> bool {
        match self {
            PveError::Unreachable(_) | PveError::Timeout { .. } | PveError::Locked { .. } => true,
            PveError::Api { status, .. } => matches!(status, 595 | 596 | 502 | 503 | 504),
            _ => false,
        }
    }

    /// A failure of one status poll that says nothing about the task: a
    /// dropped connection, 595/596 (pveproxy could not reach the node's
    /// daemon), 502-504, or a 500 "got timeout" (a file lock on the node
    /// under contention). The task's own outcome decides, so the wait goes on.
    pub fn is_transient_poll(&self) -> bool {
        match self {
            PveError::Unreachable(_) => true,
            PveError::Api {
                status, message, ..
            } => {
                matches!(status, 595 | 596 | 502 | 503 | 504)
                    || (*status == 500 && message.contains("got timeout"))
            }
            // pvesh (local mode) under the same file-lock contention.
            PveError::Command { message, .. } => message.contains("got timeout"),
            _ => false,
        }
    }

    /// If this error says a guest is locked ("VM is locked (backup)",
    /// "CT 200 is locked (snapshot)"), the lock name: in the message, the
    /// task's exit status, or an `ERROR:` line of its log (a vzdump job
    /// ends with "job errors" and says why only in the log).
    pub fn lock_name(&self) -> Option<String> {
        match self {
            PveError::Locked { lock, .. } => Some(lock.clone()),
            PveError::Api { message, .. } => lock_in(message),
            PveError::TaskFailed {
                status, log_tail, ..
            } => lock_in(status).or_else(|| {
                log_tail
                    .lines()
                    .filter(|l| l.starts_with("ERROR:") || l.starts_with("TASK ERROR:"))
                    .find_map(lock_in)
            }),
            _ => None,
        }
    }
}

/// The lock named in a PVE message ("VM is locked (backup)").
pub fn lock_in(text: &str) -> Option<String> {
    let re = regex::Regex::new(r"is locked \(([a-z-]+)\)").ok()?;
    re.captures(text).map(|c| c[1].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_error_in_a_vzdump_log_makes_the_task_failure_a_lock() {
        let e = PveError::TaskFailed {
            upid: "UPID:pve1:00000001:00000002:68A60E01:vzdump:100:root@pam:".into(),
            status: "job errors".into(),
            log_tail: "INFO: Starting Backup of VM 100 (qemu)\nERROR: Backup of VM 100 failed - VM is locked (snapshot)\nINFO: Backup job finished with errors".into(),
        };
        assert_eq!(e.lock_name().as_deref(), Some("snapshot"));
        let other = PveError::TaskFailed {
            upid: String::new(),
            status: "job errors".into(),
            log_tail: "ERROR: Backup of VM 100 failed - unable to read disk".into(),
        };
        assert_eq!(other.lock_name(), None);
    }

    #[test]
    fn only_polls_that_say_nothing_about_the_task_are_transient() {
        let api = |status, message: &str| PveError::Api {
            method: "GET".into(),
            path: "/nodes/pve1/tasks/x/status".into(),
            status,
            message: message.into(),
        };
        assert!(api(
            500,
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
        )
        .is_transient_poll());
        assert!(api(596, "Broken pipe").is_transient_poll());
        assert!(PveError::Unreachable("reset".into()).is_transient_poll());
        assert!(!api(500, "no such task").is_transient_poll());
        assert!(!api(403, "Permission check failed").is_transient_poll());
        let tls = PveError::Tls {
            url: "https://pve1:8006".into(),
            message: "invalid peer certificate: UnknownIssuer".into(),
        };
        assert!(!tls.is_transient_poll() && !tls.is_retryable());
        assert_eq!(tls.exit_code(), exit::UNAVAILABLE);
    }
}
