//! Validation of `services:`: names, per-type keys, references to
//! destinations and other services, health checks.

use super::{At, Validator};
use crate::config::ids::*;
use crate::config::spanned::did_you_mean;
use crate::config::{
    BackupConsistency, Config, HealthCheckConfig, HealthCheckType, ServiceConfig, ServiceType,
};
use std::collections::HashSet;

pub(super) fn unknown_service(name: &str, names: &HashSet<&str>) -> String {
    let mut list: Vec<&str> = names.iter().copied().collect();
    list.sort_unstable();
    let mut m = format!("unknown service '{name}'");
    if let Some(s) = did_you_mean(name, &list) {
        m.push_str(&format!(" (did you mean '{s}'?)"));
    }
    m
}

/// Service keys that only some types accept, and whether `s` sets them
/// (by value, so `config show` output with `vmid: null` loads back).
fn typed_service_keys(s: &ServiceConfig) -> [(&'static str, bool, &'static [ServiceType]); 10] {
    use ServiceType::*;
    [
        ("vmid", s.vmid.is_some(), &[Vm, Lxc]),
        ("node", s.node.is_some(), &[Vm, Lxc]),
        (
            "compose_file",
            s.compose_file.is_some(),
            &[DockerCompose, NginxProxyManager],
        ),
        (
            "compose_project",
            s.compose_project.is_some(),
            &[DockerCompose, NginxProxyManager],
        ),
        ("container", s.container.is_some(), &[Docker]),
        (
            "volumes",
            !s.volumes.is_empty(),
            &[Docker, DockerCompose, NginxProxyManager],
        ),
        ("unit", s.unit.is_some(), &[Systemd]),
        ("config_file", s.config_file.is_some(), &[Caddy]),
        (
            "admin_url",
            s.admin_url.is_some(),
            &[Caddy, NginxProxyManager],
        ),
        ("proxy_url", s.proxy_url.is_some(), &[NginxProxyManager]),
    ]
}

pub(super) fn validate_service(
    v: &Validator,
    at: &At,
    s: &ServiceConfig,
    cfg: &Config,
    names: &HashSet<&str>,
) {
    let t = s.service_type;
    if s.name.is_empty() {
        v.required_str(at, "name", &s.name);
    } else {
        v.ident(
            &at.key("name"),
            &s.name,
            is_name,
            "service name (expected [a-z0-9][a-z0-9_.-]{0,62})",
        );
    }
    for (key, set, types) in typed_service_keys(s) {
        if set && !types.contains(&t) {
            let list: Vec<&str> = types.iter().map(ServiceType::as_str).collect();
            v.err(
                &at.key(key),
                format!(
                    "'{key}' applies only to type {}, not {}",
                    list.join("/"),
                    t.as_str()
                ),
            );
        }
    }
    match t {
        ServiceType::Vm | ServiceType::Lxc => {
            match s.vmid {
                Some(id) => v.range(&at.key("vmid"), id, 100, 999_999_999),
                None => v.err(
                    &at.key("vmid"),
                    format!("missing required key 'vmid' (type {} needs it)", t.as_str()),
                ),
            }
            if let Some(n) = &s.node {
                v.ident(&at.key("node"), n, is_pve_node, "PVE node name");
            }
            if !cfg.global.is_proxmox() {
                v.err(
                    &at.key("type"),
                    format!("type {} needs global.hypervisor: proxmox", t.as_str()),
                );
            }
            if !s.backup_paths.is_empty() {
                v.err(
                    &at.key("backup_paths"),
                    "does not apply to vm/lxc (vzdump backs up the whole guest)",
                );
            }
        }
        ServiceType::DockerCompose | ServiceType::NginxProxyManager => {
            v.required(at, "compose_file", &s.compose_file);
            if let Some(p) = &s.compose_project {
                v.ident(
                    &at.key("compose_project"),
                    p,
                    is_compose_project,
                    "compose project name (expected [a-z0-9][a-z0-9_-]*)",
                );
            }
        }
        ServiceType::Docker => {
            v.required(at, "container", &s.container);
            if let Some(c) = &s.container {
                v.ident(&at.key("container"), c, is_docker_name, "container name");
            }
        }
        ServiceType::Systemd => {
            v.required(at, "unit", &s.unit);
            if let Some(u) = &s.unit {
                v.ident(&at.key("unit"), u, is_unit_name, "systemd unit name");
            }
        }
        ServiceType::Caddy => {
            match &s.config_file {
                None => v.err(
                    &at.key("config_file"),
                    "missing required key 'config_file' (type caddy needs its Caddyfile or JSON config)",
                ),
                Some(p) if !p.is_file() => v.err(
                    &at.key("config_file"),
                    format!("{} does not exist or is not a file", p.display()),
                ),
                Some(_) => {}
            }
            if let Some(u) = &s.admin_url {
                if let Err(e) = crate::config::caddy_admin(u) {
                    v.err(&at.key("admin_url"), e);
                }
            }
        }
        ServiceType::Host | ServiceType::Generic => {}
    }
    if t == ServiceType::NginxProxyManager {
        for (key, url) in [("admin_url", &s.admin_url), ("proxy_url", &s.proxy_url)] {
            if let Some(u) = url {
                v.url(&at.key(key), u, &["http", "https"]);
            }
        }
    }
    let paths_at = at.key("backup_paths");
    for (i, p) in s.backup_paths.iter().enumerate() {
        if p.path.as_os_str().is_empty() {
            v.err(
                &paths_at.item(v.diag, i),
                "an entry needs a path (`- /srv/data` or `- {path: /srv/data, optional: true}`)",
            );
        }
    }
    match (s.backup_consistency, t) {
        (None | Some(BackupConsistency::Live), _)
        | (
            Some(_),
            ServiceType::Docker | ServiceType::DockerCompose | ServiceType::NginxProxyManager,
        )
        | (Some(BackupConsistency::Stop), ServiceType::Systemd) => {}
        (Some(BackupConsistency::Pause), ServiceType::Systemd) => v.err(
            &at.key("backup_consistency"),
            "'pause' applies only to docker/docker_compose/nginx_proxy_manager (a systemd unit can be stopped, not paused)",
        ),
        (Some(c), _) => v.err(
            &at.key("backup_consistency"),
            format!(
                "'{}' applies only to type docker/docker_compose/nginx_proxy_manager/systemd, not {} (use live)",
                c.as_str(),
                t.as_str()
            ),
        ),
    }
    for (i, vol) in s.volumes.iter().enumerate() {
        v.ident(
            &at.key("volumes").item(v.diag, i),
            vol,
            is_docker_name,
            "volume name",
        );
    }
    for (i, e) in s.exclude.iter().enumerate() {
        if e.trim().is_empty() {
            v.err(&at.key("exclude").item(v.diag, i), "empty exclude pattern");
        }
    }
    if let Some(dests) = &s.destinations {
        let known: Vec<&str> = cfg
            .global
            .backup
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        for (i, d) in dests.iter().enumerate() {
            if !known.contains(&d.as_str()) {
                let mut m =
                    format!("unknown destination '{d}' (define it in global.backup.destinations)");
                if let Some(s) = did_you_mean(d, &known) {
                    m = format!("unknown destination '{d}' (did you mean '{s}'?)");
                }
                v.err(&at.key("destinations").item(v.diag, i), m);
            }
        }
    }
    if let Some(u) = &s.update {
        for (key, argv) in [
            ("command", &u.command),
            ("validate_command", &u.validate_command),
            ("rollback_command", &u.rollback_command),
        ] {
            if argv.first().is_some_and(|c| c.is_empty()) {
                v.err(
                    &at.key("update").key(key),
                    "the program (first item) is empty",
                );
            }
        }
        if u.require_backup_hours
            .is_some_and(|h| !(h.is_finite() && h > 0.0))
        {
            v.err(
                &at.key("update").key("require_backup_hours"),
                "must be a positive number of hours",
            );
        }
        if u.backup_volumes && s.service_type != ServiceType::DockerCompose {
            v.err(
                &at.key("update").key("backup_volumes"),
                "only a docker_compose service's volumes are backed up before an update",
            );
        }
    }
    for (i, d) in s.depends_on.iter().enumerate() {
        let here = at.key("depends_on").item(v.diag, i);
        if d == &s.name {
            v.err(&here, "a service cannot depend on itself");
        } else if !names.contains(d.as_str()) {
            v.err(&here, unknown_service(d, names));
        }
    }
    if let Some(url) = &s.external_url {
        v.url(&at.key("external_url"), url, &["https", "http"]);
    }
    validate_checks(
        v,
        &at.key("health_checks"),
        &s.health_checks,
        names,
        &s.name,
    );
    if let Some(rt) = &s.restore_testing {
        let rat = at.key("restore_testing");
        validate_checks(
            v,
            &rat.key("health_checks"),
            &rt.health_checks,
            names,
            &s.name,
        );
    }
}

fn validate_checks(
    v: &Validator,
    at: &At,
    checks: &[HealthCheckConfig],
    services: &HashSet<&str>,
    own: &str,
) {
    let siblings: Vec<&str> = checks.iter().filter_map(|c| c.name.as_deref()).collect();
    for (i, c) in checks.iter().enumerate() {
        let cat = at.item(v.diag, i);
        validate_check(v, &cat, c);
        if let Some(p) = &c.parent {
            let ok = (siblings.contains(&p.as_str()) && c.name.as_deref() != Some(p))
                || (services.contains(p.as_str()) && p != own);
            if !ok {
                v.err(
                    &cat.key("parent"),
                    format!("'{p}' is neither another check of this service nor another service"),
                );
            }
        }
    }
}

fn validate_check(v: &Validator, at: &At, c: &HealthCheckConfig) {
    if !v.has(&at.key("type")) {
        v.err(&at.key("type"), "missing required key 'type'");
        return;
    }
    let t = c.check_type;
    for key in c.set_keys() {
        if !t.keys().contains(&key) {
            v.err(
                &at.key(key),
                format!("'{key}' does not apply to a check of type {}", t.as_str()),
            );
        }
    }
    if let Some(s) = c.timeout_seconds {
        v.at_least_one(&at.key("timeout_seconds"), s);
    }
    match t {
        HealthCheckType::Http => {
            match &c.url {
                Some(u) => v.url(&at.key("url"), u, &["http", "https"]),
                None => v.err(&at.key("url"), "missing required key 'url'"),
            }
            v.one_of(
                &at.key("method"),
                &c.method.to_ascii_uppercase(),
                &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            );
            if let Some(s) = c.expected_status {
                v.range(&at.key("expected_status"), s, 100, 599);
            }
            for name in c.headers.keys() {
                v.ident(
                    &at.key("headers").key(name),
                    name,
                    is_header_name,
                    "HTTP header name",
                );
            }
        }
        HealthCheckType::Tcp => {
            v.required(at, "host", &c.host);
            match c.port {
                Some(0) => v.err(&at.key("port"), "must be between 1 and 65535"),
                Some(_) => {}
                None => v.err(&at.key("port"), "missing required key 'port'"),
            }
        }
        HealthCheckType::Dns => v.required(at, "hostname", &c.hostname),
        HealthCheckType::Process => {
            if c.process.is_none() && c.pid_file.is_none() {
                v.err(at, "set process (a process name) or pid_file");
            }
        }
        HealthCheckType::Container => {
            v.required(at, "container", &c.container);
            if let Some(n) = &c.container {
                v.ident(&at.key("container"), n, is_docker_name, "container name");
            }
        }
        HealthCheckType::Compose => {
            v.required(at, "compose_project", &c.compose_project);
            if let Some(p) = &c.compose_project {
                v.ident(
                    &at.key("compose_project"),
                    p,
                    is_compose_project,
                    "compose project name (expected [a-z0-9][a-z0-9_-]*)",
                );
            }
        }
        HealthCheckType::Command | HealthCheckType::Database => match &c.command {
            Some(cmd) if cmd.is_empty() => v.err(&at.key("command"), "empty command"),
            Some(_) => {}
            None => v.err(&at.key("command"), "missing required key 'command'"),
        },
        HealthCheckType::Custom => v.required(at, "script", &c.script),
    }
}
