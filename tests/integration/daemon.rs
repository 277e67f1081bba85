//! The daemon as a real process on `* * * * *` schedules: slots fire on the
//! minute, a slot whose workflow still runs is skipped and recorded, SIGHUP
//! with a bad configuration is refused (and alerted) and a good one taken,
//! SIGTERM lets the running workflow stop within the grace, and a restart
//! catches up the slot missed while it was down, once, without running
//! again what already ran. It waits for real minutes (about 2-3 in all).

use crate::harness::Test;
use crate::notify::{ok, Receiver};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A daemon process and every stderr line it wrote so far.
struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    fn start(t: &Test) -> Daemon {
        Daemon::start_with(t, &[])
    }

    fn start_with(t: &Test, env: &[(&str, &str)]) -> Daemon {
        let mut child = t
            .command(&["daemon"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the daemon");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("daemon: {l}");
                sink.lock().unwrap().push(l);
            }
        });
        Daemon { child, lines }
    }

    fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Wait until `needle` has appeared `n` times in stderr.
    fn wait_for(&self, needle: &str, n: usize, limit: Duration) {
        let start = Instant::now();
        while self.count(needle) < n {
            assert!(
                start.elapsed() < limit,
                "no {n}x '{needle}' within {limit:?}:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the child we started and have not reaped.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn wait_exit(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < limit, "daemon did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn config(hook: &str) -> String {
    format!(
        "global:\n  backup:\n    root: {{root}}/backups\n    schedule: \"* * * * *\"\n\
         daemon:\n  timezone: UTC\n  stop_grace_seconds: 3\n\
         monitoring:\n  schedule: \"* * * * *\"\n\
         notifications:\n  channels:\n    - name: hook\n      type: webhook\n      url: {hook}\n\
         services:\n  - name: web\n    type: generic\n    backup_paths: [{{root}}/data/web]\n"
    )
}

/// `(status, summary)` of a workflow's runs, oldest first.
fn runs(t: &Test, workflow: &str) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let mut st = db
        .prepare("SELECT status, summary FROM runs WHERE workflow = ?1 ORDER BY id")
        .unwrap();
    st.query_map([workflow], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn statuses(t: &Test, workflow: &str) -> Vec<String> {
    runs(t, workflow).into_iter().map(|(s, _)| s).collect()
}

#[test]
fn the_daemon_runs_slots_skips_overlaps_reloads_stops_and_catches_up() {
    let hook = Receiver::start(ok());
    let t = Test::new();
    t.data("data/web");
    let good = config(&hook.url("/hook"));
    t.config(&good);
    // The monitor takes longer than a minute: its next slot finds it busy.
    t.script("monitor.rhai", "fn select(ctx) { time::sleep(100); [] }\n");

    let mut d = Daemon::start(&t);
    d.wait_for("daemon started", 1, Duration::from_secs(20));
    // Two slots of the backup, on the minute.
    d.wait_for("backup: slot", 2, Duration::from_secs(130));
    d.wait_for("backup: run of slot", 2, Duration::from_secs(30));
    assert_eq!(statuses(&t, "backup"), ["success", "success"]);
    // The second slot of the monitor came while the first still ran.
    d.wait_for("monitor: scheduled slot", 1, Duration::from_secs(5));
    let monitor = runs(&t, "monitor");
    assert_eq!(monitor.len(), 2, "{monitor:?}");
    assert_eq!(monitor[0].0, "running");
    assert_eq!(monitor[1].0, "skipped");
    assert!(monitor[1].1.contains("is still going"), "{monitor:?}");

    // SIGHUP with a broken file: refused, alerted, the old schedule kept.
    t.config(&good.replace("\"* * * * *\"\ndaemon", "\"61 * * * *\"\ndaemon"));
    d.signal(libc::SIGHUP);
    d.wait_for("reload refused", 1, Duration::from_secs(20));
    assert!(d.count("minute field '61'") >= 1);
    let start = Instant::now();
    while !hook
        .requests()
        .iter()
        .any(|r| String::from_utf8_lossy(&r.body).contains("config_rejected"))
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no alert");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A good file again: taken.
    t.config(&good);
    d.signal(libc::SIGHUP);
    d.wait_for("configuration reloaded", 1, Duration::from_secs(20));

    // SIGTERM: the monitor still sleeps; after the 3 s grace it is asked to
    // stop, records its run aborted, and the daemon exits 0.
    let before = Instant::now();
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), 0);
    assert!(before.elapsed() >= Duration::from_secs(3));
    assert_eq!(d.count("waiting up to 3 s for monitor"), 1);
    assert_eq!(d.count("asking monitor to stop"), 1);
    assert_eq!(
        statuses(&t, "monitor"),
        ["aborted", "skipped"],
        "{:?}",
        runs(&t, "monitor")
    );

    // Down over the next minute boundary, then up again: that slot is run
    // once, at start; the slots that already ran are not run again.
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let last: i64 = db
        .query_row(
            "SELECT last_slot FROM schedule WHERE workflow = 'backup'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let missed = last + 60;
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        if now > missed {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // This time as systemd starts it: READY, STATUS, WATCHDOG, STOPPING on
    // the notify socket.
    let sock_path = t.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut d = Daemon::start_with(
        &t,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    d.wait_for("backup: catching up the slot", 1, Duration::from_secs(20));
    d.wait_for("backup: run of slot", 1, Duration::from_secs(30));
    // Only the missed slot: the ones that ran before are not run again.
    assert_eq!(d.count("backup: slot"), 1);
    assert_eq!(statuses(&t, "backup"), ["success", "success", "success"]);
    let row: i64 = db
        .query_row(
            "SELECT last_slot FROM schedule WHERE workflow = 'backup'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(row >= missed, "caught-up slot recorded: {row} < {missed}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)), 0);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if got.last().unwrap() == "STOPPING=1" {
            break;
        }
    }
    assert!(got[0].starts_with("READY=1\nSTATUS=backup next"), "{got:?}");
    assert!(got.iter().any(|m| m == "WATCHDOG=1"), "{got:?}");
    assert_eq!(
        got.last().map(String::as_str),
        Some("STOPPING=1"),
        "{got:?}"
    );

    // `schedule` shows what the daemon recorded.
    let list = t.run(&["--json", "schedule"]);
    list.code(0);
    let doc = list.json();
    let backup = doc["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["workflow"] == "backup")
        .unwrap()
        .clone();
    assert_eq!(backup["schedule"], "* * * * *");
    assert_eq!(backup["last_action"], "started");
}

#[test]
fn schedule_lists_next_runs_and_prints_timers_and_crontab_lines() {
    let t = Test::new();
    t.data("data/web");
    t.config(
        "global:\n  backup:\n    root: {root}/backups\n    schedule: \"30 2 * * 0\"\n\
         daemon:\n  timezone: Europe/Berlin\n  jitter_seconds: 120\n\
         monitoring:\n  schedule: \"*/10 * * * *\"\n\
         updates:\n  schedule: \"0 4 * * *\"\n\
         services:\n  - name: web\n    type: generic\n    backup_paths: [{root}/data/web]\n",
    );
    let doc = t.run(&["--json", "schedule"]).json();
    assert_eq!(doc["timezone"], "Europe/Berlin");
    let rows = doc["schedules"].as_array().unwrap();
    let backup = rows.iter().find(|r| r["workflow"] == "backup").unwrap();
    assert_eq!(backup["key"], "global.backup.schedule");
    assert_eq!(backup["available"], true);
    // Sunday 02:30 in Berlin: 00:30 or 01:30 UTC, on a Sunday.
    let next = chrono::DateTime::parse_from_rfc3339(backup["next"].as_str().unwrap()).unwrap();
    let berlin = next.with_timezone(&chrono_tz::Europe::Berlin);
    assert_eq!(berlin.format("%a %H:%M").to_string(), "Sun 02:30");
    assert!(rows.iter().any(|r| r["workflow"] == "monitor"));
    // Whether `update` is scheduled depends on this build shipping it.
    let shipped = t.run(&["--json", "workflows", "list"]).stdout;
    let update = rows.iter().find(|r| r["workflow"] == "update").unwrap();
    assert_eq!(update["available"], shipped.contains("\"update\""));

    let cron = t.run(&["schedule", "print", "--cron", "--program", "/usr/bin/hla"]);
    cron.code(0).stdout_has("CRON_TZ=Europe/Berlin\n");
    let config = t.path("etc/homelab-autopilot.yaml").display().to_string();
    cron.stdout_has(&format!(
        "30 2 * * 0      root /usr/bin/hla --config {config} --state-dir"
    ));
    cron.stdout_has("-q run backup\n");

    let dir = t.path("units");
    std::fs::create_dir_all(&dir).unwrap();
    t.run(&[
        "schedule",
        "print",
        "--systemd",
        "--dir",
        dir.to_str().unwrap(),
    ])
    .code(0);
    let timer = std::fs::read_to_string(dir.join("homelab-autopilot-backup.timer")).unwrap();
    assert!(
        timer.contains("OnCalendar=Sun *-*-* 2:30:00 Europe/Berlin\n"),
        "{timer}"
    );
    assert!(
        timer.contains("Persistent=true\nRandomizedDelaySec=120\n"),
        "{timer}"
    );
    let service = std::fs::read_to_string(dir.join("homelab-autopilot-monitor.service")).unwrap();
    assert!(service.contains(" run monitor\n"), "{service}");
    // One of the two is required.
    t.run(&["schedule", "print"]).code(2);
}

#[test]
fn an_unknown_time_zone_is_a_configuration_error_with_its_position() {
    let t = Test::new();
    t.config("daemon:\n  timezone: Mars/Olympus\n");
    t.run(&["config", "validate"]).code(78).stderr_has(
        "homelab-autopilot.yaml:2:13: daemon.timezone: unknown time zone 'Mars/Olympus'",
    );
}
