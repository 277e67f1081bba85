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

#[test]
fn anchors_merge_keys_and_environment_variables_are_read_with_positions() {
    let t = Test::new();
    t.data("data/web");
    t.data("data/api");
    let yaml = "\
x-service: &svc
  type: generic
  exclude: [\"*.tmp\"]
global:
  backup:
    root: ${HLA_TEST_ROOT}/backups
services:
  - <<: *svc
    name: web
    backup_paths: [\"${HLA_TEST_ROOT}/data/web\"]
  - <<: *svc
    name: api
    backup_paths: [\"${HLA_TEST_ROOT:-/nowhere}/data/api\"]
    exclude: [\"*.tmp\", \"costs $$5\", \"$${HLA_TEST_ROOT}\"]
";
    t.config(yaml);
    let root = t.root_str();
    let r = Run::from_output(
        t.command(&["--json", "config", "show"])
            .env("HLA_TEST_ROOT", &root)
            .output()
            .unwrap(),
    );
    r.code(0);
    let doc = r.json();
    let services = doc["services"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(services.len(), 2);
    for s in services {
        assert_eq!(s["type"], "generic", "{s}");
        assert_eq!(s["exclude"][0], "*.tmp", "{s}");
    }
    assert_eq!(services[0]["backup_paths"][0], format!("{root}/data/web"));
    assert_eq!(services[1]["backup_paths"][0], format!("{root}/data/api"));
    // `$$` alone stays, `$${` is a literal `${`; the explicit key wins
    // over the merged one.
    assert_eq!(
        services[1]["exclude"],
        serde_json::json!(["*.tmp", "costs $$5", "${HLA_TEST_ROOT}"])
    );
    let run = t
        .command(&["run", "backup"])
        .env("HLA_TEST_ROOT", &root)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(t.archives("backups/web").len(), 1);
    assert_eq!(t.archives("backups/api").len(), 1);

    // Unset without a default: a config error at the value, naming the
    // variable and the field; nothing runs.
    let r = t.run(&["config", "validate"]);
    r.code(78);
    let file = t.path("etc/homelab-autopilot.yaml").display().to_string();
    r.stderr_has(&format!(
        "{file}:6:11: global.backup.root: environment variable HLA_TEST_ROOT is not set"
    ));
    // An error inside a merged value is reported where the value is
    // written: in the anchor.
    t.config(&yaml.replace("type: generic", "type: genric"));
    let r = Run::from_output(
        t.command(&["config", "validate"])
            .env("HLA_TEST_ROOT", &root)
            .output()
            .unwrap(),
    );
    r.code(78).stderr_has(&format!("{file}:2:9:"));
}

#[test]
fn services_d_files_may_bring_their_own_notification_channels() {
    use crate::notify::{ok, Receiver};
    use std::os::unix::fs::PermissionsExt;
    let t = Test::new();
    t.data("data/web");
    let hook = Receiver::start(ok());
    t.config(&basic_config("", ""));
    let extra = t.path("etc/services.d/20-db.yaml");
    t.write(
        "etc/services.d/20-db.yaml",
        &format!(
            "services:\n  - name: db\n    type: generic\n    backup_paths: [{{root}}/data/web]\nnotifications:\n  channels:\n    - name: dbhook\n      type: webhook\n      url: {}\n",
            hook.url("/db?token=s3cr3t-from-services-d")
        ),
    );
    std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o600)).unwrap();
    t.run(&["notify", "test", "dbhook"]).code(0);
    assert_eq!(
        hook.on("/db").len(),
        1,
        "the channel from services.d delivered"
    );
    let shown = t.run(&["config", "show"]);
    shown.code(0).stdout_has("dbhook");
    assert!(
        !shown.stdout.contains("s3cr3t-from-services-d"),
        "{}",
        shown.stdout
    );

    // A URL with a credential makes that file's permissions matter, as for
    // the main file.
    std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o644)).unwrap();
    t.run(&["config", "validate"])
        .code(77)
        .stderr_has("20-db.yaml");
    std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Errors in it are reported in that file, at the channel's line.
    t.write(
        "etc/services.d/20-db.yaml",
        "notifications:\n  channels:\n    - name: dbhook\n      type: pigeon\n",
    );
    std::fs::set_permissions(&extra, std::fs::Permissions::from_mode(0o600)).unwrap();
    t.run(&["config", "validate"])
        .code(78)
        .stderr_has("20-db.yaml:4:")
        .stderr_has("notifications.channels[0].type");
    // Only channels: the rest of `notifications` belongs to the main file.
    t.write(
        "etc/services.d/20-db.yaml",
        "notifications:\n  cooldown_minutes: 5\n",
    );
    t.run(&["config", "validate"])
        .code(78)
        .stderr_has("20-db.yaml:2:3:")
        .stderr_has("cooldown_minutes");
}
