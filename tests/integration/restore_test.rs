//! `run restore-test` through the binary: an archive restored into a temp
//! dir, compared with its manifest and checked (a manifest mismatch fails
//! with `restore_test_failed`); a Compose project with data in a named
//! volume served over HTTP, restored into an isolated project on an
//! internal network, checked from inside that network (it sees the
//! backed-up data, not the live data), and gone afterwards; a corrupted
//! backup failing; a SIGKILLed test's copy removed by the next run;
//! `--backup ID`; disaster-recovery drills of archives and of two Compose
//! projects on the drill's shared network (the app reaching its restored
//! db), a killed drill cleaned up by the next one, plan errors.
//!
//! Docker tests need the engine (`harness::DOCKER`) and run as root (the
//! checks enter the copy's network namespace).

use crate::docker::{docker, Lab};
use crate::harness::{require, Test, DOCKER};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn archive_config(t: &Test, extra_check: &str) {
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\n    restore_testing:\n      cleanup_delay_minutes: 0\n      rto_target_minutes: 1\n  paths:\n    metrics_dir: {{root}}/metrics\nservices:\n  - name: web\n    type: host\n    backup_paths: [{{root}}/data/web]\n    restore_testing:\n      priority: high\n      health_checks:\n        - type: command\n          name: index present\n          command: [\"test\", \"-s\", \"{{restore_path}}{root}/data/web/index.html\"]\n{extra_check}",
        root = t.root_str()
    ));
}

fn left_in_state(t: &Test) -> Vec<String> {
    std::fs::read_dir(t.path("state/restore-tests"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn an_archive_is_restored_compared_checked_timed_and_removed() {
    let t = Test::new();
    t.write("data/web/index.html", "<h1>hello</h1>\n");
    t.write("data/web/conf/app.ini", "x=1\n");
    archive_config(&t, "");
    t.run(&["run", "backup"]).code(0);
    // The live data changes after the backup; the test sees the backup's.
    t.write("data/web/index.html", "");
    let r = t.run(&["run", "restore-test", "--json"]);
    r.code(0);
    let j = r.json();
    let res = &j["services"][0]["result"];
    assert_eq!(j["services"][0]["service"], "web");
    assert_eq!(res["ok"], true, "{j:#}");
    assert_eq!(res["backup_id"], 1);
    assert!(res["rto_seconds"].as_f64().unwrap() > 0.0, "{res}");
    assert!(res["rpo_seconds"].as_i64().unwrap() >= 0, "{res}");
    let checks = res["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert_eq!(checks[0]["name"], "files match the manifest");
    assert!(checks[0]["detail"].as_str().unwrap().contains("2 file(s)"));
    assert_eq!(checks[1]["name"], "index present");
    assert!(checks.iter().all(|c| c["ok"] == true), "{checks:?}");
    assert_eq!(j["events"], serde_json::json!([]));
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));

    let st = t.run(&["status", "--json"]);
    let tests = &st.json()["restore_tests"];
    assert_eq!(tests[0]["service"], "web");
    assert_eq!(tests[0]["ok"], true);
    assert_eq!(tests[0]["cleaned_up"], true);
    t.run(&["status"]).stdout_has("Restore tests");
    let prom = std::fs::read_to_string(t.path("metrics/homelab_autopilot.prom")).unwrap();
    assert!(
        prom.contains("homelab_autopilot_restore_test_last_success{service=\"web\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("homelab_autopilot_restore_test_rto_seconds{service=\"web\"}"));
}

#[test]
fn a_manifest_mismatch_or_a_failing_check_fails_with_restore_test_failed() {
    let t = Test::new();
    t.write("data/web/index.html", "<h1>hello</h1>\n");
    archive_config(&t, "");
    t.run(&["run", "backup"]).code(0);
    // The manifest records another sha256 for the file than the archive holds.
    let mut m = t.archives("backups").pop().unwrap().into_os_string();
    m.push(".manifest.json");
    let mut man: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    man["files"][0]["sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(&m, serde_json::to_vec(&man).unwrap()).unwrap();
    let r = t.run(&["run", "restore-test", "--json"]);
    r.code(1);
    let j = r.json();
    let res = &j["services"][0];
    assert_eq!(res["ok"], false);
    assert!(
        res["error"].as_str().unwrap().contains("sha256 differs"),
        "{res}"
    );
    assert_eq!(j["events"], serde_json::json!(["restore_test_failed"]));
    assert!(left_in_state(&t).is_empty());

    // A check that fails on a sound copy fails the test the same way.
    std::fs::remove_file(&m).unwrap();
    let t2 = Test::new();
    t2.write("data/web/index.html", "<h1>hello</h1>\n");
    archive_config(
        &t2,
        "        - type: command\n          name: never\n          command: [\"false\"]\n",
    );
    t2.run(&["run", "backup"]).code(0);
    let r = t2.run(&["run", "restore-test", "--json"]);
    r.code(1);
    let j = r.json();
    assert_eq!(j["events"], serde_json::json!(["restore_test_failed"]));
    assert!(j["services"][0]["error"]
        .as_str()
        .unwrap()
        .contains("never"));
    let st = t2.run(&["status", "--json"]).json();
    assert_eq!(st["restore_tests"][0]["ok"], false);
    assert!(st["restore_tests"][0]["rto_seconds"].is_null());
}

#[test]
fn backup_chooses_the_backup_to_test_and_refuses_unknown_or_foreign_ids() {
    let t = Test::new();
    let root = t.root_str();
    t.write("data/web/index.html", "v1\n");
    t.write("data/other/a", "a\n");
    // The extra check passes only on the first backup's data.
    archive_config(
        &t,
        &format!(
            "        - type: command\n          name: first version\n          command: [\"grep\", \"-q\", \"v1\", \"{{restore_path}}{root}/data/web/index.html\"]\n  - name: other\n    type: host\n    backup_paths: [{root}/data/other]\n"
        ),
    );
    t.run(&["run", "backup", "--service", "web"]).code(0);
    t.write("data/web/index.html", "v2\n");
    t.run(&["run", "backup", "--service", "web"]).code(0);
    t.run(&["run", "backup", "--service", "other"]).code(0);

    // The latest verified backup (2) has v2: the extra check fails.
    let r = t.run(&["run", "restore-test", "--service", "web", "--json"]);
    r.code(1);
    let j = r.json();
    assert!(
        j["services"][0]["error"]
            .as_str()
            .unwrap()
            .contains("first version"),
        "{j:#}"
    );

    // --backup 1 tests the first one, and alone selects its service.
    let r = t.run(&["run", "restore-test", "--backup", "1", "--json"]);
    r.code(0);
    let j = r.json();
    assert_eq!(j["services"].as_array().unwrap().len(), 1, "{j:#}");
    assert_eq!(j["services"][0]["service"], "web");
    assert_eq!(j["services"][0]["result"]["backup_id"], 1, "{j:#}");
    assert_eq!(j["services"][0]["result"]["ok"], true, "{j:#}");

    // Another service's backup, an unknown ID, another workflow: usage errors.
    t.run(&["run", "restore-test", "--service", "web", "--backup", "3"])
        .code(2)
        .stderr_has("backup of service other, not of web");
    t.run(&["run", "restore-test", "--backup", "99"])
        .code(2)
        .stderr_has("no backup with that ID");
    t.run(&["run", "backup", "--backup", "1"])
        .code(2)
        .stderr_has("--backup applies to the restore-test workflow");
    let st = t.run(&["status", "--json"]).json();
    // The usage errors recorded nothing: web's last test is the --backup 1 one.
    assert_eq!(st["restore_tests"].as_array().unwrap().len(), 1, "{st:#}");
    assert_eq!(st["restore_tests"][0]["ok"], true, "{st:#}");
}

#[test]
fn shell_string_checks_are_refused_and_a_service_without_backup_fails() {
    let t = Test::new();
    t.write("data/web/index.html", "x\n");
    archive_config(&t, "");
    // Nothing backed up yet.
    let r = t.run(&["run", "restore-test", "--json"]);
    r.code(1);
    assert!(r.json()["services"][0]["error"]
        .as_str()
        .unwrap()
        .contains("no verified backup"));
    archive_config(
        &t,
        "        - type: command\n          name: shell\n          command: \"test -d /\"\n",
    );
    t.run(&["run", "backup"]).code(0);
    let r = t.run(&["run", "restore-test", "--json"]);
    r.code(1);
    let j = r.json();
    assert!(
        j["services"][0]["error"]
            .as_str()
            .unwrap()
            .contains("argv list, not a shell string"),
        "{j:#}"
    );
}

/// A Compose project `web` serving its named volume `data` over HTTP
/// (busybox httpd on 8080, on the project's default network).
struct Served {
    name: String,
    dir: std::path::PathBuf,
    _lab: Lab,
}

impl Served {
    /// Write `word` into the served file, through the running container.
    fn put(&self, word: &str) {
        docker(&[
            "exec",
            &self.container(),
            "sh",
            "-c",
            &format!("echo {word} > /data/file"),
        ]);
    }

    fn new(t: &Test, tag: &str) -> Served {
        Served::with(t, tag, "web")
    }

    /// The project with its Compose service named `service`.
    fn with(t: &Test, tag: &str, service: &str) -> Served {
        let lab = Lab::new(tag);
        let name = format!("hlart{}{tag}", std::process::id());
        let dir = t.path(&format!("srv/{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("docker-compose.yml"),
            format!(
                "version: \"3\"\nservices:\n  {service}:\n    image: {}\n    command: [\"busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/data\"]\n    stop_grace_period: 1s\n    environment:\n      APP_MODE: test\n    volumes:\n      - data:/data\nvolumes:\n  data: {{}}\n",
                lab.image
            ),
        )
        .unwrap();
        let s = Served {
            name,
            dir,
            _lab: lab,
        };
        s.compose(&["up", "-d"]);
        s
    }

    fn compose(&self, args: &[&str]) {
        let st = Command::new("docker-compose")
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(self.dir.join("docker-compose.yml"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "docker-compose {args:?}");
    }

    fn container(&self) -> String {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
        ])
        .lines()
        .next()
        .unwrap()
        .to_string()
    }

    fn config(&self, t: &Test) {
        t.config(&format!(
            "global:\n  backup:\n    root: {{root}}/backups\n    restore_testing:\n      cleanup_delay_minutes: 0\n      rto_target_minutes: 1\nservices:\n  - name: app\n    type: docker_compose\n    compose_file: {}/docker-compose.yml\n    compose_project: {}\n    restore_testing:\n      health_checks:\n        - type: http\n          name: served file\n          url: http://web:8080/file\n          body_contains: original\n",
            self.dir.display(),
            self.name
        ));
    }

    /// Everything any restore test of this project made and left.
    fn leftovers(&self) -> String {
        let f = format!("name={}-restoretest-", self.name);
        [
            docker(&["ps", "-a", "--filter", &f, "--format", "{{.Names}}"]),
            docker(&["network", "ls", "--filter", &f, "--format", "{{.Name}}"]),
            docker(&["volume", "ls", "--filter", &f, "--format", "{{.Name}}"]),
        ]
        .join(" ")
        .trim()
        .to_string()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("docker-compose")
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(self.dir.join("docker-compose.yml"))
            .args(["down", "-v", "--timeout", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_compose_copy_answers_on_its_internal_network_with_the_backed_up_data() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let p = Served::new(&t, "rtok");
    let c = p.container();
    p.put("original");
    p.config(&t);
    t.run(&["run", "backup"]).code(0);
    p.put("changed");
    let r = t.run(&["run", "restore-test", "--json"]);
    r.code(0);
    let j = r.json();
    let res = &j["services"][0]["result"];
    assert_eq!(res["ok"], true, "{j:#}\n{}", r.stderr);
    let env = &res["environment"];
    let project = format!("{}-restoretest-{}", p.name, res["id"]);
    assert_eq!(env["project"], project.as_str());
    assert_eq!(env["network"], project.as_str());
    assert_eq!(
        env["containers"][0]["name"],
        format!("{project}-web").as_str()
    );
    let checks = res["checks"].as_array().unwrap();
    assert_eq!(checks[1]["name"], "served file");
    assert_eq!(checks[1]["ok"], true, "{checks:?}");
    assert!(res["rto_seconds"].as_f64().unwrap() > 0.0);
    r.stderr_has("started on internal network");
    // The live service was not touched, and the copy is gone.
    assert_eq!(
        docker(&["exec", &c, "busybox", "cat", "/data/file"]),
        "changed"
    );
    assert_eq!(p.leftovers(), "");
}

#[test]
fn a_corrupted_compose_backup_fails_and_leaves_nothing() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let p = Served::new(&t, "rtbad");
    p.put("original");
    p.config(&t);
    t.run(&["run", "backup"]).code(0);
    let a = t.archives("backups").pop().unwrap();
    let mut bytes = std::fs::read(&a).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&a, bytes).unwrap();
    let r = t.run(&["run", "restore-test", "--json"]);
    r.code(1);
    let j = r.json();
    assert_eq!(j["events"], serde_json::json!(["restore_test_failed"]));
    assert!(
        j["services"][0]["error"]
            .as_str()
            .unwrap()
            .contains("restore failed"),
        "{j:#}"
    );
    assert_eq!(p.leftovers(), "");
}

#[test]
fn a_killed_restore_test_is_cleaned_up_by_the_next_run() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let p = Served::new(&t, "rtkill");
    p.put("original");
    p.config(&t);
    t.run(&["run", "backup"]).code(0);
    // The checks never start: the run is killed while the copy runs.
    t.script(
        "services/app.rhai",
        "fn run_checks(svc, env, ctx) {\n    proc::run([\"sleep\", \"60\"]);\n    restore_test::check(svc, env)\n}\n",
    );
    let mut child = t
        .command(&["run", "restore-test"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = format!("{}-restoretest-1-web", p.name);
    while !docker(&["ps", "--format", "{{.Names}}"]).contains(&running) {
        assert!(Instant::now() < deadline, "the copy never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(p.leftovers().contains(&running), "{}", p.leftovers());
    std::fs::remove_file(t.path("scripts/services/app.rhai")).unwrap();
    let r = t.run(&["run", "restore-test"]);
    r.code(0)
        .stderr_has("removed the copy of restore test 1 (app, left by an interrupted run)");
    assert_eq!(p.leftovers(), "");
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));
}

#[test]
fn backups_verify_reads_vzdump_files_and_reports_pbs_and_volumes_as_unknown() {
    let t = Test::new();
    t.write("data/web/index.html", "x\n");
    archive_config(&t, "");
    t.run(&["run", "backup"]).code(0);
    let dump = t.path("dump");
    std::fs::create_dir_all(&dump).unwrap();
    let mut vma = b"VMA\0".to_vec();
    vma.extend(std::iter::repeat_n(3u8, 50_000));
    let good = dump.join("vzdump-qemu-100-2026_01_01-00_00_00.vma.zst");
    std::fs::write(&good, zstd::encode_all(&vma[..], 3).unwrap()).unwrap();
    let bad = dump.join("vzdump-qemu-100-2026_01_02-00_00_00.vma.zst");
    let mut z = zstd::encode_all(&vma[..], 3).unwrap();
    z.truncate(z.len() - 10);
    std::fs::write(&bad, z).unwrap();
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    for (kind, loc) in [
        ("vzdump", good.display().to_string()),
        ("vzdump", bad.display().to_string()),
        (
            "vzdump",
            "local:backup/vzdump-qemu-100-2026_01_03-00_00_00.vma.zst".to_string(),
        ),
        ("pbs", "pbs:backup/vm/100/2026-01-04T00:00:00Z".to_string()),
    ] {
        db.execute(
            "INSERT INTO backups (service, kind, location, size, created_at) VALUES ('web', ?1, ?2, 1, 1)",
            [kind, &loc],
        )
        .unwrap();
    }
    let r = t.run(&["backups", "verify", "--json"]);
    r.code(65);
    let j = r.json();
    let by = |loc: &str| {
        j["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["path"] == loc)
            .cloned()
            .unwrap_or_else(|| panic!("{loc}: {j:#}"))
    };
    let g = by(&good.display().to_string());
    assert_eq!(
        (g["ok"].clone(), g["format"].clone()),
        (true.into(), "vma".into())
    );
    assert_eq!(g["depth"], "full");
    assert_eq!(by(&bad.display().to_string())["ok"], false);
    let v = by("local:backup/vzdump-qemu-100-2026_01_03-00_00_00.vma.zst");
    assert_eq!(v["unknown"], true);
    assert!(v["ok"].is_null());
    assert_eq!(
        by("pbs:backup/vm/100/2026-01-04T00:00:00Z")["unknown"],
        true
    );
    assert_eq!(j["unknown"], 2);
    t.run(&["backups", "verify"])
        .stdout_has("UNKNOWN pbs:backup/vm/100/2026-01-04T00:00:00Z: pbs backup not readable");
    let status: Vec<(String, Option<i64>)> = db
        .prepare("SELECT status, verified_at FROM backups WHERE kind = 'vzdump' ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(status[0].0, "complete");
    assert!(status[0].1.is_some());
    assert_eq!(status[1].0, "failed_verify");
    assert_eq!(status[2], ("complete".to_string(), None));
    // The newest archive's verification age is in status.
    let st = t.run(&["status", "--json"]).json();
    assert!(
        st["services"][0]["verification_age_seconds"]
            .as_i64()
            .is_some(),
        "{st:#}"
    );
}

/// The archive config with a webhook channel and the given
/// `restore_testing` lines (under `global.backup.restore_testing`).
fn notified_config(t: &Test, url: &str, rt: &str, check: &str) {
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\n    restore_testing:\n{rt}notifications:\n  cooldown_minutes: 0\n  channels:\n    - name: hook\n      type: webhook\n      url: {url}\nservices:\n  - name: web\n    type: host\n    backup_paths: [{{root}}/data/web]\n    restore_testing:\n      health_checks:\n        - type: command\n          name: probe\n          command: [\"{check}\"]\n",
    ));
}

#[test]
fn notifications_follow_restore_testing_notifications() {
    use crate::notify::{ok, Receiver};
    let rx = Receiver::start(ok());
    let t = Test::new();
    t.write("data/web/index.html", "x\n");
    let url = rx.url("/hook");
    notified_config(
        &t,
        &url,
        "      cleanup_delay_minutes: 0\n      notifications:\n        on_success: true\n        include_rto_metrics: true\n",
        "true",
    );
    t.run(&["run", "backup"]).code(0);
    t.run(&["run", "restore-test"]).code(0);
    let got: Vec<serde_json::Value> = rx.on("/hook").iter().map(|r| r.json()).collect();
    let text = serde_json::to_string(&got).unwrap();
    assert!(text.contains("restore_test_success"), "{text}");
    assert!(text.contains("rto_seconds"), "{text}");
    // on_failure: false raises nothing for a failed test; the default does.
    notified_config(
        &t,
        &url,
        "      cleanup_delay_minutes: 0\n      notifications:\n        on_failure: false\n",
        "false",
    );
    let before = rx.on("/hook").len();
    let r = t.run(&["run", "restore-test", "--json"]);
    r.code(1);
    assert_eq!(r.json()["events"], serde_json::json!([]));
    assert_eq!(rx.on("/hook").len(), before);
    notified_config(&t, &url, "      cleanup_delay_minutes: 0\n", "false");
    t.run(&["run", "restore-test"]).code(1);
    let last = rx.on("/hook").last().unwrap().text();
    assert!(last.contains("restore_test_failed"), "{last}");
}

#[test]
fn a_copy_kept_for_inspection_is_removed_once_its_delay_has_passed() {
    let t = Test::new();
    t.write("data/web/index.html", "<h1>hello</h1>\n");
    archive_config(&t, "");
    let cfg = std::fs::read_to_string(t.path("etc/homelab-autopilot.yaml"))
        .unwrap()
        .replace("cleanup_delay_minutes: 0", "cleanup_delay_minutes: 30");
    t.config(&cfg);
    t.run(&["run", "backup"]).code(0);
    t.run(&["run", "restore-test"])
        .code(0)
        .stderr_has("stays 30 minute(s) for inspection");
    assert_eq!(left_in_state(&t), ["1"]);
    assert!(t.path("state/restore-tests/1/data").is_dir());
    // Not yet due: the next run keeps it (and makes and keeps its own).
    t.run(&["run", "restore-test"]).code(0);
    assert_eq!(left_in_state(&t).len(), 2);
    // Its time has come: as if it had finished an hour ago.
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    db.execute(
        "UPDATE restore_tests SET cleanup_after = finished_at - 1800, \
         finished_at = finished_at - 3600, started_at = started_at - 3600 WHERE id = 1",
        [],
    )
    .unwrap();
    t.run(&["run", "restore-test"])
        .code(0)
        .stderr_has("removed the copy of restore test 1 (web, kept for inspection until now)");
    let mut left = left_in_state(&t);
    left.sort();
    assert_eq!(left, ["2", "3"]);
}

/// Two archived services: `db` (a file) and `app`, which needs it.
fn drill_config(t: &Test) {
    t.write("data/db/rows", "42 rows\n");
    t.write("data/app/index.html", "app\n");
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\n    restore_testing:\n      cleanup_delay_minutes: 5\n      rto_target_minutes: 1\nservices:\n  - name: app\n    type: host\n    backup_paths: [{root}/data/app]\n    restore_testing:\n      health_checks:\n        - type: command\n          name: index\n          command: [\"test\", \"-s\", \"{{restore_path}}{root}/data/app/index.html\"]\n  - name: db\n    type: host\n    backup_paths: [{root}/data/db]\n",
        root = t.root_str()
    ));
    // The app first in the plan: the drill restores the db first all the same.
    t.write(
        "plan.yaml",
        "name: site\nreport_dir: reports\nservices:\n  - service: app\n    depends_on: [db]\n    dependency_checks:\n      - type: command\n        name: app reads the db\n        command: [\"grep\", \"-q\", \"42 rows\", \"{restore_path:db}{root}/data/db/rows\"]\n    verify:\n      - Open the app and log in\n  - service: db\n    verify: [Count the rows]\nfinal_steps: [Tell the family]\n",
    );
}

#[test]
fn a_drill_restores_archives_in_dependency_order_checks_them_and_writes_its_report() {
    let t = Test::new();
    drill_config(&t);
    t.run(&["run", "backup"]).code(0);
    let plan = t.path("plan.yaml");
    let plan = plan.to_str().unwrap();
    // Manual steps, no terminal, no --yes: refused before anything runs.
    t.run(&["dr-drill", plan])
        .code(2)
        .stderr_has("3 manual verification step(s)");
    assert!(!t.path("reports").exists());

    let r = t.run(&["--json", "dr-drill", plan, "--yes"]);
    r.code(0);
    let j = r.json();
    assert_eq!(j["ok"], true, "{j:#}\n{}", r.stderr);
    let names: Vec<&str> = j["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["db", "app"]);
    let app = &j["services"][1];
    assert_eq!(app["dependency_checks"][0]["name"], "app reads the db");
    assert_eq!(app["dependency_checks"][0]["ok"], true, "{app}");
    assert!(app["restore_seconds"].as_f64().unwrap() > 0.0);
    assert!(app["rto_seconds"].as_f64().unwrap() > 0.0);
    let steps: Vec<String> = j["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "verify")
        .map(|s| s["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(steps[0].starts_with("Count the rows: not checked, continued unattended"));
    assert!(steps[2].starts_with("Tell the family"));
    // Cleaned up at once, whatever cleanup_delay_minutes says.
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));
    assert_eq!(j["cleaned_up"], true);

    let md = std::fs::read_to_string(j["markdown"].as_str().unwrap()).unwrap();
    assert!(md.starts_with("# Disaster-recovery drill: site"), "{md}");
    assert!(md.contains("| 2 | app | db | "), "{md}");
    assert!(md.contains("Open the app and log in"), "{md}");
    let html_path = j["html"].as_str().unwrap();
    assert!(html_path.starts_with(&t.path("reports").display().to_string()));
    let html = std::fs::read_to_string(html_path).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("app reads the db"));
    for external in ["src=", "href=", "<link", "<script", "@import", "url("] {
        assert!(!html.contains(external), "{external} in the HTML report");
    }
}

#[test]
fn a_drill_on_a_terminal_asks_each_manual_step_and_a_no_fails_that_service() {
    let t = Test::new();
    drill_config(&t);
    t.run(&["run", "backup"]).code(0);
    let plan = t.path("plan.yaml");
    let plan = plan.to_str().unwrap();

    // Every step confirmed: the drill passes and the runbook says so.
    let (code, screen) = t.on_a_terminal(&["dr-drill", plan], &["y", "yes", "Y"]);
    assert_eq!(code, Some(0), "{screen}");
    assert!(
        screen.contains("Manual step (db): Count the rows"),
        "{screen}"
    );
    assert!(
        screen.contains("Manual step (app): Open the app and log in"),
        "{screen}"
    );
    assert!(screen.contains("Manual step: Tell the family"), "{screen}");
    assert_eq!(screen.matches("[y/n]").count(), 3, "{screen}");
    let md = newest_report(&t);
    assert!(md.contains("Count the rows: confirmed"), "{md}");
    assert!(md.contains("Open the app and log in: confirmed"), "{md}");
    assert!(md.contains("Tell the family: confirmed"), "{md}");

    // A "no" to the app's step fails the app, and the drill, but the
    // remaining step is still asked and everything is cleaned up.
    let (code, screen) = t.on_a_terminal(&["dr-drill", plan], &["y", "n", "y"]);
    assert_eq!(code, Some(1), "{screen}");
    assert_eq!(screen.matches("[y/n]").count(), 3, "{screen}");
    let md = newest_report(&t);
    assert!(md.contains("Count the rows: confirmed"), "{md}");
    assert!(
        md.contains("Open the app and log in: FAILED (answered no)"),
        "{md}"
    );
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));
}

/// The Markdown report of the latest drill in `reports/`.
fn newest_report(t: &Test) -> String {
    let mut reports: Vec<_> = std::fs::read_dir(t.path("reports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    reports.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    std::fs::read_to_string(reports.last().expect("a Markdown report")).unwrap()
}

#[test]
fn a_drill_with_a_broken_dependency_skips_what_needs_it_cleans_up_and_fails() {
    let t = Test::new();
    drill_config(&t);
    t.run(&["run", "backup"]).code(0);
    // The db's manifest no longer matches its archive.
    let db = t
        .archives("backups")
        .into_iter()
        .find(|a| a.display().to_string().contains("/db/"))
        .unwrap();
    let mut m = db.into_os_string();
    m.push(".manifest.json");
    let mut man: serde_json::Value = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
    man["files"][0]["sha256"] = serde_json::json!("0".repeat(64));
    std::fs::write(&m, serde_json::to_vec(&man).unwrap()).unwrap();
    let plan = t.path("plan.yaml");
    let r = t.run(&["--json", "dr-drill", plan.to_str().unwrap(), "--yes"]);
    r.code(1);
    let j = r.json();
    assert_eq!(j["services"][0]["ok"], false, "{j:#}");
    assert_eq!(j["services"][1]["error"], "not restored: db failed");
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));
    let md = std::fs::read_to_string(j["markdown"].as_str().unwrap()).unwrap();
    assert!(md.contains("## Failures"), "{md}");
    assert!(md.contains("sha256 differs"), "{md}");
}

#[test]
fn a_drill_plan_error_names_file_line_and_field() {
    let t = Test::new();
    drill_config(&t);
    t.write(
        "bad.yaml",
        "services:\n  - service: db\n  - service: nosuch\n    depends_on: [db, ghost]\n    verfy: [x]\n",
    );
    let bad = t.path("bad.yaml");
    let r = t.run(&["dr-drill", bad.to_str().unwrap(), "--yes"]);
    r.code(78);
    let f = bad.display().to_string();
    r.stderr_has(&format!("{f}:3:"))
        .stderr_has("services[1].service: no configured service named 'nosuch'")
        .stderr_has("services[1].depends_on[1]: 'ghost' is not another service")
        .stderr_has(&format!("{f}:5:"))
        .stderr_has("unknown key 'verfy' (did you mean 'verify'?)");
    // A cycle.
    t.write(
        "cycle.yaml",
        "services:\n  - service: db\n    depends_on: [app]\n  - service: app\n    depends_on: [db]\n",
    );
    t.run(&["dr-drill", t.path("cycle.yaml").to_str().unwrap(), "--yes"])
        .code(78)
        .stderr_has("form a cycle");
    // A missing plan.
    t.run(&["dr-drill", t.path("none.yaml").to_str().unwrap()])
        .code(78)
        .stderr_has("cannot read the drill plan");
}

/// Two Compose projects, `db` serving a file and `app`, each a service of
/// the configuration, and a drill plan where the app must reach the db.
fn docker_drill(t: &Test, name: &str, db_check: &str) -> (Served, Served) {
    let db = Served::with(t, &format!("{name}db"), "db");
    let app = Served::with(t, &format!("{name}app"), "app");
    db.put("original");
    docker(&[
        "exec",
        &app.container(),
        "sh",
        "-c",
        "echo app > /data/index.html",
    ]);
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\n    restore_testing:\n      cleanup_delay_minutes: 0\n      rto_target_minutes: 1\nservices:\n  - name: db\n    type: docker_compose\n    compose_file: {}/docker-compose.yml\n    compose_project: {}\n    restore_testing:\n      health_checks:\n        - type: http\n          name: db serves\n          url: http://db:8080/file\n          body_contains: {db_check}\n  - name: app\n    type: docker_compose\n    compose_file: {}/docker-compose.yml\n    compose_project: {}\n",
        db.dir.display(),
        db.name,
        app.dir.display(),
        app.name
    ));
    t.write(
        "plan.yaml",
        &format!("name: {name}\nservices:\n  - service: app\n    depends_on: [db]\n    dependency_checks:\n      - type: http\n        name: app reaches the db\n        url: http://db:8080/file\n        body_contains: original\n  - service: db\n"),
    );
    t.run(&["run", "backup"]).code(0);
    // The live data changes: the drill sees the backup's.
    db.put("changed");
    (db, app)
}

fn drill_networks(name: &str) -> String {
    docker(&[
        "network",
        "ls",
        "--filter",
        &format!("name=drill-{name}-restoretest-"),
        "--format",
        "{{.Name}}",
    ])
}

#[test]
fn a_drill_puts_docker_copies_on_one_network_where_the_app_reaches_its_restored_db() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let (db, app) = docker_drill(&t, "drnet", "original");
    let plan = t.path("plan.yaml");
    let r = t.run(&["--json", "dr-drill", plan.to_str().unwrap()]);
    r.code(0);
    let j = r.json();
    assert_eq!(j["ok"], true, "{j:#}\n{}", r.stderr);
    let net = j["network"].as_str().unwrap().to_string();
    assert!(net.starts_with("drill-drnet-restoretest-"), "{net}");
    assert_eq!(j["services"][0]["service"], "db");
    assert_eq!(j["services"][0]["checks"][1]["ok"], true, "{j:#}");
    let dep = &j["services"][1]["dependency_checks"][0];
    assert_eq!(dep["name"], "app reaches the db");
    assert_eq!(dep["ok"], true, "{dep}");
    let md = std::fs::read_to_string(j["markdown"].as_str().unwrap()).unwrap();
    assert!(
        md.contains(&format!("shared internal network {net} created")),
        "{md}"
    );
    assert!(md.contains(&format!("network {net} removed")), "{md}");
    assert_eq!(db.leftovers(), "");
    assert_eq!(app.leftovers(), "");
    assert_eq!(drill_networks("drnet"), "");
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));
}

#[test]
fn a_killed_drill_is_cleaned_up_by_the_next_one() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    // The db's check never passes: the drill waits for it until killed.
    let (db, app) = docker_drill(&t, "drkill", "never-there");
    let plan = t.path("plan.yaml");
    let mut child = t
        .command(&["dr-drill", plan.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = format!("{}-restoretest-", db.name);
    while !docker(&["ps", "--format", "{{.Names}}"]).contains(&running) {
        assert!(Instant::now() < deadline, "the copy never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(db.leftovers().contains(&running), "{}", db.leftovers());
    assert!(!drill_networks("drkill").is_empty());
    // The next drill (its db check now passing) removes all of it first.
    let cfg = std::fs::read_to_string(t.path("etc/homelab-autopilot.yaml")).unwrap();
    t.config(&cfg.replace("never-there", "original"));
    let r = t.run(&["dr-drill", plan.to_str().unwrap()]);
    r.code(0).stderr_has("left by an interrupted run");
    assert_eq!(db.leftovers(), "");
    assert_eq!(app.leftovers(), "");
    assert_eq!(drill_networks("drkill"), "");
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));
}

#[test]
fn a_drill_stopped_by_sigterm_removes_its_copies_and_still_reports() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let (db, app) = docker_drill(&t, "drterm", "never-there");
    let plan = t.path("plan.yaml");
    let child = t
        .command(&["--json", "dr-drill", plan.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = format!("{}-restoretest-", db.name);
    while !docker(&["ps", "--format", "{{.Names}}"]).contains(&running) {
        assert!(Instant::now() < deadline, "the copy never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(143));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["ok"], false);
    assert_eq!(j["cleaned_up"], true, "{j:#}");
    assert!(std::path::Path::new(j["html"].as_str().unwrap()).is_file());
    assert_eq!(db.leftovers(), "");
    assert_eq!(app.leftovers(), "");
    assert_eq!(drill_networks("drterm"), "");
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));
}

#[test]
fn a_failing_dependency_check_fails_the_drill() {
    let t = Test::new();
    drill_config(&t);
    t.run(&["run", "backup"]).code(0);
    let plan = std::fs::read_to_string(t.path("plan.yaml")).unwrap();
    t.write("wrong.yaml", &plan.replace("42 rows", "43 rows"));
    let r = t.run(&[
        "--json",
        "dr-drill",
        t.path("wrong.yaml").to_str().unwrap(),
        "--yes",
    ]);
    r.code(1);
    let j = r.json();
    assert_eq!(j["services"][0]["ok"], true, "{j:#}");
    let app = &j["services"][1];
    assert_eq!(app["ok"], false, "{j:#}");
    assert_eq!(app["dependency_checks"][0]["ok"], false, "{app}");
    assert_eq!(app["error"], "app does not reach db");
    assert!(left_in_state(&t).is_empty(), "{:?}", left_in_state(&t));
}
