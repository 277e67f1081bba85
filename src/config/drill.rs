//! The plan of a disaster-recovery drill (`dr-drill PLAN.yaml`,
//! docs/restore-testing.md#disaster-recovery-drill): the services to
//! restore, what each depends on, the checks between them, and the manual
//! verification steps. Read with the configuration's positioned YAML, so
//! every error names the file, line and field (exit 78).

use super::spanned::{self, Diagnostics};
use super::{Config, HealthCheckConfig, HealthCheckType};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillPlan {
    /// Shown in the report; default: the file's name.
    pub name: String,
    /// Where the reports go; default `<state dir>/drills`. Relative to the
    /// plan's directory.
    pub report_dir: Option<PathBuf>,
    /// Required: the critical services, each at most once.
    pub services: Vec<DrillService>,
    /// Manual steps after every service is restored and checked.
    pub final_steps: Vec<String>,
    /// The plan file (set by [`load_plan`]).
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrillService {
    /// Required: a configured service.
    pub service: String,
    /// Services of the plan restored (and checked) before this one.
    pub depends_on: Vec<String>,
    /// Checks that this service reaches what it depends on: `http` / `tcp`
    /// naming the other copy's services (`http://db:8080/`), run from
    /// inside this service's copy; for archives, `command` checks; for vm /
    /// lxc, `command` checks run inside the guest, `{restore_address:NAME}`
    /// standing for dependency NAME's address.
    pub dependency_checks: Vec<HealthCheckConfig>,
    /// Manual verification steps, after this service is restored.
    pub verify: Vec<String>,
}

impl DrillPlan {
    /// The services in dependency order (every one after what it depends
    /// on; otherwise in the plan's order). The plan was checked for cycles.
    pub fn ordered(&self) -> Vec<&DrillService> {
        let mut done: Vec<&str> = Vec::new();
        let mut out = Vec::new();
        while out.len() < self.services.len() {
            let before = out.len();
            for s in &self.services {
                if !done.contains(&s.service.as_str())
                    && s.depends_on.iter().all(|d| done.contains(&d.as_str()))
                {
                    done.push(&s.service);
                    out.push(s);
                }
            }
            if out.len() == before {
                break;
            }
        }
        out
    }
}

/// Read and check a plan against the loaded configuration.
pub fn load_plan(path: &Path, cfg: &Config) -> Result<DrillPlan> {
    let path = super::absolute_config_path(path);
    let text = super::read_text(&path).map_err(|e| {
        Error::Config(vec![format!(
            "{}: cannot read the drill plan: {e}",
            path.display()
        )])
    })?;
    let mut diag = Diagnostics::default();
    let file = diag.add_file(path.clone());
    let node = super::parse_file(file, &text, &diag);
    let plan: Option<DrillPlan> = node.as_ref().and_then(|n| spanned::from_node(n, &diag));
    let mut plan = match plan {
        Some(p) => p,
        None if diag.is_empty() => {
            return Err(Error::Config(vec![format!(
                "{}: the drill plan is empty",
                path.display()
            )]))
        }
        None => return Err(Error::Config(diag.render())),
    };
    check(&plan, cfg, file, &diag);
    if !diag.is_empty() {
        return Err(Error::Config(diag.render()));
    }
    if plan.name.is_empty() {
        plan.name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "drill".into());
    }
    if let Some(d) = &plan.report_dir {
        if d.is_relative() {
            let base = path.parent().unwrap_or(Path::new("/"));
            plan.report_dir = Some(base.join(d));
        }
    }
    plan.source = path;
    Ok(plan)
}

fn is_guest(cfg: &Config, service: &str) -> bool {
    cfg.services.iter().any(|c| {
        c.name == service
            && matches!(
                c.service_type,
                super::ServiceType::Vm | super::ServiceType::Lxc
            )
    })
}

/// Dependency checks only between copies that can reach each other: a
/// guest's copies are on the isolated VLAN (or disconnected), a Docker
/// copy on the drill's internal Docker network, an archive's on this host;
/// so a check between a guest and another kind could never pass.
fn check_reach(
    plan: &DrillPlan,
    cfg: &Config,
    s: &DrillService,
    at: &str,
    file: usize,
    diag: &Diagnostics,
) {
    if s.dependency_checks.is_empty() {
        return;
    }
    let guest = is_guest(cfg, &s.service);
    for (j, d) in s.depends_on.iter().enumerate() {
        if plan.services.iter().any(|o| &o.service == d) && is_guest(cfg, d) != guest {
            let (a, b) = if guest {
                ("a vm / lxc copy", "Docker and archive copies")
            } else {
                ("a Docker or archive copy", "vm / lxc copies")
            };
            diag.error_at(
                file,
                &format!("{at}.depends_on[{j}]"),
                format!(
                    "{} cannot check its dependency on {d}: {a} is isolated from {b} by design \
                     (guests on the test environment's network, Docker copies on the drill's \
                     internal network); drop the dependency_checks, or check {d} on its own",
                    s.service
                ),
            );
        }
    }
    for (j, c) in s.dependency_checks.iter().enumerate() {
        let cat = format!("{at}.dependency_checks[{j}]");
        let argv: &[String] = match &c.command {
            Some(super::CommandSpec::Argv(a)) => a,
            _ => &[],
        };
        if guest {
            if c.check_type != HealthCheckType::Command {
                diag.error_at(
                    file,
                    &format!("{cat}.type"),
                    "from a vm / lxc copy a dependency check is a command run inside the guest \
                     (e.g. [nc, -z, \"{restore_address:db}\", \"5432\"])",
                );
            } else if matches!(c.command, Some(super::CommandSpec::Shell(_))) {
                diag.error_at(
                    file,
                    &format!("{cat}.command"),
                    "a check inside a guest takes an argv list, not a shell string",
                );
            }
        }
        for (k, a) in argv.iter().enumerate() {
            for (tag, ok_here) in [("{restore_address:", guest), ("{restore_path:", !guest)] {
                let Some(rest) = a.split(tag).nth(1) else {
                    continue;
                };
                let name = rest.split('}').next().unwrap_or("");
                let why = if !ok_here {
                    Some(format!(
                        "{tag}NAME}} applies to {} copies only",
                        if guest { "archive" } else { "vm / lxc" }
                    ))
                } else if !s.depends_on.iter().any(|d| d == name) {
                    Some(format!("'{name}' is not in this service's depends_on"))
                } else {
                    None
                };
                if let Some(why) = why {
                    diag.error_at(file, &format!("{cat}.command[{k}]"), why);
                }
            }
        }
    }
}

fn check(plan: &DrillPlan, cfg: &Config, file: usize, diag: &Diagnostics) {
    if plan.services.is_empty() {
        diag.error_at(file, "services", "a drill plan lists at least one service");
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in plan.services.iter().enumerate() {
        let at = format!("services[{}]", diag.yaml_index(file, "services", i));
        if s.service.is_empty() {
            diag.error_at(file, &at, "service is required");
            continue;
        }
        let field = format!("{at}.service");
        if !cfg.services.iter().any(|c| c.name == s.service) {
            let known: Vec<&str> = cfg.services.iter().map(|c| c.name.as_str()).collect();
            diag.error_at(
                file,
                &field,
                format!(
                    "no configured service named '{}' (configured: {})",
                    s.service,
                    known.join(", ")
                ),
            );
        }
        if seen.insert(&s.service, i).is_some() {
            diag.error_at(
                file,
                &field,
                format!("service {} is listed twice", s.service),
            );
        }
        for (j, d) in s.depends_on.iter().enumerate() {
            if !plan.services.iter().any(|o| &o.service == d) || d == &s.service {
                diag.error_at(
                    file,
                    &format!("{at}.depends_on[{j}]"),
                    format!("'{d}' is not another service of this plan"),
                );
            }
        }
        check_reach(plan, cfg, s, &at, file, diag);
        for (j, c) in s.dependency_checks.iter().enumerate() {
            let ok = matches!(
                c.check_type,
                HealthCheckType::Http | HealthCheckType::Tcp | HealthCheckType::Command
            );
            let cat = format!("{at}.dependency_checks[{j}]");
            let missing = match c.check_type {
                HealthCheckType::Http if c.url.is_none() => Some("url"),
                HealthCheckType::Tcp if c.host.is_none() => Some("host"),
                HealthCheckType::Tcp if c.port.is_none() => Some("port"),
                HealthCheckType::Command if c.command.is_none() => Some("command"),
                _ => None,
            };
            if !ok {
                diag.error_at(
                    file,
                    &format!("{cat}.type"),
                    "a dependency check is http, tcp or command",
                );
            } else if let Some(m) = missing {
                diag.error_at(file, &cat, format!("{m} is required for this check"));
            }
        }
        for (j, v) in s.verify.iter().enumerate() {
            if v.trim().is_empty() {
                diag.error_at(
                    file,
                    &format!("{at}.verify[{j}]"),
                    "a verification step says what to check",
                );
            }
        }
    }
    if plan.ordered().len() < plan.services.len() && diag.is_empty() {
        diag.error_at(file, "services", "the depends_on entries form a cycle");
    }
}
