//! Is an updated service healthy? Its monitor checks (the same
//! `health_checks`, plus the implicit container / Compose check, run by
//! the monitor's code) must all pass within the timeout, and then keep
//! passing for the soak time; every container must run and, when its
//! image has a HEALTHCHECK, be `healthy` (not just `starting`); a Proxmox
//! guest must be `running`; Caddy's admin API must answer; and
//! `update.validate_command`, when set, must exit 0.

use crate::config::{Config, ServiceConfig, ServiceType};
use crate::monitor::checks::{run_all, CheckResult};
use serde::Serialize;
use std::time::{Duration, Instant};

/// How long to wait and soak.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub timeout: Duration,
    pub soak: Duration,
    /// Between two rounds of checks.
    pub interval: Duration,
}

/// The verdict, with the last round of checks.
#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub ok: bool,
    pub message: String,
    pub checks: Vec<CheckResult>,
    /// Until every check first passed.
    pub waited_ms: u64,
    pub soaked_ms: u64,
    pub rounds: u32,
}

/// Every container of the service runs and is healthy (or has no
/// HEALTHCHECK): an error naming the first that is not.
fn containers_ready(svc: &ServiceConfig) -> Result<(), String> {
    let names: Vec<String> = match svc.service_type {
        ServiceType::Docker => svc.container.iter().cloned().collect(),
        t if t.is_compose() => {
            let Some(p) = crate::monitor::compose_project(svc) else {
                return Ok(());
            };
            crate::docker::compose::project_containers(&p)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|c| c.container)
                .collect()
        }
        _ => return Ok(()),
    };
    if names.is_empty() {
        return Err("no containers".into());
    }
    for n in names {
        let v = crate::docker::engine::inspect_container(&n)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("container {n} is gone"))?;
        let st = &v["State"];
        if st["Running"].as_bool() != Some(true)
            || st["Restarting"].as_bool() == Some(true)
            || st["Paused"].as_bool() == Some(true)
        {
            return Err(format!(
                "container {n} is {}",
                st["Status"].as_str().unwrap_or("not running")
            ));
        }
        if let Some(h) = st["Health"]["Status"].as_str() {
            if h != "healthy" {
                return Err(format!("container {n} is {h}"));
            }
        }
    }
    Ok(())
}

/// One round: the checks' results and the first failure, if any.
fn round(cfg: &Config, svc: &ServiceConfig) -> (Vec<CheckResult>, Option<String>) {
    let specs = crate::monitor::specs_for(cfg, &[svc]);
    let n = specs.len().max(1);
    let results = run_all(specs, n);
    let mut failure = results
        .iter()
        .find(|r| !r.ok)
        .map(|r| format!("{}: {}", r.name, r.message));
    if failure.is_none() {
        failure = containers_ready(svc).err();
    }
    if failure.is_none() && svc.service_type == ServiceType::Caddy {
        failure = super::caddy::admin_answers(svc).err();
    }
    if failure.is_none()
        && matches!(svc.service_type, ServiceType::Vm | ServiceType::Lxc)
        && cfg.global.proxmox.is_some()
    {
        // A guest must run (status/current), whatever its checks say.
        failure = super::guest::running(cfg, svc).err();
    }
    if failure.is_none() {
        if let Some(argv) = svc
            .update
            .as_ref()
            .map(|u| &u.validate_command)
            .filter(|a| !a.is_empty())
        {
            let out = crate::proc::run(
                argv,
                &crate::proc::RunOptions {
                    timeout_seconds: 300,
                    max_output: 16 * 1024,
                    ..Default::default()
                },
            );
            failure = match out {
                Ok(o) if o.code == 0 && !o.timed_out => None,
                Ok(o) => Some(format!(
                    "update.validate_command: exit {}{}",
                    o.code,
                    if o.timed_out { " (timed out)" } else { "" }
                )),
                Err(e) => Some(format!("update.validate_command: {e}")),
            };
        }
    }
    (results, failure)
}

/// Validate `svc` under `opts`; `cancelled` is asked between rounds.
pub fn validate(
    cfg: &Config,
    svc: &ServiceConfig,
    opts: Options,
    cancelled: &dyn Fn() -> bool,
) -> Validation {
    let started = Instant::now();
    let mut rounds = 0;
    let mut passing_since: Option<Instant> = None;
    let mut waited_ms = 0;
    let progress = crate::progress::Progress::spinner(&format!("{}: validating", svc.name));
    loop {
        if progress.is_active() {
            progress.set_message(match passing_since {
                Some(t) => format!("checks passing for {} s (soak)", t.elapsed().as_secs()),
                None => "waiting for the checks to pass".to_string(),
            });
        }
        if cancelled() {
            return Validation {
                ok: false,
                message: "interrupted".into(),
                checks: Vec::new(),
                waited_ms,
                soaked_ms: 0,
                rounds,
            };
        }
        let (checks, failure) = round(cfg, svc);
        rounds += 1;
        let soaked = passing_since.map(|t| t.elapsed()).unwrap_or_default();
        match (failure, passing_since) {
            (Some(f), Some(_)) => {
                return Validation {
                    ok: false,
                    message: format!(
                        "passed, then failed during the soak after {} s: {f}",
                        soaked.as_secs()
                    ),
                    checks,
                    waited_ms,
                    soaked_ms: soaked.as_millis() as u64,
                    rounds,
                }
            }
            (Some(f), None) if started.elapsed() >= opts.timeout => {
                return Validation {
                    ok: false,
                    message: format!("not healthy within {} s: {f}", opts.timeout.as_secs()),
                    checks,
                    waited_ms: started.elapsed().as_millis() as u64,
                    soaked_ms: 0,
                    rounds,
                }
            }
            (Some(_), None) => {}
            (None, None) => {
                waited_ms = started.elapsed().as_millis() as u64;
                passing_since = Some(Instant::now());
                if opts.soak.is_zero() {
                    return pass(checks, waited_ms, 0, rounds);
                }
            }
            (None, Some(_)) if soaked >= opts.soak => {
                return pass(checks, waited_ms, soaked.as_millis() as u64, rounds)
            }
            (None, Some(_)) => {}
        }
        std::thread::sleep(opts.interval);
    }
}

fn pass(checks: Vec<CheckResult>, waited_ms: u64, soaked_ms: u64, rounds: u32) -> Validation {
    Validation {
        ok: true,
        message: format!(
            "{} check(s) passed, then kept passing for {} s",
            checks.len(),
            soaked_ms / 1000
        ),
        checks,
        waited_ms,
        soaked_ms,
        rounds,
    }
}
