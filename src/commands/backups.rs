//! `backups list | verify | import`.
//!
//! `backups verify PATH` needs no configuration and no state DB: an archive
//! copied off-site is verified with nothing but the binary and its sidecars.
//!
//! `backups verify` exits 65 only when an archive that is there fails
//! verification (checksum mismatch, corrupt or truncated stream, unusable
//! sidecar). A catalogued archive whose file is gone is reported `MISSING`
//! without changing the exit code: `run backup` marks such a row `missing`,
//! warns and notifies about it once, and leaves it out of retention. A
//! `missing` row whose file is back is verified and revived.

use super::{parse_target, Report, Target};
use crate::app::Setup;
use crate::archive;
use crate::catalog;
use crate::cli::BackupsCommand;
use crate::error::{exit, Error, Result};
use crate::state::{BackupRecord, BackupStatus};
use crate::units::{human_bytes, local_time};
use serde_json::json;
use std::path::Path;

pub fn run(env: &Setup, cmd: &BackupsCommand) -> Result<Report> {
    match cmd {
        BackupsCommand::List { service } => list(env, service.as_deref()),
        BackupsCommand::Verify { service, target } => {
            verify(env, service.as_deref(), target.as_deref())
        }
        BackupsCommand::Import { dir } => import(env, dir),
    }
}

fn list(env: &Setup, service: Option<&str>) -> Result<Report> {
    let cfg = env.load_config()?;
    let paths = env.paths(&cfg);
    let rows = match env.existing_store(&paths)? {
        Some(store) => store.backups(service, false)?,
        None => Vec::new(),
    };
    let mut text = format!(
        "{:>5}  {:<20} {:<12} {:<19} {:>10}  {:<13} {}\n",
        "ID", "SERVICE", "KIND", "CREATED", "SIZE", "STATUS", "LOCATION"
    );
    for b in &rows {
        let status = if b.status == BackupStatus::Complete && b.verified_at.is_none() {
            "unverified".to_string()
        } else {
            b.status.to_string()
        };
        text.push_str(&format!(
            "{:>5}  {:<20} {:<12} {:<19} {:>10}  {:<13} {}\n",
            b.id,
            b.service,
            b.kind,
            local_time(b.created_at),
            human_bytes(b.size),
            status,
            b.location
        ));
    }
    if rows.is_empty() {
        text.push_str("(no backups catalogued)\n");
    }
    Ok(Report::ok(json!({"backups": rows}), text))
}

/// Verify one archive fully; the catalog row (if any) is updated.
fn verify_one(path: &Path, expected: Option<&str>) -> (bool, serde_json::Value, String) {
    match archive::verify(path, expected) {
        Ok(i) => (
            true,
            json!({"path": path, "ok": true, "sha256": i.sha256, "size": i.size, "entries": i.entries}),
            format!(
                "ok      {} ({} entries, {})",
                path.display(),
                i.entries,
                human_bytes(i.size)
            ),
        ),
        Err(e) => (
            false,
            json!({"path": path, "ok": false, "error": e.to_string(), "kind": e.kind()}),
            format!("FAILED  {}: {e}", path.display()),
        ),
    }
}

/// A catalogued archive whose file is gone: reported without failing the
/// verification. The row is not changed here: the next backup run marks it
/// `missing` and notifies about it, once.
fn missing_one(b: &BackupRecord) -> (serde_json::Value, String) {
    (
        json!({"path": b.location, "id": b.id, "ok": false, "missing": true}),
        format!(
            "MISSING {}: the file is gone (backup ID {}, {})",
            b.location,
            b.id,
            if b.status == BackupStatus::Missing {
                "marked missing"
            } else {
                "the next backup run marks it missing"
            }
        ),
    )
}

/// A vzdump or PBS row (docs/restore-testing.md, tier 1). A vzdump file
/// reachable here is verified ([`crate::restoretest::integrity`]) and its
/// row updated; a PBS snapshot is asked about through the PBS API (when
/// `proxmox_backup_server` names the server) and verified again there when
/// its last verification is older than
/// `restore_testing.pbs_verify_max_age_days`. A storage volume that cannot
/// be read from here, and a PBS snapshot without the PBS API, are reported
/// `unknown` (None), never as good, and their rows are left as they were.
fn verify_guest(
    store: &crate::state::Store,
    cfg: &crate::config::Config,
    pbs: Option<&crate::restoretest::integrity::PbsApi>,
    b: &BackupRecord,
) -> Result<(Option<bool>, serde_json::Value, String)> {
    if let (Some((client, datastore, ns)), "pbs") = (pbs, b.kind.as_str()) {
        return verify_pbs_row(store, cfg, client, datastore, ns.as_deref(), b);
    }
    let path = Path::new(&b.location);
    if b.kind != "vzdump" || !path.is_absolute() || !path.is_file() {
        let state = match b.verified_at {
            Some(t) => format!("last verified {}", crate::units::local_time(t)),
            None => "never verified".into(),
        };
        return Ok((
            None,
            json!({"path": b.location, "id": b.id, "kind": b.kind, "ok": null,
                   "unknown": true, "verified_at": b.verified_at}),
            format!(
                "UNKNOWN {}: {} backup not readable from this host ({state})",
                b.location, b.kind
            ),
        ));
    }
    let now = chrono::Utc::now().timestamp();
    match crate::restoretest::integrity::verify_vzdump(path) {
        Ok(c) => {
            store.set_verified(b.id, true, now)?;
            Ok((
                Some(true),
                json!({"path": b.location, "id": b.id, "kind": b.kind, "ok": true,
                       "size": c.size, "format": c.format, "depth": c.depth}),
                format!(
                    "ok      {} ({} {}, {})",
                    b.location,
                    c.format,
                    if c.depth == "full" {
                        "decoded"
                    } else {
                        "header read"
                    },
                    human_bytes(c.size)
                ),
            ))
        }
        Err(e) => {
            store.set_verified(b.id, false, now)?;
            Ok((
                Some(false),
                json!({"path": b.location, "id": b.id, "kind": b.kind, "ok": false,
                       "error": e.to_string()}),
                format!("FAILED  {}: {e}", b.location),
            ))
        }
    }
}

/// A PBS row through the PBS API: its verification state, a new verify
/// when the last one is too old; the row marked verified (at the time of
/// that verification) or `failed_verify`.
fn verify_pbs_row(
    store: &crate::state::Store,
    cfg: &crate::config::Config,
    pbs: &crate::pve::pbs::Pbs,
    datastore: &str,
    ns: Option<&str>,
    b: &BackupRecord,
) -> Result<(Option<bool>, serde_json::Value, String)> {
    let now = chrono::Utc::now().timestamp();
    let max = cfg.global.backup.restore_testing().pbs_verify_max_age_days;
    let c = match crate::restoretest::integrity::verify_pbs(
        pbs,
        datastore,
        ns,
        &b.location,
        max,
        now,
    ) {
        Ok(c) => c,
        Err(e) => {
            return Ok((
                None,
                json!({"path": b.location, "id": b.id, "kind": b.kind, "ok": null,
                       "unknown": true, "error": e.to_string()}),
                format!("UNKNOWN {}: {e}", b.location),
            ))
        }
    };
    let how = match (&c.verify_task, c.verified_at) {
        (Some(t), _) => format!("verified by PBS now (task {t})"),
        (None, Some(at)) => format!("PBS verified it {}", local_time(at)),
        (None, None) => "never verified by PBS".into(),
    };
    let doc = json!({"path": b.location, "id": b.id, "kind": b.kind,
                     "ok": c.state == "ok", "pbs": c});
    match c.state.as_str() {
        "ok" => {
            store.set_verified(b.id, true, c.verified_at.unwrap_or(now))?;
            Ok((Some(true), doc, format!("ok      {} ({how})", b.location)))
        }
        "failed" => {
            store.set_verified(b.id, false, c.verified_at.unwrap_or(now))?;
            Ok((
                Some(false),
                doc,
                format!("FAILED  {}: PBS verification failed ({how})", b.location),
            ))
        }
        _ => Ok((
            None,
            json!({"path": b.location, "id": b.id, "kind": b.kind, "ok": null,
                   "unknown": true, "pbs": c}),
            format!(
                "UNKNOWN {}: never verified by PBS (pbs_verify_max_age_days is 0)",
                b.location
            ),
        )),
    }
}

fn verify(env: &Setup, service: Option<&str>, target: Option<&str>) -> Result<Report> {
    // By path: no config, no state needed.
    if let Some(Target::Path(p)) = target.map(parse_target) {
        let catalogued = || {
            env.load_config()
                .ok()
                .and_then(|cfg| env.existing_store(&env.paths(&cfg)).ok().flatten())
                .and_then(|s| {
                    s.backup_by_location(&p.display().to_string())
                        .ok()
                        .flatten()
                        .map(|b| (s, b))
                })
        };
        if !p.exists() {
            return Err(Error::Usage(format!(
                "{}: no such archive (and not a catalog ID)",
                p.display()
            )));
        }
        let (ok, doc, line) = verify_one(&p, None);
        if let Some((store, b)) = catalogued() {
            store.set_verified(b.id, ok, chrono::Utc::now().timestamp())?;
        }
        return Ok(Report {
            json: json!({"results": [doc]}),
            text: line + "\n",
            exit: if ok { 0 } else { exit::DATA },
        });
    }
    let cfg = env.load_config()?;
    let paths = env.paths(&cfg);
    let store = env.existing_store(&paths)?.ok_or_else(|| {
        Error::Usage(format!(
            "no state DB at {}: nothing catalogued to verify",
            paths.state_db.display()
        ))
    })?;
    let rows: Vec<BackupRecord> = match target.map(parse_target) {
        Some(Target::Id(id)) => vec![store
            .backup(id)?
            .ok_or_else(|| Error::Usage(format!("no backup with ID {id}")))?],
        _ => store.backups(service, false)?,
    };
    let (rows, guests): (Vec<BackupRecord>, Vec<BackupRecord>) = rows
        .into_iter()
        .partition(|b| catalog::is_archive_kind(&b.kind));
    let mut results = Vec::new();
    let mut text = String::new();
    let mut all_ok = true;
    let (mut checked, mut missing, mut skipped) = (0, 0, 0);
    let mut unknown_n = 0;
    let pbs = if guests.iter().any(|b| b.kind == "pbs") {
        crate::restoretest::integrity::pbs_api(&cfg)
    } else {
        None
    };
    for b in guests.iter().filter(|b| b.status.is_present()) {
        let (ok, doc, line) = verify_guest(&store, &cfg, pbs.as_ref(), b)?;
        match ok {
            Some(ok) => {
                checked += 1;
                all_ok &= ok;
            }
            None => unknown_n += 1,
        }
        results.push(doc);
        text.push_str(&format!("{line}\n"));
    }
    for b in &rows {
        let path = Path::new(&b.location);
        match b.status {
            BackupStatus::Deleted | BackupStatus::Deleting => {
                skipped += 1;
                results.push(json!({"path": b.location, "id": b.id, "ok": true,
                                    "skipped": b.status.as_str()}));
                text.push_str(&format!(
                    "skipped {}: {} (backup ID {})\n",
                    b.location,
                    if b.status == BackupStatus::Deleted {
                        "deleted"
                    } else {
                        "retention is deleting it; the next backup run finishes that"
                    },
                    b.id
                ));
                continue;
            }
            _ if catalog::is_gone(path) => {
                missing += 1;
                let (doc, line) = missing_one(b);
                results.push(doc);
                text.push_str(&format!("{line}\n"));
                continue;
            }
            _ => {}
        }
        checked += 1;
        let (ok, doc, line) = verify_one(path, b.sha256.as_deref());
        // A `missing` row whose file is back is revived by this.
        store.set_verified(b.id, ok, chrono::Utc::now().timestamp())?;
        all_ok &= ok;
        results.push(doc);
        text.push_str(&format!("{line}\n"));
    }
    if rows.is_empty() && guests.is_empty() {
        text.push_str("no archives to verify\n");
    } else if missing + skipped + unknown_n > 0 {
        let unknown = if unknown_n > 0 {
            format!(", {unknown_n} unknown")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "{checked} verified, {missing} missing, {skipped} skipped{unknown}\n"
        ));
    }
    Ok(Report {
        json: json!({"results": results, "verified": checked, "missing": missing,
                     "unknown": unknown_n}),
        text,
        exit: if all_ok { 0 } else { exit::DATA },
    })
}

fn import(env: &Setup, dir: &Path) -> Result<Report> {
    let cfg = env.load_config()?;
    let paths = env.paths(&cfg);
    let store = env.open_store(&paths)?;
    let report = catalog::import_dir(&store, dir)?;
    let mut text = String::new();
    let mut imported = Vec::new();
    let mut failed = 0;
    for r in &report.archives {
        match (&r.service, r.id) {
            (Some(service), Some(id)) if r.pending_delete => {
                text.push_str(&format!(
                    "skipped {}: retention is deleting it (ID {id}, service {service}); the next \
                     backup run finishes that\n",
                    r.path.display()
                ));
            }
            (Some(service), Some(id)) => {
                let how = if r.existing {
                    "already catalogued"
                } else {
                    "imported"
                };
                if r.ok {
                    text.push_str(&format!(
                        "{how} {} (service {service}, ID {id})\n",
                        r.path.display()
                    ));
                } else {
                    failed += 1;
                    text.push_str(&format!(
                        "FAILED  {}: {} (catalogued as failed_verify, ID {id})\n",
                        r.path.display(),
                        r.error.as_deref().unwrap_or("")
                    ));
                }
                let doc = json!({"id": id, "path": r.path, "service": service, "ok": r.ok,
                                 "existing": r.existing});
                imported.push(doc);
            }
            _ => {
                failed += 1;
                text.push_str(&format!(
                    "skipped {}: {}\n",
                    r.path.display(),
                    r.error.as_deref().unwrap_or("")
                ));
            }
        }
    }
    for m in &report.missing {
        text.push_str(&format!(
            "missing {}: the file is gone (backup ID {}, now marked missing)\n",
            m.location, m.id
        ));
    }
    for m in &report.finished {
        text.push_str(&format!(
            "deleted {}: retention had begun deleting it (backup ID {}, now marked deleted)\n",
            m.location, m.id
        ));
    }
    text.push_str(&format!(
        "{} archive(s) catalogued, {} marked missing, {failed} problem(s)\n",
        imported.len(),
        report.missing.len()
    ));
    Ok(Report {
        json: json!({"imported": imported, "missing": report.missing,
                     "finished": report.finished, "problems": failed}),
        text,
        exit: if failed == 0 { 0 } else { exit::DATA },
    })
}
