//! Notification delivery: channels (email, Slack, Discord, ntfy, Gotify,
//! Telegram, Pushover, generic JSON webhook, a command), per-channel
//! formatting within each service's limits, retries with capped backoff that
//! honour 429 `Retry-After`, routing by event type and severity, a persisted
//! cooldown per alert, and dead-man pings (healthchecks.io, Uptime Kuma).
//!
//! `notify::send(event, data)` in a script only collects the typed
//! [`Event`] (see `primitives/notify.rs`); [`deliver_run`] runs once when the run has
//! finished and sends **one message per channel per run** holding every
//! event that channel wants. So a backup of 20 services is one message, and
//! a monitor cycle that finds three services down is one message too.
//!
//! A failed delivery never fails a workflow or changes the exit code: it is
//! recorded in the `notifications` table, warned about, tried on the
//! channel's `fallback`, and mentioned in the next message that gets
//! through on that channel. An event that cannot be delivered at all (a
//! type no channel can route, data that is not a map) is reported the same
//! way, never dropped quietly.

mod format;
pub mod pings;
mod targets;
pub(crate) mod transport;

pub use format::{headline, HttpRequest};

use crate::config::{ChannelConfig, ChannelType, Config, EventType, Severity};
use crate::state::{NotificationRecord, NotificationStatus, Store};
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The versioned schema of the generic webhook's JSON and the command
/// channel's stdin.
pub const EVENT_SCHEMA: &str = "homelab-autopilot.event/v1";

/// One event a workflow sent with `notify::send`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The event type's name (`backup_failed`, ... see
    /// [`EventType`]), or `test`.
    pub event: String,
    pub severity: Severity,
    pub workflow: String,
    pub hostname: String,
    /// `data.summary`: the human text (in the JSON output as `data.summary`
    /// only).
    #[serde(skip)]
    pub summary: String,
    /// Everything the script passed, secrets scrubbed.
    pub data: serde_json::Value,
    /// Unix seconds.
    pub ts: i64,
}

impl Event {
    /// The alert's subject, for the cooldown key: `data.service`,
    /// `data.check` or `data.subject`.
    pub fn subject(&self) -> String {
        ["subject", "check", "service"]
            .iter()
            .find_map(|k| self.data.get(*k).and_then(|v| v.as_str()))
            .unwrap_or("")
            .to_string()
    }

    /// The routable type, or why this event cannot be delivered.
    fn deliverable(&self) -> Result<EventType, String> {
        let t = EventType::from_name(&self.event)
            .ok_or_else(|| format!("unknown event type '{}'", self.event))?;
        if !self.data.is_object() {
            return Err(format!(
                "event {}: data is not a map ({})",
                self.event,
                json_kind(&self.data)
            ));
        }
        Ok(t)
    }

    /// A reminder (monitor's `remind_every`) is not held back by the cooldown.
    fn is_reminder(&self) -> bool {
        self.data.get("reminder").and_then(|r| r.as_bool()) == Some(true)
    }
}

/// What one channel gets for one run.
#[derive(Debug, Clone)]
pub struct Message {
    pub events: Vec<Event>,
    pub run_id: Option<i64>,
    /// Deliveries that failed since this channel's last message got through.
    pub earlier_failures: usize,
}

impl Message {
    /// The most severe event (the first of equals): it names the message.
    pub fn lead(&self) -> &Event {
        let max = self.events.iter().map(|e| e.severity).max();
        self.events
            .iter()
            .find(|e| Some(e.severity) == max)
            .expect("a message holds at least one event")
    }

    pub fn severity(&self) -> Severity {
        self.lead().severity
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "a map",
    }
}

/// What became of one delivery (printed and in `--json` as `sent`,
/// `failed`, `skipped`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Sent,
    Failed,
    /// A dry run, or a disabled or ping channel in `notify test`.
    Skipped,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    /// The row the state DB records for it (a skipped delivery has none).
    pub fn recorded(self) -> Option<NotificationStatus> {
        match self {
            DeliveryStatus::Sent => Some(NotificationStatus::Sent),
            DeliveryStatus::Failed => Some(NotificationStatus::Failed),
            DeliveryStatus::Skipped => None,
        }
    }
}

impl fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The result of delivering to one channel.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryReport {
    pub channel: String,
    #[serde(rename = "type")]
    pub channel_type: String,
    pub status: DeliveryStatus,
    pub events: Vec<String>,
    pub attempts: u32,
    pub duration_ms: u64,
    pub error: Option<String>,
    /// Set when this channel failed and its fallback was used.
    pub fallback: Option<String>,
}

/// Per-request timeout, attempts and backoff for every channel.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub timeout: Duration,
    pub attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited for: the delivery fails.
    pub max_retry_after: Duration,
}

impl Policy {
    /// 10 s per request, 3 attempts, 1 s backoff doubling to 10 s at most,
    /// `Retry-After` honoured up to 60 s. `HOMELAB_AUTOPILOT_NOTIFY_TIMEOUT`
    /// (seconds) changes the per-request timeout.
    pub fn from_env() -> Policy {
        let timeout = std::env::var("HOMELAB_AUTOPILOT_NOTIFY_TIMEOUT")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0 && *s <= 600.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(10));
        Policy {
            timeout,
            attempts: 3,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// The process's async runtime for network primitives (HTTP, SMTP). The
/// script host runs on a blocking thread and crosses into async Rust here
/// only.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hla-net")
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
    .block_on(f)
}

/// A channel resolved for sending.
pub(crate) struct Channel<'a> {
    pub cfg: &'a ChannelConfig,
    pub kind: ChannelType,
}

impl<'a> Channel<'a> {
    pub fn new(cfg: &'a ChannelConfig) -> Option<Channel<'a>> {
        cfg.kind().map(|kind| Channel { cfg, kind })
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Deliver a finished run's events: routing, cooldown, one message per
/// channel, fallback, and a record of every attempt. Never fails: problems
/// are warned about and returned in the reports. An event that cannot be
/// delivered (see [`Event::deliverable`]) gets a `failed` report of its own
/// (channel `*`) and a `failed` row.
pub fn deliver_run(
    cfg: &Config,
    store: Option<&Store>,
    run_id: Option<i64>,
    events: &[Event],
    dry_run: bool,
) -> Vec<DeliveryReport> {
    let n = &cfg.notifications;
    if !n.enabled || n.channels.is_empty() || events.is_empty() {
        return Vec::new();
    }
    let mut reports = Vec::new();
    let mut routable: Vec<(EventType, Event)> = Vec::with_capacity(events.len());
    for e in events {
        match e.deliverable() {
            Ok(t) => routable.push((t, e.clone())),
            Err(why) => reports.push(undeliverable(store, run_id, e, &why, dry_run)),
        }
    }
    let events = apply_cooldown(cfg, store, run_id, routable, dry_run);
    let policy = Policy::from_env();
    for ch in n.channels.iter().filter_map(Channel::new) {
        let wanted: Vec<Event> = events
            .iter()
            .filter(|(t, _)| ch.cfg.delivers(*t))
            .map(|(_, e)| e.clone())
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let earlier_failures = store
            .and_then(|s| s.notification_failures_since_sent(&ch.cfg.name).ok())
            .unwrap_or(0);
        let msg = Message {
            events: wanted,
            run_id,
            earlier_failures,
        };
        reports.push(deliver_one(cfg, store, &ch, &msg, &policy, dry_run));
    }
    if let (Some(s), false) = (store, dry_run) {
        let sent_any = reports.iter().any(|r| r.status == DeliveryStatus::Sent);
        if sent_any {
            for (_, e) in &events {
                if let Err(err) = s.cooldown_touch(&cooldown_key(e), now()) {
                    tracing::warn!("could not record the notification cooldown: {err}");
                }
            }
        }
    }
    reports
}

/// The report (and state row) of an event no channel can take.
fn undeliverable(
    store: Option<&Store>,
    run_id: Option<i64>,
    e: &Event,
    why: &str,
    dry_run: bool,
) -> DeliveryReport {
    let error = format!("not delivered: {why}");
    tracing::warn!("notification {}: {error}", e.event);
    if let (Some(s), false) = (store, dry_run) {
        let rec = NotificationRecord {
            run_id,
            channel: "*".into(),
            event: e.event.clone(),
            severity: e.severity.as_str().into(),
            status: NotificationStatus::Failed.into(),
            error: Some(error.clone()),
        };
        if let Err(err) = s.record_notification(&rec) {
            tracing::warn!("could not record notification: {err}");
        }
    }
    DeliveryReport {
        channel: "*".into(),
        channel_type: "none".into(),
        status: DeliveryStatus::Failed,
        events: vec![e.event.clone()],
        attempts: 0,
        duration_ms: 0,
        error: Some(error),
        fallback: None,
    }
}

/// Send `msg` to `ch`, then to its fallback if it failed; record both.
pub(crate) fn deliver_one(
    cfg: &Config,
    store: Option<&Store>,
    ch: &Channel,
    msg: &Message,
    policy: &Policy,
    dry_run: bool,
) -> DeliveryReport {
    let mut report = send_recorded(store, ch, msg, policy, dry_run);
    if report.status == DeliveryStatus::Failed {
        if let Some(fb) = ch.cfg.fallback.as_deref() {
            if let Some(fch) = cfg.notifications.channel(fb).and_then(Channel::new) {
                let mut fmsg = msg.clone();
                fmsg.earlier_failures += 1;
                let f = send_recorded(store, &fch, &fmsg, policy, dry_run);
                report.fallback = Some(format!("{} ({})", f.channel, f.status));
            }
        }
    }
    report
}

fn send_recorded(
    store: Option<&Store>,
    ch: &Channel,
    msg: &Message,
    policy: &Policy,
    dry_run: bool,
) -> DeliveryReport {
    let events: Vec<String> = msg.events.iter().map(|e| e.event.clone()).collect();
    let mut report = DeliveryReport {
        channel: ch.cfg.name.clone(),
        channel_type: ch.kind.as_str().into(),
        status: DeliveryStatus::Sent,
        events: events.clone(),
        attempts: 0,
        duration_ms: 0,
        error: None,
        fallback: None,
    };
    if dry_run {
        tracing::info!(
            "[dry-run] would send {} to channel {} ({})",
            events.join(", "),
            ch.cfg.name,
            ch.kind.as_str()
        );
        report.status = DeliveryStatus::Skipped;
        return report;
    }
    let started = Instant::now();
    let (attempts, res) = block_on(transport::send(ch, msg, policy));
    report.attempts = attempts;
    report.duration_ms = started.elapsed().as_millis() as u64;
    match res {
        Ok(()) => tracing::info!(
            "notification {} sent to {} ({})",
            events.join(", "),
            ch.cfg.name,
            ch.kind.as_str()
        ),
        Err(e) => {
            let e = crate::redact::scrub(&e).into_owned();
            tracing::warn!(
                "notification to channel {} ({}) failed after {attempts} attempt(s): {e}",
                ch.cfg.name,
                ch.kind.as_str()
            );
            report.status = DeliveryStatus::Failed;
            report.error = Some(e);
        }
    }
    if let (Some(s), Some(status)) = (store, report.status.recorded()) {
        let rec = NotificationRecord {
            run_id: msg.run_id,
            channel: ch.cfg.name.clone(),
            event: events.join(","),
            severity: msg.severity().as_str().into(),
            status: status.into(),
            error: report.error.clone(),
        };
        if let Err(e) = s.record_notification(&rec) {
            tracing::warn!("could not record notification: {e}");
        }
    }
    report
}

fn cooldown_key(e: &Event) -> String {
    format!("{}:{}", e.event, e.subject())
}

/// Drop warning/critical events sent within `cooldown_minutes` for the
/// same subject (reminders excepted); record each drop as `suppressed`.
fn apply_cooldown(
    cfg: &Config,
    store: Option<&Store>,
    run_id: Option<i64>,
    events: Vec<(EventType, Event)>,
    dry_run: bool,
) -> Vec<(EventType, Event)> {
    let window = cfg.notifications.cooldown_minutes as i64 * 60;
    let Some(store) = store else { return events };
    if window == 0 {
        return events;
    }
    let t = now();
    events
        .into_iter()
        .filter(|(_, e)| {
            if e.severity == Severity::Info || e.is_reminder() {
                return true;
            }
            let last = store.cooldown_last(&cooldown_key(e)).ok().flatten();
            match last {
                Some(last) if t - last < window => {
                    tracing::info!(
                        "notification {} for '{}' held back: one was sent {}s ago \
                         (notifications.cooldown_minutes)",
                        e.event,
                        e.subject(),
                        t - last
                    );
                    if !dry_run {
                        let _ = store.record_notification(&NotificationRecord {
                            run_id,
                            channel: "*".into(),
                            event: e.event.clone(),
                            severity: e.severity.as_str().into(),
                            status: NotificationStatus::Suppressed.into(),
                            error: Some("cooldown".into()),
                        });
                    }
                    false
                }
                _ => true,
            }
        })
        .collect()
}

/// `notify test [CHANNEL]`: send a test event to one channel or to every
/// enabled event channel (ping channels only when named).
pub fn test_channels(
    cfg: &Config,
    store: Option<&Store>,
    only: Option<&str>,
) -> Vec<DeliveryReport> {
    let host = crate::system::hostname();
    let event = Event {
        event: "test".into(),
        severity: Severity::Info,
        workflow: "notify-test".into(),
        hostname: host.clone(),
        summary: format!("Test notification from homelab-autopilot on {host}"),
        data: serde_json::json!({"summary": format!("Test notification from homelab-autopilot on {host}")}),
        ts: now(),
    };
    let policy = Policy::from_env();
    let mut out = Vec::new();
    for ch in cfg.notifications.channels.iter().filter_map(Channel::new) {
        if only.is_some_and(|o| o != ch.cfg.name) {
            continue;
        }
        if only.is_none() && (!ch.cfg.enabled || ch.kind.is_ping()) {
            out.push(DeliveryReport {
                channel: ch.cfg.name.clone(),
                channel_type: ch.kind.as_str().into(),
                status: DeliveryStatus::Skipped,
                events: vec![],
                attempts: 0,
                duration_ms: 0,
                error: Some(if ch.kind.is_ping() {
                    "ping channel: name it to send a test ping".into()
                } else {
                    "disabled".into()
                }),
                fallback: None,
            });
            continue;
        }
        if ch.kind.is_ping() {
            out.push(pings::test_ping(&ch, &policy));
            continue;
        }
        let msg = Message {
            events: vec![event.clone()],
            run_id: None,
            earlier_failures: 0,
        };
        out.push(send_recorded(store, &ch, &msg, &policy, false));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ChannelConfig;

    fn event(name: &str, data: serde_json::Value) -> Event {
        Event {
            event: name.into(),
            severity: EventType::from_name(name)
                .map(|t| t.severity())
                .unwrap_or(Severity::Critical),
            workflow: "backup".into(),
            hostname: "pve1".into(),
            summary: String::new(),
            data,
            ts: 0,
        }
    }

    #[test]
    fn an_event_that_cannot_be_delivered_is_reported_and_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("state.db")).unwrap();
        let mut cfg = Config::default();
        cfg.notifications.channels.push(ChannelConfig {
            name: "cmd".into(),
            channel_type: Some(ChannelType::Command),
            command: vec!["true".into()],
            ..Default::default()
        });
        let events = [
            event("backup_success", serde_json::json!({"summary": "ok"})),
            event("backup_exploded", serde_json::json!({"summary": "?"})),
            event("backup_failed", serde_json::json!("not a map")),
        ];
        let reports = deliver_run(&cfg, Some(&store), None, &events, false);
        let failed: Vec<&DeliveryReport> = reports
            .iter()
            .filter(|r| r.status == DeliveryStatus::Failed)
            .collect();
        assert_eq!(failed.len(), 2, "{reports:?}");
        assert!(failed.iter().all(|r| r.channel == "*"));
        assert!(failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("unknown event type 'backup_exploded'"));
        assert!(failed[1]
            .error
            .as_deref()
            .unwrap()
            .contains("data is not a map"));
        let sent = reports.iter().find(|r| r.channel == "cmd").unwrap();
        assert_eq!(sent.status, DeliveryStatus::Sent, "{sent:?}");
        assert_eq!(sent.events, ["backup_success"]);
        let rows = store.recent_notifications(Some("*"), 10).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.record.status == "failed"));
    }

    #[test]
    fn an_event_serialises_without_its_derived_summary() {
        let v = serde_json::to_value(event("service_down", serde_json::json!({"summary": "x"})))
            .unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["data", "event", "hostname", "severity", "ts", "workflow"]
        );
        assert_eq!(v["severity"], "critical");
    }
}
