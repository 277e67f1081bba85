//! `run monitor` against real local HTTP/TCP servers: alert state across
//! runs (fail_after, recover_after), parent suppression, maintenance by a
//! held workflow lock, TLS expiry, `status`.

use crate::harness::free_port;
use crate::harness::Test;
use crate::notify::{ok, tls_cert, Receiver, Reply};
use std::time::Duration;

fn down() -> Reply {
    Reply::Status(503, vec![], "down".into())
}

/// Config: a webhook channel to `hooks`, `monitoring` keys, services.
pub(crate) fn config(t: &Test, hooks: &Receiver, monitoring: &str, services: &str) {
    t.config(&format!(
        "notifications:\n  cooldown_minutes: 0\n  channels:\n    - name: hook\n      type: webhook\n      url: {}\nmonitoring:\n{monitoring}services:\n{services}",
        hooks.url("/hook")
    ));
}

/// Events delivered so far, in order, across every message.
pub(crate) fn events(hooks: &Receiver) -> Vec<String> {
    hooks
        .requests()
        .iter()
        .flat_map(|r| {
            r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["event"].as_str().unwrap(),
                        e["data"]["service"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn flapping_alerts_only_after_fail_after_and_recovers_after_recover_after() {
    let t = Test::new();
    let hooks = Receiver::start(ok());
    let web = Receiver::start(ok());
    config(
        &t,
        &hooks,
        "  fail_after: 3\n  recover_after: 2\n",
        &format!(
            "  - name: web\n    health_checks:\n      - type: http\n        url: {}\n",
            web.url("/health")
        ),
    );
    let mut seen = Vec::new();
    // up, down, down, up (flap), down x3 -> DOWN, up, down, up, up -> UP
    for (i, state) in ["u", "d", "d", "u", "d", "d", "d", "u", "d", "u", "u"]
        .iter()
        .enumerate()
    {
        web.set_default(if *state == "u" { ok() } else { down() });
        t.run(&["run", "monitor"]).code(0);
        seen.push((i, events(&hooks).len()));
    }
    assert_eq!(
        events(&hooks),
        vec!["service_down web", "service_recovered web"]
    );
    // The DOWN alert came on the third consecutive failure (cycle 6), the
    // recovery on the second consecutive success (cycle 10).
    assert_eq!(seen[5].1, 0);
    assert_eq!(seen[6].1, 1);
    assert_eq!(seen[9].1, 1);
    assert_eq!(seen[10].1, 2);
}

#[test]
fn state_survives_restarts_without_duplicate_alerts_and_status_shows_it() {
    let t = Test::new();
    let hooks = Receiver::start(ok());
    let web = Receiver::start(down());
    config(
        &t,
        &hooks,
        "  fail_after: 1\n",
        // "files" has nothing to check: reported as skipped, no failure.
        &format!(
            "  - name: web\n    health_checks:\n      - type: http\n        url: {}\n  - name: files\n",
            web.url("/health")
        ),
    );
    for _ in 0..3 {
        t.run(&["run", "monitor"])
            .code(0)
            .stdout_has("no health checks");
    }
    assert_eq!(events(&hooks), vec!["service_down web"]);
    let st = t.run(&["status"]);
    st.code(0)
        .stdout_has("Monitoring")
        .stdout_has("DOWN")
        .stdout_has("0.00%");
    web.set_default(ok());
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(
        events(&hooks),
        vec!["service_down web", "service_recovered web"]
    );
    let st = t.run(&["--json", "status"]);
    let j = st.json();
    assert_eq!(j["monitor"][0]["service"], "web");
    assert_eq!(j["monitor"][0]["state"], "up");
    assert_eq!(j["monitor"][0]["uptime_24h"], 25.0);
}

#[test]
fn a_down_parent_suppresses_its_children_and_names_them() {
    let t = Test::new();
    let hooks = Receiver::start(ok());
    let web = Receiver::start(down());
    let dead = free_port();
    config(
        &t,
        &hooks,
        "  fail_after: 1\n",
        &format!(
            "  - name: db\n    health_checks:\n      - type: tcp\n        name: port\n        host: 127.0.0.1\n        port: {dead}\n  - name: web\n    health_checks:\n      - type: http\n        name: front\n        url: {}\n        parent: db\n",
            web.url("/")
        ),
    );
    let run = t.run(&["run", "monitor"]);
    run.code(0);
    let r = hooks.requests();
    assert_eq!(r.len(), 1, "one message per run");
    let j = r[0].json();
    let evs = j["events"].as_array().unwrap();
    assert_eq!(evs.len(), 1, "{j}");
    assert_eq!(evs[0]["event"], "service_down");
    assert_eq!(evs[0]["data"]["service"], "db");
    assert_eq!(
        evs[0]["data"]["suppressed"],
        serde_json::json!(["web/front"])
    );
}

#[test]
fn a_service_being_backed_up_is_silenced_then_alerted_if_still_down() {
    let t = Test::new();
    let hooks = Receiver::start(ok());
    let web = Receiver::start(down());
    config(
        &t,
        &hooks,
        "  fail_after: 1\n",
        &format!(
            "  - name: web\n    health_checks:\n      - type: http\n        url: {}\n",
            web.url("/")
        ),
    );
    std::fs::create_dir_all(t.path("state/locks")).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(t.path("state/locks/backup.lock"))
        .unwrap();
    lock.lock().unwrap();
    t.run(&["run", "monitor"])
        .code(0)
        .stderr_has("the backup workflow is running");
    assert!(hooks.requests().is_empty());
    drop(lock);
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(events(&hooks), vec!["service_down web"]);
}

#[test]
fn a_certificate_near_expiry_warns() {
    let t = Test::new();
    let hooks = Receiver::start(ok());
    let tls = tls_cert(3);
    let site = Receiver::start_tls(ok(), &tls);
    t.write("ca.pem", &tls.ca_pem);
    config(
        &t,
        &hooks,
        "",
        &format!(
            "  - name: web\n    health_checks:\n      - type: http\n        url: {}\n        tls_expiry_warn_days: 14\n",
            site.url("/")
        ),
    );
    let out = t
        .command(&["run", "monitor"])
        .env("SSL_CERT_FILE", t.path("ca.pem"))
        .output()
        .unwrap();
    let run = crate::harness::Run::from_output(out);
    run.code(0).stderr_has("TLS certificate expires in");
    assert!(
        run.stderr.contains("in 2 day(s)") || run.stderr.contains("in 3 day(s)"),
        "{}",
        run.stderr
    );
    let st = t.run(&["--json", "status"]).json();
    assert_eq!(st["monitor"][0]["state"], "up");
    let _ = Duration::from_secs(0);
}

#[test]
fn reminders_follow_remind_every_and_pass_the_cooldown() {
    let t = Test::new();
    let hooks = Receiver::start(ok());
    let web = Receiver::start(down());
    t.config(&format!(
        "notifications:\n  cooldown_minutes: 600\n  channels:\n    - name: hook\n      type: webhook\n      url: {}\nmonitoring:\n  fail_after: 1\n  remind_every_minutes: 1\nservices:\n  - name: web\n    health_checks:\n      - type: http\n        url: {}\n",
        hooks.url("/hook"),
        web.url("/")
    ));
    t.run(&["run", "monitor"]).code(0);
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(events(&hooks), vec!["service_down web"]);
    // Two minutes pass (moved back in the DB rather than waited for).
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    db.execute(
        "UPDATE monitor_checks SET last_alert = last_alert - 120",
        [],
    )
    .unwrap();
    t.run(&["run", "monitor"]).code(0);
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(events(&hooks), vec!["service_down web", "service_down web"]);
    let last = hooks.requests().last().unwrap().json();
    assert_eq!(last["data"]["reminder"], true);
    assert!(last["summary"].as_str().unwrap().contains("is still DOWN"));
}

#[test]
fn failures_inside_a_maintenance_window_are_recorded_not_alerted() {
    let t = Test::new();
    let hooks = Receiver::start(ok());
    let web = Receiver::start(down());
    config(
        &t,
        &hooks,
        "  fail_after: 1\n  maintenance_windows:\n    - name: always\n      schedule: \"* * * * *\"\n      duration_minutes: 5\n      services: [web]\n",
        &format!("  - name: web\n    health_checks:\n      - type: http\n        url: {}\n", web.url("/")),
    );
    t.run(&["run", "monitor"])
        .code(0)
        .stderr_has("maintenance window always");
    assert!(hooks.requests().is_empty());
    let st = t.run(&["--json", "status"]).json();
    assert_eq!(st["monitor"][0]["state"], "down");
}

#[test]
fn read_only_check_primitives_answer_scripts_and_run_in_dry_runs() {
    let t = Test::new();
    let web = Receiver::start(Reply::Status(200, vec![], "all systems go".into()));
    let dead = free_port();
    t.write("pid", &format!("{}\n", std::process::id()));
    t.config("services: []\n").script(
        "probe.rhai",
        &format!(
            r#"
fn expect(what, r, want) {{
    if r.ok != want {{ throw `${{what}}: expected ok=${{want}}, got ${{r}}`; }}
}}
fn run(ctx) {{
    expect("http", http::check("{url}"), true);
    expect("http body", http::check(#{{ url: "{url}", body_contains: "systems go", max_latency_ms: 5000 }}), true);
    expect("http regex", http::check(#{{ url: "{url}", body_regex: "^nope$" }}), false);
    expect("http status", http::check(#{{ url: "{url}", expected_status: 204 }}), false);
    expect("tcp", net::tcp("127.0.0.1", {port}), true);
    expect("tcp closed", net::tcp("127.0.0.1", {dead}), false);
    expect("dns", net::dns("localhost"), true);
    expect("pid file", sys::pid_file("{{root}}/pid"), true);
    expect("process", sys::process("no-such-process-xyz"), false);
    expect("command", sys::command(["true"]), true);
    expect("command fails", sys::command(["false"]), false);
    let d = sys::disk("/");
    if d.used_percent < 0.0 || d.used_percent > 100.0 {{ throw `disk ${{d}}`; }}
    let r = sys::resources();
    if r.disks.len() != 1 {{ throw `resources ${{r}}`; }}
    if docker::container("no-such-container-xyz").ok {{ throw "docker"; }}
    #{{ ok: true }}
}}
"#,
            url = web.url("/health"),
            port = web.port,
        ),
    );
    t.run(&["run", "probe"]).code(0);
    t.run(&["run", "probe", "--dry-run"]).code(0);
}

#[test]
fn containers_are_checked_through_the_docker_socket() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    let t = Test::new();
    let sock = t.path("docker.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let mut line = String::new();
            let mut r = BufReader::new(&s);
            r.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let (code, body) = match path.as_str() {
                "/containers/web/json" => (
                    200,
                    r#"{"Id":"x","State":{"Status":"running","Running":true,"Health":{"Status":"healthy"}}}"#,
                ),
                "/containers/sick/json" => (
                    200,
                    r#"{"State":{"Status":"running","Running":true,"Health":{"Status":"unhealthy"}}}"#,
                ),
                "/containers/stopped/json" => {
                    (200, r#"{"State":{"Status":"exited","Running":false}}"#)
                }
                _ => (404, r#"{"message":"No such container"}"#),
            };
            let mut w = &s;
            let _ = write!(
                w,
                "HTTP/1.0 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    t.config("services: []\n").script(
        "probe.rhai",
        r#"
fn run(ctx) {
    let r = docker::container("web");
    if !r.ok || !r.message.contains("healthy") { throw `web: ${r}`; }
    let r = docker::container("sick");
    if r.ok || !r.message.contains("unhealthy") { throw `sick: ${r}`; }
    let r = docker::container("stopped");
    if r.ok || !r.message.contains("exited") { throw `stopped: ${r}`; }
    let r = docker::container("gone");
    if r.ok || !r.message.contains("no such container") { throw `gone: ${r}`; }
    let r = docker::container("../etc");
    if r.ok { throw "path"; }
    #{ ok: true }
}
"#,
    );
    let out = t
        .command(&["run", "probe"])
        .env("DOCKER_HOST", format!("unix://{}", sock.display()))
        .output()
        .unwrap();
    crate::harness::Run::from_output(out).code(0);
}
