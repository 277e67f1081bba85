//! The backup catalog's rules over the state DB's rows: which kinds of row
//! there are, and retention applied to a service's archives (plan with
//! [`crate::retention::plan`], delete files and their copies, mark rows).

use crate::config::RetentionConfig;
use crate::error::Result;
use crate::retention::{self, RetentionItem};
use crate::state::{BackupRecord, Store};
use std::path::Path;

/// Catalog kind of our own archives, and of their copies at destinations.
pub const KIND_ARCHIVE: &str = "archive";
pub const KIND_COPY: &str = "archive-copy";

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
