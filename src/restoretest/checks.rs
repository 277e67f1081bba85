//! The checks of a restore test, run against the copy; on a Docker copy
//! (whose services may still be starting) retried until they all pass or
//! the time allowed runs out (`rto_target_minutes`, or less when the run's
//! deadline is nearer).
//!
//! - The restored files against the manifest: always, first.
//! - `http` / `tcp` on a Docker copy: the URL's (or `host`'s) name must be
//!   one of the copy's (a Compose service or a container name), or
//!   `localhost`; it is replaced by that container's address on the copy's
//!   network and the check runs on a thread inside the network namespace of
//!   one of the copy's containers (`setns`), so it sees the copy as its
//!   containers see each other and can reach nothing else.
//! - `container` names the live container: the copy's container is checked.
//!   `compose`: every container of the copy runs.
//! - `command` / `database` (argv only): in a Docker copy, run inside the
//!   first container of the copy (`docker exec`); for an archive, on this
//!   host with `RESTORE_PATH` set to the restored tree (also its working
//!   directory) and `{restore_path}` in an argument replaced by it.
//! - `custom`: the script on this host, with `RESTORE_PATH`,
//!   `RESTORE_NETWORK` and `RESTORE_CONTAINERS` (comma-separated) set.

use super::{now_ms, Environment, KIND_DOCKER};
use crate::config::{CommandSpec, Config, HealthCheckConfig, HealthCheckType, ServiceConfig};
use crate::monitor::checks::{CheckResult, CheckSpec};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// One check's result as `--json` and the `restore_tests` row show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckOutcome {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The checks' last results and when they all passed (unix ms).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Checked {
    pub checks: Vec<CheckOutcome>,
    pub passed_at_ms: Option<i64>,
}

/// The checks a service's copy gets: `restore_testing.health_checks`;
/// without any, a Docker copy gets "every container runs".
fn configured(svc: &ServiceConfig, env: &Environment) -> Vec<HealthCheckConfig> {
    let mut v: Vec<HealthCheckConfig> = svc
        .restore_testing
        .as_ref()
        .map(|r| r.health_checks.clone())
        .unwrap_or_default();
    if v.is_empty() && env.kind == KIND_DOCKER {
        v.push(HealthCheckConfig {
            check_type: HealthCheckType::Compose,
            name: Some("containers running".into()),
            ..Default::default()
        });
    }
    v
}

fn manifest_check(env: &Environment) -> CheckOutcome {
    match &env.compared {
        None => CheckOutcome {
            name: "files match the manifest".into(),
            ok: false,
            detail: "not compared".into(),
        },
        Some(c) => CheckOutcome {
            name: "files match the manifest".into(),
            ok: c.mismatches.is_empty(),
            detail: if c.mismatches.is_empty() {
                if c.by == "size" {
                    format!(
                        "{} bytes, as the manifest says (no per-file entries)",
                        c.bytes
                    )
                } else {
                    format!("{} file(s), sizes, modes and sha256 as recorded", c.files)
                }
            } else {
                let shown: Vec<&str> = c.mismatches.iter().take(5).map(String::as_str).collect();
                format!(
                    "{} mismatch(es): {}{}",
                    c.mismatches.len(),
                    shown.join("; "),
                    if c.mismatches.len() > 5 { "; ..." } else { "" }
                )
            },
        },
    }
}

/// Run the copy's checks until all pass or `allowed` has passed since the
/// restore started.
pub fn run_checks(
    cfg: &Config,
    svc: &ServiceConfig,
    env: &Environment,
    allowed: Duration,
    cancel: &dyn Fn() -> bool,
) -> Checked {
    let files = manifest_check(env);
    let checks = configured(svc, env);
    let default_timeout = cfg.monitoring.timeout_seconds.max(1);
    let started = Instant::now()
        .checked_sub(Duration::from_millis(
            (now_ms() - env.started_ms).max(0) as u64
        ))
        .unwrap_or_else(Instant::now);
    let deadline = started + allowed;
    let mut last: Vec<Option<CheckOutcome>> = vec![None; checks.len()];
    loop {
        for (i, c) in checks.iter().enumerate() {
            if last[i].as_ref().is_some_and(|o| o.ok) {
                continue;
            }
            let timeout = Duration::from_secs(c.timeout_seconds.unwrap_or(default_timeout));
            last[i] = Some(one(c, env, timeout));
        }
        let all = last.iter().all(|o| o.as_ref().is_some_and(|o| o.ok));
        // An archive's copy is files: what fails now fails later too. A
        // Docker copy's services may still be starting.
        let retry = env.kind == KIND_DOCKER;
        if all || !retry || Instant::now() >= deadline || cancel() || !files.ok {
            let passed_at_ms = (all && files.ok).then(now_ms);
            let mut out = vec![files];
            out.extend(last.into_iter().flatten());
            return Checked {
                checks: out,
                passed_at_ms,
            };
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn outcome(name: String, r: CheckResult) -> CheckOutcome {
    CheckOutcome {
        name,
        ok: r.ok,
        detail: r.message,
    }
}

fn fail(name: String, detail: impl Into<String>) -> CheckOutcome {
    CheckOutcome {
        name,
        ok: false,
        detail: detail.into(),
    }
}

fn spec(env: &Environment, name: &str, check: HealthCheckConfig, timeout: Duration) -> CheckSpec {
    CheckSpec {
        id: format!("{}/{name}", env.service),
        service: env.service.clone(),
        name: name.to_string(),
        kind: check.check_type.as_str().into(),
        check,
        timeout,
    }
}

/// Run one check against the copy.
fn one(c: &HealthCheckConfig, env: &Environment, timeout: Duration) -> CheckOutcome {
    let name = crate::monitor::check_name(c);
    let docker = env.kind == KIND_DOCKER;
    match c.check_type {
        HealthCheckType::Http | HealthCheckType::Tcp if docker => {
            in_copy(c, env, &name, timeout, None)
        }
        HealthCheckType::Container if docker => {
            let want = c.container.as_deref().unwrap_or("");
            match env.containers.iter().find(|r| {
                r.original == want || r.name == want || r.aliases.iter().any(|a| a == want)
            }) {
                Some(r) => {
                    let mut cc = c.clone();
                    cc.container = Some(r.name.clone());
                    outcome(
                        name.clone(),
                        crate::monitor::checks::run_here(&spec(env, &name, cc, timeout)),
                    )
                }
                None => fail(name, format!("{want} is not a container of the copy")),
            }
        }
        HealthCheckType::Compose if docker => {
            let mut bad = Vec::new();
            for r in &env.containers {
                let cc = HealthCheckConfig {
                    check_type: HealthCheckType::Container,
                    container: Some(r.name.clone()),
                    ..Default::default()
                };
                let res = crate::monitor::checks::run_here(&spec(env, &name, cc, timeout));
                if !res.ok {
                    bad.push(res.message);
                }
            }
            if env.containers.is_empty() {
                fail(name, "the copy has no containers")
            } else if bad.is_empty() {
                CheckOutcome {
                    name,
                    ok: true,
                    detail: format!("{} container(s) of the copy running", env.containers.len()),
                }
            } else {
                fail(name, bad.join("; "))
            }
        }
        HealthCheckType::Command | HealthCheckType::Database => match &c.command {
            Some(CommandSpec::Argv(argv)) if !argv.is_empty() => {
                command(argv, env, &name, timeout, env.kind == KIND_DOCKER)
            }
            Some(CommandSpec::Shell(_)) => fail(
                name,
                "restore-test checks take an argv list, not a shell string",
            ),
            _ => fail(name, "no command"),
        },
        HealthCheckType::Custom => match &c.script {
            Some(p) => command(&[p.display().to_string()], env, &name, timeout, false),
            None => fail(name, "no script"),
        },
        _ => outcome(
            name.clone(),
            crate::monitor::checks::run_here(&spec(env, &name, c.clone(), timeout)),
        ),
    }
}

/// The environment a command check gets.
fn check_env(env: &Environment) -> std::collections::BTreeMap<String, String> {
    let mut m = std::collections::BTreeMap::new();
    m.insert("RESTORE_PATH".into(), env.restored.display().to_string());
    if let Some(n) = &env.network {
        m.insert("RESTORE_NETWORK".into(), n.clone());
    }
    let names: Vec<&str> = env.containers.iter().map(|c| c.name.as_str()).collect();
    m.insert("RESTORE_CONTAINERS".into(), names.join(","));
    m
}

/// A command check: inside the copy's first container (`in_container`),
/// else on this host.
fn command(
    argv: &[String],
    env: &Environment,
    name: &str,
    timeout: Duration,
    in_container: bool,
) -> CheckOutcome {
    let restored = env.restored.display().to_string();
    let argv: Vec<String> = argv
        .iter()
        .map(|a| a.replace("{restore_path}", &restored))
        .collect();
    let r = if in_container {
        let Some(first) = env.containers.first() else {
            return fail(name.into(), "the copy has no containers");
        };
        crate::docker::engine::exec(&first.name, &argv, timeout.as_secs(), 4096)
    } else {
        crate::proc::run(
            &argv,
            &crate::proc::RunOptions {
                timeout_seconds: timeout.as_secs().max(1),
                env: check_env(env),
                cwd: Some(env.restored.clone()),
                max_output: 4096,
                ..Default::default()
            },
        )
    };
    match r {
        Ok(out) if out.code == 0 => CheckOutcome {
            name: name.into(),
            ok: true,
            detail: format!("{} exited 0", argv[0]),
        },
        Ok(out) if out.timed_out => fail(name.into(), format!("{} timed out", argv[0])),
        Ok(out) => {
            let err: String = out.stderr.trim().chars().take(200).collect();
            fail(
                name.into(),
                format!("{} exited {}: {err}", argv[0], out.code),
            )
        }
        Err(e) => fail(name.into(), e.to_string()),
    }
}

/// An HTTP or TCP check run inside the copy's network: from the target
/// container's network namespace, or from container `from`'s (a drill's
/// check that one copy reaches another on the drill's shared network).
fn in_copy(
    c: &HealthCheckConfig,
    env: &Environment,
    name: &str,
    timeout: Duration,
    from: Option<&str>,
) -> CheckOutcome {
    let host = match c.check_type {
        HealthCheckType::Http => {
            let Some(u) = c.url.as_deref().and_then(|u| url::Url::parse(u).ok()) else {
                return fail(name.into(), "invalid url");
            };
            u.host_str().unwrap_or("").to_string()
        }
        _ => c.host.clone().unwrap_or_default(),
    };
    let local = matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]");
    let target = if local {
        env.containers.first()
    } else {
        env.containers
            .iter()
            .find(|r| r.aliases.iter().any(|a| a == &host) || r.name == host)
    };
    let Some(target) = target else {
        let known: Vec<&str> = env
            .containers
            .iter()
            .flat_map(|r| r.aliases.iter().map(String::as_str))
            .collect();
        return fail(
            name.into(),
            format!(
                "{host} is not a service of the restored copy (its names: {}); a restore test \
                 never checks the live service",
                known.join(", ")
            ),
        );
    };
    let network = env.network.clone().unwrap_or_default();
    let (pid, ip) = match crate::docker::isolate::pid_and_ip(&target.name, &network) {
        Ok(v) => v,
        Err(e) => return fail(name.into(), e.to_string()),
    };
    if pid == 0 {
        return fail(name.into(), format!("{} is not running", target.name));
    }
    let pid = match from {
        None => pid,
        Some(f) => match crate::docker::isolate::pid_and_ip(f, &network) {
            Ok((p, _)) if p != 0 => p,
            Ok(_) => return fail(name.into(), format!("{f} is not running")),
            Err(e) => return fail(name.into(), e.to_string()),
        },
    };
    let addr = if local {
        "127.0.0.1".to_string()
    } else {
        match ip {
            Some(ip) => ip,
            None => {
                return fail(
                    name.into(),
                    format!("{} has no address on {network}", target.name),
                )
            }
        }
    };
    let mut cc = c.clone();
    match c.check_type {
        HealthCheckType::Http => {
            let mut u = url::Url::parse(c.url.as_deref().unwrap_or("")).expect("parsed above");
            let port = u.port();
            if u.set_host(Some(&addr)).is_err() {
                return fail(name.into(), "cannot address the copy");
            }
            let host_header = match port {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            if !cc.headers.keys().any(|k| k.eq_ignore_ascii_case("host")) {
                cc.headers.insert("Host".into(), host_header);
            }
            cc.url = Some(u.to_string());
        }
        _ => cc.host = Some(addr),
    }
    let s = spec(env, name, cc, timeout);
    let n = name.to_string();
    let joined = std::thread::Builder::new()
        .name("restore-check".into())
        .spawn(move || -> Result<CheckResult, String> {
            enter_netns(pid)?;
            Ok(crate::monitor::checks::run_here(&s))
        })
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|_| "the check panicked".to_string()));
    match joined {
        Ok(Ok(r)) => outcome(n, r),
        Ok(Err(e)) | Err(e) => fail(n, e),
    }
}

/// Move this thread into the network namespace of process `pid`.
fn enter_netns(pid: u32) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let path = format!("/proc/{pid}/ns/net");
    let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    // SAFETY: setns with a valid namespace fd; CLONE_NEWNET changes only
    // the calling thread's network namespace, and this thread ends after
    // the check.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "entering the copy's network ({path}): {} (restore tests of Docker services run as \
             root)",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A drill's dependency checks: that the copy `from` reaches the copies of
/// what it depends on (`deps`). `http` / `tcp` name a dependency's service
/// as the containers see each other (`http://db:8080/`) and run from the
/// network namespace of `from`'s first container, on the drill's shared
/// network; `command` checks run as the copy's own checks do, with
/// `{restore_path:NAME}` replaced by dependency NAME's restored tree. From
/// a guest copy: [`super::guest::run_dependency_checks`].
/// Retried like [`run_checks`] while a Docker copy may still be starting.
pub fn run_dependency_checks(
    cfg: &Config,
    checks: &[HealthCheckConfig],
    from: &Environment,
    deps: &[&Environment],
    allowed: Duration,
    cancel: &dyn Fn() -> bool,
) -> Vec<CheckOutcome> {
    if from.kind == super::KIND_GUEST {
        return super::guest::run_dependency_checks(cfg, checks, from, deps, allowed, cancel);
    }
    let default_timeout = cfg.monitoring.timeout_seconds.max(1);
    let deadline = Instant::now() + allowed;
    let mut targets = from.clone();
    targets.containers = deps.iter().flat_map(|d| d.containers.clone()).collect();
    let mut last: Vec<Option<CheckOutcome>> = vec![None; checks.len()];
    loop {
        for (i, c) in checks.iter().enumerate() {
            if last[i].as_ref().is_some_and(|o| o.ok) {
                continue;
            }
            let timeout = Duration::from_secs(c.timeout_seconds.unwrap_or(default_timeout));
            let name = crate::monitor::check_name(c);
            let docker = from.kind == KIND_DOCKER;
            last[i] = Some(match c.check_type {
                HealthCheckType::Http | HealthCheckType::Tcp if docker => {
                    match from.containers.first() {
                        Some(src) => in_copy(c, &targets, &name, timeout, Some(&src.name)),
                        None => fail(name, "the copy has no containers"),
                    }
                }
                HealthCheckType::Http | HealthCheckType::Tcp => fail(
                    name,
                    "http and tcp dependency checks run from a Docker copy; an archive's copy \
                     takes command checks",
                ),
                _ => {
                    let mut cc = c.clone();
                    if let Some(CommandSpec::Argv(argv)) = &mut cc.command {
                        for a in argv.iter_mut() {
                            for d in deps {
                                let key = format!("{{restore_path:{}}}", d.service);
                                *a = a.replace(&key, &d.restored.display().to_string());
                            }
                        }
                    }
                    one(&cc, from, timeout)
                }
            });
        }
        let all = last.iter().all(|o| o.as_ref().is_some_and(|o| o.ok));
        if all || from.kind != KIND_DOCKER || Instant::now() >= deadline || cancel() {
            return last.into_iter().flatten().collect();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
