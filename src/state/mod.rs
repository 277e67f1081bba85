//! The SQLite state store (rusqlite, bundled): runs, run events (log tail),
//! the backup catalog, key/value state for scripts, notifications, and
//! migrations keyed on `PRAGMA user_version`. WAL mode; one
//! `Mutex<Connection>`.
//!
//! Durability: `synchronous=FULL`, every write is one transaction, so a
//! crash (SIGKILL, power loss) loses at most the write in flight and never
//! leaves a half-written row. Several processes (daemon, CLI) may open the
//! same file: `busy_timeout` makes them wait for each other (5 s) instead of
//! failing with "database is locked".
//!
//! Secrets never reach the database: free-text fields (run summaries, event
//! messages, notification errors) and key/value values pass through
//! [`crate::redact`] on the way in.

mod catalog;
mod kv;
mod metrics;
mod migrations;
mod monitor;
mod restore_tests;
mod runs;
mod schedule;
#[cfg(test)]
mod tests;
mod updates;

pub use metrics::{JobMetric, MetricsSnapshot};
pub use migrations::SCHEMA_VERSION;
pub use monitor::{CheckState, CheckStatus};
pub use restore_tests::{RestoreTestOutcome, RestoreTestRecord};
pub use schedule::{SlotAction, SlotRecord};
pub use updates::UpdateRow;

use crate::error::{Error, Result};
use rusqlite::Connection;
use serde::Serialize;
use std::fmt;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How long a writer waits for another connection's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Events kept per run (the log tail); older ones are deleted on insert.
pub const EVENT_TAIL: i64 = 2000;

/// History rows kept per key/value key.
pub const KV_HISTORY: i64 = 100;

/// Longest event message stored, in bytes (longer ones are truncated).
pub const EVENT_MESSAGE_MAX: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Success,
    Warning,
    Failed,
    /// The process died (SIGKILL, power loss) while the run was going on.
    Aborted,
    /// Not run: another run of the workflow held its lock.
    Skipped,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Success => "success",
            RunStatus::Warning => "warning",
            RunStatus::Failed => "failed",
            RunStatus::Aborted => "aborted",
            RunStatus::Skipped => "skipped",
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "running" => RunStatus::Running,
            "success" => RunStatus::Success,
            "warning" => RunStatus::Warning,
            "failed" => RunStatus::Failed,
            "aborted" => RunStatus::Aborted,
            "skipped" => RunStatus::Skipped,
            _ => return Err(format!("unknown run status '{s}'")),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub id: i64,
    pub workflow: String,
    pub services: Vec<String>,
    pub dry_run: bool,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: RunStatus,
    pub summary: String,
    /// The process that ran it.
    pub pid: Option<u32>,
    pub hostname: Option<String>,
}

/// One line of a run's log tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventInfo {
    pub ts: i64,
    /// `trace`, `debug`, `info`, `warn`, `error` (free text, not checked).
    pub level: String,
    pub service: Option<String>,
    pub message: String,
}

/// A new catalog row; written only once the artifact is whole and verified.
#[derive(Debug, Clone, Serialize)]
pub struct NewBackup {
    pub service: String,
    /// `archive` (our tar.zst), `vzdump`, `pbs`, ...
    pub kind: String,
    /// Path or remote location (PBS snapshot, storage volid).
    pub location: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub created_at: i64,
    pub verified_at: Option<i64>,
    pub run_id: Option<i64>,
}

/// A catalogued backup's status (stored and printed as `complete`,
/// `failed_verify`, `deleting`, `missing`, `deleted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Complete,
    FailedVerify,
    /// Retention is deleting it: the row is marked before any file goes, so
    /// a run killed half way leaves a row the next prune finishes.
    Deleting,
    /// The artifact vanished without retention deleting it (removed by
    /// hand, a lost disk): left out of retention and of "newest verified",
    /// reported once. A verification that finds the file again revives it
    /// ([`Store::set_verified`]).
    Missing,
    /// The artifact is gone; the row stays for history.
    Deleted,
}

impl BackupStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupStatus::Complete => "complete",
            BackupStatus::FailedVerify => "failed_verify",
            BackupStatus::Deleting => "deleting",
            BackupStatus::Missing => "missing",
            BackupStatus::Deleted => "deleted",
        }
    }

    /// Whether the artifact is expected to be there (`complete` or
    /// `failed_verify`): the rows retention plans over and verification
    /// checks.
    pub fn is_present(self) -> bool {
        matches!(self, BackupStatus::Complete | BackupStatus::FailedVerify)
    }
}

impl fmt::Display for BackupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for BackupStatus {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "complete" => BackupStatus::Complete,
            "failed_verify" => BackupStatus::FailedVerify,
            "deleting" => BackupStatus::Deleting,
            "missing" => BackupStatus::Missing,
            "deleted" => BackupStatus::Deleted,
            _ => return Err(format!("unknown backup status '{s}'")),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupRecord {
    pub id: i64,
    pub service: String,
    pub kind: String,
    pub location: String,
    pub size: u64,
    pub sha256: Option<String>,
    pub created_at: i64,
    pub verified_at: Option<i64>,
    pub status: BackupStatus,
    pub run_id: Option<i64>,
    /// When it was deleted (status `deleted`), or found missing (status
    /// `missing`).
    pub deleted_at: Option<i64>,
}

/// Outcome of one notification attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationStatus {
    Sent,
    Failed,
    /// Not sent on purpose (cooldown, fail_after not reached, quiet hours).
    Suppressed,
}

impl NotificationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Sent => "sent",
            NotificationStatus::Failed => "failed",
            NotificationStatus::Suppressed => "suppressed",
        }
    }
}

impl fmt::Display for NotificationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<NotificationStatus> for String {
    fn from(s: NotificationStatus) -> String {
        s.as_str().to_string()
    }
}

impl FromStr for NotificationStatus {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "sent" => NotificationStatus::Sent,
            "failed" => NotificationStatus::Failed,
            "suppressed" => NotificationStatus::Suppressed,
            _ => return Err(format!("unknown notification status '{s}'")),
        })
    }
}

/// A notification attempt to record (the notification engine's audit log).
#[derive(Debug, Clone, Serialize)]
pub struct NotificationRecord {
    pub run_id: Option<i64>,
    /// Channel name from the config (never its URL: URLs carry tokens).
    pub channel: String,
    /// Event type, e.g. `backup.failed`, `check.down`.
    pub event: String,
    /// `info`, `warning`, `critical`, ...
    pub severity: String,
    /// `sent`, `failed` or `suppressed` (see [`NotificationStatus`]);
    /// anything else is refused by [`Store::record_notification`].
    pub status: String,
    /// Why it failed or was suppressed. Redacted before it is stored.
    pub error: Option<String>,
}

/// A recorded notification attempt.
#[derive(Debug, Clone, Serialize)]
pub struct NotificationInfo {
    pub id: i64,
    pub ts: i64,
    #[serde(flatten)]
    pub record: NotificationRecord,
}

pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (creating dirs and file as needed) and migrate.
    pub fn open(path: &Path) -> Result<Store> {
        Self::open_with(path, migrations::MIGRATIONS)
    }

    fn open_with(path: &Path, migrations: &[&str]) -> Result<Store> {
        let state_err = |source| Error::State {
            path: path.to_path_buf(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| Error::io(parent, e))?;
        }
        secure_file(path)?;
        let mut conn = Connection::open(path).map_err(state_err)?;
        configure(&conn).map_err(state_err)?;
        migrations::migrate(&mut conn, migrations).map_err(state_err)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `PRAGMA integrity_check`: an empty list when the database is sound,
    /// else the problems SQLite found.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("PRAGMA integrity_check")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            let v = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(if v.len() == 1 && v[0] == "ok" {
                Vec::new()
            } else {
                v
            })
        })
    }

    /// Run `f` on the connection, mapping SQLite errors to `Error::State`.
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        // A panic while holding the lock cannot leave a transaction open
        // (rusqlite rolls back on drop), so a poisoned lock is still usable.
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn).map_err(|source| Error::State {
            path: self.path.clone(),
            source,
        })
    }
}

/// Create the database file 0600 before SQLite does (SQLite would use the
/// umask; its `-wal`/`-shm` files copy the database file's mode), and
/// tighten an existing one that is readable by others.
fn secure_file(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let mode = file
        .metadata()
        .map_err(|e| Error::io(path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        file.set_permissions(Permissions::from_mode(0o600))
            .map_err(|e| Error::io(path, e))?;
    }
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        let side = PathBuf::from(side);
        if let Ok(meta) = std::fs::symlink_metadata(&side) {
            if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&side, Permissions::from_mode(0o600))
                    .map_err(|e| Error::io(&side, e))?;
            }
        }
    }
    Ok(())
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First, so that everything after it (switching to WAL, migrating)
    // waits for another process instead of failing.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(failure(format!(
            "cannot switch to WAL mode (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// A store-level error (not found, unsupported schema) as a rusqlite error,
/// so that it travels as `Error::State` (exit 74) with a readable message.
pub(crate) fn failure(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
        Some(message),
    )
}

/// Like [`failure`], with the NOTFOUND code (an id that is not there).
pub(crate) fn not_found(message: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTFOUND),
        Some(message),
    )
}

/// A column that does not parse (bad JSON, unknown enum value).
fn bad_column(
    idx: usize,
    err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, err.into())
}

/// Unix seconds.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A `LIMIT` parameter.
fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
