//! `workflows list`, `scripts list | export DIR | check`.

use super::Report;
use crate::app::session::build_engine;
use crate::app::Setup;
use crate::cli::ScriptsCommand;
use crate::config::Paths;
use crate::error::{Error, Result};
use crate::script::sources::{shipped_scripts, shipped_stdlib, ScriptSource};
use crate::script::workflow::compile;
use crate::script::{Engine, Host, Program, Scripts};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

/// The scripts dir and service names, from the configuration.
fn scripts_for(env: &Setup) -> Result<(Scripts, Vec<String>, Engine)> {
    let cfg = Arc::new(env.load_config()?);
    let paths: Paths = env.paths(&cfg);
    let names = cfg.services.iter().map(|s| s.name.clone()).collect();
    // Compilation only: nothing runs, but every primitive module must resolve
    // (strict variables). A dry-run host with no state writes nothing.
    let host = Arc::new(Host::new(cfg, paths.clone(), None, true, None, "check"));
    Ok((Scripts::new(paths.scripts_dir), names, build_engine(&host)))
}

pub fn workflows_list(env: &Setup) -> Result<Report> {
    let (scripts, _, _) = scripts_for(env)?;
    let mut rows = Vec::new();
    let mut text = String::new();
    for name in scripts.workflow_names() {
        let layers: Vec<String> = scripts
            .workflow_layers(&name)?
            .into_iter()
            .map(|l| l.label)
            .collect();
        text.push_str(&format!("{name:<20} {}\n", layers.join(" + ")));
        rows.push(json!({"name": name, "sources": layers}));
    }
    Ok(Report::ok(json!({"workflows": rows}), text))
}

pub fn run(env: &Setup, cmd: &ScriptsCommand) -> Result<Report> {
    match cmd {
        ScriptsCommand::List => list(env),
        ScriptsCommand::Export { dir, force } => export(dir, *force),
        ScriptsCommand::Check => check(env),
    }
}

fn list(env: &Setup) -> Result<Report> {
    let (scripts, services, engine) = scripts_for(env)?;
    let mut text = format!("user scripts directory: {}\n", scripts.user_dir.display());
    let mut workflows = Vec::new();
    for name in scripts.workflow_names() {
        let program = Program::load(&engine, &scripts, &name, &services)?;
        text.push_str(&format!("\nworkflow {name}\n"));
        let mut steps = Vec::new();
        // Closures compile to functions named `anon$…`: not steps anyone
        // can override by name.
        let named = |f: &String| !f.starts_with("anon$");
        for (f, src) in program.base_origins.iter().filter(|(f, _)| named(f)) {
            text.push_str(&format!("  {f:<28} {src}\n"));
            steps.push(json!({"function": f, "source": src}));
        }
        let mut overrides = Vec::new();
        for (svc, fns) in &program.service_origins {
            // A service file's function matters to this workflow only when
            // the workflow has a step of that name.
            let steps_here = fns
                .iter()
                .filter(|(f, _)| named(f) && program.base_origins.iter().any(|(b, _)| b == *f));
            for (f, src) in steps_here {
                text.push_str(&format!("  {f:<28} {src}  (service {svc} only)\n"));
                overrides.push(json!({"service": svc, "function": f, "source": src}));
            }
        }
        workflows.push(json!({"name": name, "steps": steps, "service_overrides": overrides}));
    }
    text.push_str("\nlibrary modules\n");
    let mut libs = Vec::new();
    for name in scripts.lib_names() {
        let src = scripts
            .lib_module(&name)?
            .map(|s| s.label)
            .unwrap_or_default();
        text.push_str(&format!("  {name:<28} {src}\n"));
        libs.push(json!({"name": name, "source": src}));
    }
    let orphans: Vec<String> = scripts
        .service_overrides()
        .into_iter()
        .filter(|s| !services.contains(s))
        .collect();
    for o in &orphans {
        text.push_str(&format!(
            "\nwarning: services/{o}.rhai matches no configured service\n"
        ));
    }
    Ok(Report::ok(
        json!({"scripts_dir": scripts.user_dir, "workflows": workflows, "modules": libs, "orphan_overrides": orphans}),
        text,
    ))
}

fn export(dir: &Path, force: bool) -> Result<Report> {
    let mut written = Vec::new();
    let files = shipped_scripts()
        .iter()
        .map(|(n, c)| (dir.join(n), *c))
        .chain(
            shipped_stdlib()
                .iter()
                .map(|(n, c)| (dir.join("lib").join(n), *c)),
        );
    let files: Vec<_> = files.collect();
    if !force {
        if let Some((p, _)) = files.iter().find(|(p, _)| p.exists()) {
            return Err(Error::Usage(format!(
                "{} exists; use --force to overwrite",
                p.display()
            )));
        }
    }
    for (path, code) in files {
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        crate::files::write_atomic(&path, code.as_bytes(), 0o644)?;
        written.push(path.display().to_string());
    }
    let text = format!(
        "exported {} file(s) to {}\nEdit them there, or copy single steps into your scripts directory (services/<name>.rhai for one service).\n",
        written.len(),
        dir.display()
    );
    Ok(Report::ok(json!({"written": written}), text))
}

/// `scripts check`; also what the daemon runs at start and on SIGHUP.
pub(crate) fn check(env: &Setup) -> Result<Report> {
    let (scripts, services, engine) = scripts_for(env)?;
    let mut errors = Vec::new();
    let mut checked = Vec::new();
    let mut check_one = |src: ScriptSource| {
        checked.push(src.label.clone());
        if let Err(Error::Config(mut e)) = compile(&engine, &src) {
            errors.append(&mut e);
        }
    };
    for name in scripts.workflow_names() {
        scripts
            .workflow_layers(&name)?
            .into_iter()
            .for_each(&mut check_one);
    }
    for name in scripts.lib_names() {
        if let Some(src) = scripts.lib_module(&name)? {
            check_one(src);
        }
    }
    for svc in scripts.service_overrides() {
        if let Some(src) = scripts.service_override(&svc)? {
            check_one(src);
        }
    }
    // Imports resolve at run time; make sure every module a workflow names exists.
    for name in scripts.workflow_names() {
        if let Err(Error::Config(mut e)) = Program::load(&engine, &scripts, &name, &services) {
            errors.append(&mut e);
        }
    }
    errors.sort();
    errors.dedup();
    if !errors.is_empty() {
        return Err(Error::Config(errors));
    }
    let text = format!("{} script file(s) compiled without errors\n", checked.len());
    Ok(Report::ok(json!({"checked": checked, "errors": []}), text))
}
