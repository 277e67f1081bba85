//! Loader tests: whole files on disk, exact error lines, services.d merging,
//! relative paths, permissions and redaction.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn write(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    // Canonical, as the loader reports it (in case the temp dir is a symlink).
    p.parent()
        .unwrap()
        .canonicalize()
        .unwrap()
        .join(p.file_name().unwrap())
}

fn load_ok(path: &Path) -> Config {
    match load(path, &LoadOptions::default()) {
        Ok(c) => c,
        Err(e) => panic!("load failed:\n{e}"),
    }
}

fn config_errors(path: &Path) -> Vec<String> {
    match load(path, &LoadOptions::default()) {
        Err(Error::Config(lines)) => lines,
        Err(e) => panic!("expected config errors, got {e:?}"),
        Ok(_) => panic!("expected config errors, loaded fine"),
    }
}

/// Every key of the schema at least once.
const FULL: &str = r#"
global:
  hypervisor: proxmox
  proxmox:
    api_url: https://192.168.1.10:8006
    token_id: root@pam!autopilot
    token_secret_file: secrets/pve_token
    fingerprint: "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
    ca_file: /etc/ssl/certs/ca.pem
    insecure: false
    local: false
  paths:
    state_dir: state
    log_dir: /var/log/ha
    scripts_dir: scripts
    lock_dir: /run/lock/ha
    metrics_dir: prom
  scripts:
    timeout_seconds: 600
    max_operations: 1000000
  backup:
    enabled: true
    root: backups
    retention_days: 14
    keep_last: 3
    keep_daily: 7
    keep_weekly: 4
    keep_monthly: 6
    keep_yearly: 1
    compression: true
    compression_algorithm: zstd
    compression_level: 5
    threads: 2
    verify: checksum
    nice: 10
    ionice: idle
    schedule: "30 2 * * *"
    destinations:
      - name: nas
        path: /mnt/nfs/homelab
    proxmox_backup_server:
      enabled: true
      storage: pbs-main
      server: 192.168.1.100
      port: 8007
      datastore: proxmox-backups
      username: root@pam
      password_command: "cat /etc/homelab-autopilot/secrets/pbs_password"
      fingerprint:
        - "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"
      namespace: homelab/pve
      verify_ssl: true
    direct_storage:
      enabled: false
      storage: local
      path: /mnt/nfs/dump
      format: vma
    restore_testing:
      enabled: true
      schedule: monthly
      random_services: 3
      test_environment:
        type: isolated_vlan
        vlan_id: 999
        network: 10.99.0.0/24
        node: pve2
        storage: local-lvm
      rto_target_minutes: 15
      cleanup_after_test: true
      cleanup_delay_minutes: 5
      notifications:
        on_success: false
        on_failure: true
        include_rto_metrics: true
notifications:
  enabled: true
  cooldown_minutes: 30
  channels:
    - name: mail
      type: email
      enabled: true
      events: [backup_failed, service_down]
      min_severity: warning
      fallback: chat
      smtp_server: 127.0.0.1
      smtp_port: 2525
      security: none
      username: u
      password_file: secrets/smtp
      from: autopilot@example.org
      to: [admin@example.org]
      html: false
    - name: hook
      type: webhook
      url: http://127.0.0.1:8080/hook
      secret_command: [pass, show, hook]
      headers: {X-Foo: bar}
    - name: chat
      url: https://discord.com/api/webhooks/123456789012345678/AbCdEfGhIjKlMnOpQrStUvWxYz0123456789
    - name: ntfy
      type: ntfy
      url: https://ntfy.sh/mytopic
      priority: high
      tags: [backup]
    - name: hc
      type: healthchecks
      url: https://hc-ping.com/0b7f3b6a-8c1d-4e2f-9a3b-5c6d7e8f9a0b
      workflows: [backup]
    - name: kuma
      type: uptime_kuma
      url: https://kuma.example/api/push/Rk7x9QaB2c
    - name: admin-script
      type: command
      command: [/usr/local/bin/notify-me, --json]
    - name: tg
      url: telegram://123456:ABCdefGHI@telegram?chats=@mychan
monitoring:
  enabled: true
  schedule: "*/5 * * * *"
  fail_after: 2
  recover_after: 1
  remind_every_minutes: 0
  concurrency: 64
  timeout_seconds: 10
  resources: {disk_warn_percent: 90, memory_warn_percent: 90, load_warn: 0, paths: [/]}
  maintenance_windows:
    - name: sunday
      schedule: "0 3 * * 0"
      duration_minutes: 60
      services: [web]
updates:
  enabled: true
  schedule: "0 4 * * 0"
  snapshot_before_update: true
  rollback_on_failure: true
  keep_snapshot_hours: 24
  health_check_timeout_seconds: 300
  sequential: true
services:
  - name: pve-host
    type: host
  - name: web
    type: generic
    enabled: true
    backup: true
    backup_paths: [data/web, /etc/nginx]
    exclude: ["*.tmp"]
    retention: {retention_days: 7, keep_last: 2}
    destinations: [nas]
    update: {enabled: true, command: [/usr/local/bin/update-web], snapshot: false}
    health_checks:
      - type: http
        name: front
        url: http://127.0.0.1:8081/
        method: GET
        expected_status: 200
        body_contains: ok
        body_regex: "o+k"
        max_latency_ms: 500
        headers: {Host: web.lan}
        follow_redirects: false
        tls_expiry_warn_days: 14
        timeout_seconds: 5
      - type: tcp
        host: 127.0.0.1
        port: 8081
        parent: front
      - type: dns
        hostname: web.lan
      - type: process
        process: nginx
      - type: process
        pid_file: run/web.pid
      - type: custom
        script: checks/web.sh
    external_url: https://cloud.example.org
  - name: nextcloud
    type: vm
    vmid: 200
    node: pve1
    restore_testing:
      enabled: true
      priority: high
      health_checks:
        - type: http
          url: "http://localhost/status.php"
          expected_status: 200
        - type: database
          command: "mysql -e 'SELECT 1'"
        - type: command
          command: [/bin/true]
  - name: ct
    type: lxc
    vmid: 101
  - name: app
    type: docker_compose
    compose_file: app/docker-compose.yml
    compose_project: app
    volumes: [app_data]
  - name: cache
    type: docker
    container: redis
    volumes: [redis-data]
    health_checks:
      - type: container
        container: redis
  - name: nginx
    type: systemd
    unit: nginx.service
"#;

fn full_setup() -> (tempfile::TempDir, PathBuf) {
    // FULL holds the sections of workflows not shipped yet too, which
    // validation refuses (tested in `pending_sections_are_refused`).
    super::validate::tests_allow_pending::set(true);
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "etc/homelab-autopilot.yaml", FULL, 0o600);
    write(
        tmp.path(),
        "etc/secrets/pve_token",
        "pve-token-secret-value\n",
        0o600,
    );
    write(
        tmp.path(),
        "etc/secrets/smtp",
        "smtp-password-value\n",
        0o600,
    );
    (tmp, main)
}

#[test]
fn every_documented_key_loads() {
    let (tmp, main) = full_setup();
    let cfg = load_ok(&main);
    let etc = tmp.path().canonicalize().unwrap().join("etc");

    assert_eq!(cfg.source, main);
    assert_eq!(cfg.files, vec![main.clone()]);
    assert!(cfg.global.is_proxmox());
    let px = cfg.global.proxmox.as_ref().unwrap();
    assert_eq!(
        px.token_secret_source(),
        Some(SecretSource::File(etc.join("secrets/pve_token")))
    );
    assert_eq!(px.fingerprint.len(), 1);

    let b = &cfg.global.backup;
    assert_eq!(b.root.as_deref(), Some(etc.join("backups").as_path()));
    assert_eq!(
        b.retention,
        RetentionConfig {
            retention_days: Some(14),
            keep_last: Some(3),
            keep_daily: Some(7),
            keep_weekly: Some(4),
            keep_monthly: Some(6),
            keep_yearly: Some(1),
        }
    );
    assert_eq!(
        (b.compression_level, b.threads, b.verify.as_str()),
        (5, 2, "checksum")
    );
    assert_eq!(b.cron_schedule().unwrap().as_str(), "30 2 * * *");
    let pbs = b.proxmox_backup_server.as_ref().unwrap();
    assert_eq!(
        pbs.password_source(),
        Some(SecretSource::Command(CommandSpec::Shell(
            "cat /etc/homelab-autopilot/secrets/pbs_password".into()
        )))
    );
    let rt = b.restore_testing.as_ref().unwrap();
    assert_eq!(
        rt.test_environment.env_type,
        TestEnvironmentType::IsolatedVlan
    );
    assert_eq!(rt.schedule.as_str(), "monthly");
    assert_eq!(
        cfg.global.paths.state_dir.as_deref(),
        Some(etc.join("state").as_path())
    );
    assert_eq!(
        cfg.global.paths.metrics_dir.as_deref(),
        Some(etc.join("prom").as_path())
    );

    let kinds: Vec<_> = cfg
        .notifications
        .channels
        .iter()
        .map(|c| c.channel_type.unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            ChannelType::Email,
            ChannelType::Webhook,
            ChannelType::Discord,
            ChannelType::Ntfy,
            ChannelType::Healthchecks,
            ChannelType::UptimeKuma,
            ChannelType::Command,
            ChannelType::Telegram,
        ]
    );
    let mail = cfg.notifications.channel("mail").unwrap();
    assert_eq!(
        mail.password_source(),
        Some(SecretSource::File(etc.join("secrets/smtp")))
    );
    assert!(!mail.wants(EventType::BackupSuccess));

    let web = cfg.service("web").unwrap();
    assert!(web.enabled && web.backup);
    assert_eq!(
        web.backup_paths,
        [
            BackupPath::required(etc.join("data/web")),
            BackupPath::required("/etc/nginx")
        ]
    );
    assert_eq!(web.health_checks.len(), 6);
    assert_eq!(
        web.health_checks[4].pid_file.as_deref(),
        Some(etc.join("run/web.pid").as_path())
    );
    assert_eq!(
        web.health_checks[5].script.as_deref(),
        Some(etc.join("checks/web.sh").as_path())
    );
    assert_eq!(web.health_checks[0].display_name(), "front");
    let nc = cfg.service("nextcloud").unwrap();
    assert_eq!((nc.vmid, nc.node.as_deref()), (Some(200), Some("pve1")));
    let db_check = &nc.restore_testing.as_ref().unwrap().health_checks[1];
    assert_eq!(
        db_check.command,
        Some(CommandSpec::Shell("mysql -e 'SELECT 1'".into()))
    );
    let app = cfg.service("app").unwrap();
    assert_eq!(
        app.compose_file.as_deref(),
        Some(etc.join("app/docker-compose.yml").as_path())
    );
    assert_eq!(
        cfg.service("pve-host").unwrap().service_type,
        ServiceType::Host
    );
    assert_eq!(cfg.schedules().len(), 4);
}

#[test]
fn relative_paths_resolve_against_the_declaring_file_from_any_cwd() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(
        tmp.path(),
        "conf/main.yaml",
        "global:\n  backup:\n    root: ../backups\nservices:\n  - name: a\n    backup_paths: [data]\n",
        0o600,
    );
    write(
        tmp.path(),
        "conf/services.d/b.yaml",
        "services:\n  - name: b\n    backup_paths: [../bdata, /abs]\n",
        0o600,
    );
    // A relative path to the config itself is made absolute first.
    let other_cwd = tempfile::tempdir().unwrap();
    let rel = pathdiff(&main, other_cwd.path());
    let cfg = {
        let _guard = CwdGuard::enter(other_cwd.path());
        load_ok(&rel)
    };
    let conf = tmp.path().canonicalize().unwrap().join("conf");
    assert_eq!(cfg.global.backup.root, Some(conf.join("../backups")));
    let paths = |n: &str| -> Vec<PathBuf> {
        cfg.service(n)
            .unwrap()
            .backup_paths
            .iter()
            .map(|p| p.path.clone())
            .collect()
    };
    assert_eq!(paths("a"), [conf.join("data")]);
    assert_eq!(
        paths("b"),
        [conf.join("services.d/../bdata"), PathBuf::from("/abs")]
    );
    assert_eq!(cfg.files.len(), 2);
}

/// `target` relative to `base` (both absolute): enough `..` then the rest.
fn pathdiff(target: &Path, base: &Path) -> PathBuf {
    let mut up = PathBuf::new();
    for _ in base.components().skip(1) {
        up.push("..");
    }
    up.join(target.strip_prefix("/").unwrap())
}

/// Changes the cwd for one test; tests that depend on the cwd hold the lock.
struct CwdGuard {
    old: PathBuf,
    _lock: std::sync::MutexGuard<'static, ()>,
}

static CWD_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl CwdGuard {
    fn enter(dir: &Path) -> CwdGuard {
        let lock = CWD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let old = std::env::current_dir().unwrap();
        std::env::set_current_dir(dir).unwrap();
        CwdGuard { old, _lock: lock }
    }
}

impl Drop for CwdGuard {
    fn drop(&mut self) {
        let _ = std::env::set_current_dir(&self.old);
    }
}

#[test]
fn every_error_is_reported_at_once_with_file_line_column_and_path() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(
        tmp.path(),
        "main.yaml",
        r#"global:
  backup:
    schedule: "61 2 * * *"
    retention_dayz: 7
monitoring:
  schedule: "*/5 * * *"
services:
  - name: web
    type: generic
    enabled: maybe
    backup_paths: /srv/web
  - name: db
    type: docker
    container: db
    colour: blue
"#,
        0o600,
    );
    let extra = write(
        tmp.path(),
        "services.d/10-more.yaml",
        "services:\n  - name: web\n    type: generic\n",
        0o600,
    );
    let m = main.display();
    let x = extra.display();
    assert_eq!(
        config_errors(&main),
        [
            format!("{m}:3:15: global.backup.schedule: minute field '61': 61 is out of range 0-59"),
            format!("{m}:4:5: global.backup.retention_dayz: unknown key 'retention_dayz' (did you mean 'retention_days'?)"),
            format!(
                "{m}:6:13: monitoring.schedule: expected 5 fields (minute hour day-of-month month \
                 day-of-week) or a nickname like @daily, found 4 fields in '*/5 * * *'"
            ),
            format!("{m}:10:14: services[0].enabled: expected a boolean (true or false), found a string 'maybe'"),
            format!("{m}:11:19: services[0].backup_paths: expected a list, found a string '/srv/web'"),
            format!("{m}:15:5: services[1].colour: unknown key 'colour'"),
            format!("{x}:2:11: services[0].name: duplicate service name 'web' (first defined at {m}:8:11)"),
        ]
    );
}

#[test]
fn semantic_errors_point_at_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(
        tmp.path(),
        "c.yaml",
        r#"global:
  backup:
    compression_algorithm: gzip
    compression_level: 22
    verify: ful
    destinations: [{name: nas, path: /mnt/nas}]
notifications:
  channels:
    - name: chat
      url: https://example.org/hook
    - name: mail
      type: email
      url: https://example.org/x
      fallback: nobody
monitoring:
  resources: {paths: [relative/dir]}
services:
  - name: Web
    type: docker
    vmid: 100
  - name: guest
    type: vm
  - name: app
    type: docker_compose
    compose_file: /x.yml
    compose_project: "My App"
    destinations: [nsa]
    health_checks:
      - type: tcp
        url: http://x/
      - url: http://y/
"#,
        0o600,
    );
    let m = main.display();
    assert_eq!(
        config_errors(&main),
        [
            format!("{m}:3:28: global.backup.compression_algorithm: unsupported compression algorithm 'gzip' (only zstd is supported)"),
            format!("{m}:4:24: global.backup.compression_level: must be between 1 and 19, found 22"),
            format!("{m}:5:13: global.backup.verify: unknown value 'ful', expected one of: full, checksum (did you mean 'full'?)"),
            format!("{m}:10:12: notifications.channels[0].url: cannot tell the channel type from this URL: set 'type'"),
            format!("{m}:13:12: notifications.channels[1].url: URL scheme 'https' is not supported here (use smtp://, mailto://, mailtos://)"),
            format!("{m}:14:17: notifications.channels[1].fallback: unknown channel 'nobody'"),
            format!("{m}:16:23: monitoring.resources.paths[0]: path must be absolute"),
            format!("{m}:18:5: services[0].container: missing required key 'container'"),
            format!("{m}:18:11: services[0].name: invalid service name 'Web' (expected [a-z0-9][a-z0-9_.-]{{0,62}})"),
            format!("{m}:20:11: services[0].vmid: 'vmid' applies only to type vm/lxc, not docker"),
            format!("{m}:21:5: services[1].vmid: missing required key 'vmid' (type vm needs it)"),
            format!("{m}:22:11: services[1].type: type vm needs global.hypervisor: proxmox"),
            format!("{m}:26:22: services[2].compose_project: invalid compose project name 'My App' (expected [a-z0-9][a-z0-9_-]*)"),
            format!("{m}:27:20: services[2].destinations[0]: unknown destination 'nsa' (define it in global.backup.destinations)"),
            format!("{m}:29:9: services[2].health_checks[0].host: missing required key 'host'"),
            format!("{m}:29:9: services[2].health_checks[0].port: missing required key 'port'"),
            format!("{m}:30:14: services[2].health_checks[0].url: 'url' does not apply to a check of type tcp"),
            format!("{m}:31:9: services[2].health_checks[1].type: missing required key 'type'"),
        ]
    );
}

#[test]
fn services_d_files_may_only_hold_services() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(tmp.path(), "main.yaml", "services: []\n", 0o600);
    let extra = write(
        tmp.path(),
        "services.d/a.yaml",
        "global: {}\nservices:\n  - name: x\n",
        0o600,
    );
    assert_eq!(
        config_errors(&main),
        [format!(
            "{}:1:1: global: unknown key 'global'",
            extra.display()
        )]
    );
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("services: [a,\n", "2:1: yaml: "),
        (
            "a: 1\na: 2\n",
            "2:1: yaml: duplicate key 'a' (first at line 1:1)",
        ),
        ("a: &x 1\nb: *y\n", "2:4: yaml: "),
        ("x:\n  <<: 5\n", "2:7: yaml: '<<' (merge) takes a mapping"),
        (
            "a: !!str 1\n",
            "1:10: yaml: YAML tags (!tag) are not supported",
        ),
        ("- a\n", "1:1: yaml: the top level must be a mapping"),
        (
            "services: []\n---\nservices: []\n",
            "2:1: yaml: only one YAML document per file is supported",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = write(tmp.path(), &format!("s{i}.yaml"), text, 0o600);
        let errors = config_errors(&p);
        assert_eq!(errors.len(), 1, "{text:?}: {errors:?}");
        let want = format!("{}:{want}", p.display());
        assert!(
            errors[0].starts_with(&want),
            "{text:?}: {} does not start with {want}",
            errors[0]
        );
    }
}

#[test]
fn an_empty_file_is_an_error_unless_services_d_adds_services() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "empty.yaml", "# nothing yet\n", 0o644);
    let errors = config_errors(&p);
    assert!(
        errors[0].contains("the configuration is empty"),
        "{errors:?}"
    );
    write(
        tmp.path(),
        "services.d/web.yaml",
        "services:\n  - name: web\n    type: generic\n    backup_paths: [/srv/web]\n",
        0o644,
    );
    let cfg = load_ok(&p);
    assert_eq!(cfg.services.len(), 1);
    assert!(cfg.global.backup.enabled);
    assert_eq!(cfg.monitoring.schedule.as_str(), "*/5 * * * *");
}

#[test]
fn a_missing_config_file_is_a_config_error() {
    let err = load(Path::new("/nonexistent/ha.yaml"), &LoadOptions::default()).unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit::CONFIG);
    assert!(err
        .to_string()
        .starts_with("/nonexistent/ha.yaml: cannot read configuration file"));
    let err = locate(Some(Path::new("/nonexistent/ha.yaml"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/ha.yaml: configuration file not found (given with --config)"
    );
}

const PROXMOX_WITH: &str = "global:\n  hypervisor: proxmox\n  proxmox:\n    api_url: https://pve:8006\n    token_id: root@pam!ha\n";

#[test]
fn group_readable_secret_files_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(
        tmp.path(),
        "c.yaml",
        &format!("{PROXMOX_WITH}    token_secret_file: tok\n"),
        0o644,
    );
    let tok = write(tmp.path(), "tok", "secret-token-value", 0o644);
    match load(&main, &LoadOptions::default()) {
        Err(Error::InsecurePermissions { path, message }) => {
            assert_eq!(path, tok);
            assert!(
                message.contains("secret file (global.proxmox.token_secret_file): mode 0644"),
                "{message}"
            );
        }
        other => panic!("expected InsecurePermissions, got {other:?}"),
    }
    let err = load(&main, &LoadOptions::default()).unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit::PERMISSIONS);

    // --insecure-permissions only warns.
    load(
        &main,
        &LoadOptions {
            insecure_permissions: true,
        },
    )
    .unwrap();

    // 0600 is fine, and a 0644 config without inline secrets is fine.
    std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
    load_ok(&main);
}

#[test]
fn a_missing_secret_file_is_a_config_error() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(
        tmp.path(),
        "c.yaml",
        &format!("{PROXMOX_WITH}    token_secret_file: nope\n"),
        0o600,
    );
    let want = format!(
        "{}:6:24: global.proxmox.token_secret_file: secret file {} does not exist",
        main.display(),
        tmp.path().join("nope").display()
    );
    assert_eq!(config_errors(&main), [want]);
}

#[test]
fn inline_secrets_need_a_private_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!("{PROXMOX_WITH}    token_secret: inline-token-secret-1\n");
    let main = write(tmp.path(), "c.yaml", &text, 0o644);
    match load(&main, &LoadOptions::default()) {
        Err(Error::InsecurePermissions { path, message }) => {
            assert_eq!(path, main);
            assert!(message.contains("inline secret"), "{message}");
        }
        other => panic!("expected InsecurePermissions, got {other:?}"),
    }
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = load_ok(&main);
    // Registered for redaction, and never serialised.
    assert_eq!(crate::redact::scrub("x inline-token-secret-1"), "x ***");
    assert!(!cfg.to_redacted_yaml().contains("inline-token-secret-1"));

    // env: and credential: references are not inline secrets.
    let text = format!("{PROXMOX_WITH}    token_secret: env:PVE_TOKEN\n");
    let main = write(tmp.path(), "d.yaml", &text, 0o644);
    let cfg = load_ok(&main);
    let src = cfg.global.proxmox.unwrap().token_secret_source();
    assert_eq!(src, Some(SecretSource::Env("PVE_TOKEN".into())));
}

#[test]
fn secret_keys_are_exclusive() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "{PROXMOX_WITH}    token_secret: a-secret\n    token_secret_command: [pass, pve]\n"
    );
    let main = write(tmp.path(), "c.yaml", &text, 0o600);
    assert_eq!(
        config_errors(&main),
        [format!(
            "{}:7:5: global.proxmox.token_secret_command: only one of token_secret, token_secret_file, \
             token_secret_command may be set",
            main.display()
        )]
    );
}

#[test]
fn show_output_redacts_secrets_and_urls() {
    let (_tmp, main) = full_setup();
    let mut cfg = load_ok(&main);
    cfg.global.proxmox.as_mut().unwrap().token_secret = Some(Secret::new("very-secret-inline"));
    let yaml = cfg.to_redacted_yaml();
    assert!(
        yaml.contains("token_secret: '***'") || yaml.contains("token_secret: \"***\""),
        "{yaml}"
    );
    assert!(
        yaml.contains("https://discord.com/api/webhooks/123456789012345678/***"),
        "{yaml}"
    );
    assert!(yaml.contains("retention_days: 14"), "{yaml}");
    for secret in [
        "very-secret-inline",
        "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789",
        "0b7f3b6a-8c1d",
        "Rk7x9QaB2c",
        "ABCdefGHI",
    ] {
        assert!(!yaml.contains(secret), "{secret} leaked:\n{yaml}");
    }
    let json = cfg.to_redacted_json();
    assert_eq!(json["global"]["proxmox"]["token_secret"], "***");
    assert_eq!(json["notifications"]["channels"][2]["type"], "discord");
    assert_eq!(json["global"]["backup"]["keep_daily"], 7);
    assert_eq!(json["monitoring"]["schedule"], "*/5 * * * *");
    let text = json.to_string();
    assert!(!text.contains("AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"));
    // config::get serialises one section at a time: the same values.
    let sections = json.as_object().unwrap();
    assert_eq!(
        sections.len(),
        7,
        "global, notifications, monitoring, updates, daemon, http, services"
    );
    for (name, value) in sections {
        assert_eq!(&cfg.redacted_section_json(name), value, "{name}");
    }
    assert!(cfg.redacted_section_json("nope").is_null());
}

#[test]
fn the_redacted_yaml_loads_back() {
    // `config show` output is itself a valid config (secrets aside).
    let (tmp, main) = full_setup();
    let cfg = load_ok(&main);
    let shown = cfg.to_redacted_yaml();
    let again = write(tmp.path(), "etc/again.yaml", &shown, 0o600);
    let back = load_ok(&again);
    assert_eq!(back.services.len(), cfg.services.len());
    assert_eq!(back.global.backup.retention, cfg.global.backup.retention);
}

#[test]
fn locate_prefers_the_flag_then_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write(tmp.path(), "a.yaml", "", 0o600);
    let b = write(tmp.path(), "b.yaml", "", 0o600);
    std::env::set_var(CONFIG_ENV, &b);
    assert_eq!(locate(None).unwrap(), b);
    assert_eq!(locate(Some(&a)).unwrap(), a);
    std::env::set_var(CONFIG_ENV, tmp.path().join("missing.yaml"));
    let err = locate(None).unwrap_err();
    assert_eq!(err.exit_code(), crate::error::exit::CONFIG);
    assert!(
        err.to_string().contains("$HOMELAB_AUTOPILOT_CONFIG"),
        "{err}"
    );
    std::env::remove_var(CONFIG_ENV);
}

#[test]
fn every_check_key_is_common_or_belongs_to_a_type() {
    // Service maps keep a check's common keys and its type's keys: no
    // field may fall outside both.
    let json = serde_json::to_value(HealthCheckConfig::default()).unwrap();
    let all_types = [
        HealthCheckType::Http,
        HealthCheckType::Tcp,
        HealthCheckType::Dns,
        HealthCheckType::Process,
        HealthCheckType::Container,
        HealthCheckType::Compose,
        HealthCheckType::Command,
        HealthCheckType::Database,
        HealthCheckType::Custom,
    ];
    for key in json.as_object().unwrap().keys() {
        assert!(
            HealthCheckConfig::COMMON_KEYS.contains(&key.as_str())
                || all_types.iter().any(|t| t.keys().contains(&key.as_str())),
            "{key}"
        );
    }
}

#[test]
fn backup_paths_take_a_path_or_a_mapping_with_optional() {
    let tmp = tempfile::tempdir().unwrap();
    let main = write(
        tmp.path(),
        "c.yaml",
        "services:\n  - name: web\n    backup_paths:\n      - /srv/a\n      - {path: /srv/b, optional: true}\n      - {path: rel}\n",
        0o600,
    );
    let cfg = load(&main, &LoadOptions::default()).unwrap();
    let dir = main.parent().unwrap();
    assert_eq!(
        cfg.service("web").unwrap().backup_paths,
        [
            BackupPath::required("/srv/a"),
            BackupPath {
                path: "/srv/b".into(),
                optional: true
            },
            BackupPath::required(dir.join("rel")),
        ]
    );
    let bad = write(
        tmp.path(),
        "d.yaml",
        "services:\n  - name: web\n    backup_paths:\n      - {optional: true}\n      - {path: /x, optinal: true}\n",
        0o600,
    );
    let errs = config_errors(&bad);
    let m = bad.display();
    assert!(
        errs.iter().any(|e| e.starts_with(&format!("{m}:4:"))
            && e.contains("services[0].backup_paths[0]")
            && e.contains("needs a path")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&format!("{m}:5:")) && e.contains("optinal")),
        "{errs:?}"
    );
}

#[test]
fn a_vmid_range_is_ordered_within_pve_ids_and_holds_no_service() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = |range: &str| {
        format!(
            "global:\n  backup:\n    restore_testing:\n      test_environment: {{vmid_range: {range}, bridge: vmbr9}}\n  hypervisor: proxmox\n  proxmox: {{local: true}}\nservices:\n  - name: web\n    type: vm\n    vmid: 9950\n    node: pve1\n"
        )
    };
    let main = write(tmp.path(), "c.yaml", &cfg("[9900, 9940]"), 0o600);
    if let Err(e) = load(&main, &LoadOptions::default()) {
        panic!("{e}");
    }
    let m = main.display();
    let at = format!("{m}:4:26: global.backup.restore_testing.test_environment.vmid_range:");
    for (range, want) in [
        ("[9999, 9900]", "first must not be above last"),
        ("[50, 9900]", "must be within 100 and 999999999"),
        ("[9900]", "expected two VMIDs"),
        (
            "[9900, 9999]",
            "holds VMID 9950 of service web (services[0].vmid)",
        ),
    ] {
        std::fs::write(&main, cfg(range)).unwrap();
        let errs = config_errors(&main);
        assert!(
            errs.len() == 1 && errs[0].starts_with(&at) && errs[0].contains(want),
            "{range}: {errs:?}"
        );
    }
}
