//! The configuration schema (the YAML sections `global`, `notifications`,
//! `monitoring`, `updates`, `services`). Every struct denies unknown keys and
//! is `#[serde(default)]`: a required key is checked by validation (which
//! can say where), never by serde. No internally tagged enums and no
//! `flatten`, so the spanned deserializer sees every key (docs/configuration.md,
//! "Implementation notes").
//!
//! Notification, monitoring/update and health-check sections live in
//! sibling files and are re-exported from `config`.

use super::checks::HealthCheckConfig;
use super::daemon::DaemonConfig;
use super::http::HttpConfig;
use super::monitoring::{MonitoringConfig, UpdatesConfig};
use super::notifications::NotificationsConfig;
use super::secrets::{CommandSpec, Secret, SecretSource};
use crate::schedule::CronSchedule;
use serde::{Deserialize, Deserializer, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub global: GlobalConfig,
    pub notifications: NotificationsConfig,
    pub monitoring: MonitoringConfig,
    pub updates: UpdatesConfig,
    pub daemon: DaemonConfig,
    /// The status page (off unless `http.listen` is set).
    pub http: HttpConfig,
    pub services: Vec<ServiceConfig>,
    /// The main file this was loaded from (not part of the YAML).
    #[serde(skip)]
    pub source: PathBuf,
    /// Every file merged into this configuration, main file first.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

impl Config {
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalConfig {
    /// `proxmox` or `none` (the default).
    pub hypervisor: Option<String>,
    pub proxmox: Option<ProxmoxConfig>,
    pub paths: PathsConfig,
    pub backup: BackupConfig,
    pub scripts: ScriptsConfig,
    pub logging: LoggingConfig,
}

/// `global.logging`: the log files in the log directory (`main.log` and one
/// per workflow). stderr is always written; under systemd it is the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `auto` (the default): write the files unless stderr is the systemd
    /// journal; `on`; `off`.
    pub files: LogFiles,
    /// A file is rotated (`main.log` → `main.log.1` …) when it reaches this
    /// size.
    pub max_size_mb: u64,
    /// Rotated files kept per log (`.1` … `.N`); older ones are removed.
    pub keep: u32,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            files: LogFiles::Auto,
            max_size_mb: 10,
            keep: 5,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFiles {
    #[default]
    Auto,
    On,
    Off,
}

impl GlobalConfig {
    /// `hypervisor: proxmox`.
    pub fn is_proxmox(&self) -> bool {
        self.hypervisor.as_deref() == Some("proxmox")
    }
}

/// How to reach Proxmox VE: the API (token or user+password) or, with
/// `local: true`, the `pct`/`qm` CLIs on the host itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxmoxConfig {
    /// `https://host:8006` (the `/api2/json` suffix is added by the client).
    pub api_url: Option<String>,
    /// `user@realm!tokenname`.
    pub token_id: Option<String>,
    pub token_secret: Option<Secret>,
    pub token_secret_file: Option<PathBuf>,
    pub token_secret_command: Option<CommandSpec>,
    /// `user@realm`, for ticket (password) authentication.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<CommandSpec>,
    /// Pinned SHA-256 certificate fingerprints (`AB:CD:...`, 32 pairs); one
    /// string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub fingerprint: Vec<String>,
    pub ca_file: Option<PathBuf>,
    /// Skip TLS verification entirely (prefer `fingerprint`).
    pub insecure: bool,
    /// Run on the PVE host itself, through `pct`/`qm`.
    pub local: bool,
    /// How long to wait for a guest lock held by an active task (600).
    pub lock_wait_seconds: Option<u64>,
    /// How long to wait for a snapshot, power or clone task (1800).
    pub task_timeout_seconds: Option<u64>,
    /// How long to wait for a vzdump or restore task (21600).
    pub backup_timeout_seconds: Option<u64>,
}

impl ProxmoxConfig {
    pub fn token_secret_source(&self) -> Option<SecretSource> {
        SecretSource::from_keys(
            self.token_secret.as_ref(),
            self.token_secret_file.as_ref(),
            self.token_secret_command.as_ref(),
        )
    }

    pub fn password_source(&self) -> Option<SecretSource> {
        SecretSource::from_keys(
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.password_command.as_ref(),
        )
    }
}

/// Every path the tool writes to; unset ones default to FHS (root) or XDG.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    pub state_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub scripts_dir: Option<PathBuf>,
    pub lock_dir: Option<PathBuf>,
    /// The Prometheus node_exporter textfile collector's directory:
    /// `homelab_autopilot.prom` is written there after every run. Unset: no
    /// metrics file.
    pub metrics_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptsConfig {
    /// Wall-clock deadline for one workflow run, in seconds.
    pub timeout_seconds: u64,
    /// Rhai operation budget per script call.
    pub max_operations: u64,
    /// Track the last statement run, so that a script stopped by the
    /// deadline or the operation budget is reported at its file and line.
    /// Costs script speed (every call copies its arguments); see
    /// docs/decisions.md.
    pub locate_stops: bool,
    /// Programs `proc::run` (and `sys::command`) may start: names (matched
    /// against argv[0] as given) or absolute paths. Absent: any program.
    pub allow_commands: Option<Vec<String>>,
    /// Directories under which `fs::write_text`, `fs::mkdir` and
    /// `fs::remove` may change files (absolute). Absent: anywhere.
    pub allow_paths: Option<Vec<PathBuf>>,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 6 * 3600,
            max_operations: 50_000_000,
            locate_stops: true,
            allow_commands: None,
            allow_paths: None,
        }
    }
}

/// `global.backup`. The retention keys (`retention_days`, `keep_*`) sit
/// directly in this mapping, as users write them, and are gathered into
/// [`BackupConfig::retention`] (through [`BackupConfigYaml`], since
/// `flatten` would hide unknown keys from the error reporting).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "BackupConfigYaml", into = "BackupConfigYaml")]
pub struct BackupConfig {
    pub enabled: bool,
    /// Backup root; archives go to `<root>/<service>/`.
    pub root: Option<PathBuf>,
    pub retention: RetentionConfig,
    pub compression: bool,
    /// Only `zstd` is supported.
    pub compression_algorithm: String,
    /// 1..=19.
    pub compression_level: i32,
    /// zstd worker threads; 0 = one per core.
    pub threads: u32,
    /// What `verify` does right after a backup: `full` (decode + hash) or
    /// `checksum` (re-read and hash).
    pub verify: String,
    pub destinations: Vec<DestinationConfig>,
    /// Lower priority for heavy work: nice level (None = unchanged).
    pub nice: Option<i32>,
    /// ionice class: idle | best-effort | none.
    pub ionice: Option<String>,
    /// Crontab expression (validated at load; see [`BackupConfig::cron_schedule`]).
    pub schedule: Option<String>,
    pub proxmox_backup_server: Option<ProxmoxBackupServerConfig>,
    pub direct_storage: Option<DirectStorageConfig>,
    pub restore_testing: Option<RestoreTestingConfig>,
    /// How many services are backed up at once.
    pub concurrency: ConcurrencyConfig,
}

/// `global.backup.concurrency`: at most `total` services at once, and at
/// most `per_node` guests of one Proxmox node at once. Defaults: one at a
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConcurrencyConfig {
    pub total: u32,
    pub per_node: u32,
}

impl Default for ConcurrencyConfig {
    fn default() -> Self {
        ConcurrencyConfig {
            total: 1,
            per_node: 1,
        }
    }
}

/// What a backup's verification does (`global.backup.verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyMode {
    /// Decode every entry and hash the file in one pass.
    Full,
    /// Re-read the file and compare its sha256 with the sidecar.
    Checksum,
}

impl BackupConfig {
    /// `restore_testing`, its defaults filled in when the section is
    /// absent (one place for them: [`RestoreTestingConfig::default`]).
    pub fn restore_testing(&self) -> RestoreTestingConfig {
        self.restore_testing.clone().unwrap_or_default()
    }

    /// `verify`, parsed (validation allows only `full` and `checksum`).
    pub fn verify_mode(&self) -> VerifyMode {
        if self.verify == "full" {
            VerifyMode::Full
        } else {
            VerifyMode::Checksum
        }
    }

    /// Whether archives are compressed with zstd (`compression`, and
    /// `compression_algorithm`, which validation allows only as `zstd`):
    /// `NAME.tar.zst`, else a plain `NAME.tar`.
    pub fn zstd(&self) -> bool {
        self.compression && self.compression_algorithm == "zstd"
    }

    /// `schedule`, parsed (it was validated at load).
    pub fn cron_schedule(&self) -> Option<CronSchedule> {
        self.schedule
            .as_deref()
            .and_then(|s| CronSchedule::parse(s).ok())
    }
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            root: None,
            retention: RetentionConfig {
                retention_days: Some(30),
                ..Default::default()
            },
            compression: true,
            compression_algorithm: "zstd".into(),
            compression_level: 3,
            threads: 0,
            verify: "checksum".into(),
            destinations: Vec::new(),
            nice: None,
            ionice: None,
            schedule: None,
            proxmox_backup_server: None,
            direct_storage: None,
            restore_testing: None,
            concurrency: ConcurrencyConfig::default(),
        }
    }
}

/// The YAML shape of `global.backup`: [`BackupConfig`] with the retention
/// keys inline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfigYaml {
    pub enabled: bool,
    pub root: Option<PathBuf>,
    pub retention_days: Option<u32>,
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub compression: bool,
    pub compression_algorithm: String,
    pub compression_level: i32,
    pub threads: u32,
    pub verify: String,
    pub destinations: Vec<DestinationConfig>,
    pub nice: Option<i32>,
    pub ionice: Option<String>,
    pub schedule: Option<String>,
    pub proxmox_backup_server: Option<ProxmoxBackupServerConfig>,
    pub direct_storage: Option<DirectStorageConfig>,
    pub restore_testing: Option<RestoreTestingConfig>,
    pub concurrency: ConcurrencyConfig,
}

impl Default for BackupConfigYaml {
    fn default() -> Self {
        BackupConfig::default().into()
    }
}

impl From<BackupConfigYaml> for BackupConfig {
    fn from(y: BackupConfigYaml) -> Self {
        BackupConfig {
            enabled: y.enabled,
            root: y.root,
            retention: RetentionConfig {
                retention_days: y.retention_days,
                keep_last: y.keep_last,
                keep_daily: y.keep_daily,
                keep_weekly: y.keep_weekly,
                keep_monthly: y.keep_monthly,
                keep_yearly: y.keep_yearly,
            },
            compression: y.compression,
            compression_algorithm: y.compression_algorithm,
            compression_level: y.compression_level,
            threads: y.threads,
            verify: y.verify,
            destinations: y.destinations,
            nice: y.nice,
            ionice: y.ionice,
            schedule: y.schedule,
            proxmox_backup_server: y.proxmox_backup_server,
            direct_storage: y.direct_storage,
            restore_testing: y.restore_testing,
            concurrency: y.concurrency,
        }
    }
}

impl From<BackupConfig> for BackupConfigYaml {
    fn from(b: BackupConfig) -> Self {
        let r = b.retention;
        BackupConfigYaml {
            enabled: b.enabled,
            root: b.root,
            retention_days: r.retention_days,
            keep_last: r.keep_last,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            keep_yearly: r.keep_yearly,
            compression: b.compression,
            compression_algorithm: b.compression_algorithm,
            compression_level: b.compression_level,
            threads: b.threads,
            verify: b.verify,
            destinations: b.destinations,
            nice: b.nice,
            ionice: b.ionice,
            schedule: b.schedule,
            proxmox_backup_server: b.proxmox_backup_server,
            direct_storage: b.direct_storage,
            restore_testing: b.restore_testing,
            concurrency: b.concurrency,
        }
    }
}

/// Retention: `retention_days` plus the `keep_*` counts (borg/restic style).
/// A backup is kept if any rule keeps it; the newest verified backup of a
/// service is never deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub retention_days: Option<u32>,
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationConfig {
    pub name: String,
    /// A directory (local disk, NFS/SMB mount).
    pub path: PathBuf,
}

/// `global.backup.proxmox_backup_server`: vzdump to a PBS storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxmoxBackupServerConfig {
    pub enabled: bool,
    /// The PVE storage id that points at the PBS datastore (vzdump `storage`).
    pub storage: Option<String>,
    pub server: Option<String>,
    pub port: u16,
    pub datastore: Option<String>,
    /// `user@realm` or `user@realm!token`.
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<CommandSpec>,
    #[serde(deserialize_with = "one_or_many")]
    pub fingerprint: Vec<String>,
    pub namespace: Option<String>,
    pub verify_ssl: bool,
    pub sync_jobs: Vec<PbsSyncJobConfig>,
}

impl Default for ProxmoxBackupServerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            storage: None,
            server: None,
            port: 8007,
            datastore: None,
            username: None,
            password: None,
            password_file: None,
            password_command: None,
            fingerprint: Vec::new(),
            namespace: None,
            verify_ssl: true,
            sync_jobs: Vec::new(),
        }
    }
}

impl ProxmoxBackupServerConfig {
    pub fn password_source(&self) -> Option<SecretSource> {
        SecretSource::from_keys(
            self.password.as_ref(),
            self.password_file.as_ref(),
            self.password_command.as_ref(),
        )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PbsSyncJobConfig {
    pub target_server: String,
    pub target_datastore: String,
    pub schedule: Option<CronSchedule>,
}

/// `global.backup.direct_storage`: vzdump to a PVE storage or a dump dir.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectStorageConfig {
    pub enabled: bool,
    /// PVE storage id (vzdump `storage`).
    pub storage: Option<String>,
    /// Dump directory (vzdump `dumpdir`).
    pub path: Option<PathBuf>,
    pub format: DumpFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpFormat {
    /// The guest's own format (VMA for VMs, tar for containers: vzdump
    /// decides), zstd-compressed; `tar` is the same.
    #[default]
    Vma,
    Tar,
    /// vzdump `compress`: zstd, gzip, lzo, or none (`0`).
    Zstd,
    Gzip,
    Lzo,
    None,
}

/// `global.backup.restore_testing`: functional restore tests (restore, start, check).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreTestingConfig {
    pub enabled: bool,
    pub schedule: CronSchedule,
    /// Services picked per run.
    pub random_services: u32,
    pub test_environment: TestEnvironmentConfig,
    pub rto_target_minutes: u32,
    pub cleanup_after_test: bool,
    pub cleanup_delay_minutes: u32,
    pub notifications: RestoreTestNotificationsConfig,
    /// `backups verify`: a PBS snapshot whose last verification is older
    /// than this (or that was never verified) is verified again by PBS;
    /// 0: only read its state.
    pub pbs_verify_max_age_days: u32,
}

impl Default for RestoreTestingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            schedule: CronSchedule::parse("monthly").expect("valid nickname"),
            random_services: 3,
            test_environment: TestEnvironmentConfig::default(),
            rto_target_minutes: 15,
            cleanup_after_test: true,
            cleanup_delay_minutes: 5,
            notifications: RestoreTestNotificationsConfig::default(),
            pbs_verify_max_age_days: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestEnvironmentConfig {
    #[serde(rename = "type")]
    pub env_type: TestEnvironmentType,
    /// Required for `isolated_vlan`: 1..=4094.
    pub vlan_id: Option<u16>,
    /// CIDR of the test network (`10.99.0.0/24`).
    pub network: Option<String>,
    /// Required for `separate_node`: the PVE node to restore on.
    pub node: Option<String>,
    /// PVE storage id for restored disks.
    pub storage: Option<String>,
    /// vm / lxc: the VMIDs a restored guest may take, `[first, last]`.
    pub vmid_range: Option<Vec<u32>>,
    /// vm / lxc with `isolated_vlan` or `separate_node`: the bridge every
    /// NIC of a restored guest is moved to (default: its own bridge).
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestEnvironmentType {
    #[default]
    Namespace,
    IsolatedVlan,
    SeparateNode,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreTestNotificationsConfig {
    pub on_success: bool,
    pub on_failure: bool,
    pub include_rto_metrics: bool,
}

impl Default for RestoreTestNotificationsConfig {
    fn default() -> Self {
        Self {
            on_success: false,
            on_failure: true,
            include_rto_metrics: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceType {
    Host,
    #[default]
    Generic,
    Vm,
    Lxc,
    Docker,
    DockerCompose,
    Systemd,
    /// Caddy, updated by loading a new config through its admin API.
    Caddy,
    /// Nginx Proxy Manager: a Compose project with default checks of its
    /// admin API and its proxy.
    NginxProxyManager,
}

impl ServiceType {
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceType::Host => "host",
            ServiceType::Generic => "generic",
            ServiceType::Vm => "vm",
            ServiceType::Lxc => "lxc",
            ServiceType::Docker => "docker",
            ServiceType::DockerCompose => "docker_compose",
            ServiceType::Systemd => "systemd",
            ServiceType::Caddy => "caddy",
            ServiceType::NginxProxyManager => "nginx_proxy_manager",
        }
    }

    /// A Compose project (`docker_compose`, `nginx_proxy_manager`): backed
    /// up, monitored and updated as one.
    pub fn is_compose(&self) -> bool {
        matches!(
            self,
            ServiceType::DockerCompose | ServiceType::NginxProxyManager
        )
    }

    /// A Proxmox guest (`vm` or `lxc`).
    pub fn is_guest(&self) -> bool {
        matches!(self, ServiceType::Vm | ServiceType::Lxc)
    }
}

/// The Proxmox host paths backed up for `type: host` by default.
pub const DEFAULT_HOST_PATHS: &[&str] = &[
    "/etc/pve/",
    "/var/lib/pve-cluster/config.db",
    "/etc/network/interfaces",
    "/etc/hosts",
    "/etc/hostname",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// `^[a-z0-9][a-z0-9_.-]{0,62}$` (used in file names).
    pub name: String,
    #[serde(rename = "type")]
    pub service_type: ServiceType,
    pub enabled: bool,
    pub backup: bool,
    /// Absolute after loading (relative ones are resolved against the
    /// directory of the file that declared them). `type: host` gets
    /// [`DEFAULT_HOST_PATHS`] when empty. Each is a path, or
    /// `{path: P, optional: true}` for one that may be absent.
    pub backup_paths: Vec<BackupPath>,
    /// Glob patterns (relative to each backup path) left out of archives.
    pub exclude: Vec<String>,
    /// Overrides `global.backup` retention keys for this service.
    pub retention: Option<RetentionConfig>,
    /// Names of `global.backup.destinations` to copy to (default: all).
    pub destinations: Option<Vec<String>>,
    /// vm/lxc: required, 100..=999999999.
    pub vmid: Option<u32>,
    /// vm/lxc: the PVE node (found via cluster resources when unset).
    pub node: Option<String>,
    /// docker_compose / nginx_proxy_manager: the compose file (absolute
    /// after loading).
    pub compose_file: Option<PathBuf>,
    /// docker_compose / nginx_proxy_manager: the project name (`-p`).
    pub compose_project: Option<String>,
    /// docker: the container name.
    pub container: Option<String>,
    /// docker / docker_compose: named volumes to back up.
    pub volumes: Vec<String>,
    /// systemd: the unit (`nginx.service`).
    pub unit: Option<String>,
    /// caddy: the Caddyfile, or a JSON config when it ends in `.json`
    /// (absolute after loading).
    pub config_file: Option<PathBuf>,
    /// caddy: the admin API (default `http://localhost:2019`, loopback
    /// only); nginx_proxy_manager: its admin API, checked by default.
    pub admin_url: Option<String>,
    /// nginx_proxy_manager: the proxy, checked by default.
    pub proxy_url: Option<String>,
    /// What a backup does to the service while it archives (docs/docker.md);
    /// see [`ServiceConfig::consistency`] for the default.
    pub backup_consistency: Option<BackupConsistency>,
    pub update: Option<ServiceUpdateConfig>,
    /// Services this one needs: updated before it, and a failed update of
    /// one skips this one.
    pub depends_on: Vec<String>,
    pub health_checks: Vec<HealthCheckConfig>,
    /// External access validation: an https URL checked from outside.
    pub external_url: Option<String>,
    pub restore_testing: Option<ServiceRestoreTestingConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            service_type: ServiceType::default(),
            enabled: true,
            backup: true,
            backup_paths: Vec::new(),
            exclude: Vec::new(),
            retention: None,
            destinations: None,
            vmid: None,
            node: None,
            compose_file: None,
            compose_project: None,
            container: None,
            volumes: Vec::new(),
            unit: None,
            config_file: None,
            admin_url: None,
            proxy_url: None,
            backup_consistency: None,
            update: None,
            depends_on: Vec::new(),
            health_checks: Vec::new(),
            external_url: None,
            restore_testing: None,
        }
    }
}

/// One `services[].backup_paths` entry: `/srv/data`, or
/// `{path: /srv/data, optional: true}`. A path that does not exist fails the
/// service's backup (almost always a typo) unless it is optional. Written
/// back (and shown to scripts) as it is written: a string, or
/// `{path, optional: true}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupPath {
    pub path: PathBuf,
    pub optional: bool,
}

impl BackupPath {
    pub fn required(path: impl Into<PathBuf>) -> Self {
        BackupPath {
            path: path.into(),
            optional: false,
        }
    }
}

impl Serialize for BackupPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if !self.optional {
            return self.path.serialize(s);
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("path", &self.path)?;
        m.serialize_entry("optional", &true)?;
        m.end()
    }
}

/// The mapping form of [`BackupPath`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BackupPathMap {
    path: PathBuf,
    optional: bool,
}

impl Default for BackupPathMap {
    fn default() -> Self {
        BackupPathMap {
            path: PathBuf::new(),
            optional: false,
        }
    }
}

impl<'de> Deserialize<'de> for BackupPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BackupPath;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path, or a mapping {path, optional}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<BackupPath, E> {
                Ok(BackupPath::required(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<BackupPath, A::Error> {
                let m =
                    BackupPathMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(BackupPath {
                    path: m.path,
                    optional: m.optional,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// `services[].backup_consistency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupConsistency {
    /// Stop the containers (or the unit), archive, start them again.
    Stop,
    /// Pause the containers (freeze their processes), archive, unpause.
    Pause,
    /// Archive while everything runs.
    Live,
}

impl BackupConsistency {
    pub fn as_str(&self) -> &'static str {
        match self {
            BackupConsistency::Stop => "stop",
            BackupConsistency::Pause => "pause",
            BackupConsistency::Live => "live",
        }
    }
}

impl ServiceConfig {
    /// `backup_consistency`, else `stop` for docker and Compose projects
    /// and `live` for every other type.
    pub fn consistency(&self) -> BackupConsistency {
        self.backup_consistency.unwrap_or(match self.service_type {
            ServiceType::Docker => BackupConsistency::Stop,
            t if t.is_compose() => BackupConsistency::Stop,
            _ => BackupConsistency::Live,
        })
    }
}

/// `services[].update`: how to update this service.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceUpdateConfig {
    pub enabled: bool,
    /// argv of the update command (replaces the type's default update).
    pub command: Vec<String>,
    /// Snapshot before updating (default: `updates.snapshot_before_update`).
    pub snapshot: Option<bool>,
    /// argv run after the update; a non-zero exit fails the validation.
    pub validate_command: Vec<String>,
    /// argv run to undo a failed update.
    pub rollback_command: Vec<String>,
    /// A verified backup of the service at most this many hours old must
    /// exist before it is updated; one is taken when there is none.
    pub require_backup_hours: Option<f64>,
    /// docker_compose: back up the project's volumes before the update and
    /// restore them on rollback.
    pub backup_volumes: bool,
}

impl Default for ServiceUpdateConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            command: Vec::new(),
            snapshot: None,
            validate_command: Vec::new(),
            rollback_command: Vec::new(),
            require_backup_hours: None,
            backup_volumes: false,
        }
    }
}

/// `services[].restore_testing`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceRestoreTestingConfig {
    pub enabled: bool,
    pub priority: RestoreTestPriority,
    /// Checks run against the restored copy.
    pub health_checks: Vec<HealthCheckConfig>,
}

impl Default for ServiceRestoreTestingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            priority: RestoreTestPriority::Normal,
            health_checks: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreTestPriority {
    Low,
    #[default]
    Normal,
    High,
}

/// One string or a list of strings.
pub(crate) fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string or a list of strings")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<String>, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(s) = seq.next_element::<String>()? {
                out.push(s);
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}
