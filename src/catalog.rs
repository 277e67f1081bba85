//! The backup catalog's rules over the state DB's rows: which kinds of row
//! there are, retention applied to a service's archives (plan with
//! [`crate::retention::plan`], delete files and their copies, mark rows),
//! and keeping rows and files in step when one of them went away.
//!
//! Retention deletes so that a kill at any point leaves rows that say what
//! happened:
//! 1. the archive's row and its copies' rows are marked `deleting`, in one
//!    transaction, before any file is touched;
//! 2. each copy (file, then `.sha256` and `.manifest.json`) is removed and
//!    its row marked `deleted`;
//! 3. the archive and its sidecars are removed and its row marked `deleted`.
//!
//! Before it plans, every prune reconciles the service's rows with the disk
//! ([`prune`]): it finishes the deletions a killed run left `deleting`,
//! catalogues archives a killed run published but never recorded, and marks
//! `missing` (once, with a warning) the rows whose files vanished without
//! retention deleting them (removed by hand, a lost disk). A missing row
//! takes no part in retention, is never the "newest verified" backup, and
//! never fails a run.

use crate::config::RetentionConfig;
use crate::error::Error;
use crate::error::Result;
use crate::retention::{self, RetentionItem};
use crate::state::{BackupRecord, BackupStatus, NewBackup, Store};
use std::io;
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
    /// Rows whose files are gone, marked `missing` by this prune (in a dry
    /// run: that a real run would mark).
    pub missing: Vec<String>,
    /// Deletions a killed run left `deleting`, finished by this prune.
    pub finished: Vec<String>,
    /// Archives no row named (a run killed between publishing and
    /// cataloguing them), catalogued by this prune.
    pub adopted: Vec<String>,
}

/// One service's retention, and where its archives live.
#[derive(Debug, Clone, Copy)]
pub struct PruneRequest<'a> {
    pub service: &'a str,
    pub policy: &'a RetentionConfig,
    /// Unix seconds.
    pub now: i64,
    pub dry_run: bool,
    /// The `created_at` of the backup a dry run would have made: planned as
    /// the newest verified one.
    pub pending: Option<i64>,
    /// The service's backup dir: an uncatalogued archive of this service
    /// in it is adopted (kind `archive`).
    pub backup_dir: Option<&'a Path>,
    /// The service's dirs at its destinations: uncatalogued copies there are
    /// adopted (kind `archive-copy`).
    pub copy_dirs: &'a [PathBuf],
    /// The run adopted rows are recorded under.
    pub run_id: Option<i64>,
}

type Log<'a> = &'a dyn Fn(tracing::Level, &str);

/// Reconcile the service's rows with the disk, then plan retention for its
/// archives and delete what it drops (with their copies at destinations),
/// or only report in a dry run.
pub fn prune(store: &Store, req: &PruneRequest<'_>, log: Log<'_>) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    finish_deleting(store, req, log, &mut report)?;
    if let Some(dir) = req.backup_dir {
        adopt_orphans(store, req, dir, KIND_ARCHIVE, log, &mut report)?;
    }
    for dir in req.copy_dirs {
        adopt_orphans(store, req, dir, KIND_COPY, log, &mut report)?;
    }
    mark_missing(store, req, log, &mut report)?;

    let all: Vec<BackupRecord> = store.backups(Some(req.service), false)?;
    // In a dry run the rows found missing are not marked: leave them out
    // here as the real run would.
    let rows: Vec<&BackupRecord> = all
        .iter()
        .filter(|b| {
            b.kind == KIND_ARCHIVE && b.status.is_present() && !report.missing.contains(&b.location)
        })
        .collect();
    let mut items: Vec<RetentionItem> = rows
        .iter()
        .map(|b| RetentionItem {
            id: b.id,
            created_at: b.created_at,
            verified: b.verified_at.is_some() && b.status == BackupStatus::Complete,
        })
        .collect();
    if let Some(created_at) = req.pending {
        // A dry run plans as the real run would: the backup it would just
        // have made counts as the newest verified one.
        items.push(RetentionItem {
            id: -1,
            created_at,
            verified: true,
        });
    }
    for d in retention::plan(&items, req.policy, req.now) {
        let Some(row) = rows.iter().find(|r| r.id == d.id) else {
            continue;
        };
        if d.keep {
            report.kept.push(row.location.clone());
            continue;
        }
        let copies: Vec<&BackupRecord> = all.iter().filter(|c| is_copy_of(c, row)).collect();
        if req.dry_run {
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
        // Rows first: a kill from here on leaves `deleting` rows, never a
        // row that names a file that is gone.
        let ids: Vec<i64> = std::iter::once(row.id)
            .chain(copies.iter().map(|c| c.id))
            .collect();
        store.mark_deleting(&ids)?;
        for c in &copies {
            remove_artifact(Path::new(&c.location))?;
            store.mark_deleted(c.id, req.now)?;
            report.deleted.push(c.location.clone());
        }
        remove_artifact(Path::new(&row.location))?;
        store.mark_deleted(row.id, req.now)?;
        log(
            tracing::Level::INFO,
            &format!("retention deleted {}", row.location),
        );
        report.deleted.push(row.location.clone());
    }
    Ok(report)
}

/// A copy at a destination of `archive`: same checksum and same file name
/// (archives of unchanged data have the same checksum; the name tells them
/// apart, `copy_to` keeps it).
fn is_copy_of(c: &BackupRecord, archive: &BackupRecord) -> bool {
    c.kind == KIND_COPY
        && c.status != BackupStatus::Deleted
        && c.sha256.is_some()
        && c.sha256 == archive.sha256
        && Path::new(&c.location).file_name() == Path::new(&archive.location).file_name()
}

/// Finish the deletions a killed run left half done: remove what is left of
/// each `deleting` row's files and mark it deleted.
fn finish_deleting(
    store: &Store,
    req: &PruneRequest<'_>,
    log: Log<'_>,
    report: &mut PruneReport,
) -> Result<()> {
    for b in store.backups(Some(req.service), false)? {
        if b.status != BackupStatus::Deleting || !is_archive_kind(&b.kind) {
            continue;
        }
        if req.dry_run {
            log(
                tracing::Level::INFO,
                &format!(
                    "[dry-run] would finish deleting {} (an interrupted run left it half deleted)",
                    b.location
                ),
            );
            continue;
        }
        remove_artifact(Path::new(&b.location))?;
        store.mark_deleted(b.id, req.now)?;
        log(
            tracing::Level::INFO,
            &format!(
                "finished deleting {} (an interrupted run left it half deleted)",
                b.location
            ),
        );
        report.finished.push(b.location);
    }
    Ok(())
}

/// Mark `missing` the service's archive rows whose files are gone, and
/// revive the `missing` rows whose files are back (a disk mounted again, a
/// file copied back): their checksum is verified first.
fn mark_missing(
    store: &Store,
    req: &PruneRequest<'_>,
    log: Log<'_>,
    report: &mut PruneReport,
) -> Result<()> {
    for b in store.backups(Some(req.service), false)? {
        if !is_archive_kind(&b.kind) {
            continue;
        }
        let path = Path::new(&b.location);
        if b.status == BackupStatus::Missing && !is_gone(path) {
            if req.dry_run {
                log(
                    tracing::Level::INFO,
                    &format!(
                        "[dry-run] {} is back (backup ID {}); a real run verifies it and takes \
                         it back into the catalog",
                        b.location, b.id
                    ),
                );
                continue;
            }
            let check = crate::archive::verify_checksum(path, b.sha256.as_deref());
            store.set_verified(b.id, check.is_ok(), req.now)?;
            match check {
                Ok(_) => log(
                    tracing::Level::INFO,
                    &format!("{} is back: backup ID {} verified again", b.location, b.id),
                ),
                Err(e) => log(
                    tracing::Level::WARN,
                    &format!(
                        "{} is back, but fails verification (backup ID {} marked \
                         failed_verify): {e}",
                        b.location, b.id
                    ),
                ),
            }
            continue;
        }
        if !b.status.is_present() || !is_gone(path) {
            continue;
        }
        if req.dry_run {
            log(
                tracing::Level::WARN,
                &format!(
                    "[dry-run] {} is gone from disk (backup ID {}); a real run marks it missing",
                    b.location, b.id
                ),
            );
            report.missing.push(b.location);
            continue;
        }
        if store.mark_missing(b.id, req.now)? {
            log(
                tracing::Level::WARN,
                &format!(
                    "{} is gone from disk without retention deleting it (removed by hand?); \
                     backup ID {} marked missing and left out of retention",
                    b.location, b.id
                ),
            );
            report.missing.push(b.location);
        }
    }
    Ok(())
}

/// Whether nothing is at `path` (an error other than "not found", e.g. a
/// permission problem, is not taken as gone).
pub fn is_gone(path: &Path) -> bool {
    matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

/// Catalogue the archives of this service in `dir` that no row names: a run
/// killed after publishing an archive (or a copy) and before recording it
/// leaves one, which retention would otherwise never see.
fn adopt_orphans(
    store: &Store,
    req: &PruneRequest<'_>,
    dir: &Path,
    kind: &str,
    log: Log<'_>,
    report: &mut PruneReport,
) -> Result<()> {
    let names = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut found = Vec::new();
    for e in names {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if crate::archive::is_archive_name(&name) && e.file_type().is_ok_and(|t| t.is_file()) {
            found.push(e.path());
        }
    }
    found.sort();
    for path in found {
        if existing_row(store, &path)?.is_some() {
            continue;
        }
        let Ok(manifest) = crate::archive::read_manifest(&path) else {
            continue; // not ours, or not whole: `backups import` reports it
        };
        if manifest.format != crate::archive::FORMAT || manifest.service != req.service {
            continue;
        }
        let location = path.display().to_string();
        if req.dry_run {
            log(
                tracing::Level::INFO,
                &format!(
                    "[dry-run] would catalogue {location} (an interrupted run left it uncatalogued)"
                ),
            );
            continue;
        }
        let check = crate::archive::verify_checksum(&path, Some(&manifest.sha256));
        let size = std::fs::metadata(&path)
            .map(|m| m.len())
            .unwrap_or(manifest.size);
        let id = store.record_backup(&NewBackup {
            service: manifest.service.clone(),
            kind: kind.into(),
            location: location.clone(),
            size,
            sha256: Some(manifest.sha256.clone()),
            created_at: manifest.created_at,
            verified_at: check.is_ok().then_some(req.now),
            run_id: req.run_id,
        })?;
        match check {
            Ok(_) => log(
                tracing::Level::INFO,
                &format!(
                    "catalogued {location} (ID {id}), which an interrupted run left uncatalogued"
                ),
            ),
            Err(e) => {
                store.set_verified(id, false, req.now)?;
                log(
                    tracing::Level::WARN,
                    &format!(
                        "catalogued {location} (ID {id}), which an interrupted run left \
                         uncatalogued; it fails verification: {e}"
                    ),
                );
            }
        }
        report.adopted.push(location);
    }
    Ok(())
}

/// The row for the file at `path`, by its location as given or as
/// canonicalized (`backups import` records canonical paths, runs the
/// configured ones).
fn existing_row(store: &Store, path: &Path) -> Result<Option<BackupRecord>> {
    if let Some(b) = store.backup_by_location(&path.display().to_string())? {
        return Ok(Some(b));
    }
    match std::fs::canonicalize(path) {
        Ok(c) if c != path => store.backup_by_location(&c.display().to_string()),
        _ => Ok(None),
    }
}

/// Remove an archive, then its sidecars ([`crate::archive::remove`]); what
/// is already gone is fine (a deletion a killed run began, or a file removed
/// by hand).
pub fn remove_artifact(archive: &Path) -> Result<()> {
    match crate::archive::remove(archive) {
        // None of the three was there.
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// One archive `backups import` found.
#[derive(Debug, serde::Serialize)]
pub struct ImportResult {
    pub path: PathBuf,
    /// The manifest's service; None when the manifest could not be read
    /// (the archive was skipped).
    pub service: Option<String>,
    /// The catalog row written (or left alone: `pending_delete`).
    pub id: Option<i64>,
    /// Whether its checksum verified.
    pub ok: bool,
    pub error: Option<String>,
    /// A row for it existed already (updated in place, same ID).
    pub existing: bool,
    /// Its row is `deleting`: retention was interrupted while deleting it,
    /// and the next backup run finishes that; the row is left alone.
    pub pending_delete: bool,
}

/// A catalog row `backups import` changed without finding its file.
#[derive(Debug, serde::Serialize)]
pub struct RowChange {
    pub id: i64,
    pub location: String,
}

/// What `backups import DIR` did, both ways.
#[derive(Debug, Default, serde::Serialize)]
pub struct ImportReport {
    /// The archives found under DIR.
    pub archives: Vec<ImportResult>,
    /// Rows under DIR whose files are gone, marked `missing` now.
    pub missing: Vec<RowChange>,
    /// Rows under DIR left `deleting` whose files are gone, marked
    /// `deleted` now.
    pub finished: Vec<RowChange>,
}

/// Reconcile the catalog with the archives under `dir`, both ways:
/// - every archive (`*.tar.zst` or `*.tar` with a manifest) is catalogued with its
///   checksum verified (one that fails as `failed_verify`); one that already
///   has a row (by its path, or its canonical path) updates that row in
///   place, keeping its ID, kind and run; one without a readable manifest is
///   skipped and reported;
/// - rows of our kinds under `dir` whose files are gone are marked
///   `missing` (or, when retention was deleting them, `deleted`).
pub fn import_dir(store: &Store, dir: &Path) -> Result<ImportReport> {
    let mut found = Vec::new();
    find_archives(dir, &mut found)?;
    found.sort();
    let now = chrono::Utc::now().timestamp();
    let mut report = ImportReport::default();
    for p in found {
        let existing = existing_row(store, &p)?;
        let path = std::fs::canonicalize(&p).unwrap_or(p);
        let manifest = match crate::archive::read_manifest(&path) {
            Ok(m) => m,
            Err(e) => {
                report.archives.push(ImportResult {
                    path,
                    service: None,
                    id: existing.as_ref().map(|b| b.id),
                    ok: false,
                    error: Some(e.to_string()),
                    existing: existing.is_some(),
                    pending_delete: false,
                });
                continue;
            }
        };
        if let Some(b) = existing
            .as_ref()
            .filter(|b| b.status == BackupStatus::Deleting)
        {
            report.archives.push(ImportResult {
                path,
                service: Some(b.service.clone()),
                id: Some(b.id),
                ok: true,
                error: None,
                existing: true,
                pending_delete: true,
            });
            continue;
        }
        let check = crate::archive::verify_checksum(&path, None);
        let size = std::fs::metadata(&path)
            .map(|m| m.len())
            .unwrap_or(manifest.size);
        let id = match &existing {
            // The same archive, already catalogued: only its verification
            // is new (a `missing` row is revived by it).
            Some(b)
                if b.status != BackupStatus::Deleted
                    && b.sha256.as_deref() == Some(manifest.sha256.as_str()) =>
            {
                b.id
            }
            _ => store.record_backup(&NewBackup {
                service: manifest.service.clone(),
                kind: existing
                    .as_ref()
                    .map_or_else(|| KIND_ARCHIVE.into(), |b| b.kind.clone()),
                location: existing
                    .as_ref()
                    .map_or_else(|| path.display().to_string(), |b| b.location.clone()),
                size,
                sha256: Some(manifest.sha256.clone()),
                created_at: manifest.created_at,
                verified_at: None,
                run_id: existing
                    .as_ref()
                    .filter(|b| b.sha256.as_deref() == Some(manifest.sha256.as_str()))
                    .and_then(|b| b.run_id),
            })?,
        };
        store.set_verified(id, check.is_ok(), now)?;
        report.archives.push(ImportResult {
            path,
            service: Some(manifest.service),
            id: Some(id),
            ok: check.is_ok(),
            error: check.err().map(|e| e.to_string()),
            existing: existing.is_some(),
            pending_delete: false,
        });
    }

    // The other way: rows under `dir` whose files are gone.
    let dir_abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir_canon = std::fs::canonicalize(dir).unwrap_or_else(|_| dir_abs.clone());
    let under = |loc: &Path| {
        loc.starts_with(&dir_abs)
            || loc.starts_with(&dir_canon)
            || loc
                .parent()
                .and_then(|p| std::fs::canonicalize(p).ok())
                .is_some_and(|p| p.starts_with(&dir_canon))
    };
    for b in store.backups(None, false)? {
        let loc = Path::new(&b.location);
        if !is_archive_kind(&b.kind) || !under(loc) || !is_gone(loc) {
            continue;
        }
        match b.status {
            BackupStatus::Deleting => {
                store.mark_deleted(b.id, now)?;
                report.finished.push(RowChange {
                    id: b.id,
                    location: b.location,
                });
            }
            // `mark_missing` says whether it changed the row: reported once.
            s if s.is_present() && store.mark_missing(b.id, now)? => {
                report.missing.push(RowChange {
                    id: b.id,
                    location: b.location,
                });
            }
            _ => {}
        }
    }
    Ok(report)
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
        } else if ft.is_file() && crate::archive::is_archive_name(&name) {
            out.push(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(&t.path().join("state/state.db")).unwrap();
        (t, s)
    }

    /// A real archive of `data` named `name` in `dir`, catalogued as a run
    /// would (unless `record` is false).
    fn make(
        s: &Store,
        data: &Path,
        dir: &Path,
        name: &str,
        created_at: i64,
        kind: &str,
        record: bool,
    ) -> (PathBuf, i64) {
        let info = crate::archive::create(&crate::archive::CreateRequest {
            sources: &[data.to_path_buf()],
            dest_dir: dir,
            file_name: name,
            level: 1,
            compress: true,
            optional: &[],
            threads: 1,
            exclude: &[],
            meta: crate::archive::ManifestMeta {
                service: "web".into(),
                kind: "archive".into(),
                created_at,
                hostname: "h".into(),
                capture: None,
            },
            cancel: None,
            generated: &[],
        })
        .unwrap();
        let id = if record {
            s.record_backup(&NewBackup {
                service: "web".into(),
                kind: kind.into(),
                location: info.path.display().to_string(),
                size: info.size,
                sha256: Some(info.sha256.clone()),
                created_at,
                verified_at: Some(created_at),
                run_id: None,
            })
            .unwrap()
        } else {
            -1
        };
        (info.path, id)
    }

    fn keep_last(n: u32) -> RetentionConfig {
        RetentionConfig {
            keep_last: Some(n),
            ..Default::default()
        }
    }

    fn req<'a>(
        policy: &'a RetentionConfig,
        dir: &'a Path,
        copies: &'a [PathBuf],
    ) -> PruneRequest<'a> {
        PruneRequest {
            service: "web",
            policy,
            now: 10_000,
            dry_run: false,
            pending: None,
            backup_dir: Some(dir),
            copy_dirs: copies,
            run_id: None,
        }
    }

    fn status(s: &Store, id: i64) -> BackupStatus {
        s.backup(id).unwrap().unwrap().status
    }

    fn quiet(_: tracing::Level, _: &str) {}

    #[test]
    fn copies_of_unchanged_data_are_told_apart_by_name() {
        let (t, s) = store();
        let data = t.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a"), "same\n").unwrap();
        let dir = t.path().join("b/web");
        let off = t.path().join("off/web");
        let (a1, id1) = make(&s, &data, &dir, "web_1.tar.zst", 100, KIND_ARCHIVE, true);
        let (a2, id2) = make(&s, &data, &dir, "web_2.tar.zst", 200, KIND_ARCHIVE, true);
        assert_eq!(
            crate::archive::sha256_file(&a1).unwrap(),
            crate::archive::sha256_file(&a2).unwrap(),
            "unchanged data, same bytes"
        );
        let mut copy_ids = Vec::new();
        for (a, id) in [(&a1, id1), (&a2, id2)] {
            let c = crate::archive::copy_to(a, &off).unwrap();
            let r = s.backup(id).unwrap().unwrap();
            copy_ids.push(
                s.record_backup(&NewBackup {
                    service: r.service,
                    kind: KIND_COPY.into(),
                    location: c.display().to_string(),
                    size: r.size,
                    sha256: r.sha256,
                    created_at: r.created_at,
                    verified_at: r.verified_at,
                    run_id: None,
                })
                .unwrap(),
            );
        }
        let pol = keep_last(1);
        let copies = [off.clone()];
        let r = prune(&s, &req(&pol, &dir, &copies), &quiet).unwrap();
        assert_eq!(r.deleted.len(), 2, "{r:?}");
        assert!(!a1.exists() && a2.exists());
        assert!(!off.join("web_1.tar.zst").exists());
        assert!(
            off.join("web_2.tar.zst").exists(),
            "the kept archive's copy went too"
        );
        assert_eq!(status(&s, copy_ids[0]), BackupStatus::Deleted);
        assert_eq!(status(&s, copy_ids[1]), BackupStatus::Complete);
    }

    #[test]
    fn a_hand_deleted_archive_is_marked_missing_once_and_left_out() {
        let (t, s) = store();
        let data = t.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a"), "x\n").unwrap();
        let dir = t.path().join("b/web");
        let (_, id1) = make(&s, &data, &dir, "web_1.tar.zst", 100, KIND_ARCHIVE, true);
        let (a2, id2) = make(&s, &data, &dir, "web_2.tar.zst", 200, KIND_ARCHIVE, true);
        let (a3, id3) = make(&s, &data, &dir, "web_3.tar.zst", 300, KIND_ARCHIVE, true);
        // The newest is removed by hand (sidecars too).
        remove_artifact(&a3).unwrap();
        let warnings = std::cell::RefCell::new(Vec::new());
        let log = |l: tracing::Level, m: &str| {
            if l == tracing::Level::WARN {
                warnings.borrow_mut().push(m.to_string());
            }
        };
        let pol = keep_last(1);
        let r = prune(&s, &req(&pol, &dir, &[]), &log).unwrap();
        assert_eq!(r.missing, [a3.display().to_string()]);
        assert_eq!(warnings.borrow().len(), 1, "{:?}", warnings.borrow());
        assert_eq!(status(&s, id3), BackupStatus::Missing);
        // keep_last 1 counts only what is there: web_2 is kept, web_1 goes.
        assert_eq!(r.kept, [a2.display().to_string()]);
        assert_eq!(status(&s, id1), BackupStatus::Deleted);
        assert_eq!(status(&s, id2), BackupStatus::Complete);
        // Once only.
        let r = prune(&s, &req(&pol, &dir, &[]), &log).unwrap();
        assert!(r.missing.is_empty());
        assert_eq!(warnings.borrow().len(), 1);
        assert_eq!(status(&s, id3), BackupStatus::Missing);
        // The file comes back (a disk mounted again): verified, revived,
        // and counted again.
        make(&s, &data, &dir, "web_3.tar.zst", 300, KIND_ARCHIVE, false);
        let r = prune(&s, &req(&pol, &dir, &[]), &log).unwrap();
        assert_eq!(status(&s, id3), BackupStatus::Complete);
        assert_eq!(r.kept, [a3.display().to_string()]);
        assert_eq!(status(&s, id2), BackupStatus::Deleted);
        assert!(r.adopted.is_empty(), "its row was there: not adopted twice");
    }

    #[test]
    fn an_interrupted_deletion_is_finished_and_an_orphan_adopted() {
        let (t, s) = store();
        let data = t.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a"), "x\n").unwrap();
        let dir = t.path().join("b/web");
        let (a1, id1) = make(&s, &data, &dir, "web_1.tar.zst", 100, KIND_ARCHIVE, true);
        let (a2, id2) = make(&s, &data, &dir, "web_2.tar.zst", 200, KIND_ARCHIVE, true);
        // Killed after marking, before (web_1) and after (web_2) removing
        // the archive file.
        s.mark_deleting(&[id1, id2]).unwrap();
        std::fs::remove_file(&a2).unwrap();
        // Killed between publishing and cataloguing.
        let (a3, _) = make(&s, &data, &dir, "web_3.tar.zst", 300, KIND_ARCHIVE, false);
        let pol = RetentionConfig::default();
        let r = prune(&s, &req(&pol, &dir, &[]), &quiet).unwrap();
        assert_eq!(r.finished.len(), 2, "{r:?}");
        assert_eq!(status(&s, id1), BackupStatus::Deleted);
        assert_eq!(status(&s, id2), BackupStatus::Deleted);
        assert!(!a1.exists());
        for side in [
            crate::archive::sidecar_paths(&a1),
            crate::archive::sidecar_paths(&a2),
        ] {
            assert!(!side.0.exists() && !side.1.exists());
        }
        assert_eq!(r.adopted, [a3.display().to_string()]);
        let row = s
            .backup_by_location(&a3.display().to_string())
            .unwrap()
            .unwrap();
        assert_eq!((row.status, row.created_at), (BackupStatus::Complete, 300));
        assert!(row.verified_at.is_some());
        assert_eq!(r.kept, [a3.display().to_string()]);
        // Nothing left to do.
        let r = prune(&s, &req(&pol, &dir, &[]), &quiet).unwrap();
        assert!(r.finished.is_empty() && r.adopted.is_empty() && r.missing.is_empty());
    }

    #[test]
    fn import_reconciles_both_ways_and_reimports_in_place() {
        let (t, s) = store();
        let data = t.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("a"), "x\n").unwrap();
        let dir = t.path().join("b/web");
        let (a1, id1) = make(&s, &data, &dir, "web_1.tar.zst", 100, KIND_ARCHIVE, true);
        let (a2, id2) = make(&s, &data, &dir, "web_2.tar.zst", 200, KIND_ARCHIVE, true);
        let (_, _) = make(&s, &data, &dir, "web_3.tar.zst", 300, KIND_ARCHIVE, false);
        let (a4, id4) = make(&s, &data, &dir, "web_4.tar.zst", 400, KIND_ARCHIVE, true);
        s.mark_deleting(&[id4]).unwrap();
        remove_artifact(&a2).unwrap();
        remove_artifact(&a4).unwrap();
        // Elsewhere: not under DIR, left alone.
        let other = t.path().join("elsewhere/web");
        let (a5, id5) = make(&s, &data, &other, "web_5.tar.zst", 500, KIND_ARCHIVE, true);
        remove_artifact(&a5).unwrap();

        let r = import_dir(&s, &t.path().join("b")).unwrap();
        assert_eq!(r.archives.len(), 2, "{r:?}");
        assert!(r.archives.iter().all(|a| a.ok));
        assert_eq!(r.archives[0].id, Some(id1), "re-import keeps the row");
        assert!(r.archives[0].existing && !r.archives[1].existing);
        assert_eq!(r.missing.iter().map(|m| m.id).collect::<Vec<_>>(), [id2]);
        assert_eq!(r.finished.iter().map(|m| m.id).collect::<Vec<_>>(), [id4]);
        assert_eq!(status(&s, id2), BackupStatus::Missing);
        assert_eq!(status(&s, id4), BackupStatus::Deleted);
        assert_eq!(status(&s, id5), BackupStatus::Complete);
        let rows = s.backups(Some("web"), true).unwrap().len();

        // Again: nothing new, nothing duplicated, the missing row not re-reported.
        let r = import_dir(&s, &t.path().join("b")).unwrap();
        assert_eq!(r.archives.len(), 2);
        assert!(r.archives.iter().all(|a| a.existing && a.ok));
        assert!(r.missing.is_empty() && r.finished.is_empty());
        assert_eq!(s.backups(Some("web"), true).unwrap().len(), rows);

        // The file comes back: import revives the row.
        make(&s, &data, &dir, "web_2.tar.zst", 200, KIND_ARCHIVE, false);
        let r = import_dir(&s, &t.path().join("b")).unwrap();
        assert_eq!(r.archives.len(), 3);
        assert_eq!(status(&s, id2), BackupStatus::Complete);
        assert!(a1.exists());
    }
}
