//! `daemon`: run the configured schedules until stopped
//! ([`crate::scheduler::daemon`]; docs/scheduling.md).

use super::Report;
use crate::app::Setup;
use crate::cli::{GlobalArgs, LogFormat};
use crate::error::{Error, Result};
use crate::scheduler::daemon::{self, Loaded, Options};
use serde_json::json;
use std::ffi::OsString;
use std::path::Path;

pub fn run(env: &Setup, global: &GlobalArgs) -> Result<Report> {
    // The file found now is the one every reload and every run reads.
    let mut env = env.clone();
    let config = crate::config::locate(env.config.as_deref())?;
    env.config = Some(absolute(&config)?);
    let run_argv = run_argv(&env, global)?;
    let _web = start_web(&env)?;
    let setup = env.clone();
    let load = Box::new(move || load(&setup));
    let exit = daemon::run(Options { load, run_argv })?;
    Ok(Report {
        json: json!({"stopped": true}),
        text: String::new(),
        exit,
    })
}

/// The status page, when `http.listen` is set: served for the daemon's
/// whole life from the configuration it started with (a reload changes
/// the schedules, not the page's address or credentials;
/// docs/status-page.md).
fn start_web(env: &Setup) -> Result<Option<crate::web::WebHandle>> {
    let cfg = env.load_config()?;
    if cfg.http.listen.is_none() {
        return Ok(None);
    }
    let paths = env.paths(&cfg);
    let web = super::serve::start(cfg, &paths, None)?;
    tracing::info!("serving the status page on http://{}/", web.local_addr());
    Ok(Some(web))
}

fn absolute(p: &Path) -> Result<std::path::PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

/// The configuration, checked scripts, the state DB and the jobs.
fn load(env: &Setup) -> Result<Loaded> {
    let cfg = env.load_config()?;
    let paths = env.paths(&cfg);
    super::scripts::check(env)?;
    paths.ensure_dirs()?;
    if crate::logging::files_wanted(&cfg.global.logging) {
        let rotation = crate::logging::Rotation::from_config(&cfg.global.logging);
        crate::logging::open_main_log(&paths.log_dir, rotation)?;
    }
    let store = env.open_store(&paths)?;
    let shipped: Vec<String> = crate::script::sources::shipped_workflow_names()
        .into_iter()
        .map(String::from)
        .collect();
    let (jobs, left) = crate::scheduler::jobs(&cfg, &shipped);
    for j in left {
        tracing::warn!(
            "{} is set, but this build has no '{}' workflow: not scheduled",
            j.key,
            j.workflow
        );
    }
    Ok(Loaded {
        cfg,
        store,
        jobs,
        lock_dir: paths.lock_dir,
    })
}

/// This program with the global options the daemon was given (paths made
/// absolute), for each run it starts.
fn run_argv(env: &Setup, g: &GlobalArgs) -> Result<Vec<OsString>> {
    let exe = std::env::current_exe().map_err(|e| Error::Other(format!("own program: {e}")))?;
    let mut argv: Vec<OsString> = vec![exe.into()];
    let mut path = |flag: &str, p: &Option<std::path::PathBuf>| -> Result<()> {
        if let Some(p) = p {
            argv.push(flag.into());
            argv.push(absolute(p)?.into());
        }
        Ok(())
    };
    path("--config", &env.config)?;
    path("--state-dir", &g.state_dir)?;
    path("--log-dir", &g.log_dir)?;
    path("--scripts-dir", &g.scripts_dir)?;
    path("--lock-dir", &g.lock_dir)?;
    for _ in 0..g.verbose {
        argv.push("-v".into());
    }
    if g.quiet {
        argv.push("-q".into());
    }
    if g.log_format == LogFormat::Json {
        argv.extend(["--log-format".into(), "json".into()]);
    }
    if g.insecure_permissions {
        argv.push("--insecure-permissions".into());
    }
    Ok(argv)
}
