//! One file per subcommand. Each returns a [`Report`]: a JSON document for
//! `--json` and text for people; `lib::run` prints it and maps errors to exit
//! codes.

pub mod backups;
pub mod config_cmd;
pub mod notify_cmd;
pub mod restore;
pub mod run;
pub mod scripts;
pub mod status;

use crate::cli::{Cli, Command, GlobalArgs, ServicesCommand, WorkflowsCommand};
use crate::config::{self, Config, LoadOptions, PathOverrides, Paths};
use crate::error::Result;
use crate::state::Store;
use serde_json::json;

/// What a command produced.
pub struct Report {
    pub json: serde_json::Value,
    pub text: String,
    pub exit: u8,
}

impl Report {
    pub fn ok(json: serde_json::Value, text: impl Into<String>) -> Report {
        Report {
            json,
            text: text.into(),
            exit: 0,
        }
    }
}

/// Shared set-up: configuration, paths, state.
pub struct Env<'a> {
    pub args: &'a GlobalArgs,
}

impl Env<'_> {
    pub fn load_config(&self) -> Result<Config> {
        let path = config::locate(self.args.config.as_deref())?;
        config::load(
            &path,
            &LoadOptions {
                insecure_permissions: self.args.insecure_permissions,
            },
        )
    }

    pub fn overrides(&self) -> PathOverrides {
        PathOverrides {
            state_dir: self.args.state_dir.clone(),
            log_dir: self.args.log_dir.clone(),
            scripts_dir: self.args.scripts_dir.clone(),
            lock_dir: self.args.lock_dir.clone(),
        }
    }

    pub fn paths(&self, cfg: &Config) -> Paths {
        Paths::resolve(cfg, &self.overrides())
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

pub fn dispatch(cli: &Cli) -> Result<Report> {
    let env = Env { args: &cli.global };
    match &cli.command {
        Command::Run(a) => run::run(&env, a),
        Command::Workflows(WorkflowsCommand::List) => scripts::workflows_list(&env),
        Command::Services(ServicesCommand::List) => services_list(&env),
        Command::Config(c) => config_cmd::run(&env, c),
        Command::Scripts(c) => scripts::run(&env, c),
        Command::Backups(c) => backups::run(&env, c),
        Command::Restore(a) => restore::run(&env, a),
        Command::Status => status::run(&env),
        Command::Notify(c) => notify_cmd::run(&env, c),
    }
}

fn services_list(env: &Env) -> Result<Report> {
    let cfg = env.load_config()?;
    let mut text = format!(
        "{:<24} {:<15} {:<8} {:<7}\n",
        "NAME", "TYPE", "ENABLED", "BACKUP"
    );
    let mut rows = Vec::new();
    for s in &cfg.services {
        text.push_str(&format!(
            "{:<24} {:<15} {:<8} {:<7}\n",
            s.name,
            s.service_type.as_str(),
            s.enabled,
            s.backup
        ));
        rows.push(json!({"name": s.name, "type": s.service_type.as_str(), "enabled": s.enabled, "backup": s.backup}));
    }
    Ok(Report::ok(json!({"services": rows}), text))
}

/// Resolve `ID|PATH` for commands that take either.
pub enum Target {
    Id(i64),
    Path(std::path::PathBuf),
}

pub fn parse_target(s: &str) -> Target {
    match s.parse::<i64>() {
        Ok(id) if !std::path::Path::new(s).exists() => Target::Id(id),
        _ => Target::Path(s.into()),
    }
}
