//! `http:` – the read-only status page, its JSON API and `/metrics`
//! (docs/status-page.md). Off unless `listen` is set.

use super::secrets::{CommandSpec, Secret, SecretSource};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `ADDRESS:PORT` (`127.0.0.1:8321`, `[::1]:8321`, `0.0.0.0:8321`) or a
    /// bare port, which binds 127.0.0.1. Unset: no web server.
    pub listen: Option<String>,
    pub auth: HttpAuthConfig,
}

/// A bearer token and/or basic auth (`username` + a password), each a
/// secret like the others (inline, `env:`, `credential:`, `_file`,
/// `_command`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpAuthConfig {
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub token_command: Option<CommandSpec>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<CommandSpec>,
}

impl HttpAuthConfig {
    pub fn token_source(&self) -> Option<SecretSource> {
        SecretSource::from_keys(
            self.token.as_ref(),
            self.token_file.as_ref(),
            self.token_command.as_ref(),
        )
    }

    pub fn password_source(&self) -> Option<SecretSource> {
        SecretSource::from_keys(
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.password_command.as_ref(),
        )
    }

    /// Whether any authentication is configured.
    pub fn is_set(&self) -> bool {
        self.token_source().is_some() || self.password_source().is_some()
    }
}

/// Parse a `listen` value: `ADDRESS:PORT`, `[V6]:PORT`, or a bare port
/// (127.0.0.1).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("'{s}' is not ADDRESS:PORT (like 127.0.0.1:8321, [::1]:8321) or a port number")
    })
}
