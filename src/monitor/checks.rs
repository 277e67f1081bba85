//! Health checks, read-only: HTTP(S) (status, body substring/regex,
//! latency, TLS certificate expiry, headers, redirects), TCP connect, DNS
//! resolution, process running (name or pid file), Docker container running
//! and healthy (`docker inspect`, argv), a command's exit code, and host
//! resources (disk, memory, load). Each check has its own timeout; many run
//! at once under a concurrency limit.

use crate::config::{CommandSpec, HealthCheckConfig, HealthCheckType};
use serde::Serialize;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// One check to run.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// `service/name`.
    pub id: String,
    pub service: String,
    pub name: String,
    /// `external` for a service's `external_url`.
    pub kind: String,
    pub check: HealthCheckConfig,
    pub timeout: Duration,
}

/// The outcome of one check (handed to scripts as a map).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct CheckResult {
    pub id: String,
    pub service: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub ok: bool,
    pub message: String,
    pub latency_ms: u64,
    /// A warning that does not fail the check (certificate expiring soon).
    pub warning: Option<String>,
    pub tls_days_left: Option<i64>,
    pub parent: Option<String>,
}

struct Outcome {
    ok: bool,
    message: String,
    warning: Option<String>,
    tls_days_left: Option<i64>,
}

impl Outcome {
    fn ok(message: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            message: message.into(),
            warning: None,
            tls_days_left: None,
        }
    }
    fn fail(message: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            message: message.into(),
            warning: None,
            tls_days_left: None,
        }
    }
}

/// Run every spec, at most `concurrency` at once; results in spec order.
pub fn run_all(specs: Vec<CheckSpec>, concurrency: usize) -> Vec<CheckResult> {
    crate::notify::block_on(async move {
        let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let handles: Vec<_> = specs
            .into_iter()
            .map(|spec| {
                let sem = sem.clone();
                tokio::spawn(async move {
                    let _permit = sem.acquire_owned().await;
                    run_check(&spec).await
                })
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            match h.await {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!("a health check task panicked: {e}"),
            }
        }
        out
    })
}

/// Run one check under its timeout.
pub async fn run_check(spec: &CheckSpec) -> CheckResult {
    let started = Instant::now();
    let o = match tokio::time::timeout(spec.timeout, check(&spec.check, spec.timeout)).await {
        Ok(o) => o,
        Err(_) => Outcome::fail(format!("timed out after {}s", spec.timeout.as_secs_f64())),
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    let mut o = o;
    if let (true, Some(max)) = (o.ok, spec.check.max_latency_ms) {
        if latency_ms > max {
            o.ok = false;
            o.message = format!(
                "{} but took {latency_ms} ms (max_latency_ms {max})",
                o.message
            );
        }
    }
    CheckResult {
        id: spec.id.clone(),
        service: spec.service.clone(),
        name: spec.name.clone(),
        kind: spec.kind.clone(),
        ok: o.ok,
        message: crate::redact::scrub(&o.message).into_owned(),
        latency_ms,
        warning: o.warning,
        tls_days_left: o.tls_days_left,
        parent: spec.check.parent.clone(),
    }
}

async fn check(c: &HealthCheckConfig, timeout: Duration) -> Outcome {
    match c.check_type {
        HealthCheckType::Http => http(c, timeout).await,
        HealthCheckType::Tcp => tcp(c.host.as_deref().unwrap_or(""), c.port.unwrap_or(0)).await,
        HealthCheckType::Dns => dns(c.hostname.as_deref().unwrap_or("")).await,
        HealthCheckType::Process => process(c),
        HealthCheckType::Container => container(c.container.as_deref().unwrap_or("")).await,
        HealthCheckType::Compose => compose(c.compose_project.as_deref().unwrap_or("")).await,
        HealthCheckType::Command | HealthCheckType::Database => match &c.command {
            Some(cmd) => command(&cmd.argv()).await,
            None => Outcome::fail("no command"),
        },
        HealthCheckType::Custom => match &c.script {
            Some(p) => command(&[p.display().to_string()]).await,
            None => Outcome::fail("no script"),
        },
    }
}

/// Shared HTTP clients (one following redirects, one not): a 500-check
/// cycle reuses connections and TLS configuration.
/// Start the async runtime and build the shared HTTP client on a thread of
/// their own when these services have HTTP checks, so both (threads, CA
/// roots) overlap the rest of start-up instead of delaying the first check.
pub fn prewarm_http_client(services: &[&crate::config::ServiceConfig]) {
    let http = services.iter().any(|s| {
        s.external_url.is_some()
            || s.health_checks
                .iter()
                .any(|c| c.check_type == HealthCheckType::Http)
    });
    if http {
        let _ = std::thread::Builder::new()
            .name("http-client".into())
            .spawn(|| {
                crate::notify::block_on(async {});
                http_client(true);
            });
    }
}

thread_local! {
    /// Checks on this thread build their own HTTP client, without a
    /// connection pool ([`run_here`]).
    static OWN_CLIENT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run one check on this thread, on a runtime of its own, with its own
/// HTTP client: every socket it opens belongs to this thread's network
/// namespace (a restore test enters a copy's namespace with `setns`, which
/// changes the calling thread only). Names are not resolved here (the
/// resolver is the host's): give addresses.
pub fn run_here(spec: &CheckSpec) -> CheckResult {
    OWN_CLIENT.with(|c| c.set(true));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    match rt {
        Ok(rt) => rt.block_on(run_check(spec)),
        Err(e) => CheckResult {
            id: spec.id.clone(),
            service: spec.service.clone(),
            name: spec.name.clone(),
            kind: spec.kind.clone(),
            ok: false,
            message: format!("could not start a runtime: {e}"),
            latency_ms: 0,
            warning: None,
            tls_days_left: None,
            parent: spec.check.parent.clone(),
        },
    }
}

fn client_for(follow: bool) -> reqwest::Client {
    if OWN_CLIENT.with(|c| c.get()) {
        let built = crate::notify::transport::with_extra_roots(reqwest::Client::builder())
            .redirect(if follow {
                reqwest::redirect::Policy::limited(10)
            } else {
                reqwest::redirect::Policy::none()
            })
            .pool_max_idle_per_host(0)
            .build();
        if let Ok(c) = built {
            return c;
        }
    }
    http_client(follow).clone()
}

fn http_client(follow: bool) -> &'static reqwest::Client {
    static FOLLOW: OnceLock<reqwest::Client> = OnceLock::new();
    static NO_FOLLOW: OnceLock<reqwest::Client> = OnceLock::new();
    let cell = if follow { &FOLLOW } else { &NO_FOLLOW };
    cell.get_or_init(|| {
        tracing::debug!("building the HTTP client");
        crate::notify::transport::with_extra_roots(reqwest::Client::builder())
            .user_agent(concat!(
                "homelab-autopilot/",
                env!("CARGO_PKG_VERSION"),
                " (health check)"
            ))
            .redirect(if follow {
                reqwest::redirect::Policy::limited(10)
            } else {
                reqwest::redirect::Policy::none()
            })
            .pool_max_idle_per_host(64)
            .build()
            .expect("HTTP client")
    })
}

fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

async fn http(c: &HealthCheckConfig, timeout: Duration) -> Outcome {
    let Some(url) = c.url.as_deref() else {
        return Outcome::fail("no url");
    };
    let mut tls_days_left = None;
    let mut warning = None;
    if let (Some(days), true) = (c.tls_expiry_warn_days, url.starts_with("https://")) {
        match super::tls::days_left(url, timeout).await {
            Ok(left) => {
                tls_days_left = Some(left);
                if left < days as i64 {
                    warning = Some(if left < 0 {
                        format!("TLS certificate expired {} day(s) ago", -left)
                    } else {
                        format!("TLS certificate expires in {left} day(s) (tls_expiry_warn_days {days})")
                    });
                }
            }
            Err(e) => warning = Some(format!("could not read the TLS certificate: {e}")),
        }
    }
    let method = reqwest::Method::from_bytes(c.method.to_ascii_uppercase().as_bytes())
        .unwrap_or(reqwest::Method::GET);
    let mut rb = client_for(c.follow_redirects)
        .request(method, url)
        .timeout(timeout);
    for (k, v) in &c.headers {
        rb = rb.header(k, v);
    }
    let mut o = match rb.send().await {
        Err(e) => Outcome::fail(if e.is_timeout() {
            format!("timed out after {}s", timeout.as_secs_f64())
        } else {
            innermost(&e)
        }),
        Ok(resp) => {
            let status = resp.status().as_u16();
            let status_ok = match c.expected_status {
                Some(want) => status == want,
                None => (200..300).contains(&status),
            };
            if !status_ok {
                Outcome::fail(format!(
                    "HTTP {status} (expected {})",
                    c.expected_status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "2xx".into())
                ))
            } else if c.body_contains.is_some() || c.body_regex.is_some() {
                body_check(c, status, resp).await
            } else {
                Outcome::ok(format!("HTTP {status}"))
            }
        }
    };
    o.tls_days_left = tls_days_left;
    if warning.is_some() {
        o.warning = warning;
    }
    o
}

/// Most body bytes read for `body_contains` / `body_regex`.
const BODY_MAX: usize = 1 << 20;

async fn body_check(c: &HealthCheckConfig, status: u16, resp: reqwest::Response) -> Outcome {
    let body = crate::notify::transport::read_capped(resp, BODY_MAX).await;
    let text = String::from_utf8_lossy(&body);
    if let Some(want) = &c.body_contains {
        if !text.contains(want.as_str()) {
            return Outcome::fail(format!("HTTP {status}, body lacks {want:?}"));
        }
    }
    if let Some(re) = &c.body_regex {
        match regex::Regex::new(re) {
            Ok(r) if r.is_match(&text) => {}
            Ok(_) => return Outcome::fail(format!("HTTP {status}, body does not match /{re}/")),
            Err(e) => return Outcome::fail(format!("invalid body_regex: {e}")),
        }
    }
    Outcome::ok(format!("HTTP {status}, body matches"))
}

async fn tcp(host: &str, port: u16) -> Outcome {
    match tokio::net::TcpStream::connect((host, port)).await {
        Ok(_) => Outcome::ok(format!("connected to {host}:{port}")),
        Err(e) => Outcome::fail(format!("{host}:{port}: {e}")),
    }
}

async fn dns(name: &str) -> Outcome {
    match tokio::net::lookup_host((name, 0)).await {
        Ok(addrs) => {
            let v: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            if v.is_empty() {
                Outcome::fail(format!("{name}: no addresses"))
            } else {
                Outcome::ok(format!("{name}: {}", v.join(", ")))
            }
        }
        Err(e) => Outcome::fail(format!("{name}: {e}")),
    }
}

/// Whether a process with this name (`/proc/PID/comm`, or the argv[0]
/// basename) runs; or whether the pid in `pid_file` is alive.
fn process(c: &HealthCheckConfig) -> Outcome {
    if let Some(pf) = &c.pid_file {
        let pid = match std::fs::read_to_string(pf) {
            Ok(s) => s.trim().parse::<u32>().ok(),
            Err(e) => return Outcome::fail(format!("{}: {e}", pf.display())),
        };
        return match pid {
            Some(p) if std::path::Path::new(&format!("/proc/{p}")).exists() => {
                Outcome::ok(format!("pid {p} is running"))
            }
            Some(p) => Outcome::fail(format!("pid {p} from {} is not running", pf.display())),
            None => Outcome::fail(format!("{}: no pid in the file", pf.display())),
        };
    }
    let name = c.process.as_deref().unwrap_or("");
    let pids = find_processes(name);
    if pids.is_empty() {
        Outcome::fail(format!("no process named {name}"))
    } else {
        Outcome::ok(format!("{} process(es) named {name}", pids.len()))
    }
}

/// Pids whose `comm` or argv[0] basename is `name`.
pub fn find_processes(name: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() == name {
                return true;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or(&[]);
            let argv0 = String::from_utf8_lossy(argv0);
            argv0.rsplit('/').next() == Some(name)
        })
        .collect()
}

use crate::docker::engine;

/// The containers of a Compose project (`com.docker.compose.project`
/// label, as both Compose v1 and v2 set it): `(name, state, status)`.
async fn compose_containers(project: &str) -> Result<Vec<(String, String, String)>, String> {
    let label = format!("com.docker.compose.project={project}");
    let rows = engine::list_containers(&serde_json::json!({ "label": [&label] })).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or("").to_string();
            (engine::row_name(r), text("State"), text("Status"))
        })
        .collect())
}

/// Every container of the Compose project runs and none is unhealthy.
async fn compose(project: &str) -> Outcome {
    if project.is_empty()
        || !project
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
    {
        return Outcome::fail(format!("invalid compose project name {project:?}"));
    }
    let containers = match compose_containers(project).await {
        Ok(c) => c,
        Err(e) => return Outcome::fail(e),
    };
    if containers.is_empty() {
        return Outcome::fail(format!("compose project {project} has no containers"));
    }
    let bad: Vec<String> = containers
        .iter()
        .filter(|(_, state, status)| state != "running" || status.contains("(unhealthy)"))
        .map(|(name, state, _)| {
            if state == "running" {
                format!("{name} is unhealthy")
            } else {
                format!("{name} is {state}")
            }
        })
        .collect();
    if bad.is_empty() {
        Outcome::ok(format!(
            "compose project {project}: {} container(s) running",
            containers.len()
        ))
    } else {
        Outcome::fail(format!("compose project {project}: {}", bad.join(", ")))
    }
}

/// A container is healthy when it is running (not paused, not restarting)
/// and not `unhealthy` (when it has a HEALTHCHECK). Through the engine's socket when there is one,
/// else the `docker` CLI.
async fn container(name: &str) -> Outcome {
    // Container names are [a-zA-Z0-9][a-zA-Z0-9_.-]*; anything else cannot
    // exist and must not reach a request path.
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Outcome::fail(format!("invalid container name {name:?}"));
    }
    let state = match engine::container_state(name).await {
        Ok(s) => s,
        Err(e) => return Outcome::fail(e),
    };
    let running = state.get("Running").and_then(|r| r.as_bool()) == Some(true);
    let status = state
        .get("Status")
        .and_then(|s| s.as_str())
        .unwrap_or("unknown");
    let health = state
        .get("Health")
        .and_then(|h| h.get("Status"))
        .and_then(|s| s.as_str());
    // A paused container still says Running; a crash-looping one says
    // Restarting between attempts. Neither is serving.
    let flag = |k: &str| state.get(k).and_then(|v| v.as_bool()) == Some(true);
    if flag("Paused") || flag("Restarting") {
        return Outcome::fail(format!("container {name} is {status}"));
    }
    match (running, health) {
        (false, _) => Outcome::fail(format!("container {name} is {status}")),
        (true, Some("unhealthy")) => Outcome::fail(format!("container {name} is unhealthy")),
        (true, Some(h)) => Outcome::ok(format!("container {name} is running ({h})")),
        (true, None) => Outcome::ok(format!("container {name} is running")),
    }
}

/// Run an argv; exit 0 is healthy. stdout is discarded and stderr read
/// through, keeping only its start for the message: a chatty command (or
/// `yes`) costs no memory.
async fn command(argv: &[String]) -> Outcome {
    use tokio::io::AsyncReadExt;
    const KEEP: usize = 1024;
    let Some((prog, args)) = argv.split_first() else {
        return Outcome::fail("empty command");
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return Outcome::fail(format!("{prog}: {e}")),
    };
    let mut kept = Vec::new();
    if let Some(mut err) = child.stderr.take() {
        let mut buf = [0u8; 8192];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let room = KEEP.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..n.min(room)]);
        }
    }
    match child.wait().await {
        Ok(status) if status.success() => Outcome::ok(format!("{prog} exited 0")),
        Ok(status) => {
            let err: String = String::from_utf8_lossy(&kept).chars().take(200).collect();
            Outcome::fail(format!("{prog} exited with {status}: {}", err.trim()))
        }
        Err(e) => Outcome::fail(format!("{prog}: {e}")),
    }
}

/// A [`CommandSpec`] check built by scripts.
pub fn command_check(cmd: CommandSpec) -> HealthCheckConfig {
    HealthCheckConfig {
        check_type: HealthCheckType::Command,
        command: Some(cmd),
        ..Default::default()
    }
}
