//! The scheduler behind `homelab-autopilot daemon` and `schedule`: which
//! workflows the configuration schedules ([`jobs`]), what is due when
//! ([`plan::Planner`], pure, driven by the caller's clock), the daemon's loop
//! that starts each due workflow as its own `run` process ([`daemon`]), the
//! systemd notification protocol ([`sd_notify`]), and the per-workflow
//! systemd units and crontab lines ([`units`]). docs/scheduling.md describes
//! the behaviour.

pub mod daemon;
pub mod plan;
pub mod sd_notify;
pub mod units;

use crate::config::Config;
use crate::schedule::CronSchedule;

/// One scheduled workflow.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The workflow run at each slot.
    pub workflow: String,
    /// The configuration key the schedule comes from.
    pub key: &'static str,
    pub schedule: CronSchedule,
}

/// Every workflow the configuration schedules, whether or not this build
/// ships it: the `schedule` keys of the enabled sections.
pub fn configured(cfg: &Config) -> Vec<Job> {
    let mut out = Vec::new();
    let b = &cfg.global.backup;
    if let (true, Some(s)) = (b.enabled, b.cron_schedule()) {
        out.push(Job {
            workflow: "backup".into(),
            key: "global.backup.schedule",
            schedule: s,
        });
    }
    if cfg.monitoring.enabled {
        out.push(Job {
            workflow: "monitor".into(),
            key: "monitoring.schedule",
            schedule: cfg.monitoring.schedule.clone(),
        });
    }
    if let (true, Some(s)) = (cfg.updates.enabled, &cfg.updates.schedule) {
        out.push(Job {
            workflow: "update".into(),
            key: "updates.schedule",
            schedule: s.clone(),
        });
    }
    if let Some(rt) = b.restore_testing.as_ref().filter(|rt| rt.enabled) {
        out.push(Job {
            workflow: "restore-test".into(),
            key: "global.backup.restore_testing.schedule",
            schedule: rt.schedule.clone(),
        });
    }
    out
}

/// The configured jobs split into those whose workflow is one of
/// `available` (the shipped workflows) and those left out.
pub fn jobs(cfg: &Config, available: &[String]) -> (Vec<Job>, Vec<Job>) {
    configured(cfg)
        .into_iter()
        .partition(|j| available.contains(&j.workflow))
}
