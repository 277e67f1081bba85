//! `http::check(url)` / `http::check(opts)`: one read-only HTTP(S) health
//! check, the same engine `monitor::run_checks` uses. Options are the keys
//! of an `http` health check (`url`, `method`, `expected_status`,
//! `body_contains`, `body_regex`, `max_latency_ms`, `headers`,
//! `follow_redirects`, `tls_expiry_warn_days`, `timeout_seconds`).

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
    let name = crate::monitor::check_name(&check);
    let timeout = check
        .timeout_seconds
        .unwrap_or(host.config.monitoring.timeout_seconds)
        .max(1);
    let spec = CheckSpec {
        id: format!("script/{name}"),
        service: String::new(),
        kind: check.check_type.as_str().into(),
        name,
        check,
        timeout: Duration::from_secs(timeout),
    };
    let r = crate::notify::block_on(checks::run_check(&spec));
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
