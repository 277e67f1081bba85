//! Validation of `notifications:` (channel types, URLs, keys per type,
//! fallbacks) and `monitoring:`.

use super::services::unknown_service;
use super::{At, ChannelOrigin, Validator};
use crate::config::ids::*;
use crate::config::notifications::{ChannelType, PING_WORKFLOWS};
use crate::config::spanned::did_you_mean;
use crate::config::{ChannelConfig, Config, NotificationsConfig};
use std::collections::HashSet;

pub(super) fn validate_notifications(
    v: &Validator,
    origins: &[ChannelOrigin],
    n: &NotificationsConfig,
) {
    let mut seen = HashSet::new();
    for (c, origin) in n.channels.iter().zip(origins) {
        let cat = origin.at();
        if c.name.is_empty() {
            v.required_str(&cat, "name", &c.name);
        } else {
            v.ident(&cat.key("name"), &c.name, is_name, "channel name");
            if !seen.insert(c.name.as_str()) {
                v.err(
                    &cat.key("name"),
                    format!("duplicate channel name '{}'", c.name),
                );
            }
        }
        validate_channel(v, &cat, c, n);
    }
}

fn validate_channel(v: &Validator, at: &At, c: &ChannelConfig, n: &NotificationsConfig) {
    let Some(kind) = c.kind() else {
        if let (Some(u), false) = (&c.url, v.diag.is_poisoned(at.file, &at.key("type").path)) {
            let scheme = u.scheme();
            let msg = match crate::config::notifications::scheme_hint(&scheme) {
                Some(hint) => format!("URL scheme '{scheme}' is not supported: {hint}"),
                None => "cannot tell the channel type from this URL: set 'type'".to_string(),
            };
            v.err(&at.key("url"), msg);
        } else {
            v.required(at, "type", &c.channel_type);
        }
        return;
    };
    for key in c.set_keys() {
        if !kind.keys().contains(&key) {
            v.err(
                &at.key(key),
                format!(
                    "'{key}' does not apply to a channel of type {}",
                    kind.as_str()
                ),
            );
        }
    }
    match &c.url {
        Some(u) if kind.keys().contains(&"url") => {
            if let Err(e) = kind.check_url(u.expose()) {
                v.err(&at.key("url"), e);
            }
        }
        None if kind.needs_url() => v.err(&at.key("url"), "missing required key 'url'"),
        _ => {}
    }
    if let Some(api) = &c.api_url {
        v.url(&at.key("api_url"), api, &["http", "https"]);
    }
    match kind {
        ChannelType::Email => {
            if c.url.is_none() {
                v.required(at, "smtp_server", &c.smtp_server);
                v.required(at, "from", &c.from);
                if c.to.is_empty() {
                    v.err(&at.key("to"), "at least one recipient is required");
                }
            }
            if let Some(f) = &c.from {
                v.ident(&at.key("from"), f, is_email, "email address");
            }
            for (i, t) in c.to.iter().enumerate() {
                v.ident(&at.key("to").item(v.diag, i), t, is_email, "email address");
            }
            if c.smtp_port == Some(0) {
                v.err(&at.key("smtp_port"), "must be between 1 and 65535");
            }
            let pw = [
                c.password.is_some(),
                c.password_file.is_some(),
                c.password_command.is_some(),
            ];
            v.secret_keys(at, "password", pw, false);
        }
        ChannelType::Ntfy => {
            if let Some(p) = &c.priority {
                v.one_of(
                    &at.key("priority"),
                    p,
                    &[
                        "min", "low", "default", "high", "urgent", "1", "2", "3", "4", "5",
                    ],
                );
            }
            let pw = [
                c.password.is_some(),
                c.password_file.is_some(),
                c.password_command.is_some(),
            ];
            v.secret_keys(at, "password", pw, false);
        }
        ChannelType::Gotify => {
            if let Some(p) = &c.priority {
                if !p.parse::<u8>().is_ok_and(|n| n <= 10) {
                    v.err(
                        &at.key("priority"),
                        format!("gotify priority must be 0..10, found '{p}'"),
                    );
                }
            }
        }
        ChannelType::Pushover => {
            if let Some(p) = &c.priority {
                if !p.parse::<i8>().is_ok_and(|n| (-2..=2).contains(&n)) {
                    v.err(
                        &at.key("priority"),
                        format!("pushover priority must be -2..2, found '{p}'"),
                    );
                }
            }
        }
        ChannelType::Webhook => {
            let s = [
                c.secret.is_some(),
                c.secret_file.is_some(),
                c.secret_command.is_some(),
            ];
            v.secret_keys(at, "secret", s, false);
            for name in c.headers.keys() {
                v.ident(
                    &at.key("headers").key(name),
                    name,
                    is_header_name,
                    "HTTP header name",
                );
            }
        }
        ChannelType::Command => {
            if c.command.is_empty() || c.command[0].is_empty() {
                v.err(
                    &at.key("command"),
                    "missing required key 'command' (an argv list)",
                );
            }
        }
        ChannelType::Healthchecks | ChannelType::UptimeKuma => {
            for (i, w) in c.workflows.iter().enumerate() {
                v.one_of(&at.key("workflows").item(v.diag, i), w, PING_WORKFLOWS);
            }
        }
        ChannelType::Bark => {
            if let Some(p) = &c.priority {
                v.one_of(
                    &at.key("priority"),
                    p,
                    &["critical", "timeSensitive", "active", "passive"],
                );
            }
        }
        ChannelType::Opsgenie => {
            if let Some(p) = &c.priority {
                v.one_of(&at.key("priority"), p, &["P1", "P2", "P3", "P4", "P5"]);
            }
        }
        ChannelType::Slack
        | ChannelType::Discord
        | ChannelType::Telegram
        | ChannelType::Matrix
        | ChannelType::Teams
        | ChannelType::Mattermost
        | ChannelType::GoogleChat
        | ChannelType::RocketChat
        | ChannelType::Zulip
        | ChannelType::Pushbullet => {}
    }
    if let Some(fb) = &c.fallback {
        let fat = at.key("fallback");
        if fb == &c.name {
            v.err(&fat, "a channel cannot be its own fallback");
        } else if n.channel(fb).is_none() {
            let names: Vec<&str> = n.channels.iter().map(|c| c.name.as_str()).collect();
            let mut m = format!("unknown channel '{fb}'");
            if let Some(s) = did_you_mean(fb, &names) {
                m.push_str(&format!(" (did you mean '{s}'?)"));
            }
            v.err(&fat, m);
        } else {
            // Follow the chain: it must end, not loop back here.
            let mut cur = fb.as_str();
            let mut hops = 0;
            while let Some(next) = n.channel(cur).and_then(|c| c.fallback.as_deref()) {
                hops += 1;
                if next == c.name || hops > n.channels.len() {
                    v.err(&fat, format!("fallback chain from '{}' loops", c.name));
                    break;
                }
                cur = next;
            }
        }
    }
}

pub(super) fn validate_monitoring(v: &Validator, at: &At, cfg: &Config, names: &HashSet<&str>) {
    let m = &cfg.monitoring;
    v.at_least_one(&at.key("fail_after"), m.fail_after.into());
    v.at_least_one(&at.key("recover_after"), m.recover_after.into());
    v.at_least_one(&at.key("concurrency"), m.concurrency.into());
    v.at_least_one(&at.key("timeout_seconds"), m.timeout_seconds);
    let r = at.key("resources");
    v.range(
        &r.key("disk_warn_percent"),
        m.resources.disk_warn_percent,
        1,
        100,
    );
    v.range(
        &r.key("memory_warn_percent"),
        m.resources.memory_warn_percent,
        1,
        100,
    );
    if !(m.resources.load_warn >= 0.0 && m.resources.load_warn.is_finite()) {
        v.err(&r.key("load_warn"), "must be 0 (off) or a positive number");
    }
    for (i, p) in m.resources.paths.iter().enumerate() {
        if !p.is_absolute() {
            v.err(&r.key("paths").item(v.diag, i), "path must be absolute");
        }
    }
    let wins = at.key("maintenance_windows");
    for (i, w) in m.maintenance_windows.iter().enumerate() {
        let wat = wins.item(v.diag, i);
        v.required_str(&wat, "name", &w.name);
        v.required(&wat, "schedule", &w.schedule);
        v.at_least_one(&wat.key("duration_minutes"), w.duration_minutes.into());
        for (j, s) in w.services.iter().enumerate() {
            if !names.contains(s.as_str()) {
                v.err(
                    &wat.key("services").item(v.diag, j),
                    unknown_service(s, names),
                );
            }
        }
    }
}
