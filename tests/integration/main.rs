//! Integration tests: the real binary in temp roots (one test binary,
//! compiled once).

mod harness;

mod backup;
mod config_errors;
mod crash;
mod docker;
mod docker_backup;
mod layers;
mod metrics;
mod monitor;
mod notify;
mod output;
mod packaging;
mod pve;
mod restore_safety;
mod runs;
mod script_limits;
mod scripts;
mod secrets;
mod skips;
mod web;
