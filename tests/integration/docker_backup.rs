//! Backups of docker and docker_compose services against a real Docker
//! engine: a Compose project (an image made by `docker import` of a busybox
//! rootfs) with a named volume and a bind mount, backed up with each
//! `backup_consistency`, the containers' state after a run equal to the
//! state before, a killed run's stop record recovered, `docker::exec`, and
//! `restore --volumes` after `docker volume rm` (refused without --force
//! while the volume exists), read back through the container.
//!
//! The engine must be running (`.ci/run` starts it). On CI (CI=true) its
//! absence fails the tests; elsewhere they print `SKIPPED`.

use crate::docker::{docker, Lab};
use crate::harness::{require, Run, Test, DOCKER};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `docker-compose` (v1), else `docker compose` (v2).
fn compose_cmd() -> Vec<&'static str> {
    let v1 = Command::new("docker-compose")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if v1 {
        vec!["docker-compose"]
    } else {
        vec!["docker", "compose"]
    }
}

/// A Compose project in a temp dir: one service `app` with the named volume
/// `data` at /data and the bind mount `./bind` at /bind. `down -v` on drop.
struct Project {
    name: String,
    dir: std::path::PathBuf,
    _lab: Lab,
}

impl Project {
    fn new(t: &Test, tag: &str) -> Project {
        let lab = Lab::new(tag);
        let name = format!("hlab{}{tag}", std::process::id());
        let dir = t.path(&format!("srv/{name}"));
        std::fs::create_dir_all(dir.join("bind")).unwrap();
        std::fs::write(dir.join("bind/config.txt"), "bound\n").unwrap();
        std::fs::write(dir.join(".env"), "X=1\n").unwrap();
        std::fs::write(
            dir.join("docker-compose.yml"),
            format!(
                "version: \"3\"\nservices:\n  app:\n    image: {}\n    command: [\"sleep\", \"600\"]\n    network_mode: none\n    stop_grace_period: 1s\n    volumes:\n      - data:/data\n      - ./bind:/bind\nvolumes:\n  data: {{}}\n",
                lab.image
            ),
        )
        .unwrap();
        let p = Project {
            name,
            dir,
            _lab: lab,
        };
        p.compose(&["up", "-d"]);
        p
    }

    fn compose(&self, args: &[&str]) -> Run {
        let cmd = compose_cmd();
        let out = Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(self.dir.join("docker-compose.yml"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let r = Run::from_output(out);
        assert_eq!(r.code, 0, "compose {args:?}: {}", r.stderr);
        r
    }

    fn container(&self) -> String {
        let id = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.name),
        ]);
        docker(&[
            "inspect",
            "--format",
            "{{.Name}}",
            id.lines().next().unwrap(),
        ])
        .trim_start_matches('/')
        .to_string()
    }

    fn volume(&self) -> String {
        format!("{}_data", self.name)
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let cmd = compose_cmd();
        let _ = Command::new(cmd[0])
            .args(&cmd[1..])
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(self.dir.join("docker-compose.yml"))
            .args(["down", "-v", "--timeout", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("docker")
            .args(["volume", "rm", "-f", &self.volume()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `running`, `paused` or `exited`.
fn state(container: &str) -> String {
    docker(&["inspect", "--format", "{{.State.Status}}", container])
}

fn config(t: &Test, p: &Project, mode: &str) {
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\nservices:\n  - name: app\n    type: docker_compose\n    compose_file: {}/docker-compose.yml\n    compose_project: {}\n    backup_consistency: {mode}\n",
        p.dir.display(),
        p.name
    ));
}

fn manifest(t: &Test) -> serde_json::Value {
    let a = t.archives("backups").pop().expect("an archive");
    let mut m = a.into_os_string();
    m.push(".manifest.json");
    serde_json::from_slice(&std::fs::read(m).unwrap()).unwrap()
}

#[test]
fn a_compose_project_is_backed_up_in_each_mode_and_its_state_is_kept() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let p = Project::new(&t, "modes");
    let c = p.container();
    docker(&["exec", &c, "sh", "-c", "echo payload > /data/file"]);
    for (mode, before) in [
        ("stop", "running"),
        ("pause", "running"),
        ("live", "running"),
        ("stop", "exited"),
        ("pause", "paused"),
    ] {
        match before {
            "exited" => drop(docker(&["stop", "-t", "1", &c])),
            "paused" => drop(docker(&["pause", &c])),
            _ => {}
        }
        config(&t, &p, mode);
        let r = t.run(&["run", "backup"]);
        r.code(0);
        assert_eq!(state(&c), before, "{mode}: state after the run");
        if mode == "stop" && before == "running" {
            r.stderr_has(&format!("stopped container {c} while archiving"));
            r.stderr_has(&format!("started container {c} again"));
        }
        if mode == "pause" && before == "running" {
            r.stderr_has(&format!("paused container {c} while archiving"));
        }
        match before {
            "exited" => drop(docker(&["start", &c])),
            "paused" => drop(docker(&["unpause", &c])),
            _ => {}
        }
        let m = manifest(&t);
        let cap = &m["capture"];
        assert_eq!(cap["consistency"], mode);
        assert_eq!(cap["project"], p.name.as_str());
        let vol = &cap["volumes"][0];
        assert_eq!(vol["name"], p.volume().as_str(), "{m:#}");
        assert_eq!(vol["labels"]["com.docker.compose.project"], p.name.as_str());
        assert_eq!(vol["labels"]["com.docker.compose.volume"], "data");
        let image_id = docker(&["inspect", "--format", "{{.Image}}", &c]);
        assert_eq!(cap["containers"][0]["image_digest"], image_id.as_str());
        let files: Vec<&str> = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        let vpath = vol["path"].as_str().unwrap();
        assert!(
            files.contains(&format!("{vpath}/file").as_str()),
            "{files:?}"
        );
        let dir = p.dir.display().to_string();
        let dir = dir.trim_start_matches('/');
        for f in ["bind/config.txt", ".env", "docker-compose.yml"] {
            assert!(
                files.contains(&format!("{dir}/{f}").as_str()),
                "{f}: {files:?}"
            );
        }
        let f = m["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == format!("{vpath}/file").as_str())
            .unwrap();
        assert_eq!(f["size"], 8);
        assert_eq!(f["mode"], 0o644);
        assert_eq!(f["sha256"], sha256(b"payload\n").as_str());
        // One archive per run: keep only the newest for the next round.
        for a in t.archives("backups") {
            std::fs::remove_file(&a).unwrap();
        }
    }
}

fn sha256(b: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn volumes_are_restored_under_their_names_and_compose_adopts_them() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let p = Project::new(&t, "restore");
    let c = p.container();
    docker(&["exec", &c, "sh", "-c", "echo original > /data/file"]);
    config(&t, &p, "stop");
    t.run(&["run", "backup"]).code(0);

    // Present: refused without --force, nothing changed.
    docker(&["exec", &c, "sh", "-c", "echo changed > /data/file"]);
    t.run(&["restore", "1", "--volumes"])
        .code(2)
        .stderr_has("--force");
    assert_eq!(
        docker(&["exec", &c, "busybox", "cat", "/data/file"]),
        "changed"
    );

    // --force: replaced while the container was stopped, started again.
    t.run(&["restore", "1", "--volumes", "--force"])
        .code(0)
        .stdout_has(&format!("stopped and started {c}"));
    assert_eq!(state(&c), "running");
    assert_eq!(
        docker(&["exec", &c, "busybox", "cat", "/data/file"]),
        "original"
    );

    // Removed: created again with Compose's labels, adopted by `up`.
    p.compose(&["down", "--timeout", "1"]);
    docker(&["volume", "rm", &p.volume()]);
    t.run(&["restore", "1", "--volumes"])
        .code(0)
        .stdout_has("(created)");
    let labels = docker(&[
        "volume",
        "inspect",
        "--format",
        "{{json .Labels}}",
        &p.volume(),
    ]);
    assert!(
        labels.contains(&format!("\"com.docker.compose.project\":\"{}\"", p.name)),
        "{labels}"
    );
    assert!(
        labels.contains("\"com.docker.compose.volume\":\"data\""),
        "{labels}"
    );
    let up = p.compose(&["up", "-d"]);
    assert!(
        !up.stderr.contains("already exists but was not created"),
        "{}",
        up.stderr
    );
    let c = p.container();
    assert_eq!(
        docker(&["exec", &c, "busybox", "cat", "/data/file"]),
        "original"
    );
}

#[test]
fn a_killed_runs_stopped_container_is_started_by_the_next_run() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let lab = Lab::new("killed");
    let c = lab.run("app", &["--stop-timeout", "1"], &["sleep", "600"]);
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\nservices:\n  - name: app\n    type: docker\n    container: {c}\n    backup_paths: [{{root}}/data]\n"
    ));
    t.write("data/x", "x\n");
    // The archive step never ends: the run is killed while it holds.
    t.script(
        "services/app.rhai",
        "fn create_artifact(svc, ctx) {\n    consistency::hold(svc, docker::capture(svc));\n    proc::run([\"sleep\", \"60\"]);\n}\n",
    );
    let mut child = t
        .command(&["run", "backup"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while state(&c) != "exited" {
        assert!(Instant::now() < deadline, "the container was never stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(state(&c), "exited", "a killed run leaves it stopped");

    std::fs::remove_file(t.path("scripts/services/app.rhai")).unwrap();
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\nservices:\n  - name: app\n    type: docker\n    container: {c}\n    backup: false\n    backup_paths: [{{root}}/data]\n"
    ));
    t.script("noop.rhai", "fn run(ctx) { 0 }\n");
    t.run(&["run", "noop"])
        .stderr_has(&format!("container {c} was left stopped"));
    assert_eq!(state(&c), "running");
    // The record is gone: the next run says nothing about it.
    let r = t.run(&["run", "noop"]);
    assert!(!r.stderr.contains("left stopped"), "{}", r.stderr);
}

#[test]
fn docker_exec_runs_an_argv_with_bounded_output() {
    if !require(&DOCKER) {
        return;
    }
    let t = Test::new();
    let lab = Lab::new("exec");
    let c = lab.run("app", &["--stop-timeout", "1"], &["sleep", "600"]);
    t.config("services: []\n").script(
        "probe.rhai",
        &format!(
            r#"
fn run(ctx) {{
    let r = docker::exec("{c}", ["busybox", "echo", "a b; $(x)"]);
    if r.code != 0 || r.stdout != "a b; $(x)\n" {{ throw `echo: ${{r}}`; }}
    let r = docker::exec("{c}", ["sh", "-c", "exit 3"]);
    if r.code != 3 {{ throw `exit: ${{r}}`; }}
    let r = docker::exec("{c}", ["busybox", "seq", "1", "100000"], #{{ max_bytes: 10 }});
    if r.stdout.len() != 10 || !r.truncated {{ throw `bounded: ${{r.stdout.len()}}`; }}
    "done"
}}
"#
        ),
    );
    t.run(&["run", "probe"]).code(0);
}

#[test]
fn backup_consistency_is_checked_against_the_service_type() {
    let t = Test::new();
    t.config(
        "services:\n  - name: web\n    type: generic\n    backup_paths: [/srv]\n    backup_consistency: stop\n  - name: nginx\n    type: systemd\n    unit: nginx.service\n    backup_consistency: pause\n  - name: app\n    type: docker\n    container: app\n    backup_consistency: sometimes\n",
    );
    let r = t.run(&["config", "validate"]);
    r.code(78);
    r.stderr_has("backup_consistency");
    t.config(
        "services:\n  - name: web\n    type: generic\n    backup_paths: [/srv]\n    backup_consistency: stop\n  - name: nginx\n    type: systemd\n    unit: nginx.service\n    backup_consistency: pause\n",
    );
    let r = t.run(&["config", "validate"]);
    r.code(78)
        .stderr_has("'stop' applies only to type docker/docker_compose/nginx_proxy_manager/systemd, not generic")
        .stderr_has("'pause' applies only to docker/docker_compose");
    t.config(
        "services:\n  - name: nginx\n    type: systemd\n    unit: nginx.service\n    backup_consistency: stop\n  - name: app\n    type: docker\n    container: app\n    backup_consistency: pause\n",
    );
    t.run(&["config", "validate"]).code(0);
}
