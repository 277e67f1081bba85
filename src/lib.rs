//! Homelab Autopilot: backups, updates with rollback, monitoring,
//! notifications and restore tests for a homelab, driven by one YAML file.
//!
//! The Rust core exposes typed primitives (archive, proc, fs, state, catalog,
//! dest, notify, ...) to Rhai; the default workflows ship as editable scripts
//! (`scripts/`) over a Rhai library (`stdlib/`), both embedded in the binary
//! and overridable from the user scripts directory.

pub mod app;
pub mod archive;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod docker;
pub mod error;
pub mod files;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod primitives;
pub mod proc;
pub mod progress;
pub mod pve;
pub mod redact;
pub mod restoretest;
pub mod retention;
pub mod schedule;
pub mod scheduler;
pub mod script;
pub mod signals;
pub mod state;
pub mod system;
pub mod units;
pub mod update;
pub mod web;

pub use error::{Error, Result};

/// The `--json` document's schema version.
pub const JSON_SCHEMA_VERSION: u32 = 1;
