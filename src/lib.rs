//! Homelab Autopilot: backups, updates with rollback, monitoring,
//! notifications and restore tests for a homelab, driven by one YAML file.
//!
//! The Rust core exposes typed primitives (archive, proc, fs, state, catalog,
//! dest, notify, ...) to Rhai; the default workflows ship as editable scripts
//! (`scripts/`) over a Rhai library (`stdlib/`), both embedded in the binary
//! and overridable from the user scripts directory.

pub mod archive;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod error;
pub mod files;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod primitives;
pub mod proc;
pub mod pve;
pub mod redact;
pub mod retention;
pub mod schedule;
pub mod script;
pub mod state;
pub mod system;
pub mod units;

pub use error::{Error, Result};

/// The `--json` document's schema version.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Run a parsed command line; returns the process exit code.
pub fn run(cli: cli::Cli) -> u8 {
    logging::init(&cli.global);
    tracing::trace!("started");
    let json = cli.global.json;
    match commands::dispatch(&cli) {
        Ok(report) => {
            if json {
                let mut doc = serde_json::json!({"schema_version": JSON_SCHEMA_VERSION, "ok": report.exit == 0});
                if let (serde_json::Value::Object(d), serde_json::Value::Object(r)) =
                    (&mut doc, report.json)
                {
                    d.extend(r);
                }
                redact::scrub_json(&mut doc);
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", redact::scrub(&report.text));
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
                let doc = serde_json::json!({
                    "schema_version": JSON_SCHEMA_VERSION,
                    "ok": false,
                    "error": {"kind": e.kind(), "message": msg, "exit_code": e.exit_code()},
                });
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            }
            e.exit_code()
        }
    }
}
