//! `run WORKFLOW [--service NAME]... [--dry-run]`: lock, record the run,
//! run the workflow's `run(ctx)`, record the outcome.
//!
//! A dry run creates nothing: no lock file, no state DB, no log files; it
//! reads the state DB when one exists.

use super::{Env, Report};
use crate::cli::RunArgs;
use crate::config::ServiceConfig;
use crate::error::{Error, Result};
use crate::script::host::{build_engine, run_program};
use crate::script::{Host, Program};
use crate::state::RunStatus;
use serde_json::json;
use std::sync::Arc;

pub fn run(env: &Env, args: &RunArgs) -> Result<Report> {
    let cfg = Arc::new(env.load_config()?);
    tracing::trace!("configuration loaded");
    let paths = env.paths(&cfg);
    let services = select_services(&cfg.services, &args.services)?;
    let names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
    crate::monitor::checks::prewarm_http_client(&services);

    let (_lock, store) = if args.dry_run {
        (None, env.existing_store(&paths)?)
    } else {
        paths.ensure_dirs()?;
        crate::logging::open_main_log(&paths.log_dir)?;
        crate::logging::open_workflow_log(&paths.log_dir, &args.workflow)?;
        let lock = crate::lock::acquire(&paths.lock_dir, &args.workflow)?;
        let store = env.open_store(&paths)?;
        tracing::trace!("state opened");
        let stale = store.abort_stale_runs(&args.workflow)?;
        if stale > 0 {
            tracing::warn!("{stale} earlier '{}' run(s) ended without finishing (process died); marked aborted", args.workflow);
        }
        for svc in &services {
            let dir = paths.backup_root.join(&svc.name);
            if dir.is_dir() {
                for p in crate::archive::cleanup_debris(&dir)? {
                    tracing::info!("removed debris of an interrupted run: {}", p.display());
                }
            }
        }
        (Some(lock), Some(store))
    };
    if !args.dry_run {
        apply_priority(&cfg.global.backup);
    }
    let store = store.map(Arc::new);
    let run_id = match (&store, args.dry_run) {
        (Some(s), false) => Some(s.begin_run(&args.workflow, &names, false)?),
        _ => None,
    };
    let host = Arc::new(Host::new(
        cfg.clone(),
        paths,
        store.clone(),
        args.dry_run,
        run_id,
        &args.workflow,
    ));
    // Dead-man pings (healthchecks.io /start, Uptime Kuma) for this run.
    let pinger = crate::notify::pings::Pinger::start(&cfg, &args.workflow, args.dry_run);
    let engine = build_engine(&host);
    tracing::trace!("engine built");
    let program = match Program::load(&engine, &host.scripts, &args.workflow, &names) {
        Ok(p) => p,
        Err(e) => {
            if let (Some(s), Some(id)) = (&store, run_id) {
                let _ = s.finish_run(id, RunStatus::Failed, &e.to_string());
            }
            pinger.fail(&e.to_string());
            return Err(e);
        }
    };
    let _ = host.program.set(program);
    tracing::trace!("workflow compiled");
    tracing::info!(
        "{}workflow {} started for {} service(s){}",
        if args.dry_run { "[dry-run] " } else { "" },
        args.workflow,
        names.len(),
        run_id.map(|id| format!(" (run {id})")).unwrap_or_default()
    );
    let outcome = match run_program(&host, &engine, &services) {
        Ok(o) => o,
        Err(e) => {
            pinger.fail(&e.to_string());
            return Err(e);
        }
    };

    let failed: Vec<&str> = outcome
        .services
        .iter()
        .filter(|o| !o.ok)
        .map(|o| o.service.as_str())
        .collect();
    let status = if !outcome.ok {
        RunStatus::Failed
    } else if outcome.warnings > 0 {
        RunStatus::Warning
    } else {
        RunStatus::Success
    };
    let summary = match (&outcome.error, failed.is_empty()) {
        (Some(e), _) => format!("workflow failed: {e}"),
        (None, false) => format!(
            "{} of {} service(s) failed: {}",
            failed.len(),
            outcome.services.len(),
            failed.join(", ")
        ),
        (None, true) => format!(
            "{} service(s) done, {} warning(s)",
            outcome.services.len(),
            outcome.warnings
        ),
    };
    if let (Some(s), Some(id)) = (&store, run_id) {
        s.finish_run(id, status, &summary)?;
    }

    let mut text = String::new();
    for o in &outcome.services {
        let mark = if !o.ok {
            "FAILED"
        } else if o.skipped {
            "skipped"
        } else {
            "ok"
        };
        let detail = o
            .error
            .clone()
            .unwrap_or_else(|| describe_result(&o.result));
        text.push_str(&format!("{mark:<7} {:<24} {detail}\n", o.service));
    }
    if let Some(e) = &outcome.error {
        text.push_str(&format!("error: {e}\n"));
    }
    text.push_str(&format!(
        "{}{}: {summary}\n",
        if args.dry_run { "[dry-run] " } else { "" },
        args.workflow
    ));
    if !outcome.ok {
        tracing::error!("{summary}");
    }
    // One message per channel for the whole run; a failed delivery is
    // recorded and warned about and never changes the exit code.
    let deliveries = crate::notify::deliver_run(
        &cfg,
        store.as_deref(),
        run_id,
        &outcome.notifications,
        args.dry_run,
    );
    for d in deliveries.iter().filter(|d| d.status == "failed") {
        text.push_str(&format!(
            "warning: notification to {} failed: {}\n",
            d.channel,
            d.error.as_deref().unwrap_or("")
        ));
    }
    // The Prometheus textfile, after the deliveries so their failures count.
    if let (Some(s), Some(dir), false) = (&store, &host.paths.metrics_dir, args.dry_run) {
        if let Err(e) = crate::metrics::write(&cfg, s, dir) {
            tracing::warn!("metrics file not written in {}: {e}", dir.display());
            text.push_str(&format!("warning: metrics file not written: {e}\n"));
        }
    }
    let exit = if outcome.ok {
        0
    } else {
        crate::error::exit::FAILED
    };
    let log_tail = match (&store, run_id) {
        (Some(s), Some(id)) => s
            .run_events(id, 200)
            .unwrap_or_default()
            .iter()
            .map(|e| {
                format!(
                    "{} {} {}{}\n",
                    crate::units::local_time(e.ts),
                    e.level,
                    e.service
                        .as_deref()
                        .map(|s| format!("[{s}] "))
                        .unwrap_or_default(),
                    e.message
                )
            })
            .collect::<String>(),
        _ => String::new(),
    };
    pinger.finish(exit, &format!("{log_tail}{summary}\n"), &summary);
    let mut doc = json!({
        "run_id": run_id,
        "workflow": args.workflow,
        "dry_run": args.dry_run,
        "status": status,
        "summary": summary,
        "error": outcome.error,
        "warnings": outcome.warnings,
        "services": outcome.services,
        "notifications": outcome.notifications,
        "deliveries": deliveries,
    });
    crate::redact::scrub_json(&mut doc);
    Ok(Report {
        json: doc,
        text,
        exit,
    })
}

fn describe_result(v: &serde_json::Value) -> String {
    if let Some(r) = v.get("reason").and_then(|r| r.as_str()) {
        return r.to_string();
    }
    match (
        v.get("path").and_then(|p| p.as_str()),
        v.get("size").and_then(|s| s.as_u64()),
    ) {
        (Some(p), Some(size)) => format!("{p} ({})", crate::units::human_bytes(size)),
        (Some(p), None) => p.to_string(),
        _ => v
            .get("summary")
            .and_then(|s| s.as_str())
            .unwrap_or("")
            .to_string(),
    }
}

/// `--service` names must exist; without them, every enabled service.
fn select_services<'a>(
    all: &'a [ServiceConfig],
    wanted: &[String],
) -> Result<Vec<&'a ServiceConfig>> {
    if wanted.is_empty() {
        return Ok(all.iter().filter(|s| s.enabled).collect());
    }
    wanted
        .iter()
        .map(|w| {
            all.iter().find(|s| &s.name == w).ok_or_else(|| {
                let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
                Error::Usage(format!(
                    "no service named '{w}' (configured: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// The seed's "lower priority" for heavy work: nice and ionice for this
/// process (threads started later, like zstd's workers, inherit it).
fn apply_priority(backup: &crate::config::BackupConfig) {
    let ioclass = crate::proc::ionice_class(backup.ionice.as_deref());
    if let Err((what, e)) = crate::proc::set_priority(backup.nice, ioclass) {
        tracing::warn!("could not set {what}: {e}");
    }
}
