//! `schedule`: when each scheduled workflow runs next (as the daemon would
//! start it), and `schedule print --systemd|--cron` for admins who prefer
//! timers or cron to the daemon (docs/scheduling.md).

use super::Report;
use crate::app::Setup;
use crate::cli::{GlobalArgs, ScheduleArgs, ScheduleCommand};
use crate::error::Result;
use crate::scheduler::{self, plan::STALE, units};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::path::Path;

pub fn run(env: &Setup, g: &GlobalArgs, args: &ScheduleArgs) -> Result<Report> {
    match &args.command {
        None | Some(ScheduleCommand::List) => list(env),
        Some(ScheduleCommand::Print {
            systemd,
            cron: _,
            dir,
            program,
        }) => print(env, g, *systemd, dir.as_deref(), program),
    }
}

fn shipped() -> Vec<String> {
    crate::script::sources::shipped_workflow_names()
        .into_iter()
        .map(String::from)
        .collect()
}

fn list(env: &Setup) -> Result<Report> {
    let cfg = env.load_config()?;
    let paths = env.paths(&cfg);
    let store = env.existing_store(&paths)?;
    let zone = cfg.daemon.timezone;
    let now = Utc::now();
    let show = |t: DateTime<Utc>| zone.wall(t).format("%Y-%m-%d %H:%M").to_string();
    let (jobs, left) = scheduler::jobs(&cfg, &shipped());
    let mut text = format!(
        "{:<14} {:<16} {:<18} {:<26} {}\n",
        "WORKFLOW", "SCHEDULE", "NEXT", "LAST SLOT", "KEY"
    );
    let mut rows = Vec::new();
    for (j, available) in jobs
        .iter()
        .map(|j| (j, true))
        .chain(left.iter().map(|j| (j, false)))
    {
        let last = match &store {
            Some(s) => s.schedule_slot(&j.workflow)?,
            None => None,
        };
        let last_at = last
            .as_ref()
            .and_then(|r| DateTime::from_timestamp(r.last_slot, 0));
        // What the daemon does next: a slot owed since the last one it
        // dealt with (catch-up), or the next one from now.
        let owed = last_at
            .and_then(|l| j.schedule.next_in(zone, l))
            .filter(|n| *n <= now);
        let next = j.schedule.next_in(zone, now);
        let next_text = match (available, owed) {
            (false, _) => "not in this build".to_string(),
            (true, Some(o)) if cfg.daemon.catch_up || now - o <= STALE => "now (owed)".into(),
            (true, _) => next.map(show).unwrap_or_else(|| "never".into()),
        };
        let last_text = match (&last, last_at) {
            (Some(r), Some(t)) => format!("{} {}", show(t), r.last_action.as_str()),
            _ => "-".into(),
        };
        text.push_str(&format!(
            "{:<14} {:<16} {:<18} {:<26} {}\n",
            j.workflow,
            j.schedule.as_str(),
            next_text,
            last_text,
            j.key
        ));
        rows.push(json!({
            "workflow": j.workflow,
            "key": j.key,
            "schedule": j.schedule.as_str(),
            "available": available,
            "owed": owed.map(|o| o.to_rfc3339()),
            "next": next.map(|n| n.to_rfc3339()),
            "last_slot": last_at.map(|t| t.to_rfc3339()),
            "last_action": last.as_ref().map(|r| r.last_action),
        }));
    }
    text.push_str(&format!("time zone: {zone}\n"));
    Ok(Report::ok(
        json!({"timezone": zone.name(), "schedules": rows}),
        text,
    ))
}

fn print(
    env: &Setup,
    g: &GlobalArgs,
    systemd: bool,
    dir: Option<&Path>,
    program: &Path,
) -> Result<Report> {
    let cfg = env.load_config()?;
    let (jobs, _) = scheduler::jobs(&cfg, &shipped());
    let mut argv = vec![program.display().to_string()];
    for (flag, p) in [
        ("--config", &g.config),
        ("--state-dir", &g.state_dir),
        ("--log-dir", &g.log_dir),
        ("--scripts-dir", &g.scripts_dir),
        ("--lock-dir", &g.lock_dir),
    ] {
        if let Some(p) = p {
            let p = std::path::absolute(p).map_err(|e| crate::Error::io(p, e))?;
            argv.extend([flag.to_string(), p.display().to_string()]);
        }
    }
    let zone = cfg.daemon.timezone;
    if !systemd {
        let text = units::crontab(&jobs, zone, &argv);
        return Ok(Report::ok(json!({"crontab": text}), text));
    }
    let files = units::systemd(&jobs, zone, cfg.daemon.jitter_seconds, &argv);
    let mut text = String::new();
    let mut written = Vec::new();
    for f in &files {
        match dir {
            Some(d) => {
                let path = d.join(&f.name);
                crate::files::write_atomic(&path, f.text.as_bytes(), 0o644)?;
                text.push_str(&format!("wrote {}\n", path.display()));
                written.push(path.display().to_string());
            }
            None => text.push_str(&format!("# ---- {} ----\n{}\n", f.name, f.text)),
        }
    }
    if dir.is_some() {
        text.push_str(
            "then: systemctl daemon-reload && systemctl enable --now homelab-autopilot-<workflow>.timer\n",
        );
    }
    let units: Vec<_> = files
        .iter()
        .map(|f| json!({"name": f.name, "text": f.text}))
        .collect();
    Ok(Report::ok(
        json!({"units": units, "written": written}),
        text,
    ))
}
