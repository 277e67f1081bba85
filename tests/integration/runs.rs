//! What every run does, whatever the workflow: usage errors before
//! anything is recorded, contended runs recorded as skipped, the lock
//! holder always named, a run with nothing to do, stdout closed early, and
//! configuration files with a BOM, no content or bytes that are not UTF-8.

use crate::harness::*;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Run rows from `status --json` (empty when there is no state DB).
fn runs(t: &Test) -> Vec<serde_json::Value> {
    let r = t.run(&["--json", "status"]);
    r.code(0);
    r.json()["runs"].as_array().cloned().unwrap_or_default()
}

#[test]
fn an_unknown_workflow_is_a_usage_error_and_records_nothing() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.data("data/web");
    let r = t.run(&["run", "updatee"]);
    r.code(2)
        .stderr_has("no workflow named 'updatee'")
        .stderr_has("backup");
    assert!(!t.path("state/state.db").exists(), "a state DB was created");
    assert!(!t.path("state/locks/updatee.lock").exists());
    t.run(&["run", "backup"]).code(0);
    assert!(runs(&t).iter().all(|r| r["workflow"] != "updatee"));
}

#[test]
fn a_run_that_finds_its_lock_held_is_recorded_as_skipped() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script("slow.rhai", "fn run(ctx) { time::sleep(3); }\n");
    let mut first = t.command(&["run", "slow"]).spawn().unwrap();
    let lock = t.path("state/locks/slow.lock");
    let start = Instant::now();
    while std::fs::read_to_string(&lock)
        .map(|s| !s.contains("pid="))
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "lock never taken"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = t.run(&["run", "slow"]);
    r.code(75)
        .stderr_has(&format!("pid {}", first.id()))
        .stderr_has(" since ");
    assert!(first.wait().unwrap().success());
    let store = homelab_autopilot::state::Store::open(&t.path("state/state.db")).unwrap();
    let rows = store.recent_runs(Some("slow"), 10).unwrap();
    let skipped: Vec<_> = rows
        .iter()
        .filter(|r| r.status == homelab_autopilot::state::RunStatus::Skipped)
        .collect();
    assert_eq!(skipped.len(), 1, "{rows:#?}");
    assert!(
        skipped[0].summary.contains(&format!("pid {}", first.id())),
        "{:?}",
        skipped[0]
    );
    // `status` still shows the run that ran.
    assert_eq!(runs(&t)[0]["status"], "success");
}

#[test]
fn contenders_always_name_the_holder() {
    // Many runs started together: every one that loses names the winner's
    // pid, host and start time (never "no holder info").
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script("short.rhai", "fn run(ctx) { time::sleep(1); }\n");
    let children: Vec<_> = (0..8)
        .map(|_| {
            t.command(&["run", "short"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut locked = 0;
    for mut c in children {
        let mut err = String::new();
        c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let status = c.wait().unwrap();
        if status.code() == Some(75) {
            locked += 1;
            assert!(
                err.contains(" on ") && err.contains(" since ") && !err.contains("no holder info"),
                "{err}"
            );
        } else {
            assert!(status.success(), "{err}");
        }
    }
    assert!(locked > 0, "no run was contended");
}

#[test]
fn a_run_with_no_enabled_service_warns_and_exits_3() {
    let t = Test::new();
    t.config(&format!(
        "{}\n    enabled: false\n",
        basic_config("", "").trim_end()
    ));
    let r = t.run(&["run", "backup"]);
    r.code(3).stderr_has("no enabled service");
    let rows = runs(&t);
    assert_eq!(rows[0]["status"], "warning", "{rows:#?}");
}

#[test]
fn stdout_closed_early_ends_quietly() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    let mut c = t
        .command(&["--json", "config", "show"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read one byte, then close the pipe, as `| head -c1` does.
    let mut out = c.stdout.take().unwrap();
    let mut one = [0u8; 1];
    out.read_exact(&mut one).unwrap();
    drop(out);
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = c.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(status.code(), Some(101), "{err}");
}

#[test]
fn a_config_with_a_byte_order_mark_is_read() {
    let t = Test::new();
    t.config(&format!("\u{feff}{}", basic_config("", "")));
    t.run(&["config", "validate"]).code(0);
}

#[test]
fn an_empty_config_is_an_error_not_a_silent_success() {
    let t = Test::new();
    t.config("# nothing here yet\n\n");
    t.run(&["run", "backup"])
        .code(78)
        .stderr_has("homelab-autopilot.yaml: the configuration is empty");
}

#[test]
fn a_config_that_is_not_utf8_names_the_byte_offset() {
    let t = Test::new();
    t.config("services:\n  - name: web\n");
    let mut bytes = std::fs::read(t.path("etc/homelab-autopilot.yaml")).unwrap();
    bytes.extend_from_slice(b"    type: gen\xffric\n");
    std::fs::write(t.path("etc/homelab-autopilot.yaml"), bytes).unwrap();
    t.run(&["config", "validate"])
        .code(78)
        .stderr_has("invalid byte 0xff at byte offset 37 (line 3)");
}
