//! `run update` through the binary against the real Docker engine and a
//! real registry (`docker-registry` on a free loopback port, started by
//! each test): images `v1` (serves "v1", and at /api/ the JSON status
//! Nginx Proxy Manager's API answers), `v2` (broken: writes "migrated"
//! into `/data/state`, as a data migration would, then exits) and `v3`
//! (serves "v3" and the status) are built from an imported busybox rootfs
//! and pushed under one tag in turn.
//!
//! Names (images, containers, Compose projects, ports) are unique per test
//! and process, so other tests on the same engine never collide.

use crate::docker::docker;
use crate::harness::{free_port, Run, Test};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ready() -> bool {
    crate::harness::require(&crate::harness::REGISTRY)
}

/// GET http://127.0.0.1:PORT/ with a short timeout: the body, or None.
fn get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
}

/// Wait until the service on `port` answers `want`.
fn wait_body(port: u16, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = get(port);
        if got.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "127.0.0.1:{port} answers {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A registry of this test's own, and the images it serves.
struct Lab {
    registry: Option<Child>,
    port: u16,
    /// `hla-upd-<pid>-<tag>`: prefix of every name this lab makes.
    prefix: String,
    dir: tempfile::TempDir,
    /// Compose projects to take down at the end.
    projects: std::cell::RefCell<Vec<(String, String)>>,
    containers: std::cell::RefCell<Vec<String>>,
}

impl Lab {
    fn new(tag: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!("hla-upd-{}-{tag}", std::process::id());
        let mut lab = Lab {
            registry: None,
            port: 0,
            prefix,
            dir,
            projects: Default::default(),
            containers: Default::default(),
        };
        lab.start_registry();
        lab.build_base();
        lab
    }

    fn start_registry(&mut self) {
        let port = free_port();
        let cfg = self.dir.path().join("registry.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                self.dir.path().join("registry-data").display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        self.registry = Some(child);
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop_registry(&mut self) {
        if let Some(mut c) = self.registry.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn base(&self) -> String {
        format!("{}-base:1", self.prefix)
    }

    /// The busybox rootfs as an image, and v1/v2/v3 built on it per repo.
    fn build_base(&self) {
        let root = self.dir.path().join("rootfs");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let busybox = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap();
        std::fs::copy(busybox, bin.join("busybox")).unwrap();
        for applet in ["sh", "httpd", "mkdir", "echo", "sleep", "true", "false"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&root)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let st = Command::new("docker")
            .args(["import", "-", &self.base()])
            .stdin(tar.stdout.take().unwrap())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            tar.wait().unwrap().success() && st.success(),
            "docker import"
        );
    }

    /// `127.0.0.1:PORT/<prefix>/<repo>`.
    fn repo(&self, repo: &str) -> String {
        format!("127.0.0.1:{}/{}/{repo}", self.port, self.prefix)
    }

    /// Build `version` of `repo` (v2 migrates /data, then exits), tagged
    /// `repo:version`.
    fn build(&self, repo: &str, version: &str) -> String {
        let ctx = self.dir.path().join(format!("build-{repo}-{version}"));
        std::fs::create_dir_all(&ctx).unwrap();
        let cmd = if version == "v2" {
            r#"["sh", "-c", "mkdir -p /data && echo migrated > /data/state; echo broken; exit 3"]"#
                .to_string()
        } else {
            format!(
                r#"["sh", "-c", "mkdir -p /www/api && echo {version} > /www/index.html && echo '{{\"status\":\"OK\",\"version\":\"{version}\"}}' > /www/api/index.html && exec httpd -f -p 8080 -h /www"]"#
            )
        };
        std::fs::write(
            ctx.join("Dockerfile"),
            format!(
                "FROM {}\nLABEL test.version={version}\nCMD {cmd}\n",
                self.base()
            ),
        )
        .unwrap();
        let image = format!("{}:{version}", self.repo(repo));
        let out = Command::new("docker")
            .args(["build", "-q", "-t", &image])
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    /// Build `version` and push it as `repo:latest`; its registry digest.
    fn publish(&self, repo: &str, version: &str) -> String {
        let image = self.build(repo, version);
        let latest = format!("{}:latest", self.repo(repo));
        docker(&["tag", &image, &latest]);
        docker(&["push", "-q", &latest]);
        let digests = docker(&[
            "image",
            "inspect",
            "--format",
            "{{range .RepoDigests}}{{println .}}{{end}}",
            &latest,
        ]);
        let d = digests
            .lines()
            .find(|l| l.starts_with(&self.repo(repo)))
            .and_then(|l| l.split('@').nth(1))
            .expect("a repo digest after the push")
            .to_string();
        // As on a host that pulled it: the local tag is dropped, so only a
        // pull brings the next version.
        docker(&["rmi", &latest]);
        d
    }

    /// A Compose project serving `repo:latest` on a free port: (compose
    /// file, project, port).
    fn compose(&self, name: &str, repo: &str) -> (String, String, u16) {
        let (file, project, ports) = self.compose_ports(name, repo, 1, false);
        (file, project, ports[0])
    }

    /// The same, with the project's volume `data` mounted at /data.
    fn compose_with_volume(&self, name: &str, repo: &str) -> (String, String, u16) {
        let (file, project, ports) = self.compose_ports(name, repo, 1, true);
        (file, project, ports[0])
    }

    /// A Compose project serving `repo:latest` on `n` free ports, with the
    /// volume `data` at /data when `volume`.
    fn compose_ports(
        &self,
        name: &str,
        repo: &str,
        n: usize,
        volume: bool,
    ) -> (String, String, Vec<u16>) {
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let published: Vec<String> = ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}:8080\""))
            .collect();
        let project = format!("{}-{name}", self.prefix).replace('.', "-");
        let dir = self.dir.path().join(format!("compose-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("docker-compose.yml");
        std::fs::write(
            &file,
            format!(
                "version: \"2.4\"\nservices:\n  app:\n    image: {}:latest\n    ports: [{}]\n{}",
                self.repo(repo),
                published.join(", "),
                if volume {
                    "    volumes: [\"data:/data\"]\nvolumes:\n  data: {}\n"
                } else {
                    ""
                }
            ),
        )
        .unwrap();
        let file = file.display().to_string();
        self.projects
            .borrow_mut()
            .push((file.clone(), project.clone()));
        let out = compose(&file, &project, &["up", "-d"]);
        assert!(
            out.status.success(),
            "compose up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (file, project, ports)
    }

    /// A plain container of `repo:latest` on a free port: (name, port).
    fn container(&self, name: &str, repo: &str) -> (String, u16) {
        let port = free_port();
        let full = format!("{}-{name}", self.prefix);
        self.containers.borrow_mut().push(full.clone());
        docker(&[
            "run",
            "-d",
            "--name",
            &full,
            "-p",
            &format!("127.0.0.1:{port}:8080"),
            "-e",
            "MINE=kept",
            "--label",
            "mine=kept",
            "--restart",
            "unless-stopped",
            &format!("{}:latest", self.repo(repo)),
        ]);
        (full, port)
    }

    fn project_image(&self, project: &str) -> String {
        let id = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project={project}"),
        ]);
        let id = id
            .lines()
            .next()
            .expect("a container of the project")
            .to_string();
        docker(&["inspect", "--format", "{{.Image}}", &id])
    }
}

fn compose(file: &str, project: &str, args: &[&str]) -> std::process::Output {
    let mut c = if Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        Command::new("docker-compose")
    } else {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    };
    c.args(["-f", file, "-p", project])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (file, project) in self.projects.borrow().iter() {
            let _ = compose(file, project, &["down", "-v", "--rmi", "all", "-t", "1"]);
        }
        for c in self.containers.borrow().iter() {
            for name in [c.clone(), format!("{c}-hla-previous")] {
                let _ = Command::new("docker")
                    .args(["rm", "-f", &name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        self.stop_registry();
        // Every image this lab made or pulled.
        if let Ok(out) = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
            .output()
        {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if line.contains(&self.prefix) {
                    let id = line.rsplit(' ').next().unwrap_or("");
                    let _ = Command::new("docker")
                        .args(["rmi", "-f", id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

/// The config for a compose service `web` (and `extra` services) with
/// short validation times.
fn config(t: &Test, services: &str) {
    t.config(&format!(
        "updates:\n  health_check_timeout_seconds: 6\n  soak_seconds: 2\nservices:\n{services}"
    ));
}

fn compose_service(name: &str, file: &str, project: &str, port: u16, extra: &str) -> String {
    format!(
        "  - name: {name}\n    type: docker_compose\n    backup: false\n    compose_file: {file}\n    compose_project: {project}\n    health_checks:\n      - type: http\n        url: http://127.0.0.1:{port}/\n        body_contains: v\n{extra}"
    )
}

fn outcome<'a>(doc: &'a serde_json::Value, service: &str) -> &'a serde_json::Value {
    doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("no service {service} in {doc:#}"))
}

/// Start `run update`, and SIGKILL it once its open update has reached
/// `step` and `also()` holds; the state DB's path.
pub(crate) fn kill_update_at(t: &Test, step: &str, also: impl Fn() -> bool) -> std::path::PathBuf {
    let mut child = t
        .command(&["run", "update"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let db = t.path("state/state.db");
    wait_for_step(&db, step, also);
    child.kill().unwrap();
    child.wait().unwrap();
    db
}

/// Wait until the open update in the state DB `db` has reached `step` and
/// `also()` holds.
fn wait_for_step(db: &std::path::Path, step: &str, also: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "the update never reached {step}");
        if db.exists() && also() {
            let c = rusqlite::Connection::open(db).unwrap();
            let now: Option<String> = c
                .query_row(
                    "SELECT step FROM updates WHERE finished_at IS NULL",
                    [],
                    |r| r.get(0),
                )
                .ok();
            if now.as_deref() == Some(step) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_update(t: &Test, args: &[&str]) -> Run {
    let mut a = vec!["run", "update", "--json"];
    a.extend_from_slice(args);
    t.run(&a)
}

#[test]
fn a_compose_update_that_passes_stays_and_one_that_fails_is_rolled_back() {
    if !ready() {
        return;
    }
    let lab = Lab::new("ab");
    lab.publish("app", "v1");
    let (file, project, port) = lab.compose("web", "app");
    wait_body(port, "v1");
    let v1_id = lab.project_image(&project);
    let t = Test::new();
    config(&t, &compose_service("web", &file, &project, port, ""));

    // Nothing new: up_to_date, exit 0.
    let r = run_update(&t, &[]);
    r.code(0);
    assert_eq!(outcome(&r.json(), "web")["result"]["outcome"], "up_to_date");

    // v3 works: updated, and it stays.
    let v3_digest = lab.publish("app", "v3");
    let r = run_update(&t, &[]);
    r.code(0);
    let doc = r.json();
    let res = &outcome(&doc, "web")["result"];
    assert_eq!(res["outcome"], "updated", "{doc:#}");
    assert_eq!(res["after"][0]["digest"], v3_digest.as_str());
    assert_eq!(res["before"][0]["image_id"], v1_id.as_str());
    assert!(res["validation"]["ok"].as_bool().unwrap());
    assert!(res["validation"]["checks"].as_array().unwrap().len() >= 2);
    assert_eq!(get(port).as_deref(), Some("v3"));
    let v3_id = lab.project_image(&project);
    assert_ne!(v3_id, v1_id);
    let names: Vec<&str> = doc["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["update_success"]);
    // The run's message says what changed.
    let text = doc["notifications"][0]["data"]["summary"].as_str().unwrap();
    let short = |id: &str| id.trim_start_matches("sha256:")[..12].to_string();
    assert!(
        text.contains(&format!("web: app {} → {}", short(&v1_id), short(&v3_id))),
        "{text}"
    );

    // v2 is broken: rolled back to v3's exact image, which answers again.
    lab.publish("app", "v2");
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "web")["result"];
    assert_eq!(res["outcome"], "rolled_back", "{doc:#}");
    assert!(!res["validation"]["ok"].as_bool().unwrap());
    assert!(res["rollback_validation"]["ok"].as_bool().unwrap());
    assert_eq!(res["after"][0]["image_id"], v3_id.as_str());
    assert_eq!(res["after"][0]["digest"], v3_digest.as_str());
    assert_eq!(lab.project_image(&project), v3_id);
    wait_body(port, "v3");
    let mut names: Vec<&str> = doc["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["rollback_executed", "update_failed"]);
    // The compose file was not edited.
    assert!(std::fs::read_to_string(&file).unwrap().contains(":latest"));

    // status and the state DB keep the last outcome of each service.
    let st = t.run(&["status", "--json"]);
    st.code(0);
    let updates = st.json()["updates"].clone();
    assert_eq!(updates[0]["service"], "web", "{updates:#}");
    assert_eq!(updates[0]["outcome"], "rolled_back");
}

#[test]
fn a_registry_that_is_down_aborts_without_touching_the_service() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new("down");
    lab.publish("app", "v1");
    let (file, project, port) = lab.compose("web", "app");
    wait_body(port, "v1");
    let before = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    lab.stop_registry();
    let t = Test::new();
    config(&t, &compose_service("web", &file, &project, port, ""));
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "web")["result"];
    assert_eq!(res["outcome"], "aborted", "{doc:#}");
    assert!(res.get("rollback").is_none(), "not a rollback: {res:#}");
    let after = docker(&[
        "ps",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    assert_eq!(before, after, "the same container runs");
    assert_eq!(get(port).as_deref(), Some("v1"));
}

#[test]
fn dry_run_reports_the_new_digest_and_changes_nothing() {
    if !ready() {
        return;
    }
    let lab = Lab::new("dry");
    lab.publish("app", "v1");
    let (file, project, port) = lab.compose("web", "app");
    wait_body(port, "v1");
    let v1_id = lab.project_image(&project);
    let v3_digest = lab.publish("app", "v3");
    let t = Test::new();
    config(&t, &compose_service("web", &file, &project, port, ""));
    let r = run_update(&t, &["--dry-run"]);
    r.code(0);
    let doc = r.json();
    let res = &outcome(&doc, "web")["result"];
    assert_eq!(res["outcome"], "available", "{doc:#}");
    assert_eq!(res["check"]["images"][0]["new_digest"], v3_digest.as_str());
    assert_ne!(
        res["check"]["images"][0]["current_digest"],
        v3_digest.as_str()
    );
    assert!(res["summary"].as_str().unwrap().contains("would"));
    // Nothing pulled (publish left no local tag; a pull would make one),
    // nothing recreated, no state written.
    let pulled = Command::new("docker")
        .args(["image", "inspect", &format!("{}:latest", lab.repo("app"))])
        .output()
        .unwrap();
    assert!(!pulled.status.success(), "the dry run pulled the image");
    assert_eq!(lab.project_image(&project), v1_id);
    assert!(!t.path("state/state.db").exists());
    assert_eq!(get(port).as_deref(), Some("v1"));
}

#[test]
fn a_database_updates_before_its_app_and_a_failed_one_skips_it() {
    if !ready() {
        return;
    }
    let lab = Lab::new("deps");
    lab.publish("db", "v1");
    lab.publish("app", "v1");
    let (db, db_port) = lab.container("db", "db");
    let (file, project, port) = lab.compose("app", "app");
    wait_body(db_port, "v1");
    wait_body(port, "v1");
    let t = Test::new();
    // `app` is listed first but depends on `db`.
    config(
        &t,
        &format!(
            "{}  - name: db\n    type: docker\n    backup: false\n    container: {db}\n    health_checks:\n      - type: http\n        url: http://127.0.0.1:{db_port}/\n        body_contains: v\n",
            compose_service("app", &file, &project, port, "    depends_on: [db]\n")
        ),
    );
    // db to v3 (works), app to v2 (broken): db first and updated, app rolled back.
    lab.publish("db", "v3");
    lab.publish("app", "v2");
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    let order: Vec<&str> = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["db", "app"], "{doc:#}");
    assert_eq!(outcome(&doc, "db")["result"]["outcome"], "updated");
    assert_eq!(outcome(&doc, "app")["result"]["outcome"], "rolled_back");
    wait_body(db_port, "v3");
    wait_body(port, "v1");
    // The recreated container kept what the admin set.
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &db]);
    assert!(env.contains("MINE=kept"), "{env}");
    let label = docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"mine\"}}",
        &db,
    ]);
    assert_eq!(label, "kept");
    let restart = docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.RestartPolicy.Name}}",
        &db,
    ]);
    assert_eq!(restart, "unless-stopped");
    let version = docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"test.version\"}}",
        &db,
    ]);
    assert_eq!(version, "v3", "the new image's own labels apply");

    // db to v2 (broken): rolled back to v3, and app is skipped because of it.
    lab.publish("db", "v2");
    lab.publish("app", "v3");
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    assert_eq!(
        outcome(&doc, "db")["result"]["outcome"],
        "rolled_back",
        "{doc:#}"
    );
    let app = &outcome(&doc, "app")["result"];
    assert_eq!(app["outcome"], "skipped");
    assert!(app["reason"].as_str().unwrap().contains("db"), "{app:#}");
    wait_body(db_port, "v3");
    assert_eq!(get(port).as_deref(), Some("v1"));
    // No parked previous container is left behind.
    let parked = Command::new("docker")
        .args(["inspect", &format!("{db}-hla-previous")])
        .output()
        .unwrap();
    assert!(!parked.status.success());
}

#[test]
fn a_killed_update_is_rolled_back_by_the_next_run() {
    if !ready() {
        return;
    }
    let lab = Lab::new("kill");
    lab.publish("app", "v1");
    let (file, project, port) = lab.compose("web", "app");
    wait_body(port, "v1");
    let v1_id = lab.project_image(&project);
    lab.publish("app", "v2");
    let t = Test::new();
    t.config(&format!(
        "updates:\n  health_check_timeout_seconds: 60\n  soak_seconds: 2\nservices:\n{}",
        compose_service("web", &file, &project, port, "")
    ));
    // Kill it while it waits for v2 to become healthy.
    let db = kill_update_at(&t, "validating", || true);
    assert_ne!(lab.project_image(&project), v1_id, "v2 was applied");
    assert!(get(port).is_none(), "v2 serves nothing");

    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "web")["result"];
    assert_eq!(res["outcome"], "rolled_back", "{doc:#}");
    assert_eq!(res["recovered"], true);
    assert_eq!(res["step_reached"], "validating");
    assert_eq!(lab.project_image(&project), v1_id);
    wait_body(port, "v1");
    assert_eq!(open_updates(&db), 0, "nothing is left open");
}

/// How many updates the state DB `db` has open.
pub(crate) fn open_updates(db: &std::path::Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM updates WHERE finished_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// An `nginx_proxy_manager` service is a Compose project: with no
/// health_checks of its own, its admin API (`admin_url`, the JSON status)
/// and its proxy (`proxy_url`) decide the update; the monitor runs the
/// same checks.
#[test]
fn nginx_proxy_manager_updates_as_compose_and_its_default_checks_decide() {
    if !ready() {
        return;
    }
    let lab = Lab::new("npm");
    lab.publish("npm", "v1");
    let (file, project, ports) = lab.compose_ports("npm", "npm", 2, false);
    let (admin, proxy) = (ports[0], ports[1]);
    wait_body(proxy, "v1");
    let v1_id = lab.project_image(&project);
    let t = Test::new();
    config(
        &t,
        &format!(
            "  - name: npm\n    type: nginx_proxy_manager\n    backup: false\n    compose_file: {file}\n    compose_project: {project}\n    admin_url: http://127.0.0.1:{admin}/api/\n    proxy_url: http://127.0.0.1:{proxy}/\n"
        ),
    );
    let checks = |res: &serde_json::Value| -> Vec<String> {
        let mut v: Vec<String> = res["checks"]
            .as_array()
            .unwrap_or_else(|| panic!("no checks in {res:#}"))
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };

    // The monitor checks it as the update validates it.
    let m = t.run(&["run", "monitor", "--json"]);
    m.code(0);
    assert_eq!(m.json()["services"][0]["result"]["state"], "up");
    let st = t.run(&["status", "--json"]).json().to_string();
    for id in ["npm/admin", "npm/proxy"] {
        assert!(st.contains(&format!("\"{id}\"")), "{id} not in {st}");
    }

    // v3: updated, validated by the admin API, the proxy and the project.
    lab.publish("npm", "v3");
    let r = run_update(&t, &[]);
    r.code(0);
    let doc = r.json();
    let res = &outcome(&doc, "npm")["result"];
    assert_eq!(res["outcome"], "updated", "{doc:#}");
    assert_eq!(res["before"][0]["image_id"], v1_id.as_str());
    let names = checks(&res["validation"]);
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&"admin".to_string()) && names.contains(&"proxy".to_string()));
    wait_body(proxy, "v3");
    let v3_id = lab.project_image(&project);

    // v2 is broken: its admin API does not answer; rolled back to v3.
    lab.publish("npm", "v2");
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "npm")["result"];
    assert_eq!(res["outcome"], "rolled_back", "{doc:#}");
    assert!(
        res["validation"]["message"]
            .as_str()
            .unwrap()
            .contains("admin"),
        "{res:#}"
    );
    assert!(res["rollback_validation"]["ok"].as_bool().unwrap());
    assert_eq!(lab.project_image(&project), v3_id);
    wait_body(proxy, "v3");
}

/// While a backup run holds its lock (here flock(1) on the lock file, as a
/// cron line guarding a backup would), nothing is updated: the service is
/// skipped and says why; once the lock is gone it is updated.
#[test]
fn no_update_while_a_backup_run_holds_its_lock() {
    let t = Test::new();
    t.write("app/current", "v1\n");
    t.config(
        "updates:\n  soak_seconds: 1\nservices:\n  - name: app\n    type: generic\n    backup: false\n    update:\n      command: [cp, {root}/app/current, {root}/app/updated]\n",
    );
    std::fs::create_dir_all(t.path("state/locks")).unwrap();
    let lock = t.path("state/locks/backup.lock");
    // flock holds the lock while `cat` waits on its stdin (-o: the lock
    // stays with flock itself); closing stdin ends both.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .arg("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Command::new("flock")
        .args(["-n"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "flock never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = run_update(&t, &[]);
    drop(holder.stdin.take());
    assert!(holder.wait().unwrap().success());
    r.code(0);
    let doc = r.json();
    let res = &outcome(&doc, "app")["result"];
    assert_eq!(res["outcome"], "skipped", "{res:#}");
    let reason = res["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("a backup run holds its lock (pid {}", holder.id())),
        "{reason}"
    );
    assert!(!t.path("app/updated").exists(), "nothing ran");

    let r = run_update(&t, &[]);
    r.code(0);
    assert_eq!(outcome(&r.json(), "app")["result"]["outcome"], "updated");
    assert!(t.path("app/updated").exists());
}

/// A generic service whose update, validation and rollback are the admin's
/// commands: a good version stays, a bad one is rolled back, and a bad one
/// without a rollback command is `rollback_failed` with a critical event.
#[test]
fn update_commands_run_inside_the_same_transaction() {
    let t = Test::new();
    t.write("app/current", "good v1\n");
    t.write("releases/v2", "good v2\n");
    t.write("releases/v3", "bad v3\n");
    t.write("releases/v1", "good v1\n");
    let cfg = |release: &str, rollback: bool| {
        format!(
            "updates:\n  health_check_timeout_seconds: 2\n  soak_seconds: 1\nservices:\n  - name: app\n    type: generic\n    backup: false\n    health_checks:\n      - type: command\n        command: [grep, -q, good, {{root}}/app/current]\n    update:\n      command: [cp, {{root}}/releases/{release}, {{root}}/app/current]\n      validate_command: [test, -s, {{root}}/app/current]\n{}",
            if rollback {
                "      rollback_command: [cp, {root}/releases/v1, {root}/app/current]\n"
            } else {
                ""
            }
        )
    };
    t.config(&cfg("v2", true));
    let r = run_update(&t, &[]);
    r.code(0);
    assert_eq!(outcome(&r.json(), "app")["result"]["outcome"], "updated");
    assert_eq!(
        std::fs::read_to_string(t.path("app/current")).unwrap(),
        "good v2\n"
    );

    t.config(&cfg("v3", true));
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    assert_eq!(
        outcome(&doc, "app")["result"]["outcome"],
        "rolled_back",
        "{doc:#}"
    );
    assert_eq!(
        std::fs::read_to_string(t.path("app/current")).unwrap(),
        "good v1\n"
    );

    t.config(&cfg("v3", false));
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "app")["result"];
    assert_eq!(res["outcome"], "rollback_failed", "{doc:#}");
    assert!(
        res["summary"]
            .as_str()
            .unwrap()
            .contains("rollback_command"),
        "{res:#}"
    );
    let critical: Vec<&serde_json::Value> = doc["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["event"] == "rollback_failed")
        .collect();
    assert_eq!(critical.len(), 1, "{doc:#}");
    assert_eq!(critical[0]["severity"], "critical");
    assert!(critical[0]["data"]["manual_steps"].is_array());
}

/// Services that depend on each other in a cycle are refused before
/// anything is updated, naming the cycle; an unknown dependency is a
/// configuration error with its line.
#[test]
fn a_dependency_cycle_or_an_unknown_dependency_is_refused() {
    let t = Test::new();
    t.config(
        "services:\n  - name: a\n    type: generic\n    backup: false\n    depends_on: [b]\n    update:\n      command: [\"true\"]\n  - name: b\n    type: generic\n    backup: false\n    depends_on: [a]\n    update:\n      command: [\"true\"]\n",
    );
    let r = t.run(&["run", "update"]);
    r.code(1).stderr_has("a -> b -> a");
    t.config(
        "services:\n  - name: a\n    type: generic\n    backup: false\n    depends_on: [nope]\n",
    );
    let r = t.run(&["run", "update"]);
    r.code(78)
        .stderr_has("depends_on")
        .stderr_has("unknown service 'nope'");
}

/// A per-service override of one step through the binary: `validate`
/// in `services/app.rhai` fails the update, so it is rolled back; and the
/// example override in examples/scripts compiles against the primitives.
#[test]
fn a_step_overridden_for_one_service_decides_its_update() {
    let t = Test::new();
    t.write("app/current", "good v1\n");
    t.config(
        "updates:\n  soak_seconds: 0\nservices:\n  - name: app\n    type: generic\n    backup: false\n    update:\n      command: [cp, /dev/null, {root}/app/next]\n      rollback_command: [rm, -f, {root}/app/next]\n  - name: nextcloud\n    type: docker_compose\n    compose_file: {root}/nc/docker-compose.yml\n    enabled: false\n",
    );
    t.write("nc/docker-compose.yml", "services: {}\n");
    t.script(
        "services/app.rhai",
        "// The new version is refused; the old one (no app/next) passes.\nfn validate(svc, txn, ctx) {\n    let fresh = fs::exists(\"{root}/app/next\");\n    #{ ok: !fresh, message: if fresh { \"refused by the override\" } else { \"fine\" }, checks: [] }\n}\n",
    );
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/scripts/services/nextcloud.rhai"
    );
    t.script(
        "services/nextcloud.rhai",
        &std::fs::read_to_string(example).unwrap(),
    );
    t.run(&["scripts", "check"]).code(0);
    let r = run_update(&t, &["--service", "app"]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "app")["result"];
    assert_eq!(res["outcome"], "rolled_back", "{doc:#}");
    assert!(res["summary"]
        .as_str()
        .unwrap()
        .contains("refused by the override"));
    assert!(!t.path("app/next").exists(), "rollback_command ran");
}

/// `run update --recover`: after a SIGKILL during an update, it finishes
/// that update (rolled back from the record) and updates nothing else,
/// though another service has an update to run; with nothing left open it
/// says so and exits 0; it belongs to the update workflow alone.
#[test]
fn recover_finishes_a_killed_update_and_updates_nothing_else() {
    let t = Test::new();
    t.write("app/current", "good v1\n");
    t.write("releases/v1", "good v1\n");
    t.write("releases/v2", "bad v2\n");
    // The update installs v2, says so, and hangs until the test lets it go
    // (the killed run's child would otherwise outlive it).
    t.config(
        "updates:\n  health_check_timeout_seconds: 2\n  soak_seconds: 0\nservices:\n  - name: app\n    type: generic\n    backup: false\n    health_checks:\n      - type: command\n        command: [grep, -q, good, {root}/app/current]\n    update:\n      command: [sh, -c, 'cp {root}/releases/v2 {root}/app/current && touch {root}/applied && while [ ! -e {root}/release ]; do sleep 0.1; done']\n      rollback_command: [cp, {root}/releases/v1, {root}/app/current]\n  - name: other\n    type: generic\n    backup: false\n    update:\n      command: [touch, {root}/other-updated]\n",
    );
    kill_update_at(&t, "applying", || t.path("applied").exists());
    let db = t.path("state/state.db");
    t.write("release", "");
    assert_eq!(
        std::fs::read_to_string(t.path("app/current")).unwrap(),
        "bad v2\n"
    );
    let open = || -> i64 {
        rusqlite::Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT COUNT(*) FROM updates WHERE finished_at IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };

    // A dry run says what it would do and leaves the row open.
    let r = run_update(&t, &["--recover", "--dry-run"]);
    r.stderr_has("would roll back");
    assert_eq!(open(), 1);
    assert_eq!(
        std::fs::read_to_string(t.path("app/current")).unwrap(),
        "bad v2\n"
    );

    let r = run_update(&t, &["--recover"]);
    r.code(1);
    let doc = r.json();
    let services = doc["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "only the killed update: {doc:#}");
    let res = &outcome(&doc, "app")["result"];
    assert_eq!(res["outcome"], "rolled_back", "{doc:#}");
    assert_eq!(res["recovered"], true);
    assert_eq!(res["step_reached"], "applying");
    assert_eq!(
        std::fs::read_to_string(t.path("app/current")).unwrap(),
        "good v1\n"
    );
    assert!(
        !t.path("other-updated").exists(),
        "--recover updated another service"
    );
    assert_eq!(open(), 0);
    let c = rusqlite::Connection::open(&db).unwrap();
    let other: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM updates WHERE service = 'other'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(other, 0);

    // Nothing left to finish: exit 0, and a line that says so.
    let r = t.run(&["run", "update", "--recover"]);
    r.code(0).stderr_has("nothing to recover");
    assert!(!t.path("other-updated").exists());

    // Only the update workflow has something to recover.
    t.run(&["run", "backup", "--recover"])
        .code(2)
        .stderr_has("--recover applies to the update workflow");
}

/// `update.require_backup_hours`: with no recent verified backup one is
/// taken by the backup workflow before the update starts; with a fresh one
/// none is; when the backup fails the service is skipped, nothing changed;
/// and the key must be a positive number.
#[test]
fn an_update_needs_a_recent_backup_and_takes_one_when_there_is_none() {
    let t = Test::new();
    t.write("app/data", "v1\n");
    let cfg = |paths: &str, hours: &str| {
        format!(
            "global:\n  backup:\n    root: {{root}}/backups\nupdates:\n  health_check_timeout_seconds: 2\n  soak_seconds: 0\nservices:\n  - name: app\n    type: generic\n    backup_paths: [{paths}]\n    update:\n      command: [cp, {{root}}/app/data, {{root}}/app/updated]\n      require_backup_hours: {hours}\n"
        )
    };
    let backups = |t: &Test| -> Vec<(i64, i64)> {
        let c = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
        let mut st = c
            .prepare("SELECT id, created_at FROM backups WHERE service = 'app' ORDER BY id")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let started = |t: &Test| -> i64 {
        let c = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
        c.query_row(
            "SELECT started_at FROM updates WHERE service = 'app' AND outcome = 'updated' \
             ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };

    // No backup at all: one is taken, then the update runs.
    t.config(&cfg("{root}/app", "24"));
    let r = run_update(&t, &[]);
    r.code(0);
    let doc = r.json();
    assert_eq!(
        outcome(&doc, "app")["result"]["outcome"],
        "updated",
        "{doc:#}"
    );
    assert!(t.path("app/updated").exists());
    let taken = backups(&t);
    assert_eq!(taken.len(), 1, "{doc:#}");
    assert!(
        taken[0].1 <= started(&t),
        "the backup came after the update began"
    );
    let archive = t.run(&["backups", "list", "--json"]).json().to_string();
    assert!(archive.contains("app_"), "{archive}");

    // A fresh one exists now: none is taken.
    std::fs::remove_file(t.path("app/updated")).unwrap();
    run_update(&t, &[]).code(0);
    assert!(t.path("app/updated").exists());
    assert_eq!(backups(&t).len(), 1);

    // Older than the limit (0.0001 h is under a second): another is taken.
    std::thread::sleep(Duration::from_millis(1100));
    t.config(&cfg("{root}/app", "0.0001"));
    run_update(&t, &[]).code(0);
    assert_eq!(backups(&t).len(), 2);

    // The backup cannot be taken (its path is gone): skipped, not updated.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::remove_file(t.path("app/updated")).unwrap();
    t.config(&cfg("{root}/gone", "0.0001"));
    let r = run_update(&t, &[]);
    r.code(0);
    let doc = r.json();
    let res = &outcome(&doc, "app")["result"];
    assert_eq!(res["outcome"], "skipped", "{doc:#}");
    let reason = res["reason"].as_str().unwrap();
    assert!(
        reason.contains("require_backup_hours") && reason.contains("taking one failed"),
        "{reason}"
    );
    assert!(!t.path("app/updated").exists(), "updated without a backup");
    assert_eq!(backups(&t).len(), 2);

    // Not a positive number: the file, line and key.
    for bad in ["0", "-2", "soon"] {
        t.config(&cfg("{root}/app", bad));
        t.run(&["config", "validate"])
            .code(78)
            .stderr_has("homelab-autopilot.yaml:")
            .stderr_has("require_backup_hours");
    }
}

/// `update.backup_volumes`: v2 migrates the project's volume and fails its
/// checks. Without the key the rollback brings v1 back on the migrated
/// data; with it, the volume backup taken before the update (recorded in
/// the transaction) is restored before v1 starts again, also by
/// `run update --recover` after the run was killed.
#[test]
fn a_volume_backup_taken_before_the_update_is_restored_by_the_rollback() {
    if !ready() {
        return;
    }
    let lab = Lab::new("vol");
    lab.publish("app", "v1");
    let (file, project, port) = lab.compose_with_volume("web", "app");
    wait_body(port, "v1");
    let v1_id = lab.project_image(&project);
    let mountpoint = docker(&[
        "volume",
        "inspect",
        "--format",
        "{{.Mountpoint}}",
        &format!("{project}_data"),
    ]);
    let state = std::path::Path::new(&mountpoint).join("state");
    std::fs::write(&state, "original\n").unwrap();
    lab.publish("app", "v2");
    let t = Test::new();
    let cfg_waiting = |extra: &str, timeout: u32| {
        format!(
            "global:\n  backup:\n    root: {{root}}/backups\nupdates:\n  health_check_timeout_seconds: {timeout}\n  soak_seconds: 2\nservices:\n{}",
            compose_service("web", &file, &project, port, extra)
        )
    };
    let cfg = |extra: &str| cfg_waiting(extra, 6);

    // Without it, v1 comes back on what v2 wrote.
    t.config(&cfg(""));
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    assert_eq!(
        outcome(&doc, "web")["result"]["outcome"],
        "rolled_back",
        "{doc:#}"
    );
    wait_body(port, "v1");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "migrated\n");

    // With it, the volume is as it was before the update.
    std::fs::write(&state, "original\n").unwrap();
    t.config(&cfg("    update:\n      backup_volumes: true\n"));
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "web")["result"];
    assert_eq!(res["outcome"], "rolled_back", "{doc:#}");
    let id = res["check"]["volume_backup"]
        .as_i64()
        .expect("a volume backup");
    assert!(
        res["rollback"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("restored")),
        "{res:#}"
    );
    assert_eq!(lab.project_image(&project), v1_id);
    wait_body(port, "v1");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "original\n");
    // The backup is in the catalog, taken before the transaction began,
    // and the transaction's record names it.
    let c = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let (created, status): (i64, String) = c
        .query_row(
            "SELECT created_at, status FROM backups WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "complete");
    let (started, before): (i64, String) = c
        .query_row(
            "SELECT started_at, before FROM updates WHERE outcome = 'rolled_back' ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(created <= started);
    let before: serde_json::Value = serde_json::from_str(&before).unwrap();
    assert_eq!(before["volume_backup"], id);

    // Killed after v2 migrated the volume: `--recover` restores it from
    // the backup the record names.
    std::fs::write(&state, "original\n").unwrap();
    t.config(&cfg_waiting(
        "    update:\n      backup_volumes: true\n",
        120,
    ));
    kill_update_at(&t, "validating", || {
        std::fs::read_to_string(&state).is_ok_and(|s| s == "migrated\n")
    });
    let r = run_update(&t, &["--recover"]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "web")["result"];
    assert_eq!(res["outcome"], "rolled_back", "{doc:#}");
    assert_eq!(res["recovered"], true);
    assert_eq!(lab.project_image(&project), v1_id);
    wait_body(port, "v1");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "original\n");

    // Not rolled back (rollback_on_failure: false): the manual steps name
    // the volume backup, and following them gives the data back.
    std::fs::write(&state, "original\n").unwrap();
    t.config(&format!(
        "global:\n  backup:\n    root: {{root}}/backups\nupdates:\n  rollback_on_failure: false\n  health_check_timeout_seconds: 6\n  soak_seconds: 2\nservices:\n{}",
        compose_service("web", &file, &project, port, "    update:\n      backup_volumes: true\n")
    ));
    let r = run_update(&t, &[]);
    r.code(1);
    let doc = r.json();
    let res = &outcome(&doc, "web")["result"];
    assert_eq!(res["outcome"], "rollback_failed", "{doc:#}");
    let id = res["check"]["volume_backup"].as_i64().unwrap();
    let restore = format!("homelab-autopilot restore {id} --volumes --force");
    let steps: Vec<&str> = res["manual_steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(steps.contains(&restore.as_str()), "{steps:?}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "migrated\n");
    t.run(&["restore", &id.to_string(), "--volumes", "--force"])
        .code(0);
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "original\n");

    // Only a Compose project has volumes to back up.
    t.config(
        "services:\n  - name: app\n    type: generic\n    backup: false\n    update:\n      command: [\"true\"]\n      backup_volumes: true\n",
    );
    t.run(&["config", "validate"])
        .code(78)
        .stderr_has("update.backup_volumes");
}
