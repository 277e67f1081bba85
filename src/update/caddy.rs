//! `type: caddy` updates: a new config for a running Caddy, loaded through
//! its admin API (docs/updates.md, "caddy").
//!
//! The admin edits `config_file` (or a command of theirs does); a run
//! adapts it (`caddy adapt`, as `caddy reload` does) and compares the JSON
//! with what Caddy runs (`GET /config/`). When they differ, the file must
//! pass `caddy validate` before anything changes (else the service ends
//! `aborted`). Inside the transaction the config Caddy runs is saved to the
//! state directory, then the new one is loaded (`POST /load`). The
//! rollback loads the saved config again and puts back the last good copy
//! of the file, byte for byte, when one is known: the copy kept (in the
//! state directory) by the last run that found the file in effect.
//!
//! Config contents (which may hold credentials) are kept in files of the
//! state directory, mode 0600, never in the state DB: the record holds
//! only their paths.

use crate::config::{caddy_admin, CaddyAdmin, ServiceConfig, CADDY_ADMIN_DEFAULT};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The transaction's record: the config file, the admin API, and where
/// the running config and the last good config file are saved inside the
/// transaction (state directory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub config_file: String,
    pub admin_url: String,
    /// The config file's sha256 when recorded.
    pub config_sha256: String,
    pub saved_running: String,
    pub saved_file: String,
    /// The last good copy of the config file, kept across runs.
    pub good_file: String,
}

/// The largest admin API answer read (a config).
const ANSWER_MAX: u64 = 64 << 20;
/// How long `caddy adapt` / `caddy validate` and a request may take.
const CADDY_TIMEOUT: u64 = 120;

fn err(message: impl Into<String>) -> Error {
    Error::Command {
        program: "caddy".into(),
        message: message.into(),
    }
}

/// The service's admin API address.
fn admin_of(url: &str) -> Result<CaddyAdmin> {
    caddy_admin(url).map_err(|e| Error::Usage(format!("admin_url {e}")))
}

fn admin_url(svc: &ServiceConfig) -> String {
    svc.admin_url
        .clone()
        .unwrap_or_else(|| CADDY_ADMIN_DEFAULT.to_string())
}

/// Send the request's head and body, and read the answer (HTTP/1.0: to
/// the end of the stream), at most [`ANSWER_MAX`] bytes of it.
fn exchange(mut s: impl Read + Write, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.take(ANSWER_MAX).read_to_end(&mut answer)?;
    Ok(answer)
}

/// One HTTP/1.0 request to the admin API: (status, body).
fn request(admin: &CaddyAdmin, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>)> {
    let timeout = Some(Duration::from_secs(CADDY_TIMEOUT));
    let where_ = match admin {
        CaddyAdmin::Tcp { host, port } => format!("{host}:{port}"),
        CaddyAdmin::Unix(p) => p.display().to_string(),
    };
    let fail = |e: std::io::Error| err(format!("admin API at {where_}: {e}"));
    // The Host header Caddy's admin endpoint accepts: the address it
    // listens on, and for a socket an empty one.
    let host = match admin {
        CaddyAdmin::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
        CaddyAdmin::Tcp { host, port } => format!("{host}:{port}"),
        CaddyAdmin::Unix(_) => String::new(),
    };
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\n");
    if method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    let answer = match admin {
        CaddyAdmin::Tcp { host, port } => {
            let addrs =
                std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), *port)).map_err(fail)?;
            let mut last = None;
            let mut stream = None;
            for a in addrs.filter(|a| a.ip().is_loopback()) {
                match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let s = stream.ok_or_else(|| {
                fail(last.unwrap_or_else(|| {
                    std::io::Error::other("the name resolves to no loopback address")
                }))
            })?;
            s.set_read_timeout(timeout).map_err(fail)?;
            s.set_write_timeout(timeout).map_err(fail)?;
            exchange(s, &head, body).map_err(fail)?
        }
        CaddyAdmin::Unix(p) => {
            let s = std::os::unix::net::UnixStream::connect(p).map_err(fail)?;
            s.set_read_timeout(timeout).map_err(fail)?;
            s.set_write_timeout(timeout).map_err(fail)?;
            exchange(s, &head, body).map_err(fail)?
        }
    };
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| err(format!("admin API at {where_}: malformed answer")))?;
    let status = String::from_utf8_lossy(&answer[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| err(format!("admin API at {where_}: malformed status line")))?;
    Ok((status, answer[split + 4..].to_vec()))
}

/// Caddy's error message in an answer (`{"error": ...}`), kept short.
fn message(body: &[u8]) -> String {
    let m = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    m.chars().take(600).collect()
}

/// The config Caddy runs (`GET /config/`), as it answered it.
fn running_raw(admin: &CaddyAdmin) -> Result<Vec<u8>> {
    let (status, body) = request(admin, "GET", "/config/", b"")?;
    if status != 200 {
        return Err(err(format!(
            "GET /config/ answered HTTP {status}: {}",
            message(&body)
        )));
    }
    serde_json::from_slice::<Value>(&body)
        .map_err(|e| err(format!("GET /config/ answered no JSON: {e}")))?;
    Ok(body)
}

fn parse(raw: &[u8]) -> Result<Value> {
    serde_json::from_slice(raw).map_err(|e| err(format!("config is not JSON: {e}")))
}

/// Load `config` (JSON) through `POST /load`: Caddy applies it whole or
/// keeps the old one.
fn load(admin: &CaddyAdmin, config: &[u8]) -> Result<()> {
    let (status, body) = request(admin, "POST", "/load", config)?;
    if status != 200 {
        return Err(err(format!(
            "POST /load answered HTTP {status}: {}",
            message(&body)
        )));
    }
    Ok(())
}

/// Whether Caddy's admin API answers: `Err(why)` when it does not.
pub fn admin_answers(svc: &ServiceConfig) -> std::result::Result<(), String> {
    let admin = admin_of(&admin_url(svc)).map_err(|e| e.to_string())?;
    running_raw(&admin)
        .map(drop)
        .map_err(|e| format!("caddy admin API: {e}"))
}

/// A Caddyfile unless the name ends in `.json` (as `caddy run` decides).
fn is_json(file: &Path) -> bool {
    file.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// `caddy SUB --config FILE [--adapter caddyfile]`, in the file's directory.
fn caddy(sub: &str, file: &Path) -> Result<crate::proc::RunInfo> {
    let mut argv: Vec<String> = vec![
        "caddy".into(),
        sub.into(),
        "--config".into(),
        file.display().to_string(),
    ];
    if !is_json(file) {
        argv.extend(["--adapter".into(), "caddyfile".into()]);
    }
    let out = crate::proc::run(
        &argv,
        &crate::proc::RunOptions {
            timeout_seconds: CADDY_TIMEOUT,
            max_output: 32 << 20,
            cwd: file.parent().map(Path::to_path_buf),
            read_only: true,
            ..Default::default()
        },
    )?;
    if out.code != 0 || out.timed_out {
        let text = out.stderr.trim();
        let tail: String = text
            .chars()
            .skip(text.chars().count().saturating_sub(600))
            .collect();
        return Err(err(format!(
            "caddy {sub} {}: {}: {tail}",
            file.display(),
            if out.timed_out {
                format!("timed out after {CADDY_TIMEOUT} s")
            } else {
                format!("exit {}", out.code)
            },
        )));
    }
    Ok(out)
}

/// The file's config as Caddy would run it (JSON).
fn adapted(file: &Path) -> Result<Vec<u8>> {
    let raw = if is_json(file) {
        std::fs::read(file).map_err(|e| Error::io(file, e))?
    } else {
        caddy("adapt", file)?.stdout.into_bytes()
    };
    parse(&raw)?;
    Ok(raw)
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// The hash of a config's meaning (its JSON, keys in one order), so
/// whitespace and key order do not count.
fn config_hash(raw: &[u8]) -> Result<String> {
    Ok(sha256(
        &serde_json::to_vec(&parse(raw)?).unwrap_or_default(),
    ))
}

/// This service's directory in the state directory (mode 0700).
fn dir_of(state_dir: &Path, svc: &ServiceConfig) -> PathBuf {
    state_dir.join("caddy").join(&svc.name)
}

fn good_of(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("good"), dir.join("good.config-sha256"))
}

fn create_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))
}

/// Keep `file_bytes` as the last good copy of the file, matching the
/// config whose hash is `config_hash` (the bytes first, then the hash: a
/// crash between the two leaves a copy that matches nothing, never a
/// wrong match).
fn keep_good(dir: &Path, file_bytes: &[u8], config_hash: &str) -> Result<()> {
    create_dir(dir)?;
    let (good, hash) = good_of(dir);
    if std::fs::read(&good).ok().as_deref() == Some(file_bytes)
        && std::fs::read_to_string(&hash).ok().as_deref() == Some(config_hash)
    {
        return Ok(());
    }
    let _ = std::fs::remove_file(&hash);
    crate::files::write_atomic(&good, file_bytes, 0o600)?;
    crate::files::write_atomic(&hash, config_hash.as_bytes(), 0o600)
}

/// Record the transaction: where the running config and the last good
/// file will be saved (they are written by [`apply`], inside the
/// transaction; a dry run writes nothing).
pub fn snapshot(svc: &ServiceConfig, state_dir: &Path) -> Result<Record> {
    let file = svc
        .config_file
        .clone()
        .ok_or_else(|| Error::Usage(format!("{}: no config_file", svc.name)))?;
    let url = admin_url(svc);
    running_raw(&admin_of(&url)?)?;
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    let dir = dir_of(state_dir, svc);
    let stamp = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        std::process::id()
    );
    let (good, _) = good_of(&dir);
    Ok(Record {
        config_file: file.display().to_string(),
        admin_url: url,
        config_sha256: sha256(&bytes),
        saved_running: dir
            .join(format!("{stamp}.running.json"))
            .display()
            .to_string(),
        saved_file: dir.join(format!("{stamp}.file")).display().to_string(),
        good_file: good.display().to_string(),
    })
}

/// Whether the file's config differs from what Caddy runs; a differing
/// one must pass `caddy validate` (an error otherwise: nothing changed).
/// In a real run (`keep`), a file found in effect is kept as the last
/// good copy. With an `update.command` (`command`), which makes the new
/// config inside the transaction, there is always something to do.
pub fn check(rec: &Record, keep: bool, command: bool) -> Result<bool> {
    let Record {
        config_file,
        admin_url,
        good_file,
        ..
    } = rec;
    let file = Path::new(config_file);
    let running = running_raw(&admin_of(admin_url)?)?;
    let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
    let new = adapted(file);
    if command {
        // The file as it is may be broken; the command may mend it.
        let in_effect = new
            .as_deref()
            .is_ok_and(|n| parse(n).ok() == parse(&running).ok());
        if keep && in_effect {
            let dir = Path::new(good_file).parent().unwrap_or(Path::new("."));
            keep_good(dir, &bytes, &config_hash(&running)?)?;
        }
        return Ok(true);
    }
    let new = new?;
    if parse(&new)? == parse(&running)? {
        if keep {
            let dir = Path::new(good_file).parent().unwrap_or(Path::new("."));
            keep_good(dir, &bytes, &config_hash(&running)?)?;
        }
        return Ok(false);
    }
    caddy("validate", file)?;
    Ok(true)
}

/// Save what runs (and the last good file when it matches what runs),
/// run the admin's `command` when there is one (it makes the new config;
/// which must then pass `caddy validate`), then load the file's config.
pub fn apply(rec: &Record, command: &[String]) -> Result<()> {
    let Record {
        config_file,
        admin_url,
        saved_running,
        saved_file,
        good_file,
        ..
    } = rec;
    let admin = admin_of(admin_url)?;
    let running = running_raw(&admin)?;
    let saved_running = Path::new(saved_running);
    create_dir(saved_running.parent().unwrap_or(Path::new(".")))?;
    crate::files::write_atomic(saved_running, &running, 0o600)?;
    let good = Path::new(good_file);
    let hash = good_of(good.parent().unwrap_or(Path::new("."))).1;
    if std::fs::read_to_string(&hash).ok() == Some(config_hash(&running)?) {
        if let Ok(bytes) = std::fs::read(good) {
            crate::files::write_atomic(Path::new(saved_file), &bytes, 0o600)?;
        }
    }
    let file = Path::new(config_file);
    if !command.is_empty() {
        super::run_argv("update.command", command, super::COMMAND_TIMEOUT)?;
        caddy("validate", file)?;
    }
    let new = adapted(file)?;
    load(&admin, &new)
}

/// Run the admin's `rollback_command` when there is one (it undoes what
/// `update.command` did besides the file: a checkout, say), put the file
/// back (when a good copy was saved) and load the saved config again
/// (when it was saved: before that nothing was loaded).
pub fn rollback(rec: &Record, rollback_command: &[String]) -> Result<Vec<String>> {
    let Record {
        config_file,
        admin_url,
        saved_running,
        saved_file,
        ..
    } = rec;
    let mut notes = Vec::new();
    if !rollback_command.is_empty() {
        super::run_argv(
            "update.rollback_command",
            rollback_command,
            super::COMMAND_TIMEOUT,
        )?;
        notes.push("update.rollback_command succeeded".into());
    }
    match std::fs::read(saved_file) {
        Ok(bytes) => {
            // Through a symlink to the file it names (a checkout, say).
            let target = std::fs::canonicalize(config_file)
                .unwrap_or_else(|_| PathBuf::from(config_file));
            if std::fs::read(&target).ok().as_deref() == Some(bytes.as_slice()) {
                notes.push(format!("{config_file} holds the last good config"));
            } else {
                restore_file(&target, &bytes)?;
                notes.push(format!(
                    "{config_file} is the last good config again, byte for byte"
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => notes.push(format!(
            "no good copy of {config_file} was known (no earlier run found it in effect): the file keeps its new content"
        )),
        Err(e) => return Err(Error::io(Path::new(saved_file), e)),
    }
    match std::fs::read(saved_running) {
        Ok(running) => {
            load(&admin_of(admin_url)?, &running)?;
            notes.push("Caddy runs the previous config again".into());
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            notes.push("Caddy's config had not been changed".into())
        }
        Err(e) => return Err(Error::io(Path::new(saved_running), e)),
    }
    Ok(notes)
}

/// Write `bytes` over `path` atomically with its mode and owner.
fn restore_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok();
    let mode = meta.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0o644);
    crate::files::write_atomic(path, bytes, mode)?;
    if let Some(m) = meta {
        let _ = std::os::unix::fs::chown(path, Some(m.uid()), Some(m.gid()));
        let _ = std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode));
    }
    Ok(())
}

/// After a proven update: the file becomes the last good copy (when
/// Caddy runs its config), and this service's saved configs go.
pub fn cleanup(rec: &Record) -> Vec<String> {
    let Record {
        config_file,
        admin_url,
        good_file,
        ..
    } = rec;
    let mut notes = Vec::new();
    let dir = Path::new(good_file).parent().unwrap_or(Path::new("."));
    let kept = (|| -> Result<bool> {
        let running = running_raw(&admin_of(admin_url)?)?;
        let file = Path::new(config_file);
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        if parse(&adapted(file)?)? != parse(&running)? {
            return Ok(false);
        }
        keep_good(dir, &bytes, &config_hash(&running)?)?;
        Ok(true)
    })();
    match kept {
        Ok(true) => notes.push(format!("{config_file} is kept as the last good config")),
        Ok(false) => notes.push(format!(
            "{config_file} changed again since it was loaded: no good copy taken"
        )),
        Err(e) => notes.push(format!("no good copy of {config_file} taken: {e}")),
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".running.json") || name.ends_with(".file") {
            if let Err(e) = std::fs::remove_file(e.path()) {
                notes.push(format!("{name} not removed: {e}"));
            }
        }
    }
    notes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_as_a_before() {
        let rec = Record {
            config_file: "/etc/caddy/Caddyfile".into(),
            admin_url: "http://localhost:2019".into(),
            config_sha256: "ab".into(),
            saved_running: "/s/caddy/web/1.running.json".into(),
            saved_file: "/s/caddy/web/1.file".into(),
            good_file: "/s/caddy/web/good".into(),
        };
        let b = super::super::Before::Caddy(rec);
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["kind"], "caddy");
        assert_eq!(v["saved_file"], "/s/caddy/web/1.file");
        assert_eq!(
            serde_json::from_value::<super::super::Before>(v).unwrap(),
            b
        );
    }

    #[test]
    fn configs_compare_by_meaning() {
        let a = br#"{"apps": {"http": {"servers": {}}}, "admin": {"listen": ":1"}}"#;
        let b = br#"{"admin":{"listen":":1"},"apps":{"http":{"servers":{}}}}"#;
        assert_eq!(config_hash(a).unwrap(), config_hash(b).unwrap());
        assert_ne!(
            config_hash(a).unwrap(),
            config_hash(br#"{"admin":{"listen":":2"}}"#).unwrap()
        );
    }
}
