//! The script host through the binary: overrides, deadlines, checks.

use crate::harness::*;
use std::time::{Duration, Instant};

#[test]
fn shipped_scripts_compile_under_the_production_engine() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.run(&["scripts", "check"])
        .code(0)
        .stdout_has("compiled without errors");
}

#[test]
fn a_runaway_override_is_stopped_and_cannot_catch_the_stop() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config("  scripts:\n    timeout_seconds: 2\n", ""));
    t.script(
        "services/web.rhai",
        "fn pre_backup(svc, ctx) {\n    try {\n        loop { }\n    } catch (e) {\n        log::info(\"caught the stop\");\n    }\n}\n",
    );
    let start = Instant::now();
    let r = t.run(&["run", "backup"]);
    assert!(start.elapsed() < Duration::from_secs(30));
    r.code(1);
    let file = t.path("scripts/services/web.rhai").display().to_string();
    r.stderr_has(&format!("{file}:3")).stderr_has("deadline");
    assert!(!r.stderr.contains("caught the stop"), "{}", r.stderr);
    assert!(t.archives("backups").is_empty());
}

#[test]
fn a_service_override_changes_one_step_for_that_service_only() {
    let t = Test::new();
    t.data("data/web");
    t.data("data/db");
    t.config(&basic_config(
        "",
        "  - name: db\n    type: generic\n    backup_paths: [{root}/data/db]\n",
    ));
    t.script(
        "services/db.rhai",
        "fn pre_backup(svc, ctx) {\n    log::info(`custom pre_backup for ${svc.name}`);\n}\n",
    );
    let r = t.run(&["run", "backup"]);
    r.code(0).stderr_has("[db] custom pre_backup for db");
    assert!(!r.stderr.contains("custom pre_backup for web"));
    assert_eq!(t.archives("backups").len(), 2);
    let list = t.run(&["scripts", "list"]);
    list.code(0)
        .stdout_has("pre_backup/2")
        .stdout_has("(service db only)");
}

#[test]
fn a_failing_service_does_not_stop_the_others() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config(
        "",
        "  - name: broken\n    type: generic\n    backup_paths: [{root}/data/web]\n",
    ));
    t.script(
        "services/broken.rhai",
        "fn pre_backup(svc, ctx) {\n    throw \"database dump failed\";\n}\n",
    );
    let r = t.run(&["--json", "run", "backup"]);
    r.code(1);
    let doc = r.json();
    let svcs = doc["services"].as_array().unwrap();
    assert!(svcs
        .iter()
        .any(|s| s["service"] == "web" && s["ok"] == true));
    assert!(svcs.iter().any(|s| s["service"] == "broken"
        && s["ok"] == false
        && s["error"]
            .as_str()
            .unwrap()
            .contains("database dump failed")));
    assert_eq!(doc["notifications"][0]["event"], "backup_failed");
}

#[test]
fn a_syntax_error_in_an_override_names_file_and_line() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config("", ""));
    t.script(
        "services/web.rhai",
        "fn pre_backup(svc, ctx) {\n    let x = ;\n}\n",
    );
    let file = t.path("scripts/services/web.rhai").display().to_string();
    t.run(&["scripts", "check"])
        .code(78)
        .stderr_has(&format!("{file}:2:"));
    t.run(&["run", "backup"])
        .code(78)
        .stderr_has(&format!("{file}:2:"));
}

#[test]
fn user_workflows_run_by_name_and_unknown_ones_are_usage_errors() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script("hello.rhai", "fn run(ctx) {\n    state::set(\"hello\", ctx.services.len());\n    log::info(\"hello from a user workflow\");\n}\n");
    t.run(&["run", "hello"])
        .code(0)
        .stderr_has("hello from a user workflow");
    t.run(&["workflows", "list"])
        .code(0)
        .stdout_has("hello")
        .stdout_has("backup");
    t.run(&["run", "nope"]).code(2);
}

#[test]
fn export_writes_the_shipped_scripts() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    let dir = t.path("exported");
    t.run(&["scripts", "export", dir.to_str().unwrap()]).code(0);
    assert!(dir.join("backup.rhai").is_file());
    assert!(dir.join("lib/report.rhai").is_file());
    t.run(&["scripts", "export", dir.to_str().unwrap()]).code(2);
}
