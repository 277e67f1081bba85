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

/// A data value as text for people: strings bare, lists joined, a map as
/// `key: value` pairs (a `{service, error}` entry as `service: error`),
/// never a JSON dump.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(a) => a.iter().map(value_text).collect::<Vec<_>>().join(", "),
        Value::Object(o) => {
            let named = ["service", "check", "subject", "name"]
                .iter()
                .find_map(|k| o.get(*k).and_then(|v| v.as_str()).map(|n| (*k, n)));
            let rest: Vec<String> = o
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != named.map(|(n, _)| n))
                .map(|(k, v)| match (k.as_str(), v) {
                    ("error" | "message", Value::String(s)) if named.is_some() => s.clone(),
                    _ => format!("{k}: {}", value_text(v)),
                })
                .collect();
            match named {
                Some((_, n)) if rest.is_empty() => n.to_string(),
                Some((_, n)) => format!("{n}: {}", rest.join(", ")),
                None => rest.join(", "),
            }
        }
        other => other.to_string(),
    }
}

/// Extra data lines of an event: the fields other than the summary, one
/// line each; a list of maps (the backup's `failed`) one line per entry.
fn detail_lines(e: &Event) -> Vec<String> {
    let Some(obj) = e.data.as_object() else {
        return vec![];
    };
    let mut out = Vec::new();
    for (k, v) in obj.iter().filter(|(k, _)| k.as_str() != "summary") {
        match v {
            Value::Array(a) if a.iter().any(Value::is_object) => {
                out.push(format!("{k}:"));
                out.extend(a.iter().map(|x| format!("- {}", value_text(x))));
            }
            Value::Array(a) if a.is_empty() => {}
            _ => out.push(format!("{k}: {}", value_text(v))),
        }
    }
    out
}

/// The events as text: each event's headline (left out for a message of
/// one event when `titled`, since the service shows the title), summary
/// and detail lines, then the note on earlier failures.
fn events_text(m: &Message, titled: bool) -> String {
    let mut out = String::new();
    let single = m.events.len() == 1;
    for (i, e) in m.events.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        let mut lines = Vec::new();
        if !(titled && single) {
            lines.push(headline(e));
        }
        if !e.summary.is_empty() {
            lines.push(e.summary.clone());
        }
        lines.extend(detail_lines(e));
        out.push_str(&lines.join("\n"));
    }
    if let Some(n) = failures_note(m) {
        out.push_str("\n\n");
        out.push_str(&n);
    }
    out
}

/// The body for services that show a title of their own (ntfy, Gotify,
/// Pushover, Bark, Pushbullet, Opsgenie, Teams): real line breaks, no
/// headline repeated under the title, no JSON.
pub fn body(m: &Message) -> String {
    events_text(m, true)
}

/// The whole message for chat services without a title field (Telegram,
/// Mattermost, Rocket.Chat, Google Chat, Zulip, Matrix): the title line
/// when the message holds several events, then each event.
pub fn chat_text(m: &Message) -> String {
    if m.events.len() > 1 {
        format!("{}\n\n{}", title(m), events_text(m, false))
    } else {
        events_text(m, false)
    }
}

/// The plain-text body of an email: every event with its headline, then
/// a footer naming the host, workflow, run and time.
pub fn text(m: &Message) -> String {
    let mut out = events_text(m, false);
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
        body: truncate(&body(m), 4096).into_bytes(),
    }
}

/// Gotify: `POST /message` with `{title, message, priority}`.
pub fn gotify(url: String, token: &str, m: &Message, priority: Option<i64>) -> HttpRequest {
    let prio = priority.unwrap_or(match m.severity() {
        Severity::Critical => 8,
        Severity::Warning => 5,
        Severity::Info => 2,
    });
    let v = json!({"title": title(m), "message": body(m), "priority": prio});
    let mut r = HttpRequest::json(url, &v);
    r.headers.push(("X-Gotify-Key".into(), token.to_string()));
    r
}

/// Telegram Bot API `sendMessage` to one chat: plain text (no parse mode,
/// so nothing in a log line is taken as markup).
pub fn telegram(url: String, chat: &str, m: &Message) -> HttpRequest {
    let v = json!({
        "chat_id": chat,
        "text": truncate(&chat_text(m), 4096),
        "disable_web_page_preview": true,
    });
    HttpRequest::json(url, &v)
}

/// Pushover: priority critical → 1 (high), warning → 0, info → -1 (quiet).
pub fn pushover(
    url: String,
    token: &str,
    user: &str,
    device: Option<&str>,
    m: &Message,
    priority: Option<i64>,
) -> HttpRequest {
    let prio = priority.unwrap_or(match m.severity() {
        Severity::Critical => 1,
        Severity::Warning => 0,
        Severity::Info => -1,
    });
    let mut v = json!({
        "token": token, "user": user,
        "title": truncate(&title(m), 250),
        "message": truncate(&body(m), 1024),
        "priority": prio,
    });
    if let Some(d) = device {
        v["device"] = json!(d);
    }
    HttpRequest::json(url, &v)
}

/// Slack Web API `chat.postMessage` (a bot token): the same text and
/// blocks as the webhook, to `channel`, the token as a Bearer header.
pub fn slack_api(url: String, token: &str, channel: &str, m: &Message) -> HttpRequest {
    let mut r = slack(url, m);
    let mut v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["channel"] = json!(channel);
    r.body = serde_json::to_vec(&v).unwrap_or_default();
    r.headers[0].1 = "application/json; charset=utf-8".into();
    r.headers
        .push(("Authorization".into(), format!("Bearer {token}")));
    r
}

/// Matrix `m.room.message`: the text as `body`, and an HTML
/// `formatted_body` with the title in bold; `m.notice` for info events
/// (clients and bots treat notices as quiet).
pub fn matrix_message(m: &Message) -> Value {
    let html = format!(
        "<strong>{}</strong><br>{}",
        html_escape(&title(m)),
        html_escape(&body(m)).replace('\n', "<br>")
    );
    json!({
        "msgtype": if m.severity() == Severity::Info { "m.notice" } else { "m.text" },
        "body": format!("{}\n{}", title(m), body(m)),
        "format": "org.matrix.custom.html",
        "formatted_body": html,
    })
}

/// Microsoft Teams incoming webhook: a MessageCard with the title, a
/// theme colour by severity and one section per event. Teams renders the
/// text as Markdown, where a single line break is lost: lines are joined
/// with a blank line.
pub fn teams(url: String, m: &Message) -> HttpRequest {
    let sections: Vec<Value> = m
        .events
        .iter()
        .take(10)
        .map(|e| {
            let mut lines = vec![];
            if !e.summary.is_empty() {
                lines.push(e.summary.clone());
            }
            lines.extend(detail_lines(e));
            json!({
                "activityTitle": truncate(&headline(e), 256),
                "text": truncate(&lines.join("\n\n"), 7000),
            })
        })
        .collect();
    let v = json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": truncate(&title(m), 256),
        "title": truncate(&title(m), 256),
        "themeColor": format!("{:06X}", colour(m.severity())),
        "sections": sections,
    });
    HttpRequest::json(url, &v)
}

/// Mattermost and Rocket.Chat incoming webhooks: `{text}` (Markdown, the
/// title in bold), with the username and channel the URL names.
pub fn chat_hook(
    url: String,
    m: &Message,
    username: Option<&str>,
    channel: Option<&str>,
) -> HttpRequest {
    let mut v = json!({
        "text": truncate(&format!("**{}**\n{}", title(m), body(m)), 16000),
    });
    if let Some(u) = username {
        v["username"] = json!(u);
    }
    if let Some(c) = channel {
        v["channel"] = json!(c);
    }
    HttpRequest::json(url, &v)
}

/// Google Chat incoming webhook: `{text}`, the title in bold (`*...*`).
pub fn googlechat(url: String, m: &Message) -> HttpRequest {
    let v = json!({"text": truncate(&format!("*{}*\n{}", title(m), body(m)), 4000)});
    let mut r = HttpRequest::json(url, &v);
    r.headers[0].1 = "application/json; charset=UTF-8".into();
    r
}

/// Zulip `POST /api/v1/messages`: a stream message, form-encoded, the
/// bot's e-mail and API key as basic auth.
pub fn zulip(url: String, auth: String, stream: &str, topic: &str, m: &Message) -> HttpRequest {
    let content = truncate(&format!("**{}**\n{}", title(m), body(m)), 10000);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("type", "stream")
        .append_pair("to", stream)
        .append_pair("topic", topic)
        .append_pair("content", &content)
        .finish();
    HttpRequest {
        method: "POST",
        url,
        headers: vec![
            (
                "Content-Type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
            ("Authorization".into(), auth),
        ],
        body: body.into_bytes(),
    }
}

/// Bark `POST /push` (JSON, the device key in the body); the level by
/// severity: critical → timeSensitive, warning → active, info → passive.
pub fn bark(
    url: String,
    device_key: &str,
    m: &Message,
    level: Option<&str>,
    extra: &[(String, String)],
) -> HttpRequest {
    let level = level.unwrap_or(match m.severity() {
        Severity::Critical => "timeSensitive",
        Severity::Warning => "active",
        Severity::Info => "passive",
    });
    let mut v = json!({
        "device_key": device_key,
        "title": title(m),
        "body": body(m),
        "level": level,
        "group": "homelab-autopilot",
    });
    for (k, val) in extra {
        v[k.as_str()] = json!(val);
    }
    HttpRequest::json(url, &v)
}

/// Opsgenie `POST /v2/alerts`: `message` (the title, at most 130
/// characters), `description`, `priority` (critical → P1, warning → P3,
/// info → P5), an `alias` so repeats of one alert are grouped, the API key
/// as `Authorization: GenieKey`.
pub fn opsgenie(url: String, key: &str, m: &Message, priority: Option<&str>) -> HttpRequest {
    let prio = priority.unwrap_or(match m.severity() {
        Severity::Critical => "P1",
        Severity::Warning => "P3",
        Severity::Info => "P5",
    });
    let lead = m.lead();
    let v = json!({
        "message": truncate(&title(m), 130),
        "description": truncate(&body(m), 15000),
        "priority": prio,
        "alias": truncate(&format!("homelab-autopilot {} {} {}", lead.hostname, lead.event, lead.subject()), 512),
        "source": "homelab-autopilot",
        "tags": [lead.event.clone(), lead.severity.as_str()],
    });
    let mut r = HttpRequest::json(url, &v);
    r.headers
        .push(("Authorization".into(), format!("GenieKey {key}")));
    r
}

/// Pushbullet `POST /v2/pushes`: a note to one target (`device_iden`,
/// `channel_tag` or `email`, or every device), `Access-Token` header.
pub fn pushbullet(
    url: String,
    token: &str,
    target: Option<(&str, &str)>,
    m: &Message,
) -> HttpRequest {
    let mut v = json!({"type": "note", "title": title(m), "body": body(m)});
    if let Some((k, val)) = target {
        v[k] = json!(val);
    }
    let mut r = HttpRequest::json(url, &v);
    r.headers.push(("Access-Token".into(), token.to_string()));
    r
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

    #[test]
    fn texts_have_real_lines_and_no_json() {
        let mut e = ev(
            "backup_failed",
            "1 succeeded, 1 failed, 0 skipped\ndb: pg_dump exited 1",
        );
        e.data = json!({
            "summary": e.summary,
            "failed": [{"service": "db", "error": "pg_dump exited 1"}],
            "succeeded": ["web"],
            "skipped": [],
        });
        let m = msg(vec![e]);
        assert_eq!(
            body(&m),
            "1 succeeded, 1 failed, 0 skipped\ndb: pg_dump exited 1\n\
             failed:\n- db: pg_dump exited 1\nsucceeded: web"
        );
        assert_eq!(
            chat_text(&m),
            format!("FAILED backup on pve1\n{}", body(&m))
        );
        assert!(text(&m).starts_with("FAILED backup on pve1\n1 succeeded"));
        let two = msg(vec![ev("backup_failed", "x"), ev("backup_success", "y")]);
        assert_eq!(
            body(&two),
            "FAILED backup on pve1\nx\n\nOK backup on pve1\ny"
        );
        // A map without a name: key: value pairs.
        assert_eq!(
            value_text(&json!({"a": 1, "b": ["x", "y"]})),
            "a: 1, b: x, y"
        );
    }
}
