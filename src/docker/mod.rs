//! Containers and units around backups and restores: the Docker engine
//! client (shared with the monitor's container checks), what a `docker` /
//! `docker_compose` service backs up ([`capture`]), stopping or pausing
//! what a service runs around its archive with a record in the state DB
//! so a killed run's containers are started again ([`hold`]), `systemd`
//! units ([`units`]), and putting named volumes back from an archive
//! ([`restore`]); for updates, images ([`image`]: pull, digests, tags),
//! Compose projects ([`compose`]) and recreating a container on a new
//! image ([`recreate`]). docs/docker.md and docs/updates.md describe the
//! behaviour.

pub mod capture;
pub mod compose;
pub mod engine;
pub mod hold;
pub mod image;
pub mod isolate;
pub mod recreate;
pub mod restore;
pub mod units;
