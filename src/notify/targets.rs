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
    fragment: Option<String>,
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
        fragment: u.fragment().map(decode),
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
    /// The fragment (Apprise writes `#channel` as a path segment, which
    /// URL parsing reads as a fragment).
    fragment: Option<String>,
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
        // Apprise's tgram://BOTID:SECRET/CHAT: the token is read as the
        // userinfo of a placeholder host.
        let parsed = match scheme.as_str() {
            "tgram" => {
                let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
                let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                format!("tgram://{}@telegram{}", &rest[..cut], &rest[cut..])
            }
            _ => url.clone(),
        };
        let parts = split_url(&parsed).map_err(|e| err(ch, &e))?;
        let fragment = parts.fragment.clone();
        Ok(Target {
            ch,
            url: parsed,
            scheme,
            parts,
            fragment,
        })
    }

    /// The path's non-empty segments, percent-decoded.
    fn segments(&self) -> Vec<String> {
        self.parts
            .path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(decode)
            .collect()
    }

    /// Apprise's `/#a/#b` tail: the fragment `a/#b` read as items.
    fn fragment_items(&self) -> Vec<String> {
        self.fragment
            .iter()
            .flat_map(|f| f.split('/'))
            .filter(|s| !s.is_empty() && *s != "#")
            .map(str::to_string)
            .collect()
    }

    /// `host[:port]`.
    fn host_port(&self) -> String {
        match self.parts.port {
            Some(p) => format!("{}:{p}", self.parts.host),
            None => self.parts.host.clone(),
        }
    }

    /// The channel's `api_url` (without a trailing slash), or `default`.
    fn api(&self, default: &str) -> String {
        self.ch
            .cfg
            .api_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_string())
            .unwrap_or_else(|| default.to_string())
    }

    fn err(&self, what: &str) -> String {
        err(self.ch, what)
    }

    /// The channel's `priority` as a number, for the services that take one.
    fn priority(&self) -> Option<i64> {
        self.ch.cfg.priority.as_deref().and_then(|p| p.parse().ok())
    }
}

/// One request of a delivery; `check_ok`: a 2xx answer must also carry
/// `"ok": true` (the Slack Web API answers errors with 200).
pub(crate) struct Call {
    pub req: HttpRequest,
    pub check_ok: bool,
}

impl From<HttpRequest> for Call {
    fn from(req: HttpRequest) -> Call {
        Call {
            req,
            check_ok: false,
        }
    }
}

/// What delivering one message on an HTTP channel takes: requests sent in
/// turn (one per Telegram chat, Pushbullet target, ...), or the Matrix
/// exchange (login, join, send), which needs the server's answers.
pub(crate) enum Plan {
    Http(Vec<Call>),
    Matrix(MatrixTarget),
}

/// The requests for an HTTP channel (everything but email, command and
/// the ping channels).
pub(crate) fn plan(ch: &Channel, m: &Message) -> Result<Plan, String> {
    let t = Target::new(ch)?;
    let one = |r: Result<HttpRequest, String>| r.map(|r| vec![Call::from(r)]);
    Ok(Plan::Http(match ch.kind {
        ChannelType::Discord => one(discord(&t, m))?,
        ChannelType::Slack => slack(&t, m)?,
        ChannelType::Ntfy => ntfy(&t, m)?.into_iter().map(Call::from).collect(),
        ChannelType::Gotify => one(gotify(&t, m))?,
        ChannelType::Telegram => telegram(&t, m)?,
        ChannelType::Pushover => one(pushover(&t, m))?,
        ChannelType::Webhook => one(webhook(&t, m))?,
        ChannelType::Matrix => return matrix(&t).map(Plan::Matrix),
        ChannelType::Teams => one(teams(&t, m))?,
        ChannelType::Mattermost => one(mattermost(&t, m))?,
        ChannelType::GoogleChat => one(googlechat(&t, m))?,
        ChannelType::RocketChat => one(rocketchat(&t, m))?,
        ChannelType::Zulip => zulip(&t, m)?,
        ChannelType::Bark => bark(&t, m)?,
        ChannelType::Opsgenie => one(opsgenie(&t, m))?,
        ChannelType::Pushbullet => pushbullet(&t, m)?,
        other => {
            return Err(err(
                ch,
                &format!("{} is not an HTTP channel", other.as_str()),
            ))
        }
    }))
}

/// The requests, for tests of a single-request channel.
#[cfg(test)]
fn http_request(ch: &Channel, m: &Message) -> Result<HttpRequest, String> {
    match plan(ch, m)? {
        Plan::Http(mut calls) if !calls.is_empty() => Ok(calls.remove(0).req),
        _ => Err("no single request".into()),
    }
}

/// shoutrrr `discord://TOKEN@WEBHOOK_ID`, Apprise `discord://WEBHOOK_ID/TOKEN`,
/// or the webhook URL itself. `api_url` replaces `https://discord.com`.
fn discord(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let target = if t.scheme == "discord" {
        let (id, token) = match t.parts.userinfo.clone() {
            Some(token) => (t.parts.host.clone(), token),
            None => (
                t.parts.host.clone(),
                t.segments()
                    .first()
                    .cloned()
                    .ok_or_else(|| t.err("discord:// needs TOKEN@ID or ID/TOKEN"))?,
            ),
        };
        format!("{}/api/webhooks/{id}/{token}", t.api("https://discord.com"))
    } else {
        t.url.clone()
    };
    Ok(format::discord(target, m))
}

/// Slack: a bot token (`xoxb-`/`xoxp-`) posts through the Web API's
/// `chat.postMessage` to each channel named; anything else is an incoming
/// webhook. Forms: shoutrrr `slack://xoxb:TOKEN@CHANNEL`,
/// `slack://hook:A-B-C@webhook`, `slack://[botname@]A/B/C`; Apprise
/// `slack://xoxb-TOKEN/#chan[/#chan2]`, `slack://A/B/C[/#chan]`; or the
/// webhook URL. `api_url` replaces `https://slack.com` (the API) or
/// `https://hooks.slack.com` (webhooks).
fn slack(t: &Target, m: &Message) -> Result<Vec<Call>, String> {
    if t.scheme != "slack" {
        return Ok(vec![format::slack(t.url.clone(), m).into()]);
    }
    let user = t.parts.userinfo.as_deref();
    let (user_name, user_pw) = match user.map(|u| u.split_once(':')) {
        Some(Some((a, b))) => (Some(a), Some(b)),
        Some(None) => (user, None),
        None => (None, None),
    };
    // Bot token: shoutrrr xoxb:REST@CHANNEL, or Apprise xoxb-REST as host.
    let bot = match (user_name, user_pw) {
        (Some(k @ ("xoxb" | "xoxp")), Some(rest)) => {
            Some((format!("{k}-{}", decode(rest)), vec![t.parts.host.clone()]))
        }
        _ if t.parts.host.starts_with("xox") => {
            let chans: Vec<String> = t
                .segments()
                .into_iter()
                .chain(t.fragment_items())
                .map(|c| c.trim_start_matches('#').to_string())
                .filter(|c| !c.is_empty())
                .collect();
            Some((t.parts.host.clone(), chans))
        }
        _ => None,
    };
    if let Some((token, chans)) = bot {
        if chans.is_empty() {
            return Err(t.err("a Slack bot token needs a channel: slack://xoxb-TOKEN/#channel"));
        }
        let url = format!("{}/api/chat.postMessage", t.api("https://slack.com"));
        return Ok(chans
            .iter()
            .map(|c| Call {
                req: format::slack_api(url.clone(), &token, c, m),
                check_ok: true,
            })
            .collect());
    }
    let tokens = match (user_name, user_pw) {
        (Some("hook"), Some(tok)) => tok.replace('-', "/"),
        _ => {
            let segs = t.segments();
            let toks: Vec<&str> = std::iter::once(t.parts.host.as_str())
                .chain(segs.iter().map(String::as_str))
                .filter(|s| !s.starts_with('#'))
                .take(3)
                .collect();
            if toks.len() < 3 {
                return Err(t.err("slack:// needs A/B/C webhook tokens or a bot token"));
            }
            toks.join("/")
        }
    };
    Ok(vec![format::slack(
        format!("{}/services/{tokens}", t.api("https://hooks.slack.com")),
        m,
    )
    .into()])
}

/// ntfy: shoutrrr `ntfy://[user:pass@]host[:port][/prefix]/topic[?scheme=http]`
/// (https unless `scheme=http`), Apprise `ntfys://host/topic[/topic2]`,
/// `ntfy[s]://topic` (a topic on ntfy.sh), or the topic URL. One request
/// per topic; credentials go into the Authorization header.
fn ntfy(t: &Target, m: &Message) -> Result<Vec<HttpRequest>, String> {
    let targets = if t.scheme == "ntfy" || t.scheme == "ntfys" {
        let s = if t.scheme == "ntfys" {
            "https".to_string()
        } else {
            query_get(&t.url, &["scheme"]).unwrap_or_else(|| "https".into())
        };
        let topics = t.segments();
        let base = format!("{s}://{}", t.host_port());
        if topics.is_empty() {
            vec![format!("{s}://ntfy.sh/{}", t.parts.host)]
        } else if t.scheme == "ntfy" {
            // shoutrrr: the path as it is (a server under a path prefix).
            vec![format!("{base}{}", t.parts.path.trim_end_matches('/'))]
        } else {
            topics.iter().map(|tp| format!("{base}/{tp}")).collect()
        }
    } else {
        vec![t.url.split(['?', '#']).next().unwrap_or(&t.url).to_string()]
    };
    let auth = ntfy_auth(t.ch, t.parts.userinfo.as_deref())?;
    let cfg = t.ch.cfg;
    let prio = cfg
        .priority
        .clone()
        .or_else(|| query_get(&t.url, &["priority"]));
    Ok(targets
        .into_iter()
        .map(|u| format::ntfy(u, m, prio.as_deref(), &cfg.tags, auth.clone()))
        .collect())
}

/// `gotify://host[:port][/path]/TOKEN` (https unless `disabletls=yes`),
/// Apprise `gotifys://` (https), or `http(s)://.../TOKEN`.
fn gotify(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let base_scheme = if t.scheme == "gotifys" {
        "https"
    } else if t.scheme != "gotify" {
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

/// Telegram: shoutrrr `telegram://TOKEN@telegram?chats=A[,B...]` or
/// Apprise `tgram://TOKEN/A[/B...]`: one `sendMessage` per chat.
fn telegram(t: &Target, m: &Message) -> Result<Vec<Call>, String> {
    let (token, chats) = match t.scheme.as_str() {
        "telegram" => {
            let token = decode(
                t.parts
                    .userinfo
                    .as_deref()
                    .ok_or_else(|| t.err("telegram:// needs TOKEN@telegram"))?,
            );
            let chats = query_get(&t.url, &["chats", "channels"]).unwrap_or_default();
            let chats: Vec<String> = chats
                .split(',')
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect();
            (token, chats)
        }
        "tgram" => {
            let token = decode(t.parts.userinfo.as_deref().unwrap_or_default());
            let mut chats = t.segments();
            chats.extend(query_get(&t.url, &["to"]).into_iter().flat_map(|v| {
                v.split(',')
                    .map(|c| c.trim().to_string())
                    .collect::<Vec<_>>()
            }));
            (token, chats)
        }
        _ => return Err(t.err("use telegram://TOKEN@telegram?chats=... or tgram://TOKEN/CHAT")),
    };
    if chats.is_empty() {
        return Err(t.err("telegram URL names no chat"));
    }
    let url = format!(
        "{}/bot{token}/sendMessage",
        t.api("https://api.telegram.org")
    );
    Ok(chats
        .iter()
        .map(|c| Call {
            req: format::telegram(url.clone(), c, m),
            check_ok: true,
        })
        .collect())
}

/// Pushover: shoutrrr `pushover://shoutrrr:TOKEN@USERKEY/[?devices=a,b]`,
/// Apprise `pover://USERKEY@TOKEN[/DEVICE...]`.
fn pushover(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let (token, user, devices) = if t.scheme == "pover" {
        let user = t
            .parts
            .userinfo
            .as_deref()
            .ok_or_else(|| t.err("pover:// needs USERKEY@TOKEN"))?;
        (t.parts.host.clone(), decode(user), t.segments())
    } else {
        let token = t
            .parts
            .userinfo
            .as_deref()
            .and_then(|u| u.split_once(':').map(|(_, t)| t))
            .ok_or_else(|| t.err("pushover:// needs shoutrrr:TOKEN@USERKEY"))?;
        let devices = query_get(&t.url, &["devices"])
            .map(|d| d.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        (decode(token), t.parts.host.clone(), devices)
    };
    let devices = devices.join(",");
    Ok(format::pushover(
        format!("{}/1/messages.json", t.api("https://api.pushover.net")),
        &token,
        &user,
        (!devices.is_empty()).then_some(devices.as_str()),
        m,
        t.priority(),
    ))
}

/// shoutrrr `generic[+http|+https]://...`, Apprise `json://` (http) and
/// `jsons://` (https), or a plain URL, signed with the channel's HMAC key
/// if it has one, with its configured headers.
fn webhook(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let target = match t.scheme.as_str() {
        "generic" | "generic+https" | "jsons" => rebase(&t.url, "https"),
        "generic+http" | "json" => rebase(&t.url, "http"),
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

/// How a Matrix delivery logs in and where it sends.
pub(crate) struct MatrixTarget {
    /// `https://host[:port]`.
    pub base: String,
    pub auth: MatrixAuth,
    /// Room IDs (`!id:server`) and aliases (`#alias:server`); empty: every
    /// joined room.
    pub rooms: Vec<String>,
}

pub(crate) enum MatrixAuth {
    Token(String),
    Login { user: String, password: String },
}

/// Matrix: shoutrrr `matrix://user:password@host[:port]/?rooms=!id:srv,#alias:srv[&disableTLS=yes]`
/// (`matrix://:TOKEN@host` with an access token); Apprise
/// `matrixs://user:password@host/#alias/!id` (https) or
/// `matrixs://TOKEN@host/...`. A room without `#`/`!` is an alias; an
/// alias without `:server` is on this host.
fn matrix(t: &Target) -> Result<MatrixTarget, String> {
    let tls_off = query_get(&t.url, &["disabletls"]).is_some_and(|v| v == "yes" || v == "true");
    let scheme = if t.scheme == "matrix" && tls_off {
        "http"
    } else {
        "https"
    };
    let base = format!("{scheme}://{}", t.host_port());
    let auth = match t
        .parts
        .userinfo
        .as_deref()
        .map(|u| u.split_once(':').ok_or(u))
    {
        Some(Ok(("", token))) | Some(Err(token)) => MatrixAuth::Token(decode(token)),
        Some(Ok((user, pw))) => MatrixAuth::Login {
            user: decode(user),
            password: decode(pw),
        },
        None => return Err(t.err("matrix URL needs user:password@ or :TOKEN@")),
    };
    let mut rooms: Vec<String> = query_get(&t.url, &["rooms", "room", "to"])
        .map(|r| r.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_default();
    rooms.extend(t.segments());
    rooms.extend(
        t.fragment_items()
            .into_iter()
            .map(|s| format!("#{}", s.trim_start_matches('#'))),
    );
    let rooms = rooms
        .into_iter()
        .filter(|r| !r.is_empty())
        .map(|r| {
            let r = if r.starts_with('#') || r.starts_with('!') {
                r
            } else {
                format!("#{r}")
            };
            if r.contains(':') {
                r
            } else {
                format!("{r}:{}", t.parts.host)
            }
        })
        .collect();
    Ok(MatrixTarget { base, auth, rooms })
}

/// Teams: shoutrrr `teams://GROUP@TENANT/ALTID/GROUPOWNER[/EXTRAID]?host=ORG.webhook.office.com`,
/// Apprise `msteams://TEAM/TOKEN_A/TOKEN_B/TOKEN_C[/TOKEN_D]`, or the
/// webhook URL. `api_url` replaces `https://TEAM.webhook.office.com`.
fn teams(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let segs = t.segments();
    let url = match t.scheme.as_str() {
        "teams" => {
            let group = t
                .parts
                .userinfo
                .as_deref()
                .ok_or_else(|| t.err("teams:// needs GROUP@TENANT/ALTID/GROUPOWNER"))?;
            if segs.len() < 2 {
                return Err(t.err("teams:// needs GROUP@TENANT/ALTID/GROUPOWNER[/EXTRAID]"));
            }
            let host = query_get(&t.url, &["host"])
                .ok_or_else(|| t.err("teams:// needs ?host=ORG.webhook.office.com"))?;
            let base = t.api(&format!("https://{host}"));
            format!(
                "{base}/webhookb2/{group}@{}/IncomingWebhook/{}",
                t.parts.host,
                segs.join("/")
            )
        }
        "msteams" => {
            if segs.len() < 3 {
                return Err(t.err("msteams:// needs TEAM/TOKEN_A/TOKEN_B/TOKEN_C[/TOKEN_D]"));
            }
            let base = t.api(&format!("https://{}.webhook.office.com", t.parts.host));
            format!(
                "{base}/webhookb2/{}/IncomingWebhook/{}",
                segs[0],
                segs[1..].join("/")
            )
        }
        _ => t.url.clone(),
    };
    Ok(format::teams(url, m))
}

/// Mattermost: shoutrrr `mattermost://[user@]host[:port]/TOKEN[/CHANNEL][?disabletls=yes]`,
/// Apprise `mmost[s]://[user@]host[:port][/path]/TOKEN[?channel=NAME]`
/// (`mmost` is http), or the hook URL.
fn mattermost(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let segs = t.segments();
    let user = t.parts.userinfo.as_deref().map(decode);
    let (url, channel) = match t.scheme.as_str() {
        "mattermost" => {
            let tls_off =
                query_get(&t.url, &["disabletls"]).is_some_and(|v| v == "yes" || v == "true");
            let token = segs
                .first()
                .ok_or_else(|| t.err("mattermost:// needs host/TOKEN"))?;
            (
                format!(
                    "{}://{}/hooks/{token}",
                    if tls_off { "http" } else { "https" },
                    t.host_port()
                ),
                segs.get(1).cloned(),
            )
        }
        "mmost" | "mmosts" => {
            let (token, path) = segs
                .split_last()
                .ok_or_else(|| t.err("mmost:// needs host/TOKEN"))?;
            let prefix: String = path.iter().map(|p| format!("/{p}")).collect();
            (
                format!(
                    "{}://{}{prefix}/hooks/{token}",
                    if t.scheme == "mmosts" {
                        "https"
                    } else {
                        "http"
                    },
                    t.host_port()
                ),
                query_get(&t.url, &["channel", "channels"]),
            )
        }
        _ => (t.url.clone(), None),
    };
    Ok(format::chat_hook(
        url,
        m,
        user.as_deref(),
        channel.as_deref(),
    ))
}

/// Google Chat: shoutrrr `googlechat://chat.googleapis.com/v1/spaces/SPACE/messages?key=K&token=T`,
/// Apprise `gchat://SPACE/KEY/TOKEN`, or the webhook URL. `api_url`
/// replaces `https://chat.googleapis.com` in the Apprise form.
fn googlechat(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let url = match t.scheme.as_str() {
        "googlechat" => format!(
            "https://{}",
            t.url.split_once("://").map(|(_, r)| r).unwrap_or("")
        ),
        "gchat" => {
            let segs = t.segments();
            let [key, token] = segs.as_slice() else {
                return Err(t.err("gchat:// needs SPACE/KEY/TOKEN"));
            };
            let q = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("key", key)
                .append_pair("token", token)
                .finish();
            format!(
                "{}/v1/spaces/{}/messages?{q}",
                t.api("https://chat.googleapis.com"),
                t.parts.host
            )
        }
        _ => t.url.clone(),
    };
    Ok(format::googlechat(url, m))
}

/// Rocket.Chat incoming webhook: shoutrrr
/// `rocketchat://[user@]host[:port]/TOKEN_A/TOKEN_B[/CHANNEL|/@USER]`,
/// Apprise `rocket[s]://TOKEN_A%2FTOKEN_B@host[:port][/#channel|/@user]`
/// (`rocket` is http), or the hook URL.
fn rocketchat(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let segs = t.segments();
    let (url, user, target) = match t.scheme.as_str() {
        "rocketchat" => {
            if segs.len() < 2 {
                return Err(t.err("rocketchat:// needs host/TOKEN_A/TOKEN_B"));
            }
            (
                format!("https://{}/hooks/{}/{}", t.host_port(), segs[0], segs[1]),
                t.parts.userinfo.as_deref().map(decode),
                segs.get(2)
                    .cloned()
                    .or_else(|| t.fragment.clone().map(|f| format!("#{f}"))),
            )
        }
        "rocket" | "rockets" => {
            let hook = t.parts.userinfo.as_deref().map(decode).unwrap_or_default();
            if hook.contains(':') || !hook.contains('/') {
                return Err(t.err(
                    "only Rocket.Chat's incoming-webhook form is supported: \
                     rockets://TOKEN_A%2FTOKEN_B@host (or rocketchat://host/TOKEN_A/TOKEN_B)",
                ));
            }
            (
                format!(
                    "{}://{}/hooks/{hook}",
                    if t.scheme == "rockets" {
                        "https"
                    } else {
                        "http"
                    },
                    t.host_port()
                ),
                None,
                segs.first()
                    .cloned()
                    .or_else(|| t.fragment.clone().map(|f| format!("#{f}"))),
            )
        }
        _ => (t.url.clone(), None, None),
    };
    let channel = target.map(|c| {
        if c.starts_with('@') || c.starts_with('#') {
            c
        } else {
            format!("#{c}")
        }
    });
    Ok(format::chat_hook(
        url,
        m,
        user.as_deref(),
        channel.as_deref(),
    ))
}

/// Zulip: shoutrrr `zulip://BOT_EMAIL:API_KEY@host/?stream=S&topic=T`,
/// Apprise `zulip://BOTNAME@ORG/API_KEY[/STREAM...]` (`ORG` without a dot
/// is `ORG.zulipchat.com`, the bot `BOTNAME-bot@` that host). One message
/// per stream; the topic defaults to `homelab-autopilot`.
fn zulip(t: &Target, m: &Message) -> Result<Vec<Call>, String> {
    let b64 = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
    let userinfo = t
        .parts
        .userinfo
        .as_deref()
        .ok_or_else(|| t.err("zulip:// needs BOT_EMAIL:API_KEY@host"))?;
    let topic = query_get(&t.url, &["topic"]).unwrap_or_else(|| "homelab-autopilot".into());
    let (host, email, key, streams) = match userinfo.split_once(':') {
        Some((email, key)) => (
            t.host_port(),
            decode(email),
            decode(key),
            query_get(&t.url, &["stream"])
                .into_iter()
                .collect::<Vec<_>>(),
        ),
        None => {
            let segs = t.segments();
            let (key, streams) = segs
                .split_first()
                .ok_or_else(|| t.err("zulip://BOTNAME@ORG/API_KEY needs the key"))?;
            let host = if t.parts.host.contains('.') || t.parts.port.is_some() {
                t.host_port()
            } else {
                format!("{}.zulipchat.com", t.parts.host)
            };
            let bot = decode(userinfo);
            let email = if bot.contains('@') {
                bot
            } else {
                format!("{bot}-bot@{}", host.split(':').next().unwrap_or(&host))
            };
            (host, email, key.clone(), streams.to_vec())
        }
    };
    let streams = if streams.is_empty() {
        vec!["general".to_string()]
    } else {
        streams
    };
    let auth = format!("Basic {}", b64(format!("{email}:{key}")));
    Ok(streams
        .iter()
        .map(|s| {
            format::zulip(
                format!("https://{host}/api/v1/messages"),
                auth.clone(),
                s,
                &topic,
                m,
            )
            .into()
        })
        .collect())
}

/// Bark: shoutrrr `bark://:DEVICE_KEY@host[:port][/path][?scheme=http&sound=&group=&icon=&url=]`,
/// Apprise `bark[s]://host[:port]/DEVICE_KEY[/DEVICE_KEY...]` (`bark`
/// is http). `POST <base>/push` per device.
fn bark(t: &Target, m: &Message) -> Result<Vec<Call>, String> {
    let (scheme, prefix, keys) = match t.parts.userinfo.as_deref() {
        Some(ui) => {
            let key = ui.split_once(':').map(|(_, k)| k).unwrap_or(ui);
            let scheme = query_get(&t.url, &["scheme"]).unwrap_or_else(|| "https".into());
            (scheme, t.segments().join("/"), vec![decode(key)])
        }
        None => (
            if t.scheme == "barks" { "https" } else { "http" }.to_string(),
            String::new(),
            t.segments(),
        ),
    };
    if keys.is_empty() || keys.iter().any(|k| k.is_empty()) {
        return Err(t.err("bark URL needs the device key"));
    }
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("/{prefix}")
    };
    let url = format!("{scheme}://{}{prefix}/push", t.host_port());
    let extra: Vec<(String, String)> = ["sound", "group", "icon", "url", "badge", "category"]
        .iter()
        .filter_map(|k| query_get(&t.url, &[k]).map(|v| (k.to_string(), v)))
        .collect();
    let level =
        t.ch.cfg
            .priority
            .clone()
            .or_else(|| query_get(&t.url, &["level"]));
    Ok(keys
        .iter()
        .map(|k| format::bark(url.clone(), k, m, level.as_deref(), &extra).into())
        .collect())
}

/// Opsgenie: shoutrrr `opsgenie://host[:port][/path]/API_KEY` (host
/// `api.opsgenie.com` or `api.eu.opsgenie.com`), Apprise
/// `opsgenie://API_KEY[?region=eu]`, whose API base `api_url` replaces.
fn opsgenie(t: &Target, m: &Message) -> Result<HttpRequest, String> {
    let segs = t.segments();
    let apprise =
        !(t.parts.host.contains('.') || t.parts.port.is_some() || t.parts.host == "localhost");
    let (base, key) = if apprise {
        let eu = query_get(&t.url, &["region"]).is_some_and(|r| r.eq_ignore_ascii_case("eu"));
        let def = if eu {
            "https://api.eu.opsgenie.com"
        } else {
            "https://api.opsgenie.com"
        };
        (t.api(def), t.parts.host.clone())
    } else {
        let (key, path) = segs
            .split_last()
            .ok_or_else(|| t.err("opsgenie://host/API_KEY needs the key"))?;
        let prefix: String = path.iter().map(|p| format!("/{p}")).collect();
        (format!("https://{}{prefix}", t.host_port()), key.clone())
    };
    let prio =
        t.ch.cfg
            .priority
            .clone()
            .or_else(|| query_get(&t.url, &["priority"]));
    Ok(format::opsgenie(
        format!("{base}/v2/alerts"),
        &key,
        m,
        prio.as_deref(),
    ))
}

/// Pushbullet: shoutrrr `pushbullet://TOKEN[/DEVICE|/#CHANNEL|/EMAIL...]`,
/// Apprise `pbul://TOKEN[/...]` the same; no target: every device. One
/// push per target. `api_url` replaces `https://api.pushbullet.com`.
fn pushbullet(t: &Target, m: &Message) -> Result<Vec<Call>, String> {
    let token = t.parts.host.clone();
    let mut targets: Vec<String> = t.segments();
    targets.extend(
        t.fragment_items()
            .into_iter()
            .map(|f| format!("#{}", f.trim_start_matches('#'))),
    );
    let url = format!("{}/v2/pushes", t.api("https://api.pushbullet.com"));
    if targets.is_empty() {
        return Ok(vec![format::pushbullet(url, &token, None, m).into()]);
    }
    Ok(targets
        .iter()
        .map(|tg| {
            let target = if let Some(c) = tg.strip_prefix('#') {
                ("channel_tag", c)
            } else if tg.contains('@') {
                ("email", tg.as_str())
            } else {
                ("device_iden", tg.as_str())
            };
            format::pushbullet(url.clone(), &token, Some(target), m).into()
        })
        .collect())
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

/// `smtp://user:pass@host:port/?from=&to=&security=` (shoutrrr), or
/// Apprise's `mailto://` (plain SMTP) and `mailtos://` (STARTTLS; `mode=ssl`
/// for implicit TLS) with `smtp=` naming the server when it is not the
/// host, `user=`/`pass=`, and `from=` defaulting to `user@host`; the
/// channel keys fill what the URL leaves out.
fn smtp_from_url(
    ch: &Channel,
    url: &str,
    password: Option<crate::config::Secret>,
) -> Result<SmtpTarget, String> {
    use crate::config::SmtpSecurity;
    let c = ch.cfg;
    let scheme = url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .unwrap_or_default();
    let apprise = scheme == "mailto" || scheme == "mailtos";
    let p = split_url(url).map_err(|e| err(ch, &e))?;
    let (user, pass) = match p.userinfo.as_deref() {
        Some(ui) => match ui.split_once(':') {
            Some((a, b)) => (Some(decode(a)), Some(decode(b))),
            None => (Some(decode(ui)), None),
        },
        None => (None, None),
    };
    let user = user.or_else(|| query_get(url, &["user"]));
    let pass = pass.or_else(|| query_get(url, &["pass"]));
    let asked = query_get(url, &["security", "encryption", "mode"]).map(|s| s.to_ascii_lowercase());
    let security = match asked.as_deref() {
        Some("none") | Some("insecure") => SmtpSecurity::None,
        Some("tls") | Some("implicittls") | Some("ssl") => SmtpSecurity::Tls,
        Some("starttls") => SmtpSecurity::Starttls,
        _ if scheme == "mailto" => c.security.unwrap_or(SmtpSecurity::None),
        _ => c.security.unwrap_or_default(),
    };
    let to = query_get(url, &["to", "toaddresses"])
        .map(|t| t.split(',').map(|s| s.trim().to_string()).collect())
        .unwrap_or_else(|| c.to.clone());
    let default_from = match &user {
        Some(u) if apprise && u.contains('@') => Some(u.clone()),
        Some(u) if apprise => Some(format!("{u}@{}", p.host)),
        _ => None,
    };
    let from = query_get(url, &["from", "fromaddress"])
        .or_else(|| c.from.clone())
        .or(default_from)
        .ok_or_else(|| err(ch, "no from address"))?;
    let to = if to.is_empty() && apprise {
        vec![from.clone()]
    } else {
        to
    };
    Ok(SmtpTarget {
        host: query_get(url, &["smtp"])
            .filter(|_| apprise)
            .unwrap_or(p.host.clone()),
        port: p.port.unwrap_or(smtp_default_port(security)),
        security,
        username: user.or_else(|| c.username.clone()),
        password: pass.map(crate::config::Secret::new).or(password),
        from,
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
            (
                ChannelType::Ntfy,
                "ntfys://ntfy.lan/alerts",
                "https://ntfy.lan/alerts",
            ),
            (
                ChannelType::Ntfy,
                "ntfy://mytopic",
                "https://ntfy.sh/mytopic",
            ),
            (
                ChannelType::Gotify,
                "gotifys://g.lan/AppTok3n",
                "https://g.lan/message",
            ),
            (
                ChannelType::Telegram,
                "tgram://123:abc/555",
                "https://api.telegram.org/bot123:abc/sendMessage",
            ),
            (
                ChannelType::Pushover,
                "pover://userkey@apptoken",
                "https://api.pushover.net/1/messages.json",
            ),
            (
                ChannelType::Webhook,
                "json://hook.lan/x",
                "http://hook.lan/x",
            ),
            (
                ChannelType::Webhook,
                "jsons://hook.lan/x",
                "https://hook.lan/x",
            ),
            (
                ChannelType::Discord,
                "discord://123456/tok",
                "https://discord.com/api/webhooks/123456/tok",
            ),
            (
                ChannelType::Slack,
                "slack://xoxb:111-222-abc@C001",
                "https://slack.com/api/chat.postMessage",
            ),
            (
                ChannelType::Slack,
                "slack://xoxb-111-222-abc/#general",
                "https://slack.com/api/chat.postMessage",
            ),
            (
                ChannelType::Slack,
                "slack://bot@T0/B0/XX/#chan",
                "https://hooks.slack.com/services/T0/B0/XX",
            ),
            (
                ChannelType::Teams,
                "teams://g@t/alt/owner/extra?host=org.webhook.office.com",
                "https://org.webhook.office.com/webhookb2/g@t/IncomingWebhook/alt/owner/extra",
            ),
            (
                ChannelType::Teams,
                "msteams://org/g@t/alt/owner",
                "https://org.webhook.office.com/webhookb2/g@t/IncomingWebhook/alt/owner",
            ),
            (
                ChannelType::Mattermost,
                "mattermost://bot@mm.lan/tok/chan",
                "https://mm.lan/hooks/tok",
            ),
            (
                ChannelType::Mattermost,
                "mmost://mm.lan:8065/sub/tok",
                "http://mm.lan:8065/sub/hooks/tok",
            ),
            (
                ChannelType::GoogleChat,
                "googlechat://chat.googleapis.com/v1/spaces/S/messages?key=K&token=T",
                "https://chat.googleapis.com/v1/spaces/S/messages?key=K&token=T",
            ),
            (
                ChannelType::GoogleChat,
                "gchat://S/K/T",
                "https://chat.googleapis.com/v1/spaces/S/messages?key=K&token=T",
            ),
            (
                ChannelType::RocketChat,
                "rocketchat://rc.lan/A/B/chan",
                "https://rc.lan/hooks/A/B",
            ),
            (
                ChannelType::RocketChat,
                "rockets://A%2FB@rc.lan",
                "https://rc.lan/hooks/A/B",
            ),
            (
                ChannelType::Zulip,
                "zulip://bot%40z.lan:key@z.lan/?stream=s",
                "https://z.lan/api/v1/messages",
            ),
            (
                ChannelType::Zulip,
                "zulip://mybot@myorg/key/stream",
                "https://myorg.zulipchat.com/api/v1/messages",
            ),
            (
                ChannelType::Bark,
                "bark://:dev@bark.lan/p",
                "https://bark.lan/p/push",
            ),
            (
                ChannelType::Bark,
                "barks://bark.lan/dev",
                "https://bark.lan/push",
            ),
            (
                ChannelType::Opsgenie,
                "opsgenie://api.eu.opsgenie.com/key",
                "https://api.eu.opsgenie.com/v2/alerts",
            ),
            (
                ChannelType::Opsgenie,
                "opsgenie://key?region=eu",
                "https://api.eu.opsgenie.com/v2/alerts",
            ),
            (
                ChannelType::Pushbullet,
                "pushbullet://tok/dev",
                "https://api.pushbullet.com/v2/pushes",
            ),
            (
                ChannelType::Pushbullet,
                "pbul://tok",
                "https://api.pushbullet.com/v2/pushes",
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

    #[test]
    fn matrix_rooms_and_auth_come_from_either_dialect() {
        let t = |url: &str| {
            let cfg = ChannelConfig {
                name: "m".into(),
                channel_type: Some(ChannelType::Matrix),
                url: Some(SecretUrl::new(url)),
                ..Default::default()
            };
            match plan(&Channel::new(&cfg).unwrap(), &msg()).unwrap() {
                Plan::Matrix(t) => (t.base, matches!(t.auth, MatrixAuth::Token(_)), t.rooms),
                Plan::Http(_) => panic!("{url}: not a matrix plan"),
            }
        };
        assert_eq!(
            t("matrix://bob:pw@m.lan:8448/?rooms=!abc:m.lan,ops&disableTLS=yes"),
            (
                "http://m.lan:8448".into(),
                false,
                vec!["!abc:m.lan".into(), "#ops:m.lan".into()]
            )
        );
        assert_eq!(
            t("matrixs://:tok@m.lan/#alerts"),
            ("https://m.lan".into(), true, vec!["#alerts:m.lan".into()])
        );
    }

    #[test]
    fn telegram_and_slack_bots_send_to_every_chat_listed() {
        let n = |kind, url: &str| {
            let cfg = ChannelConfig {
                name: "c".into(),
                channel_type: Some(kind),
                url: Some(SecretUrl::new(url)),
                ..Default::default()
            };
            match plan(&Channel::new(&cfg).unwrap(), &msg()).unwrap() {
                Plan::Http(calls) => calls.len(),
                Plan::Matrix(_) => 0,
            }
        };
        assert_eq!(
            n(
                ChannelType::Telegram,
                "telegram://1:a@telegram?chats=@a,@b,-100"
            ),
            3
        );
        assert_eq!(n(ChannelType::Telegram, "tgram://1:a/@a/-100"), 2);
        assert_eq!(n(ChannelType::Slack, "slack://xoxb-1-2-a/#one/#two"), 2);
        assert_eq!(n(ChannelType::Pushbullet, "pbul://tok/dev1/a@b.c/#chan"), 3);
    }
}
