//! The read-only status page, its JSON API and `/metrics`
//! (docs/status-page.md), served over HTTP/1.1 by hyper on a thread of its
//! own. [`start`] binds `http.listen` and returns a [`WebHandle`]; the
//! server stops when the handle is dropped. `serve` runs it in the
//! foreground; a long-running process can hold the handle beside its work.
//!
//! Every request is authenticated first (a bearer token and/or basic auth,
//! compared in constant time), then answered from the state DB
//! ([`data`]), rendered as HTML ([`html`]) or JSON; every text passes the
//! secret scrubber on its way out.

pub mod data;
pub mod html;

use crate::config::{Config, Paths, Secret};
use crate::error::{Error, Result};
use crate::state::{MetricsSnapshot, Store};
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The JSON documents' schema version.
pub const API_VERSION: u32 = 1;

/// What [`start`] needs beside the configuration.
#[derive(Debug, Clone, Default)]
pub struct WebOptions {
    /// Bind here instead of `http.listen`.
    pub listen: Option<SocketAddr>,
    /// The workflows that exist (shipped and user-written), for `/metrics`.
    pub workflows: Vec<String>,
}

/// The running server; dropping it stops the server and waits for its
/// thread.
pub struct WebHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebHandle {
    /// The address bound (with the real port when `:0` was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for WebHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The credentials a request must bring.
struct Auth {
    token: Option<Secret>,
    basic: Option<(String, Secret)>,
}

impl Auth {
    fn is_set(&self) -> bool {
        self.token.is_some() || self.basic.is_some()
    }

    /// Whether the `Authorization` header carries a configured credential.
    fn allows(&self, header: Option<&str>) -> bool {
        if !self.is_set() {
            return true;
        }
        let Some(h) = header else {
            return false;
        };
        let (scheme, value) = h.trim().split_once(' ').unwrap_or((h, ""));
        let value = value.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return self
                .token
                .as_ref()
                .is_some_and(|t| same(t.expose().as_bytes(), value.as_bytes()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Some((user, pass)) = &self.basic else {
                return false;
            };
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(value) else {
                return false;
            };
            let want = [user.as_bytes(), b":", pass.expose().as_bytes()].concat();
            return same(&want, &raw);
        }
        false
    }

    /// `WWW-Authenticate` values for a 401.
    fn challenges(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.basic.is_some() {
            v.push("Basic realm=\"homelab-autopilot\", charset=\"UTF-8\"");
        }
        if self.token.is_some() {
            v.push("Bearer realm=\"homelab-autopilot\"");
        }
        v
    }
}

/// Constant-time comparison (the length is not hidden).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the handlers share.
struct Shared {
    cfg: Arc<Config>,
    state_db: PathBuf,
    store: Mutex<Option<Arc<Store>>>,
    auth: Auth,
    workflows: Vec<String>,
}

impl Shared {
    /// The state DB, opened the first time it exists (a page before the
    /// first run shows "no state yet" and never creates the file).
    fn store(&self) -> Result<Option<Arc<Store>>> {
        let mut slot = self.store.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() && self.state_db.exists() {
            *slot = Some(Arc::new(Store::open(&self.state_db)?));
        }
        Ok(slot.clone())
    }
}

/// The address `http.listen` asks for, if set.
pub fn configured_listen(cfg: &Config) -> Result<Option<SocketAddr>> {
    cfg.http
        .listen
        .as_deref()
        .map(|l| {
            crate::config::parse_listen(l).map_err(|e| {
                Error::Config(vec![format!("{}: http.listen: {e}", cfg.source.display())])
            })
        })
        .transpose()
}

/// Bind and serve in the background. Errors: the address is not set or
/// cannot be bound, a non-loopback address without authentication, a
/// secret that cannot be read.
pub fn start(cfg: Arc<Config>, paths: &Paths, opts: WebOptions) -> Result<WebHandle> {
    let addr = match opts.listen {
        Some(a) => a,
        None => configured_listen(&cfg)?.ok_or_else(|| {
            Error::Config(vec![format!(
                "{}: http.listen is not set (the status page is off); set it, or give --listen",
                cfg.source.display()
            )])
        })?,
    };
    let a = &cfg.http.auth;
    let auth = Auth {
        token: a.token_source().map(|s| s.resolve()).transpose()?,
        basic: match (&a.username, a.password_source()) {
            (Some(u), Some(p)) => Some((u.clone(), p.resolve()?)),
            _ => None,
        },
    };
    if !addr.ip().is_loopback() && !auth.is_set() {
        return Err(Error::Config(vec![format!(
            "{}: http: {addr} is reachable from other machines and http.auth is not set: \
             set a token or a username and password, or listen on 127.0.0.1 / [::1]",
            cfg.source.display()
        )]));
    }
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| Error::Unreachable(format!("http: cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("<socket>", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("<socket>", e))?;
    let shared = Arc::new(Shared {
        cfg,
        state_db: paths.state_db.clone(),
        store: Mutex::new(None),
        auth,
        workflows: opts.workflows,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("<runtime>", e))?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("web".into())
        .spawn(move || runtime.block_on(serve(listener, shared, stopped)))
        .map_err(|e| Error::io("<thread>", e))?;
    Ok(WebHandle {
        addr: local,
        stop: Some(stop),
        thread: Some(thread),
    })
}

async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("http: {e}");
            return;
        }
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = &mut stopped => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, _peer) = tokio::select! {
            _ = &mut stopped => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("http: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc = hyper::service::service_fn(move |req| respond(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, svc)
                .await;
            drop(permit);
        });
    }
}

/// A response before it becomes hyper's.
struct Reply {
    status: StatusCode,
    content_type: &'static str,
    body: String,
    headers: Vec<(&'static str, String)>,
}

const HTML: &str = "text/html; charset=utf-8";
const JSON: &str = "application/json";
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    fn new(status: StatusCode, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    fn json(status: StatusCode, mut v: serde_json::Value) -> Reply {
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("schema_version".into(), API_VERSION.into());
        }
        crate::redact::scrub_json(&mut v);
        let body = serde_json::to_string_pretty(&v).unwrap_or_default() + "\n";
        Reply::new(status, JSON, body)
    }
}

/// An error for the path's kind: JSON under `/api/`, a page elsewhere.
fn error(api: bool, status: StatusCode, message: &str) -> Reply {
    if api {
        Reply::json(
            status,
            json!({"error": {"status": status.as_u16(), "message": message}}),
        )
    } else {
        let title = status.canonical_reason().unwrap_or("Error");
        Reply::new(status, HTML, html::message(title, message))
    }
}

async fn respond(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> std::result::Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header(hyper::header::AUTHORIZATION);
    let host = header(hyper::header::HOST);
    let head = method == Method::HEAD;
    let reply = tokio::task::spawn_blocking(move || {
        route(&shared, &method, &path, &query, authorization, host)
    })
    .await
    .unwrap_or_else(|_| error(false, StatusCode::INTERNAL_SERVER_ERROR, "internal error"));
    Ok(into_response(reply, head))
}

fn into_response(r: Reply, head: bool) -> Response<Full<Bytes>> {
    let body = crate::redact::scrub(&r.body).into_owned();
    let len = body.len();
    let mut b = Response::builder()
        .status(r.status)
        .header("content-type", r.content_type)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        .header("referrer-policy", "no-referrer")
        .header(
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'none'; frame-ancestors 'none'",
        );
    for (k, v) in r.headers {
        b = b.header(k, v);
    }
    let body = if head {
        b = b.header("content-length", len);
        Bytes::new()
    } else {
        Bytes::from(body)
    };
    b.body(Full::new(body)).unwrap_or_else(|_| {
        let mut r = Response::new(Full::new(Bytes::from_static(b"internal error\n")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}

/// Whether a `Host` header names this machine (an IP literal or
/// `localhost`): without authentication only such requests are answered,
/// so a web page elsewhere cannot read the status through a DNS name that
/// it points at 127.0.0.1.
fn local_host(host: Option<&str>) -> bool {
    let Some(h) = host else {
        return false;
    };
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').map(|(n, _)| n).unwrap_or(h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

fn route(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &str,
    authorization: Option<String>,
    host: Option<String>,
) -> Reply {
    let api = path == "/api" || path.starts_with("/api/");
    if !shared.auth.allows(authorization.as_deref()) {
        let mut r = error(api, StatusCode::UNAUTHORIZED, "authentication required");
        for c in shared.auth.challenges() {
            r.headers.push(("www-authenticate", c.to_string()));
        }
        return r;
    }
    if !shared.auth.is_set() && !local_host(host.as_deref()) {
        return error(
            api,
            StatusCode::MISDIRECTED_REQUEST,
            "without http.auth only requests to an IP address or localhost are answered",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = error(
            api,
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{method} is not allowed: the status page is read-only"),
        );
        r.headers.push(("allow", "GET, HEAD".into()));
        return r;
    }
    match page(shared, path, query) {
        Ok(Some(r)) => r,
        Ok(None) => error(api, StatusCode::NOT_FOUND, &format!("no such page: {path}")),
        Err(e) => {
            tracing::warn!("http: {path}: {e}");
            error(api, StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// `%XX` decoded; `None` for invalid UTF-8.
fn decode(seg: &str) -> Option<String> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).ok()?, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The answer for a path, `None` when there is none.
fn page(shared: &Shared, path: &str, query: &str) -> Result<Option<Reply>> {
    let store = shared.store()?;
    let store = store.as_deref();
    let cfg = &shared.cfg;
    let ok_json = |v: serde_json::Value| Some(Reply::json(StatusCode::OK, v));
    let ok_html = |s: String| Some(Reply::new(StatusCode::OK, HTML, s));
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    Ok(match parts.as_slice() {
        [] => {
            let st = data::status(cfg, store)?;
            let recent = data::runs(store, None, 20)?;
            ok_html(html::overview(&st, &recent))
        }
        ["runs"] => ok_html(html::runs(&data::runs(store, None, 100)?)),
        ["runs", id] => match id.parse::<i64>().ok() {
            Some(id) => {
                data::run(store, id)?.map(|d| Reply::new(StatusCode::OK, HTML, html::run(&d)))
            }
            None => None,
        },
        ["services", name] => match decode(name) {
            Some(n) => data::service(cfg, store, &n)?
                .map(|d| Reply::new(StatusCode::OK, HTML, html::service(&d))),
            None => None,
        },
        ["api", "v1", "status"] => ok_json(to_json(&data::status(cfg, store)?)),
        ["api", "v1", "services"] => {
            ok_json(json!({"services": to_json(&data::services(cfg, store)?)}))
        }
        ["api", "v1", "services", name] => match decode(name) {
            Some(n) => {
                data::service(cfg, store, &n)?.map(|d| Reply::json(StatusCode::OK, to_json(&d)))
            }
            None => None,
        },
        ["api", "v1", "runs"] => {
            let limit = match query_param(query, "limit") {
                Some(l) => match l.parse::<usize>() {
                    Ok(n) if n >= 1 => n.min(data::RUNS_MAX),
                    _ => {
                        return Ok(Some(error(
                            true,
                            StatusCode::BAD_REQUEST,
                            &format!("limit must be a number from 1 to {}", data::RUNS_MAX),
                        )))
                    }
                },
                None => 50,
            };
            let workflow = query_param(query, "workflow");
            let runs = data::runs(store, workflow.as_deref(), limit)?;
            ok_json(json!({"runs": to_json(&runs)}))
        }
        ["api", "v1", "runs", id] => match id.parse::<i64>().ok() {
            Some(id) => data::run(store, id)?.map(|d| Reply::json(StatusCode::OK, to_json(&d))),
            None => None,
        },
        ["metrics"] => {
            let snapshot = match store {
                Some(s) => s.metrics_snapshot()?,
                None => MetricsSnapshot::default(),
            };
            let text = crate::metrics::render(cfg, &shared.workflows, &snapshot);
            Some(Reply::new(StatusCode::OK, METRICS, text))
        }
        _ => None,
    })
}

/// A data value as JSON.
fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_checked_exactly() {
        let auth = Auth {
            token: Some(Secret::new("tok-123456")),
            basic: Some(("admin".into(), Secret::new("pw:with:colons"))),
        };
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(auth.allows(Some("Bearer tok-123456")));
        assert!(auth.allows(Some("bearer   tok-123456 ")));
        assert!(!auth.allows(Some("Bearer tok-12345")));
        assert!(!auth.allows(Some("Bearer tok-1234567")));
        assert!(auth.allows(Some(&format!("Basic {}", b64("admin:pw:with:colons")))));
        assert!(!auth.allows(Some(&format!("Basic {}", b64("admin:pw")))));
        assert!(!auth.allows(Some(&format!("Basic {}", b64("root:pw:with:colons")))));
        assert!(!auth.allows(Some("Basic !!!")));
        assert!(!auth.allows(None));
        let none = Auth {
            token: None,
            basic: None,
        };
        assert!(none.allows(None));
    }

    #[test]
    fn only_local_host_names_pass_without_auth() {
        for h in [
            "127.0.0.1:8321",
            "localhost",
            "LOCALHOST:1",
            "[::1]:80",
            "10.0.0.5",
        ] {
            assert!(local_host(Some(h)), "{h}");
        }
        for h in ["evil.example:8321", "example.com", ""] {
            assert!(!local_host(Some(h)), "{h}");
        }
        assert!(!local_host(None));
    }

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode("a%20b%3Cc%3E").as_deref(), Some("a b<c>"));
        assert_eq!(decode("100%").as_deref(), Some("100%"));
        assert_eq!(decode("%FF"), None);
    }
}
