//! `docker::container(name)`: read-only; is the container running (and not
//! `unhealthy` when its image has a HEALTHCHECK), asked on the engine's
//! socket, or via `docker inspect` (argv, no shell) when there is no local
//! socket. `docker::compose(project)`: the same for every container of a
//! Compose project.
//!
//! Backups (docs/docker.md):
//! - `docker::capture(svc)`: what a docker / docker_compose service backs
//!   up, `#{paths, capture, generated}` for `archive::create`;
//! - `docker::exec(container, argv[, #{timeout_seconds, max_bytes}])`:
//!   `#{code, stdout, stderr, timed_out, truncated}` (argv, never a shell);
//! - `systemd::capture(svc)`: `backup_paths` plus `systemctl cat UNIT`;
//! - `consistency::hold(svc, src)` / `consistency::release(hold)`: stop or
//!   pause what the service runs (`backup_consistency`) and put it back.
//!   Building the `consistency` module (once per workflow run) starts what
//!   a dead run left stopped.

use super::http::run_one;
use super::RhaiResult;
use super::{dry_run, from_map, service_config, service_of, strings, throw, to_dyn, to_rhai};
use crate::config::{BackupConsistency, HealthCheckConfig, HealthCheckType, ServiceType};
use crate::docker::hold::{self, Mode, Target};
use crate::docker::{capture, units};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("container")
        .with_volatility(true)
        .set_into_module(&mut m, move |name: &str| {
            run_one(
                &h,
                HealthCheckConfig {
                    check_type: HealthCheckType::Container,
                    container: Some(name.to_string()),
                    ..Default::default()
                },
            )
        });
    let h = host.clone();
    FuncRegistration::new("compose")
        .with_volatility(true)
        .set_into_module(&mut m, move |project: &str| {
            run_one(
                &h,
                HealthCheckConfig {
                    check_type: HealthCheckType::Compose,
                    compose_project: Some(project.to_string()),
                    ..Default::default()
                },
            )
        });
    let h = host.clone();
    FuncRegistration::new("capture")
        .with_volatility(true)
        .set_into_module(&mut m, move |ctx: NativeCallContext, svc: Map| {
            docker_capture(&h, &ctx, &svc)
        });
    let h = host.clone();
    FuncRegistration::new("exec")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, container: &str, argv: Array| {
                exec(&h, &ctx, container, argv, Map::new())
            },
        );
    let h = host.clone();
    FuncRegistration::new("exec")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, container: &str, argv: Array, opts: Map| {
                exec(&h, &ctx, container, argv, opts)
            },
        );
    super::update::register_docker(host, &mut m);
    m
}

/// What an archive of this service holds, for `archive::create`.
#[derive(Serialize)]
struct Sources {
    paths: Vec<String>,
    capture: crate::archive::Capture,
    generated: std::collections::BTreeMap<String, String>,
}

fn docker_capture(h: &Host, ctx: &NativeCallContext, svc: &Map) -> RhaiResult<Dynamic> {
    let cfg = service_config(h, svc, "docker::capture")?;
    let project = crate::monitor::compose_project(cfg);
    let plan = capture::plan(cfg, project.as_deref()).map_err(|e| to_rhai(e, ctx))?;
    for w in &plan.warnings {
        h.event(tracing::Level::WARN, Some(&cfg.name), w);
    }
    let mut c = plan.capture;
    c.consistency = cfg.consistency().as_str().to_string();
    to_dyn(&Sources {
        paths: plan.paths.iter().map(|p| p.display().to_string()).collect(),
        capture: c,
        generated: Default::default(),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ExecOpts {
    timeout_seconds: Option<u64>,
    max_bytes: Option<usize>,
}

fn exec(
    h: &Host,
    ctx: &NativeCallContext,
    container: &str,
    argv: Array,
    opts: Map,
) -> RhaiResult<Dynamic> {
    let argv = strings(argv, "docker::exec argv")?;
    let opts: ExecOpts = from_map(opts, "docker::exec options")?;
    if dry_run(h, ctx, &format!("run {argv:?} in container {container}")) {
        let mut m = Map::new();
        m.insert("dry_run".into(), true.into());
        m.insert("code".into(), Dynamic::from(0_i64));
        m.insert("stdout".into(), "".into());
        m.insert("stderr".into(), "".into());
        return Ok(m.into());
    }
    let out = crate::docker::engine::exec(
        container,
        &argv,
        opts.timeout_seconds.unwrap_or(3600),
        opts.max_bytes.unwrap_or(1 << 20),
    )
    .map_err(|e| to_rhai(e, ctx))?;
    to_dyn(&out)
}

pub(super) fn systemd_module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("capture")
        .with_volatility(true)
        .set_into_module(&mut m, move |ctx: NativeCallContext, svc: Map| {
            let cfg = service_config(&h, &svc, "systemd::capture")?;
            let unit = cfg
                .unit
                .clone()
                .ok_or_else(|| throw("config", "systemd::capture: no unit", Some(&cfg.name)))?;
            let (mut c, files) = units::capture(&unit).map_err(|e| to_rhai(e, &ctx))?;
            c.consistency = cfg.consistency().as_str().to_string();
            to_dyn(&Sources {
                paths: cfg
                    .backup_paths
                    .iter()
                    .map(|p| p.path.display().to_string())
                    .collect(),
                capture: c,
                generated: files
                    .into_iter()
                    .map(|(p, b)| (p, String::from_utf8_lossy(&b).into_owned()))
                    .collect(),
            })
        });
    m
}

/// A hold as scripts carry it between `hold` and `release`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HoldMap {
    service: String,
    mode: String,
    targets: Vec<Target>,
}

fn mode_of(c: BackupConsistency) -> Mode {
    match c {
        BackupConsistency::Stop => Mode::Stop,
        BackupConsistency::Pause => Mode::Pause,
        BackupConsistency::Live => Mode::Live,
    }
}

fn hold_targets(cfg: &crate::config::ServiceConfig, src: &Map) -> RhaiResult<Vec<Target>> {
    Ok(match cfg.service_type {
        ServiceType::Systemd => cfg.unit.iter().cloned().map(Target::Unit).collect(),
        t if t == ServiceType::Docker || t.is_compose() => {
            let c: crate::archive::Capture = match src.get("capture") {
                Some(d) => rhai::serde::from_dynamic(&d.flatten_clone()).map_err(|e| {
                    throw(
                        "invalid_argument",
                        format!("consistency::hold: capture: {e}"),
                        None,
                    )
                })?,
                None => Default::default(),
            };
            c.containers
                .into_iter()
                .map(|c| Target::Container(c.name))
                .collect()
        }
        _ => Vec::new(),
    })
}

pub(super) fn consistency_module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("hold")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, src: Map| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "consistency::hold")?;
                let mode = mode_of(cfg.consistency());
                let targets = hold_targets(cfg, &src)?;
                let mut held = HoldMap {
                    service: cfg.name.clone(),
                    mode: mode.as_str().into(),
                    targets: Vec::new(),
                };
                if mode == Mode::Live || targets.is_empty() {
                    return to_dyn(&held);
                }
                let shown: Vec<String> = targets.iter().map(|t| t.to_string()).collect();
                if dry_run(
                    &h,
                    &ctx,
                    &format!("{} {} while archiving", mode.as_str(), shown.join(", ")),
                ) {
                    return to_dyn(&held);
                }
                let r = hold::hold(
                    h.store.as_deref(),
                    h.run_id,
                    &cfg.name,
                    mode,
                    &targets,
                    &hold::System,
                )
                .map_err(|e| to_rhai(e, &ctx))?;
                for t in &r.targets {
                    h.event(
                        tracing::Level::INFO,
                        Some(&cfg.name),
                        &format!(
                            "{} {t} while archiving",
                            if mode == Mode::Pause {
                                "paused"
                            } else {
                                "stopped"
                            }
                        ),
                    );
                }
                held.targets = r.targets;
                to_dyn(&held)
            },
        );
    let h = host.clone();
    FuncRegistration::new("release")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, held: Map| -> RhaiResult<()> {
                let hm: HoldMap = from_map(held, "consistency::release")?;
                let mode = Mode::parse(&hm.mode).ok_or_else(|| {
                    throw(
                        "invalid_argument",
                        format!("consistency::release: mode {:?}", hm.mode),
                        service_of(&ctx).as_deref(),
                    )
                })?;
                if hm.targets.is_empty() {
                    return Ok(());
                }
                let held = hold::Held {
                    service: hm.service.clone(),
                    mode,
                    targets: hm.targets,
                };
                hold::release(h.store.as_deref(), &held, &hold::System)
                    .map_err(|e| to_rhai(e, &ctx))?;
                for t in &held.targets {
                    h.event(
                        tracing::Level::INFO,
                        Some(&hm.service),
                        &format!(
                            "{} {t} again",
                            if mode == Mode::Pause {
                                "unpaused"
                            } else {
                                "started"
                            }
                        ),
                    );
                }
                Ok(())
            },
        );
    m
}
