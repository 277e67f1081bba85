//! Dead-man pings per workflow run: healthchecks.io (`/start` when the run
//! begins, `/<exit code>` when it ends, `/fail` when it could not run, all
//! sharing one `?rid=<uuid>`, with the run's log tail (at most 10 kB) as
//! the body) and Uptime Kuma push monitors
//! (`/api/push/<token>?status=up|down&msg=...&ping=<ms>`).
//!
//! A ping that fails is warned about and never changes the exit code.

use super::format::HttpRequest;
use super::transport::http_with_retry;
use super::{block_on, Channel, DeliveryReport, Policy};
use crate::config::{ChannelType, Config};
use std::time::Instant;

/// Most bytes of log tail sent as a ping body (healthchecks.io keeps 10 kB).
pub const LOG_TAIL_MAX: usize = 10_000;

struct Target {
    name: String,
    kind: ChannelType,
    url: String,
}

/// The ping channels of one run.
pub struct Pinger {
    targets: Vec<Target>,
    /// Ties together the pings of one run (healthchecks.io `rid`).
    pub rid: String,
    started: Instant,
    dry_run: bool,
    policy: Policy,
}

/// `https://hc-ping.com/UUID/` → `https://hc-ping.com/UUID` (no query).
fn base(url: &str) -> String {
    url.split(['?', '#'])
        .next()
        .unwrap_or(url)
        .trim_end_matches('/')
        .to_string()
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Pinger {
    /// The ping channels watching `workflow`; sends healthchecks.io `/start`.
    pub fn start(cfg: &Config, workflow: &str, dry_run: bool) -> Pinger {
        let targets: Vec<Target> = if cfg.notifications.enabled {
            cfg.notifications
                .channels
                .iter()
                .filter_map(Channel::new)
                .filter(|c| c.kind.is_ping() && c.cfg.enabled)
                .filter(|c| {
                    c.cfg.workflows.is_empty() || c.cfg.workflows.iter().any(|w| w == workflow)
                })
                .filter_map(|c| {
                    Some(Target {
                        name: c.cfg.name.clone(),
                        kind: c.kind,
                        url: c.cfg.url.as_ref()?.expose().to_string(),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let p = Pinger {
            targets,
            rid: uuid::Uuid::new_v4().to_string(),
            started: Instant::now(),
            dry_run,
            policy: Policy::from_env(),
        };
        let reqs: Vec<(String, HttpRequest)> = p
            .targets
            .iter()
            .filter(|t| t.kind == ChannelType::Healthchecks)
            .map(|t| (t.name.clone(), p.hc_ping(t, "start", None)))
            .collect();
        p.send_all(reqs, "start");
        p
    }

    /// The run ended with `exit_code`; `log_tail` is the end of its log.
    pub fn finish(&self, exit_code: u8, log_tail: &str, summary: &str) {
        let what = if exit_code == 0 {
            "success"
        } else {
            "exit code"
        };
        self.end(
            &exit_code.to_string(),
            tail(log_tail),
            exit_code == 0,
            summary,
            what,
        );
    }

    /// The run could not run at all (configuration, lock, script compile).
    pub fn fail(&self, message: &str) {
        self.end("fail", tail(message), false, message, "fail");
    }

    /// A healthchecks.io ping: POST `<base>/<path>?rid=<rid>`, with `body`
    /// (if any) as plain text.
    fn hc_ping(&self, t: &Target, path: &str, body: Option<String>) -> HttpRequest {
        let url = format!("{}/{path}?rid={}", base(&t.url), self.rid);
        match body {
            None => HttpRequest {
                method: "POST",
                url,
                headers: vec![],
                body: vec![],
            },
            Some(b) => HttpRequest {
                method: "POST",
                url,
                headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
                body: b.into_bytes(),
            },
        }
    }

    /// The end-of-run ping to every target: healthchecks.io `<hc_path>` with
    /// `body`, Uptime Kuma up (`ok`) or down with `msg`.
    fn end(&self, hc_path: &str, body: String, ok: bool, msg: &str, what: &str) {
        let ms = self.started.elapsed().as_millis();
        let reqs = self
            .targets
            .iter()
            .map(|t| {
                let req = match t.kind {
                    ChannelType::Healthchecks => self.hc_ping(t, hc_path, Some(body.clone())),
                    _ => kuma(&t.url, ok, msg, ms),
                };
                (t.name.clone(), req)
            })
            .collect();
        self.send_all(reqs, what);
    }

    fn send_all(&self, reqs: Vec<(String, HttpRequest)>, what: &str) {
        if reqs.is_empty() {
            return;
        }
        if self.dry_run {
            for (name, _) in &reqs {
                tracing::info!("[dry-run] would ping {name} ({what})");
            }
            return;
        }
        let policy = self.policy;
        let results = block_on(async move {
            let futs = reqs.into_iter().map(|(name, r)| async move {
                let (_, res) = http_with_retry(&r, &policy).await;
                (name, res)
            });
            futures_join_all(futs).await
        });
        for (name, res) in results {
            match res {
                Ok(()) => tracing::debug!("pinged {name} ({what})"),
                Err(e) => tracing::warn!(
                    "dead-man ping to {name} ({what}) failed: {}",
                    crate::redact::scrub(&e)
                ),
            }
        }
    }
}

/// Run futures concurrently and collect their results in order.
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Uptime Kuma push: `GET <base>?status=up|down&msg=...&ping=<ms>`.
fn kuma(url: &str, up: bool, msg: &str, ms: u128) -> HttpRequest {
    let msg: String = crate::redact::scrub(msg).chars().take(200).collect();
    HttpRequest {
        method: "GET",
        url: format!(
            "{}?status={}&msg={}&ping={ms}",
            base(url),
            if up { "up" } else { "down" },
            enc(&msg)
        ),
        headers: vec![],
        body: vec![],
    }
}

/// The last [`LOG_TAIL_MAX`] bytes of `log` (at a character boundary),
/// secrets masked.
pub fn tail(log: &str) -> String {
    let log = crate::redact::scrub(log);
    if log.len() <= LOG_TAIL_MAX {
        return log.into_owned();
    }
    let mut start = log.len() - LOG_TAIL_MAX;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_string()
}

/// `notify test NAME` for a ping channel: a success ping.
pub(crate) fn test_ping(ch: &Channel, policy: &Policy) -> DeliveryReport {
    let url = ch
        .cfg
        .url
        .as_ref()
        .map(|u| u.expose().to_string())
        .unwrap_or_default();
    let req = match ch.kind {
        ChannelType::Healthchecks => HttpRequest {
            method: "POST",
            url: base(&url),
            headers: vec![],
            body: b"homelab-autopilot notify test".to_vec(),
        },
        _ => kuma(&url, true, "homelab-autopilot notify test", 0),
    };
    let started = Instant::now();
    let (attempts, res) = block_on(http_with_retry(&req, policy));
    DeliveryReport {
        channel: ch.cfg.name.clone(),
        channel_type: ch.kind.as_str().into(),
        status: if res.is_ok() {
            super::DeliveryStatus::Sent
        } else {
            super::DeliveryStatus::Failed
        },
        events: vec!["test".into()],
        attempts,
        duration_ms: started.elapsed().as_millis() as u64,
        error: res.err().map(|e| crate::redact::scrub(&e).into_owned()),
        fallback: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kuma_push_url_replaces_the_query_and_encodes_the_message() {
        let r = kuma(
            "https://kuma.lan/api/push/AbC?status=up&msg=OK&ping=",
            false,
            "2 of 3 failed & more",
            1500,
        );
        assert_eq!(
            r.url,
            "https://kuma.lan/api/push/AbC?status=down&msg=2+of+3+failed+%26+more&ping=1500"
        );
    }

    #[test]
    fn log_tail_is_cut_at_a_character_boundary() {
        let log = "é".repeat(LOG_TAIL_MAX);
        let t = tail(&log);
        assert!(t.len() <= LOG_TAIL_MAX && t.chars().all(|c| c == 'é'));
    }
}
