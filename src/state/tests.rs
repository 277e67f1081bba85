use super::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;

fn tmp_store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(&tmp.path().join("state.db")).unwrap();
    (tmp, store)
}

fn pragma_i64(store: &Store, name: &str) -> i64 {
    store
        .with(|c| c.pragma_query_value(None, name, |r| r.get(0)))
        .unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn backup(service: &str, location: &str, created_at: i64) -> NewBackup {
    NewBackup {
        service: service.into(),
        kind: "archive".into(),
        location: location.into(),
        size: 1234,
        sha256: Some("ab".repeat(32)),
        created_at,
        verified_at: Some(created_at + 5),
        run_id: None,
    }
}

#[test]
fn store_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Store>();
}

#[test]
fn open_creates_private_dirs_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("a/b/state.db");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);
    assert_eq!(mode(&tmp.path().join("a")), 0o700);
    assert_eq!(mode(&tmp.path().join("a/b")), 0o700);
    assert_eq!(mode(&path), 0o600);
    store.begin_run("backup", &[], false).unwrap();
    let wal = tmp.path().join("a/b/state.db-wal");
    assert!(wal.exists());
    assert_eq!(
        mode(&wal),
        0o600,
        "SQLite gives the WAL the database file's mode"
    );
    let jm: String = store
        .with(|c| c.pragma_query_value(None, "journal_mode", |r| r.get(0)))
        .unwrap();
    assert_eq!(jm, "wal");
    assert_eq!(pragma_i64(&store, "synchronous"), 2, "FULL");
    // The start row is written without an fsync; everything after is FULL.
    store.begin_run("backup", &[], false).unwrap();
    assert_eq!(pragma_i64(&store, "synchronous"), 2, "FULL after begin_run");
    assert_eq!(pragma_i64(&store, "foreign_keys"), 1);
    assert_eq!(pragma_i64(&store, "busy_timeout"), 5000);
}

#[test]
fn open_tightens_a_readable_database_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
    Store::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[test]
fn migrations_are_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    let s = Store::open(&path).unwrap();
    assert_eq!(pragma_i64(&s, "user_version"), SCHEMA_VERSION);
    let id = s.begin_run("backup", &["db".into()], true).unwrap();
    s.kv_set("k", &json!(1), Some(id)).unwrap();
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(pragma_i64(&s, "user_version"), SCHEMA_VERSION);
    assert_eq!(s.run(id).unwrap().unwrap().services, ["db"]);
    assert_eq!(s.kv_get("k").unwrap(), Some(json!(1)));
    // A second handle while the first is open, too.
    let s2 = Store::open(&path).unwrap();
    assert_eq!(s2.kv_get("k").unwrap(), Some(json!(1)));
    assert!(s.integrity_check().unwrap().is_empty());
}

#[test]
fn newer_schema_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    drop(Store::open(&path).unwrap());
    {
        let c = Connection::open(&path).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, Error::State { .. }), "{err:?}");
    assert_eq!(err.exit_code(), crate::error::exit::IO);
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains(&format!("schema version {} is newer", SCHEMA_VERSION + 1)),
        "{msg}"
    );
    // Untouched.
    let c = Connection::open(&path).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION + 1);
}

#[test]
fn failed_migration_leaves_the_previous_version() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.db");
    let good: &[&str] = &["CREATE TABLE a (x INTEGER);"];
    drop(Store::open_with(&path, good).unwrap());
    let bad: &[&str] = &[
        good[0],
        "CREATE TABLE b (x INTEGER); INSERT INTO a VALUES (1); NOT SQL;",
    ];
    let err = Store::open_with(&path, bad).unwrap_err();
    assert!(matches!(err, Error::State { .. }), "{err:?}");
    let c = Connection::open(&path).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 1);
    let b: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'b'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(b, 0, "the half-applied batch was rolled back");
    let a: i64 = c
        .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
        .unwrap();
    assert_eq!(a, 0);
    drop(c);
    let fixed: &[&str] = &[good[0], "CREATE TABLE b (x INTEGER);"];
    drop(Store::open_with(&path, fixed).unwrap());
    let c = Connection::open(&path).unwrap();
    let v: i64 = c
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(v, 2);
}

#[test]
fn run_lifecycle() {
    let (_t, s) = tmp_store();
    let before = now();
    let services = vec!["nextcloud".to_string(), "db".to_string()];
    let a = s.begin_run("backup", &services, false).unwrap();
    let r = s.run(a).unwrap().unwrap();
    assert_eq!(r.workflow, "backup");
    assert_eq!(r.services, services);
    assert!(!r.dry_run);
    assert_eq!(r.status, RunStatus::Running);
    assert!(r.started_at >= before && r.started_at <= now());
    assert_eq!(r.finished_at, None);
    assert_eq!(r.pid, Some(std::process::id()));
    assert_eq!(
        r.hostname.as_deref(),
        Some(crate::system::hostname().as_str())
    );

    s.finish_run(a, RunStatus::Warning, "1 warning").unwrap();
    let r = s.run(a).unwrap().unwrap();
    assert_eq!(r.status, RunStatus::Warning);
    assert_eq!(r.summary, "1 warning");
    assert!(r.finished_at.unwrap() >= r.started_at);

    let b = s.begin_run("update", &[], true).unwrap();
    let c = s.begin_run("backup", &[], false).unwrap();
    s.finish_run(c, RunStatus::Failed, "db: dump failed")
        .unwrap();
    assert!(s.run(b).unwrap().unwrap().dry_run);

    let ids = |v: Vec<RunInfo>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(s.recent_runs(None, 10).unwrap()), [c, b, a]);
    assert_eq!(ids(s.recent_runs(None, 2).unwrap()), [c, b]);
    assert_eq!(ids(s.recent_runs(Some("backup"), 10).unwrap()), [c, a]);
    assert!(s.recent_runs(Some("nope"), 10).unwrap().is_empty());
    // Newest of each workflow, by workflow name.
    assert_eq!(ids(s.last_runs().unwrap()), [c, b]);

    assert!(s.run(9999).unwrap().is_none());
    let err = s.finish_run(9999, RunStatus::Success, "").unwrap_err();
    assert!(err.to_string().contains("no run with id 9999"), "{err}");
    assert!(s.finish_run(b, RunStatus::Running, "").is_err());
    assert_eq!(RunStatus::Aborted.to_string(), "aborted");
    assert_eq!("warning".parse::<RunStatus>(), Ok(RunStatus::Warning));
}

#[test]
fn abort_stale_runs_marks_only_running_rows_of_the_workflow() {
    let (_t, s) = tmp_store();
    let r1 = s.begin_run("backup", &[], false).unwrap();
    let r2 = s.begin_run("backup", &[], false).unwrap();
    let done = s.begin_run("backup", &[], false).unwrap();
    s.finish_run(done, RunStatus::Success, "ok").unwrap();
    let other = s.begin_run("update", &[], false).unwrap();

    assert_eq!(s.abort_stale_runs("backup").unwrap(), 2);
    for id in [r1, r2] {
        let r = s.run(id).unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Aborted);
        assert_eq!(r.summary, "process died before the run finished");
        assert!(r.finished_at.is_some());
    }
    assert_eq!(s.run(done).unwrap().unwrap().status, RunStatus::Success);
    assert_eq!(s.run(done).unwrap().unwrap().summary, "ok");
    assert_eq!(s.run(other).unwrap().unwrap().status, RunStatus::Running);
    assert_eq!(s.abort_stale_runs("backup").unwrap(), 0);
}

#[test]
fn batched_events_keep_order_timestamps_and_the_cap() {
    let (_t, s) = tmp_store();
    let run = s.begin_run("monitor", &[], false).unwrap();
    s.add_event(run, "info", None, "first").unwrap();
    // One batch larger than the tail: only its newest EVENT_TAIL survive,
    // after the single event before it.
    let n = EVENT_TAIL + 10;
    let msgs: Vec<String> = (0..n).map(|i| format!("batch {i}")).collect();
    let rows: Vec<(i64, &str, Option<&str>, &str)> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (1_000 + i as i64, "info", Some("web"), m.as_str()))
        .collect();
    s.add_events(run, &rows).unwrap();
    s.add_events(run, &[]).unwrap();
    s.add_event(run, "warn", None, "last").unwrap();
    let all = s.run_events(run, 100_000).unwrap();
    assert_eq!(all.len() as i64, EVENT_TAIL);
    assert_eq!(all[0].message, "batch 11");
    assert_eq!(all[0].ts, 1_011, "each event keeps its own time");
    assert_eq!(all[all.len() - 2].message, format!("batch {}", n - 1));
    assert_eq!(all.last().unwrap().message, "last");
    assert!(s.add_events(9999, &rows[..1]).is_err());
}

#[test]
fn event_tail_is_capped_per_run() {
    let (_t, s) = tmp_store();
    // Speed: the cap logic does not depend on durability.
    s.with(|c| c.pragma_update(None, "synchronous", "OFF"))
        .unwrap();
    let run = s.begin_run("backup", &[], false).unwrap();
    let other = s.begin_run("update", &[], false).unwrap();
    s.add_event(other, "info", None, "other run").unwrap();
    let total = EVENT_TAIL + 50;
    for i in 0..total {
        let svc = if i % 2 == 0 { Some("db") } else { None };
        s.add_event(
            run,
            if i % 3 == 0 { "warn" } else { "info" },
            svc,
            &format!("event {i}"),
        )
        .unwrap();
    }
    let all = s.run_events(run, 100_000).unwrap();
    assert_eq!(all.len() as i64, EVENT_TAIL);
    assert_eq!(all[0].message, "event 50");
    assert_eq!(all.last().unwrap().message, format!("event {}", total - 1));
    let stored: i64 = s
        .with(|c| {
            c.query_row(
                "SELECT count(*) FROM run_events WHERE run_id = ?1",
                [run],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert_eq!(stored, EVENT_TAIL);

    let tail = s.run_events(run, 3).unwrap();
    let msgs: Vec<_> = tail.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        msgs,
        [
            format!("event {}", total - 3),
            format!("event {}", total - 2),
            format!("event {}", total - 1)
        ]
    );
    assert_eq!(
        tail[2].service,
        if (total - 1) % 2 == 0 {
            Some("db".into())
        } else {
            None
        }
    );
    assert!(tail[0].ts > 0);

    assert_eq!(
        s.run_events(other, 10).unwrap().len(),
        1,
        "other runs keep their events"
    );
    assert!(s.add_event(9999, "info", None, "x").is_err());

    let long = "é".repeat(EVENT_MESSAGE_MAX);
    s.add_event(other, "info", None, &long).unwrap();
    let last = s.run_events(other, 1).unwrap().pop().unwrap();
    assert!(last.message.len() <= EVENT_MESSAGE_MAX && last.message.ends_with('…'));
}

#[test]
fn secrets_never_reach_the_database() {
    let (_t, s) = tmp_store();
    let secret = "hla-state-test-secret-9f3e1c";
    crate::redact::register(secret);
    let run = s.begin_run("backup", &[], false).unwrap();
    s.add_event(run, "error", None, &format!("auth failed with {secret}"))
        .unwrap();
    s.finish_run(run, RunStatus::Failed, &format!("token {secret} rejected"))
        .unwrap();
    s.kv_set("k", &json!({"nested": [format!("x{secret}x")]}), None)
        .unwrap();
    s.record_notification(&NotificationRecord {
        run_id: Some(run),
        channel: "ntfy".into(),
        event: "backup.failed".into(),
        severity: "critical".into(),
        status: "failed".into(),
        error: Some(format!("POST https://ntfy.sh/{secret}: 500")),
    })
    .unwrap();
    drop(s);
    let raw = std::fs::read(_t.path().join("state.db")).unwrap();
    let wal = std::fs::read(_t.path().join("state.db-wal")).unwrap_or_default();
    for bytes in [raw, wal] {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret on disk"
        );
    }
}

#[test]
fn catalog_crud_and_unique_location() {
    let (_t, s) = tmp_store();
    let run = s.begin_run("backup", &[], false).unwrap();
    let mut nb = backup("db", "/b/db-1.tar.zst", 1000);
    nb.run_id = Some(run);
    let a = s.record_backup(&nb).unwrap();
    let b = s
        .record_backup(&backup("db", "/b/db-2.tar.zst", 2000))
        .unwrap();
    let c = s
        .record_backup(&backup("web", "/b/web-1.tar.zst", 1500))
        .unwrap();

    let r = s.backup(a).unwrap().unwrap();
    assert_eq!(r.service, "db");
    assert_eq!(r.kind, "archive");
    assert_eq!(r.location, "/b/db-1.tar.zst");
    assert_eq!(r.size, 1234);
    assert_eq!(r.sha256.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(r.created_at, 1000);
    assert_eq!(r.verified_at, Some(1005));
    assert_eq!(r.status, BackupStatus::Complete);
    assert_eq!(r.run_id, Some(run));
    assert_eq!(r.deleted_at, None);
    assert_eq!(
        s.backup_by_location("/b/web-1.tar.zst")
            .unwrap()
            .unwrap()
            .id,
        c
    );
    assert!(s.backup_by_location("/nope").unwrap().is_none());
    assert!(s.backup(999).unwrap().is_none());

    let ids = |v: Vec<BackupRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.backups(None, false).unwrap()),
        [b, c, a],
        "newest first"
    );
    assert_eq!(ids(s.backups(Some("db"), false).unwrap()), [b, a]);

    s.set_verified(a, false, 3000).unwrap();
    let r = s.backup(a).unwrap().unwrap();
    assert_eq!(
        (r.status.as_str(), r.verified_at),
        ("failed_verify", Some(1005))
    );
    s.set_verified(a, true, 3100).unwrap();
    let r = s.backup(a).unwrap().unwrap();
    assert_eq!((r.status.as_str(), r.verified_at), ("complete", Some(3100)));

    s.mark_deleted(b, 4000).unwrap();
    s.mark_deleted(b, 4100).unwrap();
    let r = s.backup(b).unwrap().unwrap();
    assert_eq!((r.status.as_str(), r.deleted_at), ("deleted", Some(4000)));
    s.set_verified(b, true, 4200).unwrap();
    assert_eq!(
        s.backup(b).unwrap().unwrap().status,
        BackupStatus::Deleted,
        "a deleted row stays deleted"
    );
    assert_eq!(ids(s.backups(Some("db"), false).unwrap()), [a]);
    assert_eq!(ids(s.backups(Some("db"), true).unwrap()), [b, a]);
    assert_eq!(ids(s.backups(None, true).unwrap()), [b, c, a]);

    // Re-import of the same location updates the row, keeps the id, undeletes.
    let mut again = backup("db", "/b/db-2.tar.zst", 2000);
    again.size = 99;
    again.verified_at = None;
    assert_eq!(s.record_backup(&again).unwrap(), b);
    let r = s.backup(b).unwrap().unwrap();
    assert_eq!(
        (r.status.as_str(), r.size, r.deleted_at, r.verified_at),
        ("complete", 99, None, None)
    );
    assert_eq!(s.backups(None, true).unwrap().len(), 3);

    // The schema itself refuses a duplicate location.
    let dup = s.with(|c| {
        c.execute(
            "INSERT INTO backups (service, kind, location, size, created_at) VALUES ('x','y',?1,1,1)",
            ["/b/db-1.tar.zst"],
        )
    });
    assert!(dup.is_err());

    assert!(s.set_verified(999, true, 1).is_err());
    assert!(s.mark_deleted(999, 1).is_err());
    // Foreign keys are on: a run id that does not exist is refused.
    let mut bad = backup("db", "/b/x", 1);
    bad.run_id = Some(12345);
    assert!(s.record_backup(&bad).is_err());
}

#[test]
fn kv_with_history() {
    let (_t, s) = tmp_store();
    s.with(|c| c.pragma_update(None, "synchronous", "OFF"))
        .unwrap();
    assert_eq!(s.kv_get("a").unwrap(), None);
    let run = s.begin_run("backup", &[], false).unwrap();
    s.kv_set("a", &json!({"x": [1, 2]}), Some(run)).unwrap();
    assert_eq!(s.kv_get("a").unwrap(), Some(json!({"x": [1, 2]})));
    s.kv_set("a", &json!("two"), None).unwrap();
    assert_eq!(s.kv_get("a").unwrap(), Some(json!("two")));
    let h = s.kv_history("a", 10).unwrap();
    assert_eq!(
        h.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(),
        [json!("two"), json!({"x": [1, 2]})]
    );
    assert!(h[0].0 > 0);

    for i in 0..KV_HISTORY + 30 {
        s.kv_set("b", &json!(i), None).unwrap();
    }
    let h = s.kv_history("b", 1000).unwrap();
    assert_eq!(h.len() as i64, KV_HISTORY);
    assert_eq!(h[0].1, json!(KV_HISTORY + 29));
    assert_eq!(h.last().unwrap().1, json!(30));
    assert_eq!(s.kv_history("b", 2).unwrap().len(), 2);
    assert_eq!(
        s.kv_history("a", 10).unwrap().len(),
        2,
        "other keys keep their history"
    );

    s.kv_set("ab", &json!(null), None).unwrap();
    s.kv_set("B", &json!(true), None).unwrap();
    s.kv_set("a/1", &json!(1), None).unwrap();
    s.kv_set("a%_", &json!(1), None).unwrap();
    assert_eq!(s.kv_keys("a").unwrap(), ["a", "a%_", "a/1", "ab"]);
    assert_eq!(s.kv_keys("a/").unwrap(), ["a/1"]);
    assert_eq!(s.kv_keys("a%").unwrap(), ["a%_"], "no LIKE wildcards");
    assert_eq!(
        s.kv_keys("A").unwrap(),
        Vec::<String>::new(),
        "case-sensitive"
    );
    assert_eq!(s.kv_keys("").unwrap().len(), 6);
    assert_eq!(s.kv_get("ab").unwrap(), Some(json!(null)));

    assert!(s.kv_delete("a").unwrap());
    assert!(!s.kv_delete("a").unwrap());
    assert_eq!(s.kv_get("a").unwrap(), None);
    assert_eq!(
        s.kv_history("a", 10).unwrap().len(),
        2,
        "history outlives the key"
    );
    assert!(
        s.kv_set("c", &json!(1), Some(424242)).is_err(),
        "foreign key on run_id"
    );
}

#[test]
fn notifications_are_recorded() {
    let (_t, s) = tmp_store();
    let run = s.begin_run("backup", &[], false).unwrap();
    let rec = |channel: &str, status: NotificationStatus| NotificationRecord {
        run_id: Some(run),
        channel: channel.into(),
        event: "backup.failed".into(),
        severity: "critical".into(),
        status: status.into(),
        error: (status == NotificationStatus::Failed).then(|| "HTTP 500".to_string()),
    };
    let a = s
        .record_notification(&rec("discord", NotificationStatus::Sent))
        .unwrap();
    let b = s
        .record_notification(&rec("ntfy", NotificationStatus::Failed))
        .unwrap();
    let c = s
        .record_notification(&rec("ntfy", NotificationStatus::Suppressed))
        .unwrap();
    let all = s.recent_notifications(None, 10).unwrap();
    assert_eq!(all.iter().map(|n| n.id).collect::<Vec<_>>(), [c, b, a]);
    let ntfy = s.recent_notifications(Some("ntfy"), 10).unwrap();
    assert_eq!(ntfy.len(), 2);
    assert_eq!(ntfy[1].record.status, "failed");
    assert_eq!(ntfy[1].record.error.as_deref(), Some("HTTP 500"));
    assert_eq!(ntfy[1].record.run_id, Some(run));
    assert!(ntfy[1].ts > 0);
    let mut bad = rec("ntfy", NotificationStatus::Sent);
    bad.status = "delivered".into();
    let err = s.record_notification(&bad).unwrap_err();
    assert!(
        err.to_string()
            .contains("unknown notification status 'delivered'"),
        "{err}"
    );
}

#[test]
fn two_handles_two_threads_no_busy_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    let n = 150;
    // Both open the fresh file at the same time (WAL switch and migration race).
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || -> Result<()> {
                let s = Store::open(&path)?;
                let run = s.begin_run(&format!("wf{t}"), &[], false)?;
                for i in 0..n {
                    s.add_event(run, "info", None, &format!("t{t} {i}"))?;
                    s.kv_set(&format!("t{t}/k"), &json!(i), Some(run))?;
                    s.kv_set("shared", &json!([t, i]), Some(run))?;
                    s.record_backup(&backup("svc", &format!("/b/{t}-{i}"), i))?;
                }
                s.finish_run(run, RunStatus::Success, "ok")
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap().unwrap();
    }
    let s = Store::open(&path).unwrap();
    assert_eq!(s.backups(None, true).unwrap().len(), 2 * n as usize);
    assert_eq!(
        s.kv_history("shared", 1000).unwrap().len() as i64,
        KV_HISTORY.min(2 * n)
    );
    for t in 0..2 {
        assert_eq!(s.kv_get(&format!("t{t}/k")).unwrap(), Some(json!(n - 1)));
    }
    assert!(s.integrity_check().unwrap().is_empty());
}

// ---- crash test -----------------------------------------------------------

const CRASH_ENV: &str = "HLA_CRASH_CHILD";
const CRASH_DB_ENV: &str = "HLA_CRASH_DB";

fn crash_sha(i: u64) -> String {
    format!("{i:016x}").repeat(4)
}

fn crash_pad(i: u64) -> String {
    // Values spanning several pages, so a torn write would show.
    "x".repeat(5000 + (i as usize % 97) * 37)
}

/// The writer killed by `crash_leaves_a_consistent_database`: writes runs,
/// events, catalog rows and kv values in a loop until SIGKILLed.
#[test]
#[ignore = "helper process for crash_leaves_a_consistent_database"]
fn crash_child() {
    if std::env::var_os(CRASH_ENV).is_none() {
        return;
    }
    let path = PathBuf::from(std::env::var_os(CRASH_DB_ENV).unwrap());
    let s = Store::open(&path).unwrap();
    for i in 0u64.. {
        let run = s.begin_run("crash", &[format!("svc{i}")], false).unwrap();
        s.add_event(run, "info", Some("svc"), &format!("event {i}"))
            .unwrap();
        s.record_backup(&NewBackup {
            service: format!("svc{}", i % 3),
            kind: "archive".into(),
            location: format!("/b/{i}.tar.zst"),
            size: i,
            sha256: Some(crash_sha(i)),
            created_at: 1_700_000_000 + i as i64,
            verified_at: Some(1_700_000_100 + i as i64),
            run_id: Some(run),
        })
        .unwrap();
        s.kv_set(
            &format!("k/{}", i % 10),
            &json!({"i": i, "pad": crash_pad(i)}),
            Some(run),
        )
        .unwrap();
        s.finish_run(run, RunStatus::Success, &format!("done {i}"))
            .unwrap();
    }
}

#[test]
fn crash_leaves_a_consistent_database() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    let watcher = Store::open(&path).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state::tests::crash_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_ENV, "1")
        .env(CRASH_DB_ENV, &path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        let n: i64 = watcher
            .with(|c| c.query_row("SELECT count(*) FROM backups", [], |r| r.get(0)))
            .unwrap();
        if n >= 60 {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("writer exited early: {status}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "writer too slow ({n} rows)"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Land somewhere inside the next transactions.
    std::thread::sleep(Duration::from_millis(u64::from(
        t.elapsed().subsec_nanos() % 17,
    )));
    // SAFETY: plain syscall on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) },
        0
    );
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    drop(watcher);

    let s = Store::open(&path).unwrap();
    assert!(
        s.integrity_check().unwrap().is_empty(),
        "{:?}",
        s.integrity_check()
    );
    assert_eq!(pragma_i64(&s, "user_version"), SCHEMA_VERSION);

    // Every committed backup row is whole, and they are contiguous.
    let backups = s.backups(None, true).unwrap();
    assert!(backups.len() >= 60);
    let mut seen: Vec<u64> = Vec::new();
    for b in &backups {
        let i = b.size;
        assert_eq!(b.location, format!("/b/{i}.tar.zst"));
        assert_eq!(b.service, format!("svc{}", i % 3));
        assert_eq!(b.sha256.as_deref(), Some(crash_sha(i).as_str()));
        assert_eq!(b.created_at, 1_700_000_000 + i as i64);
        assert_eq!(b.verified_at, Some(1_700_000_100 + i as i64));
        assert_eq!(b.status, BackupStatus::Complete);
        let run = s.run(b.run_id.unwrap()).unwrap().unwrap();
        assert_eq!(run.services, [format!("svc{i}")]);
        seen.push(i);
    }
    seen.sort();
    assert_eq!(seen, (0..seen.len() as u64).collect::<Vec<_>>());

    // Runs: all finished and whole but at most the one in flight.
    let runs = s.recent_runs(Some("crash"), 100_000).unwrap();
    let running: Vec<_> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Running)
        .collect();
    assert!(running.len() <= 1, "{running:?}");
    for r in &runs {
        let i: u64 = r.services[0].trim_start_matches("svc").parse().unwrap();
        if r.status == RunStatus::Success {
            assert_eq!(r.summary, format!("done {i}"));
            assert!(r.finished_at.is_some());
        }
        for e in s.run_events(r.id, 10).unwrap() {
            assert_eq!(e.message, format!("event {i}"));
        }
    }
    // kv values parse and are whole.
    for key in s.kv_keys("k/").unwrap() {
        for (_, v) in s.kv_history(&key, 1000).unwrap() {
            let i = v["i"].as_u64().unwrap();
            assert_eq!(v["pad"].as_str().unwrap(), crash_pad(i));
            assert_eq!(key, format!("k/{}", i % 10));
        }
    }
    // The store works after the crash; the dead writer's run is cleaned up.
    assert_eq!(s.abort_stale_runs("crash").unwrap(), running.len());
    s.begin_run("crash", &[], false).unwrap();
}

#[test]
fn v3_carries_uptime_history_over_and_status_reads_it_per_service() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    // A v2 database with two cycles of history for "web" (2 checks) and
    // one for "db".
    let v2 = &super::migrations::MIGRATIONS[..2];
    let s = Store::open_with(&path, v2).unwrap();
    let now = super::now();
    s.with(|c| {
        c.execute_batch(&format!(
            "INSERT INTO monitor_history (check_id, ts, cycle, ok) VALUES
               ('web/a', {now}, {c1}, 1), ('web/b', {now}, {c1}, 0),
               ('web/a', {now}, {c2}, 1), ('web/b', {now}, {c2}, 1),
               ('db/port', {now}, {c2}, 1);",
            c1 = now * 1000 - 60_000,
            c2 = now * 1000,
        ))
    })
    .unwrap();
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(pragma_i64(&s, "user_version"), SCHEMA_VERSION);
    assert_eq!(s.uptime("web", now - 3600).unwrap(), Some(50.0));
    assert_eq!(s.uptime("db", now - 3600).unwrap(), Some(100.0));
    assert_eq!(s.uptime("db", now + 3600).unwrap(), None);
    assert_eq!(s.uptime("nope", 0).unwrap(), None);

    // New cycles are written per service: web fails one of its checks.
    let state = |id: &str, svc: &str| CheckState {
        id: id.into(),
        service: svc.into(),
        name: id.split('/').nth(1).unwrap().into(),
        status: CheckStatus::Up,
        fails: 0,
        oks: 1,
        since: now,
        last_checked: now,
        last_alert: None,
        alerted: false,
        message: String::new(),
    };
    s.save_check_results(
        now * 1000 + 1,
        &[
            (state("web/a", "web"), true, Some(3)),
            (state("web/b", "web"), false, None),
            (state("db/port", "db"), true, Some(1)),
        ],
    )
    .unwrap();
    assert!((s.uptime("web", now - 3600).unwrap().unwrap() - 100.0 / 3.0).abs() < 1e-9);
    assert_eq!(s.uptime("db", now - 3600).unwrap(), Some(100.0));
    let web: Vec<String> = s
        .service_check_states("web")
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(web, ["web/a", "web/b"]);
}

/// A run row as the schema before v9 holds it (no millisecond columns):
/// the current `begin_run` writes those.
fn old_begin_run(s: &Store, workflow: &str) -> i64 {
    s.with(|c| {
        c.execute(
            "INSERT INTO runs (workflow, started_at, status) VALUES (?1, ?2, 'running')",
            rusqlite::params![workflow, now()],
        )?;
        Ok(c.last_insert_rowid())
    })
    .unwrap()
}

fn old_finish_run(s: &Store, id: i64, status: &str, summary: &str) {
    s.with(|c| {
        c.execute(
            "UPDATE runs SET status = ?2, finished_at = ?3, summary = ?4 WHERE id = ?1",
            rusqlite::params![id, status, now(), summary],
        )?;
        Ok(())
    })
    .unwrap()
}

#[test]
fn v4_rebuilds_runs_keeping_their_events_and_backups_and_allows_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    let v3 = &super::migrations::MIGRATIONS[..3];
    let s = Store::open_with(&path, v3).unwrap();
    let id = old_begin_run(&s, "backup");
    s.add_events(id, &[(now(), "info", Some("web"), "archived")])
        .unwrap();
    let mut b = backup("web", "/b/web_1.tar.zst", 100);
    b.run_id = Some(id);
    let bid = s.record_backup(&b).unwrap();
    old_finish_run(&s, id, "success", "1 service(s) done");
    drop(s);

    let s = Store::open_with(&path, &super::migrations::MIGRATIONS[..4]).unwrap();
    assert_eq!(pragma_i64(&s, "user_version"), 4);
    assert_eq!(pragma_i64(&s, "foreign_keys"), 1);
    let events = s.run_events(id, 10).unwrap();
    assert_eq!(events.len(), 1, "run events lost in the rebuild");
    assert_eq!(events[0].message, "archived");
    let row = s.backup(bid).unwrap().unwrap();
    assert_eq!(row.run_id, Some(id));
    let skipped = s
        .record_skipped_run("backup", &["web".into()], "held by pid 1")
        .unwrap();
    assert!(skipped > id, "ids keep counting up after the rebuild");
    let runs = s.recent_runs(Some("backup"), 10).unwrap();
    assert_eq!(runs[0].status, RunStatus::Skipped);
    // `status` shows the last run that ran.
    assert_eq!(s.last_runs().unwrap()[0].status, RunStatus::Success);
    assert!(s.integrity_check().unwrap().is_empty());
}

#[test]
fn v5_rebuilds_backups_keeping_rows_runs_indexes_and_ids_and_allows_deleting_and_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("state.db");
    let v4 = &super::migrations::MIGRATIONS[..4];
    let s = Store::open_with(&path, v4).unwrap();
    let run = old_begin_run(&s, "backup");
    let mut b = backup("web", "/b/web_1.tar.zst", 100);
    b.run_id = Some(run);
    let kept = s.record_backup(&b).unwrap();
    let gone = s
        .record_backup(&backup("web", "/b/web_2.tar.zst", 200))
        .unwrap();
    s.mark_deleted(gone, 300).unwrap();
    let copy = s
        .record_backup(&NewBackup {
            kind: "archive-copy".into(),
            ..backup("web", "/off/web_1.tar.zst", 100)
        })
        .unwrap();
    s.set_verified(copy, false, 400).unwrap();
    // The highest ID handed out so far is gone from the table (rows are
    // never deleted by us, but the counter must not go back anyway).
    let last = s
        .record_backup(&backup("db", "/b/db_1.tar.zst", 500))
        .unwrap();
    s.with(|c| c.execute("DELETE FROM backups WHERE id = ?1", [last]))
        .unwrap();
    // The old CHECK refuses the new statuses.
    assert!(s.mark_missing(kept, 600).is_err());
    old_finish_run(&s, run, "success", "done");
    drop(s);

    let s = Store::open(&path).unwrap();
    assert_eq!(pragma_i64(&s, "user_version"), SCHEMA_VERSION);
    assert_eq!(pragma_i64(&s, "foreign_keys"), 1);
    let row = s.backup(kept).unwrap().unwrap();
    assert_eq!(
        (row.run_id, row.status, row.verified_at, row.created_at),
        (Some(run), BackupStatus::Complete, Some(105), 100)
    );
    let row = s.backup(gone).unwrap().unwrap();
    assert_eq!(
        (row.status, row.deleted_at),
        (BackupStatus::Deleted, Some(300))
    );
    let row = s.backup(copy).unwrap().unwrap();
    assert_eq!(
        (row.kind.as_str(), row.status),
        ("archive-copy", BackupStatus::FailedVerify)
    );
    // Every index of the table is there again, by name and definition.
    let indexes: Vec<String> = s
        .with(|c| {
            c.prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'backups'
                 AND sql IS NOT NULL ORDER BY name",
            )?
            .query_map([], |r| r.get(0))?
            .collect()
        })
        .unwrap();
    assert_eq!(
        indexes,
        ["backups_created", "backups_run", "backups_service_created"]
    );
    // UNIQUE (location) survived, and the new statuses are accepted.
    let dup = s.with(|c| {
        c.execute(
            "INSERT INTO backups (service, kind, location, size, created_at) VALUES ('x','y',?1,1,1)",
            ["/b/web_1.tar.zst"],
        )
    });
    assert!(dup.is_err());
    assert!(s.mark_missing(kept, 600).unwrap(), "marked once");
    assert!(!s.mark_missing(kept, 700).unwrap(), "and only once");
    let row = s.backup(kept).unwrap().unwrap();
    assert_eq!(
        (row.status, row.deleted_at),
        (BackupStatus::Missing, Some(600))
    );
    s.mark_deleting(&[copy]).unwrap();
    assert_eq!(
        s.backup(copy).unwrap().unwrap().status,
        BackupStatus::Deleting
    );
    s.set_verified(copy, true, 800).unwrap();
    assert_eq!(
        s.backup(copy).unwrap().unwrap().status,
        BackupStatus::Deleting,
        "a verification does not undo a deletion in progress"
    );
    let bad = s.with(|c| c.execute("UPDATE backups SET status = 'lost' WHERE id = ?1", [kept]));
    assert!(bad.is_err(), "the CHECK still refuses unknown statuses");
    // IDs keep counting up from the highest ever handed out.
    let next = s
        .record_backup(&backup("web", "/b/web_3.tar.zst", 900))
        .unwrap();
    assert!(next > last, "ID {next} handed out again (last was {last})");
    // A found-again file revives a missing row.
    s.set_verified(kept, true, 1000).unwrap();
    let row = s.backup(kept).unwrap().unwrap();
    assert_eq!((row.status, row.deleted_at), (BackupStatus::Complete, None));
    // The foreign key to runs still holds.
    let orphan = s.record_backup(&NewBackup {
        run_id: Some(9999),
        ..backup("web", "/b/web_4.tar.zst", 1)
    });
    assert!(orphan.is_err());
    assert!(s.integrity_check().unwrap().is_empty());
    let broken: i64 = s
        .with(|c| {
            c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
        })
        .unwrap();
    assert_eq!(broken, 0);
}
