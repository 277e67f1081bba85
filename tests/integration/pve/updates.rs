//! `run update` of Proxmox guests through the binary against the fake:
//! the snapshot, the upgrade through the guest agent, a fault that breaks
//! the guest's check and the rollback to the snapshot, the cleanup of old
//! snapshots (never one the tool did not name), the dry run, and a
//! container over the API skipped with its reason.

use super::fake::{Fake, GuestOs, TOKEN_SECRET};
use super::pve_fake;
use crate::harness::*;

/// A snapshot of ours two days old, one of the admin's, and one whose
/// name only starts like ours.
const OLD_OURS: &str = "autopilot-pre-update-20200101000000";
const ADMINS: &[&str] = &["before-kernel", "autopilot-pre-update-manual"];

/// The fake with VM 100 running a Debian at `version` whose upgrade
/// installs `available`; `broken` versions fail the guest's check.
fn setup(version: &str, available: &str, broken: &[&str]) -> (Fake, Test) {
    let f = pve_fake();
    let t = Test::new();
    let health = t.path("guest-health");
    f.with(|s| {
        let mut os = GuestOs::debian(version, available, health.clone());
        os.broken = broken.iter().map(|b| b.to_string()).collect();
        s.os.insert(100, os);
        let g = s.guests.get_mut(&100).unwrap();
        for (name, time) in [
            (OLD_OURS, 1_577_836_800),
            (ADMINS[0], 1_577_836_800),
            (ADMINS[1], 1_577_836_800),
        ] {
            g.snapshots.push(serde_json::json!({
                "name": name, "description": "", "snaptime": time, "vmstate": 0
            }));
        }
    });
    t.write("etc/secrets/pve_token", TOKEN_SECRET);
    let _ = std::fs::set_permissions(
        t.path("etc/secrets/pve_token"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    );
    t.config(&format!(
        "global:\n  hypervisor: proxmox\n  proxmox:\n    api_url: {}\n    token_id: root@pam!autopilot\n    token_secret_file: {{root}}/etc/secrets/pve_token\n    fingerprint: \"{}\"\n  backup:\n    root: {{root}}/backups\nupdates:\n  health_check_timeout_seconds: 2\n  soak_seconds: 1\n  keep_snapshot_hours: 24\nservices:\n  - name: web\n    type: vm\n    vmid: 100\n    node: pve1\n    backup: false\n    health_checks:\n      - type: command\n        name: app answers\n        command: [grep, -qx, ok, {}]\n  - name: nextcloud\n    type: lxc\n    vmid: 200\n    backup: false\n",
        f.url(),
        f.fingerprint,
        health.display()
    ));
    (f, t)
}

pub(super) fn result_of(r: &Run, name: &str) -> serde_json::Value {
    let doc = r.json();
    doc["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["service"] == name))
        .unwrap_or_else(|| panic!("{doc}"))["result"]
        .clone()
}

fn snapshots(f: &Fake) -> Vec<String> {
    snapshots_of(f, 100)
}

fn snapshots_of(f: &Fake, vmid: u32) -> Vec<String> {
    f.with(|s| {
        s.guests[&vmid]
            .snapshots
            .iter()
            .map(|v| v["name"].as_str().unwrap_or_default().to_string())
            .collect()
    })
}

fn ours_new(f: &Fake) -> Vec<String> {
    snapshots(f)
        .into_iter()
        .filter(|n| n.starts_with("autopilot-pre-update-2") && n != OLD_OURS)
        .collect()
}

fn requests(f: &Fake, method: &str, suffix: &str) -> usize {
    f.requests()
        .iter()
        .filter(|r| r.method == method && r.path.ends_with(suffix))
        .count()
}

#[test]
fn a_vm_is_snapshotted_upgraded_through_the_agent_and_old_snapshots_of_ours_go() {
    let (f, t) = setup("1", "2", &[]);
    let r = t.run(&["--json", "run", "update"]);
    r.code(0);
    let web = result_of(&r, "web");
    assert_eq!(web["outcome"], "updated", "{web}");
    assert_eq!(web["check"]["packages"][0], "webapp", "{web}");
    assert_eq!(f.with(|s| s.os[&100].version.clone()), "2");
    // The versions: from the simulation, and installed after the upgrade
    // (dpkg-query through the agent, an argv).
    assert_eq!(
        web["check"]["changes"]["packages"][0],
        serde_json::json!({"name": "webapp", "from": "1", "to": "2"}),
        "{web}"
    );
    assert_eq!(web["before"]["count"], 1, "{web}");
    assert_eq!(web["before"]["packages"][0]["from"], "1", "{web}");
    assert_eq!(web["after"]["packages"][0]["to"], "2", "{web}");
    assert_eq!(
        web["after"]["text"], "1 package: webapp 1 \u{2192} 2",
        "{web}"
    );
    // The run's message names the versions too.
    let doc = r.json();
    let sent: Vec<&serde_json::Value> = doc["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["event"] == "update_success")
        .collect();
    assert_eq!(sent.len(), 1, "{doc:#}");
    let text = sent[0]["data"]["summary"].as_str().unwrap();
    assert!(text.contains("web: 1 package: webapp 1 → 2"), "{text}");
    let asked = f.with(|s| s.agent_runs.clone());
    assert!(
        asked.iter().any(|(v, a)| *v == 100
            && a == &[
                "dpkg-query",
                "-W",
                "-f",
                "${Package} ${Version}\\n",
                "--",
                "webapp"
            ]),
        "{asked:?}"
    );
    // The new snapshot was taken before the upgrade and is kept; the old
    // one of ours is gone; the admin's are untouched.
    let new = ours_new(&f);
    assert_eq!(new.len(), 1, "{:?}", snapshots(&f));
    let snaps = snapshots(&f);
    assert!(!snaps.contains(&OLD_OURS.to_string()), "{snaps:?}");
    for a in ADMINS {
        assert!(snaps.contains(&a.to_string()), "{snaps:?}");
    }
    let runs = f.with(|s| s.agent_runs.clone());
    let upgrade = runs
        .iter()
        .position(|(_, a)| {
            a.last().is_some_and(|l| l == "dist-upgrade") && a.contains(&"-y".to_string())
        })
        .expect("no upgrade ran");
    assert!(runs[upgrade].1[0] == "env", "{runs:?}");
    let order: Vec<String> = f
        .requests()
        .iter()
        .filter(|r| {
            r.method == "POST" && (r.path.ends_with("/snapshot") || r.path.ends_with("/agent/exec"))
        })
        .map(|r| r.path.clone())
        .collect();
    let snap_at = order.iter().position(|p| p.ends_with("/snapshot")).unwrap();
    assert!(
        order[snap_at + 1..]
            .iter()
            .any(|p| p.ends_with("/agent/exec")),
        "the upgrade ran before the snapshot: {order:?}"
    );
    assert_eq!(requests(&f, "POST", "/rollback"), 0);
    // A container cannot run commands over the API: skipped, and why.
    let ct = result_of(&r, "nextcloud");
    assert_eq!(ct["outcome"], "skipped", "{ct}");
    assert!(
        ct["reason"]
            .as_str()
            .unwrap_or("")
            .contains("proxmox.local: true"),
        "{ct}"
    );
    // Nothing new the second time: up to date, no further snapshot.
    let r = t.run(&["--json", "run", "update", "--service", "web"]);
    r.code(0);
    assert_eq!(result_of(&r, "web")["outcome"], "up_to_date");
    assert_eq!(ours_new(&f).len(), 1);
}

#[test]
fn a_vm_whose_check_fails_after_the_upgrade_is_rolled_back_and_started() {
    let (f, t) = setup("1", "2", &["2"]);
    let r = t.run(&["--json", "run", "update", "--service", "web"]);
    r.code(1);
    let web = result_of(&r, "web");
    assert_eq!(web["outcome"], "rolled_back", "{web}");
    assert!(
        web["summary"]
            .as_str()
            .unwrap_or("")
            .contains("app answers"),
        "{web}"
    );
    assert_eq!(f.with(|s| s.os[&100].version.clone()), "1");
    // After the rollback the package is at its old version again.
    assert_eq!(web["after"]["packages"][0]["to"], "1", "{web}");
    // ... and the rollback's notification says so.
    let doc = r.json();
    let sent = doc["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["event"] == "rollback_executed")
        .unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(
        sent["data"]["before"]["text"], "1 package: webapp 1",
        "{sent}"
    );
    assert_eq!(
        sent["data"]["after"]["text"], "1 package: webapp 1 \u{2192} 1",
        "{sent}"
    );
    assert_eq!(f.with(|s| s.guests[&100].status.clone()), "running");
    assert_eq!(
        std::fs::read_to_string(t.path("guest-health")).unwrap(),
        "ok\n"
    );
    let new = ours_new(&f);
    assert_eq!(new.len(), 1);
    let rb: Vec<_> = f
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/rollback"))
        .collect();
    assert_eq!(rb.len(), 1);
    assert!(rb[0].path.contains(&new[0]), "{}", rb[0].path);
    assert!(
        rb[0].params.contains(&("start".into(), "1".into())),
        "{:?}",
        rb[0].params
    );
    // A failed update cleans nothing up: every snapshot stays.
    assert!(snapshots(&f).contains(&OLD_OURS.to_string()));
    let status = t.run(&["--json", "status"]);
    assert!(status.stdout.contains("rolled_back"), "{}", status.stdout);
}

#[test]
fn a_locked_guest_is_not_updated_and_says_why() {
    let (f, t) = setup("1", "2", &[]);
    f.with(|s| s.guests.get_mut(&100).unwrap().lock = Some("backup".into()));
    let r = t.run(&["--json", "run", "update", "--service", "web"]);
    r.code(0);
    let web = result_of(&r, "web");
    assert_eq!(web["outcome"], "skipped", "{web}");
    assert_eq!(
        web["reason"], "VM 100 is locked (backup): not updated now",
        "{web}"
    );
    assert!(ours_new(&f).is_empty(), "{:?}", snapshots(&f));
    assert_eq!(f.with(|s| s.os[&100].version.clone()), "1");
    assert!(f.with(|s| s.agent_runs.is_empty()), "nothing ran inside");
}

#[test]
fn a_dry_run_lists_the_pending_packages_and_changes_nothing() {
    let (f, t) = setup("1", "2", &[]);
    let r = t.run(&["--json", "run", "update", "--dry-run", "--service", "web"]);
    r.code(0);
    let web = result_of(&r, "web");
    assert_eq!(web["outcome"], "available", "{web}");
    assert_eq!(web["check"]["packages"][0], "webapp", "{web}");
    assert_eq!(
        web["check"]["changes"]["text"], "1 package: webapp 1 \u{2192} 2",
        "{web}"
    );
    r.stderr_has("upgradable: 1 package: webapp 1 \u{2192} 2");
    assert!(
        web["summary"]
            .as_str()
            .unwrap_or("")
            .contains("autopilot-pre-update-"),
        "{web}"
    );
    assert_eq!(f.with(|s| s.os[&100].version.clone()), "1");
    assert_eq!(ours_new(&f).len(), 0);
    assert_eq!(requests(&f, "POST", "/snapshot"), 0);
    assert_eq!(requests(&f, "DELETE", OLD_OURS), 0);
}

#[test]
fn without_a_snapshot_a_failed_upgrade_is_not_rolled_back() {
    let (f, t) = setup("1", "2", &["2"]);
    let cfg = std::fs::read_to_string(t.path("etc/homelab-autopilot.yaml")).unwrap();
    t.config(&cfg.replace(
        "  keep_snapshot_hours: 24\n",
        "  keep_snapshot_hours: 24\n  snapshot_before_update: false\n",
    ));
    let r = t.run(&["--json", "run", "update", "--service", "web"]);
    r.code(1);
    let web = result_of(&r, "web");
    assert_eq!(web["outcome"], "rollback_failed", "{web}");
    assert!(
        web["summary"]
            .as_str()
            .unwrap_or("")
            .contains("no snapshot"),
        "{web}"
    );
    assert_eq!(requests(&f, "POST", "/snapshot"), 0);
    assert_eq!(requests(&f, "POST", "/rollback"), 0);
}

#[test]
fn a_guest_update_killed_while_validating_is_rolled_back_by_the_next_run() {
    use std::process::Stdio;
    use std::time::{Duration, Instant};
    let (f, t) = setup("1", "2", &["2"]);
    let cfg = std::fs::read_to_string(t.path("etc/homelab-autopilot.yaml")).unwrap();
    t.config(&cfg.replace(
        "health_check_timeout_seconds: 2\n",
        "health_check_timeout_seconds: 120\n",
    ));
    let mut child = t
        .command(&["run", "update", "--service", "web"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = t.path("state/state.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "the update never reached validation"
        );
        let step: Option<String> = db
            .exists()
            .then(|| {
                rusqlite::Connection::open(&db)
                    .unwrap()
                    .query_row(
                        "SELECT step FROM updates WHERE finished_at IS NULL",
                        [],
                        |r| r.get(0),
                    )
                    .ok()
            })
            .flatten();
        if step.as_deref() == Some("validating") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(f.with(|s| s.os[&100].version.clone()), "2", "applied");
    assert_eq!(ours_new(&f).len(), 1);

    let r = t.run(&["--json", "run", "update", "--service", "web"]);
    r.code(1);
    let web = result_of(&r, "web");
    assert_eq!(web["outcome"], "rolled_back", "{web}");
    assert_eq!(web["recovered"], true, "{web}");
    assert_eq!(web["step_reached"], "validating", "{web}");
    assert_eq!(f.with(|s| s.os[&100].version.clone()), "1");
    assert_eq!(f.with(|s| s.guests[&100].status.clone()), "running");
    assert_eq!(requests(&f, "POST", "/rollback"), 1);
}

/// An `lxc` with `proxmox.local: true`: the snapshot through the API, the
/// commands inside the container through `pct exec VMID -- argv`. Proxmox
/// cannot run here, so `pct` is a stand-in on PATH that records its argv
/// and answers as a Debian container whose upgrade takes webapp 1 → 2.
#[test]
fn a_container_in_local_mode_is_upgraded_through_pct_exec() {
    let (f, t) = setup("1", "2", &[]);
    let cfg = std::fs::read_to_string(t.path("etc/homelab-autopilot.yaml")).unwrap();
    t.config(&cfg.replace("    fingerprint:", "    local: true\n    fingerprint:"));
    let log = t.path("pct-argv");
    let state = t.path("ct-version");
    t.write(
        "bin/pct",
        &format!(
            r#"#!/bin/sh
for a in "$@"; do printf '%s\037' "$a" >> {log}; done
printf '\n' >> {log}
[ "$1 $2 $3" = "exec 200 --" ] || {{ echo "not a pct exec of 200: $*" >&2; exit 2; }}
shift 3
v=$(cat {state} 2>/dev/null || echo 1)
case "$1 $2" in
  "cat /etc/os-release") printf 'ID=debian\nVERSION_ID="12"\n' ;;
  "apt-get update") echo "Reading package lists..." ;;
  "apt-get -s") [ "$v" = 1 ] && echo "Inst webapp [1] (2 Debian:12/stable [amd64])"; true ;;
  "env DEBIAN_FRONTEND=noninteractive") echo 2 > {state}; echo "Setting up webapp" ;;
  "dpkg-query -W") echo "webapp $v" ;;
  *) echo "E: not in this stand-in: $*" >&2; exit 100 ;;
esac
"#,
            log = log.display(),
            state = state.display()
        ),
    );
    std::fs::set_permissions(
        t.path("bin/pct"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        t.path("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let r = crate::harness::Run::from_output(
        t.command(&["--json", "run", "update", "--service", "nextcloud"])
            .env("PATH", path)
            .output()
            .unwrap(),
    );
    r.code(0);
    let ct = result_of(&r, "nextcloud");
    assert_eq!(ct["outcome"], "updated", "{ct}");
    assert_eq!(
        ct["after"]["text"], "1 package: webapp 1 \u{2192} 2",
        "{ct}"
    );
    let calls: Vec<Vec<String>> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            l.trim_end_matches('\u{1f}')
                .split('\u{1f}')
                .map(String::from)
                .collect()
        })
        .collect();
    let pct = |a: &[&str]| -> Vec<String> {
        ["exec", "200", "--"]
            .iter()
            .chain(a)
            .map(|s| s.to_string())
            .collect()
    };
    assert_eq!(
        calls,
        [
            pct(&["cat", "/etc/os-release"]),
            pct(&["apt-get", "update"]),
            pct(&["apt-get", "-s", "dist-upgrade"]),
            pct(&["apt-get", "update"]),
            pct(&[
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "-y",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "-o",
                "Dpkg::Options::=--force-confold",
                "dist-upgrade"
            ]),
            pct(&[
                "dpkg-query",
                "-W",
                "-f",
                "${Package} ${Version}\\n",
                "--",
                "webapp"
            ]),
        ]
    );
    // The snapshot went through the API, before the upgrade; no agent.
    let snaps = snapshots_of(&f, 200);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(snaps[0].starts_with("autopilot-pre-update-2"), "{snaps:?}");
    assert_eq!(requests(&f, "POST", "/lxc/200/snapshot"), 1);
    assert!(f.with(|s| s.agent_runs.is_empty()));
}
