//! The run's limits reach the primitives: the deadline stops blocking
//! calls (uncatchably), command output is capped by the string limit, and
//! `global.scripts.allow_commands` / `allow_paths` are enforced.

use crate::harness::*;
use std::time::{Duration, Instant};

const DEADLINE: &str = "script stopped: the run's deadline (global.scripts.timeout_seconds) passed";

fn scripts_config(t: &Test, scripts: &str) {
    t.config(&basic_config(&format!("  scripts:\n{scripts}"), ""));
}

/// Run workflow `name` and return (its JSON report, seconds it took).
fn timed(t: &Test, name: &str, want: i32) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let r = t.run(&["--json", "run", name]);
    let took = started.elapsed();
    r.code(want);
    (r.json(), took)
}

/// Run workflow `name` (exit 0) and return the map it logged as
/// `log::info("RESULT " + map.to_json())`.
#[track_caller]
fn result(t: &Test, name: &str) -> serde_json::Value {
    let r = t.run(&["run", name]);
    r.code(0);
    let line = r
        .stderr
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, v)| v.to_string()))
        .unwrap_or_else(|| panic!("no RESULT line:\n{}", r.stderr));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[track_caller]
fn stopped_by_the_deadline(t: &Test, name: &str) {
    let (doc, took) = timed(t, name, 1);
    let error = doc["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(DEADLINE), "{doc}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(12),
        "took {took:?}"
    );
}

#[test]
fn a_sleep_ends_at_the_deadline() {
    let t = Test::new();
    scripts_config(&t, "    timeout_seconds: 2\n");
    t.script(
        "nap.rhai",
        "fn run(ctx) {\n    time::sleep(30);\n    log::info(\"slept it out\");\n}\n",
    );
    stopped_by_the_deadline(&t, "nap");
}

#[test]
fn a_command_ends_at_the_deadline() {
    let t = Test::new();
    scripts_config(&t, "    timeout_seconds: 2\n");
    t.script(
        "cmd.rhai",
        "fn run(ctx) {\n    proc::run([\"sleep\", \"30\"], #{ timeout_seconds: 600 });\n}\n",
    );
    stopped_by_the_deadline(&t, "cmd");
}

#[test]
fn a_catch_block_cannot_swallow_the_deadline_stop() {
    let t = Test::new();
    scripts_config(&t, "    timeout_seconds: 2\n");
    t.script(
        "swallow.rhai",
        r#"fn run(ctx) {
    try { time::sleep(30); } catch (e) { state::set("swallowed", "sleep"); }
    try { proc::run(["sleep", "30"]); } catch (e) { state::set("swallowed", "proc"); }
    state::set("swallowed", "after");
    #{ ok: true }
}
"#,
    );
    stopped_by_the_deadline(&t, "swallow");
    // Nothing after the stop ran: not the catch blocks, not the rest.
    t.script(
        "look.rhai",
        "fn run(ctx) {\n    log::info(\"RESULT \" + #{ swallowed: state::get(\"swallowed\") ?? \"nothing\" }.to_json());\n}\n",
    );
    assert_eq!(result(&t, "look")["swallowed"], "nothing");
}

#[test]
fn a_huge_max_output_is_capped_by_the_string_limit() {
    let t = Test::new();
    scripts_config(&t, "    timeout_seconds: 120\n");
    // 300 MB of output asked to be kept whole.
    t.script(
        "big.rhai",
        r#"fn run(ctx) {
    let r = proc::run(["sh", "-c", "yes | head -c 300000000"], #{ max_output: 2000000000, read_only: true });
    let len = r.stdout.len();
    r = ();
    let status = fs::read_text("/proc/self/status");
    let peak = 0;
    for line in status.split("\n") {
        if line.starts_with("VmHWM:") {
            let v = line.sub_string(6);
            v.trim();
            peak = parse_int(v.split(" ")[0]);
        }
    }
    log::info("RESULT " + #{ len: len, peak_kb: peak }.to_json());
}
"#,
    );
    let doc = result(&t, "big");
    assert_eq!(doc["len"], 16 * 1024 * 1024, "{doc}");
    let peak_kb = doc["peak_kb"].as_i64().unwrap();
    assert!(
        peak_kb > 0 && peak_kb < 256 * 1024,
        "peak RSS {peak_kb} kB for 16 MiB kept"
    );
}

#[test]
fn allow_commands_refuses_an_unlisted_program_and_runs_a_listed_one() {
    let t = Test::new();
    scripts_config(&t, "    allow_commands: [echo, /bin/echo]\n");
    t.script(
        "cmds.rhai",
        r#"fn run(ctx) {
    let out = proc::run(["echo", "hello"]).stdout;
    let abs = proc::run(["/bin/echo", "abs"]).stdout;
    let refused = "";
    let kind = "";
    try { proc::run(["date"]); } catch (e) { refused = e.message; kind = e.kind; }
    let moved = "";
    try { proc::run(["echo", "x"], #{ env: #{ PATH: "/tmp" } }); } catch (e) { moved = e.kind; }
    let check = "";
    try { sys::command(["date"]); } catch (e) { check = e.kind; }
    log::info("RESULT " + #{ out: out, abs: abs, refused: refused, kind: kind, moved: moved, check: check }.to_json());
}
"#,
    );
    let doc = result(&t, "cmds");
    let v = &doc;
    assert_eq!(v["out"], "hello\n", "{doc}");
    assert_eq!(v["abs"], "abs\n", "{doc}");
    assert_eq!(v["kind"], "permission_denied", "{doc}");
    let msg = v["refused"].as_str().unwrap();
    assert!(
        msg.contains("'date'") && msg.contains("global.scripts.allow_commands"),
        "{msg}"
    );
    assert_eq!(v["moved"], "permission_denied", "{doc}");
    assert_eq!(v["check"], "permission_denied", "{doc}");
}

#[test]
fn allow_paths_refuses_a_write_outside_and_allows_one_inside() {
    let t = Test::new();
    scripts_config(&t, "    allow_paths: [\"{root}/out\"]\n");
    std::fs::create_dir_all(t.path("out")).unwrap();
    std::fs::create_dir_all(t.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(t.path("elsewhere"), t.path("out/link")).unwrap();
    t.script(
        "files.rhai",
        r#"fn run(ctx) {
    fs::mkdir("{root}/out/sub");
    fs::write_text("{root}/out/sub/ok.txt", "inside");
    let refused = [];
    for p in ["{root}/elsewhere/x.txt", "{root}/out/link/x.txt", "{root}/out/../elsewhere/x.txt"] {
        try { fs::write_text(p, "outside"); refused.push("written"); }
        catch (e) { refused.push(e.kind); if !e.message.contains("allow_paths") { throw e.message; } }
    }
    try { fs::mkdir("{root}/elsewhere/d"); refused.push("made"); } catch (e) { refused.push(e.kind); }
    try { fs::remove("{root}/etc/homelab-autopilot.yaml"); refused.push("removed"); } catch (e) { refused.push(e.kind); }
    log::info("RESULT " + #{ refused: refused }.to_json());
}
"#,
    );
    let doc = result(&t, "files");
    let refused = doc["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 5, "{doc}");
    assert!(refused.iter().all(|k| k == "permission_denied"), "{doc}");
    assert_eq!(
        std::fs::read_to_string(t.path("out/sub/ok.txt")).unwrap(),
        "inside"
    );
    assert!(!t.path("elsewhere/x.txt").exists());
    assert!(!t.path("elsewhere/d").exists());
    assert!(t.path("etc/homelab-autopilot.yaml").exists());
}

#[test]
fn a_relative_allow_paths_entry_is_a_config_error() {
    let t = Test::new();
    scripts_config(&t, "    allow_paths: [out]\n    allow_commands: [\"\"]\n");
    let file = t.path("etc/homelab-autopilot.yaml").display().to_string();
    let r = t.run(&["config", "validate"]);
    r.code(78);
    let line = |n: usize, key: &str, says: &str| {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with(&format!("{file}:{n}:"))
                    && l.contains(key)
                    && l.contains(says)),
            "no error for {key} at line {n}:\n{}",
            r.stderr
        );
    };
    line(5, "allow_paths", "must be absolute");
    line(6, "allow_commands", "must not be empty");
    t.run(&["run", "backup"]).code(78);
}
