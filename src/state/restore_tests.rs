//! Restore tests (`restore_tests`, migration 7): a row is written before
//! the isolated environment is built, updated with what was created and
//! with the outcome, and marked `cleaned_up` once the environment is gone.

use super::{bad_column, now, Store};
use crate::error::Result;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use serde_json::Value;

/// One restore test as stored.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreTestRecord {
    pub id: i64,
    pub run_id: Option<i64>,
    pub service: String,
    pub kind: String,
    pub backup_id: Option<i64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub success: Option<bool>,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<i64>,
    pub checks_passed: i64,
    pub checks_failed: i64,
    pub checks: Value,
    pub environment: Value,
    pub error: Option<String>,
    pub pid: Option<i64>,
    pub cleanup_after: Option<i64>,
    pub cleaned_up: bool,
}

/// The outcome of a restore test.
#[derive(Debug, Clone, Default)]
pub struct RestoreTestOutcome {
    pub success: bool,
    pub rto_seconds: Option<f64>,
    pub rpo_seconds: Option<i64>,
    pub checks_passed: i64,
    pub checks_failed: i64,
    pub checks: Value,
    pub error: Option<String>,
    pub cleanup_after: i64,
}

const COLS: &str = "id, run_id, service, kind, backup_id, started_at, finished_at, success, \
                    rto_seconds, rpo_seconds, checks_passed, checks_failed, checks, environment, \
                    error, pid, cleanup_after, cleaned_up";

fn json(idx: usize, s: String) -> rusqlite::Result<Value> {
    serde_json::from_str(&s).map_err(|e| bad_column(idx, e))
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<RestoreTestRecord> {
    Ok(RestoreTestRecord {
        id: r.get(0)?,
        run_id: r.get(1)?,
        service: r.get(2)?,
        kind: r.get(3)?,
        backup_id: r.get(4)?,
        started_at: r.get(5)?,
        finished_at: r.get(6)?,
        success: r.get::<_, Option<i64>>(7)?.map(|v| v != 0),
        rto_seconds: r.get(8)?,
        rpo_seconds: r.get(9)?,
        checks_passed: r.get(10)?,
        checks_failed: r.get(11)?,
        checks: json(12, r.get(12)?)?,
        environment: json(13, r.get(13)?)?,
        error: r.get(14)?,
        pid: r.get(15)?,
        cleanup_after: r.get(16)?,
        cleaned_up: r.get::<_, i64>(17)? != 0,
    })
}

impl Store {
    /// Start a restore test: the row exists before anything is built.
    pub fn begin_restore_test(
        &self,
        run_id: Option<i64>,
        service: &str,
        kind: &str,
        backup_id: Option<i64>,
    ) -> Result<i64> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO restore_tests (run_id, service, kind, backup_id, started_at, pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            )?
            .query_row(
                params![run_id, service, kind, backup_id, now(), std::process::id()],
                |r| r.get(0),
            )
        })
    }

    /// What the test has created (or is about to create).
    pub fn set_restore_test_environment(&self, id: i64, env: &Value) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("UPDATE restore_tests SET environment = ?2 WHERE id = ?1")?
                .execute(params![id, env.to_string()])
                .map(drop)
        })
    }

    /// Record how the test ended.
    pub fn finish_restore_test(&self, id: i64, o: &RestoreTestOutcome) -> Result<()> {
        let error = o
            .error
            .as_deref()
            .map(|e| crate::redact::scrub(e).into_owned());
        let mut checks = o.checks.clone();
        crate::redact::scrub_json(&mut checks);
        self.with(|c| {
            c.prepare_cached(
                "UPDATE restore_tests SET finished_at = ?2, success = ?3, rto_seconds = ?4,
                   rpo_seconds = ?5, checks_passed = ?6, checks_failed = ?7, checks = ?8,
                   error = ?9, cleanup_after = ?10
                 WHERE id = ?1",
            )?
            .execute(params![
                id,
                now(),
                o.success as i64,
                o.rto_seconds,
                o.rpo_seconds,
                o.checks_passed,
                o.checks_failed,
                checks.to_string(),
                error,
                o.cleanup_after
            ])
            .map(drop)
        })
    }

    /// The environment is gone.
    pub fn mark_restore_test_cleaned(&self, id: i64) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("UPDATE restore_tests SET cleaned_up = 1 WHERE id = ?1")?
                .execute([id])
                .map(drop)
        })
    }

    /// Tests whose environment still exists: unfinished ones (a run that
    /// died), and finished ones whose `cleanup_after` is at or before `at`.
    pub fn restore_tests_to_clean(&self, at: i64) -> Result<Vec<RestoreTestRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLS} FROM restore_tests WHERE cleaned_up = 0
                   AND (finished_at IS NULL OR cleanup_after IS NULL OR cleanup_after <= ?1)
                 ORDER BY id"
            ))?
            .query_map([at], from_row)?
            .collect()
        })
    }

    pub fn restore_test(&self, id: i64) -> Result<Option<RestoreTestRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {COLS} FROM restore_tests WHERE id = ?1"))?
                .query_row([id], from_row)
                .optional()
        })
    }

    /// The finished tests of `service`, newest first, at most `limit`.
    pub fn restore_tests_of(&self, service: &str, limit: usize) -> Result<Vec<RestoreTestRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLS} FROM restore_tests WHERE service = ?1 AND finished_at IS NOT NULL
                 ORDER BY id DESC LIMIT ?2"
            ))?
            .query_map(rusqlite::params![service, limit as i64], from_row)?
            .collect()
        })
    }

    /// The newest finished test of each service.
    pub fn last_restore_tests(&self) -> Result<Vec<RestoreTestRecord>> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {COLS} FROM restore_tests WHERE id IN
                   (SELECT MAX(id) FROM restore_tests WHERE finished_at IS NOT NULL
                    GROUP BY service)
                 ORDER BY service"
            ))?
            .query_map([], from_row)?
            .collect()
        })
    }
}
