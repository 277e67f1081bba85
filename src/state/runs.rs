//! Runs, their event tail, and notification records.

use super::{
    bad_column, not_found, now, now_ms, EventInfo, NotificationInfo, NotificationRecord,
    NotificationStatus, RunInfo, RunStatus, Store, EVENT_MESSAGE_MAX, EVENT_TAIL,
};
use crate::error::Result;
use crate::redact::scrub;
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};

const RUN_COLS: &str =
    "id, workflow, services, dry_run, started_at, finished_at, status, summary, pid, hostname";

/// Summary written by [`Store::abort_stale_runs`].
pub const ABORTED_SUMMARY: &str = "process died before the run finished";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<RunInfo> {
    let services: String = r.get(2)?;
    let status: String = r.get(6)?;
    Ok(RunInfo {
        id: r.get(0)?,
        workflow: r.get(1)?,
        services: serde_json::from_str(&services).map_err(|e| bad_column(2, e))?,
        dry_run: r.get(3)?,
        started_at: r.get(4)?,
        finished_at: r.get(5)?,
        status: status.parse().map_err(|e: String| bad_column(6, e))?,
        summary: r.get(7)?,
        pid: r.get(8)?,
        hostname: r.get(9)?,
    })
}

/// Cut `s` to at most `max` bytes on a char boundary, marking the cut.
fn truncate(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

impl Store {
    /// Record the start of a run (status `running`, this process's pid and
    /// the hostname) and return its id.
    pub fn begin_run(&self, workflow: &str, services: &[String], dry_run: bool) -> Result<i64> {
        let services = serde_json::to_string(services).expect("a list of strings serializes");
        let host = crate::system::hostname();
        self.with(|c| {
            // No fsync for the start row: it stands between the process
            // start and the workflow's first action (on an SD card or a
            // busy disk an fsync can take tens of ms), and losing it to a
            // power cut loses nothing. WAL keeps the DB consistent either
            // way; the next commit (an event batch, the finish) is synced
            // and carries it.
            c.pragma_update(None, "synchronous", "NORMAL")?;
            let res = c.execute(
                "INSERT INTO runs (workflow, services, dry_run, started_at, started_ms, status, pid,
                                   hostname)
                 VALUES (?1, ?2, ?3, ?4 / 1000, ?4, 'running', ?5, ?6)",
                params![workflow, services, dry_run, now_ms(), std::process::id(), host],
            );
            c.pragma_update(None, "synchronous", "FULL")?;
            res?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Record a run that did not start because another run of the workflow
    /// held its lock: one finished row with status `skipped`.
    pub fn record_skipped_run(
        &self,
        workflow: &str,
        services: &[String],
        summary: &str,
    ) -> Result<i64> {
        let services = serde_json::to_string(services).expect("a list of strings serializes");
        let summary = scrub(summary);
        let host = crate::system::hostname();
        self.with(|c| {
            let t = now();
            c.execute(
                "INSERT INTO runs (workflow, services, dry_run, started_at, finished_at, status,
                                   summary, pid, hostname)
                 VALUES (?1, ?2, 0, ?3, ?3, ?4, ?5, ?6, ?7)",
                params![
                    workflow,
                    services,
                    t,
                    RunStatus::Skipped.as_str(),
                    summary,
                    std::process::id(),
                    host
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// Record the end of a run. `status` must not be `Running`.
    pub fn finish_run(&self, id: i64, status: RunStatus, summary: &str) -> Result<()> {
        let summary = scrub(summary);
        self.with(|c| {
            if status == RunStatus::Running {
                return Err(super::failure(format!(
                    "finish_run({id}): 'running' is not a final status"
                )));
            }
            let n = c.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3 / 1000, finished_ms = ?3, summary = ?4
                 WHERE id = ?1",
                params![id, status.as_str(), now_ms(), summary],
            )?;
            if n == 0 {
                return Err(not_found(format!("no run with id {id}")));
            }
            Ok(())
        })
    }

    /// Mark every `running` run of `workflow` as `aborted`. Call it while
    /// holding the workflow lock and before [`Store::begin_run`]: the lock
    /// proves no live process is running this workflow, so any `running`
    /// row is left over from a process that died. Returns how many.
    pub fn abort_stale_runs(&self, workflow: &str) -> Result<usize> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = 'aborted', finished_at = ?2, summary = ?3
                 WHERE workflow = ?1 AND status = 'running'",
                params![workflow, now(), ABORTED_SUMMARY],
            )
        })
    }

    pub fn run(&self, id: i64) -> Result<Option<RunInfo>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = ?1"),
                [id],
                run_from_row,
            )
            .optional()
        })
    }

    /// The newest `limit` runs (of one workflow, or all), newest first.
    pub fn recent_runs(&self, workflow: Option<&str>, limit: usize) -> Result<Vec<RunInfo>> {
        self.with(|c| {
            // Two statements: `?1 IS NULL OR workflow = ?1` would not use
            // the (workflow, id) index.
            let n = super::limit(limit);
            match workflow {
                Some(w) => c
                    .prepare_cached(&format!(
                        "SELECT {RUN_COLS} FROM runs WHERE workflow = ?1 ORDER BY id DESC LIMIT ?2"
                    ))?
                    .query_map(params![w, n], run_from_row)?
                    .collect(),
                None => c
                    .prepare_cached(&format!(
                        "SELECT {RUN_COLS} FROM runs ORDER BY id DESC LIMIT ?1"
                    ))?
                    .query_map([n], run_from_row)?
                    .collect(),
            }
        })
    }

    /// The newest run of each workflow, ordered by workflow name.
    pub fn last_runs(&self) -> Result<Vec<RunInfo>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {RUN_COLS} FROM runs
                 WHERE id IN (SELECT max(id) FROM runs WHERE status != 'skipped'
                              GROUP BY workflow)
                 ORDER BY workflow"
            ))?;
            let rows = st.query_map([], run_from_row)?;
            rows.collect()
        })
    }

    /// Append to a run's log tail; only the newest [`EVENT_TAIL`] events of
    /// a run are kept. Messages are redacted and cut to
    /// [`EVENT_MESSAGE_MAX`] bytes.
    pub fn add_event(
        &self,
        run_id: i64,
        level: &str,
        service: Option<&str>,
        message: &str,
    ) -> Result<()> {
        self.add_events(run_id, &[(now(), level, service, message)])
    }

    /// [`Store::add_event`] for several `(ts, level, service, message)`
    /// events, in order, in one transaction (one fsync).
    pub fn add_events(
        &self,
        run_id: i64,
        events: &[(i64, &str, Option<&str>, &str)],
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len() as i64;
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // A per-run sequence number makes pruning one index range delete
            // (usually of one row) instead of counting the run's events.
            let last: i64 = tx
                .query_row(
                    "UPDATE runs SET event_seq = event_seq + ?2 WHERE id = ?1 RETURNING event_seq",
                    params![run_id, n],
                    |r| r.get(0),
                )
                .optional()?
                .ok_or_else(|| not_found(format!("no run with id {run_id}")))?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO run_events (run_id, seq, ts, level, service, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                for (i, (ts, level, service, message)) in events.iter().enumerate() {
                    let seq = last - n + 1 + i as i64;
                    if seq <= last - EVENT_TAIL {
                        continue; // pruned at once below
                    }
                    let message = scrub(message);
                    let message = truncate(&message, EVENT_MESSAGE_MAX);
                    ins.execute(params![run_id, seq, ts, level, service, message])?;
                }
            }
            if last > EVENT_TAIL {
                tx.prepare_cached("DELETE FROM run_events WHERE run_id = ?1 AND seq <= ?2")?
                    .execute(params![run_id, last - EVENT_TAIL])?;
            }
            tx.commit()
        })
    }

    /// The last `limit` events of a run, oldest first.
    pub fn run_events(&self, run_id: i64, limit: usize) -> Result<Vec<EventInfo>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT ts, level, service, message FROM
                   (SELECT seq, ts, level, service, message FROM run_events
                    WHERE run_id = ?1 ORDER BY seq DESC LIMIT ?2)
                 ORDER BY seq",
            )?;
            let rows = st.query_map(params![run_id, super::limit(limit)], |r| {
                Ok(EventInfo {
                    ts: r.get(0)?,
                    level: r.get(1)?,
                    service: r.get(2)?,
                    message: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Record a notification attempt (timestamped now); returns its id.
    pub fn record_notification(&self, n: &NotificationRecord) -> Result<i64> {
        let error = n.error.as_deref().map(scrub);
        self.with(|c| {
            let status: NotificationStatus = n
                .status
                .parse()
                .map_err(|e: String| super::failure(format!("record_notification: {e}")))?;
            c.execute(
                "INSERT INTO notifications (run_id, channel, event, severity, status, error, ts)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    n.run_id,
                    n.channel,
                    n.event,
                    n.severity,
                    status.as_str(),
                    error,
                    now()
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// The newest `limit` notification records (of one channel, or all),
    /// newest first.
    pub fn recent_notifications(
        &self,
        channel: Option<&str>,
        limit: usize,
    ) -> Result<Vec<NotificationInfo>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, ts, run_id, channel, event, severity, status, error
                 FROM notifications WHERE ?1 IS NULL OR channel = ?1
                 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![channel, super::limit(limit)], |r| {
                Ok(NotificationInfo {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    record: NotificationRecord {
                        run_id: r.get(2)?,
                        channel: r.get(3)?,
                        event: r.get(4)?,
                        severity: r.get(5)?,
                        status: r.get(6)?,
                        error: r.get(7)?,
                    },
                })
            })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_on_char_boundary() {
        assert_eq!(truncate("hello", 10), "hello");
        let t = truncate("ééééé", 6); // 10 bytes; '…' is 3
        assert!(t.len() <= 6, "{t}");
        assert!(t.ends_with('…'));
        assert_eq!(t, "é…");
    }
}
