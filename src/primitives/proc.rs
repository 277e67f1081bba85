//! `proc::run` for scripts: the argv array and options map are parsed once,
//! then [`crate::proc::run`] does the work.

use super::{dry_run, from_map, service_of, strings, throw, to_dyn, RhaiResult};
use crate::proc::{run, RunInfo, RunOptions};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use std::sync::Arc;

fn run_rhai(host: &Host, ctx: &NativeCallContext, argv: Array, opts: Map) -> RhaiResult<Dynamic> {
    let argv = strings(argv, "proc::run argv")?;
    let opts: RunOptions = from_map(opts, "proc::run options")?;
    let shown = argv
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    if !opts.read_only && dry_run(host, ctx, &format!("run [{shown}]")) {
        return to_dyn(&RunInfo {
            code: 0,
            stdout: String::new(),
            stderr: String::new(),
            timed_out: false,
            truncated: false,
            duration_ms: 0,
        });
    }
    let svc = service_of(ctx);
    host.event(
        tracing::Level::DEBUG,
        svc.as_deref(),
        &format!("running [{shown}]"),
    );
    let info = run(&argv, &opts).map_err(|e| super::to_rhai(e, ctx))?;
    if info.timed_out {
        return Err(throw(
            "timeout",
            format!("{} timed out after {}s", argv[0], opts.timeout_seconds),
            svc.as_deref(),
        ));
    }
    if opts.check && info.code != 0 {
        let tail: String = info
            .stderr
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(throw(
            "command",
            format!("{} exited with {}: {}", argv[0], info.code, tail.trim()),
            svc.as_deref(),
        ));
    }
    to_dyn(&info)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("run")
        .with_volatility(true)
        .set_into_module(&mut m, move |ctx: NativeCallContext, argv: Array| {
            run_rhai(&h, &ctx, argv, Map::new())
        });
    let h = host.clone();
    FuncRegistration::new("run")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, argv: Array, opts: Map| run_rhai(&h, &ctx, argv, opts),
        );
    m
}
