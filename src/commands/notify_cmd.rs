//! `notify test [CHANNEL]`: send a test event and report each channel's
//! result. Unlike a workflow's notifications, a failed test exits 1: the
//! command exists to find out whether delivery works.

use super::Report;
use crate::app::Setup;
use crate::cli::NotifyCommand;
use crate::error::{Error, Result};
use crate::notify::DeliveryStatus;
use serde_json::json;

pub fn run(env: &Setup, cmd: &NotifyCommand) -> Result<Report> {
    let NotifyCommand::Test { channel } = cmd;
    let cfg = env.load_config()?;
    if let Some(name) = channel {
        if cfg.notifications.channel(name).is_none() {
            let known: Vec<&str> = cfg
                .notifications
                .channels
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            return Err(Error::Usage(format!(
                "no notification channel named '{name}' (configured: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    if cfg.notifications.channels.is_empty() {
        return Ok(Report::ok(
            json!({"channels": []}),
            "no notification channels configured (notifications.channels)\n",
        ));
    }
    let paths = env.paths(&cfg);
    let store = env.open_store(&paths).ok();
    let reports = crate::notify::test_channels(&cfg, store.as_ref(), channel.as_deref());
    let mut text = String::new();
    for r in &reports {
        let detail = match (r.status, &r.error) {
            (DeliveryStatus::Sent, _) => format!("{} ms, {} attempt(s)", r.duration_ms, r.attempts),
            (_, Some(e)) => e.clone(),
            _ => String::new(),
        };
        text.push_str(&format!(
            "{:<8} {:<20} {:<13} {detail}\n",
            r.status, r.channel, r.channel_type
        ));
    }
    let failed = reports
        .iter()
        .filter(|r| r.status == DeliveryStatus::Failed)
        .count();
    text.push_str(&format!(
        "{} channel(s) tested, {failed} failed\n",
        reports
            .iter()
            .filter(|r| r.status != DeliveryStatus::Skipped)
            .count()
    ));
    Ok(Report {
        json: json!({"channels": reports}),
        text,
        exit: if failed > 0 {
            crate::error::exit::FAILED
        } else {
            0
        },
    })
}
