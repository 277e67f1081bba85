//! A just-style builder that runs the real binary in a temp root with its own
//! config, state, scripts and backup dirs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_homelab-autopilot");

pub struct Test {
    pub root: tempfile::TempDir,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code, want,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stderr_has(&self, s: &str) -> &Self {
        assert!(
            self.stderr.contains(s),
            "stderr lacks {s:?}\n--- stderr\n{}",
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn stdout_has(&self, s: &str) -> &Self {
        assert!(
            self.stdout.contains(s),
            "stdout lacks {s:?}\n--- stdout\n{}",
            self.stdout
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

impl Test {
    pub fn new() -> Test {
        Test {
            root: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    pub fn root_str(&self) -> String {
        self.root.path().display().to_string()
    }

    /// Write a file under the root (parents created). `{root}` is replaced.
    pub fn write(&self, rel: &str, content: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content.replace("{root}", &self.root_str())).unwrap();
        self
    }

    /// The main config file at `etc/homelab-autopilot.yaml`, mode 0600 as
    /// a file that may hold secrets must be (tokens in URLs included).
    pub fn config(&self, yaml: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        self.write("etc/homelab-autopilot.yaml", yaml);
        let p = self.path("etc/homelab-autopilot.yaml");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        self
    }

    /// A user script under `scripts/`.
    pub fn script(&self, rel: &str, code: &str) -> &Self {
        self.write(&format!("scripts/{rel}"), code)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.path("etc/homelab-autopilot.yaml"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--scripts-dir")
            .arg(self.path("scripts"))
            .args(args)
            .env_remove("HOMELAB_AUTOPILOT_CONFIG")
            .env_remove("JOURNAL_STREAM")
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("home/.config"))
            .env("XDG_STATE_HOME", self.path("home/.local/state"))
            .stdin(Stdio::null());
        c
    }

    /// Run the binary with its stdin, stdout and stderr on a terminal (a
    /// pty, through Python's `pty.fork` and an argv list) and return its
    /// exit code and what the terminal showed. Each time the screen shows
    /// one more `[y/n]` prompt, the next of `answers` is typed.
    pub fn on_a_terminal(&self, args: &[&str], answers: &[&str]) -> (Option<i32>, String) {
        const DRIVER: &str = r#"
import os, pty, select, sys
answers = [a for a in sys.argv[1].split(",") if a]
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
out, asked = b"", 0
while True:
    ready, _, _ = select.select([fd], [], [], 300)
    if not ready:
        os.kill(pid, 9)
        break
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    out += data
    while out.count(b"[y/n]") > asked and answers:
        asked += 1
        os.write(fd, (answers.pop(0) + "\n").encode())
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)
"#;
        let cmd = self.command(args);
        let mut py = Command::new("/usr/bin/python3");
        py.arg("-c")
            .arg(DRIVER)
            .arg(answers.join(","))
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .env("TERM", "xterm")
            .env("COLUMNS", "120");
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => py.env(k, v),
                None => py.env_remove(k),
            };
        }
        let out = py.output().expect("python3 pty");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from_output(self.command(args).output().expect("run binary"))
    }

    /// Make a small tree of files to back up under `rel`.
    pub fn data(&self, rel: &str) -> PathBuf {
        self.write(&format!("{rel}/a.txt"), "alpha\n");
        self.write(&format!("{rel}/sub/b.txt"), "bravo\n");
        self.write(&format!("{rel}/skip.tmp"), "left out\n");
        self.path(rel)
    }

    /// Archives (final names) under a directory, recursively.
    pub fn archives(&self, rel: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.path(rel), &mut |p| {
            let n = p.file_name().unwrap().to_string_lossy();
            if n.ends_with(".tar.zst") && !n.starts_with('.') {
                out.push(p.to_path_buf());
            }
        });
        out.sort();
        out
    }
}

pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            f(&p);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(&p, f);
            }
        }
    }
}

/// A snapshot of a tree: path, mode, size, mtime and content hash of files.
/// Directory mtimes are left out: opening an existing SQLite DB (its
/// transient -wal/-shm files) and a restore's sibling staging dir touch them
/// without leaving anything behind.
pub fn snapshot(dir: &Path) -> Vec<String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    walk(dir, &mut |p| {
        let m = p.symlink_metadata().unwrap();
        let hash = if m.is_file() {
            format!(
                "{:x}",
                sha2::Sha256::digest(std::fs::read(p).unwrap_or_default())
            )
        } else {
            String::new()
        };
        let mtime = if m.is_dir() { 0 } else { m.mtime() };
        out.push(format!(
            "{} {:o} {} {} {}",
            p.display(),
            m.mode(),
            m.len(),
            mtime,
            hash
        ));
    });
    out.sort();
    out
}

/// The basic config: one generic service `web` backing up `{root}/data/web`.
pub fn basic_config(extra_global: &str, extra_services: &str) -> String {
    format!(
        "global:\n  backup:\n    root: {{root}}/backups\n{extra_global}services:\n  - name: web\n    type: generic\n    backup_paths: [{{root}}/data/web]\n    exclude: [\"*.tmp\"]\n{extra_services}"
    )
}

// ---- requirements and skips ----
//
// A test that needs something beyond the repository (a Docker engine, an
// SMTP server) asks [`require`]. When it is missing the test says
// `SKIPPED: <test>: <reason>` on the terminal (written past libtest's output
// capture, so it shows although the test passes), the skip is recorded for
// `skips::no_requirement_is_missing`, and under `CI=true` the test fails
// instead.

/// Something tests need from the machine beyond the repository.
pub struct Requirement {
    pub name: &'static str,
    /// How to get it.
    pub install: &'static str,
    /// Ok, or what is missing.
    pub probe: fn() -> Result<(), String>,
    /// The tests that skip without it (`module::test`).
    pub tests: &'static [&'static str],
    /// Only an extra cross-check, absent on a fresh clone: reported when
    /// missing but never a failure under `CI=true`.
    pub optional: bool,
}

/// A Docker engine answering `docker info`, and busybox for the test image.
pub const DOCKER: Requirement = Requirement {
    name: "docker",
    install: "apt-get install docker.io busybox-static; dockerd &",
    probe: docker_available,
    tests: &[
        "docker::docker_container_reports_real_container_states",
        "docker::a_stopped_container_alerts_and_recovers_through_run_monitor",
        "docker::a_compose_project_is_up_only_while_all_its_containers_are",
        "docker_backup::a_compose_project_is_backed_up_in_each_mode_and_its_state_is_kept",
        "docker_backup::volumes_are_restored_under_their_names_and_compose_adopts_them",
        "docker_backup::a_killed_runs_stopped_container_is_started_by_the_next_run",
        "docker_backup::docker_exec_runs_an_argv_with_bounded_output",
        "restore_test::a_compose_copy_answers_on_its_internal_network_with_the_backed_up_data",
        "restore_test::a_corrupted_compose_backup_fails_and_leaves_nothing",
        "restore_test::a_killed_restore_test_is_cleaned_up_by_the_next_run",
    ],
    optional: false,
};

/// A Docker engine, busybox, Compose and a `docker-registry` binary (the
/// update tests push their images to a registry of their own).
pub const REGISTRY: Requirement = Requirement {
    name: "docker-registry",
    install: "apt-get install docker.io busybox-static docker-compose docker-registry; dockerd &",
    probe: registry_available,
    tests: &[
        "update::a_compose_update_that_passes_stays_and_one_that_fails_is_rolled_back",
        "update::a_registry_that_is_down_aborts_without_touching_the_service",
        "update::dry_run_reports_the_new_digest_and_changes_nothing",
        "update::a_database_updates_before_its_app_and_a_failed_one_skips_it",
        "update::a_killed_update_is_rolled_back_by_the_next_run",
        "update::nginx_proxy_manager_updates_as_compose_and_its_default_checks_decide",
    ],
    optional: false,
};

pub fn registry_available() -> Result<(), String> {
    docker_available()?;
    if !Path::new("/usr/bin/docker-registry").exists() {
        return Err("no /usr/bin/docker-registry".into());
    }
    let compose = Command::new("docker-compose")
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new("docker")
            .args(["compose", "version"])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success());
    if !compose {
        return Err("neither docker-compose nor docker compose".into());
    }
    Ok(())
}

/// A `caddy` binary on the PATH (the `caddy` update tests run their own
/// on free loopback ports).
pub const CADDY: Requirement = Requirement {
    name: "caddy",
    install: "apt-get install caddy",
    probe: caddy_available,
    tests: &[
        "caddy::a_caddy_config_is_loaded_refused_or_rolled_back_byte_for_byte",
        "caddy::a_killed_caddy_update_is_rolled_back_by_the_next_run",
        "caddy::a_json_caddy_config_is_loaded_as_it_is",
        "caddy::a_caddy_update_command_makes_the_config_inside_the_transaction",
        "caddy::a_caddy_on_a_unix_socket_is_updated_and_says_how_to_roll_back_by_hand",
    ],
    optional: false,
};

pub fn caddy_available() -> Result<(), String> {
    let ok = Command::new("caddy")
        .arg("version")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(())
    } else {
        Err("no `caddy` on the PATH".into())
    }
}

/// aiosmtpd importable by /usr/bin/python3.
pub const SMTP: Requirement = Requirement {
    name: "smtp",
    install: "apt-get install python3-aiosmtpd",
    probe: smtp_available,
    tests: &[
        "notify::email_reaches_a_real_smtp_server_with_subject_headers_and_both_parts",
        "notify::email_over_starttls_authenticates_and_never_leaks_the_password",
        "notify::email_over_implicit_tls_authenticates_and_never_leaks_the_password",
        "notify_services::a_failed_backup_reads_cleanly_in_every_service",
    ],
    optional: false,
};

/// Root, for tests that mount a small tmpfs (a full disk on demand).
pub const ROOT: Requirement = Requirement {
    name: "root",
    install: "run the tests as root, as CI does",
    probe: root_available,
    tests: &["runs::a_full_disk_during_a_backup_exits_74_and_leaves_nothing_half_written"],
    optional: false,
};

pub fn root_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err("not running as root (mounting a tmpfs needs it)".into())
    }
}

pub fn docker_available() -> Result<(), String> {
    let up = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !up {
        return Err("no Docker engine answers `docker info`".into());
    }
    if !["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        return Err("no busybox at /bin/busybox or /usr/bin/busybox".into());
    }
    Ok(())
}

pub fn smtp_available() -> Result<(), String> {
    let have = Command::new("/usr/bin/python3")
        .args(["-c", "import aiosmtpd"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        Ok(())
    } else {
        Err("aiosmtpd is not importable by /usr/bin/python3".into())
    }
}

/// `CI=true`: skips are failures.
pub fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The skips recorded so far in this test process: (test, reason).
pub fn skips() -> Vec<(String, String)> {
    SKIPS.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

static SKIPS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// The running test's name (libtest names each test's thread after it).
pub fn current_test() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => "(unnamed test)".into(),
    }
}

/// Say loudly that `test` did not run, and record it; under `CI=true` fail.
#[track_caller]
pub fn skip(test: &str, reason: &str) {
    if on_ci() {
        panic!("{test}: {reason} (CI=true: a skip is a failure)");
    }
    note_skip(test, reason);
}

/// Print and record a skip, whatever `CI` says.
fn note_skip(test: &str, reason: &str) {
    use std::io::Write;
    let line = format!("SKIPPED: {test}: {reason}\n");
    // io::stderr() directly, not eprint!: libtest captures only the macros.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    SKIPS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((test.to_string(), reason.to_string()));
}

/// Whether `req` is there; if not the running test is skipped (see
/// [`skip`]) and should return. An optional requirement's absence is
/// recorded but never fails under `CI=true`.
#[track_caller]
pub fn require(req: &Requirement) -> bool {
    match (req.probe)() {
        Ok(()) => true,
        Err(why) => {
            let reason = format!("needs {}: {why} ({})", req.name, req.install);
            if req.optional {
                note_skip(&current_test(), &reason);
            } else {
                skip(&current_test(), &reason);
            }
            false
        }
    }
}

/// A loopback port nothing listens on, for a server a test starts (or a
/// receiver that must be down). Taken below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768 and up by default), so that no outgoing
/// connection of a concurrent test is given it between this check and the
/// server's bind; distinct within this process, and started at an offset
/// of the pid so that test processes running side by side rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        let v4_free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        // Free on ::1 too, where there is IPv6 at all.
        let v6_free = match std::net::TcpListener::bind(("::1", port)) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
        };
        if v4_free && v6_free {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN);
}
