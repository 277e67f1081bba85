//! `backups list | verify | import`.
//!
//! `backups verify PATH` needs no configuration and no state DB: an archive
//! copied off-site is verified with nothing but the binary and its sidecars.

use super::{parse_target, Env, Report, Target};
use crate::archive;
use crate::cli::BackupsCommand;
use crate::error::{exit, Error, Result};
use crate::state::{BackupRecord, NewBackup};
use crate::units::{human_bytes, local_time};
use serde_json::json;
use std::path::{Path, PathBuf};

pub fn run(env: &Env, cmd: &BackupsCommand) -> Result<Report> {
    match cmd {
        BackupsCommand::List { service } => list(env, service.as_deref()),
        BackupsCommand::Verify { service, target } => {
            verify(env, service.as_deref(), target.as_deref())
        }
        BackupsCommand::Import { dir } => import(env, dir),
    }
}

fn list(env: &Env, service: Option<&str>) -> Result<Report> {
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
        let status = if b.status == crate::state::BackupStatus::Complete && b.verified_at.is_none()
        {
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

fn verify(env: &Env, service: Option<&str>, target: Option<&str>) -> Result<Report> {
    // By path: no config, no state needed.
    if let Some(Target::Path(p)) = target.map(parse_target) {
        if !p.exists() {
            return Err(Error::Usage(format!(
                "{}: no such archive (and not a catalog ID)",
                p.display()
            )));
        }
        let (ok, doc, line) = verify_one(&p, None);
        let catalogued = env
            .load_config()
            .ok()
            .and_then(|cfg| env.existing_store(&env.paths(&cfg)).ok().flatten())
            .and_then(|s| {
                s.backup_by_location(&p.display().to_string())
                    .ok()
                    .flatten()
                    .map(|b| (s, b))
            });
        if let Some((store, b)) = catalogued {
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
    let rows: Vec<BackupRecord> = rows
        .into_iter()
        .filter(|b| b.kind.starts_with("archive"))
        .collect();
    let mut results = Vec::new();
    let mut text = String::new();
    let mut all_ok = true;
    for b in &rows {
        let (ok, doc, line) = verify_one(Path::new(&b.location), b.sha256.as_deref());
        store.set_verified(b.id, ok, chrono::Utc::now().timestamp())?;
        all_ok &= ok;
        results.push(doc);
        text.push_str(&format!("{line}\n"));
    }
    if rows.is_empty() {
        text.push_str("no archives to verify\n");
    }
    Ok(Report {
        json: json!({"results": results}),
        text,
        exit: if all_ok { 0 } else { exit::DATA },
    })
}

fn find_archives(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        let ft = e.file_type().map_err(|e| Error::io(&p, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if ft.is_dir() && !name.starts_with('.') {
            find_archives(&p, out)?;
        } else if ft.is_file() && name.ends_with(".tar.zst") && !name.starts_with('.') {
            out.push(p);
        }
    }
    Ok(())
}

fn import(env: &Env, dir: &Path) -> Result<Report> {
    let cfg = env.load_config()?;
    let paths = env.paths(&cfg);
    let store = env.open_store(&paths)?;
    let mut found = Vec::new();
    find_archives(dir, &mut found)?;
    found.sort();
    let mut text = String::new();
    let mut imported = Vec::new();
    let mut failed = 0;
    for p in found {
        let p = std::fs::canonicalize(&p).unwrap_or(p);
        let manifest = match archive::read_manifest(&p) {
            Ok(m) => m,
            Err(e) => {
                text.push_str(&format!("skipped {}: {e}\n", p.display()));
                failed += 1;
                continue;
            }
        };
        let (ok, line) = match archive::verify_checksum(&p, None) {
            Ok(_) => (true, String::new()),
            Err(e) => (false, format!("FAILED  {}: {e}", p.display())),
        };
        let now = chrono::Utc::now().timestamp();
        let size = std::fs::metadata(&p)
            .map(|m| m.len())
            .unwrap_or(manifest.size);
        let b = NewBackup {
            service: manifest.service.clone(),
            kind: "archive".into(),
            location: p.display().to_string(),
            size,
            sha256: Some(manifest.sha256.clone()),
            created_at: manifest.created_at,
            verified_at: None,
            run_id: None,
        };
        let id = store.record_backup(&b)?;
        store.set_verified(id, ok, now)?;
        if ok {
            text.push_str(&format!(
                "imported {} (service {}, ID {id})\n",
                p.display(),
                manifest.service
            ));
        } else {
            failed += 1;
            text.push_str(&format!("{line} (catalogued as failed_verify, ID {id})\n"));
        }
        imported.push(json!({"id": id, "path": p, "service": manifest.service, "ok": ok}));
    }
    text.push_str(&format!(
        "{} archive(s) catalogued, {failed} problem(s)\n",
        imported.len()
    ));
    Ok(Report {
        json: json!({"imported": imported, "problems": failed}),
        text,
        exit: if failed == 0 { 0 } else { exit::DATA },
    })
}
