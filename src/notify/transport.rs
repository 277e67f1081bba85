//! Sending: HTTP with retries (429, 5xx, connect errors and timeouts are
//! retried with capped exponential backoff; `Retry-After` and Discord's
//! JSON `retry_after` are honoured), SMTP through lettre (STARTTLS,
//! implicit TLS or plain, rustls), and the `command` channel (argv, the
//! event JSON on stdin, a timeout).

use super::format::{self, HttpRequest};
use super::targets;
use super::{Channel, Message, Policy};
use crate::config::ChannelType;
use std::sync::OnceLock;
use std::time::Duration;

/// Send `m` on `ch`; returns the attempts made and the outcome.
pub(crate) async fn send(ch: &Channel<'_>, m: &Message, p: &Policy) -> (u32, Result<(), String>) {
    match ch.kind {
        ChannelType::Email => email(ch, m, p).await,
        ChannelType::Command => (1, command(ch, m, p).await),
        _ => match targets::plan(ch, m) {
            Ok(targets::Plan::Http(calls)) => http_calls(&calls, p).await,
            Ok(targets::Plan::Matrix(t)) => matrix(&t, m, p).await,
            Err(e) => (0, Err(e)),
        },
    }
}

/// Send each request in turn (one per chat, topic or target); every one
/// must get through. Attempts add up; the first failure is the error.
async fn http_calls(calls: &[targets::Call], p: &Policy) -> (u32, Result<(), String>) {
    let mut total = 0;
    let mut first_err = None;
    for (i, c) in calls.iter().enumerate() {
        let (n, res) = http_with_retry_body(&c.req, p).await;
        total += n;
        let res = res.and_then(|body| if c.check_ok { api_ok(&body) } else { Ok(()) });
        if let Err(e) = res {
            let e = if calls.len() > 1 {
                format!("request {} of {}: {e}", i + 1, calls.len())
            } else {
                e
            };
            first_err.get_or_insert(e);
        }
    }
    (total, first_err.map_or(Ok(()), Err))
}

/// An API that answers errors with 200 and `{"ok": false, "error": ...}`
/// (Slack's Web API; Telegram says `ok` too).
fn api_ok(body: &[u8]) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match v.get("ok").and_then(|o| o.as_bool()) {
        Some(true) => Ok(()),
        _ => Err(format!(
            "the API refused the message: {}",
            v.get("error")
                .or_else(|| v.get("description"))
                .and_then(|e| e.as_str())
                .unwrap_or("no \"ok\": true in the answer")
        )),
    }
}

/// Matrix client-server API: log in (or use the access token), join each
/// room (which also turns an alias into its room ID; joining a room the
/// user is in is a no-op), or list the joined rooms when none is named,
/// then `PUT /rooms/{id}/send/m.room.message/{txn}` to each.
async fn matrix(t: &targets::MatrixTarget, m: &Message, p: &Policy) -> (u32, Result<(), String>) {
    use serde_json::{json, Value};
    let api = format!("{}/_matrix/client/v3", t.base);
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let mut attempts = 0;
    let call = |req: HttpRequest| async move {
        let (n, res) = http_with_retry_body(&req, p).await;
        (
            n,
            res.map(|b| serde_json::from_slice::<Value>(&b).unwrap_or_default()),
        )
    };
    let token = match &t.auth {
        targets::MatrixAuth::Token(tok) => tok.clone(),
        targets::MatrixAuth::Login { user, password } => {
            let body = json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": user},
                "password": password,
                "initial_device_display_name": "homelab-autopilot",
            });
            let (n, res) = call(HttpRequest::json(format!("{api}/login"), &body)).await;
            attempts += n;
            match res {
                Ok(v) => match v.get("access_token").and_then(|a| a.as_str()) {
                    Some(a) => {
                        crate::redact::register(a);
                        a.to_string()
                    }
                    None => return (attempts, Err("matrix login: no access_token".into())),
                },
                Err(e) => return (attempts, Err(format!("matrix login: {e}"))),
            }
        }
    };
    let bearer = |mut r: HttpRequest| {
        r.headers
            .push(("Authorization".into(), format!("Bearer {token}")));
        r
    };
    let mut rooms = Vec::new();
    if t.rooms.is_empty() {
        let req = bearer(HttpRequest {
            method: "GET",
            url: format!("{api}/joined_rooms"),
            headers: vec![],
            body: vec![],
        });
        let (n, res) = call(req).await;
        attempts += n;
        match res {
            Ok(v) => rooms.extend(
                v["joined_rooms"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_string)),
            ),
            Err(e) => return (attempts, Err(format!("matrix joined rooms: {e}"))),
        }
        if rooms.is_empty() {
            return (attempts, Err("matrix: the user has joined no room".into()));
        }
    } else {
        for r in &t.rooms {
            let req = bearer(HttpRequest::json(
                format!("{api}/join/{}", enc(r)),
                &json!({}),
            ));
            let (n, res) = call(req).await;
            attempts += n;
            match res.map(|v| v["room_id"].as_str().map(str::to_string)) {
                Ok(Some(id)) => rooms.push(id),
                Ok(None) => return (attempts, Err(format!("matrix join {r}: no room_id"))),
                Err(e) => return (attempts, Err(format!("matrix join {r}: {e}"))),
            }
        }
    }
    let content = super::format::matrix_message(m);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut first_err = None;
    for (i, room) in rooms.iter().enumerate() {
        let mut req = bearer(HttpRequest::json(
            format!(
                "{api}/rooms/{}/send/m.room.message/hla-{stamp}-{i}",
                enc(room)
            ),
            &content,
        ));
        req.method = "PUT";
        let (n, res) = call(req).await;
        attempts += n;
        if let Err(e) = res {
            first_err.get_or_insert(format!("matrix send to {room}: {e}"));
        }
    }
    (attempts, first_err.map_or(Ok(()), Err))
}

/// Extra trusted CA certificates: the PEM bundle named by `SSL_CERT_FILE`
/// (the usual variable), added to the built-in webpki roots, for a Gotify,
/// ntfy or service behind a home CA.
pub(crate) fn with_extra_roots(mut b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string()))
        {
            Ok(certs) => {
                for c in certs {
                    b = b.add_root_certificate(c);
                }
            }
            Err(e) => tracing::warn!(
                "SSL_CERT_FILE {}: not used: {e}",
                std::path::Path::new(&path).display()
            ),
        }
    }
    b
}

/// The shared HTTP client (connection pool, rustls).
pub(crate) fn client() -> &'static reqwest::Client {
    static C: OnceLock<reqwest::Client> = OnceLock::new();
    C.get_or_init(|| {
        with_extra_roots(reqwest::Client::builder())
            .user_agent(concat!("homelab-autopilot/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .expect("HTTP client")
    })
}

/// How long a 429 asks us to wait: `Retry-After` (seconds) or Discord's
/// `{"retry_after": 1.5}` body.
fn retry_after(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Option<Duration> {
    if let Some(v) = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        if let Ok(secs) = v.trim().parse::<f64>() {
            return Some(Duration::from_secs_f64(secs.max(0.0)));
        }
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()?
        .get("retry_after")?
        .as_f64()
        .map(|s| Duration::from_secs_f64(s.max(0.0)))
}

fn backoff(p: &Policy, attempt: u32) -> Duration {
    (p.backoff * 2u32.saturating_pow(attempt.saturating_sub(1))).min(p.max_backoff)
}

/// One HTTP request with retries. Error texts never hold the URL.
pub(crate) async fn http_with_retry(req: &HttpRequest, p: &Policy) -> (u32, Result<(), String>) {
    let (n, res) = http_with_retry_body(req, p).await;
    (n, res.map(|_| ()))
}

/// One HTTP request with retries; the body of the successful answer.
async fn http_with_retry_body(req: &HttpRequest, p: &Policy) -> (u32, Result<Vec<u8>, String>) {
    let mut last = String::new();
    for attempt in 1..=p.attempts {
        let mut rb = client()
            .request(
                reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::POST),
                &req.url,
            )
            .timeout(p.timeout)
            .body(req.body.clone());
        for (k, v) in &req.headers {
            rb = rb.header(k, v);
        }
        let wait = match rb.send().await {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = read_capped(resp, ANSWER_MAX).await;
                if status.is_success() {
                    return (attempt, Ok(body.to_vec()));
                }
                let snippet: String = String::from_utf8_lossy(&body).chars().take(200).collect();
                last = format!("HTTP {}: {}", status.as_u16(), snippet.trim());
                if status.as_u16() == 429 {
                    let w = retry_after(&headers, &body).unwrap_or_else(|| backoff(p, attempt));
                    if w > p.max_retry_after {
                        return (
                            attempt,
                            Err(format!(
                                "{last} (rate limited for {}s; not waiting)",
                                w.as_secs()
                            )),
                        );
                    }
                    w
                } else if status.is_server_error() {
                    retry_after(&headers, &[]).unwrap_or_else(|| backoff(p, attempt))
                } else {
                    return (attempt, Err(last));
                }
            }
            Err(e) => {
                last = if e.is_timeout() {
                    format!("timed out after {:?}", p.timeout)
                } else if e.is_connect() {
                    format!("cannot connect: {}", source_text(&e))
                } else {
                    e.without_url().to_string()
                };
                backoff(p, attempt)
            }
        };
        if attempt < p.attempts {
            tracing::debug!("notification attempt {attempt} failed ({last}); retrying in {wait:?}");
            tokio::time::sleep(wait.min(p.max_retry_after)).await;
        }
    }
    (p.attempts, Err(last))
}

/// The innermost error text (reqwest's own Display names the URL).
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

async fn email(ch: &Channel<'_>, m: &Message, p: &Policy) -> (u32, Result<(), String>) {
    use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let t = match targets::smtp_target(ch) {
        Ok(t) => t,
        Err(e) => return (0, Err(e)),
    };
    let build = || -> Result<lettre::Message, String> {
        let from: Mailbox = t.from.parse().map_err(|e| format!("from address: {e}"))?;
        let mut b = lettre::Message::builder()
            .from(from)
            .subject(format::subject(m))
            .user_agent("homelab-autopilot".into());
        if t.to.is_empty() {
            return Err("no recipients (to)".into());
        }
        for to in &t.to {
            b = b.to(to.parse().map_err(|e| format!("to address {to}: {e}"))?);
        }
        let text = format::text(m);
        if ch.cfg.html {
            b.multipart(MultiPart::alternative_plain_html(text, format::html(m)))
        } else {
            b.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(text),
            )
        }
        .map_err(|e| e.to_string())
    };
    let msg = match build() {
        Ok(m) => m,
        Err(e) => return (0, Err(e)),
    };
    let builder = match (t.security, smtp_tls_with_extra_roots(&t.host)) {
        (crate::config::SmtpSecurity::None, _) => Ok(
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&t.host),
        ),
        (crate::config::SmtpSecurity::Starttls, Some(Ok(params))) => {
            Ok(
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&t.host)
                    .tls(lettre::transport::smtp::client::Tls::Required(params)),
            )
        }
        (crate::config::SmtpSecurity::Tls, Some(Ok(params))) => {
            Ok(
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&t.host)
                    .tls(lettre::transport::smtp::client::Tls::Wrapper(params)),
            )
        }
        (_, Some(Err(e))) => Err(e),
        (crate::config::SmtpSecurity::Starttls, None) => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&t.host)
        }
        (crate::config::SmtpSecurity::Tls, None) => {
            AsyncSmtpTransport::<Tokio1Executor>::relay(&t.host)
        }
    };
    let mut builder = match builder {
        Ok(b) => b.port(t.port).timeout(Some(p.timeout)),
        Err(e) => return (0, Err(e.to_string())),
    };
    if let (Some(u), Some(pw)) = (&t.username, &t.password) {
        builder = builder.credentials(Credentials::new(u.clone(), pw.expose().to_string()));
    }
    let mailer = builder.build();
    let mut last = String::new();
    for attempt in 1..=p.attempts {
        match tokio::time::timeout(p.timeout * 2, mailer.send(msg.clone())).await {
            Ok(Ok(_)) => return (attempt, Ok(())),
            Ok(Err(e)) => {
                last = format!("SMTP: {}", source_text(&e));
                if e.is_permanent() {
                    return (attempt, Err(last));
                }
            }
            Err(_) => last = format!("SMTP timed out after {:?}", p.timeout * 2),
        }
        if attempt < p.attempts {
            tokio::time::sleep(backoff(p, attempt)).await;
        }
    }
    (p.attempts, Err(last))
}

/// TLS parameters trusting the `SSL_CERT_FILE` bundle too (None when the
/// variable is unset: lettre's defaults, webpki roots).
fn smtp_tls_with_extra_roots(
    host: &str,
) -> Option<Result<lettre::transport::smtp::client::TlsParameters, lettre::transport::smtp::Error>>
{
    use lettre::transport::smtp::client::{Certificate, TlsParameters};
    let path = std::env::var_os("SSL_CERT_FILE")?;
    let pem = std::fs::read_to_string(&path).ok()?;
    let mut b = TlsParameters::builder(host.to_string());
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    for block in pem.split(BEGIN).skip(1) {
        if let Ok(c) = Certificate::from_pem(format!("{BEGIN}{block}").as_bytes()) {
            b = b.add_root_certificate(c);
        }
    }
    Some(b.build_rustls())
}

/// The `command` channel: argv (no shell), the event document on stdin.
async fn command(ch: &Channel<'_>, m: &Message, p: &Policy) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let argv = &ch.cfg.command;
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let doc = serde_json::to_vec(&format::event_document(m)).unwrap_or_default();
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .env("HOMELAB_AUTOPILOT_EVENT", &m.lead().event)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{prog}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&doc).await;
    }
    let limit = p.timeout * 3;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("{prog}: timed out after {limit:?}"))?
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err: String = String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(300)
            .collect();
        Err(format!("{prog} exited with {}: {}", out.status, err.trim()))
    }
}

/// Most bytes of a receiver's answer kept: enough for every API's reply
/// (Slack's `{"ok":...}`, Telegram's, an error page's first lines); a
/// receiver that answers without end is not read further.
const ANSWER_MAX: usize = 1 << 20;

/// The first `max` bytes of a response's body (all of it when shorter);
/// the rest is never read. A read error ends the body where it came.
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = max - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() == max {
            break;
        }
    }
    body
}
