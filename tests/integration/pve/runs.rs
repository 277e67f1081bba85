//! The binary against the fake, one row per run: the configuration, the
//! fake's set-up, a user workflow, the arguments, the exit code and the
//! output fragments, then the row's own checks. Every run is also checked
//! for secrets in its output and in its state directory.

use super::fake::{Fake, State, PASSWORD, TOKEN_SECRET};
use super::pve_fake;
use crate::harness::*;
use std::time::Duration;

const TOKEN_AUTH: &str =
    "    token_id: root@pam!autopilot\n    token_secret_file: {root}/etc/secrets/pve_token\n";
const PASSWORD_AUTH: &str =
    "    username: root@pam\n    password_file: {root}/etc/secrets/pve_password\n";
const DIRECT_STORAGE: &str = "    direct_storage:\n      enabled: true\n      storage: local\n";

/// One run of the binary against a fresh fake.
struct Case {
    name: &'static str,
    /// Lines under `global.backup`.
    backup: &'static str,
    /// The `global.proxmox` credentials.
    auth: &'static str,
    /// The configuration written, from the generated one.
    config: fn(&Test, &Fake, String) -> String,
    fake: fn(&mut State),
    /// A user workflow `scripts/<name>.rhai`.
    script: Option<(&'static str, &'static str)>,
    /// Runs before the checked one.
    before: fn(&Test),
    args: &'static [&'static str],
    /// Environment of the checked run.
    env: fn(&Test) -> Vec<(String, String)>,
    code: i32,
    stderr: &'static [&'static str],
    /// Fragments of stdout and stderr together.
    output: &'static [&'static str],
    check: fn(&Test, &Fake, &Run),
}

const BASE: Case = Case {
    name: "",
    backup: "",
    auth: TOKEN_AUTH,
    config: |_, _, c| c,
    fake: |_| {},
    script: None,
    before: |_| {},
    args: &["run", "backup"],
    env: |_| Vec::new(),
    code: 0,
    stderr: &[],
    output: &[],
    check: |_, _, _| {},
};

const PBS: &str = "    proxmox_backup_server:\n      enabled: true\n      storage: pbs\n      server: 127.0.0.1\n      datastore: proxmox-backups\n";

const CASES: &[Case] = &[
    Case {
        name: "the backup workflow sends guests to PBS when enabled",
        backup: PBS,
        args: &["--json", "run", "backup"],
        check: |t, f, r| {
            let web = service_result(r, "web");
            assert_eq!(web["result"]["kind"], "pbs", "{web}");
            assert_eq!(web["result"]["verification"], "ok", "{web}");
            let vols = f.with(|s| s.storages["pbs"].1.clone());
            assert_eq!(vols.len(), 2, "{vols:?}");
            let text = t.run(&["--json", "backups", "list"]).stdout;
            assert!(
                text.contains("pbs:backup/vm/100/") && text.contains("pbs:backup/ct/200/"),
                "{text}"
            );
        },
        ..BASE
    },
    Case {
        name: "the backup workflow uses direct storage and prunes it by our retention",
        backup: "    keep_last: 1\n    retention_days: 0\n    direct_storage:\n      enabled: true\n      storage: local\n",
        before: |t| {
            t.run(&["run", "backup"]).code(0);
            std::thread::sleep(Duration::from_millis(1100));
        },
        check: |_, f, _| {
            let vols = f.with(|s| s.storages["local"].1.clone());
            assert_eq!(vols.len(), 2, "one per guest after retention: {vols:?}");
            assert!(f
                .requests()
                .iter()
                .any(|r| r.method == "DELETE" && r.path.contains("/storage/local/content/")));
        },
        ..BASE
    },
    Case {
        name: "the backup workflow dumps to the backup root and verifies the archive",
        auth: PASSWORD_AUTH,
        stderr: &["(zstd)"],
        check: |t, _, _| {
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
        },
        ..BASE
    },
    Case {
        name: "a failing guest does not stop the others",
        backup: DIRECT_STORAGE,
        fake: |s| {
            s.fail_vzdump.insert(100);
        },
        code: 1,
        output: &["web", "job errors"],
        check: |_, f, _| {
            assert_eq!(
                f.with(|s| s.storages["local"].1.len()),
                1,
                "nextcloud was still backed up"
            );
        },
        ..BASE
    },
    Case {
        name: "a dry run changes nothing and insecure mode is warned about",
        backup: DIRECT_STORAGE,
        config: |_, f, c| {
            c.replace(
                &format!("    fingerprint: \"{}\"\n", f.fingerprint),
                "    insecure: true\n",
            )
        },
        args: &["run", "backup", "--dry-run"],
        stderr: &[
            "TLS verification is OFF",
            "would vzdump VM 100 on pve1 to storage local",
        ],
        check: |_, f, _| {
            assert!(
                f.requests().iter().all(|r| r.method == "GET"),
                "a dry run sends no write"
            );
            assert!(f.with(|s| s.storages["local"].1.is_empty()));
        },
        ..BASE
    },
    Case {
        name: "host paths go to PBS with the client, and secrets only in its environment",
        backup: "    proxmox_backup_server:\n      enabled: true\n      storage: pbs\n      server: 127.0.0.1\n      datastore: store1\n      username: root@pam!autopilot\n      password_file: {root}/pbs_token\n",
        config: |_, _, c| {
            c + "  - name: pve-host\n    type: host\n    backup_paths: [{root}/data/etc-pve]\n"
        },
        before: pbs_client_stub,
        args: &["run", "backup", "--service", "pve-host"],
        env: |t| {
            let path = format!(
                "{}:{}",
                t.path("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            );
            vec![("PATH".into(), path)]
        },
        check: |t, _, r| {
            assert!(
                !r.stdout.contains("pbs-sentinel-secret")
                    && !r.stderr.contains("pbs-sentinel-secret")
            );
            let call = std::fs::read_to_string(t.path("client-call")).unwrap();
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
        },
        ..BASE
    },
    Case {
        name: "a container's snapshot may be named 'pending'",
        script: Some((
            "snap",
            "fn run(ctx) {\n    pve::snapshot(config::service(\"nextcloud\"), \"pending\");\n    log::info(\"snapshot taken\");\n}\n",
        )),
        args: &["run", "snap"],
        stderr: &["snapshot taken"],
        check: |_, f, _| assert_eq!(snapshot_names(f, 200), ["pending"]),
        ..BASE
    },
    Case {
        name: "a container given by VMID may take a snapshot named 'pending'",
        script: Some((
            "snap",
            "fn run(ctx) {\n    pve::snapshot(200, \"pending\", #{ description: \"by vmid\" });\n}\n",
        )),
        args: &["run", "snap"],
        check: |_, f, _| assert_eq!(snapshot_names(f, 200), ["pending"]),
        ..BASE
    },
    Case {
        name: "a guest map that names no configured service is used by its vmid",
        script: Some((
            "snap",
            "fn run(ctx) {\n    pve::snapshot(#{ vmid: 200, type: \"lxc\" }, \"clone-check\");\n    log::info(\"snapshot taken\");\n}\n",
        )),
        args: &["run", "snap"],
        stderr: &["snapshot taken"],
        check: |_, f, _| assert_eq!(snapshot_names(f, 200), ["clone-check"]),
        ..BASE
    },
    Case {
        name: "a VM's snapshot named 'pending' is refused before any write",
        script: Some((
            "snap",
            "fn run(ctx) {\n    try {\n        pve::snapshot(config::service(\"web\"), \"pending\");\n    } catch (e) {\n        log::info(`refused: ${e.kind}: ${e.message}`);\n    }\n}\n",
        )),
        args: &["run", "snap"],
        stderr: &["refused: invalid_argument", "reserved by Proxmox"],
        check: |_, f, _| {
            assert!(snapshot_names(f, 100).is_empty());
            assert!(f.requests().iter().all(|r| r.method == "GET"));
        },
        ..BASE
    },
    Case {
        name: "a container's snapshot named 'vzdump' is refused, also in a dry run",
        script: Some((
            "snap",
            "fn run(ctx) {\n    try {\n        pve::snapshot(config::service(\"nextcloud\"), \"vzdump\");\n    } catch (e) {\n        log::info(`refused: ${e.kind}: ${e.message}`);\n    }\n}\n",
        )),
        args: &["run", "snap", "--dry-run"],
        stderr: &["refused: invalid_argument", "reserved by Proxmox"],
        check: |_, f, _| assert!(snapshot_names(f, 200).is_empty()),
        ..BASE
    },
    Case {
        name: "a guest locked by a running multi-guest vzdump job is waited for, then backed up",
        backup: DIRECT_STORAGE,
        fake: |s| {
            // A job over several guests: its task id is empty.
            s.hold_lock(100, "backup", "vzdump", "", 600_000);
            // It ends once our run has seen it twice in the task list.
            s.hold_lists = Some(2);
        },
        stderr: &["VM 100 is locked (backup); waiting for the active task UPID:pve1:"],
        check: |_, f, r| {
            assert!(!r.stderr.contains("unlock"), "{}", r.stderr);
            assert_eq!(vzdumps(f, 100), 1);
            assert_eq!(f.with(|s| s.storages["local"].1.len()), 2);
        },
        ..BASE
    },
    Case {
        name: "a lock no active task could hold is called stale, with the command to check it",
        backup: DIRECT_STORAGE,
        fake: |s| s.guests.get_mut(&100).unwrap().lock = Some("backup".into()),
        code: 1,
        output: &["VM 100 is locked (backup)", "no active task on node pve1", "qm unlock 100"],
        check: |_, f, _| {
            assert_eq!(f.with(|s| s.guests[&100].lock.clone()).as_deref(), Some("backup"));
            assert_eq!(vzdumps(f, 100), 0);
            assert_eq!(f.with(|s| s.storages["local"].1.len()), 1, "nextcloud still backed up");
        },
        ..BASE
    },
    Case {
        name: "no unlock advice while a backup or snapshot task is active on the node",
        backup: DIRECT_STORAGE,
        config: |_, _, c| with_proxmox(c, "    lock_wait_seconds: 1\n"),
        fake: |s| {
            s.guests.get_mut(&100).unwrap().lock = Some("backup".into());
            s.hold_lock(200, "snapshot", "vzsnapshot", "200", 60_000);
        },
        code: 1,
        output: &["VM 100 is locked (backup), still after waiting 1s (proxmox.lock_wait_seconds)", "vzsnapshot"],
        check: |_, f, r| {
            assert!(!format!("{}{}", r.stdout, r.stderr).contains("unlock"), "{}", r.stderr);
            assert_eq!(vzdumps(f, 100), 0);
        },
        ..BASE
    },
    Case {
        name: "a lock taken between our check and the task is waited for and the backup retried",
        backup: DIRECT_STORAGE,
        fake: |s| {
            s.lock_race.insert(100, "snapshot");
        },
        stderr: &["VM 100 is locked (snapshot)", "the lock appeared after the check"],
        check: |_, f, r| {
            assert!(!r.stderr.contains("task_failed"), "{}", r.stderr);
            assert_eq!(vzdumps(f, 100), 2, "one refused by the lock, one after it");
            assert_eq!(f.with(|s| s.storages["local"].1.len()), 2);
        },
        ..BASE
    },
    Case {
        name: "task status polls failing transiently (got timeout, 595/596, dropped) do not end the wait",
        backup: DIRECT_STORAGE,
        fake: |s| {
            use super::fake::Fault::*;
            s.task_ms = 1500;
            s.poll_faults = vec![GotTimeout, Drop, E596, GotTimeout, E595, GotTimeout];
        },
        stderr: &["got timeout"],
        check: |_, f, _| {
            assert!(f.with(|s| s.poll_faults.is_empty()), "every fault was met");
            assert_eq!(f.with(|s| s.storages["local"].1.len()), 2);
        },
        ..BASE
    },
    Case {
        name: "a storage with its own retention prunes by it when the service has none",
        backup: "    retention_days: 0\n    direct_storage:\n      enabled: true\n      storage: local\n",
        fake: storage_keeps_one,
        stderr: &["storage local has its own retention (keep-last=1); vzdump prunes by it"],
        check: |_, f, _| {
            assert!(vzdump_params(f, 100).contains(&("remove".into(), "1".into())));
            let vols = f.with(|s| s.storages["local"].1.clone());
            assert_eq!(vols.len(), 2, "the old ones were pruned by the storage: {vols:?}");
            assert!(vols.iter().all(|v| !v["volid"].as_str().unwrap().contains("2020_01_01")));
        },
        ..BASE
    },
    Case {
        name: "a storage with its own retention accepts our backups under our retention",
        backup: "    keep_last: 1\n    retention_days: 0\n    direct_storage:\n      enabled: true\n      storage: local\n",
        fake: storage_keeps_one,
        stderr: &["lifts it and the service's retention applies"],
        check: |_, f, r| {
            assert!(!r.stderr.contains("max backup limit"), "{}", r.stderr);
            let p = vzdump_params(f, 100);
            assert!(p.contains(&("prune-backups".into(), "keep-all=1".into())), "{p:?}");
            assert!(p.contains(&("remove".into(), "0".into())), "{p:?}");
            assert_eq!(f.with(|s| s.storages["local"].1.len()), 4, "ours prunes only what it catalogued");
        },
        ..BASE
    },
    Case {
        name: "a dump-dir backup over the API takes its size from the task log and creates nothing here",
        auth: PASSWORD_AUTH,
        fake: |s| s.remote_dumpdir = true,
        args: &["--json", "run", "backup"],
        check: |t, _, r| {
            let web = service_result(r, "web");
            assert_eq!(web["result"]["size"], 1_610_612_736u64, "{web}");
            assert_eq!(web["result"]["integrity"], "size-only", "{web}");
            assert!(!t.path("backups/web").exists(), "the node's dump path was created here");
        },
        ..BASE
    },
    Case {
        name: "retention never calls a dump file on the node deleted when the API cannot delete it",
        auth: PASSWORD_AUTH,
        backup: "    keep_last: 1\n    retention_days: 0\n",
        fake: |s| s.remote_dumpdir = true,
        before: |t| {
            t.run(&["run", "backup", "--service", "web"]).code(0);
            std::thread::sleep(Duration::from_millis(1100));
        },
        args: &["run", "backup", "--service", "web"],
        stderr: &["retention would delete", "in a dump directory on the node"],
        check: |t, _, _| {
            let list = t.run(&["--json", "backups", "list", "--service", "web"]).stdout;
            assert_eq!(list.matches("vzdump-qemu-100-").count(), 2, "both rows stay: {list}");
        },
        ..BASE
    },
    Case {
        name: "a certificate from an unknown CA is refused once, without retries",
        backup: DIRECT_STORAGE,
        config: |t, f, c| {
            let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
            t.write("other-ca.pem", &other.cert.pem());
            c.replace(
                &format!("    fingerprint: \"{}\"\n", f.fingerprint),
                &format!("    ca_file: {}\n", t.path("other-ca.pem").display()),
            )
        },
        code: 1,
        output: &["TLS certificate of https://127.0.0.1:", "was refused", "invalid peer certificate"],
        check: |_, f, r| {
            assert!(!r.stderr.contains("retrying"), "{}", r.stderr);
            assert!(f.with(|s| s.connections) <= 2, "one handshake per guest at most: {}", f.with(|s| s.connections));
            assert!(f.requests().is_empty());
        },
        ..BASE
    },
    Case {
        name: "an older PVE's reason phrase is the error message",
        fake: |s| s.old_errors = true,
        script: Some((
            "snap",
            "fn run(ctx) {\n    try {\n        pve::rollback(config::service(\"web\"), \"nope\");\n    } catch (e) {\n        log::info(`refused: ${e.kind}: ${e.message}`);\n    }\n}\n",
        )),
        args: &["run", "snap"],
        stderr: &["refused: api:", "snapshot 'nope' does not exist"],
        ..BASE
    },
    Case {
        name: "vzdump's protected is written protect and read as is_protected",
        script: Some((
            "keep",
            "fn run(ctx) {\n    pve::vzdump(config::service(\"web\"), #{ storage: \"local\", protect: true });\n    let b = pve::backups(\"pve1\", \"local\", 100);\n    log::info(`is_protected: ${b[0].is_protected}`);\n}\n",
        )),
        args: &["run", "keep"],
        stderr: &["is_protected: true"],
        check: |_, f, _| {
            assert!(vzdump_params(f, 100).contains(&("protected".into(), "1".into())));
        },
        ..BASE
    },
    Case {
        name: "a task still running at the timeout is named with its UPID and its lock",
        backup: DIRECT_STORAGE,
        config: |_, _, c| with_proxmox(c, "    backup_timeout_seconds: 1\n"),
        fake: |s| s.task_ms = 4000,
        code: 1,
        output: &["task UPID:pve1:", "(vzdump) is still running on node pve1", "holds the guest's lock"],
        ..BASE
    },
    Case {
        name: "direct_storage.format is vzdump's compress",
        backup: "    direct_storage:\n      enabled: true\n      storage: local\n      format: gzip\n",
        check: |_, f, _| {
            assert!(vzdump_params(f, 100).contains(&("compress".into(), "gzip".into())));
        },
        ..BASE
    },
    Case {
        name: "PBS sync jobs are refused by validation, naming file, line and key",
        backup: "    proxmox_backup_server:\n      enabled: true\n      storage: pbs\n      sync_jobs:\n        - target_server: pbs2.lan\n          target_datastore: offsite\n",
        args: &["config", "validate"],
        code: 78,
        output: &["homelab-autopilot.yaml:13", "global.backup.proxmox_backup_server.sync_jobs", "is not supported"],
        ..BASE
    },
    Case {
        name: "the PBS block without storage uses the PVE storage with its server and datastore",
        backup: "    proxmox_backup_server:\n      enabled: true\n      server: 127.0.0.1\n      datastore: proxmox-backups\n",
        fake: |s| {
            s.storages.insert("other-pbs".into(), (true, vec![]));
            s.storage_conf.insert("other-pbs".into(), serde_json::json!({"server": "10.0.0.9", "datastore": "proxmox-backups"}));
        },
        check: |_, f, _| {
            assert_eq!(f.with(|s| s.storages["pbs"].1.len()), 2);
            assert!(f.with(|s| s.storages["other-pbs"].1.is_empty()));
        },
        ..BASE
    },
    Case {
        name: "the PBS block matching no PVE storage fails naming the configuration",
        backup: "    proxmox_backup_server:\n      enabled: true\n      server: 127.0.0.1\n      datastore: elsewhere\n",
        code: 1,
        output: &["homelab-autopilot.yaml:10:5: global.backup.proxmox_backup_server: no PVE storage of type pbs has server 127.0.0.1 and datastore elsewhere"],
        ..BASE
    },
    Case {
        name: "the PBS block matching several PVE storages fails naming them",
        backup: "    proxmox_backup_server:\n      enabled: true\n      server: 127.0.0.1\n      datastore: proxmox-backups\n",
        fake: |s| {
            s.storages.insert("pbs-again".into(), (true, vec![]));
            s.storage_conf.insert("pbs-again".into(), serde_json::json!({"server": "127.0.0.1", "datastore": "proxmox-backups"}));
        },
        code: 1,
        output: &["several PVE storages of type pbs", "pbs, pbs-again", "set storage"],
        check: |_, f, _| assert_eq!(vzdumps(f, 100), 0),
        ..BASE
    },
    Case {
        name: "config validate finds the PBS block's PVE storage by server and datastore",
        backup: "    proxmox_backup_server:\n      enabled: true\n      server: 127.0.0.1\n      datastore: proxmox-backups\n",
        args: &["config", "validate"],
        output: &["configuration OK"],
        ..BASE
    },
    Case {
        name: "config validate refuses a PBS block no PVE storage points at, at its line",
        backup: "    proxmox_backup_server:\n      enabled: true\n      server: 127.0.0.1\n      datastore: elsewhere\n",
        args: &["config", "validate"],
        code: 78,
        output: &["homelab-autopilot.yaml:10:5: global.backup.proxmox_backup_server: no PVE storage of type pbs points at server 127.0.0.1, datastore elsewhere"],
        ..BASE
    },
    Case {
        name: "config validate refuses a PBS block several PVE storages point at, naming them",
        backup: "    proxmox_backup_server:\n      enabled: true\n      server: 127.0.0.1\n      datastore: proxmox-backups\n",
        fake: |s| {
            s.storages.insert("pbs-again".into(), (true, vec![]));
            s.storage_conf.insert("pbs-again".into(), serde_json::json!({"server": "127.0.0.1", "datastore": "proxmox-backups"}));
        },
        args: &["config", "validate"],
        code: 78,
        output: &["several PVE storages of type pbs point at server 127.0.0.1", "(pbs, pbs-again)", "set storage"],
        ..BASE
    },
];

/// One service's row of a `--json` run.
fn service_result(r: &Run, name: &str) -> serde_json::Value {
    let doc = r.json();
    doc["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["service"] == name))
        .unwrap_or_else(|| panic!("{doc}"))
        .clone()
}

/// `c` with `lines` added under `global.proxmox`.
fn with_proxmox(c: String, lines: &str) -> String {
    c.replacen("  proxmox:\n", &format!("  proxmox:\n{lines}"), 1)
}

/// Storage `local` keeps one backup per guest (`prune-backups
/// keep-last=1`) and holds an old one of each.
fn storage_keeps_one(s: &mut State) {
    s.storage_conf.insert(
        "local".into(),
        serde_json::json!({"prune-backups": "keep-last=1"}),
    );
    for (vmid, kind, ext) in [(100, "qemu", "vma"), (200, "lxc", "tar")] {
        let file = format!("vzdump-{kind}-{vmid}-2020_01_01-00_00_00.{ext}.zst");
        s.storages.get_mut("local").unwrap().1.push(serde_json::json!({
            "volid": format!("local:backup/{file}"), "format": format!("{ext}.zst"), "size": 1000,
            "ctime": 1_577_836_800, "vmid": vmid, "content": "backup", "subtype": kind,
        }));
    }
}

/// How many vzdump POSTs for `vmid` the fake received.
fn vzdumps(f: &Fake, vmid: u32) -> usize {
    f.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/vzdump"))
        .filter(|r| r.params.contains(&("vmid".into(), vmid.to_string())))
        .count()
}

/// The parameters of the last vzdump POST for `vmid`.
fn vzdump_params(f: &Fake, vmid: u32) -> Vec<(String, String)> {
    f.requests()
        .iter()
        .rev()
        .find(|r| {
            r.method == "POST"
                && r.path.ends_with("/vzdump")
                && r.params.contains(&("vmid".into(), vmid.to_string()))
        })
        .map(|r| r.params.clone())
        .unwrap_or_default()
}

#[test]
fn binary_runs_against_the_fake() {
    // One thread per row, named after it: rows run side by side and a
    // failing row does not hide the others.
    let failed: Vec<&str> = std::thread::scope(|s| {
        let handles: Vec<_> = CASES
            .iter()
            .map(|c| {
                std::thread::Builder::new()
                    .name(c.name.into())
                    .spawn_scoped(s, || run_case(c))
                    .unwrap()
            })
            .collect();
        CASES
            .iter()
            .zip(handles)
            .filter_map(|(c, h)| h.join().is_err().then_some(c.name))
            .collect()
    });
    assert!(failed.is_empty(), "failed rows: {failed:#?}");
}

/// The shared set-up of every row: a fresh fake and test root, the
/// configuration, the user workflow, then the run and its checks.
fn run_case(c: &Case) {
    let f = pve_fake();
    f.with(c.fake);
    let t = Test::new();
    let cfg = guest_config(&t, &f, c.backup, c.auth);
    t.config(&(c.config)(&t, &f, cfg));
    if let Some((name, code)) = c.script {
        t.script(&format!("{name}.rhai"), code);
    }
    (c.before)(&t);
    let r = Run::from_output(t.command(c.args).envs((c.env)(&t)).output().unwrap());
    no_secret(&r);
    r.code(c.code);
    for s in c.stderr {
        r.stderr_has(s);
    }
    let all = format!("{}{}", r.stdout, r.stderr);
    for s in c.output {
        assert!(all.contains(s), "no '{s}' in\n{all}");
    }
    no_secret_on_disk(&t);
    (c.check)(&t, &f, &r);
}

/// The configuration of every row: the fake's API with a pinned
/// certificate, two guests (`web`, VM 100 on pve1; `nextcloud`, CT 200 with
/// its node looked up), and `backup` under `global.backup`.
fn guest_config(t: &Test, f: &Fake, backup: &str, auth: &str) -> String {
    for (file, secret) in [("pve_token", TOKEN_SECRET), ("pve_password", PASSWORD)] {
        let rel = format!("etc/secrets/{file}");
        t.write(&rel, secret);
        let _ = std::fs::set_permissions(
            t.path(&rel),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        );
    }
    format!(
        "global:\n  hypervisor: proxmox\n  proxmox:\n    api_url: {}\n{auth}    fingerprint: \"{}\"\n  backup:\n    root: {{root}}/backups\n{backup}services:\n  - name: web\n    type: vm\n    vmid: 100\n    node: pve1\n  - name: nextcloud\n    type: lxc\n    vmid: 200\n",
        f.url(),
        f.fingerprint
    )
}

/// A `proxmox-backup-client` on PATH that records its argv and `PBS_*`
/// environment, a PBS password file, and host data to back up.
fn pbs_client_stub(t: &Test) {
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
}

fn snapshot_names(f: &Fake, vmid: u32) -> Vec<String> {
    f.with(|s| {
        s.guests[&vmid]
            .snapshots
            .iter()
            .map(|v| v["name"].as_str().unwrap_or_default().to_string())
            .collect()
    })
}

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
