//! The command line: the only file that knows clap.

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "homelab-autopilot",
    version,
    about = "Backups, updates with rollback, monitoring and restore tests for a homelab",
    long_about = "Runs a homelab's chores from one YAML file. Workflows are Rhai scripts \
                  (shipped defaults, overridable from the user scripts directory)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Configuration file (default: $HOMELAB_AUTOPILOT_CONFIG, the user config dir, /etc)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// State directory (state.db; also logs and locks unless set elsewhere)
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log directory
    #[arg(long, global = true, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// User scripts directory (overrides of the shipped workflows)
    #[arg(long, global = true, value_name = "DIR")]
    pub scripts_dir: Option<PathBuf>,
    /// Lock directory
    #[arg(long, global = true, value_name = "DIR")]
    pub lock_dir: Option<PathBuf>,
    /// More output (-v: debug, -vv: trace)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print one JSON document on stdout
    #[arg(long, global = true)]
    pub json: bool,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Accept secret and config files readable by group or others
    #[arg(long, global = true)]
    pub insecure_permissions: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workflow (backup, or any shipped or user-written workflow)
    Run(RunArgs),
    /// Workflows
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Configured services
    #[command(subcommand)]
    Services(ServicesCommand),
    /// Validate or show the configuration
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect, export and check the Rhai scripts
    #[command(subcommand)]
    Scripts(ScriptsCommand),
    /// The backup catalog
    #[command(subcommand)]
    Backups(BackupsCommand),
    /// Restore a backup (catalog ID or archive path) into a new directory
    Restore(RestoreArgs),
    /// Disaster-recovery drill: restore every service of PLAN in dependency
    /// order into isolated copies, check them and what they depend on, pause
    /// at the plan's manual steps, clean up and write a report
    DrDrill(DrillArgs),
    /// Last runs, last backups, catalog health, monitored service states
    Status,
    /// Serve the read-only status page, its JSON API and /metrics in the
    /// foreground (http.listen, or --listen) until SIGINT / SIGTERM
    Serve {
        /// ADDRESS:PORT or a port (127.0.0.1) instead of http.listen
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Notification channels
    #[command(subcommand)]
    Notify(NotifyCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command into DIR
    Man {
        /// Write homelab-autopilot.1 and homelab-autopilot-<command>.1 here
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Run the configured schedules until stopped (SIGHUP reloads, SIGTERM
    /// stops after the running workflows finish)
    Daemon,
    /// The next run of every scheduled workflow, or the schedules as
    /// systemd timers or crontab lines
    Schedule(ScheduleArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    #[command(subcommand)]
    pub command: Option<ScheduleCommand>,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// The next run of every scheduled workflow (the default)
    List,
    /// Write the schedules as per-workflow systemd timers or crontab lines
    Print {
        /// A .service and a .timer per workflow
        #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
        systemd: bool,
        /// /etc/cron.d lines
        #[arg(long)]
        cron: bool,
        /// With --systemd: write the unit files into DIR instead of stdout
        #[arg(long, value_name = "DIR", requires = "systemd")]
        dir: Option<PathBuf>,
        /// The program the units and lines run
        #[arg(
            long,
            value_name = "PATH",
            default_value = "/usr/local/bin/homelab-autopilot"
        )]
        program: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send a test notification to one channel, or to every enabled channel,
    /// and report each channel's result (exit 1 if one failed)
    Test {
        /// Channel name (default: every enabled event channel)
        channel: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Workflow name: a shipped one (listed below) or <name>.rhai in the
    /// user scripts directory (see `workflows list`)
    pub workflow: String,
    /// Limit the run to these services (repeatable)
    #[arg(long = "service", value_name = "NAME")]
    pub services: Vec<String>,
    /// restore-test: test this backup (catalog ID, see `backups list`)
    /// instead of the latest verified one
    #[arg(long = "backup", value_name = "ID")]
    pub backup: Option<i64>,
    /// Log exactly what would be done, and do nothing
    #[arg(long)]
    pub dry_run: bool,
    /// update: only finish what a killed run left unfinished (roll back or
    /// validate again); update nothing else
    #[arg(long)]
    pub recover: bool,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// List the workflows and where each comes from
    List,
}

#[derive(Debug, Subcommand)]
pub enum ServicesCommand {
    /// List the configured services
    List,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the configuration; every error at once (exit 78)
    Validate,
    /// Print the effective configuration, defaults filled in, secrets redacted
    Show,
}

#[derive(Debug, Subcommand)]
pub enum ScriptsCommand {
    /// Which file each workflow, step and library module comes from
    List,
    /// Copy the shipped scripts and library out for editing
    Export {
        dir: PathBuf,
        /// Overwrite files that already exist
        #[arg(long)]
        force: bool,
    },
    /// Compile every script (shipped and user) and report errors
    Check,
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// List catalogued backups
    List {
        #[arg(long = "service", value_name = "NAME")]
        service: Option<String>,
    },
    /// Fully verify backups (decode + checksum): by service, catalog ID or archive path
    Verify {
        #[arg(long = "service", value_name = "NAME", conflicts_with = "target")]
        service: Option<String>,
        /// Catalog ID or archive path
        target: Option<String>,
    },
    /// Rebuild the catalog from a backup root (after losing the state DB)
    Import { dir: PathBuf },
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The drill plan (YAML; docs/restore-testing.md)
    pub plan: PathBuf,
    /// Do not stop at the manual verification steps (needed without a
    /// terminal)
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Catalog ID or archive path
    pub target: String,
    /// Directory to restore into (must not exist, or be empty)
    #[arg(long, value_name = "DIR", required_unless_present = "volumes")]
    pub to: Option<PathBuf>,
    /// Put the Docker volumes the backup captured back under their names
    /// (created when missing; the containers using one are stopped while
    /// it is written)
    #[arg(long)]
    pub volumes: bool,
    /// With --volumes: replace the contents of volumes that exist
    #[arg(long, requires = "volumes")]
    pub force: bool,
    /// Refuse archives that would expand past this many bytes
    #[arg(long, value_name = "BYTES")]
    pub max_bytes: Option<u64>,
    /// Keep symlinks whose target is absolute (common in /etc); they are
    /// never followed while restoring
    #[arg(long)]
    pub allow_absolute_symlinks: bool,
    /// Only print what would be restored
    #[arg(long)]
    pub dry_run: bool,
}

/// Parse the process's command line (exits with usage on an error, as
/// `Cli::parse` does). `run --help` lists the shipped workflows, read from
/// the embedded scripts so the list is never out of date.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// The whole command line as clap describes it (for parsing, completions
/// and manual pages alike).
fn command() -> clap::Command {
    let shipped = crate::script::sources::shipped_workflow_names();
    Cli::command().mut_subcommand("run", |c| {
        c.after_help(format!(
            "Shipped workflows: {}.\nUser workflows: <scripts dir>/<name>.rhai; `workflows list` shows them all.",
            shipped.join(", ")
        ))
    })
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut cmd = command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "homelab-autopilot", &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    if shell == clap_complete::Shell::Bash {
        // clap_complete's bash generator spells the state of a subcommand
        // of a hyphenated binary two ways: the loop that reads the words
        // writes `homelab__autopilot__subcmd__run`, the arms that answer
        // are labelled `homelab__subcmd__autopilot__subcmd__run`, so
        // nothing past the first word completes
        // (https://github.com/clap-rs/clap/issues/6421). Label the arms as
        // the loop spells them.
        return script.replace("homelab__subcmd__autopilot", "homelab__autopilot");
    }
    script
}

/// The main manual page, in roff.
pub fn man_page() -> std::io::Result<String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command()).render(&mut out)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Write `homelab-autopilot.1` and one page per subcommand
/// (`homelab-autopilot-run.1`, ...) into `dir`; returns the files written.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = command();
    cmd.build();
    let mut written = Vec::new();
    write_page(&cmd, dir, &mut written)?;
    Ok(written)
}

fn write_page(
    cmd: &clap::Command,
    dir: &std::path::Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    // After `build`, a subcommand's display name is `homelab-autopilot-run`.
    let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    let path = dir.join(format!("{name}.1"));
    crate::files::write_atomic(&path, &out, 0o644).map_err(std::io::Error::other)?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() != "help" {
            write_page(sub, dir, written)?;
        }
    }
    Ok(())
}
