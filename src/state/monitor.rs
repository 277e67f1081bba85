//! Notification cooldowns and monitor alert state (migration v2): one row
//! per health check with its UP/DOWN state machine, a history of results,
//! and (v3) one row per service and cycle for uptime percentages.

use super::{now, Store};
use crate::error::Result;
use crate::redact::scrub;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::fmt;

/// History older than this is pruned (uptime is shown over 30 days).
const HISTORY_KEEP_SECS: i64 = 31 * 86_400;

/// A check's alert state (stored and printed as `unknown`, `up`, `down`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// Never checked yet.
    Unknown,
    Up,
    Down,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Unknown => "unknown",
            CheckStatus::Up => "up",
            CheckStatus::Down => "down",
        }
    }

    /// A stored status; anything else reads as `unknown`.
    pub fn parse(s: &str) -> CheckStatus {
        match s {
            "up" => CheckStatus::Up,
            "down" => CheckStatus::Down,
            _ => CheckStatus::Unknown,
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The persisted alert state of one check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckState {
    /// `service/check`.
    pub id: String,
    pub service: String,
    pub name: String,
    pub status: CheckStatus,
    pub fails: u32,
    pub oks: u32,
    pub since: i64,
    pub last_checked: i64,
    pub last_alert: Option<i64>,
    /// A DOWN alert went out (so a recovery is told too).
    pub alerted: bool,
    pub message: String,
}

impl Store {
    /// When an alert with this cooldown key was last sent.
    pub fn cooldown_last(&self, key: &str) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row(
                "SELECT last_sent FROM notify_cooldowns WHERE key = ?1",
                params![key],
                |r| r.get(0),
            )
            .optional()
        })
    }

    pub fn cooldown_touch(&self, key: &str, ts: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO notify_cooldowns (key, last_sent) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET last_sent = excluded.last_sent",
                params![key, ts],
            )
            .map(|_| ())
        })
    }

    /// Failed deliveries (any channel) since `channel` last got a message through.
    pub fn notification_failures_since_sent(&self, channel: &str) -> Result<usize> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM notifications WHERE status = 'failed' AND id >
                 coalesce((SELECT max(id) FROM notifications WHERE channel = ?1 AND status = 'sent'), 0)",
                params![channel],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as usize)
        })
    }

    pub fn check_state(&self, id: &str) -> Result<Option<CheckState>> {
        self.with(|c| {
            c.query_row(
                "SELECT id, service, name, status, fails, oks, since, last_checked, last_alert,
                        alerted, message FROM monitor_checks WHERE id = ?1",
                params![id],
                state_from_row,
            )
            .optional()
        })
    }

    /// Every check's state, by service and name.
    pub fn check_states(&self) -> Result<Vec<CheckState>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, service, name, status, fails, oks, since, last_checked, last_alert,
                        alerted, message FROM monitor_checks ORDER BY service, name",
            )?;
            let rows = st.query_map([], state_from_row)?;
            rows.collect()
        })
    }

    /// Save one cycle's check states and add their results to the
    /// history, in one transaction (one fsync for the whole cycle). `cycle`
    /// identifies the monitor cycle; `results` are (state, ok, latency).
    pub fn save_check_results(
        &self,
        cycle: i64,
        results: &[(CheckState, bool, Option<u64>)],
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut up = tx.prepare_cached(
                    "INSERT INTO monitor_checks (id, service, name, status, fails, oks, since,
                         last_checked, last_alert, alerted, message)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status,
                         fails = excluded.fails, oks = excluded.oks, since = excluded.since,
                         last_checked = excluded.last_checked, last_alert = excluded.last_alert,
                         alerted = excluded.alerted, message = excluded.message",
                )?;
                let mut hist = tx.prepare_cached(
                    "INSERT INTO monitor_history (check_id, ts, cycle, ok, latency_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?;
                let mut svc = tx.prepare_cached(
                    "INSERT INTO monitor_service_cycles (service, cycle, ok) VALUES (?1, ?2, ?3)
                     ON CONFLICT (service, cycle) DO UPDATE SET ok = min(ok, excluded.ok)",
                )?;
                let mut services: std::collections::BTreeMap<&str, bool> = Default::default();
                for (s, ok, _) in results {
                    *services.entry(s.service.as_str()).or_insert(true) &= *ok;
                }
                let mut prune = tx.prepare_cached(
                    "DELETE FROM monitor_service_cycles WHERE service = ?1 AND cycle < ?2",
                )?;
                for (service, ok) in services {
                    svc.execute(params![service, cycle, ok])?;
                    prune.execute(params![service, (now() - HISTORY_KEEP_SECS) * 1000])?;
                }
                for (s, ok, latency_ms) in results {
                    let message = scrub(&s.message).into_owned();
                    up.execute(params![
                        s.id,
                        s.service,
                        s.name,
                        s.status.as_str(),
                        s.fails,
                        s.oks,
                        s.since,
                        s.last_checked,
                        s.last_alert,
                        s.alerted,
                        message
                    ])?;
                    hist.execute(params![
                        s.id,
                        s.last_checked,
                        cycle,
                        ok,
                        latency_ms.map(|l| l as i64)
                    ])?;
                }
            }
            tx.execute(
                "DELETE FROM monitor_history WHERE ts < ?1",
                params![now() - HISTORY_KEEP_SECS],
            )?;
            tx.commit()
        })
    }

    /// Uptime of a service since `since` (unix seconds): the percentage of
    /// monitor cycles in which every one of its checks passed. None: no
    /// results.
    pub fn uptime(&self, service: &str, since: i64) -> Result<Option<f64>> {
        self.with(|c| {
            let (total, ok): (i64, i64) = c
                .prepare_cached(
                    "SELECT count(*), coalesce(sum(ok), 0) FROM monitor_service_cycles
                     WHERE service = ?1 AND cycle >= ?2",
                )?
                .query_row(params![service, since.saturating_mul(1000)], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            Ok((total > 0).then(|| ok as f64 * 100.0 / total as f64))
        })
    }

    /// The alert state of one service's checks.
    pub fn service_check_states(&self, service: &str) -> Result<Vec<CheckState>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, service, name, status, fails, oks, since, last_checked, last_alert,
                        alerted, message FROM monitor_checks WHERE service = ?1 ORDER BY name",
            )?;
            let rows = st.query_map([service], state_from_row)?;
            rows.collect()
        })
    }
}

fn state_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CheckState> {
    Ok(CheckState {
        id: r.get(0)?,
        service: r.get(1)?,
        name: r.get(2)?,
        status: CheckStatus::parse(&r.get::<_, String>(3)?),
        fails: r.get(4)?,
        oks: r.get(5)?,
        since: r.get(6)?,
        last_checked: r.get(7)?,
        last_alert: r.get(8)?,
        alerted: r.get(9)?,
        message: r.get(10)?,
    })
}
