//! `notify::send(event, data)`: the notification hook. Events use the seed's
//! types; this records and logs them. Delivery to real channels (email,
//! webhooks, ntfy, ...) plugs in behind this same call.

use super::{service_of, throw, RhaiResult};
use crate::script::host::{dynamic_to_json, Host};
use rhai::{Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use std::sync::Arc;

/// The seed's notification types.
pub const EVENT_TYPES: &[&str] = &[
    "backup_success",
    "backup_failed",
    "update_success",
    "update_failed",
    "service_down",
    "service_recovered",
    "external_access_failed",
    "rollback_executed",
    "disk_space_warning",
    "restore_test_success",
    "restore_test_failed",
];

/// `info`, `warning` or `critical` for an event type.
pub fn severity(event: &str) -> &'static str {
    match event {
        "backup_failed" | "update_failed" | "service_down" | "restore_test_failed" => "critical",
        "external_access_failed" | "rollback_executed" | "disk_space_warning" => "warning",
        _ => "info",
    }
}

fn send(h: &Host, ctx: &NativeCallContext, event: &str, data: Map) -> RhaiResult<()> {
    if !EVENT_TYPES.contains(&event) {
        return Err(throw(
            "invalid_argument",
            format!(
                "notify::send: unknown event type '{event}' (one of: {})",
                EVENT_TYPES.join(", ")
            ),
            service_of(ctx).as_deref(),
        ));
    }
    let mut payload = dynamic_to_json(&Dynamic::from_map(data));
    crate::redact::scrub_json(&mut payload);
    let sev = severity(event);
    let summary = payload
        .get("summary")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_string();
    let record = serde_json::json!({
        "event": event,
        "severity": sev,
        "workflow": h.workflow,
        "hostname": h.hostname,
        "data": payload,
        "ts": chrono::Utc::now().timestamp(),
    });
    let level = if sev == "info" {
        tracing::Level::INFO
    } else {
        tracing::Level::WARN
    };
    let svc = service_of(ctx);
    // A warning-level notification is not itself a run warning.
    if level == tracing::Level::WARN {
        tracing::warn!(
            "notification {event} ({sev}): {}",
            crate::redact::scrub(&summary)
        );
    } else {
        h.event(
            level,
            svc.as_deref(),
            &format!("notification {event} ({sev}): {summary}"),
        );
    }
    h.notifications
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(record);
    if let (Some(store), false) = (&h.store, h.dry_run) {
        let n = crate::state::NotificationRecord {
            run_id: h.run_id,
            channel: "log".into(),
            event: event.into(),
            severity: sev.into(),
            status: "sent".into(),
            error: None,
        };
        if let Err(e) = store.record_notification(&n) {
            tracing::warn!("could not record notification: {e}");
        }
    }
    Ok(())
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("send")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, event: &str, data: Map| send(&h, &ctx, event, data),
        );
    FuncRegistration::new("event_types").set_into_module(&mut m, || -> rhai::Array {
        EVENT_TYPES.iter().map(|s| Dynamic::from(*s)).collect()
    });
    m
}
