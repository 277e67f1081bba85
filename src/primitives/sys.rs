//! `sys::` read-only host facts: `sys::process(name)` (is a process with
//! this name running), `sys::pid_file(path)`, `sys::disk(path)`,
//! `sys::memory()`, `sys::load()`, `sys::resources()` (with the warnings
//! `monitoring.resources` asks for), `sys::command(argv)` (a check: exit 0
//! is healthy; read-only, so it runs in dry runs too).

use super::http::run_one;
use super::{strings, to_dyn, RhaiResult};
use crate::config::{CommandSpec, HealthCheckConfig, HealthCheckType};
use crate::monitor::resources;
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Module};
use std::sync::Arc;

fn opt_f64(v: Option<f64>) -> Dynamic {
    v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("process")
        .with_volatility(true)
        .set_into_module(&mut m, move |name: &str| {
            run_one(
                &h,
                HealthCheckConfig {
                    check_type: HealthCheckType::Process,
                    process: Some(name.to_string()),
                    ..Default::default()
                },
            )
        });
    let h = host.clone();
    FuncRegistration::new("pid_file")
        .with_volatility(true)
        .set_into_module(&mut m, move |path: &str| {
            run_one(
                &h,
                HealthCheckConfig {
                    check_type: HealthCheckType::Process,
                    pid_file: Some(path.into()),
                    ..Default::default()
                },
            )
        });
    let h = host.clone();
    FuncRegistration::new("command")
        .with_volatility(true)
        .set_into_module(&mut m, move |argv: Array| -> RhaiResult<Dynamic> {
            let argv = strings(argv, "sys::command")?;
            run_one(
                &h,
                crate::monitor::checks::command_check(CommandSpec::Argv(argv)),
            )
        });
    FuncRegistration::new("disk")
        .with_volatility(true)
        .set_into_module(&mut m, |path: &str| -> RhaiResult<Dynamic> {
            let d = resources::disk_usage(std::path::Path::new(path))
                .map_err(|e| super::throw("io", format!("sys::disk {path}: {e}"), None))?;
            to_dyn(&d)
        });
    FuncRegistration::new("memory")
        .with_volatility(true)
        .set_into_module(&mut m, || opt_f64(resources::memory_used_percent()));
    FuncRegistration::new("load")
        .with_volatility(true)
        .set_into_module(&mut m, || opt_f64(resources::load1()));
    let h = host.clone();
    FuncRegistration::new("resources")
        .with_volatility(true)
        .set_into_module(&mut m, move || {
            to_dyn(&resources::check(&h.config.monitoring.resources))
        });
    m
}
