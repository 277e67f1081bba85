//! Bad input: every configuration error at once with positions (78),
//! insecure secrets (77).

use crate::harness::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn several_errors_are_reported_at_once_with_positions() {
    let t = Test::new();
    t.config(
        "global:\n  backup:\n    root: /tmp/x\n    retention_dayz: 3\n    schedule: \"61 * * * *\"\nservices:\n  - name: web\n    type: generic\n    enabled: maybe\n  - name: Bad Name!\n    type: generic\n",
    );
    let r = t.run(&["config", "validate"]);
    r.code(78);
    let file = t.path("etc/homelab-autopilot.yaml").display().to_string();
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with(&file)).collect();
    assert!(
        lines.len() >= 4,
        "expected at least 4 errors:\n{}",
        r.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:4:5:")) && l.contains("retention_dayz")),
        "{}",
        r.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:5:")) && l.contains("schedule")),
        "{}",
        r.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:9:")) && l.contains("enabled")),
        "{}",
        r.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{file}:10:")) && l.contains("name")),
        "{}",
        r.stderr
    );
    // A run refuses the same config before doing anything.
    t.run(&["run", "backup"]).code(78);
    assert!(!t.path("state").exists());
}

#[test]
fn duplicate_service_across_services_d_is_an_error() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.write(
        "etc/services.d/10-more.yaml",
        "services:\n  - name: web\n    type: generic\n    backup_paths: [/tmp]\n",
    );
    t.run(&["config", "validate"])
        .code(78)
        .stderr_has("10-more.yaml:2:")
        .stderr_has("web");
}

#[test]
fn insecure_secret_file_exits_77_and_the_escape_hatch_works() {
    let t = Test::new();
    t.write("etc/secrets/smtp", "sentinel-secret-value-123\n");
    std::fs::set_permissions(
        t.path("etc/secrets/smtp"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    t.config(&format!(
        "{}notifications:\n  channels:\n    - name: mail\n      type: email\n      smtp_server: 127.0.0.1\n      smtp_port: 2525\n      security: none\n      from: a@example.org\n      to: [b@example.org]\n      username: u\n      password_file: {{root}}/etc/secrets/smtp\n",
        basic_config("", "")
    ));
    t.run(&["config", "validate"])
        .code(77)
        .stderr_has("secrets/smtp");
    t.run(&["--insecure-permissions", "config", "validate"])
        .code(0);
    std::fs::set_permissions(
        t.path("etc/secrets/smtp"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let r = t.run(&["config", "show"]);
    r.code(0);
    assert!(
        !r.stdout.contains("sentinel-secret-value-123")
            && !r.stderr.contains("sentinel-secret-value-123")
    );
}

#[test]
fn config_show_fills_in_defaults() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    let doc = t.run(&["--json", "config", "show"]).json();
    assert_eq!(doc["global"]["backup"]["compression_level"], 3);
    assert_eq!(doc["services"][0]["enabled"], true);
}

#[test]
fn credentials_in_health_check_urls_are_redacted() {
    let t = Test::new();
    t.config(&basic_config(
        "",
        "    health_checks:\n      - type: http\n        url: \"http://admin:sentinel-hc-password-1@127.0.0.1:9/health?token=sentinelquerytoken99\"\n",
    ));
    for args in [
        &["config", "show"][..],
        &["--json", "config", "show"][..],
        &["--json", "services", "list"][..],
    ] {
        let r = t.run(args);
        r.code(0);
        for s in ["sentinel-hc-password-1", "sentinelquerytoken99"] {
            assert!(
                !r.stdout.contains(s) && !r.stderr.contains(s),
                "{args:?} leaked {s}:\n{}",
                r.stdout
            );
        }
    }
}
