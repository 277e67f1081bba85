//! PVE and PBS against a fake server that validates every request against
//! the official schema (../shared/pve-api). Tests that need the schema skip
//! loudly when it is absent.

mod fake;
mod schema;

use crate::harness::*;
use fake::{Fake, PASSWORD, TOKEN_ID, TOKEN_SECRET};
use homelab_autopilot::config::Secret;
use homelab_autopilot::pve::client::{Auth, Flavor, HttpOptions, HttpTransport};
use homelab_autopilot::pve::pbs::{KeepOptions, Pbs};
use homelab_autopilot::pve::tls::{parse_fingerprint, TlsMode};
use homelab_autopilot::pve::{GuestKind, GuestRef, Pve, PveError, VzdumpOptions};
use std::sync::Arc;
use std::time::Duration;

fn schema(name: &str) -> Option<Arc<schema::Schema>> {
    schema::load(name).map(Arc::new)
}

fn pve_fake() -> Option<Fake> {
    schema("pve-apidata.json").map(|s| Fake::start(s, false))
}

fn opts() -> HttpOptions {
    HttpOptions {
        timeout: Duration::from_secs(10),
        get_attempts: 3,
        retry_delay: Duration::from_millis(50),
        ..Default::default()
    }
}

fn token() -> Auth {
    Auth::Token {
        id: TOKEN_ID.into(),
        secret: Secret::new(TOKEN_SECRET),
    }
}

fn client(f: &Fake, auth: Auth) -> Pve {
    let pin = parse_fingerprint(&f.fingerprint).unwrap();
    let t = HttpTransport::new(
        &f.url(),
        Flavor::Pve,
        &TlsMode::Pinned(vec![pin]),
        auth,
        opts(),
    )
    .unwrap();
    let mut p = Pve::new(Box::new(t));
    p.lock_wait = Duration::from_secs(5);
    p
}

fn vm() -> GuestRef {
    GuestRef {
        node: "pve1".into(),
        kind: GuestKind::Qemu,
        vmid: 100,
    }
}

fn ct() -> GuestRef {
    GuestRef {
        node: "pve1".into(),
        kind: GuestKind::Lxc,
        vmid: 200,
    }
}

#[test]
fn the_validator_rejects_what_the_official_schema_rejects() {
    let Some(s) = schema("pve-apidata.json") else {
        return;
    };
    let p = |v: &[(&str, &str)]| {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>()
    };
    let errors = |m: &str, path: &str, v: &[(&str, &str)]| match s.validate(m, path, &p(v)) {
        Err(schema::Rejection::Params(e)) => e,
        other => panic!("{m} {path} {v:?} accepted: {other:?}"),
    };
    assert!(errors(
        "POST",
        "/nodes/pve1/vzdump",
        &[("vmid", "100"), ("remove", "true")]
    )["remove"]
        .contains("type check ('boolean') failed"));
    assert!(errors(
        "POST",
        "/nodes/pve1/vzdump",
        &[("vmid", "100"), ("protected", "1")]
    )
    .contains_key("storage"));
    assert!(errors(
        "POST",
        "/nodes/pve1/vzdump",
        &[("vmid", "100"), ("mode", "fast")]
    )["mode"]
        .contains("enumeration"));
    assert!(errors(
        "POST",
        "/nodes/pve1/lxc/200/snapshot",
        &[("snapname", "ab"), ("vmstate", "1")]
    )["vmstate"]
        .contains("not defined in schema"));
    assert!(errors(
        "POST",
        "/nodes/pve1/qemu/100/snapshot",
        &[("snapname", "x y")]
    )["snapname"]
        .contains("invalid"));
    assert!(errors("POST", "/nodes/pve1/qemu/100/snapshot", &[]).contains_key("snapname"));
    assert!(errors(
        "POST",
        "/nodes/pve1/lxc",
        &[("vmid", "99"), ("ostemplate", "a")]
    )["vmid"]
        .contains("minimum value of 100"));
    assert!(matches!(
        s.validate("GET", "/nodes/pve1/frobnicate", &[]),
        Err(schema::Rejection::NotImplemented(_))
    ));
    s.validate(
        "POST",
        "/nodes/pve1/vzdump",
        &p(&[
            ("vmid", "100"),
            ("storage", "pbs"),
            ("mode", "snapshot"),
            ("protected", "1"),
            ("prune-backups", "keep-last=3,keep-daily=7"),
        ]),
    )
    .unwrap();
    s.validate(
        "POST",
        "/nodes/pve1/qemu/100/config",
        &p(&[("net0", "virtio,bridge=vmbr0")]),
    )
    .unwrap();
    let Some(pbs) = schema("pbs-apidata.json") else {
        return;
    };
    pbs.validate(
        "GET",
        "/admin/datastore/store1/snapshots",
        &p(&[("backup-type", "vm")]),
    )
    .unwrap();
    assert!(matches!(
        pbs.validate(
            "GET",
            "/admin/datastore/store1/snapshots",
            &p(&[("backup-type", "vmx")])
        ),
        Err(schema::Rejection::Params(_))
    ));
}

#[test]
fn token_auth_snapshot_lifecycle_with_ram_state() {
    let Some(f) = pve_fake() else { return };
    let pve = client(&f, token());
    pve.snapshot_create(&vm(), "pre-update", Some("before apt upgrade"), true)
        .unwrap();
    let snaps = pve.snapshot_list(&vm()).unwrap();
    assert_eq!(snaps.len(), 1, "the 'current' pseudo-entry is left out");
    assert!(snaps[0].vmstate);
    pve.snapshot_rollback(&vm(), "pre-update", false).unwrap();
    pve.snapshot_delete(&vm(), "pre-update", false).unwrap();
    assert!(pve.snapshot_list(&vm()).unwrap().is_empty());
    // LXC: no RAM state, and the name rules are checked before any call.
    pve.snapshot_create(&ct(), "nightly", None, false).unwrap();
    let before = f.requests().len();
    assert!(matches!(
        pve.snapshot_create(&ct(), "x", None, false),
        Err(PveError::Invalid(_))
    ));
    assert!(matches!(
        pve.snapshot_create(&vm(), "current", None, false),
        Err(PveError::Invalid(_))
    ));
    assert!(matches!(
        pve.snapshot_create(&ct(), "ok-name", None, true),
        Err(PveError::Invalid(_))
    ));
    assert_eq!(f.requests().len(), before);
    let r = &f.requests()[0];
    assert!(r.headers.iter().any(
        |(k, v)| k == "authorization" && v == &format!("PVEAPIToken={TOKEN_ID}={TOKEN_SECRET}")
    ));
}

#[test]
fn ticket_auth_logs_in_once_and_sends_csrf_on_writes() {
    let Some(f) = pve_fake() else { return };
    let pve = client(
        &f,
        Auth::Password {
            username: "root@pam".into(),
            password: Secret::new(PASSWORD),
        },
    );
    pve.snapshot_create(&vm(), "ticketed", None, false).unwrap();
    pve.node_status("pve1").unwrap();
    let reqs = f.requests();
    assert_eq!(
        reqs.iter().filter(|r| r.path == "/access/ticket").count(),
        1
    );
    let post = reqs
        .iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/snapshot"))
        .unwrap();
    assert!(post.headers.iter().any(|(k, _)| k == "csrfpreventiontoken"));
    assert!(post
        .headers
        .iter()
        .any(|(k, v)| k == "cookie" && v.starts_with("PVEAuthCookie=PVE%3Aroot%40pam")));
    let get = reqs
        .iter()
        .find(|r| r.method == "GET" && r.path.ends_with("/status"))
        .unwrap();
    assert!(!get.headers.iter().any(|(k, _)| k == "csrfpreventiontoken"));
    // A wrong password is an auth error, not a crash.
    let bad = client(
        &f,
        Auth::Password {
            username: "root@pam".into(),
            password: Secret::new("nope"),
        },
    );
    assert!(matches!(
        bad.node_status("pve1"),
        Err(PveError::Auth { .. })
    ));
}

#[test]
fn an_old_ticket_is_renewed_with_itself_before_it_expires() {
    let Some(f) = pve_fake() else { return };
    let pin = parse_fingerprint(&f.fingerprint).unwrap();
    let o = HttpOptions {
        ticket_renew_after: Duration::ZERO,
        ..opts()
    };
    let auth = Auth::Password {
        username: "root@pam".into(),
        password: Secret::new(PASSWORD),
    };
    let t =
        HttpTransport::new(&f.url(), Flavor::Pve, &TlsMode::Pinned(vec![pin]), auth, o).unwrap();
    let pve = Pve::new(Box::new(t));
    pve.node_status("pve1").unwrap();
    pve.node_status("pve1").unwrap();
    assert_eq!(
        f.with(|s| s.renewals),
        1,
        "the second call renewed the ticket by POSTing it as the password"
    );
}

#[test]
fn insecure_mode_and_a_ca_file_also_connect() {
    let Some(f) = pve_fake() else { return };
    let t = HttpTransport::new(&f.url(), Flavor::Pve, &TlsMode::Insecure, token(), opts()).unwrap();
    Pve::new(Box::new(t)).node_status("pve1").unwrap();
    // A CA file that did not sign the server's certificate is refused.
    let ca = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, ca.cert.pem()).unwrap();
    let t = HttpTransport::new(
        &f.url(),
        Flavor::Pve,
        &TlsMode::CaFile(pem),
        token(),
        opts(),
    )
    .unwrap();
    let before = f.requests().len();
    assert!(matches!(
        Pve::new(Box::new(t)).node_status("pve1"),
        Err(PveError::Unreachable(_))
    ));
    assert_eq!(f.requests().len(), before);
}

#[test]
fn a_ca_file_that_signed_the_certificate_is_trusted() {
    let Some(s) = schema("pve-apidata.json") else {
        return;
    };
    let (f, ca_pem) = Fake::start_with_ca(s);
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("pve-root-ca.pem");
    std::fs::write(&pem, ca_pem).unwrap();
    let t = HttpTransport::new(
        &f.url(),
        Flavor::Pve,
        &TlsMode::CaFile(pem),
        token(),
        opts(),
    )
    .unwrap();
    Pve::new(Box::new(t)).node_status("pve1").unwrap();
}

#[test]
fn a_wrong_pin_fails_before_any_request_and_names_the_certificate_seen() {
    let Some(f) = pve_fake() else { return };
    let wrong = parse_fingerprint(&vec!["AB"; 32].join(":")).unwrap();
    let t = HttpTransport::new(
        &f.url(),
        Flavor::Pve,
        &TlsMode::Pinned(vec![wrong]),
        token(),
        opts(),
    )
    .unwrap();
    let err = Pve::new(Box::new(t)).node_status("pve1").unwrap_err();
    match &err {
        PveError::PinMismatch { seen, .. } => assert_eq!(seen, &f.fingerprint),
        other => panic!("expected a pin mismatch, got {other}"),
    }
    assert!(err.to_string().contains(&f.fingerprint));
    assert!(
        f.requests().is_empty(),
        "no request may reach a server with the wrong certificate"
    );
    // Several pins: any one matching is enough.
    let right = parse_fingerprint(&f.fingerprint).unwrap();
    let t = HttpTransport::new(
        &f.url(),
        Flavor::Pve,
        &TlsMode::Pinned(vec![wrong, right]),
        token(),
        opts(),
    )
    .unwrap();
    Pve::new(Box::new(t)).node_status("pve1").unwrap();
    // Malformed pins are configuration errors.
    for bad in [
        "AB:CD".to_string(),
        "zz:".repeat(31) + "zz",
        f.fingerprint.replace(':', ""),
    ] {
        assert!(
            matches!(parse_fingerprint(&bad), Err(PveError::Config(_))),
            "{bad}"
        );
    }
}

#[test]
fn a_failing_task_reports_its_log_tail() {
    let Some(f) = pve_fake() else { return };
    f.with(|s| s.fail_vzdump.insert(100));
    let pve = client(&f, token());
    let o = VzdumpOptions {
        storage: Some("local".into()),
        mode: Some("snapshot".into()),
        compress: Some("zstd".into()),
        ..Default::default()
    };
    let err = pve.vzdump(&vm(), &o).unwrap_err();
    match &err {
        PveError::TaskFailed {
            status, log_tail, ..
        } => {
            assert_eq!(status, "job errors");
            assert!(
                log_tail.contains("ERROR: Backup of VM 100 failed - unable to read disk"),
                "{log_tail}"
            );
        }
        other => panic!("expected a task failure, got {other}"),
    }
}

#[test]
fn a_task_with_warnings_succeeds_and_reports_them() {
    let Some(f) = pve_fake() else { return };
    f.with(|s| s.warn_vzdump.insert(200));
    let pve = client(&f, token());
    let r = pve
        .vzdump(
            &ct(),
            &VzdumpOptions {
                storage: Some("pbs".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        (r.task.exitstatus.as_str(), r.task.warnings),
        ("WARNINGS: 1", Some(1))
    );
}

#[test]
fn local_mode_runs_the_same_calls_through_pvesh() {
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("pvesh");
    let log = dir.path().join("argv");
    std::fs::write(&stub, format!("#!/bin/sh\necho \"$@\" >> {}\necho '{{\"cpu\":\"0.5\",\"memory\":{{\"total\":100,\"used\":\"40\"}}}}'\n", log.display())).unwrap();
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = homelab_autopilot::pve::local::PveshTransport {
        program: stub.display().to_string(),
        timeout: Duration::from_secs(10),
    };
    let st = Pve::new(Box::new(t)).node_status("pve1").unwrap();
    assert_eq!((st.cpu, st.memory_used), (0.5, 40));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().trim(),
        "get /nodes/pve1/status --output-format json"
    );
}

#[test]
fn a_locked_guest_is_reported_and_never_unlocked() {
    let Some(f) = pve_fake() else { return };
    f.with(|s| s.guests.get_mut(&100).unwrap().lock = Some("backup".into()));
    let pve = client(&f, token());
    let err = pve
        .snapshot_create(&vm(), "pre-update", None, false)
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), "guest_locked");
    assert!(msg.contains("VM 100 is locked (backup)"), "{msg}");
    assert!(msg.contains("qm unlock 100"), "{msg}");
    assert_eq!(
        f.with(|s| s.guests[&100].lock.clone()).as_deref(),
        Some("backup")
    );
    assert!(
        f.requests().iter().all(|r| r.method == "GET"),
        "nothing was changed"
    );
}

#[test]
fn a_lock_held_by_a_running_task_is_waited_for() {
    let Some(f) = pve_fake() else { return };
    f.with(|s| s.task_ms = 1200);
    let pve = client(&f, token());
    let o = VzdumpOptions {
        storage: Some("local".into()),
        ..Default::default()
    };
    let g = vm();
    std::thread::scope(|sc| {
        let h = sc.spawn(|| pve.vzdump(&g, &o));
        std::thread::sleep(Duration::from_millis(300));
        // The vzdump holds lock 'backup'; the snapshot waits for it.
        pve.snapshot_create(&vm(), "after-backup", None, false)
            .unwrap();
        h.join().unwrap().unwrap();
    });
}

#[test]
fn a_596_is_retried_for_gets_only() {
    let Some(f) = pve_fake() else { return };
    f.with(|s| s.fail_596 = 1);
    let pve = client(&f, token());
    let st = pve.node_status("pve1").unwrap();
    assert_eq!(
        st.memory_total, 16_777_216_000,
        "numbers sent as strings decode"
    );
    assert_eq!(f.requests().len(), 2);
    // A POST is never retried blindly: it may have started a task.
    f.with(|s| s.fail_596_post = 1);
    let e = pve.start(&vm()).unwrap_err();
    assert!(e.to_string().contains("596"), "{e}");
    assert_eq!(
        f.requests().iter().filter(|r| r.method == "POST").count(),
        1
    );
}

#[test]
fn an_expired_ticket_is_replaced_by_a_new_login() {
    let Some(f) = pve_fake() else { return };
    let pve = client(
        &f,
        Auth::Password {
            username: "root@pam".into(),
            password: Secret::new(PASSWORD),
        },
    );
    pve.node_status("pve1").unwrap();
    f.with(|s| s.expire_tickets());
    pve.snapshot_create(&vm(), "after-expiry", None, false)
        .unwrap();
    assert_eq!(
        f.requests()
            .iter()
            .filter(|r| r.path == "/access/ticket")
            .count(),
        2
    );
}

#[test]
fn host_paths_go_to_pbs_with_the_client_and_secrets_only_in_its_environment() {
    let Some(f) = pve_fake() else { return };
    let t = Test::new();
    let bin = t.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let rec = t.path("client-call");
    t.write(
        "bin/proxmox-backup-client",
        &format!(
            "#!/bin/sh\n{{ echo \"ARGV $*\"; env | grep '^PBS_'; }} > {}\necho '{{}}'\n",
            rec.display()
        ),
    );
    std::fs::set_permissions(
        t.path("bin/proxmox-backup-client"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    t.write("pbs_token", "pbs-sentinel-secret");
    std::fs::set_permissions(
        t.path("pbs_token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    t.data("data/etc-pve");
    let pbs = "    proxmox_backup_server:\n      enabled: true\n      storage: pbs\n      server: 127.0.0.1\n      datastore: store1\n      username: root@pam!autopilot\n      password_file: {root}/pbs_token\n";
    let cfg = guest_config(&t, &f, pbs, TOKEN_AUTH)
        + "  - name: pve-host\n    type: host\n    backup_paths: [{root}/data/etc-pve]\n";
    t.config(&cfg);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = Run::from_output(
        t.command(&["run", "backup", "--service", "pve-host"])
            .env("PATH", path)
            .output()
            .unwrap(),
    );
    no_secret(&r);
    assert!(!r.stdout.contains("pbs-sentinel-secret") && !r.stderr.contains("pbs-sentinel-secret"));
    r.code(0);
    let call = std::fs::read_to_string(&rec).unwrap();
    let argv = call.lines().next().unwrap();
    assert!(
        argv.starts_with("ARGV backup ")
            && argv.contains(".pxar:")
            && argv.contains("--backup-type host"),
        "{call}"
    );
    assert!(
        !argv.contains("sentinel") && !argv.contains("127.0.0.1"),
        "secrets and repository stay out of argv: {argv}"
    );
    assert!(call.contains("PBS_PASSWORD=pbs-sentinel-secret"), "{call}");
    assert!(
        call.contains("PBS_REPOSITORY=root@pam!autopilot@127.0.0.1:8007:store1"),
        "{call}"
    );
}

#[test]
fn vzdump_lists_and_restores_into_new_vmids() {
    let Some(f) = pve_fake() else { return };
    let pve = client(&f, token());
    let o = VzdumpOptions {
        storage: Some("local".into()),
        mode: Some("snapshot".into()),
        compress: Some("zstd".into()),
        notes_template: Some("{{guestname}}".into()),
        protected: Some(true),
        ..Default::default()
    };
    let r = pve.vzdump(&vm(), &o).unwrap();
    let volid = r.volid.clone().unwrap();
    assert!(
        volid.starts_with("local:backup/vzdump-qemu-100-") && volid.ends_with(".vma.zst"),
        "{volid}"
    );
    assert_eq!(r.size, Some(654_321));
    let pbs = pve
        .vzdump(
            &ct(),
            &VzdumpOptions {
                storage: Some("pbs".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(pbs
        .volid
        .as_deref()
        .unwrap()
        .starts_with("pbs:backup/ct/200/"));
    assert_eq!(pbs.verification.unwrap().state, "ok");
    let list = pve.list_backups("pve1", "local", Some(100)).unwrap();
    assert_eq!(list.len(), 1);
    let newid = pve.next_vmid().unwrap();
    assert_eq!(newid, 101);
    let target = GuestRef {
        node: "pve1".into(),
        kind: GuestKind::Qemu,
        vmid: newid,
    };
    pve.restore(&target, &volid, "local-lvm", &Default::default())
        .unwrap();
    let ct_target = GuestRef {
        node: "pve1".into(),
        kind: GuestKind::Lxc,
        vmid: 300,
    };
    pve.restore(
        &ct_target,
        pbs.volid.as_deref().unwrap(),
        "local-lvm",
        &Default::default(),
    )
    .unwrap();
    assert_eq!(pve.find_guest(300).unwrap().kind, GuestKind::Lxc);
    assert_eq!(pve.guest_status(&target).unwrap().status, "stopped");
    // A dump dir is root-only: refused for a token before any call.
    let before = f.requests().len();
    let e = pve
        .vzdump(
            &vm(),
            &VzdumpOptions {
                dumpdir: Some("/tmp/x".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("root@pam"), "{e}");
    assert_eq!(f.requests().len(), before);
    // Power, clone, destroy, agent.
    pve.clone_guest(&vm(), 150, &Default::default()).unwrap();
    pve.destroy(&GuestRef { vmid: 150, ..vm() }, true).unwrap();
    pve.shutdown(&vm(), Some(30), true).unwrap();
    pve.start(&vm()).unwrap();
    let pid = pve
        .agent_exec(&vm(), &["uname".into(), "-a".into()], None)
        .unwrap();
    assert_eq!(pve.agent_exec_status(&vm(), pid).unwrap()["exitcode"], 0);
    assert!(pve
        .cluster_resources(None)
        .unwrap()
        .iter()
        .any(|r| r.kind == "storage"));
}

#[test]
fn pbs_ticket_auth_uses_its_own_cookie_and_csrf() {
    let Some(s) = schema("pbs-apidata.json") else {
        return;
    };
    let f = Fake::start(s, true);
    let pin = parse_fingerprint(&f.fingerprint).unwrap();
    let auth = Auth::Password {
        username: "root@pam".into(),
        password: Secret::new(PASSWORD),
    };
    let t = HttpTransport::new(
        &f.url(),
        Flavor::Pbs,
        &TlsMode::Pinned(vec![pin]),
        auth,
        opts(),
    )
    .unwrap();
    let pbs = Pbs::new(Box::new(t));
    pbs.verify("store1", None, None, None, None).unwrap();
    let post = f
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/verify"))
        .unwrap();
    assert!(post
        .headers
        .iter()
        .any(|(k, v)| k == "cookie" && v.starts_with("PBSAuthCookie=PBS%3A")));
    assert!(post.headers.iter().any(|(k, _)| k == "csrfpreventiontoken"));
}

#[test]
fn pbs_lists_snapshots_with_verification_and_verifies() {
    let Some(s) = schema("pbs-apidata.json") else {
        return;
    };
    let f = Fake::start(s, true);
    f.with(|s| {
        for (t, state) in [(1_700_000_000, Some("ok")), (1_700_086_400, None)] {
            let mut v = serde_json::json!({"backup-type": "vm", "backup-id": "100", "backup-time": t, "protected": false,
                "files": [{"filename": "index.json.blob", "size": 100, "crypt-mode": "none"}], "size": 2048});
            if let Some(st) = state {
                v["verification"] = serde_json::json!({"state": st, "upid": "UPID:pbs:00000001:00000002:00000003:68A60E01:verify:x:root@pam:"});
            }
            s.pbs_snapshots.push(v);
        }
    });
    let pin = parse_fingerprint(&f.fingerprint).unwrap();
    let t = HttpTransport::new(
        &f.url(),
        Flavor::Pbs,
        &TlsMode::Pinned(vec![pin]),
        token(),
        opts(),
    )
    .unwrap();
    let pbs = Pbs::new(Box::new(t));
    let snaps = pbs
        .snapshots("store1", None, Some("vm"), Some("100"))
        .unwrap();
    assert_eq!(
        snaps
            .iter()
            .map(|s| s.verification.as_str())
            .collect::<Vec<_>>(),
        ["ok", "none"]
    );
    assert_eq!(snaps[0].files, ["index.json.blob"]);
    pbs.verify("store1", None, Some("vm"), Some("100"), None)
        .unwrap();
    assert_eq!(pbs.status("store1").unwrap().avail, 750_000);
    let plan = pbs
        .prune_simulate(
            "store1",
            None,
            "vm",
            "100",
            &KeepOptions {
                keep_last: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(plan.len(), 2);
    let r = &f.requests()[0];
    assert!(r.headers.iter().any(
        |(k, v)| k == "authorization" && v == &format!("PBSAPIToken={TOKEN_ID}:{TOKEN_SECRET}")
    ));
}

// ---- the backup workflow end to end, through the binary ----

fn guest_config(t: &Test, f: &Fake, backup: &str, auth: &str) -> String {
    t.write("etc/secrets/pve_token", TOKEN_SECRET);
    t.write("etc/secrets/pve_password", PASSWORD);
    let _ = std::fs::set_permissions(
        t.path("etc/secrets/pve_token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    let _ = std::fs::set_permissions(
        t.path("etc/secrets/pve_password"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    format!(
        "global:\n  hypervisor: proxmox\n  proxmox:\n    api_url: {}\n{auth}    fingerprint: \"{}\"\n  backup:\n    root: {{root}}/backups\n{backup}services:\n  - name: web\n    type: vm\n    vmid: 100\n    node: pve1\n  - name: nextcloud\n    type: lxc\n    vmid: 200\n",
        f.url(),
        f.fingerprint
    )
}

const TOKEN_AUTH: &str =
    "    token_id: root@pam!autopilot\n    token_secret_file: {root}/etc/secrets/pve_token\n";
const PASSWORD_AUTH: &str =
    "    username: root@pam\n    password_file: {root}/etc/secrets/pve_password\n";

/// No file under the test root's state dir (DB, logs) holds a secret.
fn no_secret_on_disk(t: &Test) {
    walk(&t.path("state"), &mut |p| {
        if p.is_file() {
            let bytes = std::fs::read(p).unwrap_or_default();
            let text = String::from_utf8_lossy(&bytes);
            for s in [TOKEN_SECRET, PASSWORD] {
                assert!(!text.contains(s), "a secret leaked into {}", p.display());
            }
        }
    });
}

fn no_secret(r: &Run) {
    for s in [TOKEN_SECRET, PASSWORD] {
        assert!(
            !r.stdout.contains(s) && !r.stderr.contains(s),
            "a secret leaked:\n{}\n{}",
            r.stdout,
            r.stderr
        );
    }
}

#[test]
fn backup_workflow_sends_guests_to_pbs_when_enabled() {
    let Some(f) = pve_fake() else { return };
    let t = Test::new();
    t.config(&guest_config(&t, &f, "    proxmox_backup_server:\n      enabled: true\n      storage: pbs\n      server: 127.0.0.1\n      datastore: proxmox-backups\n", TOKEN_AUTH));
    let r = t.run(&["--json", "run", "backup"]);
    no_secret(&r);
    r.code(0);
    let doc = r.json();
    let web = doc["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["service"] == "web"))
        .unwrap_or_else(|| panic!("{doc}"))
        .clone();
    assert_eq!(web["result"]["kind"], "pbs", "{web}");
    assert_eq!(web["result"]["verification"], "ok", "{web}");
    no_secret_on_disk(&t);
    let vols = f.with(|s| s.storages["pbs"].1.clone());
    assert_eq!(vols.len(), 2, "{vols:?}");
    let list = t.run(&["--json", "backups", "list"]);
    let text = list.stdout.clone();
    assert!(
        text.contains("pbs:backup/vm/100/") && text.contains("pbs:backup/ct/200/"),
        "{text}"
    );
}

#[test]
fn backup_workflow_uses_direct_storage_and_prunes_it_by_our_retention() {
    let Some(f) = pve_fake() else { return };
    let t = Test::new();
    t.config(&guest_config(&t, &f, "    keep_last: 1\n    retention_days: 0\n    direct_storage:\n      enabled: true\n      storage: local\n", TOKEN_AUTH));
    t.run(&["run", "backup"]).code(0);
    std::thread::sleep(Duration::from_millis(1100));
    let r = t.run(&["run", "backup"]);
    no_secret(&r);
    r.code(0);
    let vols = f.with(|s| s.storages["local"].1.clone());
    assert_eq!(vols.len(), 2, "one per guest after retention: {vols:?}");
    assert!(f
        .requests()
        .iter()
        .any(|r| r.method == "DELETE" && r.path.contains("/storage/local/content/")));
}

#[test]
fn backup_workflow_dumps_to_the_backup_root_and_verifies_the_archive() {
    let Some(f) = pve_fake() else { return };
    let t = Test::new();
    t.config(&guest_config(&t, &f, "", PASSWORD_AUTH));
    let r = t.run(&["run", "backup"]);
    no_secret(&r);
    r.code(0).stderr_has("(zstd)");
    no_secret_on_disk(&t);
    let mut files = Vec::new();
    walk(&t.path("backups/web"), &mut |p| {
        files.push(p.display().to_string())
    });
    assert!(
        files
            .iter()
            .any(|p| p.contains("vzdump-qemu-100-") && p.ends_with(".vma.zst")),
        "{files:?}"
    );
}

#[test]
fn a_failing_guest_does_not_stop_the_others() {
    let Some(f) = pve_fake() else { return };
    f.with(|s| s.fail_vzdump.insert(100));
    let t = Test::new();
    t.config(&guest_config(
        &t,
        &f,
        "    direct_storage:\n      enabled: true\n      storage: local\n",
        TOKEN_AUTH,
    ));
    let r = t.run(&["run", "backup"]);
    no_secret(&r);
    r.code(1);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("web") && all.contains("job errors"), "{all}");
    assert_eq!(
        f.with(|s| s.storages["local"].1.len()),
        1,
        "nextcloud was still backed up"
    );
}

#[test]
fn the_proxmox_example_config_validates() {
    let t = Test::new();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(repo.join("examples/proxmox.yaml")).unwrap();
    // The secret files it names exist only on a real install: point them here.
    let text = text.replace(
        "/etc/homelab-autopilot/secrets/",
        &format!("{}/secrets/", t.root_str()),
    );
    for f in ["pve_token", "pbs_token"] {
        t.write(&format!("secrets/{f}"), "x");
        std::fs::set_permissions(
            t.path(&format!("secrets/{f}")),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }
    t.config(&text);
    t.run(&["config", "validate"]).code(0);
}

#[test]
fn a_dry_run_changes_nothing_and_insecure_mode_is_warned_about() {
    let Some(f) = pve_fake() else { return };
    let t = Test::new();
    let cfg = guest_config(
        &t,
        &f,
        "    direct_storage:\n      enabled: true\n      storage: local\n",
        TOKEN_AUTH,
    )
    .replace(
        &format!("    fingerprint: \"{}\"\n", f.fingerprint),
        "    insecure: true\n",
    );
    t.config(&cfg);
    let r = t.run(&["run", "backup", "--dry-run"]);
    no_secret(&r);
    r.code(0)
        .stderr_has("TLS verification is OFF")
        .stderr_has("would vzdump VM 100 on pve1 to storage local");
    assert!(
        f.requests().iter().all(|r| r.method == "GET"),
        "a dry run sends no write"
    );
    assert!(f.with(|s| s.storages["local"].1.is_empty()));
}
