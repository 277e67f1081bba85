//! `run update` of a `type: caddy` service through the binary against a
//! real Caddy (`caddy run`, started by each test with its admin API and
//! its site on free loopback ports, its data and config directories in the
//! test's root).

use crate::harness::free_port;
use crate::harness::{Run, Test};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ready() -> bool {
    crate::harness::require(&crate::harness::CADDY)
}

/// GET http://127.0.0.1:PORT/: (status, body), or None.
fn get(port: u16) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.trim().to_string()))
}

/// A Caddy of the test's own.
struct Caddy {
    child: Child,
    /// The admin address as the Caddyfile gives it.
    admin: String,
    /// ... and as the service's `admin_url`.
    admin_url: String,
    port: u16,
    /// The Caddyfile.
    file: std::path::PathBuf,
}

impl Caddy {
    /// A Caddyfile whose site answers `body` with `status`; `extra` goes
    /// into the site block.
    fn caddyfile(admin: &str, port: u16, body: &str, status: u16, extra: &str) -> String {
        format!(
            "# the test's site\n{{\n\tadmin {admin}\n\tauto_https off\n}}\n\nhttp://:{port} {{\n\tbind 127.0.0.1\n{extra}\trespond \"{body}\" {status}\n}}\n"
        )
    }

    /// A Caddy with its admin API on a free loopback port, or on a unix
    /// socket.
    fn start(t: &Test, unix: bool) -> Caddy {
        let port = free_port();
        let dir = t.path("caddy");
        std::fs::create_dir_all(dir.join("home")).unwrap();
        let (admin, admin_url) = if unix {
            let sock = format!("unix/{}", dir.join("admin.sock").display());
            (sock.clone(), sock)
        } else {
            let a = format!("127.0.0.1:{}", free_port());
            (a.clone(), format!("http://{a}"))
        };
        let file = dir.join("Caddyfile");
        std::fs::write(&file, Caddy::caddyfile(&admin, port, "v1", 200, "")).unwrap();
        let child = Command::new("caddy")
            .args(["run", "--config"])
            .arg(&file)
            .args(["--adapter", "caddyfile"])
            .current_dir(&dir)
            .env("HOME", dir.join("home"))
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("caddy run");
        let c = Caddy {
            child,
            admin,
            admin_url,
            port,
            file,
        };
        c.wait_for(200, "v1");
        c
    }

    /// Until the site answers `status` with `body`.
    fn wait_for(&self, status: u16, body: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = get(self.port);
            if got.as_ref() == Some(&(status, body.to_string())) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Caddy answers {got:?}, want {status} {body:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the site answers now.
    fn serves(&self) -> Option<(u16, String)> {
        get(self.port)
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.file, text).unwrap();
    }

    fn text(&self, body: &str, status: u16, extra: &str) -> String {
        Caddy::caddyfile(&self.admin, self.port, body, status, extra)
    }

    /// The service, with short validation times (`timeout` for the checks).
    fn config(&self, t: &Test, timeout: u64) {
        t.config(&format!(
            "updates:\n  health_check_timeout_seconds: {timeout}\n  soak_seconds: 1\nservices:\n  - name: web\n    type: caddy\n    backup: false\n    config_file: {}\n    admin_url: {}\n    health_checks:\n      - type: http\n        url: http://127.0.0.1:{}/\n        body_contains: v\n",
            self.file.display(),
            self.admin_url,
            self.port
        ));
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_update(t: &Test, args: &[&str]) -> (Run, serde_json::Value) {
    let mut a = vec!["run", "update", "--json"];
    a.extend_from_slice(args);
    let r = t.run(&a);
    let doc = r.json();
    let res = doc["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == "web")
        .unwrap_or_else(|| panic!("no service web in {doc:#}"))["result"]
        .clone();
    (r, res)
}

/// How many updates the state DB has recorded.
fn update_rows(t: &Test) -> i64 {
    rusqlite::Connection::open(t.path("state/state.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM updates", [], |r| r.get(0))
        .unwrap()
}

/// The files the update keeps in the state directory.
fn saved(t: &Test) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(t.path("state/caddy/web"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn a_caddy_config_is_loaded_refused_or_rolled_back_byte_for_byte() {
    if !ready() {
        return;
    }
    let t = Test::new();
    let caddy = Caddy::start(&t, false);
    caddy.config(&t, 4);

    // The file is what Caddy runs: up_to_date, and kept as the good copy.
    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "up_to_date", "{res:#}");
    assert_eq!(saved(&t), ["good", "good.config-sha256"]);
    let good = std::fs::read(t.path("state/caddy/web/good")).unwrap();
    assert_eq!(good, std::fs::read(&caddy.file).unwrap());

    // A dry run reports the new config and changes nothing.
    let v3 = caddy.text("v3", 200, "\t# v3, hand-edited   \n");
    caddy.write(&v3);
    let rows = update_rows(&t);
    let (r, res) = run_update(&t, &["--dry-run"]);
    r.code(0);
    assert_eq!(res["outcome"], "available", "{res:#}");
    assert_eq!(res["check"]["method"], "caddy");
    assert!(
        res["summary"].as_str().unwrap().contains("would"),
        "{res:#}"
    );
    assert_eq!(caddy.serves(), Some((200, "v1".into())));
    assert_eq!(std::fs::read_to_string(&caddy.file).unwrap(), v3);
    assert_eq!(saved(&t), ["good", "good.config-sha256"]);
    assert_eq!(update_rows(&t), rows, "the dry run wrote no state");

    // v3: validated, loaded, checked: updated; it becomes the good copy.
    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "updated", "{res:#}");
    assert!(res["validation"]["ok"].as_bool().unwrap());
    assert_eq!(caddy.serves(), Some((200, "v3".into())));
    assert_eq!(std::fs::read_to_string(&caddy.file).unwrap(), v3);
    assert_eq!(
        std::fs::read_to_string(t.path("state/caddy/web/good")).unwrap(),
        v3
    );
    assert_eq!(saved(&t), ["good", "good.config-sha256"]);

    // A config `caddy validate` refuses (it adapts, but its regexp does
    // not compile): aborted, nothing loaded, the admin's file left as
    // written.
    let invalid = caddy.text("v4", 200, "\tmap {path} {x} {\n\t\t~[ /a\n\t}\n");
    caddy.write(&invalid);
    let (r, res) = run_update(&t, &[]);
    r.code(1);
    assert_eq!(res["outcome"], "aborted", "{res:#}");
    assert!(
        res["summary"].as_str().unwrap().contains("caddy validate"),
        "{res:#}"
    );
    assert!(res.get("rollback").is_none(), "{res:#}");
    assert_eq!(caddy.serves(), Some((200, "v3".into())));
    assert_eq!(std::fs::read_to_string(&caddy.file).unwrap(), invalid);

    // A config that loads but fails the health check (HTTP 500): rolled
    // back, Caddy serves v3 again and the file is v3 byte for byte.
    caddy.write(&caddy.text("broken", 500, ""));
    let (r, res) = run_update(&t, &[]);
    r.code(1);
    assert_eq!(res["outcome"], "rolled_back", "{res:#}");
    assert!(!res["validation"]["ok"].as_bool().unwrap());
    assert!(res["rollback_validation"]["ok"].as_bool().unwrap());
    let notes = res["rollback"].to_string();
    assert!(notes.contains("byte for byte"), "{res:#}");
    assert_eq!(caddy.serves(), Some((200, "v3".into())));
    assert_eq!(std::fs::read_to_string(&caddy.file).unwrap(), v3);

    // Nothing new now: the restored file is what Caddy runs.
    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "up_to_date", "{res:#}");

    // No config content reaches the state DB.
    let db = rusqlite::Connection::open(t.path("state/state.db")).unwrap();
    let rows: Vec<String> = db
        .prepare("SELECT before || COALESCE(after, '') || detail FROM updates")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert!(!rows.is_empty());
    for row in rows {
        assert!(!row.contains("static_response"), "{row}");
        assert!(!row.contains("hand-edited"), "{row}");
    }
}

/// The admin API on a unix socket (`admin unix//PATH`, Caddy's notation,
/// as `admin_url`); with `rollback_on_failure: false` a failed config is
/// `rollback_failed` with the steps to load the saved config by hand.
#[test]
fn a_caddy_on_a_unix_socket_is_updated_and_says_how_to_roll_back_by_hand() {
    if !ready() {
        return;
    }
    let t = Test::new();
    let caddy = Caddy::start(&t, true);
    caddy.config(&t, 4);
    caddy.write(&caddy.text("v3", 200, ""));
    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "updated", "{res:#}");
    assert_eq!(caddy.serves(), Some((200, "v3".into())));
    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "up_to_date", "{res:#}");

    // Without rollbacks, a failed config is rollback_failed with the
    // steps to put back the saved config by hand.
    let cfg = std::fs::read_to_string(t.path("etc/homelab-autopilot.yaml")).unwrap();
    t.config(&cfg.replace("updates:\n", "updates:\n  rollback_on_failure: false\n"));
    caddy.write(&caddy.text("broken", 500, ""));
    let (r, res) = run_update(&t, &[]);
    r.code(1);
    assert_eq!(res["outcome"], "rollback_failed", "{res:#}");
    let steps = res["manual_steps"].to_string();
    assert!(steps.contains("admin socket"), "{steps}");
    assert!(steps.contains(".running.json"), "{steps}");
    assert_eq!(caddy.serves(), Some((500, "broken".into())));
}

#[test]
fn a_killed_caddy_update_is_rolled_back_by_the_next_run() {
    if !ready() {
        return;
    }
    let t = Test::new();
    let caddy = Caddy::start(&t, false);
    caddy.config(&t, 60);
    let v1 = std::fs::read_to_string(&caddy.file).unwrap();
    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "up_to_date", "{res:#}");

    caddy.write(&caddy.text("broken", 500, ""));
    // SIGKILL while it waits for the broken config to pass its checks.
    let db = crate::update::kill_update_at(&t, "validating", || true);
    assert_eq!(caddy.serves(), Some((500, "broken".into())), "loaded");

    let (r, res) = run_update(&t, &[]);
    r.code(1);
    assert_eq!(res["outcome"], "rolled_back", "{res:#}");
    assert_eq!(res["recovered"], true);
    assert_eq!(res["step_reached"], "validating");
    caddy.wait_for(200, "v1");
    assert_eq!(std::fs::read_to_string(&caddy.file).unwrap(), v1);
    assert_eq!(crate::update::open_updates(&db), 0, "nothing is left open");
}

/// `update.command` makes the new config inside the transaction (a copy
/// from a release directory here, as a `git pull` would): a good one is
/// loaded; a broken one, or one `caddy validate` refuses, is rolled back to
/// the file as it was before the command, byte for byte, even on the
/// service's first update; `update.rollback_command` runs in the rollback.
#[test]
fn a_caddy_update_command_makes_the_config_inside_the_transaction() {
    if !ready() {
        return;
    }
    let t = Test::new();
    let caddy = Caddy::start(&t, false);
    let v1 = std::fs::read_to_string(&caddy.file).unwrap();
    let v3 = caddy.text("v3", 200, "");
    t.write("releases/v3", &v3);
    t.write("releases/broken", &caddy.text("broken", 500, ""));
    t.write(
        "releases/invalid",
        &caddy.text("v4", 200, "\tmap {path} {x} {\n\t\t~[ /a\n\t}\n"),
    );
    let cfg = |release: &str| {
        format!(
            "updates:\n  health_check_timeout_seconds: 4\n  soak_seconds: 1\nservices:\n  - name: web\n    type: caddy\n    backup: false\n    config_file: {}\n    admin_url: {}\n    health_checks:\n      - type: http\n        url: http://127.0.0.1:{}/\n        body_contains: v\n    update:\n      command: [cp, {{root}}/releases/{release}, {}]\n      rollback_command: [touch, {{root}}/rolled-back]\n",
            caddy.file.display(),
            caddy.admin_url,
            caddy.port,
            caddy.file.display()
        )
    };

    // A broken release on the first update: the file is v1 again.
    t.config(&cfg("broken"));
    let (r, res) = run_update(&t, &[]);
    r.code(1);
    assert_eq!(res["outcome"], "rolled_back", "{res:#}");
    assert_eq!(std::fs::read_to_string(&caddy.file).unwrap(), v1);
    assert_eq!(caddy.serves(), Some((200, "v1".into())));
    assert!(
        t.path("rolled-back").exists(),
        "update.rollback_command ran"
    );

    // A dry run runs no command.
    t.config(&cfg("v3"));
    let (r, res) = run_update(&t, &["--dry-run"]);
    r.code(0);
    assert_eq!(res["outcome"], "available", "{res:#}");
    assert!(
        res["summary"].as_str().unwrap().contains("update.command"),
        "{res:#}"
    );
    assert_eq!(std::fs::read_to_string(&caddy.file).unwrap(), v1);

    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "updated", "{res:#}");
    assert_eq!(caddy.serves(), Some((200, "v3".into())));

    // One `caddy validate` refuses: rolled back before anything loaded.
    t.config(&cfg("invalid"));
    let (r, res) = run_update(&t, &[]);
    r.code(1);
    assert_eq!(res["outcome"], "rolled_back", "{res:#}");
    assert!(
        res["summary"].as_str().unwrap().contains("caddy validate"),
        "{res:#}"
    );
    assert_eq!(std::fs::read_to_string(&caddy.file).unwrap(), v3);
    assert_eq!(caddy.serves(), Some((200, "v3".into())));
}

/// A JSON `config_file` (Caddy's native config, used as it is) is loaded
/// and kept the same way.
#[test]
fn a_json_caddy_config_is_loaded_as_it_is() {
    if !ready() {
        return;
    }
    let t = Test::new();
    let caddy = Caddy::start(&t, false);
    // The JSON of v3, as `caddy adapt` gives it.
    let v3 = t.path("caddy/v3.caddyfile");
    std::fs::write(&v3, caddy.text("v3", 200, "")).unwrap();
    let out = Command::new("caddy")
        .args(["adapt", "--adapter", "caddyfile", "--config"])
        .arg(&v3)
        .env("HOME", t.path("caddy/home"))
        .env("XDG_DATA_HOME", t.path("caddy/data"))
        .env("XDG_CONFIG_HOME", t.path("caddy/config"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let json = t.path("caddy/caddy.json");
    std::fs::write(&json, &out.stdout).unwrap();
    t.config(&format!(
        "updates:\n  health_check_timeout_seconds: 4\n  soak_seconds: 1\nservices:\n  - name: web\n    type: caddy\n    backup: false\n    config_file: {}\n    admin_url: {}\n",
        json.display(),
        caddy.admin_url
    ));
    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "updated", "{res:#}");
    assert_eq!(caddy.serves(), Some((200, "v3".into())));
    let (r, res) = run_update(&t, &[]);
    r.code(0);
    assert_eq!(res["outcome"], "up_to_date", "{res:#}");
    assert_eq!(
        std::fs::read(t.path("state/caddy/web/good")).unwrap(),
        out.stdout
    );
}

/// The keys of the two types are checked with their positions: a missing
/// or absent config file, an admin API off the loopback, keys of another
/// type.
#[test]
fn caddy_and_nginx_proxy_manager_keys_are_validated_with_positions() {
    let t = Test::new();
    t.config(
        "services:\n  - name: a\n    type: caddy\n    admin_url: http://192.168.1.5:2019\n  - name: b\n    type: caddy\n    config_file: missing/Caddyfile\n    proxy_url: http://127.0.0.1/\n  - name: c\n    type: nginx_proxy_manager\n    config_file: x\n    admin_url: ftp://127.0.0.1/\n  - name: d\n    type: docker_compose\n    compose_file: /srv/d/compose.yml\n    admin_url: http://127.0.0.1:81/api/\n",
    );
    let r = t.run(&["config", "validate"]);
    r.code(78);
    let file = t.path("etc/homelab-autopilot.yaml").display().to_string();
    let has = |line: u32, what: &str| {
        assert!(
            r.stderr
                .lines()
                .any(|l| l.starts_with(&format!("{file}:{line}:")) && l.contains(what)),
            "no error at line {line} with {what:?}:\n{}",
            r.stderr
        );
    };
    has(4, "no authentication");
    has(7, "does not exist");
    has(8, "'proxy_url' applies only to type nginx_proxy_manager");
    has(11, "'config_file' applies only to type caddy");
    has(12, "URL scheme 'ftp'");
    has(
        16,
        "'admin_url' applies only to type caddy/nginx_proxy_manager",
    );
    assert!(
        r.stderr.contains("missing required key 'config_file'"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("missing required key 'compose_file'"),
        "{}",
        r.stderr
    );

    // Fixed: accepted (a relative config_file is resolved against the
    // directory of the file that names it).
    t.write("etc/Caddyfile", ":8080\nrespond ok\n");
    t.config(
        "services:\n  - name: a\n    type: caddy\n    config_file: Caddyfile\n    admin_url: unix//run/caddy/admin.sock\n  - name: c\n    type: nginx_proxy_manager\n    compose_file: /srv/npm/compose.yml\n",
    );
    t.run(&["config", "validate"]).code(0);
}

/// examples/proxy.yaml is a valid configuration (its Caddyfile where the
/// example says it is).
#[test]
fn the_proxy_example_is_valid() {
    let t = Test::new();
    t.write("Caddyfile", ":80\nrespond ok\n");
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxy.yaml"))
            .unwrap();
    assert!(example.contains("config_file: /etc/caddy/Caddyfile"));
    t.config(&example.replace("/etc/caddy/Caddyfile", "{root}/Caddyfile"));
    let r = t.run(&["config", "validate"]);
    r.code(0);
}
