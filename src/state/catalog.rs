//! The backup catalog: one row per artifact (archive file, vzdump, PBS
//! snapshot), unique by location.

use super::{bad_column, not_found, BackupRecord, NewBackup, Store};
use crate::error::Result;
use rusqlite::{params, OptionalExtension, Row};

const COLS: &str = "id, service, kind, location, size, sha256, created_at, verified_at, status, \
                    run_id, deleted_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<BackupRecord> {
    let size: i64 = r.get(4)?;
    Ok(BackupRecord {
        id: r.get(0)?,
        service: r.get(1)?,
        kind: r.get(2)?,
        location: r.get(3)?,
        size: u64::try_from(size).map_err(|e| bad_column(4, e))?,
        sha256: r.get(5)?,
        created_at: r.get(6)?,
        verified_at: r.get(7)?,
        status: r
            .get::<_, String>(8)?
            .parse()
            .map_err(|e: String| bad_column(8, e))?,
        run_id: r.get(9)?,
        deleted_at: r.get(10)?,
    })
}

impl Store {
    /// Add a backup with status `complete`. A row with the same location
    /// (a re-import, a re-run writing the same name) is updated in place,
    /// undeleted, and keeps its id.
    pub fn record_backup(&self, b: &NewBackup) -> Result<i64> {
        self.with(|c| {
            let size = i64::try_from(b.size).map_err(|_| {
                super::failure(format!("{}: size {} out of range", b.location, b.size))
            })?;
            c.prepare_cached(
                "INSERT INTO backups
                   (service, kind, location, size, sha256, created_at, verified_at, status, run_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'complete', ?8)
                 ON CONFLICT (location) DO UPDATE SET
                   service = excluded.service, kind = excluded.kind, size = excluded.size,
                   sha256 = excluded.sha256, created_at = excluded.created_at,
                   verified_at = excluded.verified_at, status = 'complete',
                   run_id = excluded.run_id, deleted_at = NULL
                 RETURNING id",
            )?
            .query_row(
                params![
                    b.service,
                    b.kind,
                    b.location,
                    size,
                    b.sha256,
                    b.created_at,
                    b.verified_at,
                    b.run_id
                ],
                |r| r.get(0),
            )
        })
    }

    /// Catalog rows (of one service, or all), newest first; rows with
    /// status `deleted` only when `include_deleted`.
    pub fn backups(
        &self,
        service: Option<&str>,
        include_deleted: bool,
    ) -> Result<Vec<BackupRecord>> {
        self.with(|c| {
            let deleted = if include_deleted {
                ""
            } else {
                "AND status <> 'deleted'"
            };
            match service {
                Some(s) => c
                    .prepare_cached(&format!(
                        "SELECT {COLS} FROM backups WHERE service = ?1 {deleted}
                         ORDER BY created_at DESC, id DESC"
                    ))?
                    .query_map([s], from_row)?
                    .collect(),
                None => c
                    .prepare_cached(&format!(
                        "SELECT {COLS} FROM backups WHERE 1 {deleted}
                         ORDER BY created_at DESC, id DESC"
                    ))?
                    .query_map([], from_row)?
                    .collect(),
            }
        })
    }

    pub fn backup(&self, id: i64) -> Result<Option<BackupRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {COLS} FROM backups WHERE id = ?1"))?
                .query_row([id], from_row)
                .optional()
        })
    }

    pub fn backup_by_location(&self, location: &str) -> Result<Option<BackupRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {COLS} FROM backups WHERE location = ?1"))?
                .query_row([location], from_row)
                .optional()
        })
    }

    /// Record a verification: `ok` sets `verified_at = at` and status
    /// `complete`; a failure sets status `failed_verify` (and keeps the
    /// previous `verified_at`). A `missing` row is revived either way (its
    /// file was found again); a `deleted` or `deleting` row keeps its status.
    pub fn set_verified(&self, id: i64, ok: bool, at: i64) -> Result<()> {
        self.with(|c| {
            let n = if ok {
                c.execute(
                    "UPDATE backups SET verified_at = ?2,
                       deleted_at = CASE status WHEN 'missing' THEN NULL ELSE deleted_at END,
                       status = CASE WHEN status IN ('deleted', 'deleting') THEN status
                                     ELSE 'complete' END
                     WHERE id = ?1",
                    params![id, at],
                )?
            } else {
                c.execute(
                    "UPDATE backups
                     SET deleted_at = CASE status WHEN 'missing' THEN NULL ELSE deleted_at END,
                         status = CASE WHEN status IN ('deleted', 'deleting') THEN status
                                       ELSE 'failed_verify' END
                     WHERE id = ?1",
                    [id],
                )?
            };
            if n == 0 {
                return Err(not_found(format!("no backup with id {id}")));
            }
            Ok(())
        })
    }

    /// Mark rows `deleting`, all in one transaction: retention does this
    /// before it removes any file, so a run killed half way leaves rows the
    /// next prune finishes ([`Store::mark_deleted`] once the files are gone).
    /// A `deleted` row stays deleted.
    pub fn mark_deleting(&self, ids: &[i64]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for &id in ids {
                let n = tx.execute(
                    "UPDATE backups SET status = 'deleting' WHERE id = ?1 AND status <> 'deleted'",
                    [id],
                )?;
                if n == 0 && !exists(&tx, id)? {
                    return Err(not_found(format!("no backup with id {id}")));
                }
            }
            tx.commit()
        })
    }

    /// Mark a row `missing` (its artifact vanished without retention
    /// deleting it), with `deleted_at = at` as when it was noticed. Only a
    /// `complete` or `failed_verify` row changes: returns whether this one
    /// did, so that a vanished file is reported once.
    pub fn mark_missing(&self, id: i64, at: i64) -> Result<bool> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE backups SET status = 'missing', deleted_at = ?2
                 WHERE id = ?1 AND status IN ('complete', 'failed_verify')",
                params![id, at],
            )?;
            if n == 0 && !exists(c, id)? {
                return Err(not_found(format!("no backup with id {id}")));
            }
            Ok(n == 1)
        })
    }

    /// Mark a backup deleted (the artifact is gone); the row stays for
    /// history. Deleting an already deleted row keeps its first `deleted_at`;
    /// a `missing` row's `deleted_at` (when it was noticed) is kept too.
    pub fn mark_deleted(&self, id: i64, at: i64) -> Result<()> {
        self.with(|c| {
            let n = c.execute(
                "UPDATE backups SET status = 'deleted', deleted_at = coalesce(deleted_at, ?2)
                 WHERE id = ?1",
                params![id, at],
            )?;
            if n == 0 {
                return Err(not_found(format!("no backup with id {id}")));
            }
            Ok(())
        })
    }
}

fn exists(c: &rusqlite::Connection, id: i64) -> rusqlite::Result<bool> {
    c.prepare_cached("SELECT 1 FROM backups WHERE id = ?1")?
        .query_row([id], |_| Ok(()))
        .optional()
        .map(|r| r.is_some())
}
