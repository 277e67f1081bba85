//! What the Prometheus textfile (`crate::metrics`) reports, read from the
//! state DB in one pass of small grouped queries.

use super::{bad_column, RunStatus, Store};
use crate::error::Result;

/// The last finished (non-dry) run of one workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct JobMetric {
    pub workflow: String,
    /// When a run last ended `success` or `warning`.
    pub last_success: Option<i64>,
    /// Never `Running` (only finished runs are read).
    pub last_status: RunStatus,
    pub last_duration: Option<f64>,
}

/// Figures for the metrics file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    pub jobs: Vec<JobMetric>,
    /// (service, created_at, size) of the newest complete backup.
    pub backups: Vec<(String, i64, i64)>,
    /// (channel, failed deliveries ever recorded).
    pub notification_failures: Vec<(String, i64)>,
    /// (service, up): down when any check is DOWN, up when all are UP;
    /// services whose checks are all still unknown are left out.
    pub services_up: Vec<(String, bool)>,
    /// (service, outcome, finished_at) of the last finished update.
    pub updates: Vec<(String, String, i64)>,
}

impl Store {
    pub fn metrics_snapshot(&self) -> Result<MetricsSnapshot> {
        let mut snap = self.with(|c| {
            let mut out = MetricsSnapshot::default();
            let mut st = c.prepare(
                "SELECT r.workflow, r.status,
                        COALESCE((r.finished_ms - r.started_ms) / 1000.0,
                                 CAST(r.finished_at - r.started_at AS REAL)),
                        (SELECT max(finished_at) FROM runs s WHERE s.workflow = r.workflow
                           AND s.dry_run = 0 AND s.status IN ('success', 'warning'))
                 FROM runs r
                 WHERE r.id IN (SELECT max(id) FROM runs WHERE dry_run = 0 AND status NOT IN ('running', 'skipped')
                                GROUP BY workflow)
                 ORDER BY r.workflow",
            )?;
            out.jobs = st
                .query_map([], |r| {
                    Ok(JobMetric {
                        workflow: r.get(0)?,
                        last_status: r
                            .get::<_, String>(1)?
                            .parse()
                            .map_err(|e: String| bad_column(1, e))?,
                        last_duration: r.get(2)?,
                        last_success: r.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            // SQLite takes the bare column (size) from the row with the max.
            let mut st = c.prepare(
                "SELECT service, max(created_at), size FROM backups WHERE status = 'complete'
                 GROUP BY service ORDER BY service",
            )?;
            out.backups = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut st = c.prepare(
                "SELECT channel, sum(status = 'failed') FROM notifications
                 GROUP BY channel ORDER BY channel",
            )?;
            out.notification_failures = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut st = c.prepare(
                "SELECT service, sum(status = 'down'), sum(status = 'up'), count(*)
                 FROM monitor_checks GROUP BY service ORDER BY service",
            )?;
            out.services_up = st
                .query_map([], |r| {
                    let (down, up, n): (i64, i64, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
                    Ok((r.get::<_, String>(0)?, down, up, n))
                })?
                .filter_map(|row| match row {
                    Ok((s, down, _, _)) if down > 0 => Some(Ok((s, false))),
                    Ok((s, _, up, n)) if up == n => Some(Ok((s, true))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<rusqlite::Result<_>>()?;
            Ok(out)
        })?;
        snap.updates = self.update_metrics()?;
        Ok(snap)
    }
}
