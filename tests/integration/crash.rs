//! Crash tests: SIGKILL or SIGTERM (about half each, chosen by the drawn
//! delay) the binary at random points of a backup, a prune (many
//! archives, `keep_last` small), a restore and an import, then check that
//! nothing is broken:
//! - right after the kill, no catalog row that claims its archive is there
//!   (`complete`, `failed_verify`) points at a missing file;
//! - the next run (restore, import) succeeds;
//! - after it, `backups verify` passes on every catalogued archive, no row is
//!   left `deleting` or `missing` (nothing was removed by hand), every
//!   archive on disk is catalogued, and no temp debris of ours
//!   (`.NAME.tmp-*` files, `.NAME.restore-tmp-*` dirs, sidecars without
//!   their archive) is left.
//!
//! Each phase runs `HLA_CRASH_ITERATIONS` kills (default 50) on small data;
//! the kill delay is drawn from a seeded RNG (`HLA_CRASH_SEED` for another
//! sequence) between 0 and a little more than an uninterrupted run takes
//! (measured again as the test goes: the machine's load changes it). The
//! deterministic tests at the end cover an archive deleted by hand.

use crate::harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn iterations() -> usize {
    std::env::var("HLA_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// xorshift64*: small, seeded, good enough to spread kill delays.
struct Rng(u64);

impl Rng {
    fn new(phase: u64) -> Rng {
        let seed = std::env::var("HLA_CRASH_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x5eed_c4a5_4000_0001);
        Rng((seed ^ phase.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..=max`.
    fn delay(&mut self, max: Duration) -> Duration {
        let us = max.as_micros().max(1) as u64;
        Duration::from_micros(self.next() % (us + 1))
    }
}

/// Run `args`, SIGKILL or SIGTERM it after `delay` (a no-op if it has
/// finished: it is not reaped before the kill, so its pid cannot be anyone
/// else's). SIGTERM is a run's graceful stop (cancel at the next safe point,
/// recorded aborted); for `restore` and `import` it ends the process as
/// SIGKILL does. Either way the same invariants must hold after it.
fn kill_after(t: &Test, args: &[&str], delay: Duration) {
    let mut child = t
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(delay);
    // SAFETY: kill(2) on our own unreaped child.
    let sig = if delay.as_micros().is_multiple_of(2) {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    child.wait().expect("wait");
}

/// How long `args` takes uninterrupted (it must succeed).
fn timed(t: &Test, args: &[&str]) -> Duration {
    let start = Instant::now();
    t.run(args).code(0);
    start.elapsed()
}

/// How long an uninterrupted run of the operation takes now: a moving
/// average, since the machine's load (other tests) changes it. Kill delays
/// are drawn up to a little more than that.
struct Calib(Duration);

impl Calib {
    fn observe(&mut self, d: Duration) {
        self.0 = (self.0 * 2 + d) / 3;
    }

    fn max(&self) -> Duration {
        self.0 * 5 / 4
    }
}

/// The config: service `web` backing up `data/web`, one destination.
fn config(t: &Test, retention: &str) {
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\n    compression_level: 1\n    threads: 1\n{retention}    destinations:\n      - name: off\n        path: {{root}}/off\nservices:\n  - name: web\n    type: generic\n    backup_paths: [{{root}}/data/web]\n"
    ));
    // Archive names unique to the millisecond: runs follow each other
    // faster than the shipped per-second stamp.
    t.script(
        "backup.rhai",
        "fn create_artifact(svc, ctx) {\n    archive::create(#{\n        service: svc.name,\n        sources: svc.backup_paths,\n        dest_dir: svc.backup_dir,\n        file_name: `${svc.name}_${time::now_ms()}.tar.zst`,\n    })\n}\n",
    );
}

fn rows(t: &Test) -> Vec<Value> {
    let r = t.run(&["--json", "backups", "list"]);
    r.code(0);
    r.json()["backups"].as_array().cloned().unwrap_or_default()
}

fn status(row: &Value) -> &str {
    row["status"].as_str().unwrap_or("")
}

fn location(row: &Value) -> PathBuf {
    PathBuf::from(row["location"].as_str().unwrap())
}

/// No row that claims its archive is there points at nothing.
#[track_caller]
fn no_row_points_at_nothing(rows: &[Value], ctx: &str) {
    for r in rows {
        if matches!(status(r), "complete" | "failed_verify") {
            assert!(
                location(r).exists(),
                "{ctx}: row {} is {} but its file is gone",
                r["id"],
                status(r)
            );
        }
    }
}

/// Temp debris of ours, and sidecars without their archive, under `dirs`.
fn debris(t: &Test, dirs: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in dirs {
        walk(&t.path(d), &mut |p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let temp =
                name.starts_with('.') && (name.contains(".tmp-") || name.contains(".restore-tmp-"));
            let orphan = [".sha256", ".manifest.json"].iter().any(|s| {
                name.strip_suffix(s)
                    .is_some_and(|base| !p.with_file_name(base).exists())
            });
            if temp || orphan {
                out.push(p.to_path_buf());
            }
        });
    }
    out
}

/// The state after the run that followed a kill.
#[track_caller]
fn consistent(t: &Test, ctx: &str) {
    let rows = rows(t);
    no_row_points_at_nothing(&rows, ctx);
    for r in &rows {
        assert!(
            matches!(status(r), "complete"),
            "{ctx}: row {} ({}) is {}",
            r["id"],
            r["location"],
            status(r)
        );
    }
    // Every archive on disk is catalogued (adopted if a kill came between
    // publishing and recording it).
    let catalogued: Vec<PathBuf> = rows.iter().map(location).collect();
    for a in t.archives("backups").into_iter().chain(t.archives("off")) {
        assert!(
            catalogued.contains(&a),
            "{ctx}: {} is not catalogued",
            a.display()
        );
    }
    let v = t.run(&["--json", "backups", "verify"]);
    assert_eq!(
        v.code, 0,
        "{ctx}: backups verify\n{}\n{}",
        v.stdout, v.stderr
    );
    for r in v.json()["results"].as_array().unwrap() {
        assert_eq!(r["ok"], true, "{ctx}: {r}");
    }
    let left = debris(t, &["backups", "off"]);
    assert!(left.is_empty(), "{ctx}: debris left: {left:?}");
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Put `backups`, `off` and `state` back as they were saved in `template`.
fn restore_template(t: &Test) {
    for d in ["backups", "off", "state"] {
        let _ = std::fs::remove_dir_all(t.path(d));
        if t.path("template").join(d).exists() {
            copy_tree(&t.path("template").join(d), &t.path(d));
        }
    }
}

fn save_template(t: &Test) {
    for d in ["backups", "off", "state"] {
        if t.path(d).exists() {
            copy_tree(&t.path(d), &t.path("template").join(d));
        }
    }
}

#[test]
fn crash_during_backup_never_breaks_the_next_run() {
    let t = Test::new();
    t.data("data/web");
    config(&t, "    keep_last: 3\n    retention_days: 0\n");
    let mut rng = Rng::new(1);
    // The first kill may land while the state DB is created.
    let mut cal = Calib(Duration::from_millis(300));
    let n = iterations();
    for i in 0..n {
        let ctx = format!("backup #{i}");
        kill_after(&t, &["run", "backup"], rng.delay(cal.max()));
        if t.path("state/state.db").exists() {
            no_row_points_at_nothing(&rows(&t), &ctx);
        }
        let start = Instant::now();
        let r = t.run(&["run", "backup"]);
        cal.observe(start.elapsed());
        assert_eq!(r.code, 0, "{ctx}: next run\n{}", r.stderr);
        consistent(&t, &ctx);
        let n = t.archives("backups/web").len();
        assert!((1..=3).contains(&n), "{ctx}: keep_last 3, {n} archives");
    }
}

#[test]
fn crash_during_prune_never_breaks_the_next_run() {
    let t = Test::new();
    t.data("data/web");
    // Many archives (with their copies), nothing pruned yet.
    config(&t, "    retention_days: 0\n");
    for _ in 0..10 {
        t.run(&["run", "backup"]).code(0);
    }
    assert_eq!(t.archives("backups/web").len(), 10);
    save_template(&t);
    // Now keep 2: each run deletes 9 archives and their copies.
    config(&t, "    keep_last: 2\n    retention_days: 0\n");
    let mut cal = Calib(Duration::ZERO);
    let mut rng = Rng::new(2);
    let (mut half_deleted, n) = (0, iterations());
    for i in 0..n {
        let ctx = format!("prune #{i}");
        if i % 10 == 0 {
            restore_template(&t);
            let d = timed(&t, &["run", "backup"]);
            if i == 0 {
                cal = Calib(d);
            } else {
                cal.observe(d);
            }
        }
        restore_template(&t);
        kill_after(&t, &["run", "backup"], rng.delay(cal.max()));
        let after_kill = rows(&t);
        no_row_points_at_nothing(&after_kill, &ctx);
        if after_kill.iter().any(|r| status(r) == "deleting") {
            half_deleted += 1;
        }
        let r = t.run(&["run", "backup"]);
        assert_eq!(r.code, 0, "{ctx}: next run\n{}", r.stderr);
        consistent(&t, &ctx);
        assert_eq!(t.archives("backups/web").len(), 2, "{ctx}: keep_last 2");
        assert!(t.archives("off/web").len() <= 2, "{ctx}: copies left");
    }
    eprintln!("prune: {half_deleted} of {n} kills left a deletion half done");
}

#[test]
fn crash_during_restore_leaves_nothing_the_next_restore_trips_on() {
    let t = Test::new();
    // Enough files that extracting takes a while (few enough that removing
    // the restored tree each time does not take longer).
    for d in 0..8 {
        for f in 0..8 {
            t.write(
                &format!("data/web/d{d}/f{f}.txt"),
                &format!("{d}/{f} {}\n", "x".repeat(4096)),
            );
        }
    }
    config(&t, "");
    t.run(&["run", "backup"]).code(0);
    let archive = t.archives("backups/web").pop().unwrap();
    let archive = archive.to_str().unwrap().to_string();
    let id = rows(&t)
        .iter()
        .find(|r| location(r) == Path::new(&archive))
        .unwrap()["id"]
        .to_string();
    let source = t.path("data/web");
    let expect = |target: &Path| {
        let restored = target.join(source.strip_prefix("/").unwrap());
        let rel = |s: Vec<String>, root: &Path| -> Vec<String> {
            let root = root.display().to_string();
            s.into_iter().map(|l| l.replacen(&root, "", 1)).collect()
        };
        rel(snapshot(&restored), &restored) == rel(snapshot(&source), &source)
    };
    let target = t.path("restores/r");
    let target_s = target.to_str().unwrap().to_string();
    let mut cal = Calib(timed(&t, &["restore", &archive, "--to", &target_s]));
    let mut rng = Rng::new(3);
    let (mut stale, n) = (0, iterations());
    for i in 0..n {
        let ctx = format!("restore #{i}");
        let _ = std::fs::remove_dir_all(&target);
        let by = if i % 2 == 0 { &archive } else { &id };
        kill_after(
            &t,
            &["restore", by, "--to", &target_s],
            rng.delay(cal.max()),
        );
        // All or nothing.
        if target.exists() {
            assert!(expect(&target), "{ctx}: a partial restore is visible");
            std::fs::remove_dir_all(&target).unwrap();
        }
        if !debris(&t, &["restores"]).is_empty() {
            stale += 1;
        }
        let start = Instant::now();
        let r = t.run(&["restore", by, "--to", &target_s]);
        cal.observe(start.elapsed());
        assert_eq!(r.code, 0, "{ctx}: next restore\n{}", r.stderr);
        assert!(expect(&target), "{ctx}: restored tree differs");
        let left = debris(&t, &["restores"]);
        assert!(left.is_empty(), "{ctx}: debris left: {left:?}");
    }
    eprintln!("restore: {stale} of {n} kills left a staging dir");
}

#[test]
fn crash_during_import_never_breaks_the_next_import() {
    let t = Test::new();
    t.data("data/web");
    config(&t, "    retention_days: 0\n");
    for _ in 0..8 {
        t.run(&["run", "backup"]).code(0);
    }
    save_template(&t);
    let backups = t.path("backups");
    let backups = backups.to_str().unwrap();
    let mut cal = Calib(Duration::ZERO);
    let mut rng = Rng::new(4);
    for i in 0..iterations() {
        let ctx = format!("import #{i}");
        if i % 10 == 0 {
            // The whole catalog rebuilt: the longest import.
            restore_template(&t);
            std::fs::remove_dir_all(t.path("state")).unwrap();
            let d = timed(&t, &["backups", "import", backups]);
            if i == 0 {
                cal = Calib(d);
            } else {
                cal.observe(d);
            }
        }
        restore_template(&t);
        // Half the time the catalog is lost; else one archive was deleted
        // by hand, which the import marks missing.
        let mut gone = None;
        if i % 2 == 0 {
            std::fs::remove_dir_all(t.path("state")).unwrap();
        } else {
            let all = t.archives("backups/web");
            let a = all[(rng.next() % all.len() as u64) as usize].clone();
            std::fs::remove_file(&a).unwrap();
            gone = Some(a);
        }
        kill_after(&t, &["backups", "import", backups], rng.delay(cal.max()));
        if t.path("state/state.db").exists() {
            no_row_points_at_nothing(
                &rows(&t)
                    .into_iter()
                    .filter(|r| Some(location(r)) != gone)
                    .collect::<Vec<_>>(),
                &ctx,
            );
        }
        let r = t.run(&["--json", "backups", "import", backups]);
        assert_eq!(r.code, 0, "{ctx}: next import\n{}\n{}", r.stdout, r.stderr);
        let rows = rows(&t);
        no_row_points_at_nothing(&rows, &ctx);
        let n_archives = rows.iter().filter(|r| r["kind"] == "archive").count();
        assert_eq!(n_archives, 8, "{ctx}: rows duplicated or lost");
        for r in &rows {
            let want = if Some(location(r)) == gone {
                "missing"
            } else {
                "complete"
            };
            assert_eq!(status(r), want, "{ctx}: {r}");
        }
        for a in t.archives("backups") {
            assert!(rows.iter().any(|r| location(r) == a), "{ctx}: {a:?}");
        }
        let v = t.run(&["--json", "backups", "verify"]);
        assert_eq!(v.code, 0, "{ctx}: verify\n{}", v.stdout);
        for r in v.json()["results"].as_array().unwrap() {
            let missing = Some(PathBuf::from(r["path"].as_str().unwrap())) == gone;
            assert_eq!(r["ok"], !missing, "{ctx}: {r}");
        }
    }
}

/// The state DB of a test root.
fn db(t: &Test) -> rusqlite::Connection {
    rusqlite::Connection::open(t.path("state/state.db")).unwrap()
}

fn count(t: &Test, sql: &str) -> i64 {
    db(t).query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn an_archive_deleted_by_hand_is_marked_missing_once_and_never_fails_a_run() {
    let t = Test::new();
    t.data("data/web");
    config(&t, "    keep_last: 2\n    retention_days: 0\n");
    for _ in 0..3 {
        t.run(&["run", "backup"]).code(0);
    }
    let kept = t.archives("backups/web");
    assert_eq!(kept.len(), 2);
    // The admin removes the older one (the archive only: its sidecars
    // stay, and are debris now).
    let gone = kept[0].clone();
    std::fs::remove_file(&gone).unwrap();

    let r = t.run(&["run", "backup"]);
    r.code(0).stderr_has("marked missing");
    let missing_notes = "SELECT count(*) FROM notifications WHERE event = 'backup_missing'";
    let missing_warnings =
        "SELECT count(*) FROM run_events WHERE level = 'warn' AND message LIKE '%marked missing%'";
    assert_eq!(count(&t, missing_notes), 1);
    assert_eq!(count(&t, missing_warnings), 1);
    // keep_last 2 counts what is there: the new backup and the newest old one.
    let left = t.archives("backups/web");
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&kept[1]));
    assert!(debris(&t, &["backups"]).is_empty(), "orphan sidecars left");
    let rows = rows(&t);
    let row = rows.iter().find(|r| location(r) == gone).unwrap();
    assert_eq!(status(row), "missing");
    t.run(&["backups", "list"]).code(0).stdout_has("missing");
    // Verify reports it, and passes: the catalog knows.
    let v = t.run(&["backups", "verify"]);
    v.code(0).stdout_has("MISSING").stdout_has("1 missing");
    // Restoring it says why it cannot.
    let id = row["id"].to_string();
    t.run(&["restore", &id, "--to", t.path("r").to_str().unwrap()])
        .code(2)
        .stderr_has("its file is gone");

    // Later runs: no new warning, no new notification, still exit 0.
    t.run(&["run", "backup"]).code(0);
    t.run(&["run", "backup"]).code(0);
    assert_eq!(count(&t, missing_notes), 1);
    assert_eq!(count(&t, missing_warnings), 1);
    // Import does not report it again, nor duplicate anything.
    let before = count(&t, "SELECT count(*) FROM backups");
    let backups = t.path("backups");
    let r = t.run(&["backups", "import", backups.to_str().unwrap()]);
    r.code(0)
        .stdout_has("already catalogued")
        .stdout_has("0 marked missing");
    assert_eq!(count(&t, "SELECT count(*) FROM backups"), before);
    // The file comes back (from the off-site copy): verify revives the row.
    std::fs::copy(t.path("off/web").join(gone.file_name().unwrap()), &gone).unwrap();
    t.run(&["backups", "verify"]).code(0);
    let rows = self::rows(&t);
    let row = rows.iter().find(|r| location(r) == gone).unwrap();
    assert_eq!(status(row), "complete");
}

#[test]
fn a_row_left_by_an_older_version_pointing_at_nothing_no_longer_fails_runs() {
    // What a kill between deleting a file and marking its row deleted left
    // before: a `complete` row whose archive and sidecars are all gone.
    let t = Test::new();
    t.data("data/web");
    config(&t, "    keep_last: 1\n    retention_days: 0\n");
    t.run(&["run", "backup"]).code(0);
    let a = t.archives("backups/web").pop().unwrap();
    for suffix in ["", ".sha256", ".manifest.json"] {
        std::fs::remove_file(format!("{}{suffix}", a.display())).unwrap();
    }
    t.run(&["run", "backup"])
        .code(0)
        .stderr_has("marked missing");
    t.run(&["run", "backup"]).code(0);
    t.run(&["backups", "verify"]).code(0);
    assert_eq!(t.archives("backups/web").len(), 1);
}
