//! Building clients from the configuration (`global.proxmox`,
//! `global.backup.proxmox_backup_server`): secrets resolved (and registered
//! for redaction), TLS mode chosen, warnings collected for the caller to
//! log on every run (`insecure: true`).

use super::client::{Auth, Flavor, HttpOptions, HttpTransport};
use super::error::{PveError, PveResult};
use super::local::PveshTransport;
use super::pbs::Pbs;
use super::tls::{parse_fingerprint, TlsMode};
use super::{Pve, Transport};
use crate::config::{ProxmoxBackupServerConfig, ProxmoxConfig};

/// A PVE client for `global.proxmox`, and warnings to log.
pub fn pve_from_config(p: &ProxmoxConfig) -> PveResult<(Pve, Vec<String>)> {
    let (pve, warnings) = pve_transport(p)?;
    Ok((with_waits(pve, p), warnings))
}

/// The configured bounds of lock and task waits.
fn with_waits(mut pve: Pve, p: &ProxmoxConfig) -> Pve {
    let secs = std::time::Duration::from_secs;
    if let Some(s) = p.lock_wait_seconds {
        pve.lock_wait = secs(s);
    }
    if let Some(s) = p.task_timeout_seconds {
        pve.task_timeout = secs(s);
    }
    if let Some(s) = p.backup_timeout_seconds {
        pve.backup_timeout = secs(s);
    }
    pve
}

fn pve_transport(p: &ProxmoxConfig) -> PveResult<(Pve, Vec<String>)> {
    let mut warnings = Vec::new();
    if p.local && p.api_url.is_none() {
        return Ok((Pve::new(Box::new(PveshTransport::default())), warnings));
    }
    let url = p
        .api_url
        .as_deref()
        .ok_or_else(|| PveError::Config("global.proxmox.api_url is not set".into()))?;
    let tls = tls_mode(
        &p.fingerprint,
        p.ca_file.as_deref(),
        p.insecure,
        &mut warnings,
        url,
    )?;
    let auth = if let (Some(id), Some(src)) = (&p.token_id, p.token_secret_source()) {
        Auth::Token {
            id: id.clone(),
            secret: src.resolve().map_err(|e| PveError::Config(e.to_string()))?,
        }
    } else if let (Some(user), Some(src)) = (&p.username, p.password_source()) {
        Auth::Password {
            username: user.clone(),
            password: src.resolve().map_err(|e| PveError::Config(e.to_string()))?,
        }
    } else {
        return Err(PveError::Config(
            "global.proxmox: set token_id + token_secret(_file|_command), or username + password(_file|_command)".into(),
        ));
    };
    let t = HttpTransport::new(url, Flavor::Pve, &tls, auth, HttpOptions::default())?;
    Ok((Pve::new(Box::new(t)), warnings))
}

/// A PBS API client for `global.backup.proxmox_backup_server`.
pub fn pbs_from_config(p: &ProxmoxBackupServerConfig) -> PveResult<(Pbs, Vec<String>)> {
    let mut warnings = Vec::new();
    let server = p.server.as_deref().ok_or_else(|| {
        PveError::Config("global.backup.proxmox_backup_server.server is not set".into())
    })?;
    let url = if server.contains(':')
        && !server.starts_with('[')
        && server.parse::<std::net::Ipv6Addr>().is_ok()
    {
        format!("https://[{server}]:{}", p.port)
    } else {
        format!("https://{server}:{}", p.port)
    };
    let tls = tls_mode(&p.fingerprint, None, !p.verify_ssl, &mut warnings, &url)?;
    let user = p.username.clone().ok_or_else(|| {
        PveError::Config("global.backup.proxmox_backup_server.username is not set".into())
    })?;
    let secret = p
        .password_source()
        .ok_or_else(|| {
            PveError::Config(
                "global.backup.proxmox_backup_server: set password(_file|_command)".into(),
            )
        })?
        .resolve()
        .map_err(|e| PveError::Config(e.to_string()))?;
    let auth = if user.contains('!') {
        Auth::Token { id: user, secret }
    } else {
        Auth::Password {
            username: user,
            password: secret,
        }
    };
    let t: Box<dyn Transport> = Box::new(HttpTransport::new(
        &url,
        Flavor::Pbs,
        &tls,
        auth,
        HttpOptions::default(),
    )?);
    Ok((Pbs::new(t), warnings))
}

fn tls_mode(
    fingerprints: &[String],
    ca_file: Option<&std::path::Path>,
    insecure: bool,
    warnings: &mut Vec<String>,
    url: &str,
) -> PveResult<TlsMode> {
    if !fingerprints.is_empty() {
        let pins = fingerprints
            .iter()
            .map(|f| parse_fingerprint(f))
            .collect::<PveResult<Vec<_>>>()?;
        return Ok(TlsMode::Pinned(pins));
    }
    if let Some(ca) = ca_file {
        return Ok(TlsMode::CaFile(ca.to_path_buf()));
    }
    if insecure {
        warnings.push(format!(
            "TLS verification is OFF for {url} (insecure: true): anyone on the network path can read the API credentials. Pin the certificate instead (fingerprint: from the node's Certificates page)"
        ));
        return Ok(TlsMode::Insecure);
    }
    Ok(TlsMode::WebPki)
}
