//! Monitoring: the health checks of the configured services (run
//! concurrently, each with its own timeout), the persisted alert state of
//! every check (UP/DOWN with `fail_after` / `recover_after`, reminders),
//! parent suppression, maintenance windows, uptime history, and host
//! resource warnings. `scripts/monitor.rhai` drives one cycle through the
//! `monitor::` primitives; `status` reads the state back.

pub mod alert;
pub mod checks;
pub mod resources;
pub mod tls;

use crate::config::{
    Config, EventType, HealthCheckConfig, HealthCheckType, Paths, ServiceConfig, ServiceType,
};
use crate::state::{CheckState, CheckStatus, Store};
use alert::{Alert, AlertPolicy};
use checks::{CheckResult, CheckSpec};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The checks of these services: every `health_checks` entry; for a
/// `type: docker` service a `container` check of its container, for a
/// Compose project (`docker_compose`, `nginx_proxy_manager`) a `compose`
/// check of its project, unless its health_checks have one of that type;
/// for an `nginx_proxy_manager` service without health_checks the checks
/// of its admin API and its proxy ([`npm_checks`]); plus an `external`
/// HTTP check of `external_url`.
pub fn specs_for(cfg: &Config, services: &[&ServiceConfig]) -> Vec<CheckSpec> {
    let default_timeout = cfg.monitoring.timeout_seconds.max(1);
    let mut out = Vec::new();
    for svc in services {
        let has = |t| svc.health_checks.iter().any(|c| c.check_type == t);
        let defaults = match svc.service_type {
            ServiceType::NginxProxyManager if svc.health_checks.is_empty() => npm_checks(svc),
            _ => Vec::new(),
        };
        let implicit = match svc.service_type {
            ServiceType::Docker if !has(HealthCheckType::Container) => {
                svc.container.as_ref().map(|name| HealthCheckConfig {
                    check_type: HealthCheckType::Container,
                    container: Some(name.clone()),
                    ..Default::default()
                })
            }
            t if t.is_compose() && !has(HealthCheckType::Compose) => {
                compose_project(svc).map(|p| HealthCheckConfig {
                    check_type: HealthCheckType::Compose,
                    compose_project: Some(p),
                    ..Default::default()
                })
            }
            _ => None,
        };
        let checks = svc.health_checks.iter().chain(&defaults);
        for c in checks.chain(implicit.as_ref()) {
            let name = check_name(c);
            out.push(CheckSpec {
                id: format!("{}/{name}", svc.name),
                service: svc.name.clone(),
                name,
                kind: c.check_type.as_str().into(),
                check: c.clone(),
                timeout: Duration::from_secs(c.timeout_seconds.unwrap_or(default_timeout)),
            });
        }
        if let Some(url) = &svc.external_url {
            out.push(CheckSpec {
                id: format!("{}/external", svc.name),
                service: svc.name.clone(),
                name: "external".into(),
                kind: "external".into(),
                check: HealthCheckConfig {
                    check_type: HealthCheckType::Http,
                    url: Some(url.clone()),
                    ..Default::default()
                },
                timeout: Duration::from_secs(default_timeout),
            });
        }
    }
    out
}

/// Nginx Proxy Manager's admin API answers `GET /api/` with its status.
pub const NPM_ADMIN_URL: &str = "http://127.0.0.1:81/api/";
/// Nginx Proxy Manager's proxy (its default site answers 200).
pub const NPM_PROXY_URL: &str = "http://127.0.0.1:80/";

/// The default checks of an `nginx_proxy_manager` service: `admin`, its
/// admin API (`admin_url`) answering 2xx with `"status":"OK"`, and
/// `proxy`, the proxy (`proxy_url`) answering 2xx.
pub fn npm_checks(svc: &ServiceConfig) -> Vec<HealthCheckConfig> {
    let admin = svc.admin_url.as_deref().unwrap_or(NPM_ADMIN_URL);
    let proxy = svc.proxy_url.as_deref().unwrap_or(NPM_PROXY_URL);
    vec![
        HealthCheckConfig {
            check_type: HealthCheckType::Http,
            name: Some("admin".into()),
            url: Some(admin.to_string()),
            body_regex: Some(r#""status"\s*:\s*"OK""#.into()),
            ..Default::default()
        },
        HealthCheckConfig {
            check_type: HealthCheckType::Http,
            name: Some("proxy".into()),
            url: Some(proxy.to_string()),
            ..Default::default()
        },
    ]
}

/// A compose service's project: `compose_project`, else what Compose
/// derives from the compose file's directory (lower case, only
/// `[a-z0-9_-]`, starting with a letter or digit).
pub fn compose_project(svc: &ServiceConfig) -> Option<String> {
    if let Some(p) = &svc.compose_project {
        return Some(p.clone());
    }
    let dir = svc.compose_file.as_ref()?.parent()?.file_name()?.to_str()?;
    let name: String = dir
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(*c))
        .skip_while(|c| !c.is_ascii_alphanumeric())
        .collect();
    (!name.is_empty()).then_some(name)
}

/// The check's name: `name`, else `type:target` with an HTTP URL's
/// credentials and tokens masked (the name ends up in state rows, logs and
/// notifications).
pub fn check_name(c: &HealthCheckConfig) -> String {
    match (&c.name, c.check_type, &c.url) {
        (None, HealthCheckType::Http, Some(url)) => {
            format!("http:{}", crate::config::redact_url(url))
        }
        _ => c.display_name(),
    }
}

/// An alert to send (handed to scripts as a map; `event` is the
/// notification type).
#[derive(Debug, Clone, Serialize)]
pub struct AlertInfo {
    /// Serialised as its name (`service_down`, ...).
    pub event: EventType,
    pub service: String,
    pub check: String,
    pub summary: String,
    pub reminder: bool,
    /// Checks whose alerts were held back because this one is down.
    pub suppressed: Vec<String>,
    pub message: String,
    pub since: i64,
}

/// Why a service is silenced now, if it is: a configured maintenance
/// window, or this tool's backup/update of it (its workflow lock is held).
pub fn maintenance(
    cfg: &Config,
    paths: &Paths,
    service: &str,
    now: chrono::DateTime<chrono::Local>,
) -> Option<String> {
    for w in &cfg.monitoring.maintenance_windows {
        if !(w.services.is_empty() || w.services.iter().any(|s| s == service)) {
            continue;
        }
        let Some(sched) = &w.schedule else { continue };
        let open_from = now - chrono::Duration::minutes(w.duration_minutes as i64);
        if let Some(start) = sched.next_after(open_from - chrono::Duration::seconds(1)) {
            if start <= now {
                return Some(format!("maintenance window {}", w.name));
            }
        }
    }
    for wf in ["backup", "update"] {
        if workflow_running(paths, wf) {
            return Some(format!("the {wf} workflow is running"));
        }
    }
    None
}

/// Whether another process holds `workflow`'s lock (probed without
/// creating a lock file).
fn workflow_running(paths: &Paths, workflow: &str) -> bool {
    if !paths.lock_dir.join(format!("{workflow}.lock")).exists() {
        return false;
    }
    matches!(
        crate::lock::acquire(&paths.lock_dir, workflow),
        Err(crate::Error::Locked { .. })
    )
}

fn event_for(kind: &str, alert: Alert) -> EventType {
    match (kind, alert) {
        (_, Alert::Recovered) => EventType::ServiceRecovered,
        ("external", _) => EventType::ExternalAccessFailed,
        _ => EventType::ServiceDown,
    }
}

/// Apply one cycle's results to the persisted state; returns the alerts to
/// send. A dry run computes the same alerts and writes nothing.
pub fn evaluate(
    cfg: &Config,
    paths: &Paths,
    store: Option<&Store>,
    results: &[CheckResult],
    dry_run: bool,
) -> Vec<AlertInfo> {
    let now = chrono::Utc::now().timestamp();
    let local_now = chrono::Local::now();
    let m = &cfg.monitoring;
    let policy = AlertPolicy {
        fail_after: m.fail_after,
        recover_after: m.recover_after,
        remind_every_secs: m.remind_every_minutes as i64 * 60,
    };
    // Pass 1: every check's new state and the alert it asks for.
    let saved: HashMap<String, CheckState> = store
        .and_then(|s| s.check_states().ok())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.id.clone(), c))
        .collect();
    let mut stepped: Vec<(CheckState, Option<Alert>)> = results
        .iter()
        .map(|r| {
            let prev = saved
                .get(&r.id)
                .cloned()
                .unwrap_or_else(|| alert::initial(&r.id, &r.service, &r.name, now));
            alert::step(prev, r.ok, &r.message, now, &policy)
        })
        .collect();
    let down: HashMap<String, bool> = stepped
        .iter()
        .map(|(s, _)| (s.id.clone(), s.status == CheckStatus::Down))
        .collect();
    // A parent service is down when one of its checks is, in this cycle
    // or (not checked now) as saved.
    let service_down = |svc: &str| -> bool {
        stepped_down_service(&down, svc)
            || saved.values().any(|c| {
                c.service == svc && c.status == CheckStatus::Down && !down.contains_key(&c.id)
            })
    };
    // Pass 2: silence (maintenance, parent down), commit, collect.
    let mut silenced_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut maint_cache: HashMap<String, Option<String>> = HashMap::new();
    let mut alerts = Vec::new();
    for (i, r) in results.iter().enumerate() {
        let (state, want) = stepped[i].clone();
        let mut silenced = false;
        if matches!(want, Some(Alert::Down) | Some(Alert::Reminder)) {
            let maint = maint_cache
                .entry(r.service.clone())
                .or_insert_with(|| maintenance(cfg, paths, &r.service, local_now))
                .clone();
            if let Some(why) = maint {
                tracing::info!("{} is down during {why}: not alerted", r.id);
                silenced = true;
            } else if let Some(p) = &r.parent {
                let parent_id = format!("{}/{p}", r.service);
                let parent_down = match down.get(&parent_id) {
                    Some(d) => *d,
                    None => service_down(p),
                };
                if parent_down {
                    let key = if down.contains_key(&parent_id) {
                        parent_id
                    } else {
                        p.clone()
                    };
                    tracing::info!(
                        "{} is down but its parent {key} is down too: not alerted",
                        r.id
                    );
                    silenced_by.entry(key).or_default().push(r.id.clone());
                    silenced = true;
                }
            }
        }
        let (state, alert) = alert::commit(state, want, silenced, now);
        stepped[i].0 = state.clone();
        if let Some(a) = alert {
            let event = event_for(&r.kind, a);
            let what = match a {
                Alert::Down => "is DOWN",
                Alert::Reminder => "is still DOWN",
                Alert::Recovered => "has RECOVERED",
            };
            alerts.push(AlertInfo {
                event,
                service: r.service.clone(),
                check: r.name.clone(),
                summary: format!("{} ({}) {what}: {}", r.service, r.name, r.message),
                reminder: a == Alert::Reminder,
                suppressed: Vec::new(),
                message: r.message.clone(),
                since: state.since,
            });
        }
    }
    // Children held back by a parent are named in the parent's alert.
    for a in &mut alerts {
        let id = format!("{}/{}", a.service, a.check);
        for key in [&id, &a.service] {
            if let Some(children) = silenced_by.get(key) {
                a.suppressed.extend(children.iter().cloned());
            }
        }
        if !a.suppressed.is_empty() {
            a.summary.push_str(&format!(
                " (also down, not alerted separately: {})",
                a.suppressed.join(", ")
            ));
        }
    }
    if let (Some(s), false) = (store, dry_run) {
        let cycle = chrono::Utc::now().timestamp_millis();
        let rows: Vec<_> = results
            .iter()
            .zip(&stepped)
            .map(|(r, (st, _))| (st.clone(), r.ok, Some(r.latency_ms)))
            .collect();
        if let Err(e) = s.save_check_results(cycle, &rows) {
            tracing::warn!("could not save the monitor state: {e}");
        }
    }
    alerts
}

fn stepped_down_service(down: &HashMap<String, bool>, svc: &str) -> bool {
    let prefix = format!("{svc}/");
    down.iter().any(|(id, d)| *d && id.starts_with(&prefix))
}

/// One service's monitor state for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub service: String,
    /// `up`, `down` or `unknown` (the worst of its checks).
    pub state: String,
    pub since: Option<i64>,
    pub uptime_24h: Option<f64>,
    pub uptime_7d: Option<f64>,
    pub uptime_30d: Option<f64>,
    pub checks: Vec<CheckState>,
}

pub fn service_status(store: &Store, service: &str) -> crate::Result<ServiceStatus> {
    let checks: Vec<CheckState> = store.service_check_states(service)?;
    let now = chrono::Utc::now().timestamp();
    let state = if checks.iter().any(|c| c.status == CheckStatus::Down) {
        CheckStatus::Down
    } else if !checks.is_empty() && checks.iter().all(|c| c.status == CheckStatus::Up) {
        CheckStatus::Up
    } else {
        CheckStatus::Unknown
    };
    let since = checks
        .iter()
        .filter(|c| c.status == state)
        .map(|c| c.since)
        .max();
    Ok(ServiceStatus {
        service: service.into(),
        state: state.as_str().into(),
        since,
        uptime_24h: store.uptime(service, now - 86_400)?,
        uptime_7d: store.uptime(service, now - 7 * 86_400)?,
        uptime_30d: store.uptime(service, now - 30 * 86_400)?,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_project_names_follow_compose() {
        let svc = |file: &str, project: Option<&str>| ServiceConfig {
            service_type: ServiceType::DockerCompose,
            compose_file: Some(file.into()),
            compose_project: project.map(str::to_string),
            ..Default::default()
        };
        let p = |file, project| compose_project(&svc(file, project));
        assert_eq!(
            p("/opt/Web App.v2/docker-compose.yml", None).as_deref(),
            Some("webappv2")
        );
        assert_eq!(
            p("/srv/_media-stack/compose.yaml", None).as_deref(),
            Some("media-stack")
        );
        assert_eq!(
            p("/srv/x/compose.yaml", Some("given")).as_deref(),
            Some("given")
        );
        assert_eq!(p("/srv/.../compose.yaml", None), None);
    }
}
