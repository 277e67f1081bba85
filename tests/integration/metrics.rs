//! The Prometheus textfile: written after every real run into
//! `global.paths.metrics_dir`, atomically, describing every workflow;
//! left alone by a dry run.

use crate::harness::free_port;
use crate::harness::{basic_config, Test};
use crate::notify::{Receiver, Reply};
use std::os::unix::fs::PermissionsExt;

/// The value of the one sample named `series` (with its labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn runs_write_the_textfile_for_node_exporter() {
    let t = Test::new();
    t.data("data/web");
    let web = Receiver::start(Reply::Status(503, vec![], "down".into()));
    let dead = free_port();
    t.config(&basic_config(
        &format!(
            "  paths:\n    metrics_dir: {{root}}/metrics\nmonitoring:\n  fail_after: 1\nnotifications:\n  cooldown_minutes: 0\n  channels:\n    - name: hook\n      type: webhook\n      url: http://127.0.0.1:{dead}/hook\n"
        ),
        &format!(
            "    health_checks:\n      - type: http\n        url: {}\n",
            web.url("/health")
        ),
    ));
    let file = t.path("metrics/homelab_autopilot.prom");

    t.run(&["run", "backup"]).code(0);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        sample(
            &text,
            "homelab_autopilot_job_last_status{workflow=\"backup\"}"
        ),
        Some(0.0),
        "{text}"
    );
    let newest = &t.run(&["--json", "backups", "list"]).json()["backups"][0];
    assert_eq!(
        sample(
            &text,
            "homelab_autopilot_backup_last_size_bytes{service=\"web\"}"
        ),
        newest["size"].as_f64(),
        "{text}"
    );
    let at = sample(
        &text,
        "homelab_autopilot_backup_last_success_timestamp_seconds{service=\"web\"}",
    )
    .unwrap();
    assert!((at - newest["created_at"].as_f64().unwrap()).abs() < 1.0);
    // Float seconds, to the millisecond: a sub-second backup is not 0.
    let took = sample(
        &text,
        "homelab_autopilot_job_duration_seconds{workflow=\"backup\"}",
    )
    .unwrap();
    assert!(took > 0.0 && took < 60.0, "{took}");
    assert!(text.contains("# TYPE homelab_autopilot_service_up gauge\n"));
    // The backup's summary went to the dead hook, too.
    assert_eq!(
        sample(
            &text,
            "homelab_autopilot_notification_failures_total{channel=\"hook\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // The monitor finds web down and cannot deliver the alert: both show,
    // and the backup's series are still there.
    let out = t.run(&["run", "monitor"]);
    out.code(0).stdout_has("notification to hook failed");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        sample(&text, "homelab_autopilot_service_up{service=\"web\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "homelab_autopilot_notification_failures_total{channel=\"hook\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "homelab_autopilot_job_last_status{workflow=\"monitor\"}"
        ),
        Some(0.0)
    );
    assert!(sample(
        &text,
        "homelab_autopilot_job_last_status{workflow=\"backup\"}"
    )
    .is_some());

    // A dry run leaves the file as it was; nothing else is in the directory.
    let before = std::fs::read(&file).unwrap();
    t.run(&["run", "backup", "--dry-run"]).code(0);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let names: Vec<_> = std::fs::read_dir(t.path("metrics"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["homelab_autopilot.prom"]);

    // Back up: service_up turns 1.
    web.set_default(crate::notify::ok());
    t.run(&["run", "monitor"]).code(0);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        sample(&text, "homelab_autopilot_service_up{service=\"web\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn a_workflow_that_no_longer_exists_leaves_the_textfile() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config(
        "  paths:\n    metrics_dir: {root}/metrics\n",
        "",
    ));
    t.script("tidy.rhai", "fn run(ctx) { }\n");
    t.run(&["run", "tidy"]).code(0);
    let file = t.path("metrics/homelab_autopilot.prom");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("workflow=\"tidy\""), "{text}");

    std::fs::remove_file(t.path("scripts/tidy.rhai")).unwrap();
    t.run(&["run", "backup"]).code(0);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("tidy"), "{text}");
    assert!(text.contains("workflow=\"backup\""), "{text}");
}
