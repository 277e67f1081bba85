//! The status page through `serve` (the real binary): authentication, the
//! JSON API against the shapes docs/status-page.md documents, 404/405 as
//! JSON, /metrics, escaping of hostile text, masking of secrets, SIGTERM,
//! the configuration's errors, and the page rendered by a real headless
//! chromium.

use crate::harness::free_port;
use crate::harness::{require, Requirement, Test};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "tok-web-5f3a9c71";
const USER: &str = "admin";
const PASSWORD: &str = "pw-web-8d21e7b0";

/// Debian's chromium, to render the page as a browser does.
pub const CHROMIUM: Requirement = Requirement {
    name: "chromium",
    install: "apt-get install chromium",
    probe: chromium_available,
    tests: &["web::the_page_renders_in_a_headless_browser"],
    optional: false,
};

fn chromium_available() -> Result<(), String> {
    match std::process::Command::new("chromium")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("no chromium on PATH".into()),
    }
}

fn config(extra_services: &str) -> String {
    format!(
        r#"http:
  listen: "127.0.0.1:0"
  auth:
    token: {TOKEN}
    username: {USER}
    password: {PASSWORD}
notifications:
  channels:
    - name: hook
      type: webhook
      url: http://127.0.0.1:{}/hook
      events: [backup_success]
services:
  - name: web
    backup_paths: ["{{root}}/data/web"]
    health_checks:
      - type: tcp
        name: port
        host: 127.0.0.1
        port: {}
  - name: db
    backup_paths: ["{{root}}/data/db"]
{extra_services}"#,
        free_port(),
        free_port()
    )
}

/// A test root with two backups of `web`, a monitor run, a failed backup
/// notification and a workflow that logs and throws hostile text.
fn populated() -> Test {
    let t = Test::new();
    t.config(&config(""));
    t.write("data/web/index.html", "<h1>hello</h1>\n");
    t.script(
        "hostile.rhai",
        "fn run(ctx) {\n    log::warn(\"<script>alert(1)</script><img src=x onerror=alert(2)> & \\\"q\\\"\");\n    throw \"</pre><b id=injected>bold</b>\";\n}\n",
    );
    let backup = |t: &Test| {
        t.command(&["run", "backup", "--service", "web"])
            .env("HOMELAB_AUTOPILOT_NOTIFY_TIMEOUT", "1")
            .output()
            .unwrap()
    };
    assert!(backup(&t).status.success());
    std::thread::sleep(Duration::from_millis(1100)); // another archive name
    t.write("data/web/more.txt", &"x".repeat(50_000));
    assert!(backup(&t).status.success());
    // Two failed cycles: web's check is DOWN (fail_after: 2).
    t.run(&["run", "monitor"]).code(0);
    t.run(&["run", "monitor"]).code(0);
    t.run(&["run", "hostile"]).code(1);
    t
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(t: &Test, args: &[&str]) -> Server {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        Server::start_command(t, &all)
    }

    /// Any command that serves the page (`serve`, `daemon`), once it says
    /// where.
    fn start_command(t: &Test, all: &[&str]) -> Server {
        let mut child = t
            .command(all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut seen = String::new();
        let base = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some((_, u)) = l.split_once("serving the status page on ") {
                        break u.trim().trim_end_matches('/').to_string();
                    }
                    seen.push_str(&l);
                    seen.push('\n');
                }
                _ => {
                    let _ = child.kill();
                    panic!("serve ended without listening:\n{seen}");
                }
            }
        };
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, base }
    }

    /// SIGTERM; the exit code and stdout.
    fn stop(mut self) -> (i32, String) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut out = String::new();
                use std::io::Read;
                self.child
                    .stdout
                    .take()
                    .unwrap()
                    .read_to_string(&mut out)
                    .unwrap();
                return (status.code().unwrap_or(-1), out);
            }
            assert!(Instant::now() < deadline, "serve ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn get(s: &Server, path: &str) -> Got {
    send(s, reqwest::Method::GET, path, Some(TOKEN))
}

fn send(s: &Server, method: reqwest::Method, path: &str, token: Option<&str>) -> Got {
    let mut r = client().request(method, format!("{}{path}", s.base));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().unwrap();
    Got {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.text().unwrap(),
    }
}

/// The ```json example under the `### ` heading naming `endpoint` in
/// docs/status-page.md.
fn documented(endpoint: &str) -> Value {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/status-page.md"))
        .unwrap();
    let heading = format!("### `GET {endpoint}`");
    let at = doc
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/status-page.md has no {heading}"));
    let rest = &doc[at..];
    let start = rest.find("```json\n").expect("a json block") + "```json\n".len();
    let end = rest[start..].find("```").unwrap();
    serde_json::from_str(&rest[start..start + end])
        .unwrap_or_else(|e| panic!("{endpoint}: documented example is not JSON: {e}"))
}

/// Every documented key present with its type, and no undocumented key
/// sent. `null` in the documentation stands for any value; a documented
/// value may be sent as `null`; an empty documented object is a map of
/// any keys; an array's elements are checked against its first example.
fn same_shape(doc: &Value, got: &Value, path: &str, errs: &mut Vec<String>) {
    match (doc, got) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(d), Value::Object(g)) => {
            if d.is_empty() {
                return;
            }
            for (k, dv) in d {
                match g.get(k) {
                    Some(gv) => same_shape(dv, gv, &format!("{path}.{k}"), errs),
                    None => errs.push(format!("{path}.{k}: documented, not sent")),
                }
            }
            for k in g.keys().filter(|k| !d.contains_key(*k)) {
                errs.push(format!("{path}.{k}: sent, not documented"));
            }
        }
        (Value::Array(d), Value::Array(g)) => {
            if let Some(first) = d.first() {
                for (i, item) in g.iter().enumerate() {
                    same_shape(first, item, &format!("{path}[{i}]"), errs);
                }
            }
        }
        (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Number(_), Value::Number(_)) => {}
        (d, g) => errs.push(format!("{path}: documented {d}, sent {g}")),
    }
}

#[track_caller]
fn assert_documented(endpoint: &str, got: &Value) {
    let mut errs = Vec::new();
    same_shape(&documented(endpoint), got, "$", &mut errs);
    assert!(
        errs.is_empty(),
        "{endpoint} differs from docs/status-page.md:\n{}\n--- sent\n{got:#}",
        errs.join("\n")
    );
}

#[test]
fn the_shape_check_sees_a_missing_an_extra_and_a_mistyped_key() {
    let doc = serde_json::json!({"a": 1, "b": [{"c": "x"}], "d": null, "m": {}});
    let mut errs = Vec::new();
    same_shape(
        &doc,
        &serde_json::json!({"a": "1", "b": [{"c": "y", "e": 2}], "d": [1], "m": {"k": 1}, "z": 0}),
        "$",
        &mut errs,
    );
    errs.sort();
    assert_eq!(
        errs,
        vec![
            "$.a: documented 1, sent \"1\"",
            "$.b[0].e: sent, not documented",
            "$.z: sent, not documented"
        ]
    );
    let mut errs = Vec::new();
    same_shape(&doc, &serde_json::json!({"a": 2}), "$", &mut errs);
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn the_json_api_answers_in_its_documented_shapes() {
    let t = populated();
    let s = Server::start(&t, &[]);

    let st = get(&s, "/api/v1/status");
    assert_eq!(st.status, 200, "{}", st.body);
    assert!(st.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let st = st.json();
    assert_documented("/api/v1/status", &st);
    assert_eq!(st["schema_version"], 1);
    // The hostile workflow failed last, and web's monitor check is failing.
    assert_eq!(st["health"], "critical", "{st:#}");
    assert_eq!(st["problems"][0]["health"], "critical");
    let db = st["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap();
    assert_eq!(db["health"], "warning", "never backed up: {db:#}");
    let wf: Vec<&str> = st["last_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["workflow"].as_str().unwrap())
        .collect();
    assert_eq!(wf, ["backup", "hostile", "monitor"]);
    let web = &st["services"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["monitor"]["state"], "down", "{web:#}");
    assert_eq!(web["health"], "critical", "{web:#}");

    let list = get(&s, "/api/v1/services").json();
    assert_documented("/api/v1/services", &list);
    assert_eq!(list["services"].as_array().unwrap().len(), 2);

    let web = get(&s, "/api/v1/services/web").json();
    assert_documented("/api/v1/services/NAME", &web);
    assert_eq!(web["backups"], 2);
    assert_eq!(web["history"]["backups"].as_array().unwrap().len(), 2);
    assert!(!web["checks"].as_array().unwrap().is_empty(), "{web:#}");
    assert!(web["monitor"].is_object(), "{web:#}");
    let size = web["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "backup_size")
        .unwrap();
    let points = size["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    // Oldest first, and the second archive holds the 50 kB file.
    assert!(points[0]["t"].as_i64() < points[1]["t"].as_i64());
    assert!(points[1]["v"].as_f64() > points[0]["v"].as_f64());

    let runs = get(&s, "/api/v1/runs").json();
    assert_documented("/api/v1/runs", &runs);
    let all = runs["runs"].as_array().unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[0]["workflow"], "hostile", "newest first");
    let one = get(&s, "/api/v1/runs?limit=1&workflow=backup").json();
    assert_eq!(one["runs"].as_array().unwrap().len(), 1);
    assert_eq!(one["runs"][0]["workflow"], "backup");
    assert_eq!(get(&s, "/api/v1/runs?limit=0").status, 400);

    // The second backup run: its log and its failed notification.
    let id = one["runs"][0]["id"].as_i64().unwrap();
    let run = get(&s, &format!("/api/v1/runs/{id}")).json();
    assert_documented("/api/v1/runs/ID", &run);
    assert!(!run["events"].as_array().unwrap().is_empty(), "{run:#}");
    let n = run["notifications"].as_array().unwrap();
    assert!(
        n.iter()
            .any(|n| n["channel"] == "hook" && n["status"] == "failed"),
        "{run:#}"
    );

    for path in [
        "/api/v1/runs/999999",
        "/api/v1/services/nosuch",
        "/api/v1/nothing",
    ] {
        let r = get(&s, path);
        assert_eq!(r.status, 404, "{path}");
        let e = r.json();
        assert_eq!(e["error"]["status"], 404, "{path}: {e}");
        assert_eq!(e["schema_version"], 1);
    }
    for m in [reqwest::Method::POST, reqwest::Method::DELETE] {
        let r = send(&s, m.clone(), "/api/v1/runs", Some(TOKEN));
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.headers["allow"], "GET, HEAD");
        assert_eq!(r.json()["error"]["status"], 405);
    }

    let metrics = get(&s, "/metrics");
    assert_eq!(metrics.status, 200);
    assert!(metrics.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    assert!(
        metrics
            .body
            .contains("homelab_autopilot_job_last_status{workflow=\"hostile\"} 2"),
        "{}",
        metrics.body
    );
    assert!(metrics
        .body
        .contains("homelab_autopilot_backup_last_size_bytes{service=\"web\"}"));
    assert!(metrics
        .body
        .contains("homelab_autopilot_service_up{service=\"web\"} 0"));

    let (code, out) = s.stop();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("stopped by SIGTERM"), "{out}");
}

#[test]
fn every_request_needs_the_token_or_the_password() {
    let t = Test::new();
    t.config(&config(""));
    let s = Server::start(&t, &[]);
    for path in ["/", "/api/v1/status", "/metrics", "/api/v1/nothing"] {
        let r = send(&s, reqwest::Method::GET, path, None);
        assert_eq!(r.status, 401, "{path}");
        let challenges: Vec<&str> = r
            .headers
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic realm=")),
            "{path}: {challenges:?}"
        );
        assert!(!r.body.contains("services"), "{path}: {}", r.body);
    }
    assert_eq!(
        send(&s, reqwest::Method::GET, "/api/v1/nothing", None).json()["error"]["status"],
        401
    );
    let wrong = send(
        &s,
        reqwest::Method::GET,
        "/api/v1/status",
        Some("tok-web-5f3a9c7"),
    );
    assert_eq!(wrong.status, 401);
    let basic = |user: &str, pass: &str| {
        client()
            .get(format!("{}/api/v1/status", s.base))
            .basic_auth(user, Some(pass))
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(basic(USER, PASSWORD), 200);
    assert_eq!(basic(USER, "pw-web-8d21e7b"), 401);
    assert_eq!(basic("root", PASSWORD), 401);
    // Before any run: no state DB, health unknown, and none is created.
    let st = get(&s, "/api/v1/status").json();
    assert_eq!(st["has_state"], false);
    assert_eq!(st["health"], "warning", "never backed up: {st:#}");
    assert!(
        st["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["subject"] == "state" && p["health"] == "unknown"),
        "{st:#}"
    );
    assert!(!t.path("state/state.db").exists());
}

#[test]
fn hostile_text_is_escaped_and_secrets_are_masked_on_every_page() {
    let t = populated();
    // Text that reached the state DB without the scrubber (an older
    // version, a hand edit) is still masked on the way out.
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    db.execute(
        "INSERT INTO run_events (run_id, seq, ts, level, service, message)
         VALUES (1, 99999, 0, 'info', 'web', ?1)",
        [format!("leaked {TOKEN} and {PASSWORD}")],
    )
    .unwrap();
    drop(db);
    let s = Server::start(&t, &[]);
    let runs = get(&s, "/api/v1/runs").json();
    let hostile = runs["runs"][0]["id"].as_i64().unwrap();
    let pages = [
        "/".to_string(),
        "/runs".into(),
        format!("/runs/{hostile}"),
        "/runs/1".into(),
        "/services/web".into(),
        "/api/v1/runs/1".into(),
        format!("/api/v1/runs/{hostile}"),
    ];
    for p in &pages {
        let r = get(&s, p);
        assert_eq!(r.status, 200, "{p}: {}", r.body);
        assert!(
            !r.body.contains(TOKEN) && !r.body.contains(PASSWORD),
            "{p}: {}",
            r.body
        );
        if !p.starts_with("/api/") {
            assert!(
                !r.body.contains("<script") && !r.body.contains("<img"),
                "{p}: {}",
                r.body
            );
            assert!(!r.body.contains("<b id=injected>"), "{p}: {}", r.body);
            assert!(
                r.headers["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .contains("default-src 'none'"),
                "{p}"
            );
        }
    }
    let run = get(&s, "/runs/1").body;
    assert!(run.contains("leaked *** and ***"), "{run}");
    let page = get(&s, &format!("/runs/{hostile}")).body;
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt; &amp; &quot;q&quot;"),
        "{page}"
    );
    assert!(
        page.contains("&lt;/pre&gt;&lt;b id=injected&gt;bold&lt;/b&gt;"),
        "{page}"
    );
    // The JSON carries the text as it is, as JSON strings.
    let api = get(&s, &format!("/api/v1/runs/{hostile}")).json();
    assert!(
        api["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"]
                .as_str()
                .unwrap()
                .contains("<script>alert(1)</script>")),
        "{api:#}"
    );
}

#[test]
fn without_auth_only_loopback_and_local_host_names_are_served() {
    let t = Test::new();
    t.config("http:\n  listen: \"[::1]:0\"\nservices:\n  - name: web\n");
    let s = Server::start(&t, &[]);
    assert!(s.base.starts_with("http://[::1]:"), "{}", s.base);
    assert_eq!(
        send(&s, reqwest::Method::GET, "/api/v1/status", None).status,
        200
    );
    let port = s.base.rsplit(':').next().unwrap();
    // A DNS name pointed at the loopback address (as a rebinding page would).
    let rebound = client()
        .get(format!("http://localhost.invalid:{port}/api/v1/status"))
        .build()
        .unwrap();
    let addr: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    let c = reqwest::blocking::Client::builder()
        .no_proxy()
        .resolve("localhost.invalid", addr)
        .build()
        .unwrap();
    assert_eq!(c.execute(rebound).unwrap().status().as_u16(), 421);
    drop(s);

    // --listen on every address without auth is refused.
    t.run(&["serve", "--listen", "0.0.0.0:0"])
        .code(78)
        .stderr_has("reachable from other machines");
}

#[test]
fn http_configuration_errors_name_the_file_line_and_field() {
    let t = Test::new();
    let file = t.path("etc/homelab-autopilot.yaml");
    let cases = [
        (
            "http:\n  listen: \"0.0.0.0:8321\"\nservices: []\n",
            ":2:11: http.listen: '0.0.0.0:8321' is reachable from other machines",
        ),
        (
            "http:\n  listen: \"localhost:http\"\nservices: []\n",
            ":2:11: http.listen: 'localhost:http' is not ADDRESS:PORT",
        ),
        (
            "http:\n  listen: \"127.0.0.1:8321\"\n  auth:\n    username: admin\nservices: []\n",
            ":4:15: http.auth.username: basic auth needs a password",
        ),
        (
            "http:\n  auth:\n    token: abcdefgh\n    token_file: /nonexistent\nservices: []\n",
            ":4:17: http.auth.token_file: only one of token, token_file, token_command may be set",
        ),
        (
            "http:\n  listen: 8321\n  auth:\n    tokn: x\nservices: []\n",
            ":4:5: http.auth.tokn: unknown key 'tokn' (did you mean 'token'?)",
        ),
    ];
    for (yaml, want) in cases {
        t.config(yaml);
        t.run(&["config", "validate"])
            .code(78)
            .stderr_has(&format!("{}{want}", file.display()));
    }
    // Neither http.listen nor --listen: nothing to serve.
    t.config("services:\n  - name: web\n");
    t.run(&["serve"])
        .code(78)
        .stderr_has("http.listen is not set");
}

/// Run chromium headless on `url` with `args`; its stdout.
fn chromium(t: &Test, args: &[&str], url: &str) -> String {
    let out = std::process::Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!(
            "--user-data-dir={}",
            t.path("chromium-profile").display()
        ))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_page_renders_in_a_headless_browser() {
    if !require(&CHROMIUM) {
        return;
    }
    let t = populated();
    let s = Server::start(&t, &[]);
    // Basic auth as a browser does it: the credentials in the URL, sent
    // after the server's 401 challenge.
    let authed = |path: &str| {
        s.base
            .replace("http://", &format!("http://{USER}:{PASSWORD}@"))
            + path
    };

    let dom = chromium(&t, &["--dump-dom"], &authed("/"));
    assert!(dom.contains("id=\"health\""), "{dom}");
    assert!(dom.contains("data-health=\"critical\""), "{dom}");
    for name in ["web", "db"] {
        assert!(
            dom.contains(&format!("data-service=\"{name}\"")),
            "{name}: {dom}"
        );
    }
    assert!(dom.contains("never backed up"), "{dom}");
    // The hostile run's summary is text in the DOM, not an element.
    assert!(dom.contains("&lt;/pre&gt;&lt;b id=injected&gt;"), "{dom}");
    assert!(!dom.contains("id=\"injected\""), "{dom}");

    let dom = chromium(&t, &["--dump-dom"], &authed("/services/web"));
    for chart in ["backup_size", "backup_duration"] {
        let at = dom
            .find(&format!("data-chart=\"{chart}\""))
            .unwrap_or_else(|| panic!("no {chart} chart: {dom}"));
        let svg = &dom[at..at + dom[at..].find("</svg>").unwrap()];
        assert_eq!(svg.matches("<circle class=\"point\"").count(), 2, "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
    }
    assert_eq!(dom.matches("<tr class=\"backup\"").count(), 2, "{dom}");

    let runs = get(&s, "/api/v1/runs").json();
    let hostile = runs["runs"][0]["id"].as_i64().unwrap();
    let dom = chromium(&t, &["--dump-dom"], &authed(&format!("/runs/{hostile}")));
    assert!(dom.contains("class=\"log\""), "{dom}");
    assert!(!dom.contains("<img") && !dom.contains("<script"), "{dom}");
    assert!(dom.contains("onerror=alert(2)"), "the text is shown: {dom}");

    // Without credentials the browser gets the 401 page only.
    let dom = chromium(&t, &["--dump-dom"], &format!("{}/", s.base));
    assert!(!dom.contains("data-service="), "{dom}");

    let shot = t.path("status.png");
    chromium(
        &t,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1600",
            "--hide-scrollbars",
        ],
        &authed("/services/web"),
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 5_000,
        "{} bytes",
        png.len()
    );
}

#[test]
fn the_daemon_serves_the_page_while_it_runs_the_schedules() {
    let t = populated();
    let s = Server::start_command(&t, &["daemon"]);
    let got = send(&s, reqwest::Method::GET, "/api/v1/status", Some(TOKEN));
    assert_eq!(got.status, 200, "{}", got.body);
    let doc: Value = serde_json::from_str(&got.body).unwrap();
    assert_documented("/api/v1/status", &doc);
    assert_eq!(
        send(&s, reqwest::Method::GET, "/api/v1/status", None).status,
        401
    );
    let (code, _) = s.stop();
    assert_eq!(code, 0, "the daemon stops cleanly on SIGTERM");
}

#[test]
fn a_service_page_shows_its_restore_tests_and_their_rto() {
    let t = Test::new();
    t.config(&config("").replace(
        "services:\n",
        "global:\n  backup:\n    restore_testing:\n      cleanup_delay_minutes: 0\nservices:\n",
    ));
    t.write("data/web/index.html", "<h1>hello</h1>\n");
    t.run(&["run", "backup", "--service", "web"]).code(0);
    let r = t.run(&["run", "restore-test", "--service", "web"]);
    r.code(0);
    let s = Server::start(&t, &[]);
    let got = send(
        &s,
        reqwest::Method::GET,
        "/api/v1/services/web",
        Some(TOKEN),
    );
    assert_eq!(got.status, 200, "{}", got.body);
    let doc: Value = serde_json::from_str(&got.body).unwrap();
    let tests = doc["history"]["restore_tests"]
        .as_array()
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(tests.len(), 1, "{doc}");
    assert_eq!(tests[0]["status"], "ok", "{doc}");
    assert!(
        tests[0]["values"]["rto_seconds"].as_f64().is_some(),
        "{doc}"
    );
    let charts: Vec<&str> = doc["charts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str().or(c["name"].as_str()))
        .collect();
    assert!(charts.contains(&"restore_rto"), "{charts:?}");
    let page = send(&s, reqwest::Method::GET, "/services/web", Some(TOKEN));
    assert!(page.body.contains("Restore tests"), "{}", page.body);
    s.stop();
}
