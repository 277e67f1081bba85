//! `catalog::` for scripts: record a verified artifact, list a service's
//! backups, and prune them by retention (never the newest verified one).

use super::{dry_run, from_map, service_config, service_of, to_dyn, to_rhai, RhaiResult};
use crate::catalog::{prune, PruneReport, PruneRequest, KIND_ARCHIVE};
use crate::config::EventType;
use crate::script::Host;
use crate::state::NewBackup;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
struct RecordArgs {
    service: String,
    path: String,
    size: u64,
    sha256: Option<String>,
    created_at: i64,
    verified_at: Option<i64>,
    #[serde(default)]
    kind: Option<String>,
}

fn record(h: &Host, ctx: &NativeCallContext, info: Map) -> RhaiResult<i64> {
    let args: RecordArgs = from_map(info, "catalog::record")?;
    if dry_run(h, ctx, &format!("record {} in the catalog", args.path)) {
        return Ok(-1);
    }
    let Some(store) = &h.store else { return Ok(-1) };
    let b = NewBackup {
        service: args.service,
        kind: args.kind.unwrap_or_else(|| KIND_ARCHIVE.into()),
        location: args.path,
        size: args.size,
        sha256: args.sha256,
        created_at: args.created_at,
        verified_at: args.verified_at,
        run_id: h.run_id,
    };
    store.record_backup(&b).map_err(|e| to_rhai(e, ctx))
}

/// One `backup_missing` notification for the rows a prune found gone.
fn notify_missing(h: &Host, service: &str, missing: &[String]) {
    let summary = format!(
        "{service}: {} catalogued backup(s) gone from disk without retention deleting them \
         (marked missing, left out of retention): {}",
        missing.len(),
        missing.join(", ")
    );
    super::notify::collect(
        h,
        EventType::BackupMissing,
        Some(service),
        serde_json::json!({"service": service, "summary": summary, "missing": missing}),
    );
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let v = |name: &str| FuncRegistration::new(name).with_volatility(true);
    let h = host.clone();
    v("record").set_into_module(&mut m, move |ctx: NativeCallContext, info: Map| {
        record(&h, &ctx, info)
    });
    let h = host.clone();
    v("list").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, service: &str| -> RhaiResult<Array> {
            let Some(store) = &h.store else {
                return Ok(Array::new());
            };
            // Only what is there: not the rows retention is deleting or
            // whose files are missing.
            let rows = store
                .backups(Some(service), false)
                .map_err(|e| to_rhai(e, &ctx))?;
            rows.iter()
                .filter(|b| b.status.is_present())
                .map(to_dyn)
                .collect()
        },
    );
    let h = host.clone();
    v("mark_verified").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, id: i64, ok: bool| -> RhaiResult<()> {
            if dry_run(
                &h,
                &ctx,
                &format!(
                    "mark backup {id} as {}",
                    if ok {
                        "verified"
                    } else {
                        "failed verification"
                    }
                ),
            ) {
                return Ok(());
            }
            let Some(store) = &h.store else { return Ok(()) };
            store
                .set_verified(id, ok, chrono::Utc::now().timestamp())
                .map_err(|e| to_rhai(e, &ctx))
        },
    );
    let h = host.clone();
    v("prune").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, svc: Map| -> RhaiResult<Dynamic> {
            let service = service_config(&h, &svc, "catalog::prune")?;
            let name = service.name.clone();
            let policy = h.retention_for(service);
            let Some(store) = &h.store else {
                return to_dyn(&PruneReport::default());
            };
            let svc_name = service_of(&ctx).unwrap_or(name.clone());
            // `svc.pending`: an artifact a dry run would have made, planned
            // as the newest verified backup.
            let pending = svc.get("pending").and_then(|p| {
                p.read_lock::<Map>()
                    .and_then(|m| m.get("created_at").and_then(|c| c.as_int().ok()))
            });
            let log = |level, msg: &str| h.event(level, Some(&svc_name), msg);
            let backup_dir = h.backup_dir(&name);
            let copy_dirs: Vec<PathBuf> = super::dest::destinations(&h, service)
                .iter()
                .map(|d| d.path.join(&name))
                .collect();
            if !h.dry_run {
                // Temp files a killed copy left at the destinations (the
                // session cleans the backup dirs themselves).
                for dir in &copy_dirs {
                    match crate::archive::cleanup_debris(dir) {
                        Ok(removed) => {
                            for p in removed {
                                log(
                                    tracing::Level::INFO,
                                    &format!(
                                        "removed debris of an interrupted run: {}",
                                        p.display()
                                    ),
                                );
                            }
                        }
                        Err(e) => log(
                            tracing::Level::WARN,
                            &format!("could not clean up {}: {e}", dir.display()),
                        ),
                    }
                }
            }
            let req = PruneRequest {
                service: &name,
                policy,
                now: chrono::Utc::now().timestamp(),
                dry_run: h.dry_run,
                pending,
                backup_dir: Some(&backup_dir),
                copy_dirs: &copy_dirs,
                run_id: h.run_id,
            };
            let report = prune(store, &req, &log).map_err(|e| to_rhai(e, &ctx))?;
            if !report.missing.is_empty() && !h.dry_run {
                notify_missing(&h, &name, &report.missing);
            }
            to_dyn(&report)
        },
    );
    m
}
