//! The PVE REST API over HTTPS (reqwest blocking + rustls).
//!
//! - Auth: an API token (`Authorization: PVEAPIToken=USER@REALM!ID=SECRET`,
//!   or PBS's `PBSAPIToken=USER@REALM!ID:SECRET`), or user + password: a
//!   ticket from `POST /access/ticket`, sent as the `PVEAuthCookie` cookie,
//!   with the `CSRFPreventionToken` header on every write, renewed after an
//!   hour (tickets expire after two).
//! - Requests: GET/DELETE parameters in the query, POST/PUT form-encoded;
//!   `;` is percent-encoded (the server splits forms on it too).
//! - Retries: only GETs, on 595/596, 502-504 and connection errors; a POST
//!   is never retried blindly (it may have started a task).
//! - Errors: 400 bodies carry `errors{param: msg}`; other errors have the
//!   message in `message` (PVE) or as the bare body (PBS) or in the reason.

use super::error::{PveError, PveResult};
use super::tls::{client_config, TlsMode};
use super::{Method, Params, Transport};
use crate::config::Secret;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Renew a ticket after this long (PVE tickets live 2 h).
pub const TICKET_RENEW_AFTER: Duration = Duration::from_secs(3600);

/// Which product's header and cookie names to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Pve,
    Pbs,
}

/// How to authenticate.
pub enum Auth {
    /// `user@realm!tokenid` and its secret.
    Token { id: String, secret: Secret },
    /// `user@realm` and password: ticket login.
    Password { username: String, password: Secret },
}

struct Ticket {
    ticket: String,
    csrf: String,
    obtained: Instant,
}

/// Tunables (tests shorten the retry delay).
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub timeout: Duration,
    pub get_attempts: u32,
    pub retry_delay: Duration,
    /// Renew the login ticket once it is this old (before the 2 h expiry).
    pub ticket_renew_after: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            get_attempts: 4,
            retry_delay: Duration::from_secs(2),
            ticket_renew_after: TICKET_RENEW_AFTER,
        }
    }
}

pub struct HttpTransport {
    base: String,
    flavor: Flavor,
    http: reqwest::blocking::Client,
    auth: Auth,
    ticket: Mutex<Option<Ticket>>,
    seen_cert: Arc<Mutex<Option<String>>>,
    opts: HttpOptions,
}

impl HttpTransport {
    /// A client for `api_url` (`https://host:8006`; `/api2/json` is added).
    pub fn new(
        api_url: &str,
        flavor: Flavor,
        tls: &TlsMode,
        auth: Auth,
        opts: HttpOptions,
    ) -> PveResult<Self> {
        let url = url::Url::parse(api_url)
            .map_err(|e| PveError::Config(format!("api_url '{api_url}': {e}")))?;
        let mut base = url.as_str().trim_end_matches('/').to_string();
        if !base.ends_with("/api2/json") {
            base.push_str("/api2/json");
        }
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(opts.timeout)
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("homelab-autopilot/", env!("CARGO_PKG_VERSION")));
        let mut seen_cert = Arc::new(Mutex::new(None));
        if !matches!(tls, TlsMode::WebPki) {
            let (cfg, seen) = client_config(tls)?;
            seen_cert = seen;
            builder = builder.use_preconfigured_tls(cfg);
        }
        let http = builder
            .build()
            .map_err(|e| PveError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            base,
            flavor,
            http,
            auth,
            ticket: Mutex::new(None),
            seen_cert,
            opts,
        })
    }

    fn cookie_name(&self) -> &'static str {
        match self.flavor {
            Flavor::Pve => "PVEAuthCookie",
            Flavor::Pbs => "PBSAuthCookie",
        }
    }

    /// A connection-level error, told apart: a pin mismatch (with the
    /// fingerprint seen) or an unreachable server.
    fn transport_error(&self, e: reqwest::Error) -> PveError {
        if let Some(seen) = self.seen_cert.lock().ok().and_then(|mut s| s.take()) {
            return PveError::PinMismatch {
                url: self.base.trim_end_matches("/api2/json").to_string(),
                seen,
            };
        }
        let mut msg = e.to_string();
        let mut refused = false;
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            refused |=
                is_certificate_error(s) || s.to_string().contains("invalid peer certificate");
            src = s.source();
        }
        let url = self.base.trim_end_matches("/api2/json").to_string();
        if refused {
            return PveError::Tls { url, message: msg };
        }
        PveError::Unreachable(format!("{url}: {msg}"))
    }

    /// Log in (or renew) and return (ticket, csrf).
    fn ticket(&self) -> PveResult<(String, String)> {
        let Auth::Password { username, password } = &self.auth else {
            return Err(PveError::Config("no password configured".into()));
        };
        let mut slot = self.ticket.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = slot.as_ref() {
            if t.obtained.elapsed() < self.opts.ticket_renew_after {
                return Ok((t.ticket.clone(), t.csrf.clone()));
            }
        }
        // Renew with the old ticket as password while it is still valid;
        // if that fails (it expired), log in with the password again.
        let data = match slot.as_ref().map(|t| t.ticket.clone()) {
            Some(old) => match self.login(username, &old) {
                Err(PveError::Auth { .. }) => self.login(username, password.expose())?,
                other => other?,
            },
            None => self.login(username, password.expose())?,
        };
        let ticket = data["ticket"].as_str().unwrap_or_default().to_string();
        let csrf = data["CSRFPreventionToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if ticket.is_empty() {
            return Err(PveError::Auth {
                status: 200,
                message: "login answered without a ticket (two-factor auth is not supported; use an API token)".into(),
            });
        }
        if data.get("NeedTFA").is_some_and(|v| v == 1 || v == true) {
            return Err(PveError::Auth {
                status: 200,
                message: "this user needs two-factor auth; use an API token".into(),
            });
        }
        crate::redact::register(&ticket);
        crate::redact::register(&csrf);
        *slot = Some(Ticket {
            ticket: ticket.clone(),
            csrf: csrf.clone(),
            obtained: Instant::now(),
        });
        Ok((ticket, csrf))
    }

    fn login(&self, username: &str, password: &str) -> PveResult<Value> {
        let form = vec![
            ("username".to_string(), username.to_string()),
            ("password".to_string(), password.to_string()),
        ];
        let resp = self
            .http
            .post(format!("{}/access/ticket", self.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(encode_form(&form))
            .send()
            .map_err(|e| self.transport_error(e))?;
        self.decode(Method::Post, "/access/ticket", resp)
    }

    /// Forget the ticket (after a 401: it expired or the server restarted).
    fn drop_ticket(&self) -> bool {
        let mut slot = self.ticket.lock().unwrap_or_else(|p| p.into_inner());
        slot.take().is_some()
    }

    fn send_once(&self, method: Method, path: &str, params: &Params) -> PveResult<Value> {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            Method::Get | Method::Delete => {
                let mut u = url;
                if !params.is_empty() {
                    u.push('?');
                    u.push_str(&encode_form(params));
                }
                if method == Method::Get {
                    self.http.get(u)
                } else {
                    self.http.delete(u)
                }
            }
            Method::Post | Method::Put => {
                let r = if method == Method::Post {
                    self.http.post(url)
                } else {
                    self.http.put(url)
                };
                r.header("Content-Type", "application/x-www-form-urlencoded")
                    .body(encode_form(params))
            }
        };
        match &self.auth {
            Auth::Token { id, secret } => {
                let value = match self.flavor {
                    Flavor::Pve => format!("PVEAPIToken={id}={}", secret.expose()),
                    Flavor::Pbs => format!("PBSAPIToken={id}:{}", secret.expose()),
                };
                let mut hv = reqwest::header::HeaderValue::from_str(&value)
                    .map_err(|_| PveError::Config("token contains invalid characters".into()))?;
                hv.set_sensitive(true);
                req = req.header(reqwest::header::AUTHORIZATION, hv);
            }
            Auth::Password { .. } => {
                let (ticket, csrf) = self.ticket()?;
                let cookie = format!("{}={}", self.cookie_name(), super::enc(&ticket));
                let mut hv = reqwest::header::HeaderValue::from_str(&cookie)
                    .map_err(|_| PveError::Config("ticket contains invalid characters".into()))?;
                hv.set_sensitive(true);
                req = req.header(reqwest::header::COOKIE, hv);
                if method != Method::Get {
                    req = req.header("CSRFPreventionToken", csrf);
                }
            }
        }
        let resp = req.send().map_err(|e| self.transport_error(e))?;
        self.decode(method, path, resp)
    }

    fn decode(
        &self,
        method: Method,
        path: &str,
        resp: reqwest::blocking::Response,
    ) -> PveResult<Value> {
        let status = resp.status();
        // The server's own reason phrase ("500 VM is locked (backup)"):
        // older PVE versions put the message only there. hyper keeps it
        // when it differs from the canonical one.
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).trim().to_string())
            .filter(|r| !r.is_empty())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let text = read_answer(resp, ANSWER_MAX)
            .map_err(|e| PveError::Unreachable(format!("{path}: reading the answer: {e}")))?;
        if status.is_success() {
            let v: Value = serde_json::from_str(&text).map_err(|e| PveError::Decode {
                what: format!("{} {path}", method.as_str()),
                message: e.to_string(),
            })?;
            return Ok(v.get("data").cloned().unwrap_or(Value::Null));
        }
        let code = status.as_u16();
        let body: Option<Value> = serde_json::from_str(&text).ok();
        let message = body
            .as_ref()
            .and_then(|b| b.get("message"))
            .and_then(|m| m.as_str())
            .map(|s| s.trim().to_string())
            .or_else(|| {
                // PBS: the bare message as body; PVE (older): only the reason.
                let t = text.trim();
                (!t.is_empty() && body.is_none()).then(|| t.to_string())
            })
            .unwrap_or(reason);
        if code == 401 {
            return Err(PveError::Auth {
                status: code,
                message,
            });
        }
        if code == 400 {
            if let Some(errs) = body
                .as_ref()
                .and_then(|b| b.get("errors"))
                .and_then(|e| e.as_object())
            {
                let errors: BTreeMap<String, String> = errs
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().trim().to_string()))
                    .collect();
                return Err(PveError::Params {
                    method: method.as_str().into(),
                    path: path.into(),
                    errors,
                });
            }
        }
        if let Some(lock) = super::error::lock_in(&message) {
            return Err(PveError::Locked {
                guest: guest_of(path),
                lock,
                detail: String::new(),
            });
        }
        Err(PveError::Api {
            method: method.as_str().into(),
            path: path.into(),
            status: code,
            message,
        })
    }
}

/// Whether an error in a connection failure's chain is a certificate the
/// verifier refused (rustls, possibly wrapped in an `io::Error`, whose
/// `source()` skips the wrapped error itself).
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let refused = |r: &rustls::Error| {
        matches!(
            r,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        )
    };
    if let Some(r) = e.downcast_ref::<rustls::Error>() {
        return refused(r);
    }
    e.downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(refused)
}

/// "VM 100" / "CT 200" from a request path, for lock messages.
fn guest_of(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').collect();
    for w in segs.windows(2) {
        match w[0] {
            "qemu" => return format!("VM {}", w[1]),
            "lxc" => return format!("CT {}", w[1]),
            _ => {}
        }
    }
    "guest".into()
}

impl Transport for HttpTransport {
    fn call(&self, method: Method, path: &str, params: &Params) -> PveResult<Value> {
        let attempts = if method == Method::Get {
            self.opts.get_attempts.max(1)
        } else {
            1
        };
        let mut last = None;
        for i in 0..attempts {
            if i > 0 {
                std::thread::sleep(self.opts.retry_delay * i);
                tracing::debug!("retrying GET {path} (attempt {})", i + 1);
            }
            let mut r = self.send_once(method, path, params);
            // A ticket the server no longer accepts: log in again, once.
            // Safe for writes too: a 401 means the request was not run.
            if matches!(r, Err(PveError::Auth { .. }))
                && matches!(self.auth, Auth::Password { .. })
                && self.drop_ticket()
            {
                r = self.send_once(method, path, params);
            }
            match r {
                Ok(v) => return Ok(v),
                Err(e @ (PveError::PinMismatch { .. } | PveError::Tls { .. })) => return Err(e),
                Err(e) if e.is_retryable() && !matches!(e, PveError::Locked { .. }) => {
                    tracing::warn!("{} {path}: {e} (transient)", method.as_str());
                    last = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| PveError::Unreachable(path.into())))
    }

    fn is_root(&self) -> bool {
        // Tokens are never root@pam, even root@pam!x (NOTES.md).
        matches!(&self.auth, Auth::Password { username, .. } if username == "root@pam")
    }

    fn describe(&self) -> String {
        self.base.trim_end_matches("/api2/json").to_string()
    }
}

/// `application/x-www-form-urlencoded`, with `;` escaped (the PVE server
/// splits form bodies on `;` as well as `&`).
pub fn encode_form(params: &Params) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", super::enc(k), super::enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Most bytes of one API answer read. The largest real answers (a long
/// task log, the resources of a big cluster) stay far below; a server
/// that sends more is refused rather than read into memory without end.
const ANSWER_MAX: u64 = 64 << 20;

fn read_answer(resp: reqwest::blocking::Response, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut buf = Vec::new();
    resp.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(std::io::Error::other(format!(
            "the answer is larger than {} MiB",
            max >> 20
        )));
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_escape_semicolons_and_spaces() {
        let p = vec![("boot".to_string(), "order=scsi0;net0".to_string())];
        assert_eq!(encode_form(&p), "boot=order%3Dscsi0%3Bnet0");
    }

    /// One HTTP answer on 127.0.0.1, as an older PVE sends errors: the
    /// message only in the reason phrase, the body `{"data":null}`.
    fn answer_once(status_line: &'static str) -> String {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let body = r#"{"data":null}"#;
            let _ = write!(
                c,
                "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        });
        url
    }

    fn transport(url: &str) -> HttpTransport {
        let auth = Auth::Token {
            id: "root@pam!t".into(),
            secret: Secret::new("s"),
        };
        let opts = HttpOptions {
            get_attempts: 1,
            ..Default::default()
        };
        HttpTransport::new(url, Flavor::Pve, &TlsMode::WebPki, auth, opts).unwrap()
    }

    #[test]
    fn the_reason_phrase_is_the_message_and_shows_a_lock() {
        let url = answer_once("500 VM is locked (backup)");
        let e = transport(&url)
            .call(Method::Post, "/nodes/pve1/qemu/100/snapshot", &Vec::new())
            .unwrap_err();
        assert_eq!(e.kind(), "guest_locked", "{e}");
        assert_eq!(e.to_string(), "VM 100 is locked (backup)");
        let url =
            answer_once("500 Configuration file 'nodes/pve1/qemu-server/100.conf' does not exist");
        let e = transport(&url)
            .call(
                Method::Get,
                "/nodes/pve1/qemu/100/status/current",
                &Vec::new(),
            )
            .unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn an_answer_without_end_is_refused_not_read_into_memory() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let sent = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"data\":\"");
            let chunk = vec![b'x'; 1 << 16];
            let mut sent = 0u64;
            while c.write_all(&chunk).is_ok() {
                sent += chunk.len() as u64;
                if sent > 1 << 30 {
                    break;
                }
            }
            sent
        });
        let e = transport(&url)
            .call(Method::Get, "/cluster/resources", &Vec::new())
            .unwrap_err();
        assert!(e.to_string().contains("larger than 64 MiB"), "{e}");
        drop(e);
        let sent = sent.join().unwrap();
        assert!(sent < 1 << 30, "the reader stopped ({sent} bytes sent)");
    }

    #[test]
    fn guest_names_come_from_the_path() {
        assert_eq!(guest_of("/nodes/pve1/qemu/100/snapshot"), "VM 100");
        assert_eq!(guest_of("/nodes/pve1/lxc/200/status/current"), "CT 200");
    }
}
