//! The Docker engine client: the engine's API on its Unix socket
//! (`DOCKER_HOST=unix://PATH`, else `/var/run/docker.sock`), else the
//! `docker` CLI (argv, never a shell), which knows contexts and TLS for a
//! `tcp://` DOCKER_HOST. Both give the same JSON objects (`docker inspect`
//! prints the API's objects in an array).
//!
//! The async functions serve the monitor's checks; the blocking ones
//! (`inspect_container`, `stop`, ...) serve backups and restores.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most bytes read from one engine answer.
const ANSWER_MAX: u64 = 8 << 20;
/// How long a blocking engine call may take (stopping a container waits
/// for its stop timeout, 10 s by default, then kills it).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Container and volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`. Anything else
/// cannot exist and must not reach a request path or an argv.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 255
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Engine object IDs (hex, or `sha256:<hex>`).
fn valid_id(id: &str) -> bool {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    !hex.is_empty() && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The Docker engine's socket: `DOCKER_HOST=unix://PATH`, else
/// `/var/run/docker.sock` when it exists. None (a `tcp://` DOCKER_HOST, no
/// socket): use the `docker` CLI.
pub fn socket() -> Option<PathBuf> {
    match std::env::var("DOCKER_HOST") {
        Ok(h) => h.strip_prefix("unix://").map(PathBuf::from),
        Err(_) => {
            let p = PathBuf::from("/var/run/docker.sock");
            p.exists().then_some(p)
        }
    }
}

/// One HTTP/1.0 request on the engine's socket (so the engine closes the
/// connection after the answer): `(status, body)`.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::result::Result<(u16, Vec<u8>), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("docker socket {}: {e}", socket.display()))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: docker\r\n");
    if method != "GET" {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    (&mut s)
        .take(ANSWER_MAX)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| e.to_string())?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed answer from the Docker engine")?;
    let head = String::from_utf8_lossy(&buf[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("malformed status line from the Docker engine")?;
    Ok((status, buf[split + 4..].to_vec()))
}

/// The engine's error message in an answer body (`{"message": ...}`).
fn engine_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

/// `GET path` on the engine's socket: the JSON body, None on 404.
pub async fn get(socket: &Path, path: &str) -> std::result::Result<Option<Value>, String> {
    let (status, body) = request(socket, "GET", path, None).await?;
    match status {
        200 => serde_json::from_slice::<Value>(&body)
            .map(Some)
            .map_err(|e| format!("Docker engine answer: {e}")),
        404 => Ok(None),
        other => Err(format!(
            "Docker engine answered HTTP {other}: {}",
            engine_message(&body)
        )),
    }
}

/// `docker ARGS` (argv, no shell): its stdout, or its stderr as the error.
pub async fn cli(what: &str, args: &[&str]) -> std::result::Result<Vec<u8>, String> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("docker: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("{what}: {}", err.trim()));
    }
    Ok(out.stdout)
}

/// A `docker inspect` style answer (an array) that names nothing.
fn not_found(err: &str) -> bool {
    let e = err.to_ascii_lowercase();
    e.contains("no such") || e.contains("not found")
}

/// Containers matching engine filters (`{"label": ["k=v"]}`,
/// `{"volume": ["name"]}`), stopped ones too. Each row has `Names` as the
/// API gives it (`["/x"]`) or as `docker ps` does (`"x"`); see [`row_name`].
pub async fn list_containers(filters: &Value) -> std::result::Result<Vec<Value>, String> {
    match socket() {
        Some(sock) => {
            let f: String =
                url::form_urlencoded::byte_serialize(filters.to_string().as_bytes()).collect();
            let v = get(&sock, &format!("/containers/json?all=1&filters={f}"))
                .await?
                .unwrap_or_default();
            Ok(v.as_array().cloned().unwrap_or_default())
        }
        None => {
            let mut args: Vec<String> = ["ps", "--all", "--no-trunc", "--format", "{{json .}}"]
                .map(String::from)
                .to_vec();
            if let Some(m) = filters.as_object() {
                for (k, vals) in m {
                    for v in vals.as_array().into_iter().flatten() {
                        args.push("--filter".into());
                        args.push(format!("{k}={}", v.as_str().unwrap_or("")));
                    }
                }
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = cli("docker ps", &refs).await?;
            Ok(String::from_utf8_lossy(&out)
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect())
        }
    }
}

/// The name of a container row of [`list_containers`].
pub fn row_name(r: &Value) -> String {
    let name = match &r["Names"] {
        Value::Array(a) => a.first().and_then(|n| n.as_str()).unwrap_or(""),
        v => v.as_str().unwrap_or(""),
    };
    name.trim_start_matches('/').to_string()
}

/// `GET /containers/NAME/json` (`/volumes/NAME` for a volume) or `docker
/// <kind> inspect -- NAME`: the object, None when there is no such object.
async fn inspect(kind: &str, name: &str) -> std::result::Result<Option<Value>, String> {
    match socket() {
        Some(sock) if kind == "volume" => get(&sock, &format!("/volumes/{name}")).await,
        Some(sock) => get(&sock, &format!("/{kind}s/{name}/json")).await,
        None => match cli(
            &format!("docker {kind} inspect {name}"),
            &[kind, "inspect", "--", name],
        )
        .await
        {
            Ok(out) => {
                let v: Value = serde_json::from_slice(&out)
                    .map_err(|e| format!("docker {kind} inspect: {e}"))?;
                Ok(v.as_array().and_then(|a| a.first()).cloned())
            }
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(e),
        },
    }
}

/// A container's `State` object (`docker inspect`).
pub async fn container_state(name: &str) -> std::result::Result<Value, String> {
    match inspect("container", name).await? {
        Some(v) => Ok(v.get("State").cloned().unwrap_or_default()),
        None => Err(format!("no such container: {name}")),
    }
}

/// Run a blocking engine call under [`CALL_TIMEOUT`]; an engine that
/// cannot be reached is `Error::Unreachable` (exit 69).
fn blocking<T>(
    what: &str,
    f: impl std::future::Future<Output = std::result::Result<T, String>>,
) -> Result<T> {
    blocking_for(what, CALL_TIMEOUT, f)
}

/// [`blocking`] with its own timeout.
pub fn blocking_for<T>(
    what: &str,
    timeout: Duration,
    f: impl std::future::Future<Output = std::result::Result<T, String>>,
) -> Result<T> {
    let r = crate::notify::block_on(async { tokio::time::timeout(timeout, f).await });
    match r {
        Err(_) => Err(Error::Timeout {
            what: what.to_string(),
            after: timeout,
        }),
        Ok(Err(e)) if e.contains("docker socket") || e.starts_with("docker: ") => {
            Err(Error::Unreachable(format!("{what}: {e}")))
        }
        Ok(Err(e)) => Err(Error::Command {
            program: "docker".into(),
            message: format!("{what}: {e}"),
        }),
        Ok(Ok(v)) => Ok(v),
    }
}

fn check_name(kind: &str, name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::Usage(format!("invalid {kind} name {name:?}")))
    }
}

/// `docker inspect CONTAINER`: None when it does not exist.
pub fn inspect_container(name: &str) -> Result<Option<Value>> {
    check_name("container", name)?;
    blocking(
        &format!("inspect container {name}"),
        inspect("container", name),
    )
}

/// `docker volume inspect VOLUME`: None when it does not exist.
pub fn inspect_volume(name: &str) -> Result<Option<Value>> {
    check_name("volume", name)?;
    blocking(&format!("inspect volume {name}"), inspect("volume", name))
}

/// `docker image inspect ID`: None when it does not exist.
pub fn inspect_image(id: &str) -> Result<Option<Value>> {
    if !valid_id(id) {
        return Err(Error::Usage(format!("invalid image id {id:?}")));
    }
    blocking(&format!("inspect image {id}"), inspect("image", id))
}

/// Blocking [`list_containers`].
pub fn containers(filters: &Value) -> Result<Vec<Value>> {
    blocking("list containers", list_containers(filters))
}

/// What can be done to a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Stop,
    Start,
    Pause,
    Unpause,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
        }
    }
}

/// `POST /containers/NAME/<action>` or `docker <action> -- NAME`. Stopping
/// a stopped container or starting a running one is not an error.
pub fn act(name: &str, action: Action) -> Result<()> {
    check_name("container", name)?;
    let what = format!("{} container {name}", action.as_str());
    blocking(&what, async {
        match socket() {
            Some(sock) => {
                let (status, body) = request(
                    &sock,
                    "POST",
                    &format!("/containers/{name}/{}", action.as_str()),
                    None,
                )
                .await?;
                match status {
                    200..=299 | 304 => Ok(()),
                    s => Err(format!("HTTP {s}: {}", engine_message(&body))),
                }
            }
            None => cli(&what, &[action.as_str(), "--", name]).await.map(drop),
        }
    })
}

/// `POST /volumes/create` or `docker volume create --label k=v -- NAME`.
pub fn create_volume(
    name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    check_name("volume", name)?;
    let what = format!("create volume {name}");
    blocking(&what, async {
        match socket() {
            Some(sock) => {
                let body = serde_json::json!({ "Name": name, "Labels": labels });
                let (status, body) = request(&sock, "POST", "/volumes/create", Some(&body)).await?;
                match status {
                    200..=299 => Ok(()),
                    s => Err(format!("HTTP {s}: {}", engine_message(&body))),
                }
            }
            None => {
                let mut args = vec!["volume".to_string(), "create".to_string()];
                for (k, v) in labels {
                    args.push("--label".into());
                    args.push(format!("{k}={v}"));
                }
                args.push("--".into());
                args.push(name.to_string());
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                cli(&what, &refs).await.map(drop)
            }
        }
    })
}

/// `docker exec CONTAINER ARGV...` (argv, never a shell string; stdin
/// closed), through [`crate::proc::run`]: stdout and stderr keep their
/// first `max_bytes` bytes each, and after `timeout_seconds` the `docker
/// exec` client is killed (`timed_out`). The engine has no kill for an
/// exec, so a process in the container may outlive a timeout.
pub fn exec(
    container: &str,
    argv: &[String],
    timeout_seconds: u64,
    max_bytes: usize,
) -> Result<crate::proc::RunInfo> {
    check_name("container", container)?;
    if argv.is_empty() {
        return Err(Error::Usage("docker::exec: empty argv".into()));
    }
    let mut full = vec!["docker".to_string(), "exec".into(), container.to_string()];
    full.extend(argv.iter().cloned());
    crate::proc::run(
        &full,
        &crate::proc::RunOptions {
            timeout_seconds: timeout_seconds.max(1),
            max_output: max_bytes,
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_are_checked_before_they_reach_a_path_or_argv() {
        assert!(valid_name("web_db-1.x"));
        for bad in ["", "-rm", "../x", "a/b", "a b", ".x"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_id("sha256:0123abcd"));
        assert!(!valid_id("sha256:"));
        assert!(!valid_id("../x"));
    }

    #[test]
    fn a_row_name_is_read_from_the_api_and_from_docker_ps() {
        assert_eq!(row_name(&serde_json::json!({"Names": ["/web"]})), "web");
        assert_eq!(row_name(&serde_json::json!({"Names": "web"})), "web");
    }
}
