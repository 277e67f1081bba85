//! Integration tests: the real binary in temp roots (one test binary,
//! compiled once).

mod harness;

mod backup;
mod backup_keys;
mod caddy;
mod config_errors;
mod crash;
mod daemon;
mod docker;
mod docker_backup;
mod layers;
mod metrics;
mod monitor;
mod notify;
mod notify_services;
mod output;
mod packaging;
mod pve;
mod restore_safety;
mod restore_test;
mod runs;
mod script_limits;
mod scripts;
mod secrets;
mod skips;
mod update;
mod web;
