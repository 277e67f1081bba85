//! Secrets are masked from the moment the configuration is loaded: a user
//! workflow that logs, prints, throws and notifies every secret of the
//! configuration before any delivery leaves none of them in stdout, stderr,
//! the `--json` output, the log files, the state database (and its WAL) or
//! the bodies a webhook receiver gets. And a configuration file holding
//! credentials only inside URLs must be private (exit 77).

use crate::harness::free_port;
use crate::harness::{basic_config, walk, Run, Test};
use crate::notify::{ok, Receiver, Reply};
use std::os::unix::fs::PermissionsExt;

/// One sentinel per kind of secret. The inline one holds a `"` and a `\`
/// so that its JSON-escaped form is exercised too.
const INLINE: &str = r#"inline-pw-"q"\-S3NT-a1"#;
const PASSWORD_FILE: &str = "password-file-S3NT-b2";
const TOKEN_FILE: &str = "token-secret-file-S3NT-c3";
const ENV: &str = "env-secret-S3NT-d4";
const CREDENTIAL: &str = "credential-secret-S3NT-e5";
/// The userinfo password as written in the URL, and as it is used.
const USERINFO_URL: &str = "userinfo%40S3NT-f6";
const USERINFO: &str = "userinfo@S3NT-f6";
const QUERY_TOKEN: &str = "querytokenS3NTg7";
const PATH_TOKEN: &str = "pathtokenS3NTh8xyz";
const COMMAND: &str = "command-secret-S3NT-i9";

/// The sentinels a workflow can know before any delivery (a command secret
/// is not read until a channel needs it).
const AT_LOAD: [&str; 9] = [
    INLINE,
    PASSWORD_FILE,
    TOKEN_FILE,
    ENV,
    CREDENTIAL,
    USERINFO_URL,
    USERINFO,
    QUERY_TOKEN,
    PATH_TOKEN,
];

fn private(t: &Test, rel: &str, content: &str) -> String {
    t.write(rel, content);
    let p = t.path(rel);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// A string as a Rhai string literal.
fn rhai_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The sentinel, and its JSON-escaped form, in none of the texts.
#[track_caller]
fn assert_absent(what: &str, text: &str) {
    for s in AT_LOAD.iter().chain([&COMMAND]) {
        let escaped = serde_json::to_string(s).unwrap();
        let escaped = &escaped[1..escaped.len() - 1];
        assert!(
            !text.contains(s) && !text.contains(escaped),
            "{what} leaks {s:?}:\n{text}"
        );
    }
}

/// Every file under `dir` (log files, state.db, state.db-wal), as bytes.
#[track_caller]
fn assert_tree_clean(dir: &std::path::Path) -> usize {
    let mut files = 0;
    walk(dir, &mut |p| {
        if p.is_file() {
            files += 1;
            let bytes = std::fs::read(p).unwrap();
            assert_absent(&p.display().to_string(), &String::from_utf8_lossy(&bytes));
        }
    });
    files
}

#[test]
fn every_secret_is_masked_from_load_on_in_every_output() {
    let t = Test::new();
    let rx = Receiver::start(ok());
    let smtp = free_port();
    let pw_file = private(&t, "secrets/smtp", &format!("{PASSWORD_FILE}\n"));
    let tok_file = private(&t, "secrets/pve_token", TOKEN_FILE);
    // What a password manager's command prints: only the command knows it.
    let cmd_file = private(&t, "vault/hook2", COMMAND);
    private(&t, "creds/hook_hmac", &format!("{CREDENTIAL}\n"));
    let yaml_inline = serde_json::to_string(INLINE).unwrap();
    t.config(&format!(
        r#"global:
  backup:
    root: {{root}}/backups
  proxmox:
    api_url: https://127.0.0.1:{pve}
    token_id: root@pam!ha
    token_secret_file: {tok_file}
notifications:
  channels:
    - name: mail
      type: email
      smtp_server: 127.0.0.1
      smtp_port: {smtp}
      security: none
      username: u
      password: {yaml_inline}
      from: a@example.org
      to: [b@example.org]
      events: [restore_test_failed]
    - name: mailfile
      type: email
      smtp_server: 127.0.0.1
      smtp_port: {smtp}
      security: none
      username: u
      password_file: {pw_file}
      from: a@example.org
      to: [b@example.org]
      events: [restore_test_failed]
    - name: mailurl
      url: smtp://u:{USERINFO_URL}@127.0.0.1:{smtp}/?from=a@example.org&to=b@example.org
      events: [restore_test_failed]
    - name: phone
      type: ntfy
      url: {ntfy}
      username: bob
      password: env:HLA_SECRET_ENV
    - name: hook
      type: webhook
      url: {hook}
      secret: credential:hook_hmac
    - name: gotify
      type: gotify
      url: {gotify}
    - name: cmdhook
      type: webhook
      url: {cmdhook}
      secret_command: [cat, {cmd_file}]
services:
  - name: web
    type: generic
    backup_paths: [{{root}}/data/web]
"#,
        pve = free_port(),
        ntfy = rx.url("/topic"),
        hook = rx.url(&format!("/hook?token={QUERY_TOKEN}")),
        gotify = rx.url(&format!("/gotify/{PATH_TOKEN}")),
        cmdhook = rx.url("/cmdhook"),
    ));
    let list = AT_LOAD
        .iter()
        .map(|s| rhai_str(s))
        .collect::<Vec<_>>()
        .join(", ");
    t.script(
        "leak.rhai",
        &format!(
            r#"fn run(ctx) {{
    let secrets = [{list}];
    for s in secrets {{
        log::info("logged " + s);
        log::warn("warned " + s);
        print("printed " + s);
    }}
    let all = "";
    for s in secrets {{ all += " " + s; }}
    notify::send("backup_failed", #{{ summary: "summary" + all, leaked: secrets, note: all }});
    throw "thrown" + all;
}}
"#
        ),
    );
    // The channels are delivered in order; the receiver that takes the
    // command secret answers with an error quoting it, as a misconfigured
    // proxy might: the error is logged and recorded after the command ran.
    rx.push(ok());
    rx.push(ok());
    rx.push(ok());
    rx.push(Reply::Status(
        403,
        vec![],
        format!("signature key {COMMAND} rejected"),
    ));
    let run = |args: &[&str]| {
        Run::from_output(
            t.command(args)
                .env("HLA_SECRET_ENV", ENV)
                .env("CREDENTIALS_DIRECTORY", t.path("creds"))
                .output()
                .unwrap(),
        )
    };
    let r = run(&["--json", "run", "leak"]);
    r.code(1);
    // The workflow did log, print, throw and notify (masked).
    r.stderr_has("logged ***");
    r.stderr_has("printed ***");
    r.stderr_has("thrown ***");
    assert_absent("stdout of --json run", &r.stdout);
    assert_absent("stderr of --json run", &r.stderr);
    r.json();

    // Every channel that was due got its message; the command secret was
    // read (the HMAC proves it) and its echo in the error was masked.
    let reqs = rx.requests();
    let paths: Vec<&str> = reqs.iter().map(|q| q.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/topic".to_string(),
            format!("/hook?token={QUERY_TOKEN}"),
            "/gotify/message".to_string(),
            "/cmdhook".to_string(),
        ],
        "{reqs:?}"
    );
    assert!(reqs[3]
        .header("X-Homelab-Autopilot-Signature")
        .is_some_and(|s| s.starts_with("sha256=")));
    for q in &reqs {
        assert_absent(&format!("body sent to {}", q.path), &q.text());
    }
    assert!(
        r.stderr.contains("signature key *** rejected"),
        "{}",
        r.stderr
    );

    // A second run, JSON logs on stderr: the JSON-escaped forms are masked.
    for _ in 0..4 {
        rx.push(ok());
    }
    let j = run(&["--log-format", "json", "run", "leak"]);
    j.code(1);
    assert!(j.stderr.contains("logged ***"), "{}", j.stderr);
    assert_absent("stdout of a JSON-log run", &j.stdout);
    assert_absent("stderr of a JSON-log run", &j.stderr);
    for q in rx.requests() {
        assert_absent(&format!("body sent to {}", q.path), &q.text());
    }

    // What the state keeps, as other commands print it.
    for args in [
        &["--json", "status"][..],
        &["status"],
        &["--json", "config", "show"],
        &["config", "show"],
    ] {
        let o = run(args);
        o.code(0);
        assert_absent(&format!("stdout of {args:?}"), &o.stdout);
        assert_absent(&format!("stderr of {args:?}"), &o.stderr);
    }

    // The log files, the state database and its WAL, read as bytes.
    let logs = t.path("state/logs");
    assert!(logs.join("main.log").is_file());
    assert!(t.path("state/state.db").is_file());
    let files = assert_tree_clean(&t.path("state"));
    assert!(files >= 3, "{files} files under state/");
    assert_tree_clean(&t.path("home"));
}

/// A config whose only credential is the URL of a channel of type `kind`.
fn url_only(t: &Test, kind: &str, url: &str) {
    t.config(&format!(
        "{}notifications:\n  channels:\n    - name: chan\n      type: {kind}\n      url: {url}\n",
        basic_config("", "")
    ));
}

fn group_readable(t: &Test, rel: &str) {
    std::fs::set_permissions(t.path(rel), std::fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn a_readable_config_with_credentials_only_in_urls_exits_77() {
    let cases = [
        (
            "email",
            "smtp://autopilot:hunter2-pass@127.0.0.1:2525/?from=a@example.org&to=b@example.org",
            "notifications.channels[0].url",
        ),
        (
            "discord",
            "https://discord.com/api/webhooks/123456789012345678/AbCdEf_ghIJkl-MNOPqrstUVwxyz0123",
            "notifications.channels[0].url",
        ),
        (
            "ntfy",
            "https://bob:ntfy-pass-1@127.0.0.1:8080/backups",
            "notifications.channels[0].url",
        ),
        (
            "webhook",
            "https://127.0.0.1:8080/hook?auth=c2VjcmV0",
            "notifications.channels[0].url",
        ),
        (
            "telegram",
            "telegram://123456:ABCdefGHI@telegram?chats=@mychan",
            "notifications.channels[0].url",
        ),
    ];
    for (kind, url, key) in cases {
        let t = Test::new();
        url_only(&t, kind, url);
        group_readable(&t, "etc/homelab-autopilot.yaml");
        let file = t.path("etc/homelab-autopilot.yaml").display().to_string();
        let r = t.run(&["config", "validate"]);
        r.code(77)
            .stderr_has(&file)
            .stderr_has(&format!(
                "configuration file holding a URL with credentials ({key}): mode 0644"
            ))
            .stderr_has("--insecure-permissions");
        assert!(!r.stderr.contains(url), "{}", r.stderr);
        // The escape hatch: a warning naming the file and key, then on.
        let r = t.run(&["--insecure-permissions", "config", "validate"]);
        r.code(0)
            .stderr_has("insecure permissions accepted")
            .stderr_has(key);
        // 0600 is fine.
        std::fs::set_permissions(
            t.path("etc/homelab-autopilot.yaml"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        t.run(&["config", "validate"]).code(0);
    }
}

#[test]
fn urls_without_credentials_need_no_private_config() {
    for (kind, url) in [
        ("webhook", "http://127.0.0.1:8080/hook"),
        ("ntfy", "https://ntfy.sh/backups"),
        ("ntfy", "ntfy://ntfy.lan/backups?scheme=http"),
        ("discord", "https://discord.com/api/webhooks/ID/TOKEN"),
    ] {
        let t = Test::new();
        url_only(&t, kind, url);
        group_readable(&t, "etc/homelab-autopilot.yaml");
        t.run(&["config", "validate"]).code(0);
    }
}

#[test]
fn a_health_check_url_with_a_password_in_services_d_names_that_file() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.write(
        "etc/services.d/10-app.yaml",
        "services:\n  - name: app\n    type: generic\n    health_checks:\n      - type: http\n        url: https://127.0.0.1:8443/status?format=json\n      - type: http\n        url: https://admin:check-pass-1@127.0.0.1:8443/health\n",
    );
    group_readable(&t, "etc/services.d/10-app.yaml");
    let file = t.path("etc/services.d/10-app.yaml").display().to_string();
    t.run(&["config", "validate"])
        .code(77)
        .stderr_has(&file)
        .stderr_has("(services[0].health_checks[1].url): mode 0644");
    // A health-check URL with only a plain query or path is not a secret.
    t.write(
        "etc/services.d/10-app.yaml",
        "services:\n  - name: app\n    type: generic\n    health_checks:\n      - type: http\n        url: https://127.0.0.1:8443/api/v1/status2024?format=json\n",
    );
    group_readable(&t, "etc/services.d/10-app.yaml");
    t.run(&["config", "validate"]).code(0);
}
