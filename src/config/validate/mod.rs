//! Semantic validation, after deserialization: value ranges, identifiers,
//! per-type rules (which keys a service, check or channel type needs and
//! accepts), references between sections, URLs and cron expressions. Every
//! problem is recorded with the position of the key it is about.

mod http;
mod notifications;
mod services;

use super::ids::*;
use super::spanned::{child_index, child_key, Diagnostics};
use super::url::check_url;
use super::*;
use std::collections::HashSet;

/// Where a value sits: file index and dotted path.
#[derive(Clone, Debug)]
pub(crate) struct At {
    pub file: usize,
    pub path: String,
}

impl At {
    pub fn new(file: usize, path: impl Into<String>) -> At {
        At {
            file,
            path: path.into(),
        }
    }

    pub fn key(&self, key: &str) -> At {
        At {
            file: self.file,
            path: child_key(&self.path, key),
        }
    }

    /// The `i`-th deserialized item of the list here (its YAML index may
    /// differ when an earlier item failed to deserialize).
    pub fn item(&self, diag: &Diagnostics, i: usize) -> At {
        let yaml = diag.yaml_index(self.file, &self.path, i);
        At {
            file: self.file,
            path: child_index(&self.path, yaml),
        }
    }
}

/// Which file (and which item of its `services:` list) each service of the
/// merged config came from.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceOrigin {
    pub file: usize,
    pub index: usize,
}

impl ServiceOrigin {
    pub fn at(&self) -> At {
        At::new(self.file, format!("services[{}]", self.index))
    }
}

/// Which file (and which item of its `notifications.channels:` list) each
/// channel of the merged config came from: the main file, or a
/// `services.d` file.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChannelOrigin {
    pub file: usize,
    pub index: usize,
}

impl ChannelOrigin {
    pub fn at(&self) -> At {
        At::new(self.file, format!("notifications.channels[{}]", self.index))
    }
}

pub(crate) struct Validator<'a> {
    pub diag: &'a Diagnostics,
}

impl Validator<'_> {
    pub fn err(&self, at: &At, msg: impl Into<String>) {
        self.diag.error_at(at.file, &at.path, msg);
    }

    /// Whether the YAML has this key.
    pub fn has(&self, at: &At) -> bool {
        self.diag.has(at.file, &at.path)
    }

    fn required<T>(&self, at: &At, key: &str, v: &Option<T>) {
        if v.is_none() {
            self.err(&at.key(key), format!("missing required key '{key}'"));
        }
    }

    fn required_str(&self, at: &At, key: &str, v: &str) {
        if v.trim().is_empty() {
            self.err(&at.key(key), format!("missing required key '{key}'"));
        }
    }

    fn range<T: PartialOrd + std::fmt::Display>(&self, at: &At, v: T, min: T, max: T) {
        if v < min || v > max {
            self.err(at, format!("must be between {min} and {max}, found {v}"));
        }
    }

    fn at_least_one(&self, at: &At, v: u64) {
        if v == 0 {
            self.err(at, "must be at least 1");
        }
    }

    fn one_of(&self, at: &At, v: &str, allowed: &[&str]) {
        if !allowed.contains(&v) {
            let mut m = format!(
                "unknown value '{v}', expected one of: {}",
                allowed.join(", ")
            );
            if let Some(s) = super::spanned::did_you_mean(v, allowed) {
                m.push_str(&format!(" (did you mean '{s}'?)"));
            }
            self.err(at, m);
        }
    }

    /// At most one of the sibling secret keys `base`, `base_file`,
    /// `base_command`; with `required`, exactly one.
    fn secret_keys(&self, at: &At, base: &str, set: [bool; 3], required: bool) {
        let n = set.iter().filter(|b| **b).count();
        let keys = format!("{base}, {base}_file, {base}_command");
        if n > 1 {
            let k = [
                base.to_string(),
                format!("{base}_file"),
                format!("{base}_command"),
            ];
            let second = (0..3).filter(|i| set[*i]).nth(1).unwrap_or(0);
            self.err(
                &at.key(&k[second]),
                format!("only one of {keys} may be set"),
            );
        } else if n == 0 && required {
            self.err(at, format!("one of {keys} is required"));
        }
    }

    fn url(&self, at: &At, url: &str, schemes: &[&str]) {
        if let Err(e) = check_url(url, schemes) {
            self.err(at, e);
        }
    }

    /// `what` may end in a parenthesised hint: "service name (expected ...)".
    fn ident(&self, at: &At, v: &str, ok: fn(&str) -> bool, what: &str) {
        if !ok(v) {
            let msg = match what.split_once(" (") {
                Some((name, hint)) => format!("invalid {name} '{v}' ({hint}"),
                None => format!("invalid {what} '{v}'"),
            };
            self.err(at, msg);
        }
    }
}

/// Validate the merged configuration.
pub(crate) fn validate(
    cfg: &Config,
    origins: &[ServiceOrigin],
    channels: &[ChannelOrigin],
    diag: &Diagnostics,
) {
    let v = Validator { diag };
    let root = At::new(0, "");
    validate_global(&v, &root.key("global"), cfg);
    notifications::validate_notifications(&v, channels, &cfg.notifications);
    let names: HashSet<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
    notifications::validate_monitoring(&v, &root.key("monitoring"), cfg, &names);
    let updates = root.key("updates");
    v.at_least_one(
        &updates.key("health_check_timeout_seconds"),
        cfg.updates.health_check_timeout_seconds,
    );
    http::validate_http(&v, &root.key("http"), &cfg.http);
    for (svc, origin) in cfg.services.iter().zip(origins) {
        services::validate_service(&v, &origin.at(), svc, cfg, &names);
    }
    validate_vmid_range(&v, &root.key("global"), cfg, origins);
    refuse_pending(&v, cfg, origins);
}

/// pve-bridge-id: `[-_.\w\d]+` (a bridge such as `vmbr1`).
fn is_bridge(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `restore_testing.test_environment.vmid_range`: `[first, last]`, in
/// order, within PVE's VMIDs (100..=999999999), and holding no configured
/// service's `vmid` (a restored copy must never take a real guest's id).
fn validate_vmid_range(v: &Validator, global: &At, cfg: &Config, origins: &[ServiceOrigin]) {
    let Some(rt) = &cfg.global.backup.restore_testing else {
        return;
    };
    let Some(r) = &rt.test_environment.vmid_range else {
        return;
    };
    let at = global
        .key("backup")
        .key("restore_testing")
        .key("test_environment")
        .key("vmid_range");
    let [first, last] = r[..] else {
        v.err(
            &at,
            format!(
                "expected two VMIDs [first, last], found {} value(s)",
                r.len()
            ),
        );
        return;
    };
    let (lo, hi) = (100, 999_999_999);
    if first < lo || last > hi {
        v.err(
            &at,
            format!("must be within {lo} and {hi}, found [{first}, {last}]"),
        );
    } else if first > last {
        v.err(
            &at,
            format!("first must not be above last, found [{first}, {last}]"),
        );
    }
    for (svc, origin) in cfg.services.iter().zip(origins) {
        if let Some(id) = svc.vmid.filter(|id| (first..=last).contains(id)) {
            v.err(
                &at,
                format!(
                    "[{first}, {last}] holds VMID {id} of service {} ({}): restored copies must \
                     never take a real guest's id",
                    svc.name,
                    origin.at().key("vmid").path
                ),
            );
        }
    }
}

/// Sections of the schema read only by workflows this version does not
/// ship: `(key, workflow)`, services' keys as `services[].KEY`. Setting one
/// is refused, so that no key is accepted and then ignored; an entry goes
/// when its workflow ships.
/// Keys the schema keeps only to refuse them with a message that says
/// what to do instead (better than "unknown key"); see their checks. The
/// unread-keys test counts them as handled.
#[cfg(test)]
pub(crate) const REFUSED: &[&str] = &["global.backup.proxmox_backup_server.sync_jobs"];

/// Sections accepted by the schema that nothing in this version reads yet,
/// with why: refused (exit 78) rather than silently ignored.
pub(crate) const PENDING: &[(&str, &str)] = &[];

fn refuse_pending(v: &Validator, cfg: &Config, origins: &[ServiceOrigin]) {
    #[cfg(test)]
    if tests_allow_pending::get() {
        return;
    }
    let refuse = |at: &At, why: &str| {
        if v.has(at) {
            v.err(
                at,
                format!("not available in this version: {why}; remove it"),
            );
        }
    };
    for (key, workflow) in PENDING {
        match key.strip_prefix("services[].") {
            Some(k) => {
                for origin in &origins[..cfg.services.len().min(origins.len())] {
                    refuse(&origin.at().key(k), workflow);
                }
            }
            None => {
                let mut at = At::new(0, "");
                for part in key.split('.') {
                    at = at.key(part);
                }
                refuse(&at, workflow);
            }
        }
    }
}

fn validate_global(v: &Validator, at: &At, cfg: &Config) {
    let g = &cfg.global;
    if let Some(h) = &g.hypervisor {
        v.one_of(&at.key("hypervisor"), h, &["proxmox", "none"]);
    }
    match (&g.proxmox, g.is_proxmox()) {
        (Some(p), _) => validate_proxmox(v, &at.key("proxmox"), p),
        (None, true) => v.err(
            &at.key("hypervisor"),
            "hypervisor 'proxmox' needs a global.proxmox section (api_url and a token, or local: true)",
        ),
        (None, false) => {}
    }
    let scripts = at.key("scripts");
    v.at_least_one(&scripts.key("timeout_seconds"), g.scripts.timeout_seconds);
    v.at_least_one(&scripts.key("max_operations"), g.scripts.max_operations);
    validate_allow_lists(v, &scripts, &g.scripts);
    validate_backup(v, &at.key("backup"), &g.backup);
}

/// `allow_commands` entries name a program (a bare name or an absolute
/// path); `allow_paths` entries are absolute directories.
fn validate_allow_lists(v: &Validator, at: &At, s: &ScriptsConfig) {
    let commands = at.key("allow_commands");
    for (i, c) in s.allow_commands.iter().flatten().enumerate() {
        let here = commands.item(v.diag, i);
        if c.trim().is_empty() {
            v.err(&here, "a program name must not be empty");
        } else if c.contains('/') && !c.starts_with('/') {
            v.err(
                &here,
                format!("'{c}': give a program name (like 'rsync') or an absolute path"),
            );
        }
    }
    let paths = at.key("allow_paths");
    for (i, p) in s.allow_paths.iter().flatten().enumerate() {
        if !p.is_absolute() {
            v.err(
                &paths.item(v.diag, i),
                format!("'{}': path must be absolute", p.display()),
            );
        }
    }
}

fn validate_proxmox(v: &Validator, at: &At, p: &ProxmoxConfig) {
    if let Some(url) = &p.api_url {
        v.url(&at.key("api_url"), url, &["https", "http"]);
    } else if !p.local {
        v.err(
            &at.key("api_url"),
            "missing required key 'api_url' (or set local: true)",
        );
    }
    let token = [
        p.token_secret.is_some(),
        p.token_secret_file.is_some(),
        p.token_secret_command.is_some(),
    ];
    let password = [
        p.password.is_some(),
        p.password_file.is_some(),
        p.password_command.is_some(),
    ];
    match (&p.token_id, &p.username) {
        (Some(_), Some(_)) => {
            v.err(&at.key("username"), "use either token_id or username (password login), not both")
        }
        (Some(id), None) => {
            v.ident(&at.key("token_id"), id, is_token_id, "API token id (expected user@realm!tokenname)");
            v.secret_keys(at, "token_secret", token, true);
        }
        (None, Some(user)) => {
            v.ident(&at.key("username"), user, is_userid, "user id (expected user@realm)");
            v.secret_keys(at, "password", password, true);
        }
        (None, None) if !p.local => {
            v.err(at, "set token_id (with token_secret, token_secret_file or token_secret_command) or username and a password, or local: true")
        }
        (None, None) => {}
    }
    if p.token_id.is_none() && token.iter().any(|b| *b) {
        v.err(at, "token_secret is set but token_id is not");
    }
    for (key, value) in [
        ("lock_wait_seconds", p.lock_wait_seconds),
        ("task_timeout_seconds", p.task_timeout_seconds),
        ("backup_timeout_seconds", p.backup_timeout_seconds),
    ] {
        if let Some(n) = value {
            v.range(&at.key(key), n, 1, 7 * 24 * 3600);
        }
    }
    for (i, fp) in p.fingerprint.iter().enumerate() {
        let fat = if v.has(&at.key("fingerprint").item(v.diag, i)) {
            at.key("fingerprint").item(v.diag, i)
        } else {
            at.key("fingerprint")
        };
        v.ident(
            &fat,
            fp,
            is_fingerprint,
            "SHA-256 fingerprint (expected 32 colon-separated hex pairs, AB:CD:...)",
        );
    }
}

fn validate_backup(v: &Validator, at: &At, b: &BackupConfig) {
    if b.compression_algorithm != "zstd" {
        v.err(
            &at.key("compression_algorithm"),
            format!(
                "unsupported compression algorithm '{}' (only zstd is supported)",
                b.compression_algorithm
            ),
        );
    }
    v.range(&at.key("compression_level"), b.compression_level, 1, 19);
    v.one_of(&at.key("verify"), &b.verify, &["full", "checksum"]);
    let conc = at.key("concurrency");
    v.range(&conc.key("total"), b.concurrency.total, 1, 64);
    v.range(&conc.key("per_node"), b.concurrency.per_node, 1, 64);
    if let Some(n) = b.nice {
        v.range(&at.key("nice"), n, -20, 19);
    }
    if let Some(c) = &b.ionice {
        v.one_of(&at.key("ionice"), c, &["idle", "best-effort", "none"]);
    }
    if let Some(s) = &b.schedule {
        if let Err(e) = CronSchedule::parse(s) {
            v.err(&at.key("schedule"), e);
        }
    }
    let mut seen = HashSet::new();
    let dests = at.key("destinations");
    for (i, d) in b.destinations.iter().enumerate() {
        let dat = dests.item(v.diag, i);
        if d.name.is_empty() {
            v.required_str(&dat, "name", &d.name);
        } else {
            v.ident(&dat.key("name"), &d.name, is_name, "destination name");
            if !seen.insert(d.name.as_str()) {
                v.err(
                    &dat.key("name"),
                    format!("duplicate destination name '{}'", d.name),
                );
            }
        }
        if d.path.as_os_str().is_empty() {
            v.err(&dat.key("path"), "missing required key 'path'");
        }
    }
    if let Some(pbs) = &b.proxmox_backup_server {
        validate_pbs(v, &at.key("proxmox_backup_server"), pbs);
    }
    if let Some(ds) = &b.direct_storage {
        let dat = at.key("direct_storage");
        if let Some(s) = &ds.storage {
            v.ident(&dat.key("storage"), s, is_storage_id, "PVE storage id");
        }
        if ds.enabled && ds.storage.is_none() && ds.path.is_none() {
            v.err(
                &dat,
                "set storage (a PVE storage id) or path (a dump directory)",
            );
        }
    }
    if let Some(rt) = &b.restore_testing {
        let rat = at.key("restore_testing");
        if rt.enabled {
            v.at_least_one(&rat.key("random_services"), rt.random_services.into());
        }
        v.at_least_one(&rat.key("rto_target_minutes"), rt.rto_target_minutes.into());
        let env = &rt.test_environment;
        let eat = rat.key("test_environment");
        match env.env_type {
            TestEnvironmentType::IsolatedVlan => v.required(&eat, "vlan_id", &env.vlan_id),
            TestEnvironmentType::SeparateNode => v.required(&eat, "node", &env.node),
            TestEnvironmentType::Namespace => {}
        }
        if let Some(id) = env.vlan_id {
            v.range(&eat.key("vlan_id"), id, 1, 4094);
        }
        if let Some(n) = &env.network {
            v.ident(
                &eat.key("network"),
                n,
                is_cidr,
                "network (expected CIDR such as 10.99.0.0/24)",
            );
        }
        if let Some(n) = &env.node {
            v.ident(&eat.key("node"), n, is_pve_node, "PVE node name");
        }
        if let Some(s) = &env.storage {
            v.ident(&eat.key("storage"), s, is_storage_id, "PVE storage id");
        }
        if let Some(b) = &env.bridge {
            v.ident(
                &eat.key("bridge"),
                b,
                is_bridge,
                "bridge (expected a name such as vmbr1)",
            );
        }
    }
}

fn validate_pbs(v: &Validator, at: &At, p: &ProxmoxBackupServerConfig) {
    if p.enabled && p.storage.is_none() && (p.server.is_none() || p.datastore.is_none()) {
        v.err(
            at,
            "set storage (the PVE storage id of the PBS datastore) or server and datastore",
        );
    }
    if let Some(s) = &p.storage {
        v.ident(&at.key("storage"), s, is_storage_id, "PVE storage id");
    }
    if let Some(s) = &p.server {
        v.ident(
            &at.key("server"),
            s,
            is_host,
            "server (expected a host name or IP address)",
        );
    }
    if p.port == 0 {
        v.err(&at.key("port"), "must be between 1 and 65535");
    }
    if let Some(d) = &p.datastore {
        v.ident(&at.key("datastore"), d, is_datastore, "PBS datastore name");
    }
    if let Some(u) = &p.username {
        v.ident(
            &at.key("username"),
            u,
            |s| is_userid(s) || is_token_id(s),
            "user (expected user@realm or user@realm!token)",
        );
    }
    let pw = [
        p.password.is_some(),
        p.password_file.is_some(),
        p.password_command.is_some(),
    ];
    v.secret_keys(at, "password", pw, false);
    for (i, fp) in p.fingerprint.iter().enumerate() {
        let f = at.key("fingerprint");
        let fat = if v.has(&f.item(v.diag, i)) {
            f.item(v.diag, i)
        } else {
            f
        };
        v.ident(
            &fat,
            fp,
            is_fingerprint,
            "SHA-256 fingerprint (expected 32 colon-separated hex pairs)",
        );
    }
    if let Some(ns) = &p.namespace {
        v.ident(&at.key("namespace"), ns, is_pbs_namespace, "PBS namespace");
    }
    // PBS sync jobs are pull jobs that live on the receiving PBS (with a
    // remote pointing back here); this tool does not create them, so the
    // key is refused rather than accepted and ignored.
    if !p.sync_jobs.is_empty() {
        v.err(
            &at.key("sync_jobs"),
            "is not supported: a PBS sync job is configured on the receiving server (its Datastore > Sync Jobs, or `proxmox-backup-manager sync-job create` there, with a remote pointing at this datastore); remove this key",
        );
    }
}

/// Tests that load the document holding every key at least once (pending
/// sections included) switch the refusal off for their thread.
#[cfg(test)]
pub(crate) mod tests_allow_pending {
    use std::cell::Cell;
    thread_local!(static ALLOW: Cell<bool> = const { Cell::new(false) });
    pub fn set(on: bool) {
        ALLOW.with(|a| a.set(on));
    }
    pub fn get() -> bool {
        ALLOW.with(|a| a.get())
    }
}
