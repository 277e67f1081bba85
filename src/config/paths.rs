//! Where things live: FHS paths as root, XDG (dirs crate) otherwise, every
//! one overridable by config keys and CLI flags (docs/conventions.md, Paths).
//!
//! Precedence per path: CLI flag > `global.paths.*` > default. One twist:
//! when `--state-dir` is given on the command line and the log or lock dir
//! is not set anywhere, they go under that state dir (`logs/`, `locks/`), so
//! a run with only `--state-dir` (every test) writes nothing outside it.

use super::Config;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Overrides from the command line (`--state-dir`, ...).
#[derive(Debug, Clone, Default)]
pub struct PathOverrides {
    pub state_dir: Option<PathBuf>,
    pub log_dir: Option<PathBuf>,
    pub scripts_dir: Option<PathBuf>,
    pub lock_dir: Option<PathBuf>,
}

/// Resolved paths for one process.
#[derive(Debug, Clone)]
pub struct Paths {
    pub state_dir: PathBuf,
    /// `state_dir/state.db`
    pub state_db: PathBuf,
    pub log_dir: PathBuf,
    pub scripts_dir: PathBuf,
    pub lock_dir: PathBuf,
    /// `global.backup.root`, defaulting to `state_dir/backups`.
    pub backup_root: PathBuf,
    /// `global.paths.metrics_dir` (no default: metrics are opt-in).
    pub metrics_dir: Option<PathBuf>,
}

const APP: &str = "homelab-autopilot";

/// Whether the process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The defaults for one kind of user.
struct Defaults {
    state: PathBuf,
    logs: PathBuf,
    scripts: PathBuf,
    locks: PathBuf,
}

fn defaults(root: bool) -> Defaults {
    if root {
        return Defaults {
            state: PathBuf::from("/var/lib").join(APP),
            logs: PathBuf::from("/var/log").join(APP),
            scripts: PathBuf::from("/etc").join(APP).join("scripts"),
            locks: PathBuf::from("/run/lock").join(APP),
        };
    }
    let state = dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join(APP);
    let scripts = dirs::config_dir()
        .map(|d| d.join(APP).join("scripts"))
        .unwrap_or_else(|| state.join("scripts"));
    Defaults {
        logs: state.join("logs"),
        locks: state.clone(),
        scripts,
        state,
    }
}

impl Paths {
    pub fn resolve(cfg: &Config, cli: &PathOverrides) -> Paths {
        Self::resolve_as(cfg, cli, is_root())
    }

    fn resolve_as(cfg: &Config, cli: &PathOverrides, root: bool) -> Paths {
        let d = defaults(root);
        let conf = &cfg.global.paths;
        let pick =
            |flag: &Option<PathBuf>, key: &Option<PathBuf>| flag.clone().or_else(|| key.clone());

        let state_dir = pick(&cli.state_dir, &conf.state_dir).unwrap_or(d.state);
        let under_cli_state = |sub: &str| cli.state_dir.as_ref().map(|s| s.join(sub));
        let log_dir = pick(&cli.log_dir, &conf.log_dir)
            .or_else(|| under_cli_state("logs"))
            .unwrap_or(d.logs);
        let lock_dir = pick(&cli.lock_dir, &conf.lock_dir)
            .or_else(|| under_cli_state("locks"))
            .unwrap_or(d.locks);
        let scripts_dir = pick(&cli.scripts_dir, &conf.scripts_dir).unwrap_or(d.scripts);
        let backup_root = cfg
            .global
            .backup
            .root
            .clone()
            .unwrap_or_else(|| state_dir.join("backups"));
        Paths {
            state_db: state_dir.join("state.db"),
            state_dir,
            log_dir,
            scripts_dir,
            lock_dir,
            backup_root,
            metrics_dir: conf.metrics_dir.clone(),
        }
    }

    /// Create the state (0700), log and lock directories.
    pub fn ensure_dirs(&self) -> Result<()> {
        create_dir(&self.state_dir, Some(0o700))?;
        create_dir(&self.log_dir, Some(0o750))?;
        create_dir(&self.lock_dir, Some(0o750))?;
        Ok(())
    }
}

/// `mkdir -p` with a mode for the directories it creates; an existing
/// directory's mode is left alone (the admin may have chosen it).
fn create_dir(dir: &Path, mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    if let Some(m) = mode {
        b.mode(m);
    }
    b.create(dir).map_err(|e| Error::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_with(paths: super::super::PathsConfig, root: Option<&str>) -> Config {
        let mut cfg = Config::default();
        cfg.global.paths = paths;
        cfg.global.backup.root = root.map(PathBuf::from);
        cfg
    }

    #[test]
    fn root_defaults_follow_the_fhs() {
        let p = Paths::resolve_as(&Config::default(), &PathOverrides::default(), true);
        assert_eq!(p.state_dir, Path::new("/var/lib/homelab-autopilot"));
        assert_eq!(p.state_db, Path::new("/var/lib/homelab-autopilot/state.db"));
        assert_eq!(p.log_dir, Path::new("/var/log/homelab-autopilot"));
        assert_eq!(p.scripts_dir, Path::new("/etc/homelab-autopilot/scripts"));
        assert_eq!(p.lock_dir, Path::new("/run/lock/homelab-autopilot"));
        assert_eq!(
            p.backup_root,
            Path::new("/var/lib/homelab-autopilot/backups")
        );
    }

    #[test]
    fn user_defaults_live_in_the_state_dir() {
        let p = Paths::resolve_as(&Config::default(), &PathOverrides::default(), false);
        assert!(p.state_dir.ends_with("homelab-autopilot"));
        assert_eq!(p.log_dir, p.state_dir.join("logs"));
        assert_eq!(p.lock_dir, p.state_dir);
        assert!(p.scripts_dir.ends_with("homelab-autopilot/scripts"));
    }

    #[test]
    fn cli_state_dir_keeps_everything_inside_it() {
        let cli = PathOverrides {
            state_dir: Some("/tmp/t/state".into()),
            ..Default::default()
        };
        for root in [true, false] {
            let p = Paths::resolve_as(&Config::default(), &cli, root);
            assert_eq!(p.state_dir, Path::new("/tmp/t/state"));
            assert_eq!(p.log_dir, Path::new("/tmp/t/state/logs"));
            assert_eq!(p.lock_dir, Path::new("/tmp/t/state/locks"));
            assert_eq!(p.backup_root, Path::new("/tmp/t/state/backups"));
        }
    }

    #[test]
    fn cli_beats_config_beats_default() {
        let conf = super::super::PathsConfig {
            state_dir: Some("/srv/state".into()),
            log_dir: Some("/srv/logs".into()),
            scripts_dir: Some("/srv/scripts".into()),
            lock_dir: None,
            metrics_dir: Some("/var/lib/prometheus/node-exporter".into()),
        };
        let cfg = cfg_with(conf, Some("/mnt/backups"));
        let cli = PathOverrides {
            log_dir: Some("/cli/logs".into()),
            ..Default::default()
        };
        let p = Paths::resolve_as(&cfg, &cli, true);
        assert_eq!(p.state_dir, Path::new("/srv/state"));
        assert_eq!(p.log_dir, Path::new("/cli/logs"));
        assert_eq!(p.scripts_dir, Path::new("/srv/scripts"));
        assert_eq!(p.lock_dir, Path::new("/run/lock/homelab-autopilot"));
        assert_eq!(p.backup_root, Path::new("/mnt/backups"));
        assert_eq!(
            p.metrics_dir.as_deref(),
            Some(Path::new("/var/lib/prometheus/node-exporter"))
        );

        // A config log_dir wins over the "under --state-dir" rule.
        let cli = PathOverrides {
            state_dir: Some("/cli/state".into()),
            ..Default::default()
        };
        let p = Paths::resolve_as(&cfg, &cli, false);
        assert_eq!(p.log_dir, Path::new("/srv/logs"));
        assert_eq!(p.lock_dir, Path::new("/cli/state/locks"));
    }

    #[test]
    fn ensure_dirs_creates_a_private_state_dir() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let cli = PathOverrides {
            state_dir: Some(tmp.path().join("s")),
            ..Default::default()
        };
        let p = Paths::resolve(&Config::default(), &cli);
        p.ensure_dirs().unwrap();
        let mode = std::fs::metadata(&p.state_dir)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        assert!(p.log_dir.is_dir() && p.lock_dir.is_dir());
    }
}
