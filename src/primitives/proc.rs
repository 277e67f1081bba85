//! `proc::run` for scripts: the argv array and options map are parsed once,
//! then [`crate::proc::run`] does the work. The run's limits reach it: the
//! program must be in `global.scripts.allow_commands` (when set), the
//! timeout is cut to the time left before the run's deadline, and the
//! output kept to the engine's string limit.

use super::{dry_run, from_map, service_of, strings, throw, to_dyn, RhaiResult};
use crate::proc::{run, until, RunInfo, RunOptions};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use std::sync::Arc;

/// Refuse a program that `global.scripts.allow_commands` does not list. A
/// bare name matches only the same bare name (found on the tool's `PATH`,
/// which the command's `env` then may not change); a path matches only the
/// same absolute path.
pub(super) fn check_command(
    host: &Host,
    what: &str,
    program: &str,
    env_sets_path: bool,
    service: Option<&str>,
) -> RhaiResult<()> {
    let Some(allowed) = &host.config.global.scripts.allow_commands else {
        return Ok(());
    };
    if !allowed.iter().any(|a| a == program) {
        return Err(throw(
            "permission_denied",
            format!("{what}: '{program}' is not in global.scripts.allow_commands"),
            service,
        ));
    }
    if env_sets_path && !program.starts_with('/') {
        return Err(throw(
            "permission_denied",
            format!(
                "{what}: '{program}' is found on PATH, which global.scripts.allow_commands does not let a script change; give its absolute path"
            ),
            service,
        ));
    }
    Ok(())
}

fn run_rhai(host: &Host, ctx: &NativeCallContext, argv: Array, opts: Map) -> RhaiResult<Dynamic> {
    let argv = strings(argv, "proc::run argv")?;
    let mut opts: RunOptions = from_map(opts, "proc::run options")?;
    let svc = service_of(ctx);
    let Some(program) = argv.first() else {
        return Err(throw(
            "invalid_argument",
            "proc::run: empty argv",
            svc.as_deref(),
        ));
    };
    check_command(
        host,
        "proc::run",
        program,
        opts.env.contains_key("PATH"),
        svc.as_deref(),
    )?;
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
    host.event(
        tracing::Level::DEBUG,
        svc.as_deref(),
        &format!("running [{shown}]"),
    );
    let cap = host.limits.max_string_size;
    opts.max_output = opts.max_output.min(cap);
    let deadline = host.deadline()?;
    let mut info = until(deadline, || run(&argv, &opts)).map_err(|e| super::to_rhai(e, ctx))?;
    info.limit_total(cap);
    if info.timed_out {
        // Cut short by the run's deadline: stop the run, as script code would.
        host.remaining()?;
        return Err(throw(
            "timeout",
            format!("{program} timed out after {}s", opts.timeout_seconds),
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
            format!("{program} exited with {}: {}", info.code, tail.trim()),
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
