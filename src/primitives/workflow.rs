//! `workflow::each_service(ctx, "step")`: run a step function once per
//! service in `ctx.services`, each in that service's program (its
//! `services/<name>.rhai` override merged in). A service that fails does not
//! stop the others; each outcome is recorded for the run summary. A deadline
//! stop is passed through: no script can swallow it.

use super::{throw, RhaiResult};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use std::sync::Arc;

fn each_service(h: &Host, ctx: &NativeCallContext, run_ctx: Map, step: &str) -> RhaiResult<Array> {
    let services = run_ctx
        .get("services")
        .and_then(|s| s.clone().try_cast::<Array>())
        .ok_or_else(|| {
            throw(
                "invalid_argument",
                "workflow::each_service: ctx.services is not an array",
                None,
            )
        })?;
    let run_ctx = Dynamic::from_map(run_ctx);
    let mut results = Array::new();
    for svc in services {
        let name = svc
            .read_lock::<Map>()
            .and_then(|m| m.get("name").map(|n| n.to_string()))
            .ok_or_else(|| {
                throw(
                    "invalid_argument",
                    "workflow::each_service: a service without a name",
                    None,
                )
            })?;
        let outcome =
            h.call_for_service(ctx.engine(), &name, step, svc.clone(), run_ctx.clone())?;
        results.push(rhai::serde::to_dynamic(&outcome)?);
    }
    Ok(results)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("each_service")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, run_ctx: Map, step: &str| {
                each_service(&h, &ctx, run_ctx, step)
            },
        );
    let h = host.clone();
    FuncRegistration::new("is_dry_run").set_into_module(&mut m, move || h.dry_run);
    m
}
