//! `monitoring:` (health-check cadence, alert state thresholds, resource
//! warnings, maintenance windows) and `updates:` (update policy).

use crate::schedule::CronSchedule;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    pub enabled: bool,
    pub schedule: CronSchedule,
    /// Consecutive failures before a check is DOWN (and alerted).
    pub fail_after: u32,
    /// Consecutive successes before a DOWN check is UP again.
    pub recover_after: u32,
    /// Re-alert while DOWN every this many minutes; 0 = never.
    pub remind_every_minutes: u64,
    /// Checks run at the same time, at most.
    pub concurrency: u32,
    /// Default per-check timeout.
    pub timeout_seconds: u64,
    pub resources: ResourcesConfig,
    pub maintenance_windows: Vec<MaintenanceWindowConfig>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: CronSchedule::parse("*/5 * * * *").expect("valid schedule"),
            fail_after: 2,
            recover_after: 1,
            remind_every_minutes: 0,
            concurrency: 64,
            timeout_seconds: 10,
            resources: ResourcesConfig::default(),
            maintenance_windows: Vec::new(),
        }
    }
}

/// Host resource warnings (`disk_space_warning` events).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesConfig {
    /// 1..=100.
    pub disk_warn_percent: u8,
    /// 1..=100.
    pub memory_warn_percent: u8,
    /// 1-minute load average that warns; 0 = off.
    pub load_warn: f64,
    /// Mount points whose usage is checked (absolute).
    pub paths: Vec<PathBuf>,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        Self {
            disk_warn_percent: 90,
            memory_warn_percent: 90,
            load_warn: 0.0,
            paths: vec![PathBuf::from("/")],
        }
    }
}

/// While a window is open, failures of its services are recorded but not
/// alerted, and updates may run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceWindowConfig {
    pub name: String,
    /// When the window opens (required).
    pub schedule: Option<CronSchedule>,
    pub duration_minutes: u32,
    /// Services covered (empty: all).
    pub services: Vec<String>,
}

impl Default for MaintenanceWindowConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            schedule: None,
            duration_minutes: 60,
            services: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdatesConfig {
    pub enabled: bool,
    /// When the daemon runs the update workflow (unset: only on demand).
    pub schedule: Option<CronSchedule>,
    pub snapshot_before_update: bool,
    pub rollback_on_failure: bool,
    /// Pre-update snapshots are removed after this many hours.
    pub keep_snapshot_hours: u32,
    /// How long an updated service has to pass its health checks.
    pub health_check_timeout_seconds: u64,
    /// Update one service at a time.
    pub sequential: bool,
    /// How long an updated service's checks must keep passing after they
    /// first all pass.
    pub soak_seconds: u64,
}

impl Default for UpdatesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            schedule: None,
            snapshot_before_update: true,
            rollback_on_failure: true,
            keep_snapshot_hours: 24,
            health_check_timeout_seconds: 300,
            sequential: true,
            soak_seconds: 30,
        }
    }
}
