//! `homelab-autopilot daemon`: the loop that runs the configured schedules.
//!
//! Each due workflow runs as its own child process, `homelab-autopilot run
//! WORKFLOW` with the daemon's global options: the same run session a timer
//! or a person starts (lock, state, notifications, metrics), with its own
//! log file, signal handling and memory, and a crash of one run never takes
//! the daemon down. The daemon keeps one process per workflow at most: a
//! slot that comes while the previous run still goes is skipped and
//! recorded (a `skipped` run and the schedule row).
//!
//! Signals: SIGHUP reloads the configuration and checks the scripts; a bad
//! configuration is refused, the one loaded before is kept, and a
//! `config_rejected` notification goes out. SIGTERM or SIGINT stops
//! scheduling and lets running workflows finish within the grace period
//! (`daemon.stop_grace_seconds`), then asks them to stop at their next safe
//! point (SIGTERM; they record the run `aborted`) and, 40 s later, kills
//! what is left. A second SIGTERM or SIGINT skips the grace.
//!
//! Under systemd (`Type=notify`) it sends READY, STATUS, RELOADING,
//! STOPPING and, with `WatchdogSec=`, WATCHDOG ([`super::sd_notify`]).

use super::plan::{Decision, Planner, Settings};
use super::{sd_notify, Job};
use crate::config::{Config, Severity};
use crate::error::Result;
use crate::schedule::Zone;
use crate::state::{SlotAction, Store};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// What the daemon needs from a (re)load.
pub struct Loaded {
    pub cfg: Config,
    pub store: Store,
    /// The scheduled jobs whose workflow exists.
    pub jobs: Vec<Job>,
    pub lock_dir: PathBuf,
}

/// How the daemon loads its configuration and starts runs.
pub struct Options {
    /// Load and check the configuration and scripts, open the state DB:
    /// at start and at each SIGHUP.
    pub load: Box<dyn Fn() -> Result<Loaded>>,
    /// The program and global options a run is started with; `run
    /// WORKFLOW` is appended.
    pub run_argv: Vec<OsString>,
}

/// After the grace and SIGTERM, how long a run has to stop at a safe point
/// (its own hard stop is 30 s after the signal) before it is killed.
const KILL_AFTER: Duration = Duration::from_secs(40);

static HANGUP: AtomicBool = AtomicBool::new(false);
static STOPS: AtomicU32 = AtomicU32::new(0);
static STOP_SIGNAL: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if sig == libc::SIGHUP {
        HANGUP.store(true, Ordering::SeqCst);
    } else {
        STOP_SIGNAL.store(sig as u32, Ordering::SeqCst);
        STOPS.fetch_add(1, Ordering::SeqCst);
    }
}

/// SIGHUP, SIGTERM and SIGINT only set flags the loop reads (the
/// handler stores to atomics, async-signal-safe).
fn install_signals() {
    crate::signals::handle(&[libc::SIGHUP, libc::SIGTERM, libc::SIGINT], on_signal);
}

/// One run the daemon started and still waits for.
struct Running {
    child: Child,
    slot: DateTime<Utc>,
}

struct Daemon {
    opts: Options,
    loaded: Loaded,
    planner: Planner,
    running: BTreeMap<String, Running>,
}

/// Run until SIGTERM or SIGINT; the exit code is 0 after a clean stop.
pub fn run(opts: Options) -> Result<u8> {
    install_signals();
    let loaded = (opts.load)()?;
    // One daemon per state: a second one would run every slot twice.
    let _lock = crate::lock::acquire(&loaded.lock_dir, "daemon")?;
    let now = Utc::now();
    let (planner, seeds) = plan(&loaded, now);
    let mut d = Daemon {
        opts,
        loaded,
        planner,
        running: BTreeMap::new(),
    };
    d.record_all(&seeds);
    tracing::info!(
        "daemon started (pid {}): {}",
        std::process::id(),
        d.describe()
    );
    sd_notify::notify(&format!("READY=1\nSTATUS={}", d.describe()));
    let watchdog = sd_notify::watchdog_interval();
    let mut last_ping = Instant::now();
    while STOPS.load(Ordering::SeqCst) == 0 {
        if HANGUP.swap(false, Ordering::SeqCst) {
            d.reload();
        }
        d.reap();
        let now = Utc::now();
        let running = |w: &str| d.running.contains_key(w);
        let decisions = d.planner.tick(now, running);
        for dec in &decisions {
            d.carry_out(dec);
        }
        if !decisions.is_empty() {
            sd_notify::notify(&format!("STATUS={}", d.describe()));
        }
        if let Some(every) = watchdog {
            if last_ping.elapsed() >= every {
                sd_notify::notify("WATCHDOG=1");
                last_ping = Instant::now();
            }
        }
        let wait = d
            .planner
            .next_wake()
            .and_then(|w| (w - Utc::now()).to_std().ok())
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        std::thread::sleep(wait);
    }
    d.stop(watchdog);
    Ok(0)
}

fn settings(cfg: &Config) -> Settings {
    Settings {
        zone: cfg.daemon.timezone,
        jitter: chrono::Duration::seconds(cfg.daemon.jitter_seconds.min(86_400) as i64),
        catch_up: cfg.daemon.catch_up,
    }
}

fn random(max: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % (u128::from(max) + 1)) as u64
}

/// A planner for the loaded jobs, from the slots the state DB holds.
fn plan(l: &Loaded, now: DateTime<Utc>) -> (Planner, Vec<Decision>) {
    let stored = |wf: &str| match l.store.schedule_slot(wf) {
        Ok(row) => row.and_then(|r| DateTime::from_timestamp(r.last_slot, 0)),
        Err(e) => {
            tracing::warn!("could not read the schedule of {wf}: {e}");
            None
        }
    };
    Planner::new(
        settings(&l.cfg),
        l.jobs.clone(),
        stored,
        Box::new(random),
        now,
    )
}

fn when(zone: Zone, t: DateTime<Utc>) -> String {
    zone.wall(t).format("%Y-%m-%d %H:%M").to_string()
}

impl Daemon {
    fn zone(&self) -> Zone {
        self.loaded.cfg.daemon.timezone
    }

    /// `backup next 2025-01-02 02:30, monitor running, ...`
    fn describe(&self) -> String {
        let parts: Vec<String> = self
            .planner
            .upcoming()
            .iter()
            .map(|(j, next)| {
                let state = if self.running.contains_key(&j.workflow) {
                    "running, ".to_string()
                } else {
                    String::new()
                };
                match next {
                    Some(n) => format!("{} {state}next {}", j.workflow, when(self.zone(), *n)),
                    None => format!("{} {state}never again", j.workflow),
                }
            })
            .collect();
        if parts.is_empty() {
            "nothing scheduled".into()
        } else {
            parts.join("; ")
        }
    }

    fn record_all(&self, decisions: &[Decision]) {
        for d in decisions {
            self.record(d);
        }
    }

    fn record(&self, d: &Decision) {
        if let Err(e) = self.loaded.store.record_slot(
            &d.workflow,
            &d.expression,
            d.slot.timestamp(),
            d.action,
            d.next.map(|n| n.timestamp()),
        ) {
            tracing::error!("could not record the schedule of {}: {e}", d.workflow);
        }
    }

    fn carry_out(&mut self, d: &Decision) {
        let slot = when(self.zone(), d.slot);
        match d.action {
            SlotAction::Started => {
                if d.caught_up || d.passed_over > 0 {
                    tracing::info!(
                        "{}: catching up the slot of {slot}, missed while the daemon was not \
                         running{}",
                        d.workflow,
                        if d.passed_over > 0 {
                            format!(" ({} earlier slot(s) passed over)", d.passed_over)
                        } else {
                            String::new()
                        }
                    );
                }
                match self.spawn(&d.workflow) {
                    Ok(child) => {
                        tracing::info!("{}: slot {slot} started (pid {})", d.workflow, child.id());
                        self.running.insert(
                            d.workflow.clone(),
                            Running {
                                child,
                                slot: d.slot,
                            },
                        );
                    }
                    Err(e) => {
                        tracing::error!("{}: could not start the run: {e}", d.workflow)
                    }
                }
            }
            SlotAction::Skipped => {
                let r = &self.running[&d.workflow];
                let why = format!(
                    "scheduled slot {slot} skipped: the run of slot {} (pid {}) is still going",
                    when(self.zone(), r.slot),
                    r.child.id()
                );
                tracing::warn!("{}: {why}", d.workflow);
                if let Err(e) = self.loaded.store.record_skipped_run(&d.workflow, &[], &why) {
                    tracing::error!("could not record the skipped run: {e}");
                }
            }
            SlotAction::Missed => tracing::warn!(
                "{}: slot {slot} passed while the daemon was not running; not run \
                 (daemon.catch_up is off)",
                d.workflow
            ),
            SlotAction::Seeded => {}
        }
        self.record(d);
    }

    fn spawn(&self, workflow: &str) -> std::io::Result<Child> {
        use std::os::unix::process::CommandExt;
        let (program, args) = self
            .opts
            .run_argv
            .split_first()
            .expect("the run command names a program");
        Command::new(program)
            .args(args)
            .arg("run")
            .arg(workflow)
            .stdin(Stdio::null())
            // The run's notifications are its own; systemd's socket and
            // watchdog are the daemon's.
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            // Its own process group: a terminal's Ctrl-C reaches the
            // daemon, which decides when a run is stopped.
            .process_group(0)
            .spawn()
    }

    /// Collect the runs that ended.
    fn reap(&mut self) {
        let mut done = Vec::new();
        for (wf, r) in self.running.iter_mut() {
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    let code = status.code();
                    let what = match code {
                        Some(0) => "succeeded",
                        Some(3) => "finished with warnings",
                        Some(75) => "found its lock held (another run of it is going)",
                        Some(78) => "found the configuration invalid",
                        Some(130) | Some(143) => "was stopped by a signal",
                        Some(_) => "failed",
                        None => "was killed",
                    };
                    let line = format!(
                        "{wf}: run of slot {} {what} (exit {})",
                        when(self.loaded.cfg.daemon.timezone, r.slot),
                        code.map(|c| c.to_string()).unwrap_or_else(|| "-".into())
                    );
                    if code == Some(0) {
                        tracing::info!("{line}");
                    } else {
                        tracing::warn!("{line}");
                    }
                    done.push(wf.clone());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!("{wf}: could not wait for the run: {e}");
                    done.push(wf.clone());
                }
            }
        }
        for wf in done {
            self.running.remove(&wf);
        }
    }

    /// SIGHUP: load again; keep the old configuration if the new one fails.
    fn reload(&mut self) {
        sd_notify::reloading();
        tracing::info!("SIGHUP: reloading the configuration and scripts");
        match (self.opts.load)() {
            Ok(new) => {
                self.loaded = new;
                let (planner, seeds) = plan(&self.loaded, Utc::now());
                self.planner = planner;
                self.record_all(&seeds);
                tracing::info!("configuration reloaded: {}", self.describe());
            }
            Err(e) => {
                let text = crate::redact::scrub(&e.to_string()).into_owned();
                tracing::error!(
                    "reload refused, the configuration loaded before stays in force: {text}"
                );
                self.alert(&text);
            }
        }
        sd_notify::notify(&format!("READY=1\nSTATUS={}", self.describe()));
    }

    /// The `config_rejected` notification, through the kept configuration.
    fn alert(&self, errors: &str) {
        let host = crate::system::hostname();
        let summary = format!(
            "homelab-autopilot on {host}: the new configuration was refused; the daemon keeps \
             running with the one loaded before"
        );
        let event = crate::notify::Event {
            event: "config_rejected".into(),
            severity: Severity::Warning,
            workflow: "daemon".into(),
            hostname: host,
            summary: summary.clone(),
            data: serde_json::json!({
                "summary": summary,
                "subject": "configuration",
                "errors": errors.lines().collect::<Vec<_>>(),
            }),
            ts: Utc::now().timestamp(),
        };
        let reports = crate::notify::deliver_run(
            &self.loaded.cfg,
            Some(&self.loaded.store),
            None,
            &[event],
            false,
        );
        for r in reports {
            tracing::info!(
                "config_rejected notification to {}: {}",
                r.channel,
                r.status.as_str()
            );
        }
    }

    /// SIGTERM/SIGINT: let the running workflows finish within the grace,
    /// then ask them to stop, then kill them.
    fn stop(&mut self, watchdog: Option<Duration>) {
        sd_notify::notify("STOPPING=1");
        let sig = STOP_SIGNAL.load(Ordering::SeqCst) as i32;
        let signame = if sig == libc::SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        self.reap();
        if self.running.is_empty() {
            tracing::info!("{signame}: daemon stopped");
            return;
        }
        let grace = Duration::from_secs(self.loaded.cfg.daemon.stop_grace_seconds);
        tracing::info!(
            "{signame}: no new runs; waiting up to {} s for {} to finish (a second signal \
             stops them now)",
            grace.as_secs(),
            self.names()
        );
        self.wait(grace, true, watchdog);
        if !self.running.is_empty() {
            tracing::warn!(
                "asking {} to stop at the next safe point (SIGTERM)",
                self.names()
            );
            for r in self.running.values() {
                // SAFETY: kill(2) with a pid we started and have not reaped.
                unsafe { libc::kill(r.child.id() as i32, libc::SIGTERM) };
            }
            self.wait(KILL_AFTER, false, watchdog);
        }
        for (wf, r) in self.running.iter_mut() {
            tracing::error!("{wf}: did not stop; killing its process group");
            // SAFETY: as above; the negative pid names its process group.
            unsafe { libc::kill(-(r.child.id() as i32), libc::SIGKILL) };
            let _ = r.child.wait();
        }
        self.running.clear();
        tracing::info!("{signame}: daemon stopped");
    }

    /// Wait up to `limit` for the runs to end; with `interruptible`, a
    /// second stop signal ends the wait.
    fn wait(&mut self, limit: Duration, interruptible: bool, watchdog: Option<Duration>) {
        let start = Instant::now();
        let mut last_ping = Instant::now();
        while !self.running.is_empty() && start.elapsed() < limit {
            if interruptible && STOPS.load(Ordering::SeqCst) > 1 {
                return;
            }
            if let Some(every) = watchdog {
                if last_ping.elapsed() >= every {
                    sd_notify::notify("WATCHDOG=1");
                    last_ping = Instant::now();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            self.reap();
        }
    }

    fn names(&self) -> String {
        self.running.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}
