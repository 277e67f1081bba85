//! `status`: the last run of each workflow, the newest backup of each service.

use super::Report;
use crate::app::Setup;
use crate::error::Result;
use crate::units::{human_bytes, local_time};
use serde_json::json;

pub fn run(env: &Setup) -> Result<Report> {
    let cfg = env.load_config()?;
    let paths = env.paths(&cfg);
    let Some(store) = env.existing_store(&paths)? else {
        return Ok(Report::ok(
            json!({"runs": [], "services": []}),
            format!(
                "no state yet ({} does not exist)\n",
                paths.state_db.display()
            ),
        ));
    };
    let runs = store.last_runs()?;
    let mut text = String::from("Last runs\n");
    for r in &runs {
        text.push_str(&format!(
            "  {:<16} {:<9} {}  {}\n",
            r.workflow,
            r.status.as_str(),
            local_time(r.started_at),
            r.summary
        ));
    }
    if runs.is_empty() {
        text.push_str("  (none)\n");
    }
    text.push_str("\nServices\n");
    let now = chrono::Utc::now().timestamp();
    let mut services = Vec::new();
    for s in &cfg.services {
        // Only what is there (not `deleting` or `missing` rows).
        let backups: Vec<_> = store
            .backups(Some(&s.name), false)?
            .into_iter()
            .filter(|b| b.status.is_present())
            .collect();
        let newest = backups
            .iter()
            .find(|b| b.kind == "archive" || !b.kind.starts_with("archive"));
        let verified = backups
            .iter()
            .filter(|b| b.verified_at.is_some() && b.status == crate::state::BackupStatus::Complete)
            .count();
        // Verification age: an unverified backup counts as unknown, not good.
        let verified_at = newest.and_then(|b| b.verified_at);
        let line = match newest {
            Some(b) => format!(
                "last backup {} ({} ago, {}), {} backup(s), {verified} verified; {}",
                local_time(b.created_at),
                ago(now - b.created_at),
                human_bytes(b.size),
                backups.len(),
                match verified_at {
                    Some(v) => format!("newest verified {} ago", ago(now - v)),
                    None => "newest UNVERIFIED".into(),
                }
            ),
            None if s.backup => "never backed up".into(),
            None => "backup disabled".into(),
        };
        text.push_str(&format!("  {:<24} {line}\n", s.name));
        services.push(json!({
            "name": s.name, "type": s.service_type.as_str(), "enabled": s.enabled,
            "last_backup": newest, "backups": backups.len(), "verified": verified,
            "verification_age_seconds": verified_at.map(|v| (now - v).max(0)),
        }));
    }
    let monitored = monitor_section(&cfg, &store, now, &mut text)?;
    let updates = update_section(&store, now, &mut text)?;
    let restore_tests = restore_test_section(&cfg, &store, now, &mut text)?;
    Ok(Report::ok(
        json!({"runs": runs, "services": services, "monitor": monitored,
               "updates": updates, "restore_tests": restore_tests}),
        text,
    ))
}

/// Each monitored service's state, since when, and uptime over 24h/7d/30d.
fn monitor_section(
    cfg: &crate::config::Config,
    store: &crate::state::Store,
    now: i64,
    text: &mut String,
) -> Result<Vec<crate::monitor::ServiceStatus>> {
    let mut out = Vec::new();
    for s in &cfg.services {
        let st = crate::monitor::service_status(store, &s.name)?;
        if !st.checks.is_empty() {
            out.push(st);
        }
    }
    if out.is_empty() {
        return Ok(out);
    }
    let pct = |p: Option<f64>| p.map(|p| format!("{p:.2}%")).unwrap_or_else(|| "-".into());
    text.push_str(&format!(
        "\nMonitoring\n  {:<24} {:<8} {:<10} {:>8} {:>8} {:>8}\n",
        "SERVICE", "STATE", "SINCE", "24H", "7D", "30D"
    ));
    for st in &out {
        text.push_str(&format!(
            "  {:<24} {:<8} {:<10} {:>8} {:>8} {:>8}\n",
            st.service,
            st.state.to_uppercase(),
            st.since
                .map(|t| format!("{} ago", ago(now - t)))
                .unwrap_or_default(),
            pct(st.uptime_24h),
            pct(st.uptime_7d),
            pct(st.uptime_30d)
        ));
        for c in st
            .checks
            .iter()
            .filter(|c| c.status != crate::state::CheckStatus::Up)
        {
            text.push_str(&format!("      {} {}: {}\n", c.name, c.status, c.message));
        }
    }
    Ok(out)
}

/// The last update of each service: its outcome, when, and what runs.
fn update_section(
    store: &crate::state::Store,
    now: i64,
    text: &mut String,
) -> Result<Vec<serde_json::Value>> {
    let rows = store.last_updates()?;
    if !rows.is_empty() {
        text.push_str("\nUpdates\n");
    }
    let mut out = Vec::new();
    for u in rows {
        let outcome = u.outcome.clone().unwrap_or_default();
        let ended = u.finished_at.unwrap_or(u.started_at);
        let summary = u.detail["summary"].as_str().unwrap_or("").to_string();
        text.push_str(&format!(
            "  {:<24} {:<16} {} ago  {}\n",
            u.service,
            outcome,
            ago(now - ended),
            summary.lines().next().unwrap_or("")
        ));
        out.push(json!({
            "service": u.service, "outcome": outcome, "kind": u.kind,
            "finished_at": u.finished_at, "run_id": u.run_id, "summary": summary,
            "after": u.after,
        }));
    }
    Ok(out)
}

/// The newest restore test of each service: when, the outcome, RTO and
/// the age of the data it restored (docs/restore-testing.md).
fn restore_test_section(
    cfg: &crate::config::Config,
    store: &crate::state::Store,
    now: i64,
    text: &mut String,
) -> Result<Vec<serde_json::Value>> {
    let tests: Vec<_> = store
        .last_restore_tests()?
        .into_iter()
        .filter(|t| cfg.service(&t.service).is_some())
        .collect();
    if tests.is_empty() {
        return Ok(Vec::new());
    }
    text.push_str(&format!(
        "\nRestore tests\n  {:<24} {:<7} {:<10} {:>9} {:>10}\n",
        "SERVICE", "RESULT", "WHEN", "RTO", "DATA AGE"
    ));
    let mut out = Vec::new();
    for t in &tests {
        let when = t.finished_at.unwrap_or(t.started_at);
        text.push_str(&format!(
            "  {:<24} {:<7} {:<10} {:>9} {:>10}\n",
            t.service,
            if t.success == Some(true) {
                "OK"
            } else {
                "FAILED"
            },
            format!("{} ago", ago(now - when)),
            t.rto_seconds
                .map(|r| format!("{r:.1}s"))
                .unwrap_or_else(|| "-".into()),
            t.rpo_seconds.map(ago).unwrap_or_else(|| "-".into()),
        ));
        if let Some(e) = &t.error {
            text.push_str(&format!("      {e}\n"));
        }
        out.push(json!({
            "service": t.service, "id": t.id, "backup_id": t.backup_id,
            "finished_at": t.finished_at, "ok": t.success == Some(true),
            "rto_seconds": t.rto_seconds, "rpo_seconds": t.rpo_seconds,
            "checks_passed": t.checks_passed, "checks_failed": t.checks_failed,
            "error": t.error, "cleaned_up": t.cleaned_up,
        }));
    }
    Ok(out)
}

fn ago(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
