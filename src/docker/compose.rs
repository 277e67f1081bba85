//! Docker Compose for updates: `docker compose` (v2) or `docker-compose`
//! (v1), whichever is installed, run as argv with `-f FILE -p PROJECT`;
//! the project's containers with the image each one runs.

use super::engine::{containers, inspect_container};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::OnceLock;

/// How long `pull` or `up -d` may take.
const COMPOSE_TIMEOUT: u64 = 1800;

/// The Compose command: `["docker", "compose"]` or `["docker-compose"]`.
pub fn command() -> Result<Vec<String>> {
    static FOUND: OnceLock<Option<Vec<String>>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let works = |argv: &[&str]| {
            let mut full: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            full.push("version".into());
            crate::proc::run(
                &full,
                &crate::proc::RunOptions {
                    timeout_seconds: 30,
                    max_output: 4096,
                    ..Default::default()
                },
            )
            .is_ok_and(|o| o.code == 0)
        };
        [&["docker", "compose"][..], &["docker-compose"][..]]
            .into_iter()
            .find(|argv| works(argv))
            .map(|argv| argv.iter().map(|s| s.to_string()).collect())
    });
    found.clone().ok_or_else(|| Error::Command {
        program: "docker-compose".into(),
        message: "neither `docker compose` nor `docker-compose` is installed".into(),
    })
}

/// `<compose> -f FILE -p PROJECT ARGS...`; the error carries its stderr.
pub fn run(file: &Path, project: &str, args: &[&str]) -> Result<crate::proc::RunInfo> {
    let mut argv = command()?;
    argv.extend([
        "-f".to_string(),
        file.display().to_string(),
        "-p".to_string(),
        project.to_string(),
    ]);
    argv.extend(args.iter().map(|s| s.to_string()));
    let out = crate::proc::run(
        &argv,
        &crate::proc::RunOptions {
            timeout_seconds: COMPOSE_TIMEOUT,
            max_output: 256 * 1024,
            cwd: file.parent().map(Path::to_path_buf),
            ..Default::default()
        },
    )?;
    if out.code != 0 || out.timed_out {
        let tail: String = out
            .stderr
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::Command {
            program: argv[0].clone(),
            message: format!(
                "compose -p {project} {}: {}",
                args.join(" "),
                if out.timed_out {
                    format!("timed out after {COMPOSE_TIMEOUT} s")
                } else {
                    format!("exit {}: {tail}", out.code)
                }
            ),
        });
    }
    Ok(out)
}

/// `pull`: every service's image. Nothing running changes.
pub fn pull(file: &Path, project: &str) -> Result<()> {
    run(file, project, &["pull", "--quiet"]).map(drop)
}

/// `up -d`: create or recreate what changed.
pub fn up(file: &Path, project: &str) -> Result<()> {
    run(file, project, &["up", "-d"]).map(drop)
}

/// One container of a project, as an update records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectContainer {
    /// The Compose service (`com.docker.compose.service`).
    pub service: String,
    pub container: String,
    pub container_id: String,
    /// The image reference the compose file names.
    pub image: String,
    /// The ID of the image the container runs.
    pub image_id: String,
}

/// The containers of a project (stopped ones too), by service name.
pub fn project_containers(project: &str) -> Result<Vec<ProjectContainer>> {
    let label = format!("com.docker.compose.project={project}");
    let rows = containers(&serde_json::json!({ "label": [label] }))?;
    let mut out = Vec::new();
    for r in rows {
        let id = r["Id"]
            .as_str()
            .or_else(|| r["ID"].as_str())
            .unwrap_or("")
            .to_string();
        let Some(v) = inspect_container(&id)? else {
            continue;
        };
        out.push(ProjectContainer {
            service: v["Config"]["Labels"]["com.docker.compose.service"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            container: v["Name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
            container_id: v["Id"].as_str().unwrap_or("").to_string(),
            image: v["Config"]["Image"].as_str().unwrap_or("").to_string(),
            image_id: v["Image"].as_str().unwrap_or("").to_string(),
        });
    }
    out.sort_by(|a, b| {
        a.service
            .cmp(&b.service)
            .then(a.container.cmp(&b.container))
    });
    Ok(out)
}
