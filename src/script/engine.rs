//! The engine factory: the only place that calls `Engine::new()`. Every limit
//! is set explicitly (debug and release builds of Rhai default differently),
//! strict variables are on, `eval` is disabled, `print`/`debug` go to the log,
//! and a wall-clock deadline stops a runaway script. The stop is a system
//! exception, which `try`/`catch` cannot swallow.
//!
//! Rhai rewrites the position of a system exception to the call site each time
//! it leaves a script function, so the place where a runaway loop was stopped
//! would be lost. The debugger hook records the source and position of the
//! last statement evaluated, per thread (`each_service` runs steps on worker
//! threads). When a stop hits (the deadline or a cancellation in `on_progress`,
//! the operation limit or another system exception as it leaves the first
//! function) that location is kept in [`Watch::stop`], first stop wins; the
//! host reports it. The hook also keeps where a catchable error began, so an
//! error caught and thrown again by a shipped step (`backup_service` does)
//! is still reported where it was raised.

use super::resolver::ModuleResolver;
use super::sources::Scripts;
use rhai::debugger::DebuggerEvent;
use rhai::{Dynamic, Engine, EvalAltResult, Position};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The most bytes of string data one value may hold (all its strings
/// together): the engine refuses more, and primitives that read a variable
/// amount (command output, files) keep at most this much.
pub const MAX_STRING_SIZE: usize = 16 * 1024 * 1024;
/// The most items of an array (and bytes of a BLOB).
pub const MAX_ARRAY_SIZE: usize = 1_000_000;
/// The most entries of an object map.
pub const MAX_MAP_SIZE: usize = 100_000;

/// Limits for one run.
#[derive(Debug, Clone)]
pub struct Limits {
    pub deadline: Duration,
    pub max_operations: u64,
    /// Register the debugger hook that records where a stopped script was.
    pub locate_stops: bool,
    /// See [`MAX_STRING_SIZE`].
    pub max_string_size: usize,
    /// See [`MAX_ARRAY_SIZE`].
    pub max_array_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline: Duration::from_secs(6 * 3600),
            max_operations: 50_000_000,
            locate_stops: true,
            max_string_size: MAX_STRING_SIZE,
            max_array_size: MAX_ARRAY_SIZE,
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
    pub cancel: AtomicBool,
    /// Set when the run is stopped (deadline, cancellation, operation limit).
    pub stopped: AtomicBool,
    /// Where the first stop hit: the last statement the stopped thread ran.
    /// Stays `None` without the debugger hook (`locate_stops: false`).
    pub stop: Mutex<Option<Location>>,
    /// The step and service a stop passed through first: `(step, service)`.
    /// Known with or without the hook.
    pub stopped_in: Mutex<Option<(String, String)>>,
    /// When the run's deadline passes: set once, when the engine is built
    /// (None inside: too far away to represent, so never).
    pub deadline: OnceLock<Option<Instant>>,
}

impl Watch {
    /// Mark the run stopped and keep this thread's last statement as the
    /// place of the stop, unless an earlier stop was kept already.
    fn keep_stop(&self, locate: bool) {
        self.stopped.store(true, Ordering::Relaxed);
        if !locate {
            return;
        }
        let here = LAST.with(|l| l.borrow().clone());
        if here.pos.is_none() {
            return;
        }
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        stop.get_or_insert(here);
    }

    /// Set the deadline `limit` from now, unless it is set already; the
    /// instant it passes (None: never).
    fn start_clock(&self, limit: Duration) -> Option<Instant> {
        *self
            .deadline
            .get_or_init(|| Instant::now().checked_add(limit))
    }

    /// The time left before the run's deadline, or the reason the run must
    /// stop now (the deadline passed, or the run was cancelled). Without a
    /// deadline (no engine built yet, or one too far away) the time left is
    /// [`Duration::MAX`]. Blocking primitives wait at most this long.
    pub fn remaining(&self) -> Result<Duration, Stop> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        match self.deadline.get().copied().flatten() {
            None => Ok(Duration::MAX),
            Some(at) => match at.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(left),
                _ => Err(Stop::Deadline),
            },
        }
    }

    /// The error that stops the run for `why`, as `on_progress` raises it:
    /// a system exception that `try`/`catch` cannot swallow. A primitive
    /// returns it when the run must stop while it waits.
    pub fn stop_error(&self, why: Stop, locate: bool) -> Box<EvalAltResult> {
        self.keep_stop(locate);
        EvalAltResult::ErrorTerminated(Dynamic::from(why), Position::NONE).into()
    }

    /// Where the run was stopped, if the hook recorded it.
    pub fn stop_location(&self) -> Option<Location> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A stop passed out of `step` run for `service`; the first one is kept.
    pub fn note_stopped_in(&self, step: &str, service: &str) {
        let mut s = self.stopped_in.lock().unwrap_or_else(|e| e.into_inner());
        s.get_or_insert_with(|| (step.to_string(), service.to_string()));
    }
}

/// Where a catchable error began: its message (as [`error_text`] gives it)
/// and the file and position of the statement that raised it.
#[derive(Debug, Clone)]
pub struct Origin {
    pub text: String,
    pub at: Location,
}

thread_local! {
    /// The last statement this thread evaluated (debugger hook only).
    static LAST: RefCell<Location> = RefCell::new(Location::default());
    /// Where the error now unwinding on this thread began (debugger hook only).
    static ORIGIN: RefCell<Option<Origin>> = const { RefCell::new(None) };
}

/// Forget this thread's error origin and last statement: called before a
/// script call whose error will be described.
pub fn reset_thread() {
    ORIGIN.with(|o| o.borrow_mut().take());
    LAST.with(|l| *l.borrow_mut() = Location::default());
}

/// The origin recorded on this thread for an error whose message is `text`:
/// the same error (or its value caught and thrown again) started there.
pub fn origin_of(text: &str) -> Option<Origin> {
    ORIGIN.with(|o| {
        o.borrow()
            .as_ref()
            .filter(|o| same_error(&o.text, text))
            .cloned()
    })
}

/// A caught Rhai error (not a thrown value) becomes a map whose `message`
/// is Rhai's full text of it, which starts with the error's own message.
fn same_error(origin: &str, text: &str) -> bool {
    match text.strip_prefix(origin) {
        Some(rest) => {
            !origin.is_empty()
                && (rest.is_empty()
                    || rest.starts_with(" @ ")
                    || rest.starts_with(" (line ")
                    || rest.starts_with('\n'))
        }
        None => false,
    }
}

/// The message of an error without Rhai's position suffix; a map thrown by a
/// primitive (`#{kind, message}`) or a caught Rhai error gives its `message`.
pub fn error_text(err: &EvalAltResult) -> String {
    match err {
        EvalAltResult::ErrorRuntime(v, _) => {
            if let Some(m) = v.read_lock::<rhai::Map>() {
                if let Some(msg) = m.get("message") {
                    return msg.to_string();
                }
            }
            v.to_string()
        }
        other => {
            // Rhai appends " (line N, position M)"; the caller names the place.
            let text = other.to_string();
            match text.rfind(" (line ") {
                Some(i) if text.ends_with(')') => text[..i].to_string(),
                _ => text,
            }
        }
    }
}

/// The error inside the function-call frames wrapped around it, and the
/// innermost source (file) those frames name.
pub fn innermost(err: &EvalAltResult) -> (&EvalAltResult, Option<&str>) {
    let mut cur = err;
    let mut source: Option<&str> = None;
    while let EvalAltResult::ErrorInFunctionCall(_, src, inner, _) = cur {
        if !src.is_empty() {
            source = Some(src);
        }
        cur = inner;
    }
    (cur, source)
}

/// A function left with an error: keep where a catchable error began (the
/// innermost error of the chain) unless it is the error already recorded,
/// caught and thrown again further out.
fn note_error(err: &EvalAltResult) {
    let (cur, source) = innermost(err);
    let pos = cur.position();
    if pos.is_none() {
        return;
    }
    let text = error_text(cur);
    ORIGIN.with(|o| {
        let mut o = o.borrow_mut();
        if o.as_ref().is_some_and(|o| same_error(&o.text, &text)) {
            return;
        }
        *o = Some(Origin {
            text,
            at: Location {
                source: source.map(str::to_string),
                pos,
            },
        });
    });
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
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(MAX_MAP_SIZE);
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

    let deadline = watch.start_clock(limits.deadline);
    let locate = limits.locate_stops;
    let w = watch.clone();
    engine.on_progress(move |ops| {
        if ops % 256 != 0 {
            return None;
        }
        if w.cancel.load(Ordering::Relaxed) {
            w.keep_stop(locate);
            return Some(Dynamic::from(Stop::Cancelled));
        }
        if deadline.is_some_and(|at| Instant::now() >= at) {
            w.keep_stop(locate);
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
        move |_ctx, event, _node, source, pos| {
            match event {
                DebuggerEvent::Step if !pos.is_none() => LAST.with(|l| {
                    let mut last = l.borrow_mut();
                    if last.source.as_deref() != source {
                        last.source = source.map(str::to_string);
                    }
                    last.pos = pos;
                }),
                // The stop leaves its first function: the last statement
                // is still where it hit (the operation limit has no
                // `on_progress` call of its own).
                DebuggerEvent::FunctionExitWithError(err) => {
                    if err.unwrap_inner().is_system_exception() {
                        w.keep_stop(true);
                    } else {
                        note_error(err);
                    }
                }
                _ => {}
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
    fn the_time_left_ends_in_the_stop_the_engine_uses() {
        let watch = Watch::default();
        assert_eq!(watch.remaining(), Ok(Duration::MAX));
        watch.start_clock(Duration::from_secs(3600));
        let left = watch.remaining().unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        // The clock starts once.
        watch.start_clock(Duration::ZERO);
        assert!(watch.remaining().is_ok());
        watch.cancel.store(true, Ordering::Relaxed);
        assert_eq!(watch.remaining(), Err(Stop::Cancelled));

        let late = Watch::default();
        late.start_clock(Duration::ZERO);
        assert_eq!(late.remaining(), Err(Stop::Deadline));
        let err = late.stop_error(Stop::Deadline, false);
        assert!(!err.is_catchable());
        assert_eq!(
            crate::script::host::error_message(&err),
            "script stopped: the run's deadline (global.scripts.timeout_seconds) passed"
        );
        assert!(late.stopped.load(Ordering::Relaxed));
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
