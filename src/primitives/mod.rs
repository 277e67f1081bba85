//! Typed Rust primitives, one file per domain, each registered into Rhai as a
//! static namespaced module (`archive::create`, `proc::run`, ...). A script
//! function cannot shadow a namespaced native by accident.
//!
//! Every mutating primitive honours `--dry-run`: it logs exactly what it
//! would do and does nothing, so user scripts get dry-run for free.

mod archive;
mod catalog;
mod config_rhai;
mod dest;
mod docker;
mod fs;
mod glue;
mod http;
mod kv;
mod log;
mod monitor;
mod net;
mod notify;
mod pbs;
mod proc;
mod pve;
mod restoretest;
mod sys;
mod time;
mod update;
mod workflow;
pub use glue::register_all;
pub(crate) use glue::*;
