//! The engine factory: the only place that calls `Engine::new()`. Every limit
//! is set explicitly (debug and release builds of Rhai default differently),
//! strict variables are on, `eval` is disabled, `print`/`debug` go to the log,
//! and a wall-clock deadline stops a runaway script. The stop is a system
//! exception, which `try`/`catch` cannot swallow.
//!
//! Rhai rewrites the position of a system exception to the call site each time
//! it leaves a script function, so the place where a runaway loop was stopped
//! would be lost. The debugger hook records the source and position of the
//! last statement evaluated; the host reads it back when a run is stopped.

use super::resolver::ModuleResolver;
use super::sources::Scripts;
use rhai::{Dynamic, Engine, Position};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits for one run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub deadline: Duration,
    pub max_operations: u64,
    /// Register the debugger hook that records where a stopped script was.
    pub locate_stops: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(6 * 3600),
            max_operations: 50_000_000,
            locate_stops: true,
        }
    }
}

/// Where the script last was: file label and position.
#[derive(Debug, Clone, Default)]
pub struct Location {
    pub source: Option<String>,
    pub pos: Position,
}

/// Shared between the engine's callbacks and the host.
#[derive(Debug, Default)]
pub struct Watch {
    pub last: Mutex<Location>,
    pub cancel: AtomicBool,
    /// Set when the run is stopped: the location stays where the stop hit,
    /// not where the error unwinds to.
    pub stopped: AtomicBool,
}

/// Why `on_progress` stopped a run: the token of Rhai's `ErrorTerminated`,
/// told apart by its type, never by its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Deadline,
    Cancelled,
}

pub fn new_engine(limits: &Limits, scripts: &Scripts, watch: Arc<Watch>) -> Engine {
    let mut engine = Engine::new();
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(64);
    engine.set_max_expr_depths(128, 64);
    engine.set_max_string_size(16 * 1024 * 1024);
    engine.set_max_array_size(1_000_000);
    engine.set_max_map_size(100_000);
    engine.set_max_modules(200);
    engine.set_max_variables(10_000);
    engine.set_max_functions(10_000);
    engine.set_strict_variables(true);
    engine.set_fail_on_invalid_map_property(true);
    engine.disable_symbol("eval");
    engine.set_module_resolver(ModuleResolver::new(scripts.clone()));

    engine.on_print(|s| tracing::info!(target: "script", "{}", crate::redact::scrub(s)));
    engine.on_debug(|s, src, pos| {
        tracing::debug!(target: "script", "{}:{}: {}", src.unwrap_or("script"), pos.line().unwrap_or(0), crate::redact::scrub(s))
    });

    let started = Instant::now();
    let deadline = limits.deadline;
    let w = watch.clone();
    engine.on_progress(move |ops| {
        if ops % 256 != 0 {
            return None;
        }
        if w.cancel.load(Ordering::Relaxed) {
            w.stopped.store(true, Ordering::Relaxed);
            return Some(Dynamic::from(Stop::Cancelled));
        }
        if started.elapsed() > deadline {
            w.stopped.store(true, Ordering::Relaxed);
            return Some(Dynamic::from(Stop::Deadline));
        }
        None
    });

    if !limits.locate_stops {
        return engine;
    }
    let w = watch;
    // Marked deprecated only as "volatile" by Rhai; see docs/decisions.md.
    #[allow(deprecated)]
    engine.register_debugger(
        |_, d| d,
        move |_ctx, _event, _node, source, pos| {
            if !pos.is_none() && !w.stopped.load(Ordering::Relaxed) {
                let mut last = w.last.lock().unwrap_or_else(|e| e.into_inner());
                if last.source.as_deref() != source {
                    last.source = source.map(str::to_string);
                }
                last.pos = pos;
            }
            Ok(rhai::debugger::DebuggerCommand::StepInto)
        },
    );
    engine
}

#[cfg(test)]
mod tests {
    use super::*;
    use rhai::EvalAltResult;

    fn stopped(cancel: bool, deadline: Duration) -> Box<EvalAltResult> {
        let dir = tempfile::tempdir().unwrap();
        let watch = Arc::new(Watch::default());
        watch.cancel.store(cancel, Ordering::Relaxed);
        let limits = Limits {
            deadline,
            locate_stops: false,
            ..Limits::default()
        };
        let engine = new_engine(&limits, &Scripts::new(dir.path()), watch);
        engine
            .run("let x = 0; loop { try { x += 1; } catch { } }")
            .unwrap_err()
    }

    #[test]
    fn a_stop_says_why_by_its_type() {
        let err = stopped(true, Duration::from_secs(3600));
        let EvalAltResult::ErrorTerminated(token, _) = &*err else {
            panic!("{err}");
        };
        assert_eq!(token.clone().try_cast::<Stop>(), Some(Stop::Cancelled));
        assert_eq!(
            crate::script::host::error_message(&err),
            "script stopped: the run was cancelled"
        );

        let err = stopped(false, Duration::ZERO);
        let EvalAltResult::ErrorTerminated(token, _) = &*err else {
            panic!("{err}");
        };
        assert_eq!(token.clone().try_cast::<Stop>(), Some(Stop::Deadline));
        assert_eq!(
            crate::script::host::error_message(&err),
            "script stopped: the run's deadline (global.scripts.timeout_seconds) passed"
        );
    }
}
