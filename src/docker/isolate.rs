//! Throwaway copies of a service for restore tests (docs/restore-testing.md):
//! an `internal` network (no route out), volumes and containers of a project
//! named `<project>-restoretest-<id>`, every object labelled
//! [`LABEL`]`=<that name>` so that removing a test's copy finds exactly
//! what it made, also after a crash. Through the `docker` CLI (argv, never a shell;
//! environment variables go through a 0600 `--env-file`, never argv).

use super::engine;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The label on every object a restore test creates; its value is the
/// copy's project name.
pub const LABEL: &str = "homelab-autopilot.restore-test";

/// How long one CLI call may take.
const CALL_TIMEOUT: u64 = 120;

fn docker(what: &str, args: &[String]) -> Result<String> {
    let mut argv = vec!["docker".to_string()];
    argv.extend(args.iter().cloned());
    let out = crate::proc::run(
        &argv,
        &crate::proc::RunOptions {
            timeout_seconds: CALL_TIMEOUT,
            max_output: 1 << 20,
            ..Default::default()
        },
    )
    .map_err(|e| match e {
        Error::Io { .. } => Error::Unreachable(format!("{what}: docker: {e}")),
        other => other,
    })?;
    if out.code != 0 {
        return Err(Error::Command {
            program: "docker".into(),
            message: format!("{what}: {}", out.stderr.trim()),
        });
    }
    Ok(out.stdout)
}

fn s(v: &str) -> String {
    v.to_string()
}

fn label(key: &str) -> String {
    format!("{LABEL}={key}")
}

/// A name made of `base` (sanitised to the engine's alphabet) and the test
/// id: `<base>-restoretest-<id>`.
pub fn project_name(base: &str, test: i64) -> String {
    let mut b: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    if !b.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        b.insert(0, 'x');
    }
    b.truncate(150);
    format!("{b}-restoretest-{test}")
}

/// `docker network create --internal`: containers on it reach each other
/// and nothing else.
pub fn create_network(name: &str, key: &str) -> Result<()> {
    check(name)?;
    docker(
        &format!("create network {name}"),
        &[
            s("network"),
            s("create"),
            s("--internal"),
            s("--label"),
            label(key),
            s("--"),
            s(name),
        ],
    )
    .map(drop)
}

/// A volume of the copy, labelled as the test's.
pub fn create_volume(name: &str, key: &str) -> Result<PathBuf> {
    let labels = std::collections::BTreeMap::from([(LABEL.to_string(), key.to_string())]);
    engine::create_volume(name, &labels)?;
    let info = engine::inspect_volume(name)?.ok_or_else(|| Error::Command {
        program: "docker".into(),
        message: format!("volume {name} vanished"),
    })?;
    let mp = PathBuf::from(info["Mountpoint"].as_str().unwrap_or(""));
    if !mp.is_absolute() || !mp.is_dir() {
        return Err(Error::Command {
            program: "docker".into(),
            message: format!(
                "volume {name}: its mountpoint {} is not a directory on this host",
                mp.display()
            ),
        });
    }
    Ok(mp)
}

/// One mount of a container of the copy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountSpec {
    /// A volume name, or an absolute host path (a bind).
    pub source: String,
    pub target: String,
    pub volume: bool,
    pub read_only: bool,
}

/// A container of the copy.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub network: String,
    pub aliases: Vec<String>,
    /// The copy's project name ([`LABEL`]'s value).
    pub key: String,
    /// `KEY=VALUE` lines, written to a 0600 file beside the test's data.
    pub env_file: Option<PathBuf>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub mounts: Vec<MountSpec>,
}

/// `docker create` (not started).
pub fn create_container(c: &ContainerSpec) -> Result<()> {
    check(&c.name)?;
    let mut a = vec![
        s("create"),
        s("--name"),
        c.name.clone(),
        s("--label"),
        label(&c.key),
        s("--network"),
        c.network.clone(),
    ];
    for al in &c.aliases {
        a.push(s("--network-alias"));
        a.push(al.clone());
    }
    if let Some(f) = &c.env_file {
        a.push(s("--env-file"));
        a.push(f.display().to_string());
    }
    if let Some(w) = c.workdir.as_deref().filter(|w| !w.is_empty()) {
        a.push(s("--workdir"));
        a.push(w.to_string());
    }
    if let Some(u) = c.user.as_deref().filter(|u| !u.is_empty()) {
        a.push(s("--user"));
        a.push(u.to_string());
    }
    for m in &c.mounts {
        let mut spec = format!(
            "type={},source={},target={}",
            if m.volume { "volume" } else { "bind" },
            m.source,
            m.target
        );
        if m.read_only {
            spec.push_str(",readonly");
        }
        a.push(s("--mount"));
        a.push(spec);
    }
    // The CLI takes one word as the entrypoint; the rest of it goes before
    // the command, which is what the engine runs anyway.
    let mut args: Vec<String> = Vec::new();
    if let Some(ep) = &c.entrypoint {
        a.push(s("--entrypoint"));
        a.push(ep.first().cloned().unwrap_or_default());
        args.extend(ep.iter().skip(1).cloned());
    }
    args.extend(c.cmd.iter().cloned());
    a.push(s("--"));
    a.push(c.image.clone());
    a.extend(args);
    docker(&format!("create container {}", c.name), &a).map(drop)
}

pub fn start(name: &str) -> Result<()> {
    engine::act(name, engine::Action::Start)
}

/// A running container's pid on this host (its network namespace is
/// `/proc/<pid>/ns/net`) and its address on `network`.
pub fn pid_and_ip(name: &str, network: &str) -> Result<(u32, Option<String>)> {
    let v = engine::inspect_container(name)?.ok_or_else(|| Error::Command {
        program: "docker".into(),
        message: format!("no such container: {name}"),
    })?;
    let pid = v["State"]["Pid"].as_u64().unwrap_or(0) as u32;
    let ip = v["NetworkSettings"]["Networks"][network]["IPAddress"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok((pid, ip))
}

/// Whether an image is present locally (restore tests never pull).
pub fn image_present(image: &str) -> Result<bool> {
    let out = crate::proc::run(
        &[
            s("docker"),
            s("image"),
            s("inspect"),
            s("--format"),
            s("{{.Id}}"),
            s("--"),
            s(image),
        ],
        &crate::proc::RunOptions {
            timeout_seconds: CALL_TIMEOUT,
            max_output: 64 * 1024,
            ..Default::default()
        },
    )?;
    Ok(out.code == 0)
}

/// What [`remove`] took away.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Removed {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

fn listed(what: &str, args: &[String]) -> Result<Vec<String>> {
    Ok(docker(what, args)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Remove every container, network and volume labelled as the copy
/// `key`'s (containers first: they hold the others).
pub fn remove(key: &str) -> Result<Removed> {
    if key.is_empty() || !key.contains("-restoretest-") {
        return Err(Error::Usage(format!(
            "{key:?} is not a restore test's copy"
        )));
    }
    let filter = format!("label={}", label(key));
    let mut r = Removed::default();
    let containers = listed(
        "list test containers",
        &[
            s("ps"),
            s("-a"),
            s("--filter"),
            filter.clone(),
            s("--format"),
            s("{{.Names}}"),
        ],
    )?;
    if !containers.is_empty() {
        let mut a = vec![s("rm"), s("--force"), s("--volumes"), s("--")];
        a.extend(containers.iter().cloned());
        docker("remove test containers", &a)?;
        r.containers = containers;
    }
    let networks = listed(
        "list test networks",
        &[
            s("network"),
            s("ls"),
            s("--filter"),
            filter.clone(),
            s("--format"),
            s("{{.Name}}"),
        ],
    )?;
    for n in &networks {
        docker(
            "remove test network",
            &[s("network"), s("rm"), s("--"), n.clone()],
        )?;
    }
    r.networks = networks;
    let volumes = listed(
        "list test volumes",
        &[
            s("volume"),
            s("ls"),
            s("--filter"),
            filter,
            s("--format"),
            s("{{.Name}}"),
        ],
    )?;
    if !volumes.is_empty() {
        let mut a = vec![s("volume"), s("rm"), s("--force"), s("--")];
        a.extend(volumes.iter().cloned());
        docker("remove test volumes", &a)?;
        r.volumes = volumes;
    }
    Ok(r)
}

fn check(name: &str) -> Result<()> {
    if engine::valid_name(name) {
        Ok(())
    } else {
        Err(Error::Usage(format!("invalid Docker object name {name:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_valid_engine_names() {
        assert_eq!(project_name("web", 7), "web-restoretest-7");
        let n = project_name("My App/..", 3);
        assert!(engine::valid_name(&n), "{n}");
        assert!(engine::valid_name(&project_name("-x", 1)));
    }
}
