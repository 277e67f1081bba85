//! Consistency around an archive: stop (or pause) what a service runs,
//! and put it back as it was afterwards, always.
//!
//! Before anything is stopped, a [`HoldRecord`] naming the containers and
//! units this run is about to stop is written to the state DB's key/value
//! table (`consistency.held.<service>`). [`release`] starts them again and
//! removes the record. A run killed in between leaves the record behind:
//! [`recover`], called at the start of every workflow run, starts what a
//! dead run left stopped (or unpauses what it left paused), then removes
//! the record. A record whose process is still alive (another run in
//! progress) is left alone.

use crate::error::{Error, Result};
use crate::state::Store;
use serde::{Deserialize, Serialize};

/// Key prefix of hold records in the key/value state.
pub const KEY_PREFIX: &str = "consistency.held.";

/// `backup_consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stop,
    Pause,
    Live,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "stop" => Some(Mode::Stop),
            "pause" => Some(Mode::Pause),
            "live" => Some(Mode::Live),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Stop => "stop",
            Mode::Pause => "pause",
            Mode::Live => "live",
        }
    }
}

/// Something a hold acts on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    Container(String),
    Unit(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Container(n) => write!(f, "container {n}"),
            Target::Unit(n) => write!(f, "unit {n}"),
        }
    }
}

/// What a target is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Stopped,
}

/// What to do to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Act {
    Stop,
    Start,
    Pause,
    Unpause,
}

/// Acts on targets: the Docker engine and systemctl for real, a recording
/// fake in tests.
pub trait Controller {
    fn state(&self, t: &Target) -> Result<RunState>;
    fn act(&self, t: &Target, act: Act) -> Result<()>;
}

/// The engine for containers, `systemctl` (argv) for units.
pub struct System;

/// `systemctl ACTION -- UNIT`.
pub fn systemctl_argv(action: &str, unit: &str) -> Vec<String> {
    vec![
        "systemctl".into(),
        action.into(),
        "--".into(),
        unit.to_string(),
    ]
}

fn systemctl(action: &str, unit: &str) -> Result<crate::proc::RunInfo> {
    crate::proc::run(
        &systemctl_argv(action, unit),
        &crate::proc::RunOptions {
            timeout_seconds: 300,
            max_output: 64 * 1024,
            ..Default::default()
        },
    )
}

impl Controller for System {
    fn state(&self, t: &Target) -> Result<RunState> {
        match t {
            Target::Container(name) => {
                let v = super::engine::inspect_container(name)?.ok_or_else(|| Error::Command {
                    program: "docker".into(),
                    message: format!("no such container: {name}"),
                })?;
                let flag = |k: &str| v["State"][k].as_bool() == Some(true);
                Ok(if flag("Paused") {
                    RunState::Paused
                } else if flag("Running") {
                    RunState::Running
                } else {
                    RunState::Stopped
                })
            }
            Target::Unit(unit) => {
                // `is-active` prints the state and exits 0 only for active.
                let out = systemctl("is-active", unit)?;
                Ok(match out.stdout.trim() {
                    "active" | "reloading" | "activating" => RunState::Running,
                    _ => RunState::Stopped,
                })
            }
        }
    }

    fn act(&self, t: &Target, act: Act) -> Result<()> {
        match t {
            Target::Container(name) => {
                let a = match act {
                    Act::Stop => super::engine::Action::Stop,
                    Act::Start => super::engine::Action::Start,
                    Act::Pause => super::engine::Action::Pause,
                    Act::Unpause => super::engine::Action::Unpause,
                };
                super::engine::act(name, a)
            }
            Target::Unit(unit) => {
                let action = match act {
                    Act::Stop => "stop",
                    Act::Start => "start",
                    Act::Pause | Act::Unpause => {
                        return Err(Error::Usage(format!(
                            "unit {unit}: systemd units cannot be paused (use backup_consistency: stop)"
                        )))
                    }
                };
                let out = systemctl(action, unit)?;
                if out.code != 0 {
                    return Err(Error::Command {
                        program: "systemctl".into(),
                        message: format!(
                            "systemctl {action} {unit}: exit {}: {}",
                            out.code,
                            out.stderr.trim()
                        ),
                    });
                }
                Ok(())
            }
        }
    }
}

/// The record of what a run stopped, kept until it is started again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub service: String,
    /// What was done (`stop` or `pause`); undone by start or unpause.
    pub act: Act,
    pub targets: Vec<Target>,
    pub pid: u32,
    /// The process's start time (`/proc/PID/stat` field 22), so a reused
    /// pid is not taken for the run that wrote the record.
    pub pid_start: u64,
    pub run_id: Option<i64>,
}

/// What a hold did; hand it to [`release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub service: String,
    pub mode: Mode,
    /// The targets this hold stopped or paused (running ones only).
    pub targets: Vec<Target>,
}

fn key(service: &str) -> String {
    format!("{KEY_PREFIX}{service}")
}

/// A process's start time in clock ticks since boot.
pub fn pid_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count from its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(r: &HoldRecord) -> bool {
    pid_start(r.pid) == Some(r.pid_start)
}

/// Stop or pause the running targets (`Live`: nothing). The record is
/// written first; when an action fails, what was already done is undone
/// and the error returned.
pub fn hold(
    store: Option<&Store>,
    run_id: Option<i64>,
    service: &str,
    mode: Mode,
    targets: &[Target],
    ctl: &dyn Controller,
) -> Result<Held> {
    let mut held = Held {
        service: service.to_string(),
        mode,
        targets: Vec::new(),
    };
    let act = match mode {
        Mode::Live => return Ok(held),
        Mode::Stop => Act::Stop,
        Mode::Pause => Act::Pause,
    };
    let mut todo = Vec::new();
    for t in targets {
        if ctl.state(t)? == RunState::Running {
            todo.push(t.clone());
        }
    }
    if todo.is_empty() {
        return Ok(held);
    }
    if let Some(store) = store {
        let pid = std::process::id();
        let rec = HoldRecord {
            service: service.to_string(),
            act,
            targets: todo.clone(),
            pid,
            pid_start: pid_start(pid).unwrap_or(0),
            run_id,
        };
        let v = serde_json::to_value(&rec).map_err(|e| Error::Other(e.to_string()))?;
        store.kv_set(&key(service), &v, run_id)?;
    }
    for t in &todo {
        if let Err(e) = ctl.act(t, act) {
            let undo = release(store, &held, ctl);
            // Nothing of this hold is left stopped: the record can go.
            if undo.is_ok() {
                if let Some(store) = store {
                    store.kv_delete(&key(service))?;
                }
            }
            return Err(e);
        }
        held.targets.push(t.clone());
    }
    Ok(held)
}

/// Start (or unpause) what [`hold`] stopped (or paused), every target even
/// when one fails; the record is removed once all are back. The first
/// error is returned.
pub fn release(store: Option<&Store>, held: &Held, ctl: &dyn Controller) -> Result<()> {
    let undo = match held.mode {
        Mode::Live => return Ok(()),
        Mode::Stop => Act::Start,
        Mode::Pause => Act::Unpause,
    };
    let mut first = None;
    // In reverse: what was stopped last starts first.
    for t in held.targets.iter().rev() {
        if let Err(e) = ctl.act(t, undo) {
            tracing::error!("{}: could not {:?} {t}: {e}", held.service, undo);
            first.get_or_insert(e);
        }
    }
    match first {
        Some(e) => Err(e),
        None => {
            if let Some(store) = store {
                store.kv_delete(&key(&held.service))?;
            }
            Ok(())
        }
    }
}

/// Start what dead runs left stopped (unpause what they left paused) and
/// remove their records; records of live processes are left. Returns one
/// line per target put back, and one per failure.
pub fn recover(store: &Store, ctl: &dyn Controller) -> Result<Vec<String>> {
    put_back(store, ctl, |rec| !alive(rec), "died")
}

/// Start (unpause) what this process's own holds still keep stopped
/// (paused): the run session calls it when a run ends, so a run stopped
/// between a hold and its release (a signal, a stop no script can catch)
/// never leaves a service down.
pub fn release_own(store: &Store, ctl: &dyn Controller) -> Result<Vec<String>> {
    let me = std::process::id();
    let started = pid_start(me);
    put_back(
        store,
        ctl,
        |rec| rec.pid == me && Some(rec.pid_start) == started,
        "ended before putting it back",
    )
}

/// Release the held targets of the records `which` selects and remove
/// those records. One line per target put back, and one per failure.
fn put_back(
    store: &Store,
    ctl: &dyn Controller,
    which: impl Fn(&HoldRecord) -> bool,
    why: &str,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for k in store.kv_keys(KEY_PREFIX)? {
        let Some(v) = store.kv_get(&k)? else { continue };
        let rec: HoldRecord = match serde_json::from_value(v) {
            Ok(r) => r,
            Err(e) => {
                out.push(format!("{k}: unreadable record removed: {e}"));
                store.kv_delete(&k)?;
                continue;
            }
        };
        if !which(&rec) {
            continue;
        }
        let held = Held {
            service: rec.service.clone(),
            mode: if rec.act == Act::Pause {
                Mode::Pause
            } else {
                Mode::Stop
            },
            targets: rec.targets.clone(),
        };
        match release(None, &held, ctl) {
            Ok(()) => {
                store.kv_delete(&k)?;
                for t in &rec.targets {
                    out.push(format!(
                        "{}: {t} was left {} by run {} (pid {}), which {why}; {} again",
                        rec.service,
                        if rec.act == Act::Pause {
                            "paused"
                        } else {
                            "stopped"
                        },
                        rec.run_id.map(|i| i.to_string()).unwrap_or("?".into()),
                        rec.pid,
                        if rec.act == Act::Pause {
                            "unpaused"
                        } else {
                            "started"
                        },
                    ));
                }
            }
            Err(e) => out.push(format!(
                "{}: could not restart what a dead run left stopped: {e}",
                rec.service
            )),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Records every action; targets start in the given states.
    struct Fake {
        states: RefCell<HashMap<Target, RunState>>,
        calls: RefCell<Vec<String>>,
        fail_on: Option<(Target, Act)>,
    }

    impl Fake {
        fn new(states: &[(Target, RunState)]) -> Fake {
            Fake {
                states: RefCell::new(states.iter().cloned().collect()),
                calls: RefCell::new(Vec::new()),
                fail_on: None,
            }
        }
    }

    impl Controller for Fake {
        fn state(&self, t: &Target) -> Result<RunState> {
            Ok(self.states.borrow()[t])
        }
        fn act(&self, t: &Target, act: Act) -> Result<()> {
            let argv = match t {
                Target::Unit(u) => systemctl_argv(&format!("{act:?}").to_lowercase(), u).join(" "),
                Target::Container(c) => format!("docker {act:?} {c}").to_lowercase(),
            };
            self.calls.borrow_mut().push(argv);
            if self.fail_on.as_ref() == Some(&(t.clone(), act)) {
                return Err(Error::Other("refused".into()));
            }
            let s = match act {
                Act::Stop => RunState::Stopped,
                Act::Start | Act::Unpause => RunState::Running,
                Act::Pause => RunState::Paused,
            };
            self.states.borrow_mut().insert(t.clone(), s);
            Ok(())
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("state.db")).unwrap();
        (d, s)
    }

    fn unit(n: &str) -> Target {
        Target::Unit(n.into())
    }

    #[test]
    fn stop_mode_stops_only_what_runs_and_starts_it_again() {
        let (_d, st) = store();
        let fake = Fake::new(&[
            (unit("a.service"), RunState::Running),
            (unit("b.service"), RunState::Stopped),
        ]);
        let targets = [unit("a.service"), unit("b.service")];
        let held = hold(Some(&st), None, "svc", Mode::Stop, &targets, &fake).unwrap();
        assert_eq!(held.targets, vec![unit("a.service")]);
        let rec: HoldRecord =
            serde_json::from_value(st.kv_get("consistency.held.svc").unwrap().unwrap()).unwrap();
        assert_eq!(rec.targets, vec![unit("a.service")]);
        assert_eq!(rec.pid, std::process::id());
        release(Some(&st), &held, &fake).unwrap();
        assert_eq!(
            *fake.calls.borrow(),
            vec![
                "systemctl stop -- a.service".to_string(),
                "systemctl start -- a.service".to_string()
            ]
        );
        assert!(st.kv_get("consistency.held.svc").unwrap().is_none());
        assert_eq!(fake.states.borrow()[&unit("b.service")], RunState::Stopped);
    }

    #[test]
    fn live_mode_touches_nothing() {
        let fake = Fake::new(&[(unit("a.service"), RunState::Running)]);
        let held = hold(None, None, "svc", Mode::Live, &[unit("a.service")], &fake).unwrap();
        release(None, &held, &fake).unwrap();
        assert!(fake.calls.borrow().is_empty());
    }

    #[test]
    fn a_failed_stop_starts_what_was_already_stopped() {
        let (_d, st) = store();
        let mut fake = Fake::new(&[
            (unit("a.service"), RunState::Running),
            (unit("b.service"), RunState::Running),
        ]);
        fake.fail_on = Some((unit("b.service"), Act::Stop));
        let err = hold(
            Some(&st),
            None,
            "svc",
            Mode::Stop,
            &[unit("a.service"), unit("b.service")],
            &fake,
        )
        .unwrap_err();
        assert!(err.to_string().contains("refused"));
        assert_eq!(fake.states.borrow()[&unit("a.service")], RunState::Running);
        assert!(st.kv_get("consistency.held.svc").unwrap().is_none());
    }

    #[test]
    fn a_dead_runs_record_is_recovered_and_a_live_runs_is_left() {
        let (_d, st) = store();
        let fake = Fake::new(&[
            (unit("a.service"), RunState::Stopped),
            (unit("b.service"), RunState::Stopped),
        ]);
        let dead = HoldRecord {
            service: "dead".into(),
            act: Act::Stop,
            targets: vec![unit("a.service")],
            // No process has pid 0's start time 1 here.
            pid: u32::MAX,
            pid_start: 1,
            run_id: Some(3),
        };
        let me = std::process::id();
        let live = HoldRecord {
            service: "live".into(),
            targets: vec![unit("b.service")],
            pid: me,
            pid_start: pid_start(me).unwrap(),
            ..dead.clone()
        };
        st.kv_set(&key("dead"), &serde_json::to_value(&dead).unwrap(), None)
            .unwrap();
        st.kv_set(&key("live"), &serde_json::to_value(&live).unwrap(), None)
            .unwrap();
        let lines = recover(&st, &fake).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(
            lines[0].contains("unit a.service was left stopped by run 3"),
            "{lines:?}"
        );
        assert_eq!(*fake.calls.borrow(), vec!["systemctl start -- a.service"]);
        assert!(st.kv_get(&key("dead")).unwrap().is_none());
        assert!(st.kv_get(&key("live")).unwrap().is_some());
    }

    #[test]
    fn a_run_puts_back_its_own_holds_and_only_those() {
        let (_d, st) = store();
        let fake = Fake::new(&[
            (unit("mine.service"), RunState::Stopped),
            (unit("other.service"), RunState::Stopped),
        ]);
        let me = std::process::id();
        let mine = HoldRecord {
            service: "mine".into(),
            act: Act::Stop,
            targets: vec![unit("mine.service")],
            pid: me,
            pid_start: pid_start(me).unwrap(),
            run_id: Some(7),
        };
        // Another live process's hold (pid 1 always runs).
        let other = HoldRecord {
            service: "other".into(),
            targets: vec![unit("other.service")],
            pid: 1,
            pid_start: pid_start(1).unwrap_or(0),
            ..mine.clone()
        };
        st.kv_set(&key("mine"), &serde_json::to_value(&mine).unwrap(), None)
            .unwrap();
        st.kv_set(&key("other"), &serde_json::to_value(&other).unwrap(), None)
            .unwrap();
        let lines = release_own(&st, &fake).unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(
            *fake.calls.borrow(),
            vec!["systemctl start -- mine.service"]
        );
        assert!(st.kv_get(&key("mine")).unwrap().is_none());
        assert!(st.kv_get(&key("other")).unwrap().is_some());
    }

    #[test]
    fn units_cannot_be_paused() {
        let err = System.act(&unit("a.service"), Act::Pause).unwrap_err();
        assert!(err.to_string().contains("cannot be paused"));
    }
}
