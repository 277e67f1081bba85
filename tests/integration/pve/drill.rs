//! `dr-drill` of Proxmox guests through the binary against the fake: a
//! container `nextcloud` (the database) and a VM `web` (the app) depending
//! on it, restored in dependency order into the reserved VMID range on the
//! isolated VLAN, the app's dependency check run inside the app's copy
//! through the guest agent with the database copy's address, the report
//! written and both copies destroyed; a failing dependency check; SIGTERM;
//! disconnected copies whose dependency cannot be checked; a drill killed
//! with SIGKILL cleaned up by the next one; plans that mix guests with
//! other copies refused.

use super::fake::Fake;
use super::restore::{
    calls, configs_at_start, copies, kill_when_restoring, param, setup_with, NAMESPACE, TO_STORAGE,
    VLAN,
};
use crate::harness::*;
use std::time::{Duration, Instant};

/// The app's check: the database copy's port, from inside the app's copy.
const PLAN: &str = "name: site\nreport_dir: reports\nservices:\n  - service: web\n    depends_on: [nextcloud]\n    dependency_checks:\n      - type: command\n        name: app reaches its database\n        command: [nc, -z, \"{restore_address:nextcloud}\", \"5432\"]\n  - service: nextcloud\n";

fn setup(env: &str) -> (Fake, Test) {
    let (f, t) = setup_with(TO_STORAGE, env, "", "");
    t.run(&["run", "backup"]).code(0);
    t.write("plan.yaml", PLAN);
    (f, t)
}

fn drill(t: &Test) -> Run {
    t.run(&[
        "--json",
        "dr-drill",
        t.path("plan.yaml").to_str().unwrap(),
        "--yes",
    ])
}

/// The VMID of the restore `POST /nodes/pve1/<kind>` asked for (the last).
fn restored_vmid(f: &Fake, kind: &str) -> u32 {
    calls(f, "POST", &format!("/nodes/pve1/{kind}"))
        .iter()
        .filter_map(|p| param(p, "vmid").and_then(|v| v.parse().ok()))
        .rfind(|v| *v >= 9900)
        .unwrap_or_else(|| panic!("no {kind} restored"))
}

/// Index of the first request `method path` (exact path).
fn first(f: &Fake, method: &str, path: &str) -> usize {
    f.requests()
        .iter()
        .position(|r| r.method == method && r.path.ends_with(path))
        .unwrap_or_else(|| panic!("no {method} {path}"))
}

fn service<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["service"] == name))
        .unwrap_or_else(|| panic!("{doc}"))
}

fn nc_runs(f: &Fake) -> Vec<(u32, Vec<String>)> {
    f.with(|s| s.agent_runs.clone())
        .into_iter()
        .filter(|(_, a)| a[0] == "nc")
        .collect()
}

#[test]
fn guests_are_drilled_in_order_on_one_isolated_vlan_and_checked_from_inside() {
    let (f, t) = setup(VLAN);
    let r = drill(&t);
    r.code(0);
    let doc = r.json();
    assert_eq!(doc["ok"], true, "{doc}");
    assert_eq!(doc["cleaned_up"], true, "{doc}");
    // The database first, then the app.
    let names: Vec<&str> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["nextcloud", "web"]);
    let db = restored_vmid(&f, "lxc");
    let app = restored_vmid(&f, "qemu");
    assert!(first(&f, "POST", "/nodes/pve1/lxc") < first(&f, "POST", "/nodes/pve1/qemu"));
    // Both copies on the same isolated network: VLAN 999 of vmbr9.
    let started = configs_at_start(&f);
    assert_eq!(started.len(), 2, "{started:?}");
    for (vmid, conf) in &started {
        for (k, v) in conf.iter().filter(|(k, _)| k.starts_with("net")) {
            assert!(
                v.contains("bridge=vmbr9") && v.contains("tag=999") && !v.contains("link_down"),
                "{vmid} {k}: {v}"
            );
        }
    }
    assert!(
        doc["guest_network"]
            .as_str()
            .is_some_and(|n| n.contains("isolated_vlan") && n.contains("VLAN tag 999")),
        "{doc}"
    );
    // The check ran inside the app's copy, with the address the database
    // copy reports (its interfaces read after it started).
    let addr = format!("10.99.0.{}", 10 + db % 200);
    assert_eq!(
        nc_runs(&f),
        vec![(
            app,
            vec!["nc".into(), "-z".into(), addr.clone(), "5432".into()]
        )]
    );
    assert!(
        first(&f, "GET", &format!("/lxc/{db}/interfaces"))
            > first(&f, "POST", &format!("/lxc/{db}/status/start"))
    );
    let web = service(&doc, "web");
    assert_eq!(web["ok"], true, "{web}");
    assert_eq!(web["dependency_checks"][0]["ok"], true, "{web}");
    assert!(web["rto_seconds"].as_f64().unwrap() > 0.0, "{web}");
    assert!(service(&doc, "nextcloud")["rto_seconds"].as_f64().unwrap() > 0.0);
    // The report, both forms.
    let md = std::fs::read_to_string(doc["markdown"].as_str().unwrap()).unwrap();
    assert!(md.contains("Result: **PASSED**"), "{md}");
    assert!(md.contains("Guest copies: isolated_vlan"), "{md}");
    assert!(md.contains(&format!("nc exited 0 in VM {app}")), "{md}");
    assert!(md.contains(&format!("copy destroyed: CT {db}")), "{md}");
    let html = std::fs::read_to_string(doc["html"].as_str().unwrap()).unwrap();
    assert!(html.contains("app reaches its database"), "{html}");
    // Both destroyed; the live guests untouched.
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
    assert_eq!(calls(&f, "DELETE", &format!("/qemu/{app}")).len(), 1);
    assert_eq!(calls(&f, "DELETE", &format!("/lxc/{db}")).len(), 1);
    assert!(calls(&f, "PUT", "/qemu/100/config").is_empty());
    assert!(f.with(|s| s.guests.contains_key(&100) && s.guests.contains_key(&200)));
}

#[test]
fn a_failing_dependency_check_fails_the_drill_and_both_copies_go() {
    let (f, t) = setup(VLAN);
    f.with(|s| s.agent_exit.insert("nc".into(), 1));
    let r = drill(&t);
    r.code(1);
    let doc = r.json();
    assert_eq!(doc["ok"], false, "{doc}");
    let web = service(&doc, "web");
    assert_eq!(web["ok"], false, "{web}");
    let dc = &web["dependency_checks"][0];
    assert_eq!(dc["ok"], false, "{web}");
    assert!(
        dc["detail"].as_str().unwrap().contains("nc exited 1"),
        "{web}"
    );
    assert_eq!(service(&doc, "nextcloud")["ok"], true, "{doc}");
    assert!(!nc_runs(&f).is_empty());
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
    let (db, app) = (restored_vmid(&f, "lxc"), restored_vmid(&f, "qemu"));
    assert_eq!(calls(&f, "DELETE", &format!("/qemu/{app}")).len(), 1);
    assert_eq!(calls(&f, "DELETE", &format!("/lxc/{db}")).len(), 1);
    let md = std::fs::read_to_string(doc["markdown"].as_str().unwrap()).unwrap();
    assert!(md.contains("Result: **FAILED**"), "{md}");
}

#[test]
fn sigterm_stops_a_waiting_drill_and_destroys_its_copies() {
    let (f, t) = setup(VLAN);
    // The dependency check keeps failing: the drill waits for it.
    f.with(|s| s.agent_exit.insert("nc".into(), 1));
    let child = t
        .command(&["dr-drill", t.path("plan.yaml").to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while nc_runs(&f).is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "no check ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(copies(&f).len(), 2);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143), "{out:?}");
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
}

#[test]
fn disconnected_copies_say_their_dependency_was_not_checked() {
    let (f, t) = setup(NAMESPACE);
    let r = drill(&t);
    r.code(1);
    let doc = r.json();
    let web = service(&doc, "web");
    let detail = web["dependency_checks"][0]["detail"].as_str().unwrap();
    assert_eq!(web["dependency_checks"][0]["ok"], false, "{web}");
    assert!(
        detail.starts_with(
            "not checked: the copies are disconnected (test_environment type namespace"
        ),
        "{detail}"
    );
    // Nothing was run pretending to check it.
    assert!(nc_runs(&f).is_empty(), "{:?}", nc_runs(&f));
    // The guests themselves restored and passed their own checks.
    assert_eq!(service(&doc, "nextcloud")["ok"], true, "{doc}");
    assert!(
        web["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true),
        "{web}"
    );
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
}

#[test]
fn a_killed_drill_leaves_guests_the_next_drill_destroys() {
    let (f, t) = setup(VLAN);
    // Slow tasks: the drill is killed while the app's copy is restored,
    // the database's copy already running.
    f.with(|s| s.task_ms = 1500);
    let child = t
        .command(&["dr-drill", t.path("plan.yaml").to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    kill_when_restoring(&f, child, "qemu");
    let db = restored_vmid(&f, "lxc");
    let app = restored_vmid(&f, "qemu");
    assert!(copies(&f).contains(&db), "{:?}", copies(&f));
    // The database's copy was checked and finished, the app's not: the
    // next drill removes both at once (a drill's copies are not kept for
    // cleanup_delay_minutes).
    t.config(
        &std::fs::read_to_string(t.path("etc/homelab-autopilot.yaml"))
            .unwrap()
            .replace("cleanup_delay_minutes: 0", "cleanup_delay_minutes: 60"),
    );
    let r = drill(&t);
    r.code(0);
    let doc = r.json();
    let cleanup: Vec<String> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "cleanup")
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    for (svc, vmid) in [("nextcloud", db), ("web", app)] {
        assert!(
            cleanup
                .iter()
                .any(|l| l.starts_with("removed the copy of restore test")
                    && l.contains(&format!("({svc}, left by an interrupted run)"))
                    && l.contains(&vmid.to_string())),
            "{cleanup:?}"
        );
    }
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
    // Destroyed by the sweep, and the second drill's copies (the same
    // VMIDs, free again) by its own cleanup.
    assert_eq!(calls(&f, "DELETE", &format!("/lxc/{db}")).len(), 2);
    assert_eq!(calls(&f, "DELETE", &format!("/qemu/{app}")).len(), 2);
}

#[test]
fn plans_that_mix_guests_with_other_copies_in_a_check_are_refused() {
    let (_f, t) = setup_with(
        TO_STORAGE,
        VLAN,
        "",
        "  - name: files\n    type: host\n    backup_paths: [{root}/data/files]\n",
    );
    t.write(
        "plan.yaml",
        "services:\n  - service: web\n  - service: files\n    depends_on: [web]\n    dependency_checks:\n      - type: command\n        command: [test, -s, \"{restore_address:web}\"]\n  - service: nextcloud\n    depends_on: [web]\n    dependency_checks:\n      - type: tcp\n        host: web\n        port: 80\n",
    );
    let r = t.run(&["dr-drill", t.path("plan.yaml").to_str().unwrap(), "--yes"]);
    r.code(78);
    r.stderr_has("plan.yaml:4:18: services[1].depends_on[0]: files cannot check its dependency on web: a Docker or archive copy is isolated from vm / lxc copies by design")
        .stderr_has("plan.yaml:7:29: services[1].dependency_checks[0].command[2]: {restore_address:NAME} applies to vm / lxc copies only")
        .stderr_has("plan.yaml:11:15: services[2].dependency_checks[0].type: from a vm / lxc copy a dependency check is a command run inside the guest");
}

#[test]
fn a_container_without_pct_exec_says_its_dependency_cannot_be_checked() {
    let (f, t) = setup(VLAN);
    t.write(
        "plan.yaml",
        "services:\n  - service: web\n  - service: nextcloud\n    depends_on: [web]\n    dependency_checks:\n      - type: command\n        name: reaches the app\n        command: [nc, -z, \"{restore_address:web}\", \"80\"]\n",
    );
    let r = drill(&t);
    r.code(1);
    let doc = r.json();
    let ct = service(&doc, "nextcloud");
    assert_eq!(ct["dependency_checks"][0]["ok"], false, "{ct}");
    assert!(
        ct["dependency_checks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("cannot run commands inside a container"),
        "{ct}"
    );
    assert!(nc_runs(&f).is_empty(), "{:?}", nc_runs(&f));
    assert!(copies(&f).is_empty(), "{:?}", copies(&f));
}
