//! `run WORKFLOW [--service NAME]... [--backup ID] [--dry-run] [--recover]`: the run session
//! ([`crate::app::session`]) does the work; this prints its report.

use super::Report;
use crate::app::{session, RunReport, RunRequest, Setup};
use crate::cli::RunArgs;
use crate::error::Result;
use serde_json::json;

pub fn run(setup: &Setup, args: &RunArgs) -> Result<Report> {
    let req = RunRequest {
        workflow: args.workflow.clone(),
        services: args.services.clone(),
        backup: args.backup,
        dry_run: args.dry_run,
        recover: args.recover,
    };
    let report = session::run(setup, &req)?;
    let text = render_text(&report);
    let r = report;
    let mut doc = json!({
        "run_id": r.run_id,
        "workflow": r.workflow,
        "dry_run": r.dry_run,
        "status": r.status,
        "summary": r.summary,
        "error": r.outcome.error,
        "warnings": r.outcome.warnings,
        "services": r.outcome.services,
        "notifications": r.outcome.notifications,
        // The events the run raised, whether or not a channel takes them.
        "events": r.outcome.notifications.iter().map(|n| n.event.as_str()).collect::<Vec<_>>(),
        "deliveries": r.deliveries,
    });
    crate::redact::scrub_json(&mut doc);
    Ok(Report {
        json: doc,
        text,
        exit: r.exit,
    })
}

/// One line per service, then errors, warnings and the summary.
fn render_text(r: &RunReport) -> String {
    let mut text = String::new();
    for o in &r.outcome.services {
        // A step may say what state its service is in (the monitor's
        // `state`: up, failing); that is what the line shows, not "ok".
        let state = o.result.get("state").and_then(|s| s.as_str());
        let mark = if !o.ok {
            "FAILED"
        } else if o.skipped {
            "skipped"
        } else {
            state.unwrap_or("ok")
        };
        let detail = o
            .error
            .clone()
            .unwrap_or_else(|| describe_result(&o.result));
        text.push_str(&format!("{mark:<7} {:<24} {detail}\n", o.service));
    }
    if let Some(e) = &r.outcome.error {
        text.push_str(&format!("error: {e}\n"));
    }
    text.push_str(&format!(
        "{}{}: {}\n",
        if r.dry_run { "[dry-run] " } else { "" },
        r.workflow,
        r.summary
    ));
    for d in r
        .deliveries
        .iter()
        .filter(|d| d.status == crate::notify::DeliveryStatus::Failed)
    {
        text.push_str(&format!(
            "warning: notification to {} failed: {}\n",
            d.channel,
            d.error.as_deref().unwrap_or("")
        ));
    }
    for w in &r.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    text
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
