//! `run restore-test` of Proxmox guests through the binary against the
//! fake: a VM and a container backed up (vzdump to a storage, and to PBS),
//! then restored into the reserved VMID range, their NICs isolated before
//! they start (on the isolated VLAN, or disconnected), started, checked
//! (the VM through its guest agent) and destroyed; a failing check; the
//! guard that refuses to destroy a guest that is not certainly a copy
//! (outside the range, or without our tag or name prefix) even when the
//! state DB says so; a killed run's copy destroyed by the next run.

use super::fake::{Fake, GuestConf, TOKEN_SECRET};
use super::pve_fake;
use super::updates::result_of;
use crate::harness::*;
use std::time::{Duration, Instant};

pub(super) const RANGE: (u32, u32) = (9900, 9999);

/// `isolated_vlan` on VLAN 999 and bridge vmbr9, or `namespace`.
pub(super) const VLAN: &str = "        type: isolated_vlan\n        vlan_id: 999\n        bridge: vmbr9\n        network: 10.99.0.0/24\n";
pub(super) const NAMESPACE: &str = "        type: namespace\n";

/// The fake, and a test root configured for it: VM `web` (100, with a
/// command check run through its agent) and CT `nextcloud` (200), backed
/// up with `target` (under `global.backup`), restore-tested in `env`.
fn setup(target: &str, env: &str, extra_global: &str) -> (Fake, Test) {
    setup_with(target, env, extra_global, "")
}

/// [`setup`] with `ct` added to the container's service.
pub(super) fn setup_with(target: &str, env: &str, extra_global: &str, ct: &str) -> (Fake, Test) {
    let f = pve_fake();
    let t = Test::new();
    t.write("etc/secrets/pve_token", TOKEN_SECRET);
    std::fs::set_permissions(
        t.path("etc/secrets/pve_token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    t.config(&format!(
        "global:\n  hypervisor: proxmox\n  proxmox:\n    api_url: {}\n    token_id: root@pam!autopilot\n    token_secret_file: {{root}}/etc/secrets/pve_token\n    fingerprint: \"{}\"\n{extra_global}  backup:\n    root: {{root}}/backups\n    retention_days: 0\n{target}    restore_testing:\n      rto_target_minutes: 1\n      cleanup_delay_minutes: 0\n      test_environment:\n{env}        storage: local-lvm\n        vmid_range: [{}, {}]\nservices:\n  - name: web\n    type: vm\n    vmid: 100\n    node: pve1\n    restore_testing:\n      health_checks:\n        - type: command\n          name: app is active\n          command: [systemctl, is-active, app]\n  - name: nextcloud\n    type: lxc\n    vmid: 200\n{ct}",
        f.url(),
        f.fingerprint,
        RANGE.0,
        RANGE.1
    ));
    (f, t)
}

pub(super) const TO_STORAGE: &str =
    "    direct_storage:\n      enabled: true\n      storage: local\n";
const TO_PBS: &str = "    proxmox_backup_server:\n      enabled: true\n      storage: pbs\n";

/// `--json run restore-test` of both guests.
fn test_both(t: &Test) -> Run {
    t.run(&[
        "--json",
        "run",
        "restore-test",
        "--service",
        "web",
        "--service",
        "nextcloud",
    ])
}

/// The guests the fake holds in the reserved range.
pub(super) fn copies(f: &Fake) -> Vec<u32> {
    f.with(|s| {
        s.guests
            .keys()
            .copied()
            .filter(|v| (RANGE.0..=RANGE.1).contains(v))
            .collect()
    })
}

/// The parameters of every request `method` whose path ends with `suffix`.
pub(super) fn calls(f: &Fake, method: &str, suffix: &str) -> Vec<Vec<(String, String)>> {
    f.requests()
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix))
        .map(|r| r.params.clone())
        .collect()
}

pub(super) fn param<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// The configuration of each copy as the fake held it when the copy was
/// started (the NICs must be isolated by then).
pub(super) fn configs_at_start(f: &Fake) -> Vec<(u32, GuestConf)> {
    f.with(|s| s.started_configs.clone())
        .into_iter()
        .filter(|(v, _)| (RANGE.0..=RANGE.1).contains(v))
        .collect()
}

#[test]
fn guests_restore_from_vzdump_volumes_onto_the_isolated_vlan_and_go_away() {
    let (f, t) = setup(TO_STORAGE, VLAN, "");
    t.run(&["run", "backup"]).code(0);
    let r = test_both(&t);
    r.code(0);
    for (name, kind, archive) in [
        ("web", "qemu", "vzdump-qemu-100-"),
        ("nextcloud", "lxc", "vzdump-lxc-200-"),
    ] {
        let res = result_of(&r, name);
        assert_eq!(res["ok"], true, "{res}");
        assert!(res["rto_seconds"].as_f64().unwrap() > 0.0, "{res}");
        let g = &res["environment"]["guest"];
        assert_eq!(g["kind"], kind, "{res}");
        let vmid = g["vmid"].as_u64().unwrap() as u32;
        assert!((RANGE.0..=RANGE.1).contains(&vmid), "{res}");
        assert!(
            g["name"].as_str().unwrap().starts_with("restoretest-"),
            "{res}"
        );
        // The restore: the vzdump volume into the reserved VMID, on the
        // configured storage, unique, with our name, tag and NICs.
        let post = calls(&f, "POST", &format!("/nodes/pve1/{kind}"))
            .into_iter()
            .find(|p| param(p, "vmid") == Some(&vmid.to_string()))
            .expect("no restore call");
        let src = if kind == "qemu" {
            "archive"
        } else {
            "ostemplate"
        };
        let volid = param(&post, src).unwrap();
        assert!(
            volid.starts_with("local:backup/") && volid.contains(archive),
            "{post:?}"
        );
        assert_eq!(param(&post, "storage"), Some("local-lvm"));
        assert_eq!(param(&post, "unique"), Some("1"));
        assert_eq!(param(&post, "tags"), Some("autopilot-restoretest"));
        assert_eq!(param(&post, "onboot"), Some("0"));
        assert_eq!(param(&post, "protection"), Some("0"));
        if kind == "lxc" {
            assert_eq!(param(&post, "restore"), Some("1"));
        }
        // Destroyed with purge, after it was stopped.
        let del = calls(&f, "DELETE", &format!("/{kind}/{vmid}"));
        assert_eq!(del.len(), 1, "{del:?}");
        assert_eq!(param(&del[0], "purge"), Some("1"));
        assert_eq!(param(&del[0], "destroy-unreferenced-disks"), Some("1"));
    }
    // Every NIC of both copies was on VLAN 999 of vmbr9 (trunks gone)
    // before the copy started; the MAC addresses are new.
    let started = configs_at_start(&f);
    assert_eq!(started.len(), 2, "{started:?}");
    for (vmid, conf) in &started {
        let path = format!("copy {vmid}");
        let nets: Vec<&String> = conf
            .iter()
            .filter(|(k, _)| k.starts_with("net"))
            .map(|(_, v)| v)
            .collect();
        assert!(!nets.is_empty(), "{path}: {conf:?}");
        for n in nets {
            assert!(
                n.contains("bridge=vmbr9") && n.contains("tag=999"),
                "{path}: {n}"
            );
            assert!(!n.contains("vmbr0") && !n.contains("trunks"), "{path}: {n}");
            assert!(
                !n.contains("BC:24:11:00:0"),
                "{path}: the MAC was kept: {n}"
            );
        }
        assert_eq!(
            conf.get("tags").map(String::as_str),
            Some("autopilot-restoretest")
        );
        assert_eq!(conf.get("onboot").map(String::as_str), Some("0"));
        assert_eq!(conf.get("protection").map(String::as_str), Some("0"));
        assert!(!conf.contains_key("hostpci0"), "{path}: {conf:?}");
    }
    // The VM was checked through its agent: ping, then the command.
    assert_eq!(calls(&f, "POST", "/agent/ping").len(), 1);
    let runs = f.with(|s| s.agent_runs.clone());
    assert!(
        runs.iter()
            .any(|(v, a)| (RANGE.0..=RANGE.1).contains(v) && a[0] == "systemctl"),
        "{runs:?}"
    );
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
    // The live guests were never touched.
    assert!(calls(&f, "PUT", "/qemu/100/config").is_empty());
    assert!(f.with(|s| s.guests.contains_key(&100) && s.guests.contains_key(&200)));
}

#[test]
fn guests_restore_from_pbs_snapshots_disconnected_and_a_failed_check_fails_the_test() {
    let (f, t) = setup(TO_PBS, NAMESPACE, "  scripts:\n    timeout_seconds: 40\n");
    t.run(&["run", "backup"]).code(0);
    f.with(|s| s.agent_exit.insert("systemctl".into(), 3));
    let r = test_both(&t);
    r.code(1);
    let web = result_of(&r, "web");
    let doc = r.json();
    assert!(
        doc["events"].as_array().is_some_and(|e| e
            .iter()
            .any(|e| e == "restore_test_failed" || e["event"] == "restore_test_failed")),
        "{doc}"
    );
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(all.contains("systemctl exited 3"), "{all}");
    let _ = web;
    // The container (no checks beyond "it runs") passed.
    let ct = result_of(&r, "nextcloud");
    assert_eq!(ct["ok"], true, "{ct}");
    for kind in ["qemu", "lxc"] {
        let post = calls(&f, "POST", &format!("/nodes/pve1/{kind}"));
        assert_eq!(post.len(), 1, "{post:?}");
        let src = if kind == "qemu" {
            "archive"
        } else {
            "ostemplate"
        };
        let label = if kind == "qemu" { "vm" } else { "ct" };
        let volid = param(&post[0], src).unwrap();
        assert!(
            volid.starts_with(&format!("pbs:backup/{label}/")),
            "{volid}"
        );
    }
    // Every NIC disconnected before the start.
    let started = configs_at_start(&f);
    assert_eq!(started.len(), 2, "{started:?}");
    for (vmid, conf) in &started {
        let path = format!("copy {vmid}");
        for (k, n) in conf.iter().filter(|(k, _)| k.starts_with("net")) {
            assert!(n.ends_with("link_down=1"), "{path} {k}: {n}");
        }
    }
    // Both copies gone, the failed one too.
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
}

/// Set the recorded VMID of restore test `id` in the state DB.
fn tamper(t: &Test, id: i64, vmid: u32) {
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let env: String = db
        .query_row(
            "SELECT environment FROM restore_tests WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&env).unwrap();
    v["guest"]["vmid"] = serde_json::json!(vmid);
    db.execute(
        "UPDATE restore_tests SET environment = ?1, cleaned_up = 0, finished_at = NULL WHERE id = ?2",
        rusqlite::params![v.to_string(), id],
    )
    .unwrap();
}

#[test]
fn a_guest_that_is_not_certainly_a_copy_is_never_destroyed() {
    let (f, t) = setup(TO_STORAGE, NAMESPACE, "");
    t.run(&["run", "backup", "--service", "web"]).code(0);
    t.run(&["run", "restore-test", "--service", "web"]).code(0);
    assert!(copies(&f).is_empty());
    // The state DB says the live VM 100 was test 1's copy: outside the
    // range, it is refused before any call to it.
    tamper(&t, 1, 100);
    // A guest in the range without our tag, and one with our tag but not
    // our name.
    f.with(|s| {
        let mut g = s.guests[&100].clone();
        g.name = "restoretest-web-2".into();
        s.guests.insert(9950, g.clone());
        s.configs.insert(
            9950,
            GuestConf::from([
                ("name".into(), "restoretest-web-2".into()),
                ("tags".into(), "prod".into()),
            ]),
        );
        g.name = "backup-box".into();
        s.guests.insert(9951, g);
        s.configs.insert(
            9951,
            GuestConf::from([
                ("name".into(), "backup-box".into()),
                ("tags".into(), "autopilot-restoretest".into()),
            ]),
        );
    });
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    for (vmid, id) in [(9950u32, 2i64), (9951, 3)] {
        db.execute(
            "INSERT INTO restore_tests (id, service, kind, started_at, environment) VALUES (?1, 'web', 'guest', 1, ?2)",
            rusqlite::params![
                id,
                serde_json::json!({"guest": {"kind": "qemu", "node": "pve1", "vmid": vmid}})
                    .to_string()
            ],
        )
        .unwrap();
    }
    let before = f.requests().len();
    let r = t.run(&["run", "restore-test", "--service", "web"]);
    r.code(0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("VMID 100 is outside restore_testing.test_environment.vmid_range"),
        "{all}"
    );
    assert!(
        all.contains("does not carry the tag autopilot-restoretest"),
        "{all}"
    );
    assert!(
        all.contains("'backup-box' does not start with restoretest-"),
        "{all}"
    );
    // No stop or destroy reached any of them, and no call at all VM 100.
    let reqs = &f.requests()[before..];
    for r in reqs {
        for v in ["/100", "/9950", "/9951"] {
            let hit = r.path.contains(&format!("{v}/status/stop"))
                || (r.method == "DELETE" && r.path.ends_with(v));
            assert!(!hit, "{} {}", r.method, r.path);
        }
        assert!(!r.path.contains("/qemu/100/"), "{} {}", r.method, r.path);
    }
    assert!(f.with(|s| [100, 9950, 9951].iter().all(|v| s.guests.contains_key(v))));
    // The refused rows stay open, and are reported again by the next run.
    let open: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM restore_tests WHERE cleaned_up = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 3);
}

#[test]
fn a_killed_test_leaves_a_guest_the_next_run_destroys() {
    let (f, t) = setup(TO_STORAGE, NAMESPACE, "");
    t.run(&["run", "backup", "--service", "web"]).code(0);
    // Slow tasks: the run is killed while the restore runs.
    f.with(|s| s.task_ms = 3000);
    let child = t
        .command(&["run", "restore-test", "--service", "web"])
        .spawn()
        .unwrap();
    kill_when_restoring(&f, child, "qemu");
    // The VMID was recorded before the restore was asked for.
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let env: String = db
        .query_row(
            "SELECT environment FROM restore_tests WHERE id = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let env: serde_json::Value = serde_json::from_str(&env).unwrap();
    let vmid = env["guest"]["vmid"].as_u64().expect("no VMID recorded") as u32;
    // The restore is still running on PVE: the next run waits for it, then
    // destroys what it made.
    assert!(copies(&f).is_empty());
    let r = t.run(&["run", "restore-test", "--service", "web"]);
    r.code(0);
    let all = format!("{}{}", r.stdout, r.stderr);
    assert!(
        all.contains("removed the copy of restore test 1 (web, left by an interrupted run)"),
        "{all}"
    );
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
    assert!(!calls(&f, "DELETE", &format!("/qemu/{vmid}")).is_empty());
    // A later look finds nothing new either (the restore had ended).
    std::thread::sleep(Duration::from_millis(400));
    f.with(|s| s.poll());
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
}

/// Kill `child` (SIGKILL) as soon as it has asked for the restore of a
/// `kind` guest, then make the fake's tasks fast again.
pub(super) fn kill_when_restoring(f: &Fake, mut child: std::process::Child, kind: &str) {
    let started = Instant::now();
    while calls(f, "POST", &format!("/nodes/pve1/{kind}")).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "no restore");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    f.with(|s| s.task_ms = 300);
}

/// The verification state of catalog row 1: (status, verified_at).
fn row_verification(t: &Test) -> (String, Option<i64>) {
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    db.query_row(
        "SELECT status, verified_at FROM backups WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

#[test]
fn pbs_snapshots_are_verified_again_when_their_verification_is_old() {
    let pbs = Fake::start(super::schema("pbs-apidata.json"), true);
    let target = format!(
        "    proxmox_backup_server:\n      enabled: true\n      storage: pbs\n      server: 127.0.0.1\n      port: {}\n      datastore: store1\n      username: root@pam!autopilot\n      password_file: {{root}}/etc/secrets/pve_token\n      fingerprint: \"{}\"\n",
        pbs.addr.port(),
        pbs.fingerprint
    );
    let (_f, t) = setup(&target, NAMESPACE, "");
    t.run(&["run", "backup", "--service", "web"]).code(0);
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let (kind, volid): (String, String) = db
        .query_row("SELECT kind, location FROM backups WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(kind, "pbs");
    let time = chrono::DateTime::parse_from_rfc3339(volid.rsplit('/').next().unwrap())
        .unwrap()
        .timestamp();
    // PBS last verified the snapshot on 2020-01-01: older than 30 days.
    let old = "UPID:pbs:000004D2:00001A2B:00000001:5E0BE100:verify:store1:root@pam:";
    pbs.with(|s| {
        s.pbs_snapshots.push(serde_json::json!({
            "backup-type": "vm", "backup-id": "100", "backup-time": time,
            "files": [], "size": 1000, "verification": {"state": "ok", "upid": old},
        }))
    });
    let verifies = || {
        pbs.requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/verify"))
            .map(|r| r.params.clone())
            .collect::<Vec<_>>()
    };
    let before = chrono::Utc::now().timestamp();
    let r = t.run(&["backups", "verify"]);
    r.code(0);
    r.stdout_has("verified by PBS now");
    let v = verifies();
    assert_eq!(v.len(), 1, "{v:?}");
    for (k, want) in [
        ("backup-type", "vm"),
        ("backup-id", "100"),
        ("backup-time", time.to_string().as_str()),
    ] {
        assert_eq!(param(&v[0], k), Some(want), "{v:?}");
    }
    let (status, at) = row_verification(&t);
    assert_eq!(status, "complete");
    assert!(at.unwrap() >= before, "{at:?}");
    // Verified just now: read, not verified again; the row keeps the time
    // of that verification.
    let r = t.run(&["backups", "verify"]);
    r.code(0);
    r.stdout_has("PBS verified it");
    assert_eq!(verifies().len(), 1);
    // A restore test of the snapshot verifies it first when that is due.
    let old_again = || {
        pbs.with(|s| {
            s.pbs_snapshots[0]["verification"] = serde_json::json!({"state": "ok", "upid": old});
        })
    };
    old_again();
    let r = t.run(&["run", "restore-test", "--service", "web"]);
    r.code(0);
    r.stderr_has("verified by PBS first");
    assert_eq!(verifies().len(), 2);
    // An old verification again, and this time PBS finds damage.
    old_again();
    pbs.with(|s| s.pbs_verify_fails = true);
    let r = t.run(&["backups", "verify"]);
    r.code(65);
    r.stdout_has("PBS verification failed");
    assert_eq!(verifies().len(), 3);
    assert_eq!(row_verification(&t).0, "failed_verify");
}

#[test]
fn a_dry_run_says_where_and_how_and_changes_nothing() {
    let (f, t) = setup(TO_STORAGE, VLAN, "");
    t.run(&["run", "backup"]).code(0);
    let before = f.requests().len();
    let r = t.run(&[
        "run",
        "restore-test",
        "--dry-run",
        "--service",
        "web",
        "--service",
        "nextcloud",
    ]);
    r.code(0);
    let all = format!("{}{}", r.stdout, r.stderr);
    for want in [
        "as VM 9900 (the first free VMID of [9900, 9999])",
        "as CT 9900",
        "on node pve1, storage local-lvm",
        "test environment isolated_vlan: every NIC moved to bridge vmbr9, VLAN tag 999",
    ] {
        assert!(all.contains(want), "no '{want}' in\n{all}");
    }
    let writes: Vec<String> = f.requests()[before..]
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert!(copies(&f).is_empty());
}

#[test]
fn checks_a_copy_cannot_take_fail_and_say_why() {
    let ct = "    restore_testing:\n      health_checks:\n        - type: command\n          name: files there\n          command: [test, -d, /var/www]\n        - type: http\n          name: site answers\n          url: http://192.168.1.20/\n";
    let (f, t) = setup_with(
        TO_STORAGE,
        NAMESPACE,
        "  scripts:\n    timeout_seconds: 40\n",
        ct,
    );
    t.run(&["run", "backup", "--service", "nextcloud"]).code(0);
    let r = t.run(&["--json", "run", "restore-test", "--service", "nextcloud"]);
    r.code(1);
    let all = format!("{}{}", r.stdout, r.stderr);
    for want in [
        "the Proxmox API cannot run commands inside a container",
        "the copy is disconnected (test_environment type namespace)",
    ] {
        assert!(all.contains(want), "no '{want}' in\n{all}");
    }
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
}

#[test]
fn separate_node_restores_on_its_node_on_the_given_bridge() {
    let env = "        type: separate_node\n        node: pve2\n        bridge: vmbr9\n";
    let (f, t) = setup(TO_PBS, env, "");
    t.run(&["run", "backup", "--service", "web"]).code(0);
    let r = t.run(&["--json", "run", "restore-test", "--service", "web"]);
    r.code(0);
    let g = &result_of(&r, "web")["environment"]["guest"];
    assert_eq!(g["node"], "pve2", "{g}");
    assert_eq!(g["environment"], "separate_node", "{g}");
    assert_eq!(calls(&f, "POST", "/nodes/pve2/qemu").len(), 1);
    assert!(calls(&f, "POST", "/nodes/pve1/qemu").is_empty());
    let started = configs_at_start(&f);
    assert_eq!(started.len(), 1, "{started:?}");
    for (k, n) in started[0].1.iter().filter(|(k, _)| k.starts_with("net")) {
        assert!(
            n.contains("bridge=vmbr9") && !n.contains("tag=") && !n.contains("link_down"),
            "{k}: {n}"
        );
    }
    let vmid = g["vmid"].as_u64().unwrap();
    assert_eq!(
        calls(&f, "DELETE", &format!("/nodes/pve2/qemu/{vmid}")).len(),
        1
    );
    assert!(copies(&f).is_empty());
}
