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
