//! Update transactions (migration 6): one row per service per `run update`,
//! written before anything changes and moved along as the update goes, so
//! a run killed half-way leaves what the next run needs to finish it.

use super::{bad_column, now, Store};
use crate::error::Result;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;
use serde_json::Value;

/// One update transaction as stored.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateRow {
    pub id: i64,
    pub run_id: Option<i64>,
    pub service: String,
    pub kind: String,
    pub step: String,
    /// None while the transaction is open.
    pub outcome: Option<String>,
    pub before: Value,
    pub after: Option<Value>,
    pub detail: Value,
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
}

const COLUMNS: &str = "id, run_id, service, kind, step, outcome, before, after, detail, pid, \
                       pid_start, started_at, finished_at";

fn json(idx: usize, s: &str) -> rusqlite::Result<Value> {
    serde_json::from_str(s).map_err(|e| bad_column(idx, e))
}

fn row(r: &Row) -> rusqlite::Result<UpdateRow> {
    let after: Option<String> = r.get(7)?;
    Ok(UpdateRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        service: r.get(2)?,
        kind: r.get(3)?,
        step: r.get(4)?,
        outcome: r.get(5)?,
        before: json(6, &r.get::<_, String>(6)?)?,
        after: after.map(|a| json(7, &a)).transpose()?,
        detail: json(8, &r.get::<_, String>(8)?)?,
        pid: r.get(9)?,
        pid_start: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
    })
}

fn text(v: &Value) -> String {
    let mut v = v.clone();
    crate::redact::scrub_json(&mut v);
    v.to_string()
}

impl Store {
    /// Open a transaction for `service`: what runs before the update
    /// (`before`) is on disk before anything changes.
    pub fn update_begin(
        &self,
        run_id: Option<i64>,
        service: &str,
        kind: &str,
        before: &Value,
        pid: u32,
        pid_start: u64,
    ) -> Result<i64> {
        let before = text(before);
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO updates (run_id, service, kind, step, before, pid, pid_start, started_at)
                 VALUES (?1, ?2, ?3, 'recorded', ?4, ?5, ?6, ?7)",
            )?
            .execute(params![run_id, service, kind, before, pid, pid_start as i64, now()])?;
            Ok(c.last_insert_rowid())
        })
    }

    /// The step an open transaction has reached.
    pub fn update_step(&self, id: i64, step: &str) -> Result<()> {
        self.with(|c| {
            c.prepare_cached("UPDATE updates SET step = ?2 WHERE id = ?1 AND finished_at IS NULL")?
                .execute(params![id, step])?;
            Ok(())
        })
    }

    /// Close a transaction with its outcome.
    pub fn update_finish(
        &self,
        id: i64,
        outcome: &str,
        after: Option<&Value>,
        detail: &Value,
    ) -> Result<()> {
        let after = after.map(text);
        let detail = text(detail);
        self.with(|c| {
            c.prepare_cached(
                "UPDATE updates SET step = 'done', outcome = ?2, after = ?3, detail = ?4,
                        finished_at = ?5 WHERE id = ?1",
            )?
            .execute(params![id, outcome, after, detail, now()])?;
            Ok(())
        })
    }

    /// One transaction by id.
    pub fn update(&self, id: i64) -> Result<Option<UpdateRow>> {
        self.with(|c| {
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM updates WHERE id = ?1"))?
                .query_row([id], row)
                .optional()
        })
    }

    /// Transactions not finished, oldest first.
    pub fn updates_open(&self) -> Result<Vec<UpdateRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM updates WHERE finished_at IS NULL ORDER BY id"
            ))?;
            let rows = st.query_map([], row)?.collect();
            rows
        })
    }

    /// The finished transactions of `service`, newest first, at most
    /// `limit`.
    pub fn updates_of(&self, service: &str, limit: usize) -> Result<Vec<UpdateRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM updates WHERE service = ?1 AND finished_at IS NOT NULL
                 ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = st
                .query_map(rusqlite::params![service, limit as i64], row)?
                .collect();
            rows
        })
    }

    /// The newest finished transaction of each service.
    pub fn last_updates(&self) -> Result<Vec<UpdateRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM updates WHERE id IN
                   (SELECT MAX(id) FROM updates WHERE finished_at IS NOT NULL GROUP BY service)
                 ORDER BY service"
            ))?;
            let rows = st.query_map([], row)?.collect();
            rows
        })
    }

    /// (service, outcome, finished_at) of each service's last finished
    /// update, for the metrics file.
    pub fn update_metrics(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(self
            .last_updates()?
            .into_iter()
            .filter_map(|u| Some((u.service, u.outcome?, u.finished_at?)))
            .collect())
    }

    /// Count of finished transactions per (service, outcome).
    pub fn update_counts(&self) -> Result<Vec<(String, String, i64)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT service, outcome, COUNT(*) FROM updates WHERE outcome IS NOT NULL
                 GROUP BY service, outcome ORDER BY service, outcome",
            )?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect();
            rows
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_transaction_is_open_until_finished_and_outcomes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db")).unwrap();
        let id = s
            .update_begin(None, "web", "docker", &json!({"kind": "docker"}), 42, 7)
            .unwrap();
        s.update_step(id, "applying").unwrap();
        let open = s.updates_open().unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(
            (open[0].step.as_str(), open[0].pid, open[0].pid_start),
            ("applying", Some(42), Some(7))
        );
        assert!(s.last_updates().unwrap().is_empty());
        // The CHECK refuses an outcome that is not one of the six.
        assert!(s.update_finish(id, "fine", None, &json!({})).is_err());
        s.update_finish(
            id,
            "rolled_back",
            Some(&json!([{"image_id": "sha256:1"}])),
            &json!({"summary": "x"}),
        )
        .unwrap();
        assert!(s.updates_open().unwrap().is_empty());
        let last = s.last_updates().unwrap();
        assert_eq!(last[0].outcome.as_deref(), Some("rolled_back"));
        assert_eq!(last[0].after.as_ref().unwrap()[0]["image_id"], "sha256:1");
        assert_eq!(
            s.update_counts().unwrap(),
            vec![("web".to_string(), "rolled_back".to_string(), 1)]
        );
    }
}
