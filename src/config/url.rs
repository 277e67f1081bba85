//! URLs in the configuration: a small splitter (enough to validate scheme
//! and host, and to redact), the notification URL dialect (raw Discord and
//! Slack webhook URLs, shoutrrr schemes), and [`redact_url`].
//!
//! Notification URLs carry tokens, so [`SecretUrl`] prints redacted and the
//! full URL is registered with [`crate::redact`] at load.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The parts of `scheme://[userinfo@]host[:port][/path][?query][#fragment]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlParts<'a> {
    pub scheme: &'a str,
    pub userinfo: Option<&'a str>,
    pub host: &'a str,
    pub port: Option<&'a str>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fragment: Option<&'a str>,
}

/// Split a URL; errors say what is missing.
pub(crate) fn split_url(url: &str) -> Result<UrlParts<'_>, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("'{}' is not a URL (expected scheme://host/...)", short(url)))?;
    if scheme.is_empty()
        || !scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    {
        return Err(format!("invalid URL scheme '{scheme}'"));
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, f)) => (r, Some(f)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let end = v6.find(']').ok_or("unterminated IPv6 address in URL")?;
        let after = &v6[end + 1..];
        (&hostport[..end + 2], after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err("URL has no host".into());
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '\\')
    {
        return Err(format!("invalid host '{host}' in URL"));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("invalid port '{p}' in URL"));
        }
    }
    if url.chars().any(char::is_whitespace) {
        return Err("URL contains whitespace".into());
    }
    Ok(UrlParts {
        scheme,
        userinfo,
        host,
        port,
        path,
        query,
        fragment,
    })
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(37).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Whether a URL's host is a credential: the user key of `pushover://`
/// and `pover://`, the access token of `pushbullet://` and `pbul://`, the
/// API key of Apprise's `opsgenie://KEY`, the bot token of Apprise's
/// `slack://xoxb-...`.
fn host_is_secret(scheme: &str, host: &str) -> bool {
    match scheme.to_ascii_lowercase().as_str() {
        "pushover" | "pover" | "pushbullet" | "pbul" => true,
        "opsgenie" => !host.contains('.') && !host.starts_with('['),
        "slack" => host.starts_with("xox"),
        _ => false,
    }
}

/// Check a URL: it parses, has a host, and its scheme is one of `schemes`.
pub(crate) fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let parts = split_url(url)?;
    let scheme = parts.scheme.to_ascii_lowercase();
    if !schemes.contains(&scheme.as_str()) {
        return Err(format!(
            "URL scheme '{scheme}' is not supported here (use {})",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// Does this path segment look like a token? Long (16+) and not purely
/// numeric, or 8+ characters mixing letters and digits. Purely numeric
/// segments are IDs (Discord's webhook ID), plain words are names
/// (`api`, `webhooks`, an ntfy topic such as `backups`).
fn is_token_like(segment: &str) -> bool {
    let has_digit = segment.chars().any(|c| c.is_ascii_digit());
    let has_alpha = segment.chars().any(|c| c.is_ascii_alphabetic());
    let all_digits = !segment.is_empty() && segment.chars().all(|c| c.is_ascii_digit());
    (segment.len() >= 16 && !all_digits) || (segment.len() >= 8 && has_digit && has_alpha)
}

/// Mask the secret parts of a URL for display: the userinfo (`user:***@`,
/// or `***@` without a colon, as in `telegram://TOKEN@telegram`), every
/// query value, the fragment, token-like path segments (see
/// [`is_token_like`]), and the host of `pushover://` (it is the user key).
/// Something that does not parse as a URL is masked whole.
pub fn redact_url(url: &str) -> String {
    let Ok(p) = split_url(url) else {
        return crate::redact::MASK.to_string();
    };
    let mask = crate::redact::MASK;
    let mut out = format!("{}://", p.scheme);
    if let Some(u) = p.userinfo {
        match u.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:{mask}@")),
            None => out.push_str(&format!("{mask}@")),
        }
    }
    if host_is_secret(p.scheme, p.host) {
        out.push_str(mask);
    } else {
        out.push_str(p.host);
    }
    if let Some(port) = p.port {
        out.push(':');
        out.push_str(port);
    }
    let path: Vec<&str> = p
        .path
        .split('/')
        .map(|seg| if is_token_like(seg) { mask } else { seg })
        .collect();
    out.push_str(&path.join("/"));
    if let Some(q) = p.query {
        let q: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) => format!("{k}={mask}"),
                None => kv.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&q.join("&"));
    }
    if p.fragment.is_some() {
        out.push('#');
        out.push_str(mask);
    }
    out
}

/// What a credential piece of a URL is (see [`url_secret_parts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UrlSecretKind {
    /// The password of `user:password@`.
    UserPassword,
    /// Userinfo without a colon: a token (`telegram://TOKEN@telegram`).
    UserToken,
    /// The host of `pushover://` (the user key).
    Host,
    /// A token-like path segment (see [`is_token_like`]).
    PathToken,
    /// A query value under a key that names a credential (`token=`,
    /// `apikey=`, `password=`, ...) or that looks like a token.
    QueryToken,
}

impl UrlSecretKind {
    /// A credential whatever the URL is for: a password in the userinfo or
    /// a query value whose key names a credential. The other kinds are
    /// credentials in notification URLs (where tokens live in the path or
    /// the userinfo) but may be ordinary names in a health-check URL.
    pub(crate) fn is_credential_anywhere(self, key: Option<&str>) -> bool {
        match self {
            UrlSecretKind::UserPassword => true,
            UrlSecretKind::QueryToken => key.is_some_and(names_a_credential),
            _ => false,
        }
    }
}

/// Whether a query key names a credential (`token`, `api_key`, `sig`, ...).
fn names_a_credential(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "key", "secret", "pass", "auth", "sig", "cred"]
        .iter()
        .any(|w| k.contains(w))
}

/// One credential piece of a URL: its kind, the query key it sits under
/// (for a query value) and the text as written in the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UrlSecretPart<'a> {
    pub kind: UrlSecretKind,
    pub key: Option<&'a str>,
    pub value: &'a str,
}

/// The credential pieces of a URL: the userinfo password (or the whole
/// userinfo when it has no colon), the host of `pushover://`, token-like
/// path segments, and query values that look like tokens or sit under a
/// key naming a credential. Empty for a URL that does not parse (it is
/// then masked whole by [`redact_url`] and registered whole).
pub(crate) fn url_secret_parts(url: &str) -> Vec<UrlSecretPart<'_>> {
    let Ok(p) = split_url(url) else {
        return Vec::new();
    };
    let part = |kind, key, value| UrlSecretPart { kind, key, value };
    let mut out = Vec::new();
    match p.userinfo.map(|u| u.split_once(':').ok_or(u)) {
        Some(Ok((_, pw))) if !pw.is_empty() => {
            out.push(part(UrlSecretKind::UserPassword, None, pw))
        }
        Some(Err(token)) if !token.is_empty() => {
            out.push(part(UrlSecretKind::UserToken, None, token))
        }
        _ => {}
    }
    if host_is_secret(p.scheme, p.host) {
        out.push(part(UrlSecretKind::Host, None, p.host));
    }
    for seg in p.path.split('/').filter(|s| is_token_like(s)) {
        out.push(part(UrlSecretKind::PathToken, None, seg));
    }
    for (k, v) in p
        .query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .filter_map(|kv| kv.split_once('='))
    {
        if !v.is_empty() && (names_a_credential(k) || is_token_like(v)) {
            out.push(part(UrlSecretKind::QueryToken, Some(k), v));
        }
    }
    out
}

/// A piece of a URL as a program uses it: percent-decoded (`p%40ss` is
/// sent as `p@ss`); `+` stays a `+`.
fn percent_decode(s: &str) -> String {
    let s = s.replace('+', "%2B");
    ::url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or(s)
}

/// The secret pieces of a URL (the URL itself, the credential parts of
/// [`url_secret_parts`] as written and percent-decoded, and any other
/// query value of 8 characters or more), registered with
/// [`crate::redact`] so a log line holding any of them is masked. A URL
/// with nothing to redact (say `http://127.0.0.1:8080/hook`) is not a
/// secret and is not registered.
pub(crate) fn register_url_secrets(url: &str) {
    if !has_secret_parts(url) {
        return;
    }
    crate::redact::register(url);
    for part in url_secret_parts(url) {
        crate::redact::register(part.value);
        crate::redact::register(&percent_decode(part.value));
    }
    let Ok(p) = split_url(url) else { return };
    if let Some(q) = p.query {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .for_each(|(_, v)| {
                if v.len() >= 8 {
                    crate::redact::register(v)
                }
            });
    }
}

/// Whether [`redact_url`] would change anything, without building its
/// output (a config can hold hundreds of health-check URLs).
fn has_secret_parts(url: &str) -> bool {
    let Ok(p) = split_url(url) else {
        return true;
    };
    p.userinfo.is_some()
        || p.query
            .is_some_and(|q| q.split('&').any(|kv| kv.contains('=')))
        || p.fragment.is_some()
        || host_is_secret(p.scheme, p.host)
        || p.path.split('/').any(is_token_like)
}

/// A URL that carries a token (notification webhooks). `Debug`, `Display`
/// and `Serialize` print it redacted; [`SecretUrl::expose`] gives the URL.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The full URL, tokens included. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its secrets masked.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }

    /// The scheme, lowercased (`https`, `ntfy`, `generic+https`).
    pub fn scheme(&self) -> String {
        self.0
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default()
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_their_parts() {
        let p = split_url("https://user:pw@[::1]:8443/a/b?x=1#f").unwrap();
        assert_eq!(
            (p.scheme, p.userinfo, p.host, p.port, p.path, p.query, p.fragment),
            (
                "https",
                Some("user:pw"),
                "[::1]",
                Some("8443"),
                "/a/b",
                Some("x=1"),
                Some("f")
            )
        );
        let p = split_url("generic+https://example.org").unwrap();
        assert_eq!(
            (p.scheme, p.host, p.path),
            ("generic+https", "example.org", "")
        );
        for bad in [
            "example.org/x",
            "https://",
            "https://:80/",
            "https://h:99999/",
            "ht tp://x",
            "https://a b/",
        ] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn check_url_enforces_the_scheme_list() {
        assert!(check_url("http://127.0.0.1:8080/hook", &["http", "https"]).is_ok());
        let err = check_url("ftp://x/", &["http", "https"]).unwrap_err();
        assert_eq!(
            err,
            "URL scheme 'ftp' is not supported here (use http://, https://)"
        );
    }

    #[test]
    fn redaction_masks_tokens_but_keeps_the_shape() {
        let cases = [
            (
                "https://discord.com/api/webhooks/123456789012345678/AbCdEf_ghIJkl-MNOPqrstUVwxyz0123456789abcdefGHIJKLmnopQRST",
                "https://discord.com/api/webhooks/123456789012345678/***",
            ),
            (
                "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
                "https://hooks.slack.com/services/***/***/***",
            ),
            (
                "https://hc-ping.com/0b7f3b6a-8c1d-4e2f-9a3b-5c6d7e8f9a0b",
                "https://hc-ping.com/***",
            ),
            ("https://ntfy.sh/backups", "https://ntfy.sh/backups"),
            ("https://ntfy.sh/homelab-x7f9q2k1", "https://ntfy.sh/***"),
            ("https://kuma.example/api/push/Rk7x9QaB2c?status=up&msg=OK", "https://kuma.example/api/push/***?status=***&msg=***"),
            ("https://user:hunter2@example.org/hook", "https://user:***@example.org/hook"),
            ("telegram://123456:ABCdef@telegram?chats=@mychan", "telegram://123456:***@telegram?chats=***"),
            ("telegram://token@telegram", "telegram://***@telegram"),
            ("pushover://shoutrrr:apptoken@userkey/?devices=phone", "pushover://shoutrrr:***@***/?devices=***"),
            ("gotify://gotify.example/AbCdEfG12345", "gotify://gotify.example/***"),
            ("pbul://PBTOKENm5n6b7v8/dev1", "pbul://***/dev1"),
            ("pover://USERKEY1@APPTOKENr4t5y6", "pover://***@***"),
            ("opsgenie://OGKEYl1k2j3h4?region=eu", "opsgenie://***?region=***"),
            ("opsgenie://api.opsgenie.com/0b7f3b6a-8c1d-4e2f", "opsgenie://api.opsgenie.com/***"),
            ("slack://xoxb-111-222-abcdef/#general", "slack://***/#***"),
            ("tgram://111:TGSECRETq1w2e3/@chan", "***"),
            ("not a url", "***"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            // The quick test agrees with the redaction.
            assert_eq!(has_secret_parts(url), want != url, "{url}");
        }
        for url in [
            "http://127.0.0.1:8080/health",
            "https://cloud.example.org/status.php?x",
        ] {
            assert_eq!(redact_url(url), url);
            assert!(!has_secret_parts(url), "{url}");
        }
    }

    #[test]
    fn credential_parts_are_found_and_registered_decoded_too() {
        use UrlSecretKind as K;
        let kinds = |url| {
            url_secret_parts(url)
                .into_iter()
                .map(|p| (p.kind, p.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds("smtp://u:p%40ss-word@mail:587/?from=a@b&to=c@d"),
            [(K::UserPassword, "p%40ss-word")]
        );
        assert_eq!(
            kinds("telegram://123:tok@telegram?chats=@mychan"),
            [(K::UserPassword, "tok")]
        );
        assert_eq!(kinds("telegram://tok1@telegram"), [(K::UserToken, "tok1")]);
        assert_eq!(
            kinds("https://h/hook?token=abc&status=up&x=Rk7x9QaB2c"),
            [(K::QueryToken, "abc"), (K::QueryToken, "Rk7x9QaB2c")]
        );
        assert_eq!(
            kinds("gotify://g.lan/AbCdEfG12345"),
            [(K::PathToken, "AbCdEfG12345")]
        );
        assert!(kinds("https://ntfy.sh/backups?scheme=http").is_empty());
        assert!(kinds("https://admin@h/").len() == 1);
        // Outside notification URLs only passwords and named query keys
        // are credentials.
        let anywhere = |url| {
            url_secret_parts(url)
                .iter()
                .any(|p| p.kind.is_credential_anywhere(p.key))
        };
        assert!(anywhere("https://admin:pw12@h/health"));
        assert!(anywhere("https://h/health?api_key=x1"));
        assert!(!anywhere("https://admin@h/health"));
        assert!(!anywhere("https://h/api/v1/status2024?format=json"));

        register_url_secrets("smtp://u:pa%40ss-S3NT@mail:587/");
        assert_eq!(
            crate::redact::scrub("auth pa@ss-S3NT / pa%40ss-S3NT"),
            "auth *** / ***"
        );
    }

    #[test]
    fn secret_urls_print_redacted() {
        let u = SecretUrl::new("https://ntfy.sh/homelab-x7f9q2k1");
        assert_eq!(
            format!("{u} {u:?}"),
            "https://ntfy.sh/*** \"https://ntfy.sh/***\""
        );
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            "\"https://ntfy.sh/***\""
        );
        assert_eq!(u.expose(), "https://ntfy.sh/homelab-x7f9q2k1");
        register_url_secrets(u.expose());
        assert_eq!(
            crate::redact::scrub("topic homelab-x7f9q2k1 failed"),
            "topic *** failed"
        );
    }
}
