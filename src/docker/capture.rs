//! What a `docker` / `docker_compose` service backs up, found through the
//! engine: the containers (one, or every container of the Compose
//! project), the named volumes and bind mounts they use, and for a project
//! its compose file(s), `.env` and project directory; plus `backup_paths`.
//!
//! A volume's contents are archived under its mountpoint path
//! (`var/lib/docker/volumes/NAME/_data/...`), like every other source; the
//! manifest's `capture.volumes` maps each volume to that path, so a restore
//! finds it again whatever the Docker root was.

use super::engine;
use crate::archive::{Capture, CapturedContainer, CapturedVolume};
use crate::config::{ServiceConfig, ServiceType};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Compose's labels.
pub const LABEL_PROJECT: &str = "com.docker.compose.project";
pub const LABEL_VOLUME: &str = "com.docker.compose.volume";
const LABEL_WORKING_DIR: &str = "com.docker.compose.project.working_dir";
const LABEL_CONFIG_FILES: &str = "com.docker.compose.project.config_files";

/// What to archive for one service.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Absolute paths: volume mountpoints, bind mount sources, compose
    /// files and project directory, `backup_paths`.
    pub paths: Vec<PathBuf>,
    pub capture: Capture,
    /// Things that could not be captured (a volume whose mountpoint is not
    /// on this host).
    pub warnings: Vec<String>,
}

impl Plan {
    /// The containers, by name (what `backup_consistency` acts on).
    pub fn containers(&self) -> Vec<String> {
        self.capture
            .containers
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }
}

fn push(paths: &mut Vec<PathBuf>, p: PathBuf) {
    if !paths.contains(&p) {
        paths.push(p);
    }
}

/// Bind sources never worth archiving (kernel and device trees, the
/// engine's own socket).
fn skipped_bind(p: &Path) -> bool {
    ["/proc", "/sys", "/dev"].iter().any(|s| p.starts_with(s))
        || p == Path::new("/")
        || p.file_name().is_some_and(|n| n == "docker.sock")
}

/// The image digest a container runs: the image's first repo digest, else
/// (a locally built or imported image) its image ID.
fn image_digest(image_id: &str) -> Result<String> {
    if image_id.is_empty() {
        return Ok(String::new());
    }
    let img = engine::inspect_image(image_id)?;
    let digest = img
        .as_ref()
        .and_then(|v| v["RepoDigests"].as_array())
        .and_then(|a| a.first())
        .and_then(|d| d.as_str())
        .map(str::to_string);
    Ok(digest.unwrap_or_else(|| image_id.to_string()))
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `svc.volumes` (when set) selects this volume: by its engine name
/// or, for Compose, by its name in the compose file.
fn wanted(svc: &ServiceConfig, name: &str, labels: &BTreeMap<String, String>) -> bool {
    svc.volumes.is_empty()
        || svc
            .volumes
            .iter()
            .any(|v| v == name || labels.get(LABEL_VOLUME) == Some(v))
}

/// The plan for a `docker` or `docker_compose` service (`project`: the
/// Compose project name, see `monitor::compose_project`).
pub fn plan(svc: &ServiceConfig, project: Option<&str>) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut capture = Capture {
        service_type: svc.service_type.as_str().to_string(),
        ..Default::default()
    };
    let names: Vec<String> = match svc.service_type {
        ServiceType::Docker => {
            let name = svc.container.clone().ok_or_else(|| {
                Error::Config(vec![format!(
                    "service {}: 'container' is not set",
                    svc.name
                )])
            })?;
            vec![name]
        }
        t if t.is_compose() => {
            let project = project.ok_or_else(|| {
                Error::Config(vec![format!(
                    "service {}: no compose project (set compose_project)",
                    svc.name
                )])
            })?;
            capture.project = Some(project.to_string());
            let filter = serde_json::json!({ "label": [format!("{LABEL_PROJECT}={project}")] });
            let mut v: Vec<String> = engine::containers(&filter)?
                .iter()
                .map(engine::row_name)
                .filter(|n| !n.is_empty())
                .collect();
            v.sort();
            v
        }
        other => {
            return Err(Error::Usage(format!(
                "service {}: type {} has no containers",
                svc.name,
                other.as_str()
            )))
        }
    };
    let mut volumes: BTreeMap<String, CapturedVolume> = BTreeMap::new();
    let mut compose_dirs: Vec<PathBuf> = Vec::new();
    for name in &names {
        let c = engine::inspect_container(name)?.ok_or_else(|| Error::Command {
            program: "docker".into(),
            message: format!("service {}: no such container: {name}", svc.name),
        })?;
        let image_id = c["Image"].as_str().unwrap_or("").to_string();
        let state = &c["State"];
        capture.containers.push(CapturedContainer {
            name: name.clone(),
            id: c["Id"].as_str().unwrap_or("").to_string(),
            image: c["Config"]["Image"].as_str().unwrap_or("").to_string(),
            image_digest: image_digest(&image_id)?,
            running: state["Running"].as_bool() == Some(true)
                && state["Paused"].as_bool() != Some(true),
        });
        let clabels = labels(&c["Config"]["Labels"]);
        if let Some(dir) = clabels.get(LABEL_WORKING_DIR) {
            push(&mut compose_dirs, PathBuf::from(dir));
        }
        if let Some(files) = clabels.get(LABEL_CONFIG_FILES) {
            for f in files.split(',').filter(|f| f.starts_with('/')) {
                push(&mut plan.paths, PathBuf::from(f));
            }
        }
        for m in c["Mounts"].as_array().into_iter().flatten() {
            let source = m["Source"].as_str().unwrap_or("");
            match m["Type"].as_str() {
                Some("volume") => {
                    let vname = m["Name"].as_str().unwrap_or("").to_string();
                    if vname.is_empty() || volumes.contains_key(&vname) {
                        continue;
                    }
                    if let Some(v) = volume(&vname)? {
                        if wanted(svc, &vname, &v.labels) {
                            volumes.insert(vname, v);
                        }
                    }
                }
                Some("bind") if source.starts_with('/') => {
                    let p = PathBuf::from(source);
                    if !skipped_bind(&p) {
                        push(&mut plan.paths, p);
                    }
                }
                _ => {}
            }
        }
    }
    if let (true, Some(project)) = (svc.service_type.is_compose(), project) {
        // Volumes of the project that no container uses now (a project
        // that is down, a volume of a removed service).
        for vname in project_volumes(project)? {
            if let std::collections::btree_map::Entry::Vacant(slot) = volumes.entry(vname) {
                if let Some(v) = volume(slot.key())? {
                    if wanted(svc, slot.key(), &v.labels) {
                        slot.insert(v);
                    }
                }
            }
        }
        if let Some(file) = &svc.compose_file {
            push(&mut plan.paths, file.clone());
            if let Some(dir) = file.parent() {
                push(&mut compose_dirs, dir.to_path_buf());
            }
        }
        for dir in compose_dirs {
            let env = dir.join(".env");
            push(&mut plan.paths, dir);
            if env.exists() {
                push(&mut plan.paths, env);
            }
        }
    }
    for v in &svc.volumes {
        let found = volumes
            .iter()
            .any(|(n, cv)| n == v || cv.labels.get(LABEL_VOLUME) == Some(v));
        if !found {
            return Err(Error::Config(vec![format!(
                "service {}: volume '{v}' (in 'volumes') is not used by {}",
                svc.name,
                names.join(", ")
            )]));
        }
    }
    for (_, v) in volumes {
        if Path::new(&v.mountpoint).is_dir() {
            push(&mut plan.paths, PathBuf::from(&v.mountpoint));
            capture.volumes.push(v);
        } else {
            plan.warnings.push(format!(
                "volume {}: its mountpoint {} is not on this host (driver {}); not archived",
                v.name, v.mountpoint, v.driver
            ));
        }
    }
    for p in &svc.backup_paths {
        push(&mut plan.paths, p.path.clone());
    }
    plan.capture = capture;
    Ok(plan)
}

/// `docker volume inspect NAME` as a [`CapturedVolume`].
fn volume(name: &str) -> Result<Option<CapturedVolume>> {
    let Some(v) = engine::inspect_volume(name)? else {
        return Ok(None);
    };
    let mountpoint = v["Mountpoint"].as_str().unwrap_or("").to_string();
    Ok(Some(CapturedVolume {
        name: name.to_string(),
        path: mountpoint.trim_start_matches('/').to_string(),
        mountpoint,
        driver: v["Driver"].as_str().unwrap_or("local").to_string(),
        labels: labels(&v["Labels"]),
    }))
}

/// Volumes labelled with the Compose project.
fn project_volumes(project: &str) -> Result<Vec<String>> {
    let label = format!("{LABEL_PROJECT}={project}");
    let rows: Vec<String> = crate::notify::block_on(async {
        match engine::socket() {
            Some(sock) => {
                let f = serde_json::json!({ "label": [&label] }).to_string();
                let f: String = url::form_urlencoded::byte_serialize(f.as_bytes()).collect();
                let v = engine::get(&sock, &format!("/volumes?filters={f}"))
                    .await?
                    .unwrap_or_default();
                Ok::<_, String>(
                    v["Volumes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v["Name"].as_str().map(str::to_string))
                        .collect(),
                )
            }
            None => {
                let filter = format!("label={label}");
                let out = engine::cli(
                    "docker volume ls",
                    &["volume", "ls", "--format", "{{.Name}}", "--filter", &filter],
                )
                .await?;
                Ok(String::from_utf8_lossy(&out)
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect())
            }
        }
    })
    .map_err(|e| Error::Command {
        program: "docker".into(),
        message: e,
    })?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_trees_and_the_engine_socket_are_not_archived() {
        for p in ["/proc/1", "/sys", "/dev/null", "/var/run/docker.sock", "/"] {
            assert!(skipped_bind(Path::new(p)), "{p}");
        }
        assert!(!skipped_bind(Path::new("/srv/app/data")));
    }

    #[test]
    fn volumes_select_by_engine_name_or_compose_name() {
        let svc = ServiceConfig {
            volumes: vec!["db".into()],
            ..Default::default()
        };
        let compose: BTreeMap<String, String> =
            [(LABEL_VOLUME.to_string(), "db".to_string())].into();
        assert!(wanted(&svc, "proj_db", &compose));
        assert!(wanted(&svc, "db", &BTreeMap::new()));
        assert!(!wanted(&svc, "proj_cache", &BTreeMap::new()));
        assert!(wanted(&ServiceConfig::default(), "x", &BTreeMap::new()));
    }
}
