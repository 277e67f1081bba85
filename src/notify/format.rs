//! Per-channel formatting: the subject line, a plain-text and an HTML body,
//! and the HTTP request each webhook service expects, within its size
//! limits (Discord 2000 content / 6000 across embeds, Slack 3000 per section
//! block, Telegram 4096, Pushover 1024). Pure functions: unit-tested with
//! snapshots, no network.

use super::{Event, Message, EVENT_SCHEMA};
use crate::config::Severity;
use serde_json::{json, Value};

/// An HTTP request to send (URL already built from the channel's dialect).
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn json(url: String, v: &Value) -> HttpRequest {
        HttpRequest {
            method: "POST",
            url,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }
}

/// `FAILED backup on pve1`, `DOWN web on pve1`: the event's verb, what it is
/// about, and the host.
pub fn headline(e: &Event) -> String {
    let svc = e
        .data
        .get("service")
        .and_then(|s| s.as_str())
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let what = match e.event.as_str() {
        "backup_failed" => "FAILED backup".to_string(),
        "backup_success" => "OK backup".to_string(),
        "backup_missing" => format!("MISSING backup{svc}"),
        "update_failed" => format!("FAILED update{svc}"),
        "update_success" => format!("OK update{svc}"),
        "service_down" => format!("DOWN{}", if svc.is_empty() { " service" } else { &svc }),
        "service_recovered" => format!(
            "RECOVERED{}",
            if svc.is_empty() { " service" } else { &svc }
        ),
        "external_access_failed" => format!("FAILED external access{svc}"),
        "rollback_executed" => format!("ROLLBACK{svc}"),
        "rollback_failed" => format!("ROLLBACK FAILED{svc}"),
        "disk_space_warning" => "WARNING disk space".to_string(),
        "restore_test_success" => format!("OK restore test{svc}"),
        "restore_test_failed" => format!("FAILED restore test{svc}"),
        "test" => "TEST notification".to_string(),
        other => other.to_string(),
    };
    format!("{what} on {}", e.hostname)
}

/// The message's title: the lead event's headline, `(+N more)` when the
/// run produced several.
pub fn title(m: &Message) -> String {
    let mut t = headline(m.lead());
    if m.events.len() > 1 {
        t.push_str(&format!(" (+{} more)", m.events.len() - 1));
    }
    t
}

pub fn subject(m: &Message) -> String {
    format!("[homelab-autopilot] {}", title(m))
}

/// A note on deliveries that did not get through before this one.
fn failures_note(m: &Message) -> Option<String> {
    (m.earlier_failures > 0).then(|| {
        format!(
            "Note: {} earlier notification(s) to this channel could not be delivered \
             (see `homelab-autopilot status`).",
            m.earlier_failures
        )
    })
}

/// Extra data lines of an event: scalar fields other than the summary.
fn detail_lines(e: &Event) -> Vec<String> {
    let Some(obj) = e.data.as_object() else {
        return vec![];
    };
    obj.iter()
        .filter(|(k, _)| k.as_str() != "summary")
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}: {s}"),
            Value::Array(a) => format!(
                "{k}: {}",
                a.iter()
                    .map(|x| x.as_str().map(str::to_string).unwrap_or(x.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            other => format!("{k}: {other}"),
        })
        .collect()
}

fn event_text(e: &Event) -> String {
    let mut s = headline(e);
    if !e.summary.is_empty() {
        s.push('\n');
        s.push_str(&e.summary);
    }
    s
}

/// The plain-text body (email, ntfy, command stderr, Telegram).
pub fn text(m: &Message) -> String {
    let mut out = String::new();
    for (i, e) in m.events.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        out.push_str(&event_text(e));
        for l in detail_lines(e) {
            out.push_str("\n  ");
            out.push_str(&l);
        }
    }
    if let Some(n) = failures_note(m) {
        out.push_str("\n\n");
        out.push_str(&n);
    }
    let lead = m.lead();
    out.push_str(&format!(
        "\n\n-- homelab-autopilot on {}, workflow {}{}, {}\n",
        lead.hostname,
        lead.workflow,
        m.run_id.map(|r| format!(" (run {r})")).unwrap_or_default(),
        chrono::DateTime::from_timestamp(lead.ts, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    ));
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The optional HTML part of an email.
pub fn html(m: &Message) -> String {
    let mut out = String::from("<!doctype html>\n<html><body style=\"font-family:sans-serif\">\n");
    for e in &m.events {
        out.push_str(&format!(
            "<h3 style=\"color:#{:06x}\">{}</h3>\n<p>{}</p>\n",
            colour(e.severity),
            html_escape(&headline(e)),
            html_escape(&e.summary).replace('\n', "<br>\n")
        ));
        let lines = detail_lines(e);
        if !lines.is_empty() {
            out.push_str("<ul>\n");
            for l in lines {
                out.push_str(&format!("<li>{}</li>\n", html_escape(&l)));
            }
            out.push_str("</ul>\n");
        }
    }
    if let Some(n) = failures_note(m) {
        out.push_str(&format!("<p><em>{}</em></p>", html_escape(&n)));
    }
    out.push_str("</body></html>");
    out
}

/// Cut `s` to at most `max` characters, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

fn colour(s: Severity) -> u32 {
    match s {
        Severity::Info => 0x2e_cc_71,
        Severity::Warning => 0xf1_c4_0f,
        Severity::Critical => 0xe7_4c_3c,
    }
}

/// Discord: one embed per event (at most 10), coloured by severity;
/// `allowed_mentions: {parse: []}` so log text cannot ping anyone; content
/// at most 2000 characters, embeds 6000 together.
pub fn discord(url: String, m: &Message) -> HttpRequest {
    let mut budget: usize = 6000;
    let mut embeds = Vec::new();
    for e in m.events.iter().take(10) {
        let title = truncate(&headline(e), 256);
        let mut desc = e.summary.clone();
        for l in detail_lines(e) {
            desc.push('\n');
            desc.push_str(&l);
        }
        let room = budget.saturating_sub(title.chars().count());
        if room < 20 {
            break;
        }
        let desc = truncate(&desc, room.min(4096));
        budget -= title.chars().count() + desc.chars().count();
        embeds.push(json!({
            "title": title,
            "description": desc,
            "color": colour(e.severity),
            "timestamp": chrono::DateTime::from_timestamp(e.ts, 0).map(|t| t.to_rfc3339()),
        }));
    }
    let mut content = title(m);
    if let Some(n) = failures_note(m) {
        content.push('\n');
        content.push_str(&n);
    }
    let v = json!({
        "username": "homelab-autopilot",
        "content": truncate(&content, 2000),
        "embeds": embeds,
        "allowed_mentions": {"parse": []},
    });
    HttpRequest::json(url, &v)
}

/// Slack's mrkdwn escaping: `&`, `<` and `>` only.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack: `text` (the fallback shown in notifications) plus blocks.
pub fn slack(url: String, m: &Message) -> HttpRequest {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate(&title(m), 150)},
    })];
    for e in m.events.iter().take(45) {
        let mut body = format!("*{}*", slack_escape(&headline(e)));
        if !e.summary.is_empty() {
            body.push('\n');
            body.push_str(&slack_escape(&e.summary));
        }
        for l in detail_lines(e) {
            body.push('\n');
            body.push_str(&slack_escape(&l));
        }
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate(&body, 3000)},
        }));
    }
    if let Some(n) = failures_note(m) {
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": slack_escape(&n)}],
        }));
    }
    let v = json!({
        "text": truncate(&slack_escape(&title(m)), 3000),
        "blocks": blocks,
    });
    HttpRequest::json(url, &v)
}

/// ntfy: the text as the body, `Title`, `Priority` and `Tags` headers.
pub fn ntfy(
    url: String,
    m: &Message,
    priority: Option<&str>,
    tags: &[String],
    auth: Option<String>,
) -> HttpRequest {
    let prio = priority.map(str::to_string).unwrap_or_else(|| {
        match m.severity() {
            Severity::Critical => "high",
            Severity::Warning => "default",
            Severity::Info => "low",
        }
        .into()
    });
    let mut all_tags: Vec<String> = vec![match m.severity() {
        Severity::Critical => "rotating_light".into(),
        Severity::Warning => "warning".into(),
        Severity::Info => "white_check_mark".into(),
    }];
    all_tags.extend(tags.iter().cloned());
    // Header values must be ASCII without control characters.
    let title: String = title(m)
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_control() {
                c
            } else {
                '?'
            }
        })
        .collect();
    let mut headers = vec![
        ("Title".into(), title),
        ("Priority".into(), prio),
        ("Tags".into(), all_tags.join(",")),
        ("Content-Type".into(), "text/plain; charset=utf-8".into()),
    ];
    if let Some(a) = auth {
        headers.push(("Authorization".into(), a));
    }
    HttpRequest {
        method: "POST",
        url,
        headers,
        body: truncate(&text(m), 4096).into_bytes(),
    }
}

/// Gotify: `POST /message` with `{title, message, priority}`.
pub fn gotify(url: String, token: &str, m: &Message, priority: Option<i64>) -> HttpRequest {
    let prio = priority.unwrap_or(match m.severity() {
        Severity::Critical => 8,
        Severity::Warning => 5,
        Severity::Info => 2,
    });
    let v = json!({"title": title(m), "message": text(m), "priority": prio});
    let mut r = HttpRequest::json(url, &v);
    r.headers.push(("X-Gotify-Key".into(), token.to_string()));
    r
}

pub fn telegram(url: String, chat: &str, m: &Message) -> HttpRequest {
    let v = json!({
        "chat_id": chat,
        "text": truncate(&format!("{}\n\n{}", title(m), text(m)), 4096),
        "disable_web_page_preview": true,
    });
    HttpRequest::json(url, &v)
}

pub fn pushover(
    url: String,
    token: &str,
    user: &str,
    m: &Message,
    priority: Option<i64>,
) -> HttpRequest {
    let prio = priority.unwrap_or(match m.severity() {
        Severity::Critical => 1,
        _ => 0,
    });
    let v = json!({
        "token": token, "user": user,
        "title": truncate(&title(m), 250),
        "message": truncate(&text(m), 1024),
        "priority": prio,
    });
    HttpRequest::json(url, &v)
}

/// The generic event document (`homelab-autopilot.event/v1`): the lead
/// event's fields at the top, every event of the run in `events`.
pub fn event_document(m: &Message) -> Value {
    let lead = m.lead();
    let ev = |e: &Event| {
        json!({
            "event": e.event,
            "severity": e.severity.as_str(),
            "title": headline(e),
            "summary": e.summary,
            "workflow": e.workflow,
            "data": e.data,
            "timestamp": chrono::DateTime::from_timestamp(e.ts, 0).map(|t| t.to_rfc3339()),
        })
    };
    json!({
        "schema": EVENT_SCHEMA,
        "event": lead.event,
        "severity": lead.severity.as_str(),
        "title": title(m),
        "summary": lead.summary,
        "hostname": lead.hostname,
        "workflow": lead.workflow,
        "run_id": m.run_id,
        "timestamp": chrono::DateTime::from_timestamp(lead.ts, 0).map(|t| t.to_rfc3339()),
        "data": lead.data,
        "events": m.events.iter().map(ev).collect::<Vec<_>>(),
        "earlier_failures": m.earlier_failures,
    })
}

/// HMAC-SHA256 of the body, hex: the `X-Homelab-Autopilot-Signature:
/// sha256=<hex>` header (GitHub's convention).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    let out = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        out.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

pub fn webhook(
    url: String,
    m: &Message,
    key: Option<&[u8]>,
    headers: &[(String, String)],
) -> HttpRequest {
    let mut r = HttpRequest::json(url, &event_document(m));
    r.headers
        .push(("User-Agent".into(), "homelab-autopilot".into()));
    r.headers.extend(headers.iter().cloned());
    if let Some(k) = key {
        r.headers.push((
            "X-Homelab-Autopilot-Signature".into(),
            signature(k, &r.body),
        ));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, summary: &str) -> Event {
        Event {
            event: event.into(),
            severity: crate::config::EventType::from_name(event)
                .map(|e| e.severity())
                .unwrap_or_default(),
            workflow: "backup".into(),
            hostname: "pve1".into(),
            summary: summary.into(),
            data: json!({"summary": summary}),
            ts: 1_764_000_000,
        }
    }

    fn msg(events: Vec<Event>) -> Message {
        Message {
            events,
            run_id: Some(7),
            earlier_failures: 0,
        }
    }

    #[test]
    fn subject_names_the_verb_the_workflow_and_the_host() {
        let m = msg(vec![ev("backup_failed", "1 of 2 failed")]);
        assert_eq!(subject(&m), "[homelab-autopilot] FAILED backup on pve1");
        let m = msg(vec![
            ev("service_recovered", "up"),
            ev("backup_failed", "x"),
        ]);
        assert_eq!(title(&m), "FAILED backup on pve1 (+1 more)");
    }

    #[test]
    fn discord_payload_cannot_mention_and_stays_within_limits() {
        let long = "@everyone ".repeat(2000);
        let m = msg(vec![ev("backup_failed", &long)]);
        let r = discord("http://x/".into(), &m);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["allowed_mentions"], json!({"parse": []}));
        assert!(v["content"].as_str().unwrap().chars().count() <= 2000);
        let total: usize = v["embeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["title"].as_str().unwrap().chars().count()
                    + e["description"].as_str().unwrap().chars().count()
            })
            .sum();
        assert!(total <= 6000, "{total}");
        assert_eq!(v["embeds"][0]["color"], json!(0xe74c3c));
    }

    #[test]
    fn slack_escapes_control_characters() {
        let m = msg(vec![ev("backup_failed", "a <b> & c")]);
        let r = slack("http://x/".into(), &m);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        let s = v["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(s.contains("a &lt;b&gt; &amp; c"), "{s}");
    }

    #[test]
    fn webhook_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let m = msg(vec![ev("backup_failed", "x")]);
        let r = webhook("http://x/".into(), &m, Some(b"k"), &[]);
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["schema"], EVENT_SCHEMA);
        assert_eq!(v["event"], "backup_failed");
    }
}
