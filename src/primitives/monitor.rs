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
    // No check waits past the run's deadline; one cut short by it stops
    // the run.
    let left = h.remaining()?;
    let mut specs = monitor::specs_for(&h.config, &svcs);
    for s in &mut specs {
        s.timeout = s.timeout.min(left);
    }
    let n = specs.len();
    let started = std::time::Instant::now();
    let results = monitor::checks::run_all(specs, h.config.monitoring.concurrency as usize);
    tracing::debug!("{n} check(s) in {:?}", started.elapsed());
    if results.iter().any(|r| !r.ok) {
        h.remaining()?;
    }
    to_dyn(&results)
}

/// The results of `monitor::run_checks` back from a script, straight from
/// the Rhai values to the typed results (no JSON in between).
fn check_results(results: Array) -> RhaiResult<Vec<CheckResult>> {
    let flat: Array = results.into_iter().map(Dynamic::flatten).collect();
    rhai::serde::from_dynamic(&Dynamic::from_array(flat)).map_err(|e| {
        throw(
            "invalid_argument",
            format!("monitor::evaluate: expects the results of monitor::run_checks ({e})"),
            None,
        )
    })
}

fn evaluate(h: &Host, ctx: &NativeCallContext, results: Array) -> RhaiResult<Dynamic> {
    let results = check_results(results)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_results_cross_into_rhai_and_back_unchanged() {
        let results = vec![
            CheckResult {
                id: "web/http".into(),
                service: "web".into(),
                name: "http".into(),
                kind: "http".into(),
                ok: false,
                message: "HTTP 502".into(),
                latency_ms: 12,
                warning: Some("certificate expires in 3 days".into()),
                tls_days_left: Some(3),
                parent: Some("db".into()),
            },
            CheckResult {
                id: "web/external".into(),
                service: "web".into(),
                name: "external".into(),
                kind: "external".into(),
                ok: true,
                message: "HTTP 200".into(),
                latency_ms: 0,
                warning: None,
                tls_days_left: None,
                parent: None,
            },
        ];
        let d = to_dyn(&results).unwrap();
        let arr = d.into_array().unwrap();
        let first = arr[0].read_lock::<rhai::Map>().unwrap().clone();
        assert_eq!(first["type"].clone().into_string().unwrap(), "http");
        assert!(arr[1].read_lock::<rhai::Map>().unwrap()["warning"].is_unit());
        let back = check_results(arr).unwrap();
        assert_eq!(
            serde_json::to_value(&back).unwrap(),
            serde_json::to_value(&results).unwrap()
        );
        let bad = vec![Dynamic::from(1_i64)];
        assert!(check_results(bad).is_err());
    }
}
