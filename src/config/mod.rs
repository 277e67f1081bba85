//! Configuration: the typed schema (serde structs), loading of the main file
//! plus `services.d/*.yaml`, validation that reports every error at once with
//! `file:line:column: dotted.path: message`, secret references, and path
//! resolution (FHS as root, XDG otherwise).
//!
//! Raw YAML becomes a validated [`Config`] before any work starts: engines and
//! scripts never see raw strings.
//!
//! Loading: marked-yaml parses each file into a tree that keeps positions,
//! `spanned` deserializes it into the schema (collecting every error), the
//! relative paths are resolved against the declaring file's directory, then
//! `validate` checks values and cross-references. Only a configuration
//! without errors goes on to the permission checks (exit 77) and is
//! returned.

mod caddy;
mod checks;
mod daemon;
pub mod drill;
pub(crate) mod http;
mod ids;
#[cfg(test)]
pub(crate) mod keys;
mod monitoring;
mod notifications;
pub mod paths;
pub mod schema;
mod secrets;
mod spanned;
mod url;
mod validate;
mod yaml;

pub use caddy::{caddy_admin, CaddyAdmin, CADDY_ADMIN_DEFAULT};
pub use checks::{HealthCheckConfig, HealthCheckType};
pub use daemon::DaemonConfig;
pub use http::{parse_listen, HttpAuthConfig, HttpConfig};
pub use monitoring::{MaintenanceWindowConfig, MonitoringConfig, ResourcesConfig, UpdatesConfig};
pub use notifications::{
    ChannelConfig, ChannelType, EventType, NotificationsConfig, Severity, SmtpSecurity,
    PING_WORKFLOWS,
};
pub use paths::{PathOverrides, Paths};
pub use schema::*;
pub use secrets::{CommandSpec, Secret, SecretSource, SECRET_COMMAND_TIMEOUT};
pub use url::{redact_url, SecretUrl};

use crate::error::{Error, Result};
use crate::schedule::CronSchedule;
use serde::Deserialize;
use spanned::{Diagnostics, Pos};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use validate::{At, ChannelOrigin, ServiceOrigin};

/// Options that change how a configuration is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Accept secret files and configs holding inline secrets that are
    /// readable by group/others (`--insecure-permissions`).
    pub insecure_permissions: bool,
}

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "HOMELAB_AUTOPILOT_CONFIG";

/// The configuration file's name in the config directories.
pub const CONFIG_FILE_NAME: &str = "homelab-autopilot.yaml";

/// The system-wide configuration file.
pub const SYSTEM_CONFIG: &str = "/etc/homelab-autopilot/homelab-autopilot.yaml";

/// Find the configuration file: `--config` > `$HOMELAB_AUTOPILOT_CONFIG` >
/// user config dir (when not root) > /etc (docs/conventions.md, Paths). Nothing found is
/// `Error::Config` (exit 78) naming every path tried.
pub fn locate(cli: Option<&Path>) -> Result<PathBuf> {
    let not_found = |p: &Path, how: &str| {
        Error::Config(vec![format!(
            "{}: configuration file not found (given {how})",
            p.display()
        )])
    };
    if let Some(p) = cli {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(not_found(p, "with --config"))
        };
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(not_found(&p, &format!("in ${CONFIG_ENV}")))
        };
    }
    let mut tried = Vec::new();
    if !paths::is_root() {
        if let Some(dir) = dirs::config_dir() {
            tried.push(dir.join("homelab-autopilot").join(CONFIG_FILE_NAME));
        }
    }
    tried.push(PathBuf::from(SYSTEM_CONFIG));
    if let Some(p) = tried.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(Error::Config(vec![format!(
        "no configuration file found (tried {}); use --config PATH or set ${CONFIG_ENV}",
        list.join(", ")
    )]))
}

/// A `services.d/*.yaml` file: a `services:` list, and notification
/// channels (`notifications: {channels: [...]}`) to go with them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServicesFile {
    services: Vec<ServiceConfig>,
    notifications: ChannelsOnly,
}

/// The part of `notifications:` a `services.d` file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ChannelsOnly {
    channels: Vec<ChannelConfig>,
}

/// Load, merge (`services.d/*.yaml` beside the main file) and validate.
/// Errors: `Error::Config` with every problem found (exit 78; also for a
/// main file that cannot be read), `Error::InsecurePermissions` (exit 77).
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Config> {
    let path = absolute_config_path(path);
    let text = read_text(&path).map_err(|e| {
        Error::Config(vec![format!(
            "{}: cannot read configuration file: {e}",
            path.display()
        )])
    })?;
    let mut diag = Diagnostics::default();
    let main = diag.add_file(path.clone());
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));

    let extra = services_d_files(&dir.join("services.d"))?;
    let extra_ids: Vec<usize> = extra.iter().map(|p| diag.add_file(p.clone())).collect();
    let main_node = parse_file(main, &text, &diag);
    let mut cfg: Config = main_node
        .as_ref()
        .and_then(|n| spanned::from_node(n, &diag))
        .unwrap_or_default();

    let mut origins: Vec<ServiceOrigin> = (0..cfg.services.len())
        .map(|i| ServiceOrigin {
            file: main,
            index: diag.yaml_index(main, "services", i),
        })
        .collect();
    let mut channel_origins: Vec<ChannelOrigin> = (0..cfg.notifications.channels.len())
        .map(|i| ChannelOrigin {
            file: main,
            index: diag.yaml_index(main, "notifications.channels", i),
        })
        .collect();
    merge_services_d(
        &mut cfg,
        (&mut origins, &mut channel_origins),
        extra_ids.into_iter().zip(&extra),
        &diag,
    );
    check_duplicate_services(&cfg, &origins, &diag);
    if is_blank_yaml(&text) && cfg.services.is_empty() {
        // Nothing at all to run: almost always the wrong file (or a file
        // not written yet), never what the admin meant to schedule.
        return Err(Error::Config(vec![format!(
            "{}: the configuration is empty (only blanks and comments) and services.d/ adds \
             no service: nothing to run; examples/quickstart.yaml is a start",
            path.display()
        )]));
    }

    let file_dirs: Vec<PathBuf> = diag
        .files()
        .iter()
        .map(|f| {
            f.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"))
        })
        .collect();
    resolve_relative_paths(&mut cfg, &origins, &channel_origins, &file_dirs);
    for c in &mut cfg.notifications.channels {
        c.channel_type = c.kind();
    }
    if main_node.is_some() {
        validate::validate(&cfg, &origins, &channel_origins, &diag);
    }
    let slots = secret_slots(&cfg, &channel_origins);
    for slot in &slots {
        if let SecretSource::File(f) = &slot.source {
            if !f.is_file() {
                diag.error_at(
                    slot.at.file,
                    &slot.at.path,
                    format!("secret file {} does not exist", f.display()),
                );
            }
        }
    }
    if !diag.is_empty() {
        return Err(Error::Config(diag.render()));
    }
    let urls = url_slots(&cfg, &origins, &channel_origins, &diag);
    check_permissions(&slots, &urls, diag.files(), opts)?;
    register_secrets(&slots, &urls);
    cfg.source = path;
    cfg.files = diag.files().to_vec();
    Ok(cfg)
}

/// A YAML file's text: a UTF-8 byte-order mark (as Windows editors write
/// it) is dropped; bytes that are not UTF-8 are an error naming their
/// offset and line.
fn read_text(path: &Path) -> std::result::Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    match std::str::from_utf8(body) {
        Ok(t) => Ok(t.to_string()),
        Err(e) => {
            let skipped = bytes.len() - body.len();
            let at = e.valid_up_to();
            let line = body[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            Err(format!(
                "not UTF-8: invalid byte 0x{:02x} at byte offset {} (line {line})",
                body[at],
                at + skipped
            ))
        }
    }
}

/// Nothing but blank lines and comments.
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

/// The config path made absolute, with its directory canonicalized (so
/// `../x.yaml` from another cwd reads well in messages) but the file name
/// kept (a symlinked config still finds `services.d/` beside the link).
fn absolute_config_path(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => match dir.canonicalize() {
            Ok(dir) => dir.join(name),
            Err(_) => abs,
        },
        _ => abs,
    }
}

/// Append the services and channels of each `services.d` file, recording
/// where each came from.
fn merge_services_d<'a>(
    cfg: &mut Config,
    (origins, channel_origins): (&mut Vec<ServiceOrigin>, &mut Vec<ChannelOrigin>),
    files: impl Iterator<Item = (usize, &'a PathBuf)>,
    diag: &Diagnostics,
) {
    for (file, p) in files {
        let text = match read_text(p) {
            Ok(t) => t,
            Err(e) => {
                diag.error(
                    Pos {
                        file,
                        line: 1,
                        column: 1,
                    },
                    "",
                    format!("cannot read: {e}"),
                );
                continue;
            }
        };
        let Some(node) = parse_file(file, &text, diag) else {
            continue;
        };
        let Some(sf) = spanned::from_node::<ServicesFile>(&node, diag) else {
            continue;
        };
        for (i, svc) in sf.services.into_iter().enumerate() {
            origins.push(ServiceOrigin {
                file,
                index: diag.yaml_index(file, "services", i),
            });
            cfg.services.push(svc);
        }
        for (i, c) in sf.notifications.channels.into_iter().enumerate() {
            channel_origins.push(ChannelOrigin {
                file,
                index: diag.yaml_index(file, "notifications.channels", i),
            });
            cfg.notifications.channels.push(c);
        }
    }
}

/// `services.d/*.yaml` (and `*.yml`) in name order; none if the directory
/// does not exist.
fn services_d_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Config(vec![format!(
                "{}: cannot read directory: {e}",
                dir.display()
            )]))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.')
                && (name.ends_with(".yaml") || name.ends_with(".yml"))
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parse one file, recording a syntax error with its position.
fn parse_file(file: usize, text: &str, diag: &Diagnostics) -> Option<marked_yaml::Node> {
    if let Some(line) = second_document(text) {
        diag.error(
            Pos {
                file,
                line,
                column: 1,
            },
            "yaml",
            "only one YAML document per file is supported",
        );
        return None;
    }
    match yaml::parse(file, text) {
        Ok(mut node) => {
            // Top-level `x-...` keys are the admin's own (anchors to merge
            // elsewhere), as in Compose files.
            if let Some(top) = node.as_mapping_mut() {
                top.retain(|k, _| !k.as_str().starts_with("x-"));
            }
            let errors = yaml::interpolate(&mut node, &|name| std::env::var(name).ok());
            for e in &errors {
                let pos = Pos {
                    file,
                    line: e.line,
                    column: e.column,
                };
                diag.error(pos, &e.path, e.message.clone());
            }
            errors.is_empty().then_some(node)
        }
        Err(e) => {
            let pos = Pos {
                file,
                line: e.line,
                column: e.column,
            };
            diag.error(pos, "yaml", e.message);
            None
        }
    }
}

/// The line of a second `---` document marker, if any (marked-yaml would
/// silently ignore everything after it).
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_end();
        if t == "---" || t.starts_with("--- ") {
            if content {
                return Some(i + 1);
            }
            content = true;
        } else if !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
            content = true;
        }
    }
    None
}

/// A service name defined twice is an error at the second definition.
fn check_duplicate_services(cfg: &Config, origins: &[ServiceOrigin], diag: &Diagnostics) {
    let mut first: HashMap<&str, At> = HashMap::new();
    for (svc, origin) in cfg.services.iter().zip(origins) {
        if svc.name.is_empty() {
            continue;
        }
        let at = origin.at().key("name");
        match first.get(svc.name.as_str()) {
            Some(prev) => {
                let p = diag.pos(prev.file, &prev.path);
                let file = diag
                    .files()
                    .get(p.file)
                    .map(|f| f.display().to_string())
                    .unwrap_or_default();
                diag.error_at(
                    at.file,
                    &at.path,
                    format!(
                        "duplicate service name '{}' (first defined at {file}:{}:{})",
                        svc.name, p.line, p.column
                    ),
                );
            }
            None => {
                first.insert(&svc.name, at);
            }
        }
    }
}

/// `~/x` is under the home directory; other relative paths are under the
/// directory of the file that declared them.
fn resolve_path(base: &Path, p: &mut PathBuf) {
    if p.as_os_str().is_empty() || p.is_absolute() {
        return;
    }
    if let Ok(rest) = p.strip_prefix("~") {
        if let Some(home) = dirs::home_dir() {
            *p = home.join(rest);
            return;
        }
    }
    *p = base.join(&*p);
}

fn resolve_opt(base: &Path, p: &mut Option<PathBuf>) {
    if let Some(p) = p {
        resolve_path(base, p);
    }
}

fn resolve_relative_paths(
    cfg: &mut Config,
    origins: &[ServiceOrigin],
    channels: &[ChannelOrigin],
    dirs: &[PathBuf],
) {
    let main = &dirs[0];
    let g = &mut cfg.global;
    for p in [
        &mut g.paths.state_dir,
        &mut g.paths.log_dir,
        &mut g.paths.scripts_dir,
        &mut g.paths.lock_dir,
        &mut g.paths.metrics_dir,
    ] {
        resolve_opt(main, p);
    }
    if let Some(px) = &mut g.proxmox {
        for p in [
            &mut px.ca_file,
            &mut px.token_secret_file,
            &mut px.password_file,
        ] {
            resolve_opt(main, p);
        }
    }
    let b = &mut g.backup;
    resolve_opt(main, &mut b.root);
    for d in &mut b.destinations {
        resolve_path(main, &mut d.path);
    }
    if let Some(pbs) = &mut b.proxmox_backup_server {
        resolve_opt(main, &mut pbs.password_file);
    }
    if let Some(ds) = &mut b.direct_storage {
        resolve_opt(main, &mut ds.path);
    }
    let auth = &mut cfg.http.auth;
    resolve_opt(main, &mut auth.token_file);
    resolve_opt(main, &mut auth.password_file);
    for (c, origin) in cfg.notifications.channels.iter_mut().zip(channels) {
        let base = &dirs[origin.file];
        resolve_opt(base, &mut c.password_file);
        resolve_opt(base, &mut c.secret_file);
    }
    for (svc, origin) in cfg.services.iter_mut().zip(origins) {
        let base = &dirs[origin.file];
        svc.backup_paths
            .iter_mut()
            .for_each(|p| resolve_path(base, &mut p.path));
        resolve_opt(base, &mut svc.compose_file);
        resolve_opt(base, &mut svc.config_file);
        let rt_checks = svc
            .restore_testing
            .iter_mut()
            .flat_map(|r| r.health_checks.iter_mut());
        for c in svc.health_checks.iter_mut().chain(rt_checks) {
            resolve_opt(base, &mut c.pid_file);
            resolve_opt(base, &mut c.script);
        }
    }
}

/// One secret in the configuration and where it was written.
struct SecretSlot {
    at: At,
    source: SecretSource,
}

/// The secret set by the sibling keys `base`, `base_file`, `base_command`
/// under `at`, positioned at the key actually used.
fn slot(
    out: &mut Vec<SecretSlot>,
    at: &At,
    base: &str,
    keys: (Option<&Secret>, Option<&PathBuf>, Option<&CommandSpec>),
) {
    let key = match keys {
        (Some(_), _, _) => base.to_string(),
        (None, Some(_), _) => format!("{base}_file"),
        (None, None, Some(_)) => format!("{base}_command"),
        (None, None, None) => return,
    };
    if let Some(source) = SecretSource::from_keys(keys.0, keys.1, keys.2) {
        out.push(SecretSlot {
            at: at.key(&key),
            source,
        });
    }
}

fn secret_slots(cfg: &Config, channels: &[ChannelOrigin]) -> Vec<SecretSlot> {
    let mut out = Vec::new();
    let global = At::new(0, "global");
    if let Some(p) = &cfg.global.proxmox {
        let at = global.key("proxmox");
        let token = (
            p.token_secret.as_ref(),
            p.token_secret_file.as_ref(),
            p.token_secret_command.as_ref(),
        );
        slot(&mut out, &at, "token_secret", token);
        let pw = (
            p.password.as_ref(),
            p.password_file.as_ref(),
            p.password_command.as_ref(),
        );
        slot(&mut out, &at, "password", pw);
    }
    if let Some(p) = &cfg.global.backup.proxmox_backup_server {
        let at = global.key("backup").key("proxmox_backup_server");
        let pw = (
            p.password.as_ref(),
            p.password_file.as_ref(),
            p.password_command.as_ref(),
        );
        slot(&mut out, &at, "password", pw);
    }
    let auth = &cfg.http.auth;
    let at = At::new(0, "http.auth");
    let token = (
        auth.token.as_ref(),
        auth.token_file.as_ref(),
        auth.token_command.as_ref(),
    );
    slot(&mut out, &at, "token", token);
    let pw = (
        auth.password.as_ref(),
        auth.password_file.as_ref(),
        auth.password_command.as_ref(),
    );
    slot(&mut out, &at, "password", pw);
    for (c, origin) in cfg.notifications.channels.iter().zip(channels) {
        let at = origin.at();
        let pw = (
            c.password.as_ref(),
            c.password_file.as_ref(),
            c.password_command.as_ref(),
        );
        slot(&mut out, &at, "password", pw);
        let s = (
            c.secret.as_ref(),
            c.secret_file.as_ref(),
            c.secret_command.as_ref(),
        );
        slot(&mut out, &at, "secret", s);
    }
    out
}

/// A URL in the configuration that may carry credentials.
struct UrlSlot {
    at: At,
    url: String,
    /// A notification channel's URL: every part [`url::redact_url`] masks
    /// as a token is a credential. Elsewhere (health checks, the Proxmox
    /// API) only a userinfo password or a query value under a key naming a
    /// credential is one; a path segment there is usually a plain name.
    notification: bool,
}

impl UrlSlot {
    /// Whether the URL holds a credential, so its file must be private.
    fn holds_credentials(&self) -> bool {
        url::url_secret_parts(&self.url)
            .iter()
            .any(|p| self.notification || p.kind.is_credential_anywhere(p.key))
    }
}

/// Every URL of the configuration, where it was written.
fn url_slots(
    cfg: &Config,
    origins: &[ServiceOrigin],
    channels: &[ChannelOrigin],
    diag: &Diagnostics,
) -> Vec<UrlSlot> {
    let mut out = Vec::new();
    let mut push = |at: At, url: &str, notification: bool| {
        out.push(UrlSlot {
            at,
            url: url.to_string(),
            notification,
        })
    };
    if let Some(u) = cfg.global.proxmox.as_ref().and_then(|p| p.api_url.as_ref()) {
        push(At::new(0, "global.proxmox.api_url"), u, false);
    }
    for (c, origin) in cfg.notifications.channels.iter().zip(channels) {
        if let Some(u) = &c.url {
            push(origin.at().key("url"), u.expose(), true);
        }
    }
    for (svc, origin) in cfg.services.iter().zip(origins) {
        let at = origin.at();
        if let Some(u) = &svc.external_url {
            push(at.key("external_url"), u, false);
        }
        let checks = at.key("health_checks");
        for (i, check) in svc.health_checks.iter().enumerate() {
            if let Some(u) = &check.url {
                push(checks.item(diag, i).key("url"), u, false);
            }
        }
        if let Some(rt) = &svc.restore_testing {
            let checks = at.key("restore_testing").key("health_checks");
            for (i, check) in rt.health_checks.iter().enumerate() {
                if let Some(u) = &check.url {
                    push(checks.item(diag, i).key("url"), u, false);
                }
            }
        }
    }
    out
}

/// Refuse (exit 77) secret files, and config files holding inline secrets
/// or URLs with credentials in them, that group or others can read;
/// `--insecure-permissions` only warns.
fn check_permissions(
    slots: &[SecretSlot],
    urls: &[UrlSlot],
    files: &[PathBuf],
    opts: &LoadOptions,
) -> Result<()> {
    let in_config = |at: &At, what: &'static str| files.get(at.file).map(|f| (f.clone(), what));
    let keyed = slots.iter().filter_map(|slot| {
        let found = match &slot.source {
            SecretSource::File(f) => Some((f.clone(), "secret file")),
            SecretSource::Inline(_) => {
                in_config(&slot.at, "configuration file holding an inline secret")
            }
            _ => None,
        };
        found.map(|(path, what)| (path, what, &slot.at))
    });
    let in_urls = urls
        .iter()
        .filter(|u| u.holds_credentials())
        .filter_map(|u| {
            in_config(&u.at, "configuration file holding a URL with credentials")
                .map(|(path, what)| (path, what, &u.at))
        });
    let mut checked: Vec<PathBuf> = Vec::new();
    for (path, what, at) in keyed.chain(in_urls) {
        if checked.contains(&path) {
            continue;
        }
        checked.push(path.clone());
        let problem = secrets::insecure_mode(&path).map_err(|e| Error::io(&path, e))?;
        if let Some(message) = problem {
            let message = format!("{what} ({}): {message}", at.path);
            if opts.insecure_permissions {
                tracing::warn!(path = %path.display(), "insecure permissions accepted: {message}");
            } else {
                return Err(Error::InsecurePermissions { path, message });
            }
        }
    }
    Ok(())
}

/// Register every secret of the configuration with the redactor, so it is
/// masked from now on, before any channel or workflow uses it: inline,
/// `env:`, `credential:` and `*_file` values (read now), and the secret
/// parts of every URL. `*_command` secrets are registered when they run.
fn register_secrets(slots: &[SecretSlot], urls: &[UrlSlot]) {
    for slot in slots {
        slot.source.register_now();
    }
    // Health-check URLs may carry credentials too (`https://user:pw@host/`,
    // `?token=`): mask those pieces wherever the URL is printed.
    for u in urls {
        url::register_url_secrets(&u.url);
    }
}

impl Config {
    /// Every secret the configuration refers to, labelled with its dotted
    /// path (`global.proxmox.token_secret_file`).
    pub fn secret_sources(&self) -> Vec<(String, SecretSource)> {
        let channels: Vec<ChannelOrigin> = (0..self.notifications.channels.len())
            .map(|index| ChannelOrigin { file: 0, index })
            .collect();
        secret_slots(self, &channels)
            .into_iter()
            .map(|s| (s.at.path, s.source))
            .collect()
    }

    /// The configuration as YAML (`config show`): secrets print as `***`,
    /// notification URLs redacted, and any registered secret scrubbed.
    pub fn to_redacted_yaml(&self) -> String {
        // Scrub the values, not the text: a masked value must stay quoted.
        let out = yaml_serde::to_value(self).and_then(|mut v| {
            scrub_yaml(&mut v);
            yaml_serde::to_string(&v)
        });
        match out {
            Ok(s) => s,
            Err(e) => format!("# cannot serialise the configuration: {e}\n"),
        }
    }

    /// The configuration as JSON, redacted like [`Config::to_redacted_yaml`];
    /// this is also what scripts see through `config::get`.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        crate::redact::scrub_json(&mut v);
        v
    }

    /// One top-level section (`global`, `notifications`, `monitoring`,
    /// `updates`, `daemon`, `http`, `services`) of [`Config::to_redacted_json`], serialised
    /// alone; null for any other name.
    pub fn redacted_section_json(&self, name: &str) -> serde_json::Value {
        let v = match name {
            "global" => serde_json::to_value(&self.global),
            "notifications" => serde_json::to_value(&self.notifications),
            "monitoring" => serde_json::to_value(&self.monitoring),
            "updates" => serde_json::to_value(&self.updates),
            "daemon" => serde_json::to_value(&self.daemon),
            "http" => serde_json::to_value(&self.http),
            "services" => serde_json::to_value(&self.services),
            _ => Ok(serde_json::Value::Null),
        };
        let mut v = v.unwrap_or(serde_json::Value::Null);
        crate::redact::scrub_json(&mut v);
        v
    }

    /// Every cron schedule in the configuration with its dotted path.
    pub fn schedules(&self) -> Vec<(String, CronSchedule)> {
        let mut out = Vec::new();
        if let Some(s) = self.global.backup.cron_schedule() {
            out.push(("global.backup.schedule".to_string(), s));
        }
        if let Some(rt) = &self.global.backup.restore_testing {
            out.push((
                "global.backup.restore_testing.schedule".into(),
                rt.schedule.clone(),
            ));
        }
        out.push((
            "monitoring.schedule".into(),
            self.monitoring.schedule.clone(),
        ));
        if let Some(s) = &self.updates.schedule {
            out.push(("updates.schedule".into(), s.clone()));
        }
        out
    }
}

fn scrub_yaml(v: &mut yaml_serde::Value) {
    use yaml_serde::Value;
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(o) = crate::redact::scrub(s) {
                *s = o;
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(scrub_yaml),
        Value::Mapping(m) => m.values_mut().for_each(scrub_yaml),
        Value::Tagged(t) => scrub_yaml(&mut t.value),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod unread_keys;

/// Where the value at `path` (`global.backup.proxmox_backup_server`,
/// `services[2].name`) is written in `file`: its line and column, for
/// messages about the loaded configuration that name the place. `None`
/// when the file no longer parses or has no such key.
pub fn position_of(file: &Path, path: &str) -> Option<(usize, usize)> {
    let text = read_text(file).ok()?;
    let node = yaml::parse(0, &text).ok()?;
    let mut cur = &node;
    // A key's position, as the loader reports it (not its value's).
    let mut at = None;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (k, v) = cur.as_mapping()?.iter().find(|(k, _)| k.as_str() == key)?;
        at = k.span().start().copied();
        cur = v;
        if let Some(i) = index {
            cur = cur.as_sequence()?.get_node(i)?;
            at = cur.span().start().copied();
        }
    }
    let m = at?;
    Some((m.line(), m.column()))
}

/// `FILE:LINE:COL: PATH` for a message about the value at `path`, as the
/// loader's own errors start (`FILE: PATH` when it cannot be found).
pub fn place(file: &Path, path: &str) -> String {
    match position_of(file, path) {
        Some((line, col)) => format!("{}:{line}:{col}: {path}", file.display()),
        None => format!("{}: {path}", file.display()),
    }
}

/// Keys (prefixes) refused by validation as not available in this version.
#[cfg(test)]
pub(crate) fn pending_keys() -> &'static [(&'static str, &'static str)] {
    validate::PENDING
}

/// Keys kept in the schema only to be refused with their own message.
#[cfg(test)]
pub(crate) fn refused_keys() -> &'static [&'static str] {
    validate::REFUSED
}
