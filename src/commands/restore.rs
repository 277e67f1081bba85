//! `restore ID|ARCHIVE_PATH --to DIR`: verify, then extract safely into a
//! new directory. By path it needs no configuration and no state DB.

use super::{parse_target, Report, Target};
use crate::app::Setup;
use crate::archive::{self, ExtractOptions};
use crate::cli::RestoreArgs;
use crate::error::{Error, Result};
use crate::state::BackupStatus;
use serde_json::json;
use std::path::Path;

pub fn run(env: &Setup, args: &RestoreArgs) -> Result<Report> {
    let (path, expected) = match parse_target(&args.target) {
        Target::Path(p) => (p, None),
        Target::Id(id) => {
            let cfg = env.load_config()?;
            let paths = env.paths(&cfg);
            let store = env.existing_store(&paths)?.ok_or_else(|| {
                Error::Usage(format!(
                    "no state DB at {}; restore by archive path instead",
                    paths.state_db.display()
                ))
            })?;
            let b = store
                .backup(id)?
                .ok_or_else(|| Error::Usage(format!("no backup with ID {id}")))?;
            if !b.kind.starts_with("archive") {
                return Err(Error::Usage(format!(
                    "backup {id} is a {} backup; restore it with its own tool",
                    b.kind
                )));
            }
            let gone = match b.status {
                BackupStatus::Deleted => Some("it was deleted"),
                BackupStatus::Deleting => Some("retention is deleting it"),
                _ if crate::catalog::is_gone(Path::new(&b.location)) => {
                    Some("its file is gone (missing)")
                }
                _ => None,
            };
            if let Some(why) = gone {
                return Err(Error::Usage(format!(
                    "backup {id} ({}) cannot be restored: {why}; see `backups list` for the others",
                    b.location
                )));
            }
            (b.location.clone().into(), b.sha256.clone())
        }
    };
    if !path.is_file() {
        return Err(Error::Usage(format!("{}: no such archive", path.display())));
    }
    if args.dry_run {
        let entries = archive::list(&path)?;
        let text = format!(
            "[dry-run] would restore {} entries from {} into {}\n",
            entries.len(),
            path.display(),
            args.to.display()
        );
        return Ok(Report::ok(
            json!({"dry_run": true, "archive": path, "target": args.to, "entries": entries.len()}),
            text,
        ));
    }
    let opts = ExtractOptions {
        max_bytes: args.max_bytes,
        expected_sha256: expected,
        allow_absolute_symlinks: args.allow_absolute_symlinks,
        ..Default::default()
    };
    let info = archive::extract(&path, &args.to, &opts)?;
    for w in &info.warnings {
        tracing::warn!("{w}");
    }
    let text = format!(
        "restored {} entries ({} bytes) from {} into {}\n",
        info.entries,
        info.bytes,
        path.display(),
        info.target.display()
    );
    Ok(Report::ok(
        json!({"archive": path, "target": info.target, "entries": info.entries, "bytes": info.bytes}),
        text,
    ))
}
