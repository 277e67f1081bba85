//! Container checks against a real Docker engine: an image made by
//! `docker import` of a busybox rootfs, containers that are healthy,
//! unhealthy, paused, exited and missing, and `run monitor` alerting when a
//! container stops and recovering when it starts again.
//!
//! The engine must be running (`dockerd`, see `.ci/run`). On CI (CI=true)
//! its absence fails the tests; elsewhere they skip loudly
//! (`harness::DOCKER`).

use crate::harness::{Run, Test};
use crate::monitor::{config, events};
use crate::notify::{ok, Receiver};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `docker ARGS...`, which must succeed; its trimmed stdout.
pub(crate) fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The engine answers `docker info` (and busybox is there); when it does
/// not, the test is skipped loudly, or fails on CI (see `harness::require`).
fn engine() -> bool {
    crate::harness::require(&crate::harness::DOCKER)
}

/// An image imported from a rootfs holding a static busybox and a few
/// applets, and the containers made from it; all removed on drop.
pub(crate) struct Lab {
    pub(crate) image: String,
    pub(crate) prefix: String,
    _dir: tempfile::TempDir,
}

impl Lab {
    pub(crate) fn new(tag: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("busybox (apt-get install busybox-static)");
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        for applet in ["sh", "sleep", "true", "false"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let prefix = format!("hla-test-{}-{tag}", std::process::id());
        let image = format!("homelab-autopilot-test/{prefix}:1");
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(dir.path().join("rootfs"))
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let st = Command::new("docker")
            .args(["import", "-", &image])
            .stdin(tar.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(tar.wait().unwrap().success(), "tar of the rootfs");
        assert!(st.success(), "docker import");
        Lab {
            image,
            prefix,
            _dir: dir,
        }
    }

    /// The full name of the container called `name` in this lab.
    pub(crate) fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// `docker run -d` with no network, `extra` flags, and `cmd`.
    pub(crate) fn run(&self, name: &str, extra: &[&str], cmd: &[&str]) -> String {
        let full = self.name(name);
        let mut args = vec!["run", "-d", "--name", &full, "--network", "none"];
        args.extend_from_slice(extra);
        args.push(&self.image);
        args.extend_from_slice(cmd);
        docker(&args);
        full
    }

    /// Wait until `{{.State.Health.Status}}` of `name` is `want`.
    fn wait_health(&self, name: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = docker(&[
                "inspect",
                "--format",
                "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                name,
            ]);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: health {got}, want {want}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("name=^{}-", self.prefix)])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
        let _ = Command::new("docker")
            .args(["rmi", "-f", &self.image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn docker_container_reports_real_container_states() {
    if !engine() {
        return;
    }
    let lab = Lab::new("states");
    let healthy = lab.run(
        "healthy",
        &["--health-cmd", "true", "--health-interval", "1s"],
        &["sleep", "600"],
    );
    let sick = lab.run(
        "sick",
        &[
            "--health-cmd",
            "false",
            "--health-interval",
            "1s",
            "--health-retries",
            "1",
        ],
        &["sleep", "600"],
    );
    let plain = lab.run("plain", &[], &["sleep", "600"]);
    let paused = lab.run("paused", &[], &["sleep", "600"]);
    docker(&["pause", &paused]);
    let exited = lab.run("exited", &[], &["sh", "-c", "exit 3"]);
    docker(&["wait", &exited]);
    lab.wait_health(&healthy, "healthy");
    lab.wait_health(&sick, "unhealthy");
    let missing = lab.name("missing");

    let t = Test::new();
    t.config("services: []\n").script(
        "probe.rhai",
        &format!(
            r#"
fn expect(name, r, ok, word) {{
    if r.ok != ok || !r.message.contains(word) {{ throw `${{name}}: ${{r}}`; }}
}}
fn run(ctx) {{
    expect("healthy", docker::container("{healthy}"), true, "healthy");
    expect("sick", docker::container("{sick}"), false, "unhealthy");
    expect("plain", docker::container("{plain}"), true, "running");
    expect("paused", docker::container("{paused}"), false, "paused");
    expect("exited", docker::container("{exited}"), false, "exited");
    expect("missing", docker::container("{missing}"), false, "no such container");
    #{{ ok: true }}
}}
"#
        ),
    );
    t.run(&["run", "probe"]).code(0);
    docker(&["unpause", &paused]);
}

#[test]
fn a_stopped_container_alerts_and_recovers_through_run_monitor() {
    if !engine() {
        return;
    }
    let lab = Lab::new("monitor");
    let app = lab.run(
        "app",
        &["--health-cmd", "true", "--health-interval", "1s"],
        &["sleep", "600"],
    );
    lab.wait_health(&app, "healthy");
    let t = Test::new();
    let hooks = Receiver::start(ok());
    config(
        &t,
        &hooks,
        "  fail_after: 2\n",
        &format!(
            // A docker service's container is checked without a
            // health_checks entry.
            "  - name: app\n    type: docker\n    container: {app}\n"
        ),
    );
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(events(&hooks), Vec::<String>::new());

    docker(&["stop", "-t", "0", &app]);
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(events(&hooks), Vec::<String>::new(), "fail_after: 2");
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(events(&hooks), vec!["service_down app"]);
    let down = &hooks.requests()[0].json()["events"][0];
    assert!(
        down.to_string().contains("exited"),
        "the alert says why: {down}"
    );
    let st = t.run(&["--json", "status"]).json();
    assert_eq!(st["monitor"][0]["state"], "down", "{st}");

    docker(&["start", &app]);
    lab.wait_health(&app, "healthy");
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(
        events(&hooks),
        vec!["service_down app", "service_recovered app"]
    );
    let st: Run = t.run(&["status"]);
    st.code(0).stdout_has("app").stdout_has("UP");
}

#[test]
fn a_compose_project_is_up_only_while_all_its_containers_are() {
    if !engine() {
        return;
    }
    let lab = Lab::new("compose");
    // Compose labels its containers with the project; so do we.
    let project = lab.name("stack");
    let label = format!("com.docker.compose.project={project}");
    let web = lab.run(
        "web",
        &[
            "--label",
            &label,
            "--health-cmd",
            "true",
            "--health-interval",
            "1s",
        ],
        &["sleep", "600"],
    );
    let db = lab.run("db", &["--label", &label], &["sleep", "600"]);
    lab.wait_health(&web, "healthy");

    let t = Test::new();
    let hooks = Receiver::start(ok());
    t.write("stack/compose.yaml", "services: {}\n");
    config(
        &t,
        &hooks,
        "  fail_after: 1\n",
        // No health_checks: a compose service gets its project checked.
        &format!(
            "  - name: stack\n    type: docker_compose\n    compose_file: {{root}}/stack/compose.yaml\n    compose_project: {project}\n"
        ),
    );
    t.run(&["run", "monitor"])
        .code(0)
        .stdout_has("1 check(s) passing");
    assert_eq!(events(&hooks), Vec::<String>::new());

    docker(&["stop", "-t", "0", &db]);
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(events(&hooks), vec!["service_down stack"]);
    let down = hooks.requests()[0].json()["events"][0].to_string();
    assert!(down.contains(&format!("{db} is exited")), "{down}");

    docker(&["start", &db]);
    t.run(&["run", "monitor"]).code(0);
    assert_eq!(
        events(&hooks),
        vec!["service_down stack", "service_recovered stack"]
    );

    t.script(
        "probe.rhai",
        &format!(
            r#"
fn run(ctx) {{
    let r = docker::compose("{project}");
    if !r.ok || !r.message.contains("2 container(s) running") {{ throw `up: ${{r}}`; }}
    let r = docker::compose("hla-no-such-project");
    if r.ok || !r.message.contains("no containers") {{ throw `none: ${{r}}`; }}
    let r = docker::compose("Bad Name");
    if r.ok {{ throw "name"; }}
    #{{ ok: true }}
}}
"#
        ),
    );
    t.run(&["run", "probe"]).code(0);
}
