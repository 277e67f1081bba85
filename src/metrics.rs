//! The Prometheus node_exporter textfile (docs/conventions.md, Metrics):
//! `<global.paths.metrics_dir>/homelab_autopilot.prom`, rewritten atomically
//! from the state DB after every run, so it always describes every
//! workflow, not only the one that just ran.

use crate::config::Config;
use crate::error::Result;
use crate::state::{MetricsSnapshot, RunStatus, Store};
use std::fmt::Write;
use std::path::Path;

/// The file's name in the collector's directory.
pub const FILE_NAME: &str = "homelab_autopilot.prom";

/// `job_last_status` values.
fn status_code(status: RunStatus) -> u8 {
    match status {
        RunStatus::Success => 0,
        RunStatus::Warning => 1,
        RunStatus::Failed => 2,
        RunStatus::Aborted | RunStatus::Running | RunStatus::Skipped => 3,
    }
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    /// One metric family: HELP, TYPE, then a sample per `(label, value)`.
    fn series<'a, V: std::fmt::Display>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        key: &str,
        samples: impl IntoIterator<Item = (&'a str, V)>,
    ) {
        let _ = writeln!(self.0, "# HELP homelab_autopilot_{name} {help}");
        let _ = writeln!(self.0, "# TYPE homelab_autopilot_{name} {kind}");
        for (value, v) in samples {
            let _ = writeln!(
                self.0,
                "homelab_autopilot_{name}{{{key}=\"{}\"}} {v}",
                label(value)
            );
        }
    }
}

/// The file's text. Workflow, service and channel series only for the
/// workflows that exist (`workflows`: shipped and user-written) and the
/// services and channels in the configuration (a removed one does not
/// linger).
pub fn render(cfg: &Config, workflows: &[String], m: &MetricsSnapshot) -> String {
    let service = |s: &&(String, i64, i64)| cfg.service(&s.0).is_some();
    let channel = |c: &&(String, i64)| cfg.notifications.channels.iter().any(|ch| ch.name == c.0);
    let jobs = || m.jobs.iter().filter(|j| workflows.contains(&j.workflow));
    let mut o = Out(String::new());
    o.series(
        "job_last_success_timestamp_seconds",
        "gauge",
        "When the workflow last finished with success or warnings (unix seconds).",
        "workflow",
        jobs().filter_map(|j| Some((j.workflow.as_str(), j.last_success?))),
    );
    o.series(
        "job_last_status",
        "gauge",
        "The workflow's last run: 0 success, 1 warnings, 2 failed, 3 aborted.",
        "workflow",
        jobs().map(|j| (j.workflow.as_str(), status_code(j.last_status))),
    );
    o.series(
        "job_duration_seconds",
        "gauge",
        "How long the workflow's last run took.",
        "workflow",
        jobs().filter_map(|j| Some((j.workflow.as_str(), j.last_duration?.max(0.0)))),
    );
    o.series(
        "backup_last_success_timestamp_seconds",
        "gauge",
        "When the service's newest verified backup was made (unix seconds).",
        "service",
        m.backups
            .iter()
            .filter(service)
            .map(|b| (b.0.as_str(), b.1)),
    );
    o.series(
        "backup_last_size_bytes",
        "gauge",
        "Size of the service's newest verified backup.",
        "service",
        m.backups
            .iter()
            .filter(service)
            .map(|b| (b.0.as_str(), b.2)),
    );
    o.series(
        "notification_failures_total",
        "counter",
        "Deliveries to the channel that failed after their retries.",
        "channel",
        m.notification_failures
            .iter()
            .filter(channel)
            .map(|n| (n.0.as_str(), n.1)),
    );
    o.series(
        "service_up",
        "gauge",
        "1 when every health check of the service is UP, 0 when one is DOWN.",
        "service",
        m.services_up
            .iter()
            .filter(|u| cfg.service(&u.0).is_some())
            .map(|u| (u.0.as_str(), u8::from(u.1))),
    );
    let updates = || m.updates.iter().filter(|u| cfg.service(&u.0).is_some());
    o.series(
        "update_last_outcome",
        "gauge",
        "The service's last update: 0 updated, 1 up_to_date, 2 skipped, 3 rolled_back, \
         4 aborted, 5 rollback_failed.",
        "service",
        updates().filter_map(|u| {
            let o = crate::update::Outcome::parse(&u.1)?;
            let code = crate::update::Outcome::ALL.iter().position(|x| *x == o)?;
            Some((u.0.as_str(), code))
        }),
    );
    o.series(
        "update_last_timestamp_seconds",
        "gauge",
        "When the service's last update ended (unix seconds).",
        "service",
        updates().map(|u| (u.0.as_str(), u.2)),
    );
    o.0
}

/// The newest restore test of each configured service
/// (docs/restore-testing.md): when, whether it passed, its RTO and the age
/// of the data it restored.
pub fn render_restore_tests(cfg: &Config, tests: &[crate::state::RestoreTestRecord]) -> String {
    let known = || tests.iter().filter(|t| cfg.service(&t.service).is_some());
    let mut o = Out(String::new());
    if tests.is_empty() {
        return o.0;
    }
    o.series(
        "restore_test_last_timestamp_seconds",
        "gauge",
        "When the service's last restore test ended (unix seconds).",
        "service",
        known().filter_map(|t| Some((t.service.as_str(), t.finished_at?))),
    );
    o.series(
        "restore_test_last_success",
        "gauge",
        "1 when the service's last restore test passed (every check within the RTO target).",
        "service",
        known().map(|t| (t.service.as_str(), u8::from(t.success == Some(true)))),
    );
    o.series(
        "restore_test_rto_seconds",
        "gauge",
        "The last restore test's recovery time: restore start to every check passing.",
        "service",
        known().filter_map(|t| Some((t.service.as_str(), t.rto_seconds?))),
    );
    o.series(
        "restore_test_data_age_seconds",
        "gauge",
        "Age of the data the last restore test restored (recovery point seen).",
        "service",
        known().filter_map(|t| Some((t.service.as_str(), t.rpo_seconds?))),
    );
    o.0
}

/// When each service's newest backup was last verified (none: never, or
/// the backup is unverified, which is not a good backup).
fn render_verification(cfg: &Config, store: &Store) -> Result<String> {
    let mut samples = Vec::new();
    for svc in &cfg.services {
        let newest = store
            .backups(Some(&svc.name), false)?
            .into_iter()
            .find(|b| b.status.is_present() && b.kind != crate::catalog::KIND_COPY);
        if let Some(v) = newest.and_then(|b| b.verified_at) {
            samples.push((svc.name.as_str(), v));
        }
    }
    let mut o = Out(String::new());
    o.series(
        "backup_last_verified_timestamp_seconds",
        "gauge",
        "When the service's newest backup was last verified (absent: never).",
        "service",
        samples,
    );
    Ok(o.0)
}

/// Rewrite the metrics file in `dir` (created if missing; the file is 0644:
/// node_exporter reads it).
pub fn write(cfg: &Config, workflows: &[String], store: &Store, dir: &Path) -> Result<()> {
    let mut text = render(cfg, workflows, &store.metrics_snapshot()?);
    text.push_str(&render_restore_tests(cfg, &store.last_restore_tests()?));
    text.push_str(&render_verification(cfg, store)?);
    std::fs::create_dir_all(dir).map_err(|e| crate::error::Error::io(dir, e))?;
    crate::files::write_atomic(&dir.join(FILE_NAME), text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::JobMetric;

    #[test]
    fn renders_the_text_format_with_escaped_labels_and_known_names_only() {
        let cfg: Config = Config {
            services: vec![crate::config::ServiceConfig {
                name: "web".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let m = MetricsSnapshot {
            jobs: vec![
                JobMetric {
                    workflow: "we\"ird\\".into(),
                    last_success: None,
                    last_status: RunStatus::Failed,
                    last_duration: Some(12.25),
                },
                JobMetric {
                    workflow: "deleted".into(),
                    last_success: Some(1),
                    last_status: RunStatus::Success,
                    last_duration: Some(1.0),
                },
            ],
            backups: vec![("web".into(), 1_700_000_000, 4096), ("gone".into(), 1, 1)],
            notification_failures: vec![("old".into(), 3)],
            services_up: vec![("web".into(), false)],
            updates: vec![("web".into(), "rolled_back".into(), 1_700_000_100)],
        };
        let text = render(&cfg, &["we\"ird\\".to_string()], &m);
        assert!(
            text.contains("homelab_autopilot_job_last_status{workflow=\"we\\\"ird\\\\\"} 2\n"),
            "{text}"
        );
        assert!(text.contains(
            "homelab_autopilot_job_duration_seconds{workflow=\"we\\\"ird\\\\\"} 12.25\n"
        ));
        assert!(
            !text.contains("job_last_success_timestamp_seconds{"),
            "no success yet"
        );
        assert!(text.contains("homelab_autopilot_backup_last_size_bytes{service=\"web\"} 4096\n"));
        assert!(text.contains("homelab_autopilot_service_up{service=\"web\"} 0\n"));
        assert!(text.contains("homelab_autopilot_update_last_outcome{service=\"web\"} 3\n"));
        assert!(!text.contains("gone") && !text.contains("old"), "{text}");
        assert!(!text.contains("deleted"), "a workflow that is gone: {text}");
        assert!(text.contains("# TYPE homelab_autopilot_notification_failures_total counter\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("homelab_autopilot_"), "{line}");
        }
    }
}
