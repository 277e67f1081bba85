//! The run session: one workflow run from lock to report, the same for
//! every workflow (backup, monitor, and any the user writes).
//!
//! 1. [`prepare`]: load the configuration, pick the services; unless dry
//!    run, open the log files, take the workflow's lock, open the state DB,
//!    mark runs a dead process left `running` as aborted, remove our own temp
//!    debris, start what a dead run's consistency hold left stopped, lower
//!    the priority, insert the run row (a run that finds its lock held is
//!    recorded `skipped`). A dry run creates nothing (no lock file, no state
//!    DB, no log file).
//! 2. [`execute`]: the dead-man pings start, the engine is built with every
//!    primitive registered for this run's [`Host`], the program (shipped,
//!    user and per-service layers) is compiled and its `run(ctx)` called.
//! 3. [`conclude`]: what this run still holds stopped is put back, the
//!    outcome is recorded (`aborted` after SIGINT/SIGTERM, see
//!    [`crate::signals`]), the run's notifications are delivered (one
//!    message per channel), the metrics file rewritten and the pings
//!    finished; the caller gets a typed [`RunReport`] to print.

use crate::config::{Config, ServiceConfig};
use crate::error::{exit, Error, Result};
use crate::lock::WorkflowLock;
use crate::notify::pings::Pinger;
use crate::notify::DeliveryReport;
use crate::script::host::run_program;
use crate::script::{Engine, Host, Program, RunOutcome};
use crate::state::{RunStatus, Store};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Setup;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The workflow's name: a shipped one or one in the user scripts dir.
    pub workflow: String,
    /// `--service` names; empty means every enabled service.
    pub services: Vec<String>,
    /// `--backup ID` (restore-test): the catalog row to test instead of the
    /// latest verified one.
    pub backup: Option<i64>,
    pub dry_run: bool,
    /// `--recover` (update): only finish what a killed run left.
    pub recover: bool,
}

/// What a run did, for the command to print.
#[derive(Debug)]
pub struct RunReport {
    pub run_id: Option<i64>,
    pub workflow: String,
    pub dry_run: bool,
    pub status: RunStatus,
    pub summary: String,
    pub outcome: RunOutcome,
    pub deliveries: Vec<DeliveryReport>,
    /// Problems after the workflow itself (e.g. the metrics file), each a
    /// line for the user; they never change the exit code.
    pub warnings: Vec<String>,
    pub exit: u8,
}

/// Run one workflow through the whole session.
pub fn run(setup: &Setup, req: &RunRequest) -> Result<RunReport> {
    crate::signals::install();
    let prepared = prepare(setup, req)?;
    let watcher = SignalWatcher::start(prepared.host.clone());
    let executed = execute(&prepared, req);
    watcher.stop();
    conclude(&prepared, req, executed?)
}

/// How long a run may take to reach a safe point after SIGINT/SIGTERM
/// before the process ends anyway (systemd's own stop timeout is 90 s).
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Turns a received SIGINT/SIGTERM into the run's cancellation (the script
/// stops at its next statement, an archive at its next entry) and ends the
/// process if the run has not stopped within [`STOP_GRACE`].
struct SignalWatcher {
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SignalWatcher {
    fn start(host: Arc<Host>) -> SignalWatcher {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || watch_signals(&host, &d))
            .ok();
        SignalWatcher { done, thread }
    }

    fn stop(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Until `done`: on a signal, cancel the run; past the grace, exit.
fn watch_signals(host: &Host, done: &AtomicBool) {
    let sig = loop {
        if done.load(Ordering::Relaxed) {
            return;
        }
        if let Some(sig) = crate::signals::received() {
            break sig;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    host.watch.cancel.store(true, Ordering::Relaxed);
    tracing::warn!(
        "{} received: stopping at the next safe point (within {} s; a second signal ends the \
         run at once)",
        crate::signals::name(sig),
        STOP_GRACE.as_secs()
    );
    let started = Instant::now();
    while started.elapsed() < STOP_GRACE {
        if done.load(Ordering::Relaxed) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::error!(
        "the run did not stop within {} s of {}: ending it now",
        STOP_GRACE.as_secs(),
        crate::signals::name(sig)
    );
    std::process::exit(crate::signals::exit_code(sig).into());
}

/// A run that holds its lock and state, ready to execute.
struct Prepared {
    cfg: Arc<Config>,
    host: Arc<Host>,
    names: Vec<String>,
    /// Every workflow that exists (shipped and user-written), read once.
    workflows: Vec<String>,
    _lock: Option<WorkflowLock>,
}

fn prepare(setup: &Setup, req: &RunRequest) -> Result<Prepared> {
    let cfg = Arc::new(setup.load_config()?);
    tracing::trace!("configuration loaded");
    let paths = setup.paths(&cfg);
    let known = crate::script::Scripts::new(paths.scripts_dir.clone()).workflow_names();
    if !known.contains(&req.workflow) {
        // A usage error: nothing is locked, opened or recorded.
        return Err(Error::Usage(format!(
            "no workflow named '{}' (available: {}; see `workflows list`)",
            req.workflow,
            known.join(", ")
        )));
    }
    if req.recover && req.workflow != "update" {
        return Err(Error::Usage(format!(
            "--recover applies to the update workflow, not '{}'",
            req.workflow
        )));
    }
    let chosen = match req.backup {
        Some(id) => Some(chosen_backup(setup, &paths, req, id)?),
        None => None,
    };
    let wanted = match &chosen {
        Some(b) if req.services.is_empty() => vec![b.service.clone()],
        _ => req.services.clone(),
    };
    let services = select_services(&cfg.services, &wanted)?;
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    crate::monitor::checks::prewarm_http_client(&services);

    let (lock, store) = if req.dry_run {
        (None, setup.existing_store(&paths)?)
    } else {
        paths.ensure_dirs()?;
        if crate::logging::files_wanted(&cfg.global.logging) {
            let rotation = crate::logging::Rotation::from_config(&cfg.global.logging);
            crate::logging::open_main_log(&paths.log_dir, rotation)?;
            crate::logging::open_workflow_log(&paths.log_dir, &req.workflow, rotation)?;
        }
        let store = setup.open_store(&paths)?;
        let lock = match crate::lock::acquire(&paths.lock_dir, &req.workflow) {
            Ok(lock) => lock,
            Err(e @ Error::Locked { .. }) => {
                // The slot is recorded, so `status` shows why nothing ran.
                if let Err(se) = store.record_skipped_run(&req.workflow, &names, &e.to_string()) {
                    tracing::warn!("could not record the skipped run: {se}");
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        tracing::trace!("state opened");
        let stale = store.abort_stale_runs(&req.workflow)?;
        if stale > 0 {
            tracing::warn!(
                "{stale} earlier '{}' run(s) ended without finishing (process died); marked aborted",
                req.workflow
            );
        }
        remove_debris(&paths.backup_root, &names)?;
        // Containers and units a dead run left stopped (its consistency
        // hold) are started again before anything else happens.
        put_back_holds(crate::docker::hold::recover(
            &store,
            &crate::docker::hold::System,
        ));
        apply_priority(&cfg.global.backup);
        (Some(lock), Some(store))
    };
    let store = store.map(Arc::new);
    let run_id = match (&store, req.dry_run) {
        (Some(s), false) => Some(s.begin_run(&req.workflow, &names, false)?),
        _ => None,
    };
    let mut host = Host::new(
        cfg.clone(),
        paths,
        store,
        req.dry_run,
        run_id,
        &req.workflow,
    );
    host.backup_id = req.backup;
    host.recover = req.recover;
    let host = Arc::new(host);
    Ok(Prepared {
        cfg,
        host,
        names,
        workflows: known,
        _lock: lock,
    })
}

/// The workflow's outcome and the pings still to finish.
struct Executed {
    outcome: RunOutcome,
    pinger: Pinger,
}

fn execute(p: &Prepared, req: &RunRequest) -> Result<Executed> {
    let host = &p.host;
    // Dead-man pings (healthchecks.io /start, Uptime Kuma) for this run.
    let pinger = Pinger::start(&p.cfg, &req.workflow, req.dry_run);
    let engine = build_engine(host);
    tracing::trace!("engine built");
    let program = match Program::load(&engine, &host.scripts, &req.workflow, &p.names) {
        Ok(program) => program,
        Err(e) => {
            if let (Some(s), Some(id)) = (&host.store, host.run_id) {
                let _ = s.finish_run(id, RunStatus::Failed, &e.to_string());
            }
            pinger.fail(&e.to_string());
            return Err(e);
        }
    };
    let _ = host.program.set(program);
    tracing::trace!("workflow compiled");
    tracing::info!(
        "{}workflow {} started for {} service(s){}",
        if req.dry_run { "[dry-run] " } else { "" },
        req.workflow,
        p.names.len(),
        host.run_id
            .map(|id| format!(" (run {id})"))
            .unwrap_or_default()
    );
    let services: Vec<&ServiceConfig> = p
        .names
        .iter()
        .filter_map(|n| p.cfg.services.iter().find(|s| &s.name == n))
        .collect();
    match run_program(host, &engine, &services) {
        Ok(outcome) => Ok(Executed { outcome, pinger }),
        Err(e) => {
            pinger.fail(&e.to_string());
            Err(e)
        }
    }
}

/// The engine of one run: the script layer's limits and sandbox, with every
/// primitive module registered for this run's host.
pub fn build_engine(host: &Arc<Host>) -> Engine {
    crate::script::host::build_engine(host, crate::primitives::register_all)
}

fn conclude(p: &Prepared, req: &RunRequest, x: Executed) -> Result<RunReport> {
    let host = &p.host;
    let store = host.store.as_deref();
    let outcome = x.outcome;
    // Whatever this run still holds stopped (a hold the script never
    // released: a signal, a stop no script can catch) is started again.
    if let (Some(s), false) = (store, req.dry_run) {
        put_back_holds(crate::docker::hold::release_own(
            s,
            &crate::docker::hold::System,
        ));
    }
    let Verdict {
        status,
        summary,
        exit,
        interrupted,
    } = verdict(p, req, &outcome);
    if let (Some(s), Some(id)) = (store, host.run_id) {
        s.finish_run(id, status, &summary)?;
    }
    if !outcome.ok {
        tracing::error!("{summary}");
    }
    let mut notifications = outcome.notifications.clone();
    if let Some(event) = interrupted.and_then(|_| interruption_event(host, &summary)) {
        notifications.push(event);
    }
    // One message per channel for the whole run; a failed delivery is
    // recorded and warned about and never changes the exit code.
    let deliveries =
        crate::notify::deliver_run(&p.cfg, store, host.run_id, &notifications, req.dry_run);
    let mut warnings = Vec::new();
    // The Prometheus textfile, after the deliveries so their failures count.
    if let (Some(s), Some(dir), false) = (store, &host.paths.metrics_dir, req.dry_run) {
        if let Err(e) = crate::metrics::write(&p.cfg, &p.workflows, s, dir) {
            tracing::warn!("metrics file not written in {}: {e}", dir.display());
            warnings.push(format!("metrics file not written: {e}"));
        }
    }
    let log_tail = match (store, host.run_id) {
        (Some(s), Some(id)) => log_tail(s, id),
        _ => String::new(),
    };
    if interrupted.is_some() {
        x.pinger.fail(&format!("{log_tail}{summary}\n"));
    } else {
        x.pinger
            .finish(exit, &format!("{log_tail}{summary}\n"), &summary);
    }
    Ok(RunReport {
        run_id: host.run_id,
        workflow: req.workflow.clone(),
        dry_run: req.dry_run,
        status,
        summary,
        outcome,
        deliveries,
        warnings,
        exit,
    })
}

/// How a run ended, as recorded, printed and returned.
struct Verdict {
    status: RunStatus,
    summary: String,
    exit: u8,
    /// The SIGINT/SIGTERM that stopped the run.
    interrupted: Option<i32>,
}

fn verdict(p: &Prepared, req: &RunRequest, outcome: &RunOutcome) -> Verdict {
    let interrupted = crate::signals::received();
    if let Some(sig) = interrupted {
        return Verdict {
            status: RunStatus::Aborted,
            summary: format!(
                "interrupted by {}: {}",
                crate::signals::name(sig),
                summarize(outcome)
            ),
            exit: crate::signals::exit_code(sig),
            interrupted,
        };
    }
    // A shipped workflow with no service to work on is not a silent
    // success: the config (or `enabled: false` everywhere) is almost
    // certainly not what the admin meant. A user's own workflow may have
    // nothing to do with services.
    let shipped = crate::script::sources::shipped_workflow_names().contains(&req.workflow.as_str());
    if shipped && p.names.is_empty() && outcome.ok {
        let summary = format!(
            "no enabled service for the '{}' workflow: nothing done",
            req.workflow
        );
        tracing::warn!("{summary}");
        return Verdict {
            status: RunStatus::Warning,
            summary,
            exit: exit::WARNINGS,
            interrupted,
        };
    }
    // A service that failed because storage failed us (a full disk, an I/O
    // error) makes the run exit 74, as any I/O error does.
    let storage = outcome.services.iter().any(|o| {
        !o.ok
            && o.error_kind
                .as_deref()
                .is_some_and(crate::error::Error::is_storage_kind)
    });
    Verdict {
        status: status_of(outcome),
        summary: summarize(outcome),
        exit: match (outcome.ok, storage) {
            // A backup that left out files it could not read: done, but
            // not whole (docs/conventions.md, exit 3).
            (true, _) if outcome.partial > 0 => exit::WARNINGS,
            (true, _) => exit::OK,
            (false, true) => exit::IO,
            (false, false) => exit::FAILED,
        },
        interrupted,
    }
}

/// The one notification of an interrupted run: the workflow's own failure
/// event (`backup_failed`, ...), where it has one.
fn interruption_event(host: &Host, summary: &str) -> Option<crate::notify::Event> {
    use crate::config::EventType;
    let kind = match host.workflow.as_str() {
        "backup" => EventType::BackupFailed,
        "update" => EventType::UpdateFailed,
        "restore-test" => EventType::RestoreTestFailed,
        _ => return None,
    };
    Some(crate::notify::Event {
        event: kind.as_str().into(),
        severity: kind.severity(),
        workflow: host.workflow.clone(),
        hostname: host.hostname.clone(),
        summary: summary.to_string(),
        data: serde_json::json!({ "summary": summary, "interrupted": true }),
        ts: chrono::Utc::now().timestamp(),
    })
}

fn status_of(outcome: &RunOutcome) -> RunStatus {
    if !outcome.ok {
        RunStatus::Failed
    } else if outcome.warnings > 0 {
        RunStatus::Warning
    } else {
        RunStatus::Success
    }
}

/// The run's one-line summary (run row, pings, the last line printed).
fn summarize(outcome: &RunOutcome) -> String {
    let failed: Vec<&str> = outcome
        .services
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.service.as_str())
        .collect();
    match (&outcome.error, failed.is_empty()) {
        (Some(e), _) => format!("workflow failed: {e}"),
        (None, false) => format!(
            "{} of {} service(s) failed: {}",
            failed.len(),
            outcome.services.len(),
            failed.join(", ")
        ),
        (None, true) => format!(
            "{} service(s) done, {} warning(s)",
            outcome.services.len(),
            outcome.warnings
        ),
    }
}

/// The last lines of a run's event log, as a ping body.
fn log_tail(store: &Store, run_id: i64) -> String {
    store
        .run_events(run_id, 200)
        .unwrap_or_default()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}{}\n",
                crate::units::local_time(e.ts),
                e.level,
                e.service
                    .as_deref()
                    .map(|s| format!("[{s}] "))
                    .unwrap_or_default(),
                e.message
            )
        })
        .collect()
}

/// Log what putting held containers and units back did.
fn put_back_holds(res: Result<Vec<String>>) {
    match res {
        Ok(lines) => lines.iter().for_each(|l| tracing::warn!("{l}")),
        Err(e) => tracing::error!("could not read the consistency records: {e}"),
    }
}

/// Our own temp files left by an interrupted run in the services' backup
/// dirs (only ours: see `archive::cleanup_debris`).
fn remove_debris(backup_root: &std::path::Path, services: &[String]) -> Result<()> {
    for name in services {
        let dir = backup_root.join(name);
        if dir.is_dir() {
            for p in crate::archive::cleanup_debris(&dir)? {
                tracing::info!("removed debris of an interrupted run: {}", p.display());
            }
        }
    }
    Ok(())
}

/// `--service` names must exist; without them, every enabled service.
/// `--backup ID`: only for restore-test, a catalog row that exists, is an
/// archive of ours and belongs to the `--service` named (if any). Checked
/// before anything is locked or recorded: a usage error otherwise.
fn chosen_backup(
    setup: &Setup,
    paths: &crate::config::Paths,
    req: &RunRequest,
    id: i64,
) -> Result<crate::state::BackupRecord> {
    if req.workflow != "restore-test" {
        return Err(Error::Usage(format!(
            "--backup applies to the restore-test workflow, not '{}'",
            req.workflow
        )));
    }
    let store = setup.existing_store(paths)?;
    let b = match &store {
        Some(s) => s.backup(id)?,
        None => None,
    };
    let b = b.ok_or_else(|| {
        Error::Usage(format!(
            "--backup {id}: no backup with that ID in the catalog (see `backups list`)"
        ))
    })?;
    if !req.services.is_empty() && !req.services.contains(&b.service) {
        return Err(Error::Usage(format!(
            "--backup {id} is a backup of service {}, not of {}",
            b.service,
            req.services.join(", ")
        )));
    }
    if !crate::restoretest::restorable_kind(&b.kind) {
        return Err(Error::Usage(format!(
            "--backup {id} is a {} backup of {}; restore tests restore archives, vzdump \
             volumes and PBS snapshots",
            b.kind, b.service
        )));
    }
    if b.status != crate::state::BackupStatus::Complete {
        return Err(Error::Usage(format!(
            "--backup {id} ({}) is {}, not a complete backup",
            b.service,
            b.status.as_str()
        )));
    }
    Ok(b)
}

fn select_services<'a>(
    all: &'a [ServiceConfig],
    wanted: &[String],
) -> Result<Vec<&'a ServiceConfig>> {
    if wanted.is_empty() {
        return Ok(all.iter().filter(|s| s.enabled).collect());
    }
    wanted
        .iter()
        .map(|w| {
            all.iter().find(|s| &s.name == w).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
                Error::Usage(format!(
                    "no service named '{w}' (configured: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// Lower priority for heavy work: nice and ionice for this process
/// (threads started later, like zstd's workers, inherit it).
fn apply_priority(backup: &crate::config::BackupConfig) {
    let ioclass = crate::proc::ionice_class(backup.ionice.as_deref());
    if let Err((what, e)) = crate::proc::set_priority(backup.nice, ioclass) {
        tracing::warn!("could not set {what}: {e}");
    }
}
