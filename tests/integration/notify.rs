//! Notification delivery end to end: the real binary sends to local HTTP(S)
//! receivers that record every request, and to a real SMTP server
//! (aiosmtpd under /usr/bin/python3).

use crate::harness::free_port;
use crate::harness::{basic_config, Test};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A secret sentinel: it must never appear in any output, log or state row.
pub const SENTINEL: &str = "s3ntinel-SECRET-9f8e7d6c5b4a";
/// A URL token sentinel: allowed only in the request line it authorises.
pub const URL_TOKEN: &str = "urltokenQ7w8e9r0t1y2u3i4";

#[derive(Debug, Clone)]
pub struct Req {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16, Vec<(String, String)>, String),
    /// Accept, read the request, never answer.
    Hang,
}

pub fn ok() -> Reply {
    Reply::Status(200, vec![], "ok".into())
}

/// A recording HTTP/1.1 server on 127.0.0.1 (plain, or TLS with a
/// generated certificate trusted through `SSL_CERT_FILE`).
pub struct Receiver {
    pub port: u16,
    pub reqs: Arc<Mutex<Vec<Req>>>,
    pub queue: Arc<Mutex<VecDeque<Reply>>>,
    pub default: Arc<Mutex<Reply>>,
    pub tls: bool,
}

pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    pub ca_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate for 127.0.0.1 valid for `days` more days.
pub fn tls_cert(days: i64) -> Tls {
    use chrono::Datelike;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap();
    let end = chrono::Utc::now() + chrono::Duration::days(days);
    params.not_after = rcgen::date_time_ymd(end.year(), end.month() as u8, end.day() as u8);
    let cert = params.self_signed(&key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    Tls {
        config: Arc::new(config),
        ca_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl Receiver {
    pub fn start(default: Reply) -> Receiver {
        Self::start_inner(default, None)
    }

    pub fn start_tls(default: Reply, tls: &Tls) -> Receiver {
        Self::start_inner(default, Some(tls.config.clone()))
    }

    fn start_inner(default: Reply, tls: Option<Arc<rustls::ServerConfig>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Receiver {
            port,
            reqs: Arc::default(),
            queue: Arc::default(),
            default: Arc::new(Mutex::new(default)),
            tls: tls.is_some(),
        };
        let (reqs, queue, default) = (r.reqs.clone(), r.queue.clone(), r.default.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (reqs, queue, default, tls) =
                    (reqs.clone(), queue.clone(), default.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    match tls {
                        Some(cfg) => {
                            let conn = rustls::ServerConnection::new(cfg).unwrap();
                            let mut s = rustls::StreamOwned::new(conn, stream);
                            serve(&mut s, &reqs, &queue, &default);
                        }
                        None => {
                            let mut s = stream;
                            serve(&mut s, &reqs, &queue, &default);
                        }
                    }
                });
            }
        });
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://127.0.0.1:{}{path}",
            if self.tls { "https" } else { "http" },
            self.port
        )
    }

    pub fn push(&self, reply: Reply) {
        self.queue.lock().unwrap().push_back(reply);
    }

    pub fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    pub fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    pub fn on(&self, prefix: &str) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(prefix))
            .collect()
    }
}

fn serve<S: Read + Write>(
    s: &mut S,
    reqs: &Mutex<Vec<Req>>,
    queue: &Mutex<VecDeque<Reply>>,
    default: &Mutex<Reply>,
) {
    let mut r = BufReader::new(&mut *s);
    let mut line = String::new();
    if r.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = r.read_exact(&mut body);
    drop(r);
    reqs.lock().unwrap().push(Req {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    });
    let reply = queue
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| default.lock().unwrap().clone());
    match reply {
        Reply::Hang => std::thread::sleep(Duration::from_secs(60)),
        Reply::Status(code, hdrs, body) => {
            let mut out = format!(
                "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (k, v) in hdrs {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str("\r\n");
            out.push_str(&body);
            let _ = s.write_all(out.as_bytes());
            let _ = s.flush();
        }
    }
}

/// Every file under the test root (state DB, logs) plus the given outputs
/// must be free of `needle`.
#[track_caller]
pub fn assert_nowhere(t: &Test, needle: &str, outputs: &[&str]) {
    for (i, o) in outputs.iter().enumerate() {
        assert!(!o.contains(needle), "output #{i} leaks {needle:?}:\n{o}");
    }
    crate::harness::walk(&t.path("state"), &mut |p| {
        if p.is_file() {
            let bytes = std::fs::read(p).unwrap_or_default();
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains(needle), "{} leaks {needle:?}", p.display());
        }
    });
}

/// A workflow that sends the given events (Rhai map literals).
pub fn sender(events: &[(&str, &str)]) -> String {
    let mut s = String::from("fn run(ctx) {\n");
    for (ev, data) in events {
        s.push_str(&format!("    notify::send(\"{ev}\", {data});\n"));
    }
    s.push_str("    #{ ok: true }\n}\n");
    s
}

fn write_ca(t: &Test, tls: &Tls) -> String {
    t.write("ca.pem", &tls.ca_pem);
    t.path("ca.pem").display().to_string()
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(body);
    m.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Drop fields that change between runs (timestamps, host name).
fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("timestamp");
            for (k, x) in m.iter_mut() {
                if let Value::String(s) = x {
                    let host =
                        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                    let host = host.trim();
                    if !host.is_empty() {
                        *s = s.replace(&format!(" on {host}"), " on HOST");
                    }
                    if k == "hostname" {
                        *s = "HOST".into();
                    }
                } else {
                    normalise(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

#[test]
fn every_channel_gets_one_formatted_message_per_run() {
    let t = Test::new();
    let tls = tls_cert(90);
    let rx = Receiver::start_tls(ok(), &tls);
    let ca = write_ca(&t, &tls);
    t.config(&format!(
        r#"global:
  backup:
    root: {{root}}/backups
notifications:
  channels:
    - name: discord
      type: discord
      url: {discord}
    - name: slack
      type: slack
      url: {slack}
    - name: ntfy
      type: ntfy
      url: {ntfy}
      tags: [homelab]
      username: bob
      password: env:HLA_TEST_HOOK_SECRET
    - name: gotify
      type: gotify
      url: {gotify}
    - name: hook
      type: webhook
      url: {hook}
      secret: env:HLA_TEST_HOOK_SECRET
      headers:
        X-Extra: yes
    - name: critical-only
      type: webhook
      url: {hook2}
      min_severity: critical
      events: [service_down]
services: []
"#,
        discord = rx.url(&format!("/api/webhooks/123456789/{URL_TOKEN}")),
        slack = rx.url("/services/T000/B000/slackpath"),
        ntfy = rx.url("/backups"),
        gotify = rx.url(&format!("/gotify/{URL_TOKEN}")),
        hook = rx.url("/hook"),
        hook2 = rx.url("/critical"),
    ))
    .script(
        "notifytest.rhai",
        &sender(&[
            (
                "backup_failed",
                r#"#{ summary: "1 of 2 failed: <db> & @everyone", failed: ["db"] }"#,
            ),
            ("backup_success", r#"#{ summary: "web archived" }"#),
        ]),
    );
    let out = t
        .command(&["run", "notifytest"])
        .env("SSL_CERT_FILE", &ca)
        .env("HLA_TEST_HOOK_SECRET", SENTINEL)
        .output()
        .unwrap();
    let run = crate::harness::Run::from_output(out);
    run.code(0);

    // Discord: one message, two embeds, no mentions.
    let d = rx.on("/api/webhooks/123456789/");
    assert_eq!(d.len(), 1, "{:?}", rx.requests());
    assert_eq!(d[0].path, format!("/api/webhooks/123456789/{URL_TOKEN}"));
    let mut dj = d[0].json();
    normalise(&mut dj);
    assert_eq!(
        dj,
        json!({
            "username": "homelab-autopilot",
            "content": "FAILED backup on HOST (+1 more)",
            "allowed_mentions": {"parse": []},
            "embeds": [
                {"title": "FAILED backup on HOST", "color": 0xe74c3c,
                 "description": "1 of 2 failed: <db> & @everyone\nfailed: db"},
                {"title": "OK backup on HOST", "color": 0x2ecc71, "description": "web archived"},
            ],
        })
    );

    // Slack: text + blocks, & < > escaped.
    let s = rx.on("/services/");
    assert_eq!(s.len(), 1);
    let mut sj = s[0].json();
    normalise(&mut sj);
    assert_eq!(
        sj,
        json!({
            "text": "FAILED backup on HOST (+1 more)",
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": "FAILED backup on HOST (+1 more)"}},
                {"type": "section", "text": {"type": "mrkdwn",
                  "text": "*FAILED backup on HOST*\n1 of 2 failed: &lt;db&gt; &amp; @everyone\nfailed: db"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*OK backup on HOST*\nweb archived"}},
            ],
        })
    );

    // ntfy: text body, Title / Priority / Tags headers.
    let n = rx.on("/backups");
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].method, "POST");
    assert!(n[0]
        .header("Title")
        .unwrap()
        .starts_with("FAILED backup on "));
    assert_eq!(n[0].header("Priority"), Some("high"));
    assert_eq!(n[0].header("Tags"), Some("rotating_light,homelab"));
    assert!(n[0].text().contains("1 of 2 failed: <db> & @everyone"));
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("bob:{SENTINEL}"));
    assert_eq!(
        n[0].header("Authorization"),
        Some(format!("Basic {basic}").as_str())
    );

    // Gotify: POST /message, token in X-Gotify-Key.
    let g = rx.on("/gotify/");
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].path, "/gotify/message");
    assert_eq!(g[0].header("X-Gotify-Key"), Some(URL_TOKEN));
    let gj = g[0].json();
    assert_eq!(gj["priority"], 8);
    assert!(gj["title"]
        .as_str()
        .unwrap()
        .starts_with("FAILED backup on "));

    // Generic webhook: versioned schema, event name, HMAC signature.
    let h = rx.on("/hook");
    assert_eq!(h.len(), 1);
    let hj = h[0].json();
    assert_eq!(hj["schema"], "homelab-autopilot.event/v1");
    assert_eq!(hj["event"], "backup_failed");
    assert_eq!(hj["severity"], "critical");
    assert_eq!(hj["events"].as_array().unwrap().len(), 2);
    assert_eq!(hj["events"][1]["event"], "backup_success");
    assert_eq!(h[0].header("X-Extra"), Some("yes"));
    let sig = h[0].header("X-Homelab-Autopilot-Signature").unwrap();
    assert_eq!(
        sig,
        format!("sha256={}", hmac_hex(SENTINEL.as_bytes(), &h[0].body))
    );

    // Routing: a channel subscribed to service_down only gets nothing.
    assert!(rx.on("/critical").is_empty());

    // Secrets: the HMAC key is nowhere; the URL token only in request lines.
    for r in rx.requests() {
        assert!(!String::from_utf8_lossy(&r.body).contains(SENTINEL));
        assert!(!String::from_utf8_lossy(&r.body).contains(URL_TOKEN));
    }
    assert_nowhere(&t, SENTINEL, &[&run.stdout, &run.stderr]);
    assert_nowhere(&t, URL_TOKEN, &[&run.stdout, &run.stderr]);
}

#[test]
fn a_429_retry_after_is_honoured_and_discord_retry_after_too() {
    let t = Test::new();
    let rx = Receiver::start(ok());
    rx.push(Reply::Status(
        429,
        vec![("Retry-After".into(), "2".into())],
        "slow down".into(),
    ));
    rx.push(Reply::Status(
        429,
        vec![],
        r#"{"message": "You are being rate limited.", "retry_after": 1.5, "global": false}"#.into(),
    ));
    t.config(&format!(
        "notifications:\n  channels:\n    - name: hook\n      type: webhook\n      url: {}\nservices: []\n",
        rx.url("/hook")
    ))
    .script("notifytest.rhai", &sender(&[("backup_failed", r#"#{ summary: "x" }"#)]));
    let run = t.run(&["run", "notifytest"]);
    run.code(0);
    let r = rx.requests();
    assert_eq!(r.len(), 3, "{r:?}");
    let gap1 = r[1].at - r[0].at;
    let gap2 = r[2].at - r[1].at;
    assert!(
        gap1 >= Duration::from_millis(1900),
        "Retry-After 2 not honoured: {gap1:?}"
    );
    assert!(
        gap2 >= Duration::from_millis(1400),
        "retry_after 1.5 not honoured: {gap2:?}"
    );
}

#[test]
fn a_receiver_that_is_down_or_hangs_never_fails_the_workflow() {
    let t = Test::new();
    t.data("data/web");
    let hang = Receiver::start(Reply::Hang);
    let good = Receiver::start(ok());
    t.config(&basic_config("", ""));
    let cfg = std::fs::read_to_string(t.path("etc/homelab-autopilot.yaml")).unwrap();
    t.write(
        "etc/homelab-autopilot.yaml",
        &format!(
            "{cfg}notifications:\n  channels:\n    - name: down\n      type: webhook\n      url: http://127.0.0.1:{}/hook\n      fallback: good\n    - name: hangs\n      type: webhook\n      url: {}\n    - name: good\n      type: webhook\n      url: {}\n      events: [backup_failed]\n",
            free_port(),
            hang.url("/hang"),
            good.url("/good")
        ),
    );
    let started = Instant::now();
    let out = t
        .command(&["run", "backup"])
        .env("HOMELAB_AUTOPILOT_NOTIFY_TIMEOUT", "1")
        .output()
        .unwrap();
    let run = crate::harness::Run::from_output(out);
    run.code(0)
        .stderr_has("notification to channel down (webhook) failed")
        .stderr_has("notification to channel hangs (webhook) failed");
    assert!(started.elapsed() < Duration::from_secs(40));
    assert_eq!(hang.requests().len(), 3, "three attempts");
    // The fallback got the message, with a note on the failure.
    let g = good.requests();
    assert_eq!(g.len(), 1, "fallback delivery");
    let gj = g[0].json();
    assert_eq!(gj["event"], "backup_success");
    assert!(gj["earlier_failures"].as_u64().unwrap() >= 1);
    // Recorded in the state DB.
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let failed: i64 = db
        .query_row(
            "SELECT count(*) FROM notifications WHERE status = 'failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(failed, 2);
}

#[test]
fn cooldown_holds_back_a_repeated_alert_across_runs() {
    let t = Test::new();
    let rx = Receiver::start(ok());
    t.config(&format!(
        "notifications:\n  cooldown_minutes: 60\n  channels:\n    - name: hook\n      type: webhook\n      url: {}\nservices: []\n",
        rx.url("/hook")
    ))
    .script(
        "notifytest.rhai",
        &sender(&[("backup_failed", r#"#{ summary: "x", service: "web" }"#)]),
    );
    t.run(&["run", "notifytest"]).code(0);
    t.run(&["run", "notifytest"]).code(0);
    t.run(&["run", "notifytest"]).code(0);
    assert_eq!(rx.requests().len(), 1);
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM notifications WHERE status = 'suppressed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn dead_man_pings_share_one_rid_and_carry_the_log_tail() {
    let t = Test::new();
    t.data("data/web");
    let rx = Receiver::start(ok());
    let cfg = basic_config("", "");
    t.config(&format!(
        "{cfg}notifications:\n  channels:\n    - name: hc\n      type: healthchecks\n      url: {}\n      workflows: [backup]\n    - name: kuma\n      type: uptime_kuma\n      url: {}\n    - name: hc-other\n      type: healthchecks\n      url: {}\n      workflows: [update]\n",
        rx.url("/ping/0c2d5a6e-1111-2222-3333-444455556666"),
        rx.url(&format!("/api/push/{URL_TOKEN}?status=up&msg=OK&ping=")),
        rx.url("/other"),
    ));
    let run = t.run(&["run", "backup"]);
    run.code(0);
    let pings = rx.on("/ping/");
    assert_eq!(pings.len(), 2, "{pings:?}");
    let (start, end) = (&pings[0], &pings[1]);
    let rid = start
        .path
        .strip_prefix("/ping/0c2d5a6e-1111-2222-3333-444455556666/start?rid=")
        .expect("start ping")
        .to_string();
    assert_eq!(rid.len(), 36);
    assert_eq!(
        end.path,
        format!("/ping/0c2d5a6e-1111-2222-3333-444455556666/0?rid={rid}")
    );
    assert!(end.text().contains("1 service(s) done"), "{}", end.text());
    assert!(end.body.len() <= 10_000);
    let kuma = rx.on("/api/push/");
    assert_eq!(kuma.len(), 1);
    assert_eq!(kuma[0].method, "GET");
    assert!(kuma[0]
        .path
        .starts_with(&format!("/api/push/{URL_TOKEN}?status=up&msg=")));
    assert!(kuma[0].path.contains("&ping="));
    assert!(
        rx.on("/other").is_empty(),
        "workflows: [update] is not pinged"
    );

    // A failing run: exit code 1 in the ping, status=down for Kuma.
    t.script(
        "backup.rhai",
        "fn create_artifact(svc, ctx) { throw \"boom\"; }\n",
    );
    t.run(&["run", "backup"]).code(1);
    let pings = rx.on("/ping/");
    assert_eq!(pings.len(), 4);
    let rid2 = pings[2].path.rsplit_once("rid=").unwrap().1.to_string();
    assert_ne!(rid2, rid);
    assert_eq!(
        pings[3].path,
        format!("/ping/0c2d5a6e-1111-2222-3333-444455556666/1?rid={rid2}")
    );
    assert!(rx.on("/api/push/")[1].path.contains("status=down"));
    assert_nowhere(&t, URL_TOKEN, &[&run.stdout, &run.stderr]);
}

#[test]
fn notify_test_reports_each_channel() {
    let t = Test::new();
    let rx = Receiver::start(ok());
    t.config(&format!(
        "notifications:\n  channels:\n    - name: good\n      type: webhook\n      url: {}\n    - name: broken\n      type: webhook\n      url: http://127.0.0.1:{}/x\n    - name: hc\n      type: healthchecks\n      url: {}\nservices: []\n",
        rx.url("/good"),
        free_port(),
        rx.url("/hc/abc"),
    ));
    let run = t.run(&["notify", "test"]);
    run.code(1)
        .stdout_has("sent")
        .stdout_has("good")
        .stdout_has("failed")
        .stdout_has("broken")
        .stdout_has("cannot connect");
    let g = rx.on("/good");
    assert_eq!(g.len(), 1);
    assert_eq!(g[0].json()["event"], "test");
    assert!(rx.on("/hc").is_empty(), "ping channels only when named");
    t.run(&["notify", "test", "good"]).code(0);
    t.run(&["notify", "test", "hc"]).code(0);
    assert_eq!(rx.on("/hc/abc").len(), 1);
    t.run(&["notify", "test", "nope"]).code(2);
}

#[test]
fn a_receiver_that_answers_without_end_is_read_no_further_than_a_mebibyte() {
    let t = Test::new();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 65536];
        let _ = c.read(&mut buf);
        let _ = c.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let chunk = format!("10000\r\n{}\r\n", "y".repeat(0x10000));
        let mut sent = 0u64;
        while c.write_all(chunk.as_bytes()).is_ok() {
            sent += 0x10000;
            if sent > 4 << 30 {
                break;
            }
        }
        sent
    });
    t.config(&format!(
        "notifications:\n  channels:\n    - name: flood\n      type: webhook\n      url: http://127.0.0.1:{port}/hook\nservices: []\n"
    ));
    let out = t
        .command(&["notify", "test", "flood"])
        .env("HOMELAB_AUTOPILOT_NOTIFY_TIMEOUT", "60")
        .output()
        .unwrap();
    let run = crate::harness::Run::from_output(out);
    // Delivered (the receiver said 200), without reading to the timeout.
    run.code(0).stdout_has("sent");
    let sent = server.join().unwrap();
    assert!(sent < 64 << 20, "{sent} bytes were read");
}

/// aiosmtpd from Debian's python3-aiosmtpd under /usr/bin/python3. On CI
/// (CI=true) it must be there; elsewhere the test skips loudly
/// (`harness::SMTP`).
pub fn smtp_server(dir: &std::path::Path) -> Option<(std::process::Child, u16)> {
    if !crate::harness::require(&crate::harness::SMTP) {
        return None;
    }
    let port = free_port();
    let child = std::process::Command::new("/usr/bin/python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "aiosmtpd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Some((child, port))
}

/// The messages in the aiosmtpd Mailbox `maildir`, waiting up to 5 s for
/// the first.
pub fn wait_for_mail(maildir: &std::path::Path) -> Vec<String> {
    let mut mails = Vec::new();
    for _ in 0..50 {
        crate::harness::walk(&maildir.join("new"), &mut |p| {
            mails.push(std::fs::read_to_string(p).unwrap())
        });
        if !mails.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    mails
}

#[test]
fn email_reaches_a_real_smtp_server_with_subject_headers_and_both_parts() {
    let t = Test::new();
    let maildir = t.path("maildir");
    let Some((mut child, port)) = smtp_server(&maildir) else {
        return;
    };
    t.config(&format!(
        "notifications:\n  channels:\n    - name: mail\n      type: email\n      smtp_server: 127.0.0.1\n      smtp_port: {port}\n      security: none\n      from: autopilot@example.org\n      to: [admin@example.org, ops@example.org]\n      html: true\nservices: []\n"
    ))
    .script(
        "notifytest.rhai",
        &sender(&[(
            "backup_failed",
            r#"#{ summary: "1 of 2 failed: db <oops>", failed: ["db"] }"#,
        )]),
    );
    let run = t.run(&["run", "notifytest"]);
    let mails = wait_for_mail(&maildir);
    let _ = child.kill();
    let _ = child.wait();
    run.code(0);
    assert_eq!(mails.len(), 1, "one mail for the run");
    let m = &mails[0];
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        m.contains(&format!(
            "Subject: [homelab-autopilot] FAILED backup on {}",
            host.trim()
        )),
        "{m}"
    );
    assert!(m.contains("From: autopilot@example.org"), "{m}");
    assert!(m.contains("To: admin@example.org, ops@example.org"), "{m}");
    assert!(m.contains("multipart/alternative"), "{m}");
    assert!(m.contains("text/plain"), "{m}");
    assert!(m.contains("text/html"), "{m}");
    assert!(m.contains("1 of 2 failed: db <oops>"), "{m}");
    assert!(m.contains("db &lt;oops&gt;"), "{m}");
}

/// An aiosmtpd server with STARTTLS required and AUTH (LOGIN/PLAIN)
/// accepting only `user` / `password`; each message is written to `dir`.
const SMTP_AUTH_SERVER: &str = r#"
import sys, os, ssl, time, uuid
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
port, cert, key, out, user, pw, mode = sys.argv[1:8]
class Handler:
    async def handle_DATA(self, server, session, envelope):
        with open(os.path.join(out, str(uuid.uuid4()) + ".eml"), "wb") as f:
            f.write(b"X-Auth-User: " + AUTHED[-1] + b"\r\n")
            f.write(envelope.original_content)
        return "250 OK"
AUTHED = [b"none"]
def auth(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == pw.encode()
    if ok:
        AUTHED.append(data.login)
    return AuthResult(success=ok)
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
if mode == "starttls":
    c = Controller(Handler(), hostname="127.0.0.1", port=int(port), tls_context=ctx,
                   require_starttls=True, authenticator=auth, auth_require_tls=True)
else:
    c = Controller(Handler(), hostname="127.0.0.1", port=int(port), ssl_context=ctx,
                   authenticator=auth, auth_require_tls=False)
c.start()
print("ready", flush=True)
time.sleep(120)
"#;

#[test]
fn email_over_starttls_authenticates_and_never_leaks_the_password() {
    smtp_tls_roundtrip("starttls");
}

#[test]
fn email_over_implicit_tls_authenticates_and_never_leaks_the_password() {
    smtp_tls_roundtrip("tls");
}

fn smtp_tls_roundtrip(mode: &str) {
    let t = Test::new();
    if smtp_server(&t.path("unused"))
        .map(|(mut c, _)| {
            let _ = c.kill();
            let _ = c.wait();
        })
        .is_none()
    {
        return;
    }
    let tls = tls_cert(30);
    t.write("smtp.py", SMTP_AUTH_SERVER);
    t.write("cert.pem", &tls.ca_pem);
    t.write("key.pem", &tls.key_pem);
    std::fs::create_dir_all(t.path("mail")).unwrap();
    let port = free_port();
    let mut child = std::process::Command::new("/usr/bin/python3")
        .arg(t.path("smtp.py"))
        .arg(port.to_string())
        .arg(t.path("cert.pem"))
        .arg(t.path("key.pem"))
        .arg(t.path("mail"))
        .arg("autopilot")
        .arg(SENTINEL)
        .arg(mode)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    t.config(&format!(
        "notifications:\n  channels:\n    - name: mail\n      type: email\n      smtp_server: 127.0.0.1\n      smtp_port: {port}\n      security: {mode}\n      username: autopilot\n      password: env:HLA_TEST_SMTP_PASSWORD\n      from: autopilot@example.org\n      to: [admin@example.org]\nservices: []\n"
    ))
    .script(
        "notifytest.rhai",
        &sender(&[("service_down", r#"#{ summary: "web is down", service: "web" }"#)]),
    );
    let out = t
        .command(&["run", "notifytest"])
        .env("SSL_CERT_FILE", t.path("cert.pem"))
        .env("HLA_TEST_SMTP_PASSWORD", SENTINEL)
        .output()
        .unwrap();
    let run = crate::harness::Run::from_output(out);
    let mut mails = Vec::new();
    crate::harness::walk(&t.path("mail"), &mut |p| {
        mails.push(std::fs::read_to_string(p).unwrap())
    });
    let _ = child.kill();
    let _ = child.wait();
    run.code(0);
    assert_eq!(mails.len(), 1, "{}", run.stderr);
    assert!(
        mails[0].starts_with("X-Auth-User: autopilot"),
        "{}",
        mails[0]
    );
    assert!(mails[0].contains("Subject: [homelab-autopilot] DOWN web on "));
    assert!(mails[0].contains("web is down"));
    assert!(!mails[0].contains(SENTINEL));
    assert_nowhere(&t, SENTINEL, &[&run.stdout, &run.stderr]);
}

#[test]
fn a_dry_run_sends_nothing_and_says_what_it_would_send() {
    let t = Test::new();
    let rx = Receiver::start(ok());
    t.config(&format!(
        "notifications:\n  channels:\n    - name: hook\n      type: webhook\n      url: {}\n    - name: hc\n      type: healthchecks\n      url: {}\nservices: []\n",
        rx.url("/hook"),
        rx.url("/ping/abc"),
    ))
    .script("notifytest.rhai", &sender(&[("backup_failed", r#"#{ summary: "x" }"#)]));
    t.run(&["run", "notifytest", "--dry-run"])
        .code(0)
        .stderr_has("[dry-run] would send backup_failed to channel hook (webhook)")
        .stderr_has("[dry-run] would ping hc");
    assert!(rx.requests().is_empty());
    assert!(!t.path("state/state.db").exists());
}

#[test]
fn the_next_message_that_gets_through_mentions_earlier_failures() {
    let t = Test::new();
    let rx = Receiver::start(ok());
    let yaml = |url: String| {
        format!(
            "notifications:\n  cooldown_minutes: 0\n  channels:\n    - name: hook\n      type: webhook\n      url: {url}\nservices: []\n"
        )
    };
    t.config(&yaml(format!("http://127.0.0.1:{}/hook", free_port())))
        .script(
            "notifytest.rhai",
            &sender(&[("backup_failed", r#"#{ summary: "x" }"#)]),
        );
    t.run(&["run", "notifytest"]).code(0);
    t.config(&yaml(rx.url("/hook")));
    t.run(&["run", "notifytest"]).code(0);
    t.run(&["run", "notifytest"]).code(0);
    let r = rx.requests();
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].json()["earlier_failures"], 1);
    assert_eq!(r[1].json()["earlier_failures"], 0, "counted once");
}

#[test]
fn external_access_failed_is_critical_in_the_output_and_in_routing() {
    let t = Test::new();
    let rx = Receiver::start(ok());
    t.config(&format!(
        "notifications:\n  channels:\n    - name: hook\n      type: webhook\n      url: {}\n      min_severity: critical\nservices: []\n",
        rx.url("/hook"),
    ))
    .script(
        "notifytest.rhai",
        &sender(&[(
            "external_access_failed",
            r#"#{ summary: "https://web.example is unreachable", service: "web" }"#,
        )]),
    );
    let r = t.run(&["--json", "run", "notifytest"]);
    r.code(0);
    let doc = r.json();
    let n = &doc["notifications"][0];
    let mut keys: Vec<&String> = n.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["data", "event", "hostname", "severity", "ts", "workflow"]
    );
    assert_eq!(n["event"], "external_access_failed");
    assert_eq!(n["severity"], "critical");
    assert_eq!(n["data"]["summary"], "https://web.example is unreachable");
    assert_eq!(doc["deliveries"][0]["status"], "sent");
    let h = rx.on("/hook");
    assert_eq!(h.len(), 1, "a critical-only channel gets it");
    assert_eq!(h[0].json()["severity"], "critical");
}
