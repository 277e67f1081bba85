//! The backup catalog's rules over the state DB's rows: which kinds of row
//! there are, and retention applied to a service's archives (plan with
//! [`crate::retention::plan`], delete files and their copies, mark rows).

use crate::config::RetentionConfig;
use crate::error::Error;
use crate::error::Result;
use crate::retention::{self, RetentionItem};
use crate::state::{BackupRecord, NewBackup, Store};
use std::path::{Path, PathBuf};

/// Catalog kind of our own archives, and of their copies at destinations.
pub const KIND_ARCHIVE: &str = "archive";
pub const KIND_COPY: &str = "archive-copy";

/// Whether a catalog row is one of our archives (or a copy of one), which
/// `backups verify` checks by decoding.
pub fn is_archive_kind(kind: &str) -> bool {
    kind == KIND_ARCHIVE || kind == KIND_COPY
}

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct PruneReport {
    pub kept: Vec<String>,
    pub deleted: Vec<String>,
    pub would_delete: Vec<String>,
    pub reasons: Vec<String>,
}

/// Plan retention for one service's archives and delete what it drops
/// (with their copies at destinations), or only report in a dry run.
pub fn prune(
    store: &Store,
    service: &str,
    policy: &RetentionConfig,
    now: i64,
    dry_run: bool,
    pending: Option<i64>,
    log: &dyn Fn(tracing::Level, &str),
) -> Result<PruneReport> {
    let rows: Vec<BackupRecord> = store
        .backups(Some(service), false)?
        .into_iter()
        .filter(|b| b.kind == KIND_ARCHIVE)
        .collect();
    let mut items: Vec<RetentionItem> = rows
        .iter()
        .map(|b| RetentionItem {
            id: b.id,
            created_at: b.created_at,
            verified: b.verified_at.is_some() && b.status == crate::state::BackupStatus::Complete,
        })
        .collect();
    if let Some(created_at) = pending {
        // A dry run plans as the real run would: the backup it would just
        // have made counts as the newest verified one.
        items.push(RetentionItem {
            id: -1,
            created_at,
            verified: true,
        });
    }
    let mut report = PruneReport::default();
    for d in retention::plan(&items, policy, now) {
        let Some(row) = rows.iter().find(|r| r.id == d.id) else {
            continue;
        };
        if d.keep {
            report.kept.push(row.location.clone());
            continue;
        }
        let copies: Vec<BackupRecord> = store
            .backups(Some(service), false)?
            .into_iter()
            .filter(|c| c.kind == KIND_COPY && c.sha256.is_some() && c.sha256 == row.sha256)
            .collect();
        if dry_run {
            for loc in std::iter::once(&row.location).chain(copies.iter().map(|c| &c.location)) {
                let (sha, manifest) = crate::archive::sidecar_paths(Path::new(loc));
                log(
                    tracing::Level::INFO,
                    &format!("[dry-run] retention would delete {loc}"),
                );
                for side in [sha, manifest] {
                    log(
                        tracing::Level::INFO,
                        &format!("[dry-run] retention would delete {}", side.display()),
                    );
                }
            }
            report.would_delete.push(row.location.clone());
            report
                .would_delete
                .extend(copies.iter().map(|c| c.location.clone()));
            continue;
        }
        for c in &copies {
            crate::archive::remove(Path::new(&c.location))?;
            store.mark_deleted(c.id, now)?;
            report.deleted.push(c.location.clone());
        }
        crate::archive::remove(Path::new(&row.location))?;
        store.mark_deleted(row.id, now)?;
        log(
            tracing::Level::INFO,
            &format!("retention deleted {}", row.location),
        );
        report.deleted.push(row.location.clone());
    }
    Ok(report)
}

/// One archive `backups import` found.
#[derive(Debug, serde::Serialize)]
pub struct ImportResult {
    pub path: PathBuf,
    /// The manifest's service; None when the manifest could not be read
    /// (the archive was skipped).
    pub service: Option<String>,
    /// The catalog row written.
    pub id: Option<i64>,
    /// Whether its checksum verified.
    pub ok: bool,
    pub error: Option<String>,
}

/// Catalogue every archive (`*.tar.zst` with a manifest) under `dir`, each
/// with its checksum verified; one that fails is catalogued as failed, one
/// without a readable manifest is skipped and reported.
pub fn import_dir(store: &Store, dir: &Path) -> Result<Vec<ImportResult>> {
    let mut found = Vec::new();
    find_archives(dir, &mut found)?;
    found.sort();
    let mut results = Vec::new();
    for p in found {
        let path = std::fs::canonicalize(&p).unwrap_or(p);
        let manifest = match crate::archive::read_manifest(&path) {
            Ok(m) => m,
            Err(e) => {
                results.push(ImportResult {
                    path,
                    service: None,
                    id: None,
                    ok: false,
                    error: Some(e.to_string()),
                });
                continue;
            }
        };
        let check = crate::archive::verify_checksum(&path, None);
        let size = std::fs::metadata(&path)
            .map(|m| m.len())
            .unwrap_or(manifest.size);
        let id = store.record_backup(&NewBackup {
            service: manifest.service.clone(),
            kind: KIND_ARCHIVE.into(),
            location: path.display().to_string(),
            size,
            sha256: Some(manifest.sha256.clone()),
            created_at: manifest.created_at,
            verified_at: None,
            run_id: None,
        })?;
        store.set_verified(id, check.is_ok(), chrono::Utc::now().timestamp())?;
        results.push(ImportResult {
            path,
            service: Some(manifest.service),
            id: Some(id),
            ok: check.is_ok(),
            error: check.err().map(|e| e.to_string()),
        });
    }
    Ok(results)
}

/// Our archives under `dir`, recursively (dot names are ours in progress
/// or not ours: left out).
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
