//! `notify::send(event, data)`: the notification hook. The event's type and
//! severity come from the one table of event types
//! ([`crate::config::EventType`]); this builds the typed
//! [`crate::notify::Event`] once, logs it and collects it on the host.
//! Delivery to the channels runs when the run has finished
//! ([`crate::notify::deliver_run`]).

use super::{service_of, throw, RhaiResult};
use crate::config::{EventType, Severity};
use crate::script::host::Host;
use crate::state::NotificationStatus;
use rhai::{Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use std::sync::Arc;

/// Every event type's name, in the table's order.
fn event_names() -> Vec<&'static str> {
    EventType::ALL.iter().map(|t| t.as_str()).collect()
}

fn send(h: &Host, ctx: &NativeCallContext, event: &str, data: Map) -> RhaiResult<()> {
    let Some(kind) = EventType::from_name(event) else {
        return Err(throw(
            "invalid_argument",
            format!(
                "notify::send: unknown event type '{event}' (one of: {})",
                event_names().join(", ")
            ),
            service_of(ctx).as_deref(),
        ));
    };
    let payload: serde_json::Value = rhai::serde::from_dynamic(&Dynamic::from_map(data).flatten())
        .map_err(|e| {
            throw(
                "invalid_argument",
                format!("notify::send: data: {e}"),
                service_of(ctx).as_deref(),
            )
        })?;
    let svc = service_of(ctx);
    collect(h, kind, svc.as_deref(), payload);
    Ok(())
}

/// Collect an event on the host (delivered when the run has finished) and
/// log it: `notify::send`, and primitives that notify by themselves.
pub(super) fn collect(
    h: &Host,
    kind: EventType,
    svc: Option<&str>,
    mut payload: serde_json::Value,
) {
    crate::redact::scrub_json(&mut payload);
    let event = kind.as_str();
    let sev = kind.severity();
    let summary = payload
        .get("summary")
        .and_then(|s| s.as_str())
        .unwrap_or("")
        .to_string();
    // Say whether the event goes anywhere: an alert no channel takes is
    // logged as not sent, never as if it went out.
    let n = &h.config.notifications;
    let routed = n.enabled && n.channels.iter().any(|c| c.delivers(kind));
    let line = if routed {
        format!("notification {event} ({sev}): {summary}")
    } else {
        format!("notification {event} ({sev}) not sent: no enabled channel takes it: {summary}")
    };
    // A warning-level notification is not itself a run warning.
    if sev == Severity::Info {
        h.event(tracing::Level::INFO, svc, &line);
    } else {
        tracing::warn!("{}", crate::redact::scrub(&line));
    }
    let record = crate::notify::Event {
        event: kind.as_str().into(),
        severity: sev,
        workflow: h.workflow.clone(),
        hostname: h.hostname.clone(),
        summary,
        data: payload,
        ts: chrono::Utc::now().timestamp(),
    };
    h.notifications
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(record);
    if let (Some(store), false) = (&h.store, h.dry_run) {
        let n = crate::state::NotificationRecord {
            run_id: h.run_id,
            channel: "log".into(),
            event: event.into(),
            severity: sev.as_str().into(),
            status: if routed {
                NotificationStatus::Sent
            } else {
                NotificationStatus::Suppressed
            }
            .into(),
            error: (!routed).then(|| "no enabled channel takes this event".to_string()),
        };
        if let Err(e) = store.record_notification(&n) {
            tracing::warn!("could not record notification: {e}");
        }
    }
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
        event_names().into_iter().map(Dynamic::from).collect()
    });
    m
}
