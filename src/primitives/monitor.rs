//! `monitor::` for scripts/monitor.rhai: run the configured health checks
//! of services concurrently (`monitor.concurrency` at once), fold a
//! cycle's results into the persisted alert state, read service states.
//!
//! ```rhai
//! let results = monitor::run_checks(ctx.services);
//! let per_service = monitor::by_service(results); // #{web: [results], ...}
//! for a in monitor::evaluate(results) { notify::send(a.event, a); }
//! ```

use super::{dry_run, throw, to_dyn, RhaiResult};
use crate::config::ServiceConfig;
use crate::monitor::{self, checks::CheckResult};
use crate::script::host::dynamic_to_json;
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Module, NativeCallContext};
use std::sync::Arc;

/// Service names from an array of service maps or names.
fn service_names(arr: &Array) -> Vec<String> {
    arr.iter()
        .filter_map(|d| {
            let d = d.clone().flatten();
            if let Some(m) = d.read_lock::<rhai::Map>() {
                return m.get("name").map(|n| n.to_string());
            }
            d.into_string().ok()
        })
        .collect()
}

fn run_checks(h: &Host, services: Array) -> RhaiResult<Dynamic> {
    tracing::debug!("monitor::run_checks: {} service(s)", services.len());
    let names = service_names(&services);
    let svcs: Vec<&ServiceConfig> = h
        .config
        .services
        .iter()
        .filter(|s| names.contains(&s.name))
        .collect();
    let specs = monitor::specs_for(&h.config, &svcs);
    let n = specs.len();
    let started = std::time::Instant::now();
    let results = monitor::checks::run_all(specs, h.config.monitoring.concurrency as usize);
    tracing::debug!("{n} check(s) in {:?}", started.elapsed());
    to_dyn(&results)
}

fn evaluate(h: &Host, ctx: &NativeCallContext, results: Array) -> RhaiResult<Dynamic> {
    let json = dynamic_to_json(&Dynamic::from_array(results));
    let results: Vec<CheckResult> = serde_json::from_value(json).map_err(|e| {
        throw(
            "invalid_argument",
            format!("monitor::evaluate: expects the results of monitor::run_checks ({e})"),
            None,
        )
    })?;
    let dry = dry_run(
        h,
        ctx,
        &format!("record the state of {} check(s)", results.len()),
    );
    let alerts = monitor::evaluate(&h.config, &h.paths, h.store.as_deref(), &results, dry);
    to_dyn(&alerts)
}

fn status(h: &Host) -> RhaiResult<Dynamic> {
    let Some(store) = &h.store else {
        return Ok(Dynamic::from_array(Array::new()));
    };
    let mut out = Vec::new();
    for s in &h.config.services {
        out.push(
            monitor::service_status(store, &s.name)
                .map_err(|e| throw(e.kind(), e.to_string(), Some(&s.name)))?,
        );
    }
    to_dyn(&out)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("run_checks")
        .with_volatility(true)
        .set_into_module(&mut m, move |services: Array| run_checks(&h, services));
    let h = host.clone();
    FuncRegistration::new("evaluate")
        .with_volatility(true)
        .set_into_module(&mut m, move |ctx: NativeCallContext, results: Array| {
            evaluate(&h, &ctx, results)
        });
    FuncRegistration::new("by_service").set_into_module(&mut m, |results: Array| -> rhai::Map {
        let mut out = rhai::Map::new();
        for r in results {
            let svc = r
                .read_lock::<rhai::Map>()
                .and_then(|m| m.get("service").map(|s| s.to_string()))
                .unwrap_or_default();
            let entry = out
                .entry(svc.into())
                .or_insert_with(|| Dynamic::from_array(Array::new()));
            if let Some(mut a) = entry.write_lock::<Array>() {
                a.push(r);
            }
        }
        out
    });
    let h = host.clone();
    FuncRegistration::new("status")
        .with_volatility(true)
        .set_into_module(&mut m, move || status(&h));
    let h = host.clone();
    FuncRegistration::new("maintenance")
        .with_volatility(true)
        .set_into_module(&mut m, move |service: &str| -> Dynamic {
            monitor::maintenance(&h.config, &h.paths, service, chrono::Local::now())
                .map(Dynamic::from)
                .unwrap_or(Dynamic::UNIT)
        });
    m
}
