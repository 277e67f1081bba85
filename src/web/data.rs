//! What the page and the API show, read from the state DB in one place. The
//! HTML pages and the JSON API render these same values, so they cannot
//! disagree. Read-only: nothing here writes.
//!
//! The history of a service is a set of named series (`backups` today;
//! `updates` and `restore_tests` once their tables exist): each adds a
//! field to [`History`] and, where it has numbers over time, a [`Chart`].

use crate::config::{Config, ServiceConfig};
use crate::error::Result;
use crate::state::{
    BackupRecord, BackupStatus, CheckState, EventInfo, NotificationInfo, RunInfo, RunStatus, Store,
};
use serde::Serialize;
use std::collections::HashMap;

/// Most runs a list returns.
pub const RUNS_MAX: usize = 500;
/// Log lines shown with a run.
pub const EVENTS_MAX: usize = 2000;
/// History rows (and chart points) per service and series.
pub const HISTORY_MAX: usize = 200;

/// Worst first: the order of the overall health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    Unknown,
    Warning,
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Unknown => "unknown",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
}

/// Something that makes the health less than ok.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub health: Health,
    /// A workflow or service name.
    pub subject: String,
    pub message: String,
}

/// A run with its duration.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    #[serde(flatten)]
    pub run: RunInfo,
    pub duration_seconds: Option<f64>,
}

impl From<RunInfo> for Run {
    fn from(run: RunInfo) -> Run {
        let duration_seconds = run.finished_at.map(|f| (f - run.started_at).max(0) as f64);
        Run {
            run,
            duration_seconds,
        }
    }
}

/// A run with its log tail and its notifications.
#[derive(Debug, Clone, Serialize)]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub events: Vec<EventInfo>,
    pub notifications: Vec<NotificationInfo>,
}

/// The monitor's view of a service.
#[derive(Debug, Clone, Serialize)]
pub struct Monitor {
    /// `up`, `down` or `unknown`.
    pub state: String,
    pub since: Option<i64>,
    pub uptime_24h: Option<f64>,
    pub uptime_7d: Option<f64>,
    pub uptime_30d: Option<f64>,
}

/// One configured service at a glance.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSummary {
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: String,
    pub enabled: bool,
    /// Whether the backup workflow backs it up.
    pub backup: bool,
    pub health: Health,
    pub problems: Vec<Problem>,
    pub monitor: Option<Monitor>,
    /// The newest backup that is there (complete or failed_verify).
    pub last_backup: Option<BackupRecord>,
    pub backups: usize,
    pub verified: usize,
}

/// A catalogued backup with the duration of the run that made it.
#[derive(Debug, Clone, Serialize)]
pub struct BackupEntry {
    #[serde(flatten)]
    pub backup: BackupRecord,
    pub duration_seconds: Option<f64>,
}

/// One entry of the update or restore-test history: when, how it went
/// (the update's outcome; `ok`/`failed` for a restore test), and its
/// numbers (`rto_seconds`, `data_age_seconds`, `checks_passed`, ...).
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub ts: i64,
    pub status: String,
    pub run_id: Option<i64>,
    pub summary: String,
    pub values: HashMap<String, f64>,
}

/// A service's history, newest first, each list at most [`HISTORY_MAX`].
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub backups: Vec<BackupEntry>,
    pub updates: Vec<HistoryEntry>,
    pub restore_tests: Vec<HistoryEntry>,
}

/// One point of a chart: unix seconds and a value in the chart's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub t: i64,
    pub v: f64,
}

/// A series over time, drawn as an inline SVG on the page.
#[derive(Debug, Clone, Serialize)]
pub struct Chart {
    /// `backup_size`, `backup_duration`, `restore_rto`.
    pub id: String,
    pub title: String,
    /// `bytes` or `seconds`.
    pub unit: String,
    /// Oldest first.
    pub points: Vec<Point>,
}

/// Everything about one service.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceDetail {
    #[serde(flatten)]
    pub summary: ServiceSummary,
    pub checks: Vec<CheckState>,
    pub history: History,
    pub charts: Vec<Chart>,
}

/// The overall picture: health first.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub health: Health,
    pub problems: Vec<Problem>,
    pub generated_at: i64,
    /// Whether the state DB exists yet (no run has happened otherwise).
    pub has_state: bool,
    /// The newest run of each workflow.
    pub last_runs: Vec<Run>,
    pub services: Vec<ServiceSummary>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn run_health(status: RunStatus) -> Health {
    match status {
        RunStatus::Success | RunStatus::Running | RunStatus::Skipped => Health::Ok,
        RunStatus::Warning => Health::Warning,
        RunStatus::Failed | RunStatus::Aborted => Health::Critical,
    }
}

fn worst(problems: &[Problem]) -> Health {
    problems
        .iter()
        .map(|p| p.health)
        .max()
        .unwrap_or(Health::Ok)
}

pub fn status(cfg: &Config, store: Option<&Store>) -> Result<Status> {
    let mut problems = Vec::new();
    let last_runs: Vec<Run> = match store {
        Some(s) => s.last_runs()?.into_iter().map(Run::from).collect(),
        None => {
            problems.push(Problem {
                health: Health::Unknown,
                subject: "state".into(),
                message: "no state yet: nothing has run".into(),
            });
            Vec::new()
        }
    };
    for r in &last_runs {
        let h = run_health(r.run.status);
        if h != Health::Ok {
            problems.push(Problem {
                health: h,
                subject: r.run.workflow.clone(),
                message: format!("last run {}: {}", r.run.status, r.run.summary),
            });
        }
    }
    let services = services(cfg, store)?;
    for s in &services {
        problems.extend(s.problems.iter().cloned());
    }
    problems.sort_by_key(|p| std::cmp::Reverse(p.health));
    Ok(Status {
        health: worst(&problems),
        problems,
        generated_at: now(),
        has_state: store.is_some(),
        last_runs,
        services,
    })
}

pub fn services(cfg: &Config, store: Option<&Store>) -> Result<Vec<ServiceSummary>> {
    cfg.services
        .iter()
        .map(|s| service_summary(s, store, &backups_of(store, &s.name)?))
        .collect()
}

fn backups_of(store: Option<&Store>, service: &str) -> Result<Vec<BackupRecord>> {
    match store {
        Some(s) => s.backups(Some(service), true),
        None => Ok(Vec::new()),
    }
}

fn service_summary(
    svc: &ServiceConfig,
    store: Option<&Store>,
    backups: &[BackupRecord],
) -> Result<ServiceSummary> {
    let mut problems = Vec::new();
    let mut problem = |health, message: String| {
        problems.push(Problem {
            health,
            subject: svc.name.clone(),
            message,
        })
    };
    let present: Vec<&BackupRecord> = backups.iter().filter(|b| b.status.is_present()).collect();
    let last_backup = present.first().map(|b| (*b).clone());
    let verified = present
        .iter()
        .filter(|b| b.status == BackupStatus::Complete && b.verified_at.is_some())
        .count();
    match &last_backup {
        Some(b) if b.status == BackupStatus::FailedVerify => problem(
            Health::Critical,
            format!("newest backup #{} failed verification", b.id),
        ),
        None if svc.backup && svc.enabled => problem(Health::Warning, "never backed up".into()),
        _ => {}
    }
    if let Some(b) = backups.iter().find(|b| b.status == BackupStatus::Missing) {
        problem(
            Health::Warning,
            format!("backup #{} is missing ({})", b.id, b.location),
        );
    }
    let monitor = match store {
        Some(s) => {
            let st = crate::monitor::service_status(s, &svc.name)?;
            if st.state == "down" {
                let failing: Vec<String> = st
                    .checks
                    .iter()
                    .filter(|c| c.status == crate::state::CheckStatus::Down)
                    .map(|c| format!("{}: {}", c.name, c.message))
                    .collect();
                problem(Health::Critical, format!("DOWN ({})", failing.join("; ")));
            }
            (!st.checks.is_empty()).then_some(Monitor {
                state: st.state,
                since: st.since,
                uptime_24h: st.uptime_24h,
                uptime_7d: st.uptime_7d,
                uptime_30d: st.uptime_30d,
            })
        }
        None => None,
    };
    Ok(ServiceSummary {
        name: svc.name.clone(),
        service_type: svc.service_type.as_str().into(),
        enabled: svc.enabled,
        backup: svc.backup,
        health: worst(&problems),
        problems,
        monitor,
        last_backup,
        backups: present.len(),
        verified,
    })
}

/// One configured service in full; `None` for a name not in the
/// configuration.
pub fn service(cfg: &Config, store: Option<&Store>, name: &str) -> Result<Option<ServiceDetail>> {
    let Some(svc) = cfg.service(name) else {
        return Ok(None);
    };
    let all = backups_of(store, name)?;
    let summary = service_summary(svc, store, &all)?;
    let checks = match store {
        Some(s) => s.service_check_states(name)?,
        None => Vec::new(),
    };
    let mut durations: HashMap<i64, Option<f64>> = HashMap::new();
    let mut backups = Vec::new();
    for b in all.into_iter().take(HISTORY_MAX) {
        let duration_seconds = match (store, b.run_id) {
            (Some(s), Some(id)) => match durations.get(&id) {
                Some(d) => *d,
                None => {
                    let d = s.run(id)?.and_then(|r| Run::from(r).duration_seconds);
                    durations.insert(id, d);
                    d
                }
            },
            _ => None,
        };
        backups.push(BackupEntry {
            backup: b,
            duration_seconds,
        });
    }
    let (updates, restore_tests) = match store {
        Some(s) => (update_history(s, name)?, restore_test_history(s, name)?),
        None => (Vec::new(), Vec::new()),
    };
    let history = History {
        backups,
        updates,
        restore_tests,
    };
    let charts = charts(&history);
    Ok(Some(ServiceDetail {
        summary,
        checks,
        history,
        charts,
    }))
}

/// The service's finished updates, newest first.
fn update_history(s: &Store, name: &str) -> Result<Vec<HistoryEntry>> {
    Ok(s.updates_of(name, HISTORY_MAX)?
        .into_iter()
        .map(|u| {
            let mut values = HashMap::new();
            if let Some(ms) = u.detail["duration_ms"].as_f64() {
                values.insert("duration_seconds".to_string(), ms / 1000.0);
            }
            HistoryEntry {
                ts: u.finished_at.unwrap_or(u.started_at),
                status: u.outcome.clone().unwrap_or_default(),
                run_id: u.run_id,
                summary: u.detail["summary"].as_str().unwrap_or_default().to_string(),
                values,
            }
        })
        .collect())
}

/// The service's finished restore tests, newest first, with their RTO.
fn restore_test_history(s: &Store, name: &str) -> Result<Vec<HistoryEntry>> {
    Ok(s.restore_tests_of(name, HISTORY_MAX)?
        .into_iter()
        .map(|t| {
            let mut values = HashMap::new();
            if let Some(r) = t.rto_seconds {
                values.insert("rto_seconds".to_string(), r);
            }
            if let Some(a) = t.rpo_seconds {
                values.insert("data_age_seconds".to_string(), a as f64);
            }
            values.insert("checks_passed".to_string(), t.checks_passed as f64);
            values.insert("checks_failed".to_string(), t.checks_failed as f64);
            HistoryEntry {
                ts: t.finished_at.unwrap_or(t.started_at),
                status: if t.success == Some(true) {
                    "ok"
                } else {
                    "failed"
                }
                .to_string(),
                run_id: t.run_id,
                summary: t.error.clone().unwrap_or_default(),
                values,
            }
        })
        .collect())
}

/// The charts a history has numbers for: backup size and duration (of the
/// backups that were made, deleted ones included: they are history), and
/// each restore test's `rto_seconds`.
fn charts(h: &History) -> Vec<Chart> {
    let made = || {
        h.backups
            .iter()
            .filter(|b| b.backup.status != BackupStatus::FailedVerify)
    };
    let mut out = vec![
        chart(
            "backup_size",
            "Backup size",
            "bytes",
            made().map(|b| (b.backup.created_at, Some(b.backup.size as f64))),
        ),
        chart(
            "backup_duration",
            "Backup duration",
            "seconds",
            made().map(|b| (b.backup.created_at, b.duration_seconds)),
        ),
    ];
    if !h.restore_tests.is_empty() {
        out.push(chart(
            "restore_rto",
            "Restore-test RTO",
            "seconds",
            h.restore_tests
                .iter()
                .map(|e| (e.ts, e.values.get("rto_seconds").copied())),
        ));
    }
    out
}

/// A chart from `(time, value)` pairs in any order (missing values left
/// out), oldest first.
pub fn chart(
    id: &str,
    title: &str,
    unit: &str,
    values: impl Iterator<Item = (i64, Option<f64>)>,
) -> Chart {
    let mut points: Vec<Point> = values
        .filter_map(|(t, v)| v.filter(|v| v.is_finite()).map(|v| Point { t, v }))
        .collect();
    points.sort_by_key(|p| p.t);
    Chart {
        id: id.into(),
        title: title.into(),
        unit: unit.into(),
        points,
    }
}

/// The newest runs (of one workflow, or all), newest first.
pub fn runs(store: Option<&Store>, workflow: Option<&str>, limit: usize) -> Result<Vec<Run>> {
    match store {
        Some(s) => Ok(s
            .recent_runs(workflow, limit.min(RUNS_MAX))?
            .into_iter()
            .map(Run::from)
            .collect()),
        None => Ok(Vec::new()),
    }
}

/// One run with its log tail and notifications; `None` if there is no such
/// run.
pub fn run(store: Option<&Store>, id: i64) -> Result<Option<RunDetail>> {
    let Some(s) = store else {
        return Ok(None);
    };
    let Some(info) = s.run(id)? else {
        return Ok(None);
    };
    let events = s.run_events(id, EVENTS_MAX)?;
    let notifications = s
        .recent_notifications(None, 1000)?
        .into_iter()
        .filter(|n| n.record.run_id == Some(id))
        .collect();
    Ok(Some(RunDetail {
        run: info.into(),
        events,
        notifications,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_oldest_first_without_missing_values() {
        let c = chart(
            "x",
            "X",
            "seconds",
            [
                (30, Some(3.0)),
                (10, Some(1.0)),
                (20, None),
                (40, Some(f64::NAN)),
            ]
            .into_iter(),
        );
        assert_eq!(
            c.points,
            vec![Point { t: 10, v: 1.0 }, Point { t: 30, v: 3.0 }]
        );
    }

    #[test]
    fn the_worst_problem_is_the_health() {
        let p = |health| Problem {
            health,
            subject: "s".into(),
            message: "m".into(),
        };
        assert_eq!(worst(&[]), Health::Ok);
        assert_eq!(
            worst(&[p(Health::Warning), p(Health::Critical), p(Health::Unknown)]),
            Health::Critical
        );
        assert_eq!(run_health(RunStatus::Aborted), Health::Critical);
        assert_eq!(run_health(RunStatus::Warning), Health::Warning);
    }
}
