//! Containers and units around backups and restores: the Docker engine
//! client (shared with the monitor's container checks), what a `docker` /
//! `docker_compose` service backs up ([`capture`]), stopping or pausing
//! what a service runs around its archive with a record in the state DB
//! so a killed run's containers are started again ([`hold`]), `systemd`
//! units ([`units`]), and putting named volumes back from an archive
//! ([`restore`]). docs/docker.md describes the behaviour.

pub mod capture;
pub mod engine;
pub mod hold;
pub mod isolate;
pub mod restore;
pub mod units;
