//! One file per subcommand. Each returns a [`Report`]: a JSON document for
//! `--json` and text for people; `lib::run` prints it and maps errors to exit
//! codes.

pub mod backups;
pub mod config_cmd;
pub mod daemon;
pub mod drill;
pub mod notify_cmd;
pub mod restore;
pub mod run;
pub mod schedule_cmd;
pub mod scripts;
pub mod serve;
pub mod status;

use crate::app::Setup;
use crate::cli::{Cli, Command, GlobalArgs, LogFormat, ServicesCommand, WorkflowsCommand};
use crate::config::PathOverrides;
use crate::error::{Error, Result};
use crate::logging::LogOptions;
use crate::{redact, JSON_SCHEMA_VERSION};
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

/// The application's set-up from the global options.
pub fn setup(args: &GlobalArgs) -> Setup {
    Setup {
        config: args.config.clone(),
        overrides: PathOverrides {
            state_dir: args.state_dir.clone(),
            log_dir: args.log_dir.clone(),
            scripts_dir: args.scripts_dir.clone(),
            lock_dir: args.lock_dir.clone(),
        },
        insecure_permissions: args.insecure_permissions,
    }
}

/// The logging options from the global options.
pub fn log_options(args: &GlobalArgs) -> LogOptions {
    LogOptions {
        verbose: args.verbose,
        quiet: args.quiet,
        json: args.log_format == LogFormat::Json,
    }
}

/// Run a parsed command line: set up logging, dispatch, print the report
/// (text, or one JSON document with `--json`) or the error; returns the
/// process exit code.
pub fn main(cli: Cli) -> u8 {
    crate::logging::init(&log_options(&cli.global));
    tracing::trace!("started");
    let json = cli.global.json;
    crate::progress::enable(
        !json
            && !cli.global.quiet
            && std::io::IsTerminal::is_terminal(&std::io::stderr())
            && !crate::logging::stderr_is_journal(),
    );
    let quiet = cli.global.quiet && !json;
    match dispatch(&cli) {
        // `-q`: an action that succeeded prints nothing, so cron mails only
        // when something needs a human; one that did not prints its report
        // on stderr. Commands whose output is the answer (lists, status,
        // show) print it as usual.
        Ok(report) if quiet && is_action(&cli.command) => {
            if report.exit != 0 {
                eprint!("{}", redact::scrub(&report.text));
            }
            report.exit
        }
        Ok(report) => {
            if json {
                let mut doc =
                    json!({"schema_version": JSON_SCHEMA_VERSION, "ok": report.exit == 0});
                if let (serde_json::Value::Object(d), serde_json::Value::Object(r)) =
                    (&mut doc, report.json)
                {
                    d.extend(r);
                }
                redact::scrub_json(&mut doc);
                let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
                print_stdout(&format!("{text}\n"));
            } else {
                print_stdout(&redact::scrub(&report.text));
            }
            report.exit
        }
        Err(e) => {
            let msg = redact::scrub(&e.to_string()).into_owned();
            if let Error::Config(lines) = &e {
                for l in lines {
                    eprintln!("{}", redact::scrub(l));
                }
                eprintln!("error: {} configuration error(s)", lines.len());
            } else {
                eprintln!("error: {msg}");
            }
            if json {
                let doc = json!({
                    "schema_version": JSON_SCHEMA_VERSION,
                    "ok": false,
                    "error": {"kind": e.kind(), "message": msg, "exit_code": e.exit_code()},
                });
                let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
                print_stdout(&format!("{text}\n"));
            }
            e.exit_code()
        }
    }
}

/// Write to stdout; a reader that went away (`| head -c1`) ends the output
/// quietly instead of a panic, as for `cat`.
fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: writing to stdout: {e}");
        }
    }
}

/// Commands run for their effect, whose report `-q` leaves out on success.
fn is_action(cmd: &Command) -> bool {
    use crate::cli::{BackupsCommand, ConfigCommand, ScriptsCommand};
    match cmd {
        Command::Run(_)
        | Command::Restore(_)
        | Command::Notify(_)
        | Command::Serve { .. }
        | Command::DrDrill(_) => true,
        Command::Backups(b) => !matches!(b, BackupsCommand::List { .. }),
        Command::Config(c) => matches!(c, ConfigCommand::Validate),
        Command::Scripts(s) => matches!(s, ScriptsCommand::Export { .. } | ScriptsCommand::Check),
        Command::Man { dir } => dir.is_some(),
        // The daemon runs until stopped; its report is how it ended.
        Command::Daemon => true,
        Command::Workflows(_)
        | Command::Services(_)
        | Command::Status
        | Command::Schedule(_)
        | Command::Completions { .. } => false,
    }
}

pub fn dispatch(cli: &Cli) -> Result<Report> {
    let env = setup(&cli.global);
    let env = &env;
    match &cli.command {
        Command::Run(a) => run::run(env, a),
        Command::Workflows(WorkflowsCommand::List) => scripts::workflows_list(env),
        Command::Services(ServicesCommand::List) => services_list(env),
        Command::Config(c) => config_cmd::run(env, c),
        Command::Scripts(c) => scripts::run(env, c),
        Command::Backups(c) => backups::run(env, c),
        Command::Restore(a) => restore::run(env, a),
        Command::DrDrill(a) => drill::run(env, a),
        Command::Status => status::run(env),
        Command::Serve { listen } => serve::run(env, listen.as_deref()),
        Command::Notify(c) => notify_cmd::run(env, c),
        Command::Completions { shell } => {
            let script = crate::cli::completions(*shell);
            Ok(Report::ok(json!({"completions": script}), script))
        }
        Command::Man { dir: None } => {
            let page = crate::cli::man_page().map_err(|e| Error::Io {
                path: "<stdout>".into(),
                source: e,
            })?;
            Ok(Report::ok(json!({"man": page}), page))
        }
        Command::Man { dir: Some(dir) } => {
            let written = crate::cli::write_man_pages(dir).map_err(|e| Error::io(dir, e))?;
            let text: String = written
                .iter()
                .map(|p| format!("{}\n", p.display()))
                .collect();
            Ok(Report::ok(json!({"written": written}), text))
        }
        Command::Daemon => daemon::run(env, &cli.global),
        Command::Schedule(a) => schedule_cmd::run(env, &cli.global, a),
    }
}

fn services_list(env: &Setup) -> Result<Report> {
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
