//! Restore tests (docs/restore-testing.md): restore a service's latest
//! verified backup into an isolated copy, compare it file by file with the
//! backup's manifest, run the service's `restore_testing.health_checks`
//! against the copy, time it (RTO: from the start of the restore to every
//! check passing) and remove the copy, always.
//!
//! Isolation per kind:
//! - archives (`host`, `generic`, `systemd`): extracted (safely, checksum
//!   first) into `<state dir>/restore-tests/<id>/data`; command checks run
//!   with that path (`RESTORE_PATH`, and as their working directory).
//! - `docker` / `docker_compose`: the volumes put into new volumes of a
//!   throwaway project `<project>-restoretest-<id>` on an `internal`
//!   network, its containers made from the recorded image and started.
//!   HTTP and TCP checks name the copy's services as the containers see
//!   each other (`http://web:8080/`) and run from inside the copy's network
//!   namespace; a name that is not one of the copy's is refused, so a check
//!   never reaches the live service.
//!
//! - `vm` / `lxc`: restored through the Proxmox API into a throwaway guest
//!   of the reserved VMID range, isolated before it starts (guest.rs).
//!
//! Crash safety: the `restore_tests` row (state DB) exists before anything
//! is built, every Docker object carries the copy's name as a label
//! ([`crate::docker::isolate::LABEL`]), and the temp dir is named after the
//! id; [`sweep`] (the start of every restore-test run) removes what a dead
//! run left and the copies whose `cleanup_delay_minutes` has passed.

mod checks;
pub mod drill;
pub mod guest;
pub mod integrity;
mod select;

pub use checks::{run_checks, run_dependency_checks, CheckOutcome, Checked};
pub use select::select;

use crate::archive::{self, ExtractOptions, Manifest};
use crate::catalog::KIND_ARCHIVE;
use crate::config::{Config, ServiceConfig, ServiceType};
use crate::docker::{engine, isolate};
use crate::error::{Error, Result};
use crate::state::{BackupRecord, BackupStatus, RestoreTestOutcome, RestoreTestRecord, Store};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How a service's backups are restored for a test.
pub const KIND_ARCHIVE_COPY: &str = "archive";
pub const KIND_DOCKER: &str = "docker";
/// A disaster-recovery drill's own row: its shared network (drill.rs).
pub const KIND_DRILL: &str = "drill";
/// A Proxmox guest restored from a vzdump volume or PBS snapshot (guest.rs).
pub const KIND_GUEST: &str = "guest";

/// The kind of copy a service type gets, None when restore tests do not
/// cover it yet.
pub fn kind_for(t: ServiceType) -> Option<&'static str> {
    match t {
        ServiceType::Host | ServiceType::Generic | ServiceType::Systemd | ServiceType::Caddy => {
            Some(KIND_ARCHIVE_COPY)
        }
        ServiceType::Docker | ServiceType::DockerCompose | ServiceType::NginxProxyManager => {
            Some(KIND_DOCKER)
        }
        ServiceType::Vm | ServiceType::Lxc => Some(KIND_GUEST),
    }
}

/// Whether a restore test can restore a catalog row of this kind: our
/// archives, vzdump volumes and PBS snapshots.
pub fn restorable_kind(kind: &str) -> bool {
    matches!(kind, KIND_ARCHIVE | "vzdump" | "pbs")
}

/// A container of a Docker copy.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RestoredContainer {
    pub name: String,
    /// The live container it is a copy of.
    pub original: String,
    /// The names other containers of the copy reach it by (the Compose
    /// service, the original container name).
    pub aliases: Vec<String>,
    pub ip: Option<String>,
}

/// How the restored files matched the manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Compared {
    /// `manifest` (per-file size, mode, sha256) or `size` (an older
    /// manifest without per-file entries: total bytes).
    pub by: String,
    pub files: u64,
    pub bytes: u64,
    pub mismatches: Vec<String>,
}

/// One restore test's isolated copy, as recorded in the state DB and
/// handed to scripts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Environment {
    pub id: i64,
    pub service: String,
    pub kind: String,
    pub backup_id: i64,
    pub archive: String,
    /// When the backup was made (the data's age is RPO seen).
    pub backup_created_at: i64,
    /// `<state dir>/restore-tests/<id>`
    pub dir: PathBuf,
    /// Where the archive is extracted.
    pub restored: PathBuf,
    /// Unix milliseconds when the restore started.
    pub started_ms: i64,
    pub project: Option<String>,
    pub network: Option<String>,
    pub volumes: Vec<String>,
    pub containers: Vec<RestoredContainer>,
    pub compared: Option<Compared>,
    /// Things the copy could not reproduce (a bind mount not in the backup).
    #[serde(default)]
    pub notes: Vec<String>,
    /// `network` belongs to a drill (created and removed by it), not to
    /// this copy.
    #[serde(default)]
    pub shared_network: bool,
    /// A vm / lxc copy.
    #[serde(default)]
    pub guest: Option<guest::GuestCopy>,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The newest backup of `service` that can be restored: an archive whose
/// file is there, a vzdump volume or a PBS snapshot, verified.
pub fn latest_backup(store: &Store, service: &str) -> Result<Option<BackupRecord>> {
    Ok(store.backups(Some(service), false)?.into_iter().find(|b| {
        restorable_kind(&b.kind) && b.status == BackupStatus::Complete && b.verified_at.is_some()
    }))
}

/// Start a test: the row in the state DB, then the copy's temp dir.
pub fn begin(
    store: &Store,
    run_id: Option<i64>,
    state_dir: &Path,
    svc: &ServiceConfig,
    backup: &BackupRecord,
) -> Result<Environment> {
    let kind = kind_for(svc.service_type).ok_or_else(|| {
        Error::Usage(format!(
            "service {}: restore tests of type {} are not available in this version",
            svc.name,
            svc.service_type.as_str()
        ))
    })?;
    if backup.service != svc.name {
        return Err(Error::Usage(format!(
            "backup {} belongs to service {}, not {}",
            backup.id, backup.service, svc.name
        )));
    }
    let id = store.begin_restore_test(run_id, &svc.name, kind, Some(backup.id))?;
    let dir = state_dir.join("restore-tests").join(id.to_string());
    let mut env = Environment {
        id,
        service: svc.name.clone(),
        kind: kind.into(),
        backup_id: backup.id,
        archive: backup.location.clone(),
        backup_created_at: backup.created_at,
        restored: dir.join("data"),
        dir,
        started_ms: now_ms(),
        ..Default::default()
    };
    if kind == KIND_DOCKER {
        let base = crate::monitor::compose_project(svc)
            .or_else(|| svc.container.clone())
            .unwrap_or_else(|| svc.name.clone());
        let project = isolate::project_name(&base, id);
        env.network = Some(project.clone());
        env.project = Some(project);
    }
    record(store, &env)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&env.dir)
        .map_err(|e| Error::io(&env.dir, e))?;
    Ok(env)
}

use std::os::unix::fs::DirBuilderExt;

fn record(store: &Store, env: &Environment) -> Result<()> {
    let v = serde_json::to_value(env).map_err(|e| Error::Other(e.to_string()))?;
    store.set_restore_test_environment(env.id, &v)
}

/// Restore the backup into the copy: extract (checksum verified first),
/// compare with the manifest, and for Docker build and start the project.
pub fn restore(store: &Store, env: &mut Environment) -> Result<()> {
    let archive_path = PathBuf::from(&env.archive);
    let manifest = archive::read_manifest(&archive_path)?;
    let info = archive::extract(&archive_path, &env.restored, &ExtractOptions::default())?;
    env.compared = Some(compare(&env.restored, &manifest, info.bytes));
    record(store, env)?;
    if env.kind == KIND_DOCKER {
        build_docker(store, env, &archive_path, &manifest)?;
    }
    Ok(())
}

/// Compare the extracted tree with the manifest's per-file entries (size,
/// permission bits, sha256), or, for a manifest without them, the total
/// bytes written with `bytes_in`.
pub fn compare(root: &Path, m: &Manifest, bytes_written: u64) -> Compared {
    use std::os::unix::fs::MetadataExt;
    if m.files.is_empty() {
        let mut c = Compared {
            by: "size".into(),
            files: 0,
            bytes: bytes_written,
            mismatches: Vec::new(),
        };
        if bytes_written != m.bytes_in {
            c.mismatches.push(format!(
                "{bytes_written} bytes restored, the manifest says {}",
                m.bytes_in
            ));
        }
        return c;
    }
    let mut c = Compared {
        by: "manifest".into(),
        ..Default::default()
    };
    for f in &m.files {
        let p = root.join(&f.path);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => {
                c.mismatches.push(format!("{}: not a regular file", f.path));
                continue;
            }
            Err(e) => {
                c.mismatches.push(format!("{}: {e}", f.path));
                continue;
            }
        };
        c.files += 1;
        c.bytes += meta.len();
        if meta.len() != f.size {
            c.mismatches.push(format!(
                "{}: {} bytes, the manifest says {}",
                f.path,
                meta.len(),
                f.size
            ));
            continue;
        }
        if meta.mode() & 0o7777 != f.mode & 0o7777 {
            c.mismatches.push(format!(
                "{}: mode {:o}, the manifest says {:o}",
                f.path,
                meta.mode() & 0o7777,
                f.mode & 0o7777
            ));
        }
        match archive::sha256_file(&p) {
            Ok(h) if h == f.sha256 => {}
            Ok(_) => c
                .mismatches
                .push(format!("{}: sha256 differs from the manifest", f.path)),
            Err(e) => c.mismatches.push(format!("{}: {e}", f.path)),
        }
    }
    c
}

/// The Docker copy: network, volumes with the backup's contents,
/// containers from the recorded images, started.
fn build_docker(
    store: &Store,
    env: &mut Environment,
    archive_path: &Path,
    m: &Manifest,
) -> Result<()> {
    let cap = m.capture.as_ref().filter(|c| !c.containers.is_empty());
    let cap = cap.ok_or_else(|| {
        Error::Usage(format!(
            "{}: the backup captured no containers to start",
            archive_path.display()
        ))
    })?;
    let project = env.project.clone().unwrap_or_default();
    let network = env.network.clone().unwrap_or_default();
    if !env.shared_network {
        isolate::create_network(&network, &project)?;
    }
    // Volumes: the backup's contents in new volumes of the copy.
    let mut renamed: BTreeMap<String, String> = BTreeMap::new();
    for v in &cap.volumes {
        let short = v
            .labels
            .get(crate::docker::capture::LABEL_VOLUME)
            .cloned()
            .unwrap_or_else(|| v.name.clone());
        let name = format!("{project}_{short}");
        env.volumes.push(name.clone());
        record(store, env)?;
        let mp = isolate::create_volume(&name, &project)?;
        let src = env.restored.join(&v.path);
        if src.is_dir() {
            crate::docker::restore::replace_contents(&src, &mp)?;
        } else {
            env.notes
                .push(format!("volume {}: not in the backup, left empty", v.name));
        }
        renamed.insert(v.name.clone(), name);
    }
    let mut specs = Vec::new();
    for c in &cap.containers {
        let live = engine::inspect_container(&c.name)?;
        let image = [c.image_digest.as_str(), c.image.as_str()]
            .into_iter()
            .filter(|i| !i.is_empty())
            .find(|i| isolate::image_present(i).unwrap_or(false))
            .ok_or_else(|| Error::Command {
                program: "docker".into(),
                message: format!(
                    "container {}: image {} ({}) is not present on this host (restore tests do \
                     not pull)",
                    c.name, c.image, c.image_digest
                ),
            })?
            .to_string();
        let cfgv = live
            .as_ref()
            .map(|l| l["Config"].clone())
            .unwrap_or_default();
        let compose_service = cfgv["Labels"]["com.docker.compose.service"]
            .as_str()
            .map(str::to_string);
        let mut aliases: Vec<String> = compose_service.iter().cloned().collect();
        aliases.push(c.name.clone());
        let suffix = compose_service.clone().unwrap_or_else(|| c.name.clone());
        let name = format!("{project}-{suffix}");
        let strings = |v: &serde_json::Value| -> Option<Vec<String>> {
            v.as_array().map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
        };
        let mut mounts = Vec::new();
        if let Some(l) = &live {
            for mt in l["Mounts"].as_array().into_iter().flatten() {
                let target = mt["Destination"].as_str().unwrap_or("").to_string();
                let rw = mt["RW"].as_bool().unwrap_or(true);
                match mt["Type"].as_str() {
                    Some("volume") => {
                        let vname = mt["Name"].as_str().unwrap_or("");
                        match renamed.get(vname) {
                            Some(n) => mounts.push(isolate::MountSpec {
                                source: n.clone(),
                                target,
                                volume: true,
                                read_only: !rw,
                            }),
                            None => env.notes.push(format!(
                                "container {}: volume {vname} at {target} is not in the backup; \
                                 not mounted",
                                c.name
                            )),
                        }
                    }
                    Some("bind") => {
                        let src = mt["Source"].as_str().unwrap_or("");
                        let copy = env.restored.join(src.trim_start_matches('/'));
                        if !src.is_empty() && copy.exists() {
                            mounts.push(isolate::MountSpec {
                                source: copy.display().to_string(),
                                target,
                                volume: false,
                                read_only: !rw,
                            });
                        } else {
                            env.notes.push(format!(
                                "container {}: bind {src} at {target} is not in the backup; not \
                                 mounted",
                                c.name
                            ));
                        }
                    }
                    _ => {}
                }
            }
        } else {
            env.notes.push(format!(
                "container {} no longer exists: its copy runs the image's defaults without \
                 mounts",
                c.name
            ));
        }
        let env_file = match strings(&cfgv["Env"]) {
            Some(vars) if !vars.is_empty() => {
                let p = env.dir.join(format!("{name}.env"));
                let lines: String = vars
                    .iter()
                    .filter(|v| !v.contains('\n'))
                    .map(|v| format!("{v}\n"))
                    .collect();
                crate::files::write_atomic(&p, lines.as_bytes(), 0o600)?;
                Some(p)
            }
            _ => None,
        };
        specs.push(isolate::ContainerSpec {
            name: name.clone(),
            image,
            network: network.clone(),
            aliases: aliases.clone(),
            key: project.clone(),
            env_file,
            entrypoint: strings(&cfgv["Entrypoint"]),
            cmd: strings(&cfgv["Cmd"]).unwrap_or_default(),
            workdir: cfgv["WorkingDir"].as_str().map(str::to_string),
            user: cfgv["User"].as_str().map(str::to_string),
            mounts,
        });
        env.containers.push(RestoredContainer {
            name,
            original: c.name.clone(),
            aliases,
            ip: None,
        });
        record(store, env)?;
    }
    for s in &specs {
        isolate::create_container(s)?;
    }
    for s in &specs {
        isolate::start(&s.name)?;
    }
    for c in env.containers.iter_mut() {
        c.ip = isolate::pid_and_ip(&c.name, &network)?.1;
    }
    record(store, env)
}

/// What a test showed, for the script, `--json` and notifications.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    pub id: i64,
    pub service: String,
    pub ok: bool,
    pub backup_id: i64,
    pub rto_seconds: Option<f64>,
    pub rto_target_seconds: u64,
    pub rpo_seconds: i64,
    pub checks: Vec<CheckOutcome>,
    pub error: Option<String>,
    pub environment: Environment,
    /// When the copy is removed (unix seconds): now for
    /// `cleanup_delay_minutes: 0`.
    pub cleanup_after: i64,
    pub summary: String,
}

/// A data age for people: `42 s`, `5 min`, `3.5 h`, `2.0 d`.
fn age(secs: i64) -> String {
    let s = secs.max(0) as f64;
    if s < 60.0 {
        format!("{s:.0} s")
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else if s < 86400.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86400.0)
    }
}

/// When a finished test's copy may go.
fn cleanup_after(cfg: &Config) -> i64 {
    let rt = cfg.global.backup.restore_testing();
    if !rt.cleanup_after_test {
        return i64::MAX;
    }
    chrono::Utc::now().timestamp() + i64::from(rt.cleanup_delay_minutes) * 60
}

fn rto_target(cfg: &Config) -> u64 {
    u64::from(cfg.global.backup.restore_testing().rto_target_minutes) * 60
}

/// Record how the test ended: success when every check passed within the
/// RTO target (`restore_testing.rto_target_minutes`).
pub fn finish(
    store: &Store,
    cfg: &Config,
    env: &Environment,
    checked: &Checked,
    error: Option<String>,
) -> Result<TestResult> {
    finish_until(store, cfg, env, checked, error, cleanup_after(cfg))
}

/// [`finish`], the copy kept until `after` (unix seconds) if nothing
/// removes it earlier: a drill's copies (the drill removes them itself)
/// are due at once, so that the next sweep removes what a killed drill
/// left.
pub fn finish_until(
    store: &Store,
    cfg: &Config,
    env: &Environment,
    checked: &Checked,
    error: Option<String>,
    after: i64,
) -> Result<TestResult> {
    let target = rto_target(cfg);
    let rto = checked
        .passed_at_ms
        .map(|t| (t - env.started_ms).max(0) as f64 / 1000.0);
    let passed = checked.checks.iter().filter(|c| c.ok).count() as i64;
    let failed = checked.checks.len() as i64 - passed;
    let in_time = rto.is_some_and(|r| r <= target as f64);
    let ok = error.is_none() && failed == 0 && in_time;
    let rpo = env.started_ms / 1000 - env.backup_created_at;
    let summary = match (&error, failed, rto) {
        (Some(e), _, _) => format!("{}: restore failed: {e}", env.service),
        (None, f, _) if f > 0 => format!(
            "{}: {f} of {} check(s) failed on the restored copy: {}",
            env.service,
            checked.checks.len(),
            checked
                .checks
                .iter()
                .filter(|c| !c.ok)
                .map(|c| format!("{} ({})", c.name, c.detail))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        (None, _, Some(r)) if !in_time => format!(
            "{}: restored and checked in {r:.1} s, above the RTO target of {target} s",
            env.service
        ),
        (None, _, Some(r)) => format!(
            "{}: backup {} restored and {} check(s) passed in {r:.1} s (data {} old)",
            env.service,
            env.backup_id,
            passed,
            age(rpo)
        ),
        (None, _, None) => format!("{}: the checks never all passed", env.service),
    };
    let checks_json = serde_json::to_value(&checked.checks).unwrap_or_default();
    store.finish_restore_test(
        env.id,
        &RestoreTestOutcome {
            success: ok,
            rto_seconds: rto,
            rpo_seconds: Some(rpo),
            checks_passed: passed,
            checks_failed: failed,
            checks: checks_json,
            error: error.clone(),
            cleanup_after: after,
        },
    )?;
    Ok(TestResult {
        id: env.id,
        service: env.service.clone(),
        ok,
        backup_id: env.backup_id,
        rto_seconds: rto,
        rto_target_seconds: target,
        rpo_seconds: rpo,
        checks: checked.checks.clone(),
        error,
        environment: env.clone(),
        cleanup_after: after,
        summary,
    })
}

/// Remove a test's copy: its guest (guest.rs, refused unless it is
/// certainly a copy), its Docker objects (by label), its temp dir; then
/// mark the row cleaned up.
pub fn remove(
    store: &Store,
    cfg: &Config,
    id: i64,
    dir: Option<&Path>,
) -> Result<isolate::Removed> {
    let rec = store.restore_test(id)?;
    if let Some(r) = rec.as_ref().filter(|r| r.kind == KIND_GUEST) {
        guest::remove(cfg, &r.environment)?;
    }
    let project = rec
        .as_ref()
        .filter(|r| {
            r.kind == KIND_DOCKER || (r.kind == KIND_DRILL && !r.environment["network"].is_null())
        })
        .and_then(|r| r.environment["project"].as_str().map(str::to_string));
    let removed = match project {
        Some(p) => isolate::remove(&p)?,
        None => isolate::Removed::default(),
    };
    let dir = dir.map(Path::to_path_buf).or_else(|| {
        rec.as_ref()
            .and_then(|r| r.environment["dir"].as_str().map(PathBuf::from))
    });
    if let Some(d) = dir {
        remove_tree(&d)?;
    }
    store.mark_restore_test_cleaned(id)?;
    Ok(removed)
}

/// Remove a temp tree, making read-only directories writable first (a
/// restored tree keeps its archived modes).
fn remove_tree(dir: &Path) -> Result<()> {
    // Only a test's own dir: `.../restore-tests/<id>`.
    let ours = dir.parent().and_then(|p| p.file_name()) == Some("restore-tests".as_ref())
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.parse::<i64>().is_ok());
    if !ours {
        return Err(Error::Usage(format!(
            "{} is not a restore test's directory",
            dir.display()
        )));
    }
    fn open_up(p: &Path) {
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(
                    p,
                    std::fs::Permissions::from_mode(m.permissions().mode() | 0o700),
                );
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        _ => {}
    }
    open_up(dir);
    std::fs::remove_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Remove what earlier runs left: tests a dead run never finished, and
/// finished ones whose `cleanup_delay_minutes` has passed. `current`: this
/// run's id, whose tests are left alone. Lines for the log.
pub fn sweep(store: &Store, cfg: &Config, current: Option<i64>) -> Result<Vec<String>> {
    let now = chrono::Utc::now().timestamp();
    let mut lines = Vec::new();
    // Newest first: a drill's copies (their containers) go before the
    // drill's own row (the network they are attached to).
    for r in store.restore_tests_to_clean(now)?.into_iter().rev() {
        if r.run_id.is_some() && r.run_id == current {
            continue;
        }
        lines.push(describe_removal(&r, remove(store, cfg, r.id, None)));
    }
    Ok(lines)
}

fn describe_removal(r: &RestoreTestRecord, res: Result<isolate::Removed>) -> String {
    // A finished test whose removal was due when it finished (no delay, or
    // a drill's copy) was left by a run that died before removing it.
    let kept = match (r.finished_at, r.cleanup_after) {
        (Some(done), Some(due)) => due > done,
        _ => false,
    };
    let why = if kept {
        "kept for inspection until now"
    } else {
        "left by an interrupted run"
    };
    match res {
        Ok(_) if r.kind == KIND_GUEST => format!(
            "removed the copy of restore test {} ({}, {why}): {}",
            r.id,
            r.service,
            guest::describe(&r.environment)
        ),
        Ok(rm) => format!(
            "removed the copy of restore test {} ({}, {why}): {} container(s), {} network(s), {} \
             volume(s)",
            r.id,
            r.service,
            rm.containers.len(),
            rm.networks.len(),
            rm.volumes.len()
        ),
        Err(e) => format!(
            "could not remove the copy of restore test {} ({}): {e}",
            r.id, r.service
        ),
    }
}
