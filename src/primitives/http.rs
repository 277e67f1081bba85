//! `http::check(url)` / `http::check(opts)`: one read-only HTTP(S) health
//! check, the same engine `monitor::run_checks` uses. Options are the keys
//! of an `http` health check (`url`, `method`, `expected_status`,
//! `body_contains`, `body_regex`, `max_latency_ms`, `headers`,
//! `follow_redirects`, `tls_expiry_warn_days`, `timeout_seconds`).
//!
//! Every check a script runs (here, `net::`, `sys::`, `docker::`) goes
//! through [`run_one`]: its timeout is cut to the time left before the
//! run's deadline, and a check cut short by it stops the run. A command
//! check's program must be in `global.scripts.allow_commands` (when set).

use super::{from_map, to_dyn, RhaiResult};
use crate::config::HealthCheckConfig;
use crate::monitor::checks::{self, CheckSpec};
use crate::script::Host;
use rhai::{Dynamic, FuncRegistration, Map, Module};
use std::sync::Arc;
use std::time::Duration;

/// Run one check now and return its result map
/// (`#{ok, message, latency_ms, warning, tls_days_left, ...}`).
pub(super) fn run_one(host: &Host, check: HealthCheckConfig) -> RhaiResult<Dynamic> {
    if let (crate::config::HealthCheckType::Command, Some(cmd)) =
        (&check.check_type, &check.command)
    {
        let argv = cmd.argv();
        let program = argv.first().map(String::as_str).unwrap_or_default();
        super::proc::check_command(host, "sys::command", program, false, None)?;
    }
    let name = crate::monitor::check_name(&check);
    let timeout = check
        .timeout_seconds
        .unwrap_or(host.config.monitoring.timeout_seconds)
        .max(1);
    let timeout = Duration::from_secs(timeout).min(host.remaining()?);
    let spec = CheckSpec {
        id: format!("script/{name}"),
        service: String::new(),
        kind: check.check_type.as_str().into(),
        name,
        check,
        timeout,
    };
    let r = crate::notify::block_on(checks::run_check(&spec));
    if !r.ok {
        // A check cut short by the run's deadline stops the run.
        host.remaining()?;
    }
    to_dyn(&r)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("check")
        .with_volatility(true)
        .set_into_module(&mut m, move |url: &str| {
            run_one(
                &h,
                HealthCheckConfig {
                    url: Some(url.to_string()),
                    ..Default::default()
                },
            )
        });
    let h = host.clone();
    FuncRegistration::new("check")
        .with_volatility(true)
        .set_into_module(&mut m, move |opts: Map| {
            let mut c: HealthCheckConfig = from_map(opts, "http::check")?;
            c.check_type = crate::config::HealthCheckType::Http;
            run_one(&h, c)
        });
    m
}
