//! `net::tcp(host, port)` and `net::dns(hostname)`: read-only reachability
//! checks returning `#{ok, message, latency_ms}`.

use super::http::run_one;
use super::throw;
use crate::config::{HealthCheckConfig, HealthCheckType};
use crate::script::Host;
use rhai::{FuncRegistration, Module, INT};
use std::sync::Arc;

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("tcp")
        .with_volatility(true)
        .set_into_module(&mut m, move |host: &str, port: INT| {
            let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
                throw(
                    "invalid_argument",
                    format!("net::tcp: invalid port {port}"),
                    None,
                )
            })?;
            run_one(
                &h,
                HealthCheckConfig {
                    check_type: HealthCheckType::Tcp,
                    host: Some(host.to_string()),
                    port: Some(port),
                    ..Default::default()
                },
            )
        });
    let h = host.clone();
    FuncRegistration::new("dns")
        .with_volatility(true)
        .set_into_module(&mut m, move |name: &str| {
            run_one(
                &h,
                HealthCheckConfig {
                    check_type: HealthCheckType::Dns,
                    hostname: Some(name.to_string()),
                    ..Default::default()
                },
            )
        });
    m
}
