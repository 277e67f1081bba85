//! Health checks (`services[].health_checks`, and the same shape under
//! `services[].restore_testing.health_checks`). One flat struct for every
//! check type; validation says which keys a type needs and which it ignores.

use super::secrets::CommandSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckType {
    /// GET (or `method`) a URL; `expected_status`, `body_contains`, ...
    #[default]
    Http,
    /// Connect to `host:port`.
    Tcp,
    /// Resolve `hostname`.
    Dns,
    /// A process named `process` runs (or the pid in `pid_file` is alive).
    Process,
    /// A Docker container named `container` is running (and healthy).
    Container,
    /// Every container of the Docker Compose project `compose_project` is
    /// running (and healthy), and there is at least one.
    Compose,
    /// `command` exits 0.
    Command,
    /// `command` (a database client query such as `mysql -e 'SELECT 1'`)
    /// exits 0.
    Database,
    /// The executable `script` exits 0.
    Custom,
}

impl HealthCheckType {
    pub fn as_str(&self) -> &'static str {
        match self {
            HealthCheckType::Http => "http",
            HealthCheckType::Tcp => "tcp",
            HealthCheckType::Dns => "dns",
            HealthCheckType::Process => "process",
            HealthCheckType::Container => "container",
            HealthCheckType::Compose => "compose",
            HealthCheckType::Command => "command",
            HealthCheckType::Database => "database",
            HealthCheckType::Custom => "custom",
        }
    }

    /// The type-specific keys a check of this type accepts.
    pub(crate) fn keys(&self) -> &'static [&'static str] {
        match self {
            HealthCheckType::Http => &[
                "url",
                "method",
                "expected_status",
                "body_contains",
                "body_regex",
                "max_latency_ms",
                "headers",
                "follow_redirects",
                "tls_expiry_warn_days",
            ],
            HealthCheckType::Tcp => &["host", "port", "max_latency_ms"],
            HealthCheckType::Dns => &["hostname", "max_latency_ms"],
            HealthCheckType::Process => &["process", "pid_file"],
            HealthCheckType::Container => &["container"],
            HealthCheckType::Compose => &["compose_project"],
            HealthCheckType::Command | HealthCheckType::Database => &["command"],
            HealthCheckType::Custom => &["script"],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Required.
    #[serde(rename = "type")]
    pub check_type: HealthCheckType,
    /// Shown in reports; defaults to the type and target.
    pub name: Option<String>,
    // http
    pub url: Option<String>,
    pub method: String,
    /// Expected HTTP status (default: any 2xx).
    pub expected_status: Option<u16>,
    pub body_contains: Option<String>,
    pub body_regex: Option<String>,
    /// Slower than this counts as a failure.
    pub max_latency_ms: Option<u64>,
    pub headers: BTreeMap<String, String>,
    pub follow_redirects: bool,
    /// Warn when the certificate expires within this many days.
    pub tls_expiry_warn_days: Option<u32>,
    // tcp
    pub host: Option<String>,
    pub port: Option<u16>,
    // dns
    pub hostname: Option<String>,
    // process
    pub process: Option<String>,
    pub pid_file: Option<PathBuf>,
    // container
    pub container: Option<String>,
    // compose
    pub compose_project: Option<String>,
    // command / database
    pub command: Option<CommandSpec>,
    // custom
    pub script: Option<PathBuf>,
    /// Default: `monitoring.timeout_seconds`.
    pub timeout_seconds: Option<u64>,
    /// Another check's name in this service, or another service's name:
    /// while the parent is down this check's failures are not alerted.
    pub parent: Option<String>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        Self {
            check_type: HealthCheckType::Http,
            name: None,
            url: None,
            method: "GET".into(),
            expected_status: None,
            body_contains: None,
            body_regex: None,
            max_latency_ms: None,
            headers: BTreeMap::new(),
            follow_redirects: true,
            tls_expiry_warn_days: None,
            host: None,
            port: None,
            hostname: None,
            process: None,
            pid_file: None,
            container: None,
            compose_project: None,
            command: None,
            script: None,
            timeout_seconds: None,
            parent: None,
        }
    }
}

impl HealthCheckConfig {
    /// The keys every check has, whatever its type.
    pub const COMMON_KEYS: &'static [&'static str] = &["type", "name", "timeout_seconds", "parent"];

    /// The type-specific keys given a non-default value (validation
    /// rejects those the check's type does not use). Judged by value, not
    /// by presence in the YAML, so `config show` output (which prints every
    /// key) loads back.
    pub(crate) fn set_keys(&self) -> Vec<&'static str> {
        let set = [
            ("url", self.url.is_some()),
            ("method", !self.method.eq_ignore_ascii_case("GET")),
            ("expected_status", self.expected_status.is_some()),
            ("body_contains", self.body_contains.is_some()),
            ("body_regex", self.body_regex.is_some()),
            ("max_latency_ms", self.max_latency_ms.is_some()),
            ("headers", !self.headers.is_empty()),
            ("follow_redirects", !self.follow_redirects),
            ("tls_expiry_warn_days", self.tls_expiry_warn_days.is_some()),
            ("host", self.host.is_some()),
            ("port", self.port.is_some()),
            ("hostname", self.hostname.is_some()),
            ("process", self.process.is_some()),
            ("pid_file", self.pid_file.is_some()),
            ("container", self.container.is_some()),
            ("compose_project", self.compose_project.is_some()),
            ("command", self.command.is_some()),
            ("script", self.script.is_some()),
        ];
        set.into_iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }

    /// The check's display name: `name`, else `type:target`.
    pub fn display_name(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        let target = match self.check_type {
            HealthCheckType::Http => self.url.clone(),
            HealthCheckType::Tcp => Some(format!(
                "{}:{}",
                self.host.as_deref().unwrap_or(""),
                self.port.unwrap_or(0)
            )),
            HealthCheckType::Dns => self.hostname.clone(),
            HealthCheckType::Process => self
                .process
                .clone()
                .or_else(|| self.pid_file.as_ref().map(|p| p.display().to_string())),
            HealthCheckType::Container => self.container.clone(),
            HealthCheckType::Compose => self.compose_project.clone(),
            HealthCheckType::Command | HealthCheckType::Database => {
                self.command.as_ref().map(|c| c.program().to_string())
            }
            HealthCheckType::Custom => self.script.as_ref().map(|p| p.display().to_string()),
        };
        match target {
            Some(t) => format!("{}:{t}", self.check_type.as_str()),
            None => self.check_type.as_str().to_string(),
        }
    }
}
