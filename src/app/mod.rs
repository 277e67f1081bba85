//! The application layer: what every command shares (where the
//! configuration is, which paths it resolves to, the state store) and the
//! run session ([`session`]) that owns one workflow run from lock to report.
//!
//! Commands (`src/commands/`) turn parsed arguments into a [`Setup`] and a
//! request, call in here, and print what comes back; nothing here knows the
//! command line. Layers and the imports each may make: docs/architecture.md.

pub mod session;

pub use session::{RunReport, RunRequest};

use crate::config::{self, Config, LoadOptions, PathOverrides, Paths};
use crate::error::Result;
use crate::state::Store;
use std::path::PathBuf;

/// Where the configuration and the run's files are, as the user chose them
/// (`--config`, `--state-dir`, ...); the defaults apply to what is unset.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// `--config`; otherwise the search order of [`config::locate`].
    pub config: Option<PathBuf>,
    /// Directories given on the command line, over the configured ones.
    pub overrides: PathOverrides,
    /// Accept config and secret files readable by group or others.
    pub insecure_permissions: bool,
}

impl Setup {
    /// Locate, load and validate the configuration.
    pub fn load_config(&self) -> Result<Config> {
        let path = config::locate(self.config.as_deref())?;
        config::load(
            &path,
            &LoadOptions {
                insecure_permissions: self.insecure_permissions,
            },
        )
    }

    /// The resolved paths of a loaded configuration.
    pub fn paths(&self, cfg: &Config) -> Paths {
        Paths::resolve(cfg, &self.overrides)
    }

    /// Open (creating) the state store.
    pub fn open_store(&self, paths: &Paths) -> Result<Store> {
        paths.ensure_dirs()?;
        Store::open(&paths.state_db)
    }

    /// Open the state store only if it exists (read paths never create it).
    pub fn existing_store(&self, paths: &Paths) -> Result<Option<Store>> {
        if paths.state_db.exists() {
            Store::open(&paths.state_db).map(Some)
        } else {
            Ok(None)
        }
    }
}
