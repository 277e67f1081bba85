//! PVE and PBS against a fake server that validates every request against
//! the official schema (see [`schema::schema_dir`]) or, where that is
//! absent, the compact description of the endpoints the client calls
//! (`endpoints.json`): every test runs either way.

mod drill;
mod endpoints;
mod fake;
mod restore;
mod runs;
mod schema;
mod updates;

pub use endpoints::PVE_SCHEMA;

use fake::{Fake, PASSWORD, TOKEN_ID, TOKEN_SECRET};
use homelab_autopilot::config::Secret;
use homelab_autopilot::pve::client::{Auth, Flavor, HttpOptions, HttpTransport};
use homelab_autopilot::pve::pbs::{KeepOptions, Pbs};
use homelab_autopilot::pve::tls::{parse_fingerprint, TlsMode};
use homelab_autopilot::pve::{GuestKind, GuestRef, Pve, PveError, VzdumpOptions};
use std::sync::Arc;
use std::time::Duration;

fn schema(name: &str) -> Arc<schema::Schema> {
    Arc::new(schema::load(name))
}

fn pve_fake() -> Fake {
    Fake::start(schema("pve-apidata.json"), false)
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

/// What the schema checker must answer to a request.
enum Verdict {
    Accepted,
    /// Refused with an error on this parameter containing this text.
    Param(&'static str, &'static str),
    NotImplemented,
}

/// (schema file, method, path, parameters, verdict). Each case is checked
/// against the compact description and, when present, the official schema.
type SchemaCase = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Verdict,
);

/// Cases of endpoints the client does not call: the official schema only.
const OFFICIAL_ONLY_CASES: &[SchemaCase] = &[(
    PVE,
    "POST",
    "/nodes/pve1/qemu/100/config",
    &[("net0", "virtio,bridge=vmbr0")],
    Verdict::Accepted,
)];

const PVE: &str = "pve-apidata.json";
const PBS: &str = "pbs-apidata.json";

const SCHEMA_CASES: &[SchemaCase] = &[
    (
        PVE,
        "POST",
        "/nodes/pve1/vzdump",
        &[("vmid", "100"), ("remove", "true")],
        Verdict::Param("remove", "type check ('boolean') failed"),
    ),
    (
        PVE,
        "POST",
        "/nodes/pve1/vzdump",
        &[("vmid", "100"), ("protected", "1")],
        Verdict::Param("storage", ""),
    ),
    (
        PVE,
        "POST",
        "/nodes/pve1/vzdump",
        &[("vmid", "100"), ("mode", "fast")],
        Verdict::Param("mode", "enumeration"),
    ),
    (
        PVE,
        "POST",
        "/nodes/pve1/lxc/200/snapshot",
        &[("snapname", "ab"), ("vmstate", "1")],
        Verdict::Param("vmstate", "not defined in schema"),
    ),
    (
        PVE,
        "POST",
        "/nodes/pve1/qemu/100/snapshot",
        &[("snapname", "x y")],
        Verdict::Param("snapname", "invalid"),
    ),
    (
        PVE,
        "POST",
        "/nodes/pve1/qemu/100/snapshot",
        &[],
        Verdict::Param("snapname", ""),
    ),
    (
        PVE,
        "POST",
        "/nodes/pve1/lxc",
        &[("vmid", "99"), ("ostemplate", "a")],
        Verdict::Param("vmid", "minimum value of 100"),
    ),
    (
        PVE,
        "GET",
        "/nodes/pve1/frobnicate",
        &[],
        Verdict::NotImplemented,
    ),
    (
        PVE,
        "POST",
        "/nodes/pve1/vzdump",
        &[
            ("vmid", "100"),
            ("storage", "pbs"),
            ("mode", "snapshot"),
            ("protected", "1"),
            ("prune-backups", "keep-last=3,keep-daily=7"),
        ],
        Verdict::Accepted,
    ),
    (
        PBS,
        "GET",
        "/admin/datastore/store1/snapshots",
        &[("backup-id", "-x")],
        Verdict::Param("backup-id", ""),
    ),
    (
        PBS,
        "POST",
        "/admin/datastore/store1/prune",
        &[
            ("backup-type", "vm"),
            ("backup-id", "100"),
            ("keep-last", "0"),
        ],
        Verdict::Param("keep-last", "minimum value of 1"),
    ),
    (
        PBS,
        "POST",
        "/access/ticket",
        &[("username", "root"), ("password", "x")],
        Verdict::Param("username", ""),
    ),
    (
        PBS,
        "GET",
        "/admin/datastore/store1/snapshots",
        &[("backup-type", "vm")],
        Verdict::Accepted,
    ),
    (
        PBS,
        "GET",
        "/admin/datastore/store1/snapshots",
        &[("backup-type", "vmx")],
        Verdict::Param("backup-type", ""),
    ),
];

#[test]
fn the_validator_rejects_what_the_official_schema_rejects() {
    let compact = SCHEMA_CASES
        .iter()
        .map(|c| (c, Arc::new(schema::compact(c.0 == PBS))));
    let official = SCHEMA_CASES
        .iter()
        .chain(OFFICIAL_ONLY_CASES)
        .filter_map(|c| schema::official(c.0).map(|s| (c, Arc::new(s))));
    for ((file, method, path, params, verdict), s) in compact.chain(official) {
        let file = format!("{file} ({})", s.source);
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let got = s.validate(method, path, &params);
        let case = format!("{file}: {method} {path} {params:?}: {got:?}");
        match (verdict, got) {
            (Verdict::Accepted, Ok(_)) => {}
            (Verdict::NotImplemented, Err(schema::Rejection::NotImplemented(_))) => {}
            (Verdict::Param(key, text), Err(schema::Rejection::Params(e))) => {
                assert!(e.get(*key).is_some_and(|m| m.contains(text)), "{case}")
            }
            _ => panic!("{case}"),
        }
    }
}

#[test]
fn token_auth_snapshot_lifecycle_with_ram_state() {
    let f = pve_fake();
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
    let f = pve_fake();
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
    let f = pve_fake();
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

/// A TLS setting, the CA the fake's certificate is signed by (if any), and
/// what connecting gives: `None` for success, or the error's kind (then no
/// request may have reached the server).
struct TlsCase {
    name: &'static str,
    signed_by_ca: bool,
    /// The mode, from the fake and a directory to write CA files into.
    mode: fn(&Fake, Option<&str>, &std::path::Path) -> TlsMode,
    err: Option<&'static str>,
}

fn ca_file(dir: &std::path::Path, pem: &str) -> std::path::PathBuf {
    let p = dir.join("ca.pem");
    std::fs::write(&p, pem).unwrap();
    p
}

fn pin(f: &Fake) -> [u8; 32] {
    parse_fingerprint(&f.fingerprint).unwrap()
}

fn wrong_pin() -> [u8; 32] {
    parse_fingerprint(&vec!["AB"; 32].join(":")).unwrap()
}

const TLS_CASES: &[TlsCase] = &[
    TlsCase {
        name: "insecure mode connects",
        signed_by_ca: false,
        mode: |_, _, _| TlsMode::Insecure,
        err: None,
    },
    TlsCase {
        name: "a CA file that did not sign the server's certificate is refused",
        signed_by_ca: false,
        mode: |_, _, dir| {
            let other = rcgen::generate_simple_self_signed(vec!["other".into()]).unwrap();
            TlsMode::CaFile(ca_file(dir, &other.cert.pem()))
        },
        err: Some("tls"),
    },
    TlsCase {
        name: "a CA file that signed the certificate is trusted",
        signed_by_ca: true,
        mode: |_, ca, dir| TlsMode::CaFile(ca_file(dir, ca.unwrap())),
        err: None,
    },
    TlsCase {
        name: "a wrong pin fails and names the certificate seen",
        signed_by_ca: false,
        mode: |_, _, _| TlsMode::Pinned(vec![wrong_pin()]),
        err: Some("tls_pin_mismatch"),
    },
    TlsCase {
        name: "any one of several pins matching is enough",
        signed_by_ca: false,
        mode: |f, _, _| TlsMode::Pinned(vec![wrong_pin(), pin(f)]),
        err: None,
    },
];

#[test]
fn tls_modes_connect_or_fail_before_any_request() {
    let s = schema(PVE);
    for c in TLS_CASES {
        let (f, ca) = if c.signed_by_ca {
            let (f, pem) = Fake::start_with_ca(s.clone());
            (f, Some(pem))
        } else {
            (Fake::start(s.clone(), false), None)
        };
        let dir = tempfile::tempdir().unwrap();
        let mode = (c.mode)(&f, ca.as_deref(), dir.path());
        let t = HttpTransport::new(&f.url(), Flavor::Pve, &mode, token(), opts()).unwrap();
        let got = Pve::new(Box::new(t)).node_status("pve1");
        match (c.err, got) {
            (None, Ok(_)) => {}
            (Some(kind), Err(e)) => {
                assert_eq!(e.kind(), kind, "{}: {e}", c.name);
                assert!(f.requests().is_empty(), "{}: a request got through", c.name);
                // Final: the GET is not retried after a refused certificate.
                assert_eq!(f.with(|s| s.connections), 1, "{}: retried", c.name);
                assert_eq!(e.exit_code(), 69, "{}", c.name);
                if let PveError::PinMismatch { seen, .. } = &e {
                    assert_eq!(seen, &f.fingerprint, "{}", c.name);
                    assert!(e.to_string().contains(&f.fingerprint), "{}: {e}", c.name);
                }
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", c.name),
        }
    }
}

#[test]
fn malformed_pins_are_configuration_errors() {
    let f = pve_fake();
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

/// A fake's task set-up, one guest's vzdump, and the check of its outcome.
type TaskCase = (
    &'static str,
    fn(&mut fake::State),
    fn() -> GuestRef,
    fn() -> VzdumpOptions,
    fn(Result<homelab_autopilot::pve::VzdumpResult, PveError>),
);

const TASK_CASES: &[TaskCase] = &[
    (
        "a failing task reports its log tail",
        |s| {
            s.fail_vzdump.insert(100);
        },
        vm,
        || VzdumpOptions {
            storage: Some("local".into()),
            mode: Some("snapshot".into()),
            compress: Some("zstd".into()),
            ..Default::default()
        },
        |r| match r {
            Err(PveError::TaskFailed {
                status, log_tail, ..
            }) => {
                assert_eq!(status, "job errors");
                assert!(
                    log_tail.contains("ERROR: Backup of VM 100 failed - unable to read disk"),
                    "{log_tail}"
                );
            }
            other => panic!("expected a task failure, got {other:?}"),
        },
    ),
    (
        "a task with warnings succeeds and reports them",
        |s| {
            s.warn_vzdump.insert(200);
        },
        ct,
        || VzdumpOptions {
            storage: Some("pbs".into()),
            ..Default::default()
        },
        |r| {
            let r = r.unwrap();
            assert_eq!(
                (r.task.exitstatus.as_str(), r.task.warnings),
                ("WARNINGS: 1", Some(1))
            );
        },
    ),
];

#[test]
fn vzdump_task_outcomes() {
    for (name, setup, guest, o, check) in TASK_CASES {
        let f = pve_fake();
        f.with(setup);
        eprintln!("case: {name}");
        check(client(&f, token()).vzdump(&guest(), &o()));
    }
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
    let f = pve_fake();
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
    let f = pve_fake();
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
fn the_fake_storage_limit_refuses_a_backup_vzdump_may_not_prune() {
    // What a storage with prune-backups does to `remove=0` (the workflow
    // never sends that alone; see runs.rs).
    let f = pve_fake();
    f.with(|s| {
        s.storage_conf.insert(
            "local".into(),
            serde_json::json!({"prune-backups": "keep-last=1"}),
        )
    });
    let pve = client(&f, token());
    let o = VzdumpOptions {
        storage: Some("local".into()),
        remove: Some(false),
        ..Default::default()
    };
    pve.vzdump(&vm(), &o).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let e = pve.vzdump(&vm(), &o).unwrap_err();
    assert_eq!(e.kind(), "task_failed", "{e}");
    assert!(e.to_string().contains("max backup limit of 1"), "{e}");
}

#[test]
fn a_596_is_retried_for_gets_only() {
    let f = pve_fake();
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
    let f = pve_fake();
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
fn vzdump_lists_and_restores_into_new_vmids() {
    let f = pve_fake();
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
    let s = schema("pbs-apidata.json");
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
    let s = schema("pbs-apidata.json");
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
