//! Schema migrations: an ordered list of SQL batches keyed on
//! `PRAGMA user_version`. Migration N (1-based) takes the schema from
//! version N-1 to N; each one runs in its own `BEGIN IMMEDIATE` transaction
//! together with the `user_version` bump, so a crash (or an error) in the
//! middle leaves the database at the previous version. Never edit a
//! released migration: append a new one.

use rusqlite::{Connection, TransactionBehavior};

/// Version 1: runs, run events, the backup catalog, key/value state with
/// history, notifications.
const V1: &str = r#"
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow    TEXT    NOT NULL,
    services    TEXT    NOT NULL DEFAULT '[]',            -- JSON array of service names
    dry_run     INTEGER NOT NULL DEFAULT 0 CHECK (dry_run IN (0, 1)),
    started_at  INTEGER NOT NULL,                         -- unix seconds
    finished_at INTEGER,
    status      TEXT    NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'success', 'warning', 'failed', 'aborted')),
    summary     TEXT    NOT NULL DEFAULT '',
    pid         INTEGER,
    hostname    TEXT,
    event_seq   INTEGER NOT NULL DEFAULT 0                -- last run_events.seq of this run
);
CREATE INDEX runs_workflow_id ON runs (workflow, id);
CREATE INDEX runs_running ON runs (workflow) WHERE status = 'running';

CREATE TABLE run_events (
    id      INTEGER PRIMARY KEY,
    run_id  INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq     INTEGER NOT NULL,                             -- 1, 2, 3 ... within the run
    ts      INTEGER NOT NULL,
    level   TEXT    NOT NULL,
    service TEXT,
    message TEXT    NOT NULL,
    UNIQUE (run_id, seq)
);

CREATE TABLE backups (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    location    TEXT    NOT NULL UNIQUE,
    size        INTEGER NOT NULL CHECK (size >= 0),
    sha256      TEXT,
    created_at  INTEGER NOT NULL,
    verified_at INTEGER,
    status      TEXT    NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'failed_verify', 'deleted')),
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    deleted_at  INTEGER
);
CREATE INDEX backups_service_created ON backups (service, created_at);
CREATE INDEX backups_created ON backups (created_at);
CREATE INDEX backups_run ON backups (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE kv (
    key        TEXT    PRIMARY KEY NOT NULL,
    value      TEXT    NOT NULL,                          -- JSON
    updated_at INTEGER NOT NULL,
    run_id     INTEGER REFERENCES runs (id) ON DELETE SET NULL
) WITHOUT ROWID;
CREATE INDEX kv_run ON kv (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE kv_history (
    id     INTEGER PRIMARY KEY,
    key    TEXT    NOT NULL,
    value  TEXT    NOT NULL,                              -- JSON
    ts     INTEGER NOT NULL,
    run_id INTEGER REFERENCES runs (id) ON DELETE SET NULL
);
CREATE INDEX kv_history_key ON kv_history (key, id);
CREATE INDEX kv_history_run ON kv_history (run_id) WHERE run_id IS NOT NULL;

CREATE TABLE notifications (
    id       INTEGER PRIMARY KEY,
    run_id   INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    channel  TEXT    NOT NULL,
    event    TEXT    NOT NULL,
    severity TEXT    NOT NULL,
    status   TEXT    NOT NULL CHECK (status IN ('sent', 'failed', 'suppressed')),
    error    TEXT,
    ts       INTEGER NOT NULL
);
CREATE INDEX notifications_channel_ts ON notifications (channel, ts);
CREATE INDEX notifications_run ON notifications (run_id) WHERE run_id IS NOT NULL;
"#;

/// Version 2: notification cooldowns, monitor alert state per check, and
/// the check history uptime percentages are computed from.
const V2: &str = r#"
CREATE TABLE notify_cooldowns (
    key       TEXT    PRIMARY KEY NOT NULL,               -- event:subject
    last_sent INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE monitor_checks (
    id           TEXT    PRIMARY KEY NOT NULL,            -- service/check
    service      TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    status       TEXT    NOT NULL DEFAULT 'unknown' CHECK (status IN ('unknown', 'up', 'down')),
    fails        INTEGER NOT NULL DEFAULT 0,              -- consecutive failures
    oks          INTEGER NOT NULL DEFAULT 0,              -- consecutive successes
    since        INTEGER NOT NULL,                        -- status since (unix seconds)
    last_checked INTEGER NOT NULL,
    last_alert   INTEGER,                                 -- last down alert or reminder
    alerted      INTEGER NOT NULL DEFAULT 0 CHECK (alerted IN (0, 1)),
    message      TEXT    NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX monitor_checks_service ON monitor_checks (service);

CREATE TABLE monitor_history (
    id       INTEGER PRIMARY KEY,
    check_id TEXT    NOT NULL,
    ts       INTEGER NOT NULL,
    cycle    INTEGER NOT NULL,                            -- one monitor cycle (unix ms)
    ok       INTEGER NOT NULL CHECK (ok IN (0, 1)),
    latency_ms INTEGER
);
CREATE INDEX monitor_history_check_ts ON monitor_history (check_id, ts);
"#;

/// v3: uptime per service and cycle (read by `status` without scanning the
/// per-check history), and an index for pruning the history by age.
const V3: &str = r#"
CREATE TABLE monitor_service_cycles (
    service TEXT    NOT NULL,
    cycle   INTEGER NOT NULL,                             -- monitor_history.cycle
    ok      INTEGER NOT NULL CHECK (ok IN (0, 1)),         -- every check passed
    PRIMARY KEY (service, cycle)
) WITHOUT ROWID;
INSERT INTO monitor_service_cycles (service, cycle, ok)
    SELECT substr(check_id, 1, instr(check_id, '/') - 1), cycle, min(ok)
    FROM monitor_history WHERE instr(check_id, '/') > 1
    GROUP BY 1, cycle;
CREATE INDEX monitor_history_ts ON monitor_history (ts);
"#;

/// v4: a run may be `skipped` (another run of the workflow held the lock).
/// SQLite cannot change a CHECK constraint in place: the table is rebuilt
/// (with foreign keys off, see [`migrate`]) and its indexes made again.
const V4: &str = r#"
CREATE TABLE runs_v4 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow    TEXT    NOT NULL,
    services    TEXT    NOT NULL DEFAULT '[]',
    dry_run     INTEGER NOT NULL DEFAULT 0 CHECK (dry_run IN (0, 1)),
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT    NOT NULL DEFAULT 'running'
                CHECK (status IN ('running', 'success', 'warning', 'failed', 'aborted', 'skipped')),
    summary     TEXT    NOT NULL DEFAULT '',
    pid         INTEGER,
    hostname    TEXT,
    event_seq   INTEGER NOT NULL DEFAULT 0
);
INSERT INTO runs_v4 (id, workflow, services, dry_run, started_at, finished_at, status, summary,
                     pid, hostname, event_seq)
    SELECT id, workflow, services, dry_run, started_at, finished_at, status, summary,
           pid, hostname, event_seq FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v4 RENAME TO runs;
CREATE INDEX runs_workflow_id ON runs (workflow, id);
CREATE INDEX runs_running ON runs (workflow) WHERE status = 'running';
"#;

/// v5: a catalog row may be `deleting` (retention marks it before removing
/// any file, so a run killed in between leaves a row the next prune
/// finishes) or `missing` (its file vanished without retention deleting
/// it). `backups` is rebuilt like `runs` in v4: same columns, the wider
/// CHECK, every index made again; the AUTOINCREMENT counter is carried over
/// so that an ID is never handed out twice.
const V5: &str = r#"
CREATE TABLE backups_v5 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    service     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    location    TEXT    NOT NULL UNIQUE,
    size        INTEGER NOT NULL CHECK (size >= 0),
    sha256      TEXT,
    created_at  INTEGER NOT NULL,
    verified_at INTEGER,
    status      TEXT    NOT NULL DEFAULT 'complete'
                CHECK (status IN ('complete', 'failed_verify', 'deleting', 'missing', 'deleted')),
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    deleted_at  INTEGER                                   -- deleted, or noticed missing
);
INSERT INTO backups_v5 (id, service, kind, location, size, sha256, created_at, verified_at,
                        status, run_id, deleted_at)
    SELECT id, service, kind, location, size, sha256, created_at, verified_at,
           status, run_id, deleted_at FROM backups;
DELETE FROM sqlite_sequence WHERE name = 'backups_v5';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'backups_v5', seq FROM sqlite_sequence WHERE name = 'backups';
DROP TABLE backups;
ALTER TABLE backups_v5 RENAME TO backups;
CREATE INDEX backups_service_created ON backups (service, created_at);
CREATE INDEX backups_created ON backups (created_at);
CREATE INDEX backups_run ON backups (run_id) WHERE run_id IS NOT NULL;
"#;

/// Version 6: update transactions. A row is written before an update
/// changes anything (what ran before: digests, image IDs, a snapshot's
/// name), its `step` moves on as the update does, and `outcome` is set when
/// it ends; a row with no `finished_at` whose process is gone is an update
/// the next `run update` completes (rollback or validation).
const V6: &str = r#"
CREATE TABLE updates (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    service     TEXT    NOT NULL,
    kind        TEXT    NOT NULL,                         -- docker_compose, docker, command, ...
    step        TEXT    NOT NULL,                         -- the step reached
    outcome     TEXT    CHECK (outcome IS NULL OR outcome IN
                  ('updated', 'up_to_date', 'skipped', 'rolled_back', 'aborted', 'rollback_failed')),
    before      TEXT    NOT NULL DEFAULT '{}',            -- JSON: what ran before
    after       TEXT,                                     -- JSON: what runs now
    detail      TEXT    NOT NULL DEFAULT '{}',            -- JSON: checks, durations, message
    pid         INTEGER,
    pid_start   INTEGER,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX updates_open ON updates (service) WHERE finished_at IS NULL;
CREATE INDEX updates_service_id ON updates (service, id);
CREATE INDEX updates_run ON updates (run_id) WHERE run_id IS NOT NULL;
"#;

/// Version 7: restore tests (docs/restore-testing.md). One row per test of
/// one service: the backup it restored, the isolated environment it built
/// (JSON: temp dir, Docker project, network, volumes, containers), written
/// *before* anything is created so that the next run removes what a killed
/// run left; the outcome (RTO, data age, checks) once it ended; and whether
/// the environment is gone (`cleaned_up`), or when it may go
/// (`cleanup_after`, `restore_testing.cleanup_delay_minutes`).
const V7: &str = r#"
CREATE TABLE restore_tests (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id        INTEGER REFERENCES runs (id) ON DELETE SET NULL,
    service       TEXT    NOT NULL,
    kind          TEXT    NOT NULL,                       -- archive, docker
    backup_id     INTEGER,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER,
    success       INTEGER CHECK (success IN (0, 1)),
    rto_seconds   REAL,                                   -- restore start to every check passing
    rpo_seconds   INTEGER,                                -- age of the restored data
    checks_passed INTEGER NOT NULL DEFAULT 0,
    checks_failed INTEGER NOT NULL DEFAULT 0,
    checks        TEXT    NOT NULL DEFAULT '[]',          -- JSON [{name, ok, detail}]
    environment   TEXT    NOT NULL DEFAULT '{}',          -- JSON, see restoretest::Environment
    error         TEXT,
    pid           INTEGER,
    cleanup_after INTEGER,
    cleaned_up    INTEGER NOT NULL DEFAULT 0 CHECK (cleaned_up IN (0, 1))
);
CREATE INDEX restore_tests_service ON restore_tests (service, id);
CREATE INDEX restore_tests_pending ON restore_tests (id) WHERE cleaned_up = 0;
"#;

/// Version 8: the daemon's schedule, one row per scheduled workflow: the
/// newest slot it has dealt with (started, skipped because the workflow was
/// still running, or passed over), so a restart neither runs a slot twice
/// nor forgets one it missed.
const V8: &str = r#"
CREATE TABLE schedule (
    workflow    TEXT    PRIMARY KEY NOT NULL,
    expression  TEXT    NOT NULL,                         -- as configured when the slot was taken
    last_slot   INTEGER NOT NULL,                         -- unix seconds
    last_action TEXT    NOT NULL
                CHECK (last_action IN ('started', 'skipped', 'missed', 'seeded')),
    next_slot   INTEGER,                                  -- unix seconds, planned after last_slot
    updated_at  INTEGER NOT NULL
);
"#;

/// Version 9: runs' start and end to the millisecond, so durations are
/// float seconds (`started_at` / `finished_at` stay unix seconds for
/// everything that reads them). Older rows keep NULL and fall back to the
/// whole seconds.
const V9: &str = r#"
ALTER TABLE runs ADD COLUMN started_ms INTEGER;
ALTER TABLE runs ADD COLUMN finished_ms INTEGER;
"#;

/// All migrations, in order. The schema version is their count.
pub(super) const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6, V7, V8, V9];

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Bring the database up to `migrations.len()`.
pub(super) fn migrate(conn: &mut Connection, migrations: &[&str]) -> rusqlite::Result<()> {
    let latest = migrations.len() as i64;
    let check = |v: i64| {
        if v < 0 {
            Err(super::failure(format!(
                "invalid schema version {v} (PRAGMA user_version)"
            )))
        } else if v > latest {
            Err(super::failure(format!(
                "schema version {v} is newer than this build of homelab-autopilot understands \
                 ({latest}); it was written by a newer version: upgrade homelab-autopilot (or \
                 restore an older state database)"
            )))
        } else {
            Ok(())
        }
    };
    // Fast path: nothing to do, no write lock taken.
    let v = user_version(conn)?;
    check(v)?;
    if v == latest {
        return Ok(());
    }
    // A migration that rebuilds a table drops the old one: with foreign
    // keys on, that would delete the rows referring to it (run events).
    // The pragma is a no-op inside a transaction, so it is set here; each
    // migration checks the keys before it commits.
    conn.pragma_update(None, "foreign_keys", false)?;
    let res = migrate_steps(conn, migrations, &check);
    conn.pragma_update(None, "foreign_keys", true)?;
    res
}

fn migrate_steps(
    conn: &mut Connection,
    migrations: &[&str],
    check: &dyn Fn(i64) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let latest = migrations.len() as i64;
    loop {
        // IMMEDIATE: take the write lock first, then re-read the version, so
        // two processes opening a fresh database do not both migrate.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let v = user_version(&tx)?;
        check(v)?;
        if v == latest {
            return Ok(()); // dropping `tx` rolls back the empty transaction
        }
        tx.execute_batch(migrations[v as usize])?;
        let broken: i64 =
            tx.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })?;
        if broken > 0 {
            return Err(super::failure(format!(
                "migration {} would leave {broken} row(s) pointing at nothing",
                v + 1
            )));
        }
        tx.pragma_update(None, "user_version", v + 1)?;
        tx.commit()?;
    }
}
