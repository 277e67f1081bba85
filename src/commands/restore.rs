//! `restore ID|ARCHIVE_PATH --to DIR`: verify, then extract safely into a
//! new directory. By path it needs no configuration and no state DB.
//! `--volumes [--force]`: put the Docker volumes the backup captured back
//! (docs/docker.md).

use super::{parse_target, Report, Target};
use crate::app::Setup;
use crate::archive::{self, ExtractOptions};
use crate::cli::RestoreArgs;
use crate::docker;
use crate::error::{Error, Result};
use crate::state::BackupStatus;
use serde_json::json;
use std::path::Path;

pub fn run(env: &Setup, args: &RestoreArgs) -> Result<Report> {
    let mut store = None;
    let (path, expected) = match parse_target(&args.target) {
        Target::Path(p) => (p, None),
        Target::Id(id) => {
            let cfg = env.load_config()?;
            let paths = env.paths(&cfg);
            let st = env.existing_store(&paths)?.ok_or_else(|| {
                Error::Usage(format!(
                    "no state DB at {}; restore by archive path instead",
                    paths.state_db.display()
                ))
            })?;
            let b = st
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
            store = Some(st);
            (b.location.clone().into(), b.sha256.clone())
        }
    };
    if !path.is_file() {
        return Err(Error::Usage(format!("{}: no such archive", path.display())));
    }
    if args.volumes {
        return volumes(&path, expected, args, store.as_ref());
    }
    let Some(to) = &args.to else {
        return Err(Error::Usage("restore needs --to DIR or --volumes".into()));
    };
    if args.dry_run {
        // The checks the restore makes before it writes: the target, then
        // the checksum (the one in the catalog, else the sidecar).
        archive::check_restore_target(to)?;
        archive::verify_checksum(&path, expected.as_deref())?;
        let entries = archive::list(&path)?;
        let text = format!(
            "[dry-run] would restore {} entries from {} into {}\n",
            entries.len(),
            path.display(),
            to.display()
        );
        return Ok(Report::ok(
            json!({"dry_run": true, "archive": path, "target": to, "entries": entries.len()}),
            text,
        ));
    }
    let opts = ExtractOptions {
        max_bytes: args.max_bytes,
        expected_sha256: expected,
        allow_absolute_symlinks: args.allow_absolute_symlinks,
        ..Default::default()
    };
    let info = archive::extract(&path, to, &opts)?;
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

/// `--volumes`: the captured Docker volumes, then (with `--to`) the files.
fn volumes(
    path: &std::path::Path,
    expected: Option<String>,
    args: &RestoreArgs,
    store: Option<&crate::state::Store>,
) -> Result<Report> {
    let manifest = archive::read_manifest(path)?;
    let vols = docker::restore::captured(path, &manifest)?;
    let names: Vec<&str> = vols.iter().map(|v| v.name.as_str()).collect();
    if args.dry_run {
        let text = format!(
            "[dry-run] would restore volume(s) {} from {}\n",
            names.join(", "),
            path.display()
        );
        return Ok(Report::ok(
            json!({"dry_run": true, "archive": path, "volumes": names}),
            text,
        ));
    }
    let opts = ExtractOptions {
        max_bytes: args.max_bytes,
        expected_sha256: expected.clone(),
        allow_absolute_symlinks: args.allow_absolute_symlinks,
        ..Default::default()
    };
    let done = docker::restore::restore_volumes(path, &manifest, &opts, args.force, store)?;
    let mut text = String::new();
    for v in &done {
        text.push_str(&format!(
            "restored volume {}{} into {}{}\n",
            v.name,
            if v.created { " (created)" } else { "" },
            v.mountpoint,
            if v.stopped.is_empty() {
                String::new()
            } else {
                format!("; stopped and started {}", v.stopped.join(", "))
            }
        ));
    }
    let mut value = json!({"archive": path, "volumes": done});
    if let Some(to) = &args.to {
        let info = archive::extract(path, to, &opts)?;
        text.push_str(&format!(
            "restored {} entries ({} bytes) into {}\n",
            info.entries,
            info.bytes,
            info.target.display()
        ));
        value["target"] = json!(info.target);
        value["entries"] = json!(info.entries);
    }
    Ok(Report::ok(value, text))
}
