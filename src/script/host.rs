//! The per-run host: what primitives reach (config, paths, state store,
//! dry-run flag, run id) and the driver that runs a workflow's `run(ctx)`.
//!
//! Scripts run on the calling (blocking) thread. Per-call data (the service a
//! step runs for) travels in the call tag, not in the Scope.

use super::engine::{self, Limits, Watch};
use super::sources::Scripts;
use super::workflow::Program;
use crate::config::{Config, HealthCheckConfig, Paths, ServiceConfig};
use crate::error::{Error, Result};
use crate::state::Store;
use rhai::{Array, CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Scope};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What happened to one service in a run.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceOutcome {
    pub service: String,
    pub ok: bool,
    pub skipped: bool,
    pub error: Option<String>,
    /// The failure's kind (`e.kind` of the error thrown by a primitive:
    /// `io`, `disk_full`, `task_failed`, ...), when it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    pub result: serde_json::Value,
}

/// The result of a whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub ok: bool,
    pub error: Option<String>,
    pub services: Vec<ServiceOutcome>,
    pub warnings: usize,
    /// Files and directories a backup could not read and left out: the run
    /// ends as a warning with exit 3.
    pub partial: usize,
    /// What `notify::send` collected, typed (delivered after the run).
    pub notifications: Vec<crate::notify::Event>,
    pub value: serde_json::Value,
}

pub struct Host {
    pub config: Arc<Config>,
    pub paths: Paths,
    /// None in a dry run when no state DB exists yet (a dry run creates nothing).
    pub store: Option<Arc<Store>>,
    pub dry_run: bool,
    pub run_id: Option<i64>,
    pub workflow: String,
    pub scripts: Scripts,
    pub hostname: String,
    pub watch: Arc<Watch>,
    pub program: OnceLock<Program>,
    pub outcomes: Mutex<Vec<ServiceOutcome>>,
    pub notifications: Mutex<Vec<crate::notify::Event>>,
    pub warnings: AtomicUsize,
    /// See [`RunOutcome::partial`].
    pub partial: AtomicUsize,
    pub limits: Limits,
    /// `run restore-test --backup ID`: the backup to test (`ctx.backup_id`).
    pub backup_id: Option<i64>,
    /// `run update --recover`: only finish what a killed run left
    /// (`ctx.recover`).
    pub recover: bool,
    /// Run events not yet in the state DB (see [`Host::event`]).
    events: Mutex<EventBuffer>,
}

/// Run events waiting to be written: one transaction (one fsync) per batch
/// rather than per log line.
#[derive(Default)]
struct EventBuffer {
    pending: Vec<(i64, String, Option<String>, String)>,
    /// When the oldest pending event was added.
    since: Option<std::time::Instant>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.flush_events();
    }
}

/// Pending events are written with a warning or an error, when this many
/// wait, when the oldest is this old as the next one comes, and when the
/// run ends. The log files have every line at once; only the state DB's
/// copy (the run's log tail) of info lines waits.
const EVENT_FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(500);
const EVENT_FLUSH_COUNT: usize = 256;

/// Mask registered secrets in every string of a value, recursively.
fn scrub_dynamic(d: &mut Dynamic) {
    if let Some(mut m) = d.write_lock::<Map>() {
        m.values_mut().for_each(scrub_dynamic);
        return;
    }
    if let Some(mut a) = d.write_lock::<Array>() {
        a.iter_mut().for_each(scrub_dynamic);
        return;
    }
    let masked = match d.read_lock::<rhai::ImmutableString>() {
        Some(s) => match crate::redact::scrub(&s) {
            std::borrow::Cow::Owned(o) => Some(o),
            std::borrow::Cow::Borrowed(_) => None,
        },
        None => None,
    };
    if let Some(o) = masked {
        *d = o.into();
    }
}

pub fn dynamic_to_json(d: &Dynamic) -> serde_json::Value {
    // from_dynamic rejects shared values: flatten first.
    let flat = d.clone().flatten();
    rhai::serde::from_dynamic::<serde_json::Value>(&flat).unwrap_or(serde_json::Value::Null)
}

impl Host {
    pub fn new(
        config: Arc<Config>,
        paths: Paths,
        store: Option<Arc<Store>>,
        dry_run: bool,
        run_id: Option<i64>,
        workflow: &str,
    ) -> Host {
        let limits = Limits {
            deadline: std::time::Duration::from_secs(config.global.scripts.timeout_seconds),
            max_operations: config.global.scripts.max_operations,
            locate_stops: config.global.scripts.locate_stops,
            ..Limits::default()
        };
        Host {
            scripts: Scripts::new(paths.scripts_dir.clone()),
            config,
            paths,
            store,
            dry_run,
            run_id,
            workflow: workflow.to_string(),
            hostname: crate::system::hostname(),
            watch: Arc::new(Watch::default()),
            program: OnceLock::new(),
            outcomes: Mutex::new(Vec::new()),
            notifications: Mutex::new(Vec::new()),
            warnings: AtomicUsize::new(0),
            partial: AtomicUsize::new(0),
            limits,
            backup_id: None,
            recover: false,
            events: Mutex::new(EventBuffer::default()),
        }
    }

    /// The time left before the run's deadline (`global.scripts.timeout_seconds`),
    /// which every blocking primitive waits at most; [`Duration::MAX`] before
    /// the engine is built. Once the deadline has passed (or the run was
    /// cancelled) the error is the same stop the engine raises in script
    /// code: uncatchable, reported as the deadline (or cancellation) stop.
    ///
    /// [`Duration::MAX`]: std::time::Duration::MAX
    pub fn remaining(&self) -> Result<std::time::Duration, Box<EvalAltResult>> {
        self.watch
            .remaining()
            .map_err(|why| self.watch.stop_error(why, self.limits.locate_stops))
    }

    /// The instant the run's deadline passes, for [`crate::proc::until`]:
    /// None when there is no deadline to keep. Errors as [`Host::remaining`].
    pub fn deadline(&self) -> Result<Option<std::time::Instant>, Box<EvalAltResult>> {
        Ok(std::time::Instant::now().checked_add(self.remaining()?))
    }

    /// Log a run event: to the log and to the run's event tail in the state DB.
    pub fn event(&self, level: tracing::Level, service: Option<&str>, message: &str) {
        let message = crate::redact::scrub(message);
        let prefix = service.map(|s| format!("[{s}] ")).unwrap_or_default();
        match level {
            tracing::Level::ERROR => tracing::error!("{prefix}{message}"),
            tracing::Level::WARN => {
                self.warnings.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("{prefix}{message}")
            }
            tracing::Level::INFO => tracing::info!("{prefix}{message}"),
            _ => tracing::debug!("{prefix}{message}"),
        }
        if self.store.is_some()
            && self.run_id.is_some()
            && !self.dry_run
            && level <= tracing::Level::INFO
        {
            let due = {
                let mut b = self.events.lock().unwrap_or_else(|e| e.into_inner());
                b.pending.push((
                    crate::state::now(),
                    level.to_string().to_lowercase(),
                    service.map(str::to_string),
                    message.into_owned(),
                ));
                let since = *b.since.get_or_insert_with(std::time::Instant::now);
                level <= tracing::Level::WARN
                    || b.pending.len() >= EVENT_FLUSH_COUNT
                    || since.elapsed() >= EVENT_FLUSH_AFTER
            };
            if due {
                self.flush_events();
            }
        }
    }

    /// Write the buffered run events to the state DB (also done when the
    /// run ends).
    pub fn flush_events(&self) {
        let (Some(store), Some(run_id)) = (&self.store, self.run_id) else {
            return;
        };
        let batch = {
            let mut b = self.events.lock().unwrap_or_else(|e| e.into_inner());
            b.since = None;
            std::mem::take(&mut b.pending)
        };
        let rows: Vec<(i64, &str, Option<&str>, &str)> = batch
            .iter()
            .map(|(ts, l, s, m)| (*ts, l.as_str(), s.as_deref(), m.as_str()))
            .collect();
        if let Err(e) = store.add_events(run_id, &rows) {
            tracing::warn!("could not record {} run event(s): {e}", rows.len());
        }
    }

    /// A service's effective retention: its own, else the global one.
    pub fn retention_for<'a>(
        &'a self,
        svc: &'a ServiceConfig,
    ) -> &'a crate::config::RetentionConfig {
        svc.retention
            .as_ref()
            .unwrap_or(&self.config.global.backup.retention)
    }

    /// The global destinations a service uses (its `destinations` names,
    /// or all of them).
    pub fn destinations_for<'a>(
        &'a self,
        svc: &ServiceConfig,
    ) -> Vec<&'a crate::config::DestinationConfig> {
        self.config
            .global
            .backup
            .destinations
            .iter()
            .filter(|d| {
                svc.destinations
                    .as_ref()
                    .is_none_or(|names| names.contains(&d.name))
            })
            .collect()
    }

    /// The directory a service's archives live in.
    pub fn backup_dir(&self, service: &str) -> std::path::PathBuf {
        self.paths.backup_root.join(service)
    }

    /// A service as scripts see it: its configuration (secrets redacted)
    /// plus resolved values (`backup_dir`, effective `retention`,
    /// `destinations` as `{name, path}` maps).
    pub fn service_map(&self, svc: &ServiceConfig) -> Dynamic {
        // Straight to a Rhai map (no JSON in between): this runs for every
        // service of every run, and a service can hold many checks.
        let mut d = rhai::serde::to_dynamic(svc).unwrap_or(Dynamic::UNIT);
        self.complete_service_map(svc, &mut d);
        d
    }

    /// [`Host::service_map`] without `health_checks`, as in `ctx.services`:
    /// the checks are most of a service's configuration, and ctx is copied
    /// into every step call (scripts get them from `config::service`).
    pub fn service_map_for_ctx(&self, svc: &ServiceConfig) -> Dynamic {
        let light = ServiceConfig {
            health_checks: Vec::new(),
            ..svc.clone()
        };
        let mut d = rhai::serde::to_dynamic(&light).unwrap_or(Dynamic::UNIT);
        if let Some(mut m) = d.write_lock::<Map>() {
            m.remove("health_checks");
        }
        self.complete_service_map(svc, &mut d);
        d
    }

    /// Redact a serialised service and add its resolved values.
    fn complete_service_map(&self, svc: &ServiceConfig, d: &mut Dynamic) {
        scrub_dynamic(d);
        if let Some(mut m) = d.write_lock::<Map>() {
            // Each check keeps the keys of its type (and the common ones):
            // a map of 13 keys rather than 21, copied with ctx on every step.
            if let Some(mut checks) = m
                .get_mut("health_checks")
                .and_then(|c| c.write_lock::<Array>())
            {
                for (c, cfg) in checks.iter_mut().zip(&svc.health_checks) {
                    if let Some(mut cm) = c.write_lock::<Map>() {
                        let keep = cfg.check_type.keys();
                        cm.retain(|k, _| {
                            HealthCheckConfig::COMMON_KEYS.contains(&k.as_str())
                                || keep.contains(&k.as_str())
                        });
                    }
                }
            }
            m.insert("type".into(), svc.service_type.as_str().into());
            m.insert(
                "backup_dir".into(),
                self.backup_dir(&svc.name).display().to_string().into(),
            );
            let retention = self.retention_for(svc);
            m.insert(
                "retention".into(),
                rhai::serde::to_dynamic(retention).unwrap_or(Dynamic::UNIT),
            );
            let dests: Array = self
                .destinations_for(svc)
                .into_iter()
                .map(|d| {
                    let mut dm = Map::new();
                    dm.insert("name".into(), d.name.clone().into());
                    dm.insert("path".into(), d.path.display().to_string().into());
                    Dynamic::from_map(dm)
                })
                .collect();
            m.insert("destinations".into(), dests.into());
        }
    }

    /// The `ctx` map handed to `run(ctx)` and to every step.
    pub fn ctx_map(&self, services: &[&ServiceConfig]) -> Map {
        let mut ctx = Map::new();
        ctx.insert("workflow".into(), self.workflow.clone().into());
        ctx.insert("run_id".into(), Dynamic::from(self.run_id.unwrap_or(-1)));
        ctx.insert("dry_run".into(), self.dry_run.into());
        ctx.insert("hostname".into(), self.hostname.clone().into());
        ctx.insert(
            "started_at".into(),
            Dynamic::from(chrono::Utc::now().timestamp()),
        );
        ctx.insert(
            "backup_root".into(),
            self.paths.backup_root.display().to_string().into(),
        );
        let svcs: Array = services
            .iter()
            .map(|s| self.service_map_for_ctx(s))
            .collect();
        ctx.insert("services".into(), svcs.into());
        if let Some(id) = self.backup_id {
            ctx.insert("backup_id".into(), Dynamic::from(id));
        }
        if self.recover {
            ctx.insert("recover".into(), true.into());
        }
        ctx
    }

    /// The service the current native call runs for (from the call tag).
    pub fn tag_service(tag: Option<&Dynamic>) -> Option<String> {
        tag.and_then(|t| t.clone().into_string().ok())
            .filter(|s| !s.is_empty())
    }

    /// Run one step function for one service in that service's program.
    /// Catchable script errors become a failed outcome; a deadline or
    /// cancellation is passed through so nothing can swallow it.
    pub fn call_for_service(
        &self,
        engine: &Engine,
        service: &str,
        fn_name: &str,
        svc: Dynamic,
        ctx: Dynamic,
    ) -> Result<ServiceOutcome, Box<EvalAltResult>> {
        let program = self.program.get().expect("program loaded before run");
        let ast = program.ast_for(service);
        let options = CallFnOptions::new()
            .with_tag(Dynamic::from(service.to_string()))
            .eval_ast(true);
        let started = std::time::Instant::now();
        engine::reset_thread();
        let res = engine.call_fn_with_options::<Dynamic>(
            options,
            &mut Scope::new(),
            ast,
            fn_name,
            (svc, ctx),
        );
        let outcome = match res {
            Ok(v) => {
                let flag = |k: &str| {
                    v.read_lock::<Map>()
                        .and_then(|m| m.get(k).and_then(|s| s.as_bool().ok()))
                };
                // A step may fail its service and still return what it
                // did: `#{ok: false, error: "...", ...}` (the update
                // workflow's rolled_back and the like).
                let ok = flag("ok") != Some(false);
                let error = (!ok).then(|| {
                    v.read_lock::<Map>()
                        .and_then(|m| m.get("error").map(|e| e.to_string()))
                        .unwrap_or_else(|| "failed".into())
                });
                if let Some(e) = &error {
                    self.event(
                        tracing::Level::ERROR,
                        Some(service),
                        &format!("failed: {e}"),
                    );
                }
                ServiceOutcome {
                    service: service.into(),
                    ok,
                    skipped: ok && flag("skipped").unwrap_or(false),
                    error,
                    error_kind: None,
                    result: dynamic_to_json(&v),
                }
            }
            Err(e) if e.is_catchable() && !e.unwrap_inner().is_system_exception() => {
                let msg = self.describe_error(&e);
                self.event(
                    tracing::Level::ERROR,
                    Some(service),
                    &format!("failed: {msg}"),
                );
                ServiceOutcome {
                    service: service.into(),
                    ok: false,
                    skipped: false,
                    error: Some(msg),
                    error_kind: thrown_kind(&e),
                    result: serde_json::Value::Null,
                }
            }
            Err(e) => {
                self.watch.note_stopped_in(fn_name, service);
                return Err(e);
            }
        };
        tracing::debug!("[{service}] {fn_name} finished in {:?}", started.elapsed());
        self.outcomes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(outcome.clone());
        Ok(outcome)
    }

    /// A script error as `file:line: message`, naming the file the failing
    /// function came from.
    pub fn describe_error(&self, err: &EvalAltResult) -> String {
        let (file, line, message) = self.locate_error(err);
        match (file, line) {
            (Some(f), Some(l)) => format!("{f}:{l}: {message}"),
            (Some(f), None) => format!("{f}: {message}"),
            _ => message,
        }
    }

    /// File, line and message of an error. A catchable error is placed
    /// where it began, even when a shipped step caught it and threw it again
    /// (with the debugger hook). A stop is placed at the statement it hit
    /// (with the hook); without the hook, at the step and service it
    /// stopped in, as far as they are known.
    fn locate_error(&self, err: &EvalAltResult) -> (Option<String>, Option<usize>, String) {
        let mut cur = err;
        let mut source: Option<String> = None;
        loop {
            match cur {
                EvalAltResult::ErrorInFunctionCall(_name, src, inner, _) => {
                    if !src.is_empty() {
                        source = Some(src.clone());
                    }
                    cur = inner;
                }
                EvalAltResult::ErrorInModule(path, inner, _) => {
                    source = Some(format!("module {path}"));
                    cur = inner;
                }
                _ => break,
            }
        }
        let message = error_message(cur);
        if cur.is_system_exception() {
            // The position was rewritten on the way out; use the statement
            // the debugger hook saw when the stop hit.
            if let Some(at) = self.watch.stop_location() {
                return (at.source.or(source), at.pos.line(), message);
            }
            let stopped_in = self
                .watch
                .stopped_in
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            return match stopped_in {
                Some((step, service)) => {
                    let file = self
                        .program
                        .get()
                        .and_then(|p| p.origin_of(&service, &step));
                    (
                        file.or(source),
                        None,
                        format!("{message} (in {step} for service {service})"),
                    )
                }
                None => (source, None, message),
            };
        }
        if let Some(origin) = engine::origin_of(&message) {
            if let Some(line) = origin.at.pos.line() {
                return (origin.at.source.or(source), Some(line), origin.text);
            }
        }
        (source, cur.position().line(), message)
    }
}

/// The `kind` of the map a primitive threw (`#{kind, message, service}`),
/// through the function calls it passed.
fn thrown_kind(err: &EvalAltResult) -> Option<String> {
    match engine::innermost(err).0 {
        EvalAltResult::ErrorRuntime(v, _) => v
            .read_lock::<Map>()
            .and_then(|m| m.get("kind").map(|k| k.to_string())),
        _ => None,
    }
}

/// The message of an error without Rhai's position suffix; a map thrown by a
/// primitive (`#{kind, message}`) gives its `message`.
pub fn error_message(err: &EvalAltResult) -> String {
    match err {
        EvalAltResult::ErrorTerminated(token, _) => {
            if token.clone().try_cast::<engine::Stop>() == Some(engine::Stop::Cancelled) {
                "script stopped: the run was cancelled".into()
            } else {
                "script stopped: the run's deadline (global.scripts.timeout_seconds) passed".into()
            }
        }
        EvalAltResult::ErrorTooManyOperations(_) => {
            "script stopped: too many operations (global.scripts.max_operations)".into()
        }
        other => engine::error_text(other),
    }
}

/// Run `run(ctx)` of the loaded program and collect the outcome.
pub fn run_program(
    host: &Arc<Host>,
    engine: &Engine,
    services: &[&ServiceConfig],
) -> Result<RunOutcome> {
    let program = host.program.get().expect("program loaded");
    if !program.has_fn("run", 1) {
        return Err(Error::Script {
            file: program.name.clone(),
            line: 0,
            message: "the workflow defines no `fn run(ctx)`".into(),
        });
    }
    let ctx = host.ctx_map(services);
    tracing::trace!("run context built");
    let options = CallFnOptions::new()
        .with_tag(Dynamic::from(String::new()))
        .eval_ast(true);
    engine::reset_thread();
    let res = engine.call_fn_with_options::<Dynamic>(
        options,
        &mut Scope::new(),
        &program.base,
        "run",
        (Dynamic::from_map(ctx),),
    );
    let outcomes = host
        .outcomes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let notifications = host
        .notifications
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let warnings = host.warnings.load(Ordering::Relaxed);
    let partial = host.partial.load(Ordering::Relaxed);
    host.flush_events();
    match res {
        Ok(v) => {
            let value = dynamic_to_json(&v);
            let script_failed = value.get("ok").and_then(|o| o.as_bool()) == Some(false);
            let ok = !script_failed && outcomes.iter().all(|o| o.ok);
            Ok(RunOutcome {
                ok,
                error: None,
                services: outcomes,
                warnings,
                partial,
                notifications,
                value,
            })
        }
        Err(e) => {
            let msg = host.describe_error(&e);
            Ok(RunOutcome {
                ok: false,
                error: Some(msg),
                services: outcomes,
                warnings,
                partial,
                notifications,
                value: serde_json::Value::Null,
            })
        }
    }
}

/// Build the engine for a host. `register` adds the primitive modules (the
/// run session passes `primitives::register_all`), so this layer does not
/// depend on them.
pub fn build_engine(host: &Arc<Host>, register: impl FnOnce(&mut Engine, &Arc<Host>)) -> Engine {
    let mut engine = engine::new_engine(&host.limits, &host.scripts, host.watch.clone());
    register(&mut engine, host);
    engine
}
