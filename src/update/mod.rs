//! Updates as transactions: what a service runs is recorded before
//! anything changes ([`snapshot`], stored by the caller as an open row of
//! the state DB's `updates` table), the update is applied ([`apply`]) and
//! validated ([`validate::validate`]), and on failure undone from the
//! record ([`rollback`]) and validated again. An update ends in one
//! [`Outcome`]. A row left open by a dead process is finished by the next
//! run from the same record (docs/updates.md).
//!
//! Kinds: `docker_compose` (pull, `up -d`; rollback points the project's
//! image references back at the image IDs that ran before and runs `up -d`
//! again, the compose file untouched), `docker` (pull, recreate the
//! container with the same configuration; rollback puts the old container
//! back), `command` (the admin's `update.command`, `update.rollback_command`),
//! `guest` (a Proxmox `vm` or `lxc`: snapshot, the package manager's
//! upgrade inside, rollback to the snapshot; see [`guest`]), `caddy` (a
//! new config file, made by `update.command` when set, loaded through
//! Caddy's admin API; see [`caddy`]). An
//! `nginx_proxy_manager` service is a `docker_compose` one.

pub mod caddy;
pub mod guest;
pub mod registry;
pub mod validate;

use crate::config::{Config, ServiceConfig, ServiceType};
use crate::docker::{compose, image, recreate};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How one service's update ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new version runs and passed its checks.
    Updated,
    UpToDate,
    /// Not attempted (unhealthy before, a failed dependency, not supported).
    Skipped,
    /// The new version failed; the old one runs again and passed its checks.
    RolledBack,
    /// Failed before anything changed (the pull, a pre-update check).
    Aborted,
    /// The new version failed and so did the way back: the admin must act.
    RollbackFailed,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Outcome::Updated,
        Outcome::UpToDate,
        Outcome::Skipped,
        Outcome::RolledBack,
        Outcome::Aborted,
        Outcome::RollbackFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Updated => "updated",
            Outcome::UpToDate => "up_to_date",
            Outcome::Skipped => "skipped",
            Outcome::RolledBack => "rolled_back",
            Outcome::Aborted => "aborted",
            Outcome::RollbackFailed => "rollback_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether the run fails (exit 1) when a service ends so.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::RolledBack | Outcome::Aborted | Outcome::RollbackFailed
        )
    }
}

/// What ran before an update: the transaction's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Before {
    DockerCompose {
        project: String,
        compose_file: String,
        /// The compose file's sha256: it is never edited, and a rollback
        /// says so when someone else changed it meanwhile.
        compose_sha256: String,
        containers: Vec<compose::ProjectContainer>,
        /// `update.backup_volumes`: the catalog ID of the backup of the
        /// project's volumes taken before the update, restored on rollback
        /// (absent in records written before the key existed).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        volume_backup: Option<i64>,
    },
    Docker {
        container: String,
        container_id: String,
        /// The image reference the container was created from.
        image: String,
        image_id: String,
    },
    Command {},
    /// A Proxmox guest: where it is, how its packages are upgraded, and
    /// the snapshot taken before (named here before it exists).
    Guest {
        node: String,
        /// `qemu` or `lxc`.
        guest: String,
        vmid: u32,
        package_manager: String,
        snapshot: Option<String>,
        /// The packages the upgrade was to change, with their versions
        /// before and the new ones (from the check).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        packages: Vec<crate::pve::guest::PackageChange>,
    },
    /// A Caddy config update (see [`caddy::Record`]).
    Caddy(caddy::Record),
}

impl Before {
    pub fn kind(&self) -> &'static str {
        match self {
            Before::DockerCompose { .. } => "docker_compose",
            Before::Docker { .. } => "docker",
            Before::Command {} => "command",
            Before::Guest { .. } => "guest",
            Before::Caddy(_) => "caddy",
        }
    }
}

/// How a service is updated, or why it cannot be.
pub fn kind_of(cfg: &Config, svc: &ServiceConfig) -> std::result::Result<&'static str, String> {
    let command = svc.update.as_ref().is_some_and(|u| !u.command.is_empty());
    match svc.service_type {
        // Caddy's update.command makes the new config, inside its update.
        ServiceType::Caddy => Ok("caddy"),
        _ if command => Ok("command"),
        ServiceType::DockerCompose | ServiceType::NginxProxyManager => Ok("docker_compose"),
        ServiceType::Docker => Ok("docker"),
        ServiceType::Generic | ServiceType::Systemd | ServiceType::Host => Err(format!(
            "type {} has no update of its own: set update.command",
            svc.service_type.as_str()
        )),
        ServiceType::Vm | ServiceType::Lxc => guest::support(cfg, svc)
            .map(|()| "guest")
            .map_err(|why| format!("type {}: {why}", svc.service_type.as_str())),
    }
}

/// Why the service must not be updated right now, or None: a backup run
/// holds the `backup` workflow lock (it may be stopping, pausing or
/// archiving this very service), or, for a Proxmox guest, the guest holds
/// a lock of its own (a backup, a snapshot, a migration).
pub fn busy(
    cfg: &Config,
    svc: &ServiceConfig,
    lock_dir: &std::path::Path,
) -> Result<Option<String>> {
    if let Some(holder) = crate::lock::holder_of(lock_dir, "backup")? {
        return Ok(Some(format!("a backup run holds its lock ({holder})")));
    }
    if kind_of(cfg, svc) == Ok("guest") {
        return guest::locked(cfg, svc);
    }
    Ok(None)
}

fn compose_of(svc: &ServiceConfig) -> Result<(std::path::PathBuf, String)> {
    let file = svc
        .compose_file
        .clone()
        .ok_or_else(|| Error::Usage(format!("{}: no compose_file", svc.name)))?;
    let project = crate::monitor::compose_project(svc)
        .ok_or_else(|| Error::Usage(format!("{}: no compose project name", svc.name)))?;
    Ok((file, project))
}

fn sha256_file(p: &std::path::Path) -> Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&bytes)))
}

/// Record what the service runs now (`state_dir`: where a `caddy`
/// update keeps its saved configs).
pub fn snapshot(cfg: &Config, svc: &ServiceConfig, state_dir: &std::path::Path) -> Result<Before> {
    match kind_of(cfg, svc).map_err(Error::Usage)? {
        "guest" => guest::snapshot(cfg, svc),
        "caddy" => caddy::snapshot(svc, state_dir).map(Before::Caddy),
        "docker_compose" => {
            let (file, project) = compose_of(svc)?;
            let containers = compose::project_containers(&project)?;
            if containers.is_empty() {
                return Err(Error::Command {
                    program: "docker".into(),
                    message: format!("compose project {project} has no containers to update"),
                });
            }
            Ok(Before::DockerCompose {
                compose_sha256: sha256_file(&file)?,
                compose_file: file.display().to_string(),
                project,
                containers,
                volume_backup: None,
            })
        }
        "docker" => {
            let name = svc.container.clone().unwrap_or_default();
            let v =
                crate::docker::engine::inspect_container(&name)?.ok_or_else(|| Error::Command {
                    program: "docker".into(),
                    message: format!("no such container: {name}"),
                })?;
            Ok(Before::Docker {
                container: name,
                container_id: v["Id"].as_str().unwrap_or("").to_string(),
                image: v["Config"]["Image"].as_str().unwrap_or("").to_string(),
                image_id: v["Image"].as_str().unwrap_or("").to_string(),
            })
        }
        _ => Ok(Before::Command {}),
    }
}

/// One image of a check: what runs and what the registry has.
#[derive(Debug, Clone, Serialize)]
pub struct ImageCheck {
    /// The Compose service, or the container.
    pub name: String,
    pub image: String,
    pub current_id: String,
    pub current_digest: Option<String>,
    /// After a pull: the ID the reference names now.
    pub new_id: Option<String>,
    pub new_digest: Option<String>,
    pub available: bool,
}

/// Whether there is anything new.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub available: bool,
    /// `pull` (the images were pulled), `registry` (asked without pulling),
    /// `command` (the admin's command decides; always run) or `packages`
    /// (a guest's package manager listed its pending upgrades).
    pub method: &'static str,
    pub images: Vec<ImageCheck>,
    /// A guest's packages with an upgrade pending.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// A guest's pending upgrades with their versions, all of them (the
    /// result shows them bounded: [`guest::Packages`]).
    #[serde(skip)]
    pub changes: Vec<crate::pve::guest::PackageChange>,
}

fn image_checks(before: &Before) -> Vec<(String, String, String)> {
    let mut seen = std::collections::BTreeSet::new();
    match before {
        Before::DockerCompose { containers, .. } => containers
            .iter()
            .filter(|c| seen.insert(c.service.clone()))
            .map(|c| (c.service.clone(), c.image.clone(), c.image_id.clone()))
            .collect(),
        Before::Docker {
            container,
            image,
            image_id,
            ..
        } => vec![(container.clone(), image.clone(), image_id.clone())],
        Before::Command {} | Before::Guest { .. } | Before::Caddy(_) => Vec::new(),
    }
}

/// Pull what the service runs (nothing running changes; a failed pull is
/// an error before anything changed) and compare image IDs. With
/// `pull: false`, ask the registries for their digests instead (changes
/// nothing at all).
pub fn check(cfg: &Config, svc: &ServiceConfig, before: &Before, pull: bool) -> Result<Check> {
    let _progress = crate::progress::Progress::spinner(&format!(
        "{}: {}",
        svc.name,
        if pull {
            "pulling"
        } else {
            "asking the registry"
        }
    ));
    if let Before::Command {} = before {
        return Ok(Check {
            available: true,
            method: "command",
            images: Vec::new(),
            packages: Vec::new(),
            changes: Vec::new(),
        });
    }
    if let Before::Caddy(rec) = before {
        return Ok(Check {
            available: caddy::check(rec, pull, !update_command(svc).is_empty())?,
            method: "caddy",
            images: Vec::new(),
            packages: Vec::new(),
            changes: Vec::new(),
        });
    }
    if let Before::Guest { .. } = before {
        let changes = guest::pending(cfg, before)?;
        return Ok(Check {
            available: !changes.is_empty(),
            method: "packages",
            images: Vec::new(),
            packages: changes.iter().map(|c| c.name.clone()).collect(),
            changes,
        });
    }
    if pull {
        match before {
            Before::DockerCompose { .. } => {
                let (file, project) = compose_of(svc)?;
                compose::pull(&file, &project)?;
            }
            Before::Docker { image, .. } => {
                image::pull(image)?;
            }
            Before::Command {} | Before::Guest { .. } | Before::Caddy(_) => {}
        }
    }
    let mut images = Vec::new();
    for (name, reference, current_id) in image_checks(before) {
        let cur = image::inspect(&current_id)?;
        let current_digest = cur.as_ref().and_then(|i| i.digest_for(&reference));
        let (new_id, new_digest, available) = if pull {
            let now = image::inspect(&reference)?;
            let id = now.as_ref().map(|i| i.id.clone());
            let digest = now.as_ref().and_then(|i| i.digest_for(&reference));
            let changed = id.as_deref().is_some_and(|i| i != current_id);
            (id, digest, changed)
        } else {
            let remote = registry::remote_digest(&reference)?;
            let changed = current_digest.as_deref() != Some(remote.as_str());
            (None, Some(remote), changed)
        };
        images.push(ImageCheck {
            name,
            image: reference,
            current_id,
            current_digest,
            new_id,
            new_digest,
            available,
        });
    }
    Ok(Check {
        available: images.iter().any(|i| i.available),
        method: if pull { "pull" } else { "registry" },
        images,
        packages: Vec::new(),
        changes: Vec::new(),
    })
}

impl Check {
    /// What the update changes, in one line: a guest's pending upgrades
    /// with their versions (`1 package: webapp 1 → 2`), or the images
    /// whose ID changed with the short IDs (`app 1a2b3c4d5e6f →
    /// 9f8e7d6c5b4a`); None when nothing is known to change.
    pub fn changed(&self) -> Option<String> {
        if !self.changes.is_empty() {
            return Some(guest::Packages::new(&self.changes).text);
        }
        let images: Vec<String> = self
            .images
            .iter()
            .filter_map(|i| {
                let new = i.new_id.as_deref().filter(|n| *n != i.current_id)?;
                Some(format!(
                    "{} {} \u{2192} {}",
                    i.name,
                    short(&i.current_id),
                    short(new)
                ))
            })
            .collect();
        (!images.is_empty()).then(|| images.join(", "))
    }
}

/// The service's `update.command` (empty when unset).
fn update_command(svc: &ServiceConfig) -> Vec<String> {
    svc.update
        .as_ref()
        .map(|u| u.command.clone())
        .unwrap_or_default()
}

/// What a command of the admin printed, kept short.
fn run_argv(what: &str, argv: &[String], timeout: u64) -> Result<crate::proc::RunInfo> {
    let out = crate::proc::run(
        argv,
        &crate::proc::RunOptions {
            timeout_seconds: timeout,
            max_output: 64 * 1024,
            ..Default::default()
        },
    )?;
    if out.code != 0 || out.timed_out {
        let tail: String = out
            .stderr
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(Error::Command {
            program: argv.first().cloned().unwrap_or_default(),
            message: format!(
                "{what}: {}: {}",
                if out.timed_out {
                    format!("timed out after {timeout} s")
                } else {
                    format!("exit {}", out.code)
                },
                tail.trim()
            ),
        });
    }
    Ok(out)
}

/// How long the admin's update and rollback commands may take.
const COMMAND_TIMEOUT: u64 = 3600;

/// Apply the update. On error, what was changed may need [`rollback`].
pub fn apply(cfg: &Config, svc: &ServiceConfig, before: &Before) -> Result<()> {
    let _progress = crate::progress::Progress::spinner(&format!("{}: updating", svc.name));
    match before {
        Before::Guest { .. } => guest::apply(cfg, svc, before),
        Before::Caddy(rec) => caddy::apply(rec, &update_command(svc)),
        Before::DockerCompose { .. } => {
            let (file, project) = compose_of(svc)?;
            compose::up(&file, &project)
        }
        Before::Docker {
            container, image, ..
        } => recreate::recreate(container, image).map(drop),
        Before::Command {} => {
            run_argv("update.command", &update_command(svc), COMMAND_TIMEOUT).map(drop)
        }
    }
}

/// Put back what ran before, from the record alone (so the next run can
/// do it after a crash). Safe to repeat.
pub fn rollback(cfg: &Config, svc: &ServiceConfig, before: &Before) -> Result<Vec<String>> {
    let _progress = crate::progress::Progress::spinner(&format!("{}: rolling back", svc.name));
    let mut notes = Vec::new();
    match before {
        Before::Guest { .. } => return guest::rollback(cfg, svc, before),
        Before::Caddy(rec) => {
            let argv = svc.update.as_ref().map(|u| u.rollback_command.clone());
            return caddy::rollback(rec, &argv.unwrap_or_default());
        }
        Before::DockerCompose {
            project,
            compose_file,
            compose_sha256,
            containers,
            ..
        } => {
            let file = std::path::PathBuf::from(compose_file);
            match sha256_file(&file) {
                Ok(h) if &h != compose_sha256 => notes.push(format!(
                    "{compose_file} changed since the update began (it was not edited by the update)"
                )),
                _ => {}
            }
            // Every reference back to the image ID it named before.
            let mut tags: BTreeMap<&str, &str> = BTreeMap::new();
            for c in containers {
                tags.insert(&c.image, &c.image_id);
            }
            for (reference, id) in tags {
                image::tag_image(id, reference)?;
                notes.push(format!("{reference} points at {id} again"));
            }
            compose::up(&file, project)?;
        }
        Before::Docker {
            container,
            container_id,
            ..
        } => {
            recreate::restore(container, container_id)?;
            notes.push(format!(
                "container {container} ({}) is back",
                short(container_id)
            ));
        }
        Before::Command {} => {
            let argv = svc
                .update
                .as_ref()
                .map(|u| u.rollback_command.clone())
                .unwrap_or_default();
            if argv.is_empty() {
                return Err(Error::Usage(format!(
                    "{}: no update.rollback_command to undo the update",
                    svc.name
                )));
            }
            run_argv("update.rollback_command", &argv, COMMAND_TIMEOUT)?;
            notes.push("update.rollback_command succeeded".into());
        }
    }
    Ok(notes)
}

/// The first part of a Compose rollback with `update.backup_volumes`
/// (the record's `volume_backup`, whose archive is `archive`): the
/// project's containers are stopped and its volumes put back from the
/// backup (`restore --volumes --force`), so the old images [`rollback`]
/// starts next find the data they had. Safe to repeat.
pub fn restore_volumes(
    before: &Before,
    archive: &std::path::Path,
    sha256: Option<String>,
    store: Option<&crate::state::Store>,
) -> Result<Vec<String>> {
    let Before::DockerCompose { project, .. } = before else {
        return Ok(Vec::new());
    };
    for c in compose::project_containers(project)? {
        crate::docker::engine::act(&c.container, crate::docker::engine::Action::Stop)?;
    }
    let manifest = crate::archive::read_manifest(archive)?;
    let opts = crate::archive::ExtractOptions {
        expected_sha256: sha256,
        ..Default::default()
    };
    let done = crate::docker::restore::restore_volumes(archive, &manifest, &opts, true, store)?;
    Ok(done
        .iter()
        .map(|v| format!("volume {} restored from {}", v.name, archive.display()))
        .collect())
}

/// After a proven update: remove the previous container and the images
/// nothing uses any more. Failures here are warnings, never a rollback.
pub fn cleanup(cfg: &Config, before: &Before) -> Vec<String> {
    if let Before::Guest { .. } = before {
        return guest::cleanup(cfg, before);
    }
    if let Before::Caddy(rec) = before {
        return caddy::cleanup(rec);
    }
    let mut notes = Vec::new();
    let running = after_ids(before).unwrap_or_default();
    let old: Vec<String> = match before {
        Before::DockerCompose { containers, .. } => {
            containers.iter().map(|c| c.image_id.clone()).collect()
        }
        Before::Docker {
            container_id,
            image_id,
            ..
        } => {
            if let Err(e) = recreate::remove_old(container_id) {
                notes.push(format!(
                    "previous container {} not removed: {e}",
                    short(container_id)
                ));
            }
            vec![image_id.clone()]
        }
        Before::Command {} | Before::Guest { .. } | Before::Caddy(_) => Vec::new(),
    };
    let mut done = std::collections::BTreeSet::new();
    for id in old {
        if running.contains(&id) || !done.insert(id.clone()) {
            continue;
        }
        match image::remove_unused(&id) {
            Ok(true) => notes.push(format!("removed the previous image {}", short(&id))),
            Ok(false) => notes.push(format!(
                "kept the previous image {} (still in use)",
                short(&id)
            )),
            Err(e) => notes.push(format!("previous image {} not removed: {e}", short(&id))),
        }
    }
    notes
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn after_ids(before: &Before) -> Result<Vec<String>> {
    Ok(current(before)?.into_iter().map(|v| v.image_id).collect())
}

/// What one container runs, for the report's `before` / `after`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Running {
    pub name: String,
    pub image: String,
    pub image_id: String,
    /// The registry digest (`sha256:...`), when the image came from one.
    pub digest: Option<String>,
}

fn describe(name: String, reference: String, id: String) -> Result<Running> {
    let digest = image::inspect(&id)?.and_then(|i| i.digest_for(&reference));
    Ok(Running {
        name,
        image: reference,
        image_id: id,
        digest,
    })
}

/// What the service's containers run now.
pub fn current(before: &Before) -> Result<Vec<Running>> {
    match before {
        Before::DockerCompose { project, .. } => {
            let mut seen = std::collections::BTreeSet::new();
            compose::project_containers(project)?
                .into_iter()
                .filter(|c| seen.insert(c.service.clone()))
                .map(|c| describe(c.service, c.image, c.image_id))
                .collect()
        }
        Before::Docker { container, .. } => {
            match crate::docker::engine::inspect_container(container)? {
                Some(v) => Ok(vec![describe(
                    container.clone(),
                    v["Config"]["Image"].as_str().unwrap_or("").to_string(),
                    v["Image"].as_str().unwrap_or("").to_string(),
                )?]),
                None => Ok(Vec::new()),
            }
        }
        Before::Command {} | Before::Guest { .. } | Before::Caddy(_) => Ok(Vec::new()),
    }
}

/// What ran before, in the same shape as [`current`].
pub fn previous(before: &Before) -> Result<Vec<Running>> {
    image_checks(before)
        .into_iter()
        .map(|(name, reference, id)| describe(name, reference, id))
        .collect()
}

/// The services in update order: each after the ones it `depends_on`
/// (among those given), otherwise in the given order. A cycle is an error.
pub fn order(services: &[(String, Vec<String>)]) -> Result<Vec<String>> {
    let index: HashMap<&str, usize> = services
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    let mut state = vec![0u8; services.len()]; // 0 new, 1 visiting, 2 done
    let mut out = Vec::with_capacity(services.len());
    fn visit(
        i: usize,
        services: &[(String, Vec<String>)],
        index: &HashMap<&str, usize>,
        state: &mut [u8],
        out: &mut Vec<String>,
        path: &mut Vec<String>,
    ) -> Result<()> {
        match state[i] {
            2 => return Ok(()),
            1 => {
                path.push(services[i].0.clone());
                return Err(Error::Usage(format!(
                    "services depend on each other in a cycle: {}",
                    path.join(" -> ")
                )));
            }
            _ => {}
        }
        state[i] = 1;
        path.push(services[i].0.clone());
        for d in &services[i].1 {
            if let Some(&j) = index.get(d.as_str()) {
                visit(j, services, index, state, out, path)?;
            }
        }
        path.pop();
        state[i] = 2;
        out.push(services[i].0.clone());
        Ok(())
    }
    for i in 0..services.len() {
        visit(i, services, &index, &mut state, &mut out, &mut Vec::new())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: &str, d: &[&str]) -> (String, Vec<String>) {
        (n.into(), d.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn dependencies_come_first_and_cycles_are_refused() {
        let o = order(&[s("app", &["db"]), s("web", &[]), s("db", &[])]).unwrap();
        assert_eq!(o, ["db", "app", "web"]);
        let e = order(&[s("a", &["b"]), s("b", &["a"])]).unwrap_err();
        assert!(e.to_string().contains("a -> b -> a"), "{e}");
        // A dependency not being updated in this run does not reorder.
        assert_eq!(order(&[s("app", &["gone"])]).unwrap(), ["app"]);
    }

    #[test]
    fn compose_records_without_a_volume_backup_still_read() {
        let old = serde_json::json!({
            "kind": "docker_compose", "project": "p", "compose_file": "/c.yml",
            "compose_sha256": "00", "containers": []
        });
        let b: Before = serde_json::from_value(old.clone()).unwrap();
        assert!(matches!(
            b,
            Before::DockerCompose {
                volume_backup: None,
                ..
            }
        ));
        assert_eq!(serde_json::to_value(&b).unwrap(), old);
    }

    #[test]
    fn records_round_trip_and_failures_are_the_documented_ones() {
        let b = Before::Docker {
            container: "web".into(),
            container_id: "abc".into(),
            image: "r/web:1".into(),
            image_id: "sha256:1".into(),
        };
        let v = serde_json::to_value(&b).unwrap();
        assert_eq!(v["kind"], "docker");
        assert_eq!(serde_json::from_value::<Before>(v).unwrap(), b);
        let failing: Vec<&str> = Outcome::ALL
            .into_iter()
            .filter(|o| o.is_failure())
            .map(Outcome::as_str)
            .collect();
        assert_eq!(failing, ["rolled_back", "aborted", "rollback_failed"]);
    }
}
