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

/// A `pre_backup` override that loops at line 3 inside a `try` that would
/// swallow the stop if it could.
const RUNAWAY: &str = "fn pre_backup(svc, ctx) {\n    try {\n        loop { }\n    } catch (e) {\n        log::info(\"caught the stop\");\n    }\n}\n";

/// Run `backup` with the runaway override under these script limits; the
/// stop must name the override's file and the looping line, on stderr and
/// in `--json`.
fn runaway_is_stopped_at_its_line(scripts: &str, reason: &str) {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config(&format!("  scripts:\n{scripts}"), ""));
    t.script("services/web.rhai", RUNAWAY);
    let file = t.path("scripts/services/web.rhai").display().to_string();
    let want = format!("{file}:3: script stopped: {reason}");
    let start = Instant::now();
    let r = t.run(&["run", "backup"]);
    assert!(start.elapsed() < Duration::from_secs(60));
    r.code(1).stderr_has(&want);
    assert!(!r.stderr.contains("caught the stop"), "{}", r.stderr);
    assert!(t.archives("backups").is_empty());
    let r = t.run(&["--json", "run", "backup"]);
    r.code(1);
    let doc = r.json();
    let error = doc["error"].as_str().unwrap_or_default();
    assert!(error.starts_with(&want), "{error}");
}

// Each test lets only one limit be reached, whatever the machine's speed:
// with the default budget (50M operations) and a 2 s deadline, which came
// first depended on how fast the loop ran.
#[test]
fn a_runaway_override_stopped_by_the_operation_limit_is_reported_at_its_line() {
    runaway_is_stopped_at_its_line(
        "    timeout_seconds: 3600\n    max_operations: 200000\n",
        "too many operations",
    );
}

#[test]
fn a_runaway_override_stopped_by_the_deadline_is_reported_at_its_line() {
    runaway_is_stopped_at_its_line(
        "    timeout_seconds: 1\n    max_operations: 1000000000000000\n",
        "the run's deadline",
    );
}

#[test]
fn a_runaway_in_the_users_workflow_file_is_reported_at_its_line() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config(
        "  scripts:\n    timeout_seconds: 3600\n    max_operations: 200000\n",
        "",
    ));
    t.script(
        "backup.rhai",
        "fn select(ctx) {\n    let n = 0;\n    while true {\n        n += 1;\n    }\n}\n",
    );
    let file = t.path("scripts/backup.rhai").display().to_string();
    t.run(&["run", "backup"])
        .code(1)
        .stderr_has(&format!("{file}:4: script stopped: too many operations"));
}

#[test]
fn an_error_in_an_override_names_its_file_and_line() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config("", ""));
    let file = t.path("scripts/services/web.rhai").display().to_string();
    // Thrown, then caught and thrown again by the shipped backup_service.
    t.script(
        "services/web.rhai",
        "fn pre_backup(svc, ctx) {\n    let x = 1;\n    throw \"database dump failed\";\n}\n",
    );
    let doc = t.run(&["--json", "run", "backup"]).code(1).json();
    assert_eq!(
        doc["services"][0]["error"],
        format!("{file}:3: database dump failed")
    );
    // A runtime error.
    t.script(
        "services/web.rhai",
        "fn pre_backup(svc, ctx) {\n    let x = 0;\n\n    let y = 1 / x;\n}\n",
    );
    let r = t.run(&["run", "backup"]);
    r.code(1).stderr_has(&format!("{file}:4: Division by zero"));
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

#[test]
fn each_service_runs_in_parallel_within_the_per_node_limit() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script(
        "par.rhai",
        r#"fn run(ctx) {
    ctx.services = [#{ name: "a", node: "n1" }, #{ name: "b", node: "n1" }, #{ name: "c", node: "n2" }];
    workflow::each_service(ctx, "step", #{ total: 3, per_node: 1 })
}
fn step(svc, ctx) {
    let start = time::now_ms();
    time::sleep(1);
    #{ start: start, end: time::now_ms() }
}
"#,
    );
    let doc = t.run(&["--json", "run", "par"]).code(0).json();
    let span = |name: &str| {
        let s = doc["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap()
            .clone();
        (
            s["result"]["start"].as_i64().unwrap(),
            s["result"]["end"].as_i64().unwrap(),
        )
    };
    let (a, b, c) = (span("a"), span("b"), span("c"));
    let overlap = |x: (i64, i64), y: (i64, i64)| x.0 < y.1 && y.0 < x.1;
    assert!(
        !overlap(a, b),
        "two guests of node n1 ran at once: {a:?} {b:?}"
    );
    assert!(
        overlap(a, c) || overlap(b, c),
        "nodes n1 and n2 did not run in parallel: {a:?} {b:?} {c:?}"
    );
    // In order and one at a time by default.
    t.script("seq.rhai", "fn run(ctx) {\n    ctx.services = [#{ name: \"a\" }, #{ name: \"b\" }];\n    workflow::each_service(ctx, \"step\")\n}\nfn step(svc, ctx) {\n    let s = time::now_ms();\n    time::sleep(1);\n    #{ start: s, end: time::now_ms() }\n}\n");
    let doc = t.run(&["--json", "run", "seq"]).code(0).json();
    let s = doc["services"].as_array().unwrap();
    assert_eq!(s[0]["service"], "a");
    assert!(s[0]["result"]["end"].as_i64().unwrap() <= s[1]["result"]["start"].as_i64().unwrap());
}

#[test]
fn without_locate_stops_a_runaway_is_still_stopped() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config(
        "  scripts:\n    timeout_seconds: 1\n    locate_stops: false\n",
        "",
    ));
    t.script(
        "services/web.rhai",
        "fn pre_backup(svc, ctx) {\n    loop { }\n}\n",
    );
    // Without the hook the stop names the step and the service it hit.
    t.run(&["run", "backup"]).code(1).stderr_has(
        "shipped:scripts/backup.rhai: script stopped: the run's deadline (global.scripts.timeout_seconds) passed (in backup_service for service web)",
    );
}

#[test]
fn ctx_services_leave_checks_to_config_service() {
    let t = Test::new();
    t.config(
        "services:\n  - name: web\n    health_checks:\n      - type: http\n        url: http://127.0.0.1:9/\n      - type: tcp\n        host: 127.0.0.1\n        port: 9\n",
    )
    .script(
        "probe.rhai",
        r#"
fn run(ctx) {
    let svc = ctx.services[0];
    if "health_checks" in svc { throw "ctx.services carries the checks"; }
    if svc.backup_dir == () { throw "resolved values missing"; }
    let checks = config::service(svc.name).health_checks;
    if checks.len() != 2 { throw `checks: ${checks}`; }
    // Each check holds its own type's keys, and the common ones.
    let http = checks[0];
    let tcp = checks[1];
    if http.url != "http://127.0.0.1:9/" || "port" in http { throw `http: ${http}`; }
    if tcp.port != 9 || "url" in tcp || !("timeout_seconds" in tcp) { throw `tcp: ${tcp}`; }
    #{ ok: true }
}
"#,
    );
    t.run(&["run", "probe"]).code(0);
}

#[test]
fn config_get_of_a_path_not_in_the_schema_throws_and_an_unset_key_is_unit() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script(
        "cfgget.rhai",
        r#"fn run(ctx) {
    if config::get("global.backup.proxmox_backup_server") != () {
        throw "an unset optional key should read as ()";
    }
    if type_of(config::get("global.backup.concurrency.total")) != "i64" {
        throw "global.backup.concurrency.total should be a number";
    }
    try {
        config::get("global.backup.concurency");
        throw "a misspelled key should throw";
    } catch (e) {
        log::info(`caught ${e.kind}: ${e.message}`);
    }
    #{ ok: true }
}
"#,
    );
    t.run(&["run", "cfgget"]).code(0).stderr_has(
        "caught not_found: config::get: no configuration key 'global.backup.concurency'",
    );
    t.script(
        "cfgtypo.rhai",
        "fn run(ctx) {\n    config::get(\"monitoring.enabeld\")\n}\n",
    );
    t.run(&["run", "cfgtypo"])
        .code(1)
        .stderr_has("no configuration key 'monitoring.enabeld'");
}

#[test]
fn dest_copy_takes_the_destinations_of_the_configured_service() {
    let t = Test::new();
    t.data("data/web");
    t.data("data/db");
    std::fs::create_dir_all(t.path("nas")).unwrap();
    std::fs::create_dir_all(t.path("usb")).unwrap();
    t.config(&basic_config(
        "    destinations:\n      - name: nas\n        path: {root}/nas\n      - name: usb\n        path: {root}/usb\n",
        "    destinations: [nas]\n  - name: db\n    type: generic\n    backup_paths: [{root}/data/db]\n",
    ));
    t.run(&["run", "backup"]).code(0);
    assert_eq!(t.archives("nas/web").len(), 1, "web goes to nas");
    assert!(t.archives("usb/web").is_empty(), "web does not use usb");
    assert_eq!(t.archives("nas/db").len(), 1, "db uses every destination");
    assert_eq!(t.archives("usb/db").len(), 1, "db uses every destination");
    let doc = t.run(&["--json", "backups", "list"]).json();
    let copies = doc["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["kind"] == "archive-copy" && b["status"] == "complete")
        .count();
    assert_eq!(copies, 3);
}
