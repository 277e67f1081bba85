//! From a channel's URL (raw webhook URL or shoutrrr dialect) to the
//! request its service expects. Secrets (passwords, HMAC keys) are resolved
//! here, at send time, which registers them with the redactor.

use super::format::{self, HttpRequest};
use super::{Channel, Message};
use crate::config::ChannelType;
use base64::Engine as _;

/// The parts of a notification URL this module needs (the `url` crate
/// parses shoutrrr's non-special schemes too).
struct Parts {
    userinfo: Option<String>,
    host: String,
    port: Option<u16>,
    path: String,
}

fn split_url(url: &str) -> Result<Parts, String> {
    let u = url::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
    let userinfo = match (u.username(), u.password()) {
        ("", None) => None,
        (user, Some(pw)) => Some(format!("{user}:{pw}")),
        (user, None) => Some(user.to_string()),
    };
    Ok(Parts {
        userinfo,
        host: u.host_str().unwrap_or("").to_string(),
        port: u.port(),
        path: u.path().to_string(),
    })
}

/// Query parameters of a URL (`a=1&b=2`), percent-decoded.
fn query_pairs(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url)
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

fn query_get(url: &str, keys: &[&str]) -> Option<String> {
    query_pairs(url)
        .into_iter()
        .find(|(k, _)| keys.iter().any(|w| k.eq_ignore_ascii_case(w)))
        .map(|(_, v)| v)
}

/// `scheme://rest` with `scheme` replaced and the query dropped.
fn rebase(url: &str, scheme: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    format!("{scheme}://{rest}")
}

fn decode(s: &str) -> String {
    // form decoding turns '+' into a space; a token's '+' must stay.
    let s = s.replace('+', "%2B");
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or(s)
}

fn err(ch: &Channel, what: &str) -> String {
    format!("channel {}: {what}", ch.cfg.name)
}

/// A channel's URL, read once: the text, its lowercased scheme and parts.
struct Target<'a> {
    ch: &'a Channel<'a>,
    url: String,
    scheme: String,
    parts: Parts,
}

impl<'a> Target<'a> {
    fn new(ch: &'a Channel<'a>) -> Result<Self, String> {
        let url = ch
            .cfg
            .url
            .as_ref()
            .map(|u| u.expose().to_string())
            .ok_or_else(|| err(ch, "no url"))?;
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        let parts = split_url(&url).map_err(|e| err(ch, &e))?;
        Ok(Target {
            ch,
            url,
            scheme,
            parts,
        })
    }

    fn err(&self, what: &str) -> String {
        err(self.ch, what)
    }

    /// The channel's `priority` as a number, for the services that take one.
    fn priority(&self) -> Option<i64> {
        self.ch.cfg.priority.as_deref().and_then(|p| p.parse().ok())
    }
}

/// The HTTP request for an HTTP channel (everything but email, command and
/// the ping channels).
pub(crate) fn http_request(ch: &Channel, m: &Message) -> Result<HttpRequest, String> {
    let t = Target::new(ch)?;
    match ch.kind {
        ChannelType::Discord => discord(&t, m),
        ChannelType::Slack => slack(&t, m),
        ChannelType::Ntfy => ntfy(&t, m),
        ChannelType::Gotify => gotify(&t, m),
        ChannelType::Telegram => telegram(&t, m),
        ChannelType::Pushover => pushover(&t, m),
        ChannelType::Webhook => webhook(&t, m),
        other => Err(err(
            ch,
            &format!("{} is not an HTTP channel", other.as_str()),
        )),
    }
}

/// shoutrrr `discord://TOKEN@WEBHOOK_ID`, or the webhook URL itself.
fn discord(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let target = if t.scheme == "discord" {
        let token = t
            .parts
            .userinfo
            .clone()
            .ok_or_else(|| t.err("discord:// needs TOKEN@ID"))?;
        format!(
            "https://discord.com/api/webhooks/{}/{}",
            t.parts.host, token
        )
    } else {
        t.url.clone()
    };
    Ok(format::discord(target, m))
}

/// `slack://hook:A-B-C@webhook` or `slack://A/B/C`, or the webhook URL.
fn slack(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let target = if t.scheme == "slack" {
        let tokens = match t.parts.userinfo.as_deref() {
            Some(u) => u
                .split_once(':')
                .map(|(_, t)| t)
                .unwrap_or(u)
                .replace('-', "/"),
            None => format!("{}{}", t.parts.host, t.parts.path),
        };
        format!("https://hooks.slack.com/services/{tokens}")
    } else {
        t.url.clone()
    };
    Ok(format::slack(target, m))
}

/// `ntfy://host[:port]/topic[?scheme=http]` or the topic URL; credentials
/// go into the Authorization header.
fn ntfy(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let target = if t.scheme == "ntfy" {
        let s = query_get(&t.url, &["scheme"]).unwrap_or_else(|| "https".into());
        let p = &t.parts;
        let port = p.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!("{s}://{}{port}{}", p.host, p.path)
    } else {
        t.url.split(['?', '#']).next().unwrap_or(&t.url).to_string()
    };
    let auth = ntfy_auth(t.ch, t.parts.userinfo.as_deref())?;
    let cfg = t.ch.cfg;
    Ok(format::ntfy(
        target,
        m,
        cfg.priority.as_deref(),
        &cfg.tags,
        auth,
    ))
}

/// `gotify://host[:port][/path]/TOKEN`, or `http(s)://.../TOKEN`.
fn gotify(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let base_scheme = if t.scheme != "gotify" {
        t.scheme.as_str()
    } else if query_get(&t.url, &["disabletls"]).is_some_and(|v| v == "yes" || v == "true") {
        "http"
    } else {
        "https"
    };
    let rest = rebase(&t.url, base_scheme);
    let (base, token) = rest
        .trim_end_matches('/')
        .rsplit_once('/')
        .filter(|(b, _)| b.contains("://") && !b.ends_with('/'))
        .ok_or_else(|| t.err("gotify URL needs the app token as its last path segment"))?;
    let token = query_get(&t.url, &["token"]).unwrap_or_else(|| token.to_string());
    Ok(format::gotify(
        format!("{base}/message"),
        &token,
        m,
        t.priority(),
    ))
}

/// `telegram://TOKEN@telegram?chats=CHAT[,...]`: the first chat.
fn telegram(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    if t.scheme != "telegram" {
        return Err(t.err("use telegram://TOKEN@telegram?chats=..."));
    }
    let token = decode(
        t.parts
            .userinfo
            .as_deref()
            .ok_or_else(|| t.err("telegram:// needs TOKEN@telegram"))?,
    );
    let chats = query_get(&t.url, &["chats", "channels"]).unwrap_or_default();
    let chat = chats
        .split(',')
        .next()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| t.err("telegram URL has no chats="))?;
    Ok(format::telegram(
        format!("https://api.telegram.org/bot{token}/sendMessage"),
        chat,
        m,
    ))
}

/// `pushover://shoutrrr:TOKEN@USERKEY/`.
fn pushover(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let token = t
        .parts
        .userinfo
        .as_deref()
        .and_then(|u| u.split_once(':').map(|(_, t)| t))
        .ok_or_else(|| t.err("pushover:// needs shoutrrr:TOKEN@USERKEY"))?;
    Ok(format::pushover(
        "https://api.pushover.net/1/messages.json".into(),
        &decode(token),
        &t.parts.host,
        m,
        t.priority(),
    ))
}

/// shoutrrr `generic[+http|+https]://...` or a plain URL, signed with the
/// channel's HMAC key if it has one, with its configured headers.
fn webhook(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let target = match t.scheme.as_str() {
        "generic" | "generic+https" => rebase(&t.url, "https"),
        "generic+http" => rebase(&t.url, "http"),
        _ => t.url.clone(),
    };
    let key = webhook_key(t.ch)?;
    Ok(format::webhook(
        target,
        m,
        key.as_ref().map(|k| k.expose().as_bytes()),
        &webhook_headers(t.ch),
    ))
}

/// The webhook's HMAC key, resolved now (which registers it for redaction).
fn webhook_key(ch: &Channel) -> Result<Option<crate::config::Secret>, String> {
    ch.cfg
        .secret_source()
        .map(|src| src.resolve().map_err(|e| err(ch, &e.to_string())))
        .transpose()
}

/// The extra headers configured for a webhook.
fn webhook_headers(ch: &Channel) -> Vec<(String, String)> {
    ch.cfg
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Basic auth for ntfy from `username` + `password*`, or the URL's userinfo.
fn ntfy_auth(ch: &Channel, userinfo: Option<&str>) -> Result<Option<String>, String> {
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    if let (Some(user), Some(src)) = (&ch.cfg.username, ch.cfg.password_source()) {
        let pw = src.resolve().map_err(|e| err(ch, &e.to_string()))?;
        return Ok(Some(format!(
            "Basic {}",
            b64(format!("{user}:{}", pw.expose()))
        )));
    }
    Ok(userinfo
        .filter(|u| u.contains(':'))
        .map(|u| format!("Basic {}", b64(decode(u)))))
}

/// SMTP settings from the channel keys, or from `smtp://user:pass@host:port/?from=&to=`.
pub(crate) struct SmtpTarget {
    pub host: String,
    pub port: u16,
    pub security: crate::config::SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<crate::config::Secret>,
    pub from: String,
    pub to: Vec<String>,
}

pub(crate) fn smtp_target(ch: &Channel) -> Result<SmtpTarget, String> {
    let password = match ch.cfg.password_source() {
        Some(src) => Some(src.resolve().map_err(|e| err(ch, &e.to_string()))?),
        None => None,
    };
    match &ch.cfg.url {
        Some(u) => smtp_from_url(ch, u.expose(), password),
        None => smtp_from_keys(ch, password),
    }
}

/// The submission port of a security mode.
fn smtp_default_port(security: crate::config::SmtpSecurity) -> u16 {
    use crate::config::SmtpSecurity;
    match security {
        SmtpSecurity::Tls => 465,
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::None => 25,
    }
}

/// `smtp://user:pass@host:port/?from=&to=&security=`; the channel keys fill
/// what the URL leaves out.
fn smtp_from_url(
    ch: &Channel,
    url: &str,
    password: Option<crate::config::Secret>,
) -> Result<SmtpTarget, String> {
    use crate::config::SmtpSecurity;
    let c = ch.cfg;
    let p = split_url(url).map_err(|e| err(ch, &e))?;
    let (user, pass) = match p.userinfo.as_deref() {
        Some(ui) => match ui.split_once(':') {
            Some((a, b)) => (Some(decode(a)), Some(decode(b))),
            None => (Some(decode(ui)), None),
        },
        None => (None, None),
    };
    let security = match query_get(url, &["security", "encryption"])
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("none") => SmtpSecurity::None,
        Some("tls") | Some("implicittls") => SmtpSecurity::Tls,
        _ => c.security.unwrap_or_default(),
    };
    let to = query_get(url, &["to", "toaddresses"])
        .map(|t| t.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_else(|| c.to.clone());
    Ok(SmtpTarget {
        host: p.host.clone(),
        port: p.port.unwrap_or(smtp_default_port(security)),
        security,
        username: user.or_else(|| c.username.clone()),
        password: pass.map(crate::config::Secret::new).or(password),
        from: query_get(url, &["from", "fromaddress"])
            .or_else(|| c.from.clone())
            .ok_or_else(|| err(ch, "no from address"))?,
        to,
    })
}

/// The channel keys `smtp_server`, `smtp_port`, `security`, `username`,
/// `from`, `to`.
fn smtp_from_keys(
    ch: &Channel,
    password: Option<crate::config::Secret>,
) -> Result<SmtpTarget, String> {
    let c = ch.cfg;
    let security = c.security.unwrap_or_default();
    Ok(SmtpTarget {
        host: c
            .smtp_server
            .clone()
            .ok_or_else(|| err(ch, "no smtp_server"))?,
        port: c.smtp_port.unwrap_or(smtp_default_port(security)),
        security,
        username: c.username.clone(),
        password,
        from: c.from.clone().ok_or_else(|| err(ch, "no from address"))?,
        to: c.to.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelConfig, SecretUrl};

    fn msg() -> Message {
        Message {
            events: vec![super::super::Event {
                event: "backup_failed".into(),
                severity: crate::config::Severity::Critical,
                workflow: "backup".into(),
                hostname: "pve1".into(),
                summary: "x".into(),
                data: serde_json::json!({"summary": "x"}),
                ts: 0,
            }],
            run_id: None,
            earlier_failures: 0,
        }
    }

    #[test]
    fn shoutrrr_urls_become_the_services_endpoints() {
        let cases = [
            (
                ChannelType::Ntfy,
                "ntfy://ntfy.lan/alerts?scheme=http",
                "http://ntfy.lan/alerts",
            ),
            (
                ChannelType::Ntfy,
                "https://ntfy.sh/alerts",
                "https://ntfy.sh/alerts",
            ),
            (
                ChannelType::Gotify,
                "gotify://gotify.lan/AppTok3n",
                "https://gotify.lan/message",
            ),
            (
                ChannelType::Gotify,
                "gotify://gotify.lan:8080/sub/AppTok3n?disabletls=yes",
                "http://gotify.lan:8080/sub/message",
            ),
            (
                ChannelType::Telegram,
                "telegram://123:abc@telegram?chats=@chan",
                "https://api.telegram.org/bot123:abc/sendMessage",
            ),
            (
                ChannelType::Pushover,
                "pushover://shoutrrr:apptoken@userkey/",
                "https://api.pushover.net/1/messages.json",
            ),
            (
                ChannelType::Webhook,
                "generic+http://hook.lan:8080/x",
                "http://hook.lan:8080/x",
            ),
            (
                ChannelType::Webhook,
                "generic://hook.lan/x?foo=1",
                "https://hook.lan/x",
            ),
            (
                ChannelType::Discord,
                "discord://tok@123456",
                "https://discord.com/api/webhooks/123456/tok",
            ),
            (
                ChannelType::Slack,
                "slack://hook:AAA-BBB-CCC@webhook",
                "https://hooks.slack.com/services/AAA/BBB/CCC",
            ),
        ];
        for (kind, url, want) in cases {
            let cfg = ChannelConfig {
                name: "c".into(),
                channel_type: Some(kind),
                url: Some(SecretUrl::new(url)),
                ..Default::default()
            };
            let ch = Channel::new(&cfg).unwrap();
            let req = http_request(&ch, &msg()).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(req.url, want, "{url}");
        }
    }

    #[test]
    fn gotify_token_goes_in_a_header_and_telegram_chat_in_the_body() {
        let cfg = ChannelConfig {
            name: "g".into(),
            channel_type: Some(ChannelType::Gotify),
            url: Some(SecretUrl::new("gotify://gotify.lan/AppTok3n")),
            ..Default::default()
        };
        let req = http_request(&Channel::new(&cfg).unwrap(), &msg()).unwrap();
        assert!(req
            .headers
            .contains(&("X-Gotify-Key".into(), "AppTok3n".into())));
        let cfg = ChannelConfig {
            name: "t".into(),
            channel_type: Some(ChannelType::Telegram),
            url: Some(SecretUrl::new(
                "telegram://123:abc@telegram?chats=@chan,@other",
            )),
            ..Default::default()
        };
        let req = http_request(&Channel::new(&cfg).unwrap(), &msg()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["chat_id"], "@chan");
    }
}
