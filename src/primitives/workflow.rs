//! `workflow::each_service(ctx, "step")`: run a step function once per
//! service in `ctx.services`, each in that service's program (its
//! `services/<name>.rhai` override merged in), as `step(svc, ctx)` with
//! `ctx` less its `services`. A service that fails does not
//! stop the others; each outcome is recorded for the run summary. A deadline
//! stop is passed through: no script can swallow it.
//!
//! `workflow::each_service(ctx, "step", #{ total: N, per_node: M })` runs up
//! to N services at once, and at most M of one Proxmox node (`svc.node`) at
//! once. The default is one at a time, in order.
//!
//! `workflow::run_step("backup", "backup_service", svc)` runs one step of
//! *another* workflow for one service within this run (the update
//! workflow's backup before an update): that workflow's program with the
//! user's layers and the service's own override, this run's state, run ID
//! and dry-run flag, `ctx.workflow` naming that workflow; its lock is held
//! meanwhile, so it never runs beside a run of that workflow. It returns
//! what the step returns; what the step throws is thrown.

use super::{throw, to_u64, RhaiResult};
use crate::script::{Host, ServiceOutcome};
use rhai::{
    Array, CallFnOptions, Dynamic, EvalAltResult, FuncRegistration, Map, Module, NativeCallContext,
    Scope,
};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

/// Limits of one `each_service` call.
#[derive(Debug, Clone, Copy)]
struct Limits {
    total: usize,
    per_node: usize,
}

fn name_and_node(svc: &Dynamic) -> RhaiResult<(String, Option<String>)> {
    let m = svc.read_lock::<Map>().ok_or_else(|| {
        throw(
            "invalid_argument",
            "workflow::each_service: a service is not a map",
            None,
        )
    })?;
    let name = m.get("name").map(|n| n.to_string()).ok_or_else(|| {
        throw(
            "invalid_argument",
            "workflow::each_service: a service without a name",
            None,
        )
    })?;
    let node = m
        .get("node")
        .filter(|n| !n.is_unit())
        .map(|n| n.to_string());
    Ok((name, node))
}

fn limits(opts: &Map) -> RhaiResult<Limits> {
    let get = |key: &str| -> RhaiResult<usize> {
        match opts.get(key) {
            None => Ok(1),
            Some(v) if v.is_unit() => Ok(1),
            Some(v) => {
                let n = v.as_int().map_err(|t| {
                    throw(
                        "invalid_argument",
                        format!("workflow::each_service: {key} must be an integer, found {t}"),
                        None,
                    )
                })?;
                Ok(to_u64(n, key)?.max(1) as usize)
            }
        }
    };
    Ok(Limits {
        total: get("total")?,
        per_node: get("per_node")?,
    })
}

/// State shared by the workers of a parallel `each_service`.
struct Queue {
    /// Services not started yet: (index, name, node, svc).
    pending: Vec<(usize, String, Option<String>, Dynamic)>,
    running_per_node: HashMap<Option<String>, usize>,
    /// A deadline or cancellation: no new service starts.
    fatal: Option<Box<EvalAltResult>>,
}

fn each_service(
    h: &Host,
    ctx: &NativeCallContext,
    mut run_ctx: Map,
    step: &str,
    opts: Map,
) -> RhaiResult<Array> {
    // Each step gets its own `svc` and the rest of ctx: not ctx.services,
    // which would be copied into every call (Rhai passes by value), making
    // a run of n services cost n².
    let services = run_ctx
        .remove("services")
        .and_then(|s| s.try_cast::<Array>())
        .ok_or_else(|| {
            throw(
                "invalid_argument",
                "workflow::each_service: ctx.services is not an array",
                None,
            )
        })?;
    let limits = limits(&opts)?;
    let run_ctx = Dynamic::from_map(run_ctx);
    let mut items = Vec::with_capacity(services.len());
    for (i, svc) in services.into_iter().enumerate() {
        let (name, node) = name_and_node(&svc)?;
        items.push((i, name, node, svc));
    }
    let n = items.len();
    let outcomes: Vec<ServiceOutcome> = if limits.total <= 1 || n <= 1 {
        let mut out = Vec::with_capacity(n);
        for (_, name, _, svc) in items {
            out.push(h.call_for_service(ctx.engine(), &name, step, svc, run_ctx.clone())?);
        }
        out
    } else {
        run_parallel(h, ctx, step, &run_ctx, items, limits)?
    };
    outcomes.iter().map(rhai::serde::to_dynamic).collect()
}

fn run_parallel(
    h: &Host,
    ctx: &NativeCallContext,
    step: &str,
    run_ctx: &Dynamic,
    mut items: Vec<(usize, String, Option<String>, Dynamic)>,
    limits: Limits,
) -> RhaiResult<Vec<ServiceOutcome>> {
    let n = items.len();
    items.reverse(); // pop() takes them in order
    let queue = Mutex::new(Queue {
        pending: items,
        running_per_node: HashMap::new(),
        fatal: None,
    });
    let wake = Condvar::new();
    let results: Mutex<Vec<Option<ServiceOutcome>>> = Mutex::new(vec![None; n]);
    let engine = ctx.engine();
    std::thread::scope(|scope| {
        for _ in 0..limits.total.min(n) {
            scope.spawn(|| loop {
                // Take the first pending service whose node has room.
                let (index, name, node, svc) = {
                    let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                    loop {
                        if q.fatal.is_some() || q.pending.is_empty() {
                            return;
                        }
                        let pick = q.pending.iter().rposition(|(_, _, node, _)| {
                            q.running_per_node.get(node).copied().unwrap_or(0) < limits.per_node
                        });
                        if let Some(i) = pick {
                            let item = q.pending.remove(i);
                            *q.running_per_node.entry(item.2.clone()).or_default() += 1;
                            break item;
                        }
                        q = wake.wait(q).unwrap_or_else(|e| e.into_inner());
                    }
                };
                let res = h.call_for_service(engine, &name, step, svc, run_ctx.clone());
                let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(c) = q.running_per_node.get_mut(&node) {
                    *c -= 1;
                }
                match res {
                    Ok(o) => results.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(o),
                    Err(e) => {
                        q.fatal.get_or_insert(e);
                    }
                }
                wake.notify_all();
            });
        }
    });
    let q = queue.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = q.fatal {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect())
}

/// `workflow::run_step(workflow, step, svc)`: see the module docs.
pub(super) fn run_step(
    h: &Host,
    ctx: &NativeCallContext,
    workflow: &str,
    step: &str,
    svc: Map,
) -> RhaiResult<Dynamic> {
    let svc = Dynamic::from_map(svc);
    let (name, _) = name_and_node(&svc)?;
    let fail = |kind: &str, msg: String| throw(kind, msg, Some(&name));
    if workflow == h.workflow {
        return Err(fail(
            "invalid_argument",
            format!("workflow::run_step: call {step} directly within the {workflow} workflow"),
        ));
    }
    let _lock = if h.dry_run {
        None
    } else {
        Some(
            crate::lock::acquire(&h.paths.lock_dir, workflow)
                .map_err(|e| fail(e.kind(), e.to_string()))?,
        )
    };
    let engine = ctx.engine();
    let program =
        crate::script::Program::load(engine, &h.scripts, workflow, std::slice::from_ref(&name))
            .map_err(|e| fail(e.kind(), e.to_string()))?;
    if !program.has_fn(step, 2) {
        return Err(fail(
            "invalid_argument",
            format!("workflow::run_step: the {workflow} workflow has no fn {step}(svc, ctx)"),
        ));
    }
    let mut run_ctx = h.ctx_map(&[]);
    run_ctx.remove("services");
    run_ctx.insert("workflow".into(), workflow.into());
    let options = CallFnOptions::new()
        .with_tag(Dynamic::from(name.clone()))
        .eval_ast(true);
    engine.call_fn_with_options::<Dynamic>(
        options,
        &mut Scope::new(),
        program.ast_for(&name),
        step,
        (svc, Dynamic::from_map(run_ctx)),
    )
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("each_service")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, run_ctx: Map, step: &str| {
                each_service(&h, &ctx, run_ctx, step, Map::new())
            },
        );
    let h = host.clone();
    FuncRegistration::new("each_service")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, run_ctx: Map, step: &str, opts: Map| {
                each_service(&h, &ctx, run_ctx, step, opts)
            },
        );
    let h = host.clone();
    FuncRegistration::new("run_step")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, workflow: &str, step: &str, svc: Map| {
                run_step(&h, &ctx, workflow, step, svc)
            },
        );
    let h = host.clone();
    FuncRegistration::new("is_dry_run").set_into_module(&mut m, move || h.dry_run);
    m
}
