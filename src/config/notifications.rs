//! `notifications:` — channels (email, chat webhooks, ntfy, dead-man pings,
//! a command), their event subscriptions and severities. A channel's `type`
//! may be left out when its `url` says it (raw Discord/Slack/Teams/Google
//! Chat webhook URLs, shoutrrr schemes, the dialect Watchtower users already
//! have, and the Apprise schemes that map onto a supported channel).

use super::secrets::{CommandSpec, Secret, SecretSource};
use super::url::{check_url, split_url, SecretUrl};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    pub enabled: bool,
    /// Minimum minutes between two alerts of the same kind for the same
    /// subject.
    pub cooldown_minutes: u64,
    pub channels: Vec<ChannelConfig>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cooldown_minutes: 60,
            channels: Vec::new(),
        }
    }
}

impl NotificationsConfig {
    pub fn channel(&self, name: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    Email,
    Slack,
    Discord,
    Ntfy,
    Gotify,
    Telegram,
    Pushover,
    Webhook,
    Command,
    Healthchecks,
    UptimeKuma,
    Matrix,
    Teams,
    Mattermost,
    #[serde(rename = "googlechat")]
    GoogleChat,
    #[serde(rename = "rocketchat")]
    RocketChat,
    Zulip,
    Bark,
    Opsgenie,
    Pushbullet,
}

impl ChannelType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ChannelType::Email => "email",
            ChannelType::Slack => "slack",
            ChannelType::Discord => "discord",
            ChannelType::Ntfy => "ntfy",
            ChannelType::Gotify => "gotify",
            ChannelType::Telegram => "telegram",
            ChannelType::Pushover => "pushover",
            ChannelType::Webhook => "webhook",
            ChannelType::Command => "command",
            ChannelType::Healthchecks => "healthchecks",
            ChannelType::UptimeKuma => "uptime_kuma",
            ChannelType::Matrix => "matrix",
            ChannelType::Teams => "teams",
            ChannelType::Mattermost => "mattermost",
            ChannelType::GoogleChat => "googlechat",
            ChannelType::RocketChat => "rocketchat",
            ChannelType::Zulip => "zulip",
            ChannelType::Bark => "bark",
            ChannelType::Opsgenie => "opsgenie",
            ChannelType::Pushbullet => "pushbullet",
        }
    }

    /// URL schemes a channel of this type accepts (empty: no `url`):
    /// the raw service URL, the shoutrrr scheme and the Apprise schemes
    /// that map onto it (docs/notifications.md has the table).
    pub(crate) fn schemes(&self) -> &'static [&'static str] {
        match self {
            ChannelType::Email => &["smtp", "mailto", "mailtos"],
            ChannelType::Slack => &["https", "slack"],
            ChannelType::Discord => &["https", "discord"],
            ChannelType::Ntfy => &["http", "https", "ntfy", "ntfys"],
            ChannelType::Gotify => &["http", "https", "gotify", "gotifys"],
            ChannelType::Telegram => &["https", "telegram", "tgram"],
            ChannelType::Pushover => &["https", "pushover", "pover"],
            ChannelType::Webhook => &[
                "http",
                "https",
                "generic",
                "generic+http",
                "generic+https",
                "json",
                "jsons",
            ],
            ChannelType::Command => &[],
            ChannelType::Healthchecks | ChannelType::UptimeKuma => &["http", "https"],
            ChannelType::Matrix => &["matrix", "matrixs"],
            ChannelType::Teams => &["https", "teams", "msteams"],
            ChannelType::Mattermost => &["http", "https", "mattermost", "mmost", "mmosts"],
            ChannelType::GoogleChat => &["https", "googlechat", "gchat"],
            ChannelType::RocketChat => &["http", "https", "rocketchat", "rocket", "rockets"],
            ChannelType::Zulip => &["zulip"],
            ChannelType::Bark => &["bark", "barks"],
            ChannelType::Opsgenie => &["opsgenie"],
            ChannelType::Pushbullet => &["pushbullet", "pbul"],
        }
    }

    /// The type-specific keys a channel of this type accepts.
    pub(crate) fn keys(&self) -> &'static [&'static str] {
        const PW: [&str; 3] = ["password", "password_file", "password_command"];
        match self {
            ChannelType::Email => &[
                "url",
                "smtp_server",
                "smtp_port",
                "security",
                "username",
                PW[0],
                PW[1],
                PW[2],
                "from",
                "to",
                "html",
            ],
            ChannelType::Ntfy => &["url", "priority", "tags", "username", PW[0], PW[1], PW[2]],
            ChannelType::Gotify | ChannelType::Bark => &["url", "priority"],
            ChannelType::Pushover | ChannelType::Opsgenie => &["url", "priority", "api_url"],
            ChannelType::Slack
            | ChannelType::Discord
            | ChannelType::Telegram
            | ChannelType::Teams
            | ChannelType::GoogleChat
            | ChannelType::Pushbullet => &["url", "api_url"],
            ChannelType::Matrix
            | ChannelType::Mattermost
            | ChannelType::RocketChat
            | ChannelType::Zulip => &["url"],
            ChannelType::Webhook => &["url", "secret", "secret_file", "secret_command", "headers"],
            ChannelType::Command => &["command"],
            ChannelType::Healthchecks | ChannelType::UptimeKuma => &["url", "workflows"],
        }
    }

    /// Whether `url` is required (else optional or not accepted).
    pub(crate) fn needs_url(&self) -> bool {
        !matches!(self, ChannelType::Email | ChannelType::Command)
    }

    /// Dead-man ping channels get pings per workflow run, not events.
    pub fn is_ping(&self) -> bool {
        matches!(self, ChannelType::Healthchecks | ChannelType::UptimeKuma)
    }

    /// The type a URL implies: raw Discord/Slack/Teams/Google
    /// Chat/healthchecks.io/Uptime Kuma URLs, shoutrrr schemes and the
    /// Apprise schemes that map onto a channel.
    pub fn infer_from_url(url: &str) -> Option<ChannelType> {
        let scheme = url.split_once("://")?.0.to_ascii_lowercase();
        Some(match scheme.as_str() {
            "ntfy" | "ntfys" => ChannelType::Ntfy,
            "gotify" | "gotifys" => ChannelType::Gotify,
            "telegram" | "tgram" => ChannelType::Telegram,
            "pushover" | "pover" => ChannelType::Pushover,
            "smtp" | "mailto" | "mailtos" => ChannelType::Email,
            "discord" => ChannelType::Discord,
            "slack" => ChannelType::Slack,
            "generic" | "generic+http" | "generic+https" | "json" | "jsons" => ChannelType::Webhook,
            "matrix" | "matrixs" => ChannelType::Matrix,
            "teams" | "msteams" => ChannelType::Teams,
            "mattermost" | "mmost" | "mmosts" => ChannelType::Mattermost,
            "googlechat" | "gchat" => ChannelType::GoogleChat,
            "rocketchat" | "rocket" | "rockets" => ChannelType::RocketChat,
            "zulip" => ChannelType::Zulip,
            "bark" | "barks" => ChannelType::Bark,
            "opsgenie" => ChannelType::Opsgenie,
            "pushbullet" | "pbul" => ChannelType::Pushbullet,
            "http" | "https" => {
                let p = split_url(url).ok()?;
                let host = p.host.to_ascii_lowercase();
                let discord_host = [
                    "discord.com",
                    "discordapp.com",
                    "ptb.discord.com",
                    "canary.discord.com",
                ];
                if discord_host.contains(&host.as_str()) && p.path.starts_with("/api/webhooks/") {
                    ChannelType::Discord
                } else if host == "hooks.slack.com" {
                    ChannelType::Slack
                } else if host.ends_with(".webhook.office.com") && p.path.starts_with("/webhookb2/")
                {
                    ChannelType::Teams
                } else if host == "chat.googleapis.com" {
                    ChannelType::GoogleChat
                } else if host == "hc-ping.com" || host.ends_with(".hc-ping.com") {
                    ChannelType::Healthchecks
                } else if p.path.starts_with("/api/push/") {
                    ChannelType::UptimeKuma
                } else if host == "ntfy.sh" {
                    ChannelType::Ntfy
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    /// Check a channel URL against this type: a scheme it accepts, and a
    /// URL that parses. Apprise's `tgram://BOTID:SECRET/CHAT` is the one
    /// accepted form whose authority is not `host[:port]`.
    pub(crate) fn check_url(&self, url: &str) -> Result<(), String> {
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        if scheme == "tgram" && self.schemes().contains(&"tgram") {
            let rest = &url["tgram://".len()..];
            let token = rest.split(['/', '?', '#']).next().unwrap_or("");
            return match token.split_once(':') {
                Some((id, secret)) if !id.is_empty() && !secret.is_empty() => Ok(()),
                _ => Err(
                    "tgram:// needs the bot token first: tgram://BOTTOKEN/CHAT[/CHAT...]".into(),
                ),
            };
        }
        if !self.schemes().contains(&scheme.as_str()) {
            if let Some(hint) = scheme_hint(&scheme) {
                return Err(format!("URL scheme '{scheme}' is not supported: {hint}"));
            }
        }
        check_url(url, self.schemes())?;
        match url_form_needs(url) {
            Some(needs) => Err(format!("{scheme}:// URL is incomplete: {needs}")),
            None => Ok(()),
        }
    }
}

/// What a service-scheme URL lacks, for the forms whose parts are fixed
/// (docs/notifications.md, "URL dialects"); `None` when it has them.
fn url_form_needs(url: &str) -> Option<&'static str> {
    let p = split_url(url).ok()?;
    let scheme = p.scheme.to_ascii_lowercase();
    let segs = p.path.split('/').filter(|s| !s.is_empty()).count();
    let user = p.userinfo.filter(|u| !u.is_empty());
    let has_pw = user.is_some_and(|u| u.split_once(':').is_some_and(|(_, pw)| !pw.is_empty()));
    let query_has = |k: &str| {
        p.query.is_some_and(|q| {
            q.split('&').any(|kv| {
                kv.split_once('=')
                    .is_some_and(|(a, v)| a.eq_ignore_ascii_case(k) && !v.is_empty())
            })
        })
    };
    let fragment = p.fragment.is_some_and(|f| !f.is_empty());
    let ok = match scheme.as_str() {
        "discord" => user.is_some() || segs == 1,
        "telegram" => user.is_some() && (query_has("chats") || query_has("channels")),
        "pushover" => has_pw,
        "pover" => user.is_some(),
        "gotify" | "gotifys" => segs >= 1,
        "matrix" | "matrixs" => user.is_some(),
        "teams" => user.is_some() && segs >= 2 && query_has("host"),
        "msteams" => segs >= 3,
        "mattermost" | "mmost" | "mmosts" => segs >= 1,
        "gchat" => segs == 2,
        "rocketchat" => segs >= 2,
        "rocket" | "rockets" => {
            user.is_some_and(|u| !u.contains(':') && u.to_ascii_lowercase().contains("%2f"))
        }
        "zulip" => has_pw || (user.is_some() && segs >= 1),
        "bark" | "barks" => user.is_some() || segs >= 1,
        "slack" if p.host.starts_with("xox") => segs >= 1 || fragment,
        "slack" => {
            user.is_some_and(|u| ["xoxb:", "xoxp:", "hook:"].iter().any(|k| u.starts_with(k)))
                || segs >= 2
        }
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match scheme.as_str() {
        "discord" => "discord://TOKEN@ID or discord://ID/TOKEN",
        "telegram" => "telegram://TOKEN@telegram?chats=@chan[,...]",
        "pushover" => "pushover://shoutrrr:TOKEN@USERKEY/",
        "pover" => "pover://USERKEY@TOKEN",
        "gotify" | "gotifys" => "the app token as the last path segment",
        "matrix" | "matrixs" => "user:password@ or :ACCESS_TOKEN@ before the host",
        "teams" => "teams://GROUP@TENANT/ALTID/GROUPOWNER[/EXTRAID]?host=ORG.webhook.office.com",
        "msteams" => "msteams://TEAM/TOKEN_A/TOKEN_B/TOKEN_C[/TOKEN_D]",
        "mattermost" | "mmost" | "mmosts" => "the hook token as a path segment",
        "gchat" => "gchat://SPACE/KEY/TOKEN",
        "rocketchat" => "rocketchat://host/TOKEN_A/TOKEN_B[/CHANNEL]",
        "rocket" | "rockets" => {
            "only the incoming-webhook form is supported: rockets://TOKEN_A%2FTOKEN_B@host"
        }
        "zulip" => "zulip://BOT_EMAIL:API_KEY@host/?stream=... or zulip://BOTNAME@ORG/API_KEY",
        "bark" | "barks" => "the device key: bark://:DEVICE_KEY@host or barks://host/DEVICE_KEY",
        "slack" => "slack://xoxb-TOKEN/#channel (a bot token) or slack://A/B/C (webhook tokens)",
        _ => "",
    })
}

/// Why a URL scheme no channel accepts is refused, naming what to use
/// instead (Apprise and shoutrrr schemes without a channel here).
pub fn scheme_hint(scheme: &str) -> Option<&'static str> {
    Some(match scheme {
        "xml" | "xmls" | "form" | "forms" => {
            "only JSON webhooks are sent: use json:// (or jsons://) for the webhook channel, \
             which posts the homelab-autopilot.event/v1 document"
        }
        "smtps" => "use mailtos:// or smtp://...?security=tls (implicit TLS) for the email channel",
        "apprise" | "apprises" => {
            "an Apprise API server is not a channel: use the service's own URL, \
             or a command channel running the apprise CLI"
        }
        "slacks" | "discords" | "teamss" => "use the scheme without the trailing 's' (these services are always HTTPS)",
        "gotifys" | "ntfys" | "tgram" | "mailto" | "mailtos" | "json" | "jsons" | "pover"
        | "matrixs" | "msteams" | "mmost" | "mmosts" | "gchat" | "rocket" | "rockets"
        | "barks" | "pbul" => {
            "this Apprise scheme is accepted only by the channel type it maps to: leave out 'type' or set the matching one"
        }
        "ifttt" | "join" | "signal" | "whatsapp" | "pagerduty" | "pushed" | "sns" | "ses"
        | "mailgun" | "sendgrid" | "twilio" | "hassio" | "hassios" | "kodi" | "mqtt"
        | "mqtts" | "pushsafer" | "psafer" | "psafers" | "lametric" | "line" | "logger" => {
            "this service has no channel: use a command channel (argv, the event JSON on stdin) \
             or a json:// webhook to a relay"
        }
        _ => return None,
    })
}

/// The events a channel can subscribe to and scripts send with
/// `notify::send`: the one table of event names ([`EventType::as_str`]) and
/// severities ([`EventType::severity`]) that the script adapter, routing,
/// `notify::event_types()` and docs/notifications.md all follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    BackupSuccess,
    BackupFailed,
    /// Catalogued backups whose files vanished without retention deleting
    /// them (sent once per backup, when a run first finds it gone).
    BackupMissing,
    UpdateSuccess,
    UpdateFailed,
    ServiceDown,
    ServiceRecovered,
    ExternalAccessFailed,
    RollbackExecuted,
    /// An update failed and its rollback failed too: the admin must act.
    RollbackFailed,
    DiskSpaceWarning,
    RestoreTestSuccess,
    RestoreTestFailed,
    /// The daemon refused a reloaded configuration and kept the one it had.
    ConfigRejected,
}

impl EventType {
    pub const ALL: [EventType; 14] = [
        EventType::BackupSuccess,
        EventType::BackupFailed,
        EventType::BackupMissing,
        EventType::UpdateSuccess,
        EventType::UpdateFailed,
        EventType::ServiceDown,
        EventType::ServiceRecovered,
        EventType::ExternalAccessFailed,
        EventType::RollbackExecuted,
        EventType::RollbackFailed,
        EventType::DiskSpaceWarning,
        EventType::RestoreTestSuccess,
        EventType::RestoreTestFailed,
        EventType::ConfigRejected,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::BackupSuccess => "backup_success",
            EventType::BackupFailed => "backup_failed",
            EventType::BackupMissing => "backup_missing",
            EventType::UpdateSuccess => "update_success",
            EventType::UpdateFailed => "update_failed",
            EventType::ServiceDown => "service_down",
            EventType::ServiceRecovered => "service_recovered",
            EventType::ExternalAccessFailed => "external_access_failed",
            EventType::RollbackExecuted => "rollback_executed",
            EventType::RollbackFailed => "rollback_failed",
            EventType::DiskSpaceWarning => "disk_space_warning",
            EventType::RestoreTestSuccess => "restore_test_success",
            EventType::RestoreTestFailed => "restore_test_failed",
            EventType::ConfigRejected => "config_rejected",
        }
    }

    pub fn from_name(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// The severity an event is sent with.
    pub fn severity(&self) -> Severity {
        match self {
            EventType::BackupSuccess
            | EventType::UpdateSuccess
            | EventType::ServiceRecovered
            | EventType::RestoreTestSuccess => Severity::Info,
            EventType::BackupMissing
            | EventType::DiskSpaceWarning
            | EventType::RollbackExecuted
            | EventType::ConfigRejected => Severity::Warning,
            EventType::BackupFailed
            | EventType::UpdateFailed
            | EventType::ServiceDown
            | EventType::ExternalAccessFailed
            | EventType::RollbackFailed
            | EventType::RestoreTestFailed => Severity::Critical,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// `info`, `warning` or `critical` (as in the YAML and the JSON output).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    None,
    /// STARTTLS on the submission port (587), the default.
    #[default]
    Starttls,
    /// Implicit TLS (465).
    Tls,
}

/// The workflows a dead-man ping channel can watch.
pub const PING_WORKFLOWS: &[&str] = &["backup", "update", "monitor", "restore_test"];

/// One notification channel. A flat struct for every type; validation says
/// which keys each type needs and accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelConfig {
    /// Required, unique.
    pub name: String,
    /// Inferred from `url` when left out; always `Some` after loading.
    #[serde(rename = "type")]
    pub channel_type: Option<ChannelType>,
    pub enabled: bool,
    /// Events this channel receives (empty: all).
    pub events: Vec<EventType>,
    /// Events below this severity are not sent.
    pub min_severity: Severity,
    /// Channel to use when this one fails.
    pub fallback: Option<String>,
    pub url: Option<SecretUrl>,
    /// The base URL of a service's API where the URL form names no host
    /// (Telegram, Pushover, Pushbullet, the Slack Web API, Discord's and
    /// Google Chat's short forms, Apprise's Opsgenie form), for a proxy, a
    /// regional endpoint or a self-hosted stand-in.
    pub api_url: Option<String>,
    // email
    pub smtp_server: Option<String>,
    pub smtp_port: Option<u16>,
    pub security: Option<SmtpSecurity>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<CommandSpec>,
    pub from: Option<String>,
    pub to: Vec<String>,
    pub html: bool,
    // webhook
    /// HMAC-SHA256 key for the signature header.
    pub secret: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    pub secret_command: Option<CommandSpec>,
    pub headers: BTreeMap<String, String>,
    // ntfy / gotify / pushover
    pub priority: Option<String>,
    pub tags: Vec<String>,
    // healthchecks / uptime_kuma
    /// Workflows that ping this channel (empty: all).
    pub workflows: Vec<String>,
    // command
    /// argv; the event JSON arrives on stdin.
    pub command: Vec<String>,
}

impl Default for ChannelConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            channel_type: None,
            enabled: true,
            events: Vec::new(),
            min_severity: Severity::Info,
            fallback: None,
            url: None,
            api_url: None,
            smtp_server: None,
            smtp_port: None,
            security: None,
            username: None,
            password: None,
            password_file: None,
            password_command: None,
            from: None,
            to: Vec::new(),
            html: false,
            secret: None,
            secret_file: None,
            secret_command: None,
            headers: BTreeMap::new(),
            priority: None,
            tags: Vec::new(),
            workflows: Vec::new(),
            command: Vec::new(),
        }
    }
}

impl ChannelConfig {
    /// The channel's type (set or inferred at load).
    pub fn kind(&self) -> Option<ChannelType> {
        self.channel_type.or_else(|| {
            self.url
                .as_ref()
                .and_then(|u| ChannelType::infer_from_url(u.expose()))
        })
    }

    /// Whether a message for `event` goes out on this channel: a message
    /// channel (not a dead-man ping) that wants it.
    pub fn delivers(&self, event: EventType) -> bool {
        self.kind().is_some_and(|k| !k.is_ping()) && self.wants(event)
    }

    /// Whether this channel wants `event` (subscription and severity).
    pub fn wants(&self, event: EventType) -> bool {
        self.enabled
            && (self.events.is_empty() || self.events.contains(&event))
            && event.severity() >= self.min_severity
    }

    pub fn password_source(&self) -> Option<SecretSource> {
        SecretSource::from_keys(
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.password_command.as_ref(),
        )
    }

    /// The type-specific keys given a non-default value (validation
    /// rejects those the channel's type does not use).
    pub(crate) fn set_keys(&self) -> Vec<&'static str> {
        let set = [
            ("url", self.url.is_some()),
            ("api_url", self.api_url.is_some()),
            ("smtp_server", self.smtp_server.is_some()),
            ("smtp_port", self.smtp_port.is_some()),
            ("security", self.security.is_some()),
            ("username", self.username.is_some()),
            ("password", self.password.is_some()),
            ("password_file", self.password_file.is_some()),
            ("password_command", self.password_command.is_some()),
            ("from", self.from.is_some()),
            ("to", !self.to.is_empty()),
            ("html", self.html),
            ("secret", self.secret.is_some()),
            ("secret_file", self.secret_file.is_some()),
            ("secret_command", self.secret_command.is_some()),
            ("headers", !self.headers.is_empty()),
            ("priority", self.priority.is_some()),
            ("tags", !self.tags.is_empty()),
            ("workflows", !self.workflows.is_empty()),
            ("command", !self.command.is_empty()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }

    /// The webhook HMAC key.
    pub fn secret_source(&self) -> Option<SecretSource> {
        SecretSource::from_keys(
            self.secret.as_ref(),
            self.secret_file.as_ref(),
            self.secret_command.as_ref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_type_is_inferred_from_the_url_dialect() {
        let cases = [
            (
                "https://discord.com/api/webhooks/1/abc",
                Some(ChannelType::Discord),
            ),
            (
                "https://discordapp.com/api/webhooks/1/abc",
                Some(ChannelType::Discord),
            ),
            (
                "https://hooks.slack.com/services/T/B/X",
                Some(ChannelType::Slack),
            ),
            ("ntfy://ntfy.sh/topic", Some(ChannelType::Ntfy)),
            ("gotify://host/token", Some(ChannelType::Gotify)),
            (
                "telegram://token@telegram?chats=@c",
                Some(ChannelType::Telegram),
            ),
            ("pushover://shoutrrr:tok@user/", Some(ChannelType::Pushover)),
            ("smtp://u:p@mail:587/?to=a@b", Some(ChannelType::Email)),
            ("generic://example.org/hook", Some(ChannelType::Webhook)),
            (
                "generic+https://example.org/hook",
                Some(ChannelType::Webhook),
            ),
            ("https://hc-ping.com/uuid", Some(ChannelType::Healthchecks)),
            (
                "https://kuma.lan/api/push/tok",
                Some(ChannelType::UptimeKuma),
            ),
            ("tgram://123:abc/555", Some(ChannelType::Telegram)),
            ("ntfys://ntfy.lan/t", Some(ChannelType::Ntfy)),
            ("mailtos://u:p@mail.lan", Some(ChannelType::Email)),
            ("jsons://hook.lan/x", Some(ChannelType::Webhook)),
            ("pover://user@token", Some(ChannelType::Pushover)),
            ("matrix://u:p@m.lan", Some(ChannelType::Matrix)),
            ("msteams://org/a/b/c", Some(ChannelType::Teams)),
            (
                "https://org.webhook.office.com/webhookb2/x/IncomingWebhook/y/z",
                Some(ChannelType::Teams),
            ),
            (
                "https://chat.googleapis.com/v1/spaces/S/messages",
                Some(ChannelType::GoogleChat),
            ),
            ("mmosts://mm.lan/tok", Some(ChannelType::Mattermost)),
            ("rocketchat://rc.lan/a/b", Some(ChannelType::RocketChat)),
            ("zulip://b:k@z.lan", Some(ChannelType::Zulip)),
            ("bark://:k@b.lan", Some(ChannelType::Bark)),
            ("opsgenie://key", Some(ChannelType::Opsgenie)),
            ("pbul://tok", Some(ChannelType::Pushbullet)),
            ("https://example.org/hook", None),
            ("xml://x/", None),
            ("ftp://x/", None),
        ];
        for (url, want) in cases {
            assert_eq!(ChannelType::infer_from_url(url), want, "{url}");
        }
    }

    #[test]
    fn incomplete_service_urls_are_refused_at_load_naming_the_form() {
        let check = |t: ChannelType, url: &str| t.check_url(url);
        for (t, url) in [
            (
                ChannelType::Teams,
                "teams://g@t/a/o/e?host=org.webhook.office.com",
            ),
            (ChannelType::Slack, "slack://xoxb-1-2-a/#general"),
            (ChannelType::Slack, "slack://xoxb:1-2-a@C01"),
            (ChannelType::Slack, "slack://hook:A-B-C@webhook"),
            (ChannelType::GoogleChat, "gchat://S/K/T"),
            (ChannelType::Telegram, "tgram://1:abc/@chan"),
            (ChannelType::RocketChat, "rockets://A%2FB@rc.lan"),
        ] {
            assert_eq!(check(t, url), Ok(()), "{url}");
        }
        for (t, url, says) in [
            (
                ChannelType::Teams,
                "teams://g@t/a/o",
                "?host=ORG.webhook.office.com",
            ),
            (
                ChannelType::Slack,
                "slack://xoxb-1-2-a",
                "slack://xoxb-TOKEN/#channel",
            ),
            (
                ChannelType::GoogleChat,
                "gchat://S/K",
                "gchat://SPACE/KEY/TOKEN",
            ),
            (ChannelType::Telegram, "telegram://tok@telegram", "?chats="),
            (
                ChannelType::Telegram,
                "tgram://123/@chan",
                "bot token first",
            ),
            (
                ChannelType::RocketChat,
                "rockets://user:pw@rc.lan",
                "incoming-webhook form",
            ),
            (ChannelType::Zulip, "zulip://bot@z.lan", "API_KEY"),
        ] {
            let e = check(t, url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn subscriptions_filter_by_event_and_severity() {
        let mut c = ChannelConfig {
            events: vec![EventType::BackupFailed],
            ..Default::default()
        };
        assert!(c.wants(EventType::BackupFailed));
        assert!(!c.wants(EventType::ServiceDown));
        c.events.clear();
        c.min_severity = Severity::Critical;
        assert!(c.wants(EventType::ServiceDown));
        assert!(!c.wants(EventType::BackupSuccess));
    }

    #[test]
    fn event_severities_match_the_table_in_the_docs() {
        let doc = include_str!("../../docs/notifications.md");
        let rows: Vec<(String, String)> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                match cells.as_slice() {
                    ["", name, sev, ""] if name.starts_with('`') => {
                        Some((name.trim_matches('`').to_string(), sev.to_string()))
                    }
                    _ => None,
                }
            })
            .filter(|(name, _)| EventType::from_name(name).is_some())
            .collect();
        assert_eq!(rows.len(), EventType::ALL.len(), "{rows:?}");
        for (name, sev) in rows {
            let t = EventType::from_name(&name).unwrap();
            assert_eq!(t.severity().as_str(), sev, "{name}");
        }
        assert_eq!(
            EventType::ExternalAccessFailed.severity(),
            Severity::Critical
        );
    }
}
