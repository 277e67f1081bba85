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
    let mut first = start_holding_lock(&t, "slow");
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

/// Start `run WORKFLOW` and wait until it holds its lock.
fn start_holding_lock(t: &Test, workflow: &str) -> std::process::Child {
    let child = t
        .command(&["run", workflow])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = t.path(&format!("state/locks/{workflow}.lock"));
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
    child
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: plain kill(2) of our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

fn finish(child: std::process::Child) -> (Option<i32>, String) {
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned()
            + String::from_utf8_lossy(&out.stderr).as_ref(),
    )
}

fn last_run(t: &Test, workflow: &str) -> homelab_autopilot::state::RunInfo {
    let store = homelab_autopilot::state::Store::open(&t.path("state/state.db")).unwrap();
    store.recent_runs(Some(workflow), 1).unwrap().remove(0)
}

#[test]
fn sigterm_stops_a_run_at_a_safe_point_and_records_it_aborted() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script("spin.rhai", "fn run(ctx) { let x = 0; loop { x += 1; } }\n");
    let child = start_holding_lock(&t, "spin");
    std::thread::sleep(Duration::from_millis(200));
    let sent = Instant::now();
    signal(&child, libc::SIGTERM);
    let (code, out) = finish(child);
    assert_eq!(code, Some(143), "{out}");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "took {:?}",
        sent.elapsed()
    );
    assert!(out.contains("SIGTERM received"), "{out}");
    assert!(out.contains("interrupted by SIGTERM"), "{out}");
    let run = last_run(&t, "spin");
    assert_eq!(run.status, homelab_autopilot::state::RunStatus::Aborted);
    assert!(run.summary.contains("interrupted by SIGTERM"), "{run:?}");
    // The next run of the workflow is not blocked by anything left behind.
    t.script("spin.rhai", "fn run(ctx) { }\n");
    t.run(&["run", "spin"]).code(0);
}

#[test]
fn sigint_during_an_archive_leaves_no_temp_file_and_no_catalog_row() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    // Enough files that the archive is still being written when the
    // signal comes.
    let data = t.path("data/web");
    for d in 0..40 {
        let dir = data.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f}")), vec![(d * f) as u8; 20_000]).unwrap();
        }
    }
    let child = start_holding_lock(&t, "backup");
    // Wait for the archive's temp file, then interrupt.
    let start = Instant::now();
    let has_temp = || {
        std::fs::read_dir(t.path("backups/web"))
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            })
            .unwrap_or(false)
    };
    while !has_temp() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&child, libc::SIGINT);
    let (code, out) = finish(child);
    assert_eq!(code, Some(130), "{out}");
    let left: Vec<String> = std::fs::read_dir(t.path("backups/web"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.iter().all(|n| !n.contains(".tmp-")), "{left:?}");
    let store = homelab_autopilot::state::Store::open(&t.path("state/state.db")).unwrap();
    assert!(store.backups(Some("web"), true).unwrap().is_empty());
    assert_eq!(
        last_run(&t, "backup").status,
        homelab_autopilot::state::RunStatus::Aborted
    );
}

#[test]
fn a_second_signal_ends_the_run_at_once() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    // A child command the first signal does not interrupt.
    t.script(
        "wait.rhai",
        "fn run(ctx) { proc::run([\"sleep\", \"20\"], #{ timeout_seconds: 60 }); }\n",
    );
    let child = start_holding_lock(&t, "wait");
    std::thread::sleep(Duration::from_millis(200));
    signal(&child, libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    signal(&child, libc::SIGTERM);
    let (code, out) = finish(child);
    assert_eq!(code, Some(143), "{out}");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "took {:?}",
        sent.elapsed()
    );
    // The crash path: the row stays `running` until the next run of the
    // workflow marks it aborted.
    assert_eq!(
        last_run(&t, "wait").status,
        homelab_autopilot::state::RunStatus::Running
    );
    t.script("wait.rhai", "fn run(ctx) { }\n");
    t.run(&["run", "wait"]).code(0);
    let store = homelab_autopilot::state::Store::open(&t.path("state/state.db")).unwrap();
    let rows = store.recent_runs(Some("wait"), 2).unwrap();
    assert_eq!(rows[1].status, homelab_autopilot::state::RunStatus::Aborted);
}

#[test]
fn scripts_list_shows_steps_by_name_and_overrides_only_where_they_apply() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script(
        "services/web.rhai",
        "fn pre_backup(svc, ctx) { log::info(\"dump\"); }\n",
    );
    let r = t.run(&["--json", "scripts", "list"]);
    r.code(0);
    let doc = r.json();
    let workflows = doc["workflows"].as_array().unwrap();
    for w in workflows {
        for s in w["steps"].as_array().unwrap() {
            let f = s["function"].as_str().unwrap();
            assert!(!f.starts_with("anon$"), "internal name listed: {f}");
        }
        let overrides: Vec<&str> = w["service_overrides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["function"].as_str().unwrap())
            .collect();
        match w["name"].as_str().unwrap() {
            "backup" => assert_eq!(overrides, ["pre_backup/2"]),
            other => assert!(overrides.is_empty(), "{other}: {overrides:?}"),
        }
    }
    assert!(workflows.iter().any(|w| w["name"] == "monitor"));
}

#[test]
fn an_alert_no_channel_takes_is_logged_as_not_sent() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script(
        "alert.rhai",
        "fn run(ctx) { notify::send(\"service_down\", #{ summary: \"web is down\", service: \"web\" }); }\n",
    );
    t.run(&["run", "alert"]).code(0).stderr_has(
        "notification service_down (critical) not sent: no enabled channel takes it: web is down",
    );
    // With a channel that takes it, the line says it goes out.
    let t = Test::new();
    t.config(&basic_config(
        "",
        "",
    ).replace(
        "services:",
        "notifications:\n  channels:\n    - name: hook\n      type: webhook\n      url: http://127.0.0.1:9/hook\nservices:",
    ));
    t.script(
        "alert.rhai",
        "fn run(ctx) { notify::send(\"service_down\", #{ summary: \"web is down\", service: \"web\" }); }\n",
    );
    let r = t.run(&["run", "alert"]);
    r.code(0)
        .stderr_has("notification service_down (critical): web is down");
    assert!(!r.stderr.contains("not sent"), "{}", r.stderr);
    // A dead-man ping channel carries no messages: still not sent.
    let t = Test::new();
    t.config(&basic_config("", "").replace(
        "services:",
        "notifications:\n  channels:\n    - name: hc\n      type: healthchecks\n      url: http://127.0.0.1:9/ping/5bf66975-d4c7-4bf5-bcc8-b8d8a82ea278\nservices:",
    ));
    t.script(
        "alert.rhai",
        "fn run(ctx) { notify::send(\"service_down\", #{ summary: \"web is down\", service: \"web\" }); }\n",
    );
    t.run(&["run", "alert"])
        .code(0)
        .stderr_has("notification service_down (critical) not sent");
}

#[test]
fn the_monitor_prints_a_failing_service_as_failing_not_ok() {
    let t = Test::new();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    t.config(&format!(
        "services:\n  - name: db\n    type: generic\n    health_checks:\n      - type: tcp\n        name: port\n        host: 127.0.0.1\n        port: {port}\n  - name: live\n    type: generic\n    health_checks:\n      - type: command\n        name: true\n        command: [\"true\"]\n"
    ));
    let r = t.run(&["run", "monitor"]);
    r.code(0);
    let line = |name: &str| {
        r.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", r.stdout))
            .to_string()
    };
    assert!(line("db").starts_with("failing "), "{}", r.stdout);
    assert!(line("db").contains("1/1 check(s) failing"), "{}", r.stdout);
    assert!(line("live").starts_with("up "), "{}", r.stdout);
}

#[test]
fn run_help_lists_the_shipped_workflows() {
    let t = Test::new();
    let r = t.run(&["run", "--help"]);
    r.code(0).stdout_has("Shipped workflows: backup, monitor");
}

#[test]
fn a_full_disk_during_a_backup_exits_74_and_leaves_nothing_half_written() {
    // A 1 MiB tmpfs as the backup root, and more incompressible data than
    // fits. Mounting needs root (CI runs as root).
    if !require(&ROOT) {
        return;
    }
    let t = Test::new();
    let root = t.path("small");
    std::fs::create_dir_all(&root).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs failed");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(root.clone());
    t.config(&format!(
        "global:\n  backup:\n    root: {}\nservices:\n  - name: web\n    type: generic\n    backup_paths: [{{root}}/data/web]\n",
        root.display()
    ));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::create_dir_all(t.path("data/web")).unwrap();
    std::fs::write(t.path("data/web/big.bin"), &noise).unwrap();
    let r = t.run(&["--json", "run", "backup"]);
    r.code(74);
    let doc = r.json();
    assert_eq!(doc["services"][0]["error_kind"], "disk_full", "{doc:#}");
    // Nothing half-written is visible, and no catalog row exists.
    let mut left = Vec::new();
    walk(&root, &mut |p| left.push(p.display().to_string()));
    assert!(
        left.iter()
            .all(|p| !p.ends_with(".tar.zst") && !p.contains(".tmp-")),
        "{left:?}"
    );
    let store = homelab_autopilot::state::Store::open(&t.path("state/state.db")).unwrap();
    assert!(store.backups(Some("web"), true).unwrap().is_empty());
}

#[test]
fn restore_dry_run_into_a_non_empty_target_fails_as_the_restore_would() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.data("data/web");
    t.run(&["run", "backup"]).code(0);
    let archive = t.archives("backups/web").remove(0);
    let target = t.path("busy");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep"), "mine\n").unwrap();
    let args = |dry: bool| {
        let mut a = vec![
            "restore".to_string(),
            archive.display().to_string(),
            "--to".into(),
            target.display().to_string(),
        ];
        if dry {
            a.push("--dry-run".into());
        }
        a
    };
    let run = |dry: bool| {
        let a = args(dry);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        t.run(&a)
    };
    let real = run(false);
    let dry = run(true);
    real.code(2).stderr_has("is not empty");
    dry.code(2).stderr_has("is not empty");
    assert_eq!(
        std::fs::read_to_string(target.join("keep")).unwrap(),
        "mine\n"
    );
    // An empty target: the dry run says what it would do and writes nothing.
    let empty = t.path("empty");
    let r = t.run(&[
        "restore",
        archive.to_str().unwrap(),
        "--to",
        empty.to_str().unwrap(),
        "--dry-run",
    ]);
    r.code(0).stdout_has("[dry-run] would restore");
    assert!(!empty.exists());
}

#[test]
fn a_command_check_that_floods_stderr_fails_with_the_start_of_its_output() {
    let t = Test::new();
    // 64 MiB on stderr, then exit 3: read through, only the start kept.
    t.config(
        "services:\n  - name: db\n    type: generic\n    health_checks:\n      - type: command\n        name: flood\n        command: [\"sh\", \"-c\", \"echo first-line >&2; head -c 67108864 /dev/zero | tr '\\\\0' x >&2; exit 3\"]\n        timeout_seconds: 60\n",
    );
    let r = t.run(&["run", "monitor"]);
    r.code(0);
    let line = r
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("db"))
        .unwrap_or_else(|| panic!("{}", r.stdout))
        .to_string();
    assert!(line.starts_with("failing "), "{line}");
    assert!(
        line.contains("exit status: 3") && line.contains("first-line"),
        "{line}"
    );
    assert!(
        line.len() < 1000,
        "the message is bounded: {} bytes",
        line.len()
    );
}
