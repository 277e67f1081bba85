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
            let doc = r.json();
            let web = doc["services"]
                .as_array()
                .and_then(|a| a.iter().find(|s| s["service"] == "web"))
                .unwrap_or_else(|| panic!("{doc}"))
                .clone();
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
];

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
