//! `restore_test::` for the restore-test workflow (docs/restore-testing.md):
//! - `sweep()`: remove the copies earlier runs left (a killed run's, and
//!   those whose `cleanup_delay_minutes` has passed); the lines logged.
//! - `select(services)`: the services to test this run (all of them when
//!   they were named with `--service`).
//! - `latest_backup(svc)`: the newest verified archive row, or `()`.
//! - `backup(svc, id)`: the catalog row `id`; an error when it is not a
//!   backup of `svc`.
//! - `begin(svc, backup)`: the test's row and temp dir; the environment map.
//! - `restore(env)`: extract, compare with the manifest, build and start a
//!   Docker copy; the environment map with what was made.
//! - `check(svc, env)`: the checks against the copy, retried until all pass
//!   or the RTO target; `#{checks, passed_at_ms}`.
//! - `finish(env, checked[, error])`: record the outcome; the result map
//!   (`ok`, `rto_seconds`, `rpo_seconds`, `checks`, `backup_id`, `summary`).
//! - `cleanup(env)`: remove the copy now when `cleanup_delay_minutes` is 0,
//!   else leave it for a later run; `remove(env)`: remove it now.

use super::{dry_run, from_map, service_config, strings, to_dyn, to_rhai, RhaiResult};
use crate::restoretest::{self, Checked, Environment};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use std::sync::Arc;
use std::time::Duration;

fn store<'a>(h: &'a Host, what: &str) -> RhaiResult<&'a crate::state::Store> {
    h.store
        .as_deref()
        .ok_or_else(|| super::throw("state", format!("{what}: no state database"), None))
}

fn env_of(env: Map) -> RhaiResult<Environment> {
    from_map(env, "restore_test environment")
}

fn log_env(h: &Host, env: &Environment, line: &str) {
    h.event(tracing::Level::INFO, Some(&env.service), line);
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("sweep")
        .with_volatility(true)
        .set_into_module(&mut m, move |ctx: NativeCallContext| -> RhaiResult<Array> {
            if h.dry_run {
                return Ok(Array::new());
            }
            let s = store(&h, "restore_test::sweep")?;
            let lines = restoretest::sweep(s, &h.config, h.run_id).map_err(|e| to_rhai(e, &ctx))?;
            for l in &lines {
                let level = if l.starts_with("could not") {
                    tracing::Level::WARN
                } else {
                    tracing::Level::INFO
                };
                h.event(level, None, l);
            }
            Ok(lines.into_iter().map(Dynamic::from).collect())
        });
    let h = host.clone();
    FuncRegistration::new("select")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, services: Array| -> RhaiResult<Array> {
                let names: Vec<String> = services
                    .iter()
                    .filter_map(|s| {
                        s.read_lock::<Map>()
                            .and_then(|m| m.get("name").map(|n| n.to_string()))
                    })
                    .collect();
                let cfgs: Vec<&crate::config::ServiceConfig> = names
                    .iter()
                    .filter_map(|n| h.config.services.iter().find(|s| &s.name == n))
                    .collect();
                let enabled: Vec<&str> = h
                    .config
                    .services
                    .iter()
                    .filter(|s| s.enabled)
                    .map(|s| s.name.as_str())
                    .collect();
                let chosen = names.iter().map(String::as_str).collect::<Vec<_>>() != enabled;
                let picked = restoretest::select(&h.config, h.store.as_deref(), &cfgs, chosen)
                    .map_err(|e| to_rhai(e, &ctx))?;
                Ok(picked
                    .iter()
                    .filter_map(|p| {
                        services
                            .iter()
                            .find(|s| {
                                s.read_lock::<Map>()
                                    .and_then(|m| m.get("name").map(|n| n.to_string()))
                                    .as_deref()
                                    == Some(p.as_str())
                            })
                            .cloned()
                    })
                    .collect())
            },
        );
    let h = host.clone();
    FuncRegistration::new("latest_backup")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "restore_test::latest_backup")?;
                let Some(s) = h.store.as_deref() else {
                    return Ok(Dynamic::UNIT);
                };
                match restoretest::latest_backup(s, &cfg.name).map_err(|e| to_rhai(e, &ctx))? {
                    Some(b) => to_dyn(&b),
                    None => Ok(Dynamic::UNIT),
                }
            },
        );
    let h = host.clone();
    FuncRegistration::new("backup")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, id: i64| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "restore_test::backup")?;
                let row = match h.store.as_deref() {
                    Some(s) => s.backup(id).map_err(|e| to_rhai(e, &ctx))?,
                    None => None,
                };
                match row {
                    Some(b) if b.service == cfg.name => to_dyn(&b),
                    Some(b) => Err(super::throw(
                        "invalid_argument",
                        format!(
                            "restore_test::backup: backup {id} belongs to service {}",
                            b.service
                        ),
                        Some(&cfg.name),
                    )),
                    None => Err(super::throw(
                        "not_found",
                        format!("restore_test::backup: no backup with id {id}"),
                        Some(&cfg.name),
                    )),
                }
            },
        );
    let h = host.clone();
    FuncRegistration::new("begin")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, backup: Map| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "restore_test::begin")?;
                let id = backup
                    .get("id")
                    .and_then(|v| v.as_int().ok())
                    .ok_or_else(|| {
                        super::throw(
                            "invalid_argument",
                            "restore_test::begin: backup.id missing",
                            Some(&cfg.name),
                        )
                    })?;
                let b = match h.store.as_deref() {
                    Some(s) => s.backup(id).map_err(|e| to_rhai(e, &ctx))?,
                    None => None,
                };
                let Some(b) = b else {
                    return Err(super::throw(
                        "not_found",
                        format!("restore_test::begin: no backup with id {id}"),
                        Some(&cfg.name),
                    ));
                };
                let plan =
                    if restoretest::kind_for(cfg.service_type) == Some(restoretest::KIND_GUEST) {
                        // Reads only: the free VMID, the node.
                        if h.dry_run {
                            restoretest::guest::describe_plan(&h.config, cfg, &b)
                        } else {
                            String::new()
                        }
                    } else {
                        format!(
                            "restore backup {} ({}) into an isolated copy",
                            b.id, b.location
                        )
                    };
                if dry_run(&h, &ctx, &plan) {
                    let mut m = Map::new();
                    m.insert("dry_run".into(), true.into());
                    m.insert("backup_id".into(), Dynamic::from(b.id));
                    return Ok(m.into());
                }
                let s = store(&h, "restore_test::begin")?;
                let env = restoretest::begin(s, h.run_id, &h.paths.state_dir, cfg, &b)
                    .map_err(|e| to_rhai(e, &ctx))?;
                log_env(
                    &h,
                    &env,
                    &format!("restore test {}: backup {} ({})", env.id, b.id, b.location),
                );
                to_dyn(&env)
            },
        );
    let h = host.clone();
    FuncRegistration::new("restore")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, env: Map| -> RhaiResult<Dynamic> {
                let mut env = env_of(env)?;
                let s = store(&h, "restore_test::restore")?;
                let res = if env.kind == restoretest::KIND_GUEST {
                    let svc = h
                        .config
                        .services
                        .iter()
                        .find(|c| c.name == env.service)
                        .ok_or_else(|| {
                            super::throw(
                                "not_found",
                                format!("restore_test::restore: no service {}", env.service),
                                None,
                            )
                        })?;
                    restoretest::guest::restore(s, &h.config, svc, &mut env)
                } else {
                    restoretest::restore(s, &mut env)
                };
                // What was made is in the map either way, for cleanup.
                res.map_err(|e| to_rhai(e, &ctx))?;
                if let Some(p) = &env.project {
                    log_env(
                        &h,
                        &env,
                        &format!(
                            "copy {p} started on internal network {}: {}",
                            env.network.as_deref().unwrap_or(""),
                            env.containers
                                .iter()
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    );
                }
                if let Some(g) = &env.guest {
                    log_env(
                        &h,
                        &env,
                        &format!(
                            "copy {} ({} {}) started on node {} ({}: {})",
                            g.name,
                            g.kind,
                            g.vmid.unwrap_or_default(),
                            g.node,
                            g.environment,
                            g.network
                        ),
                    );
                }
                for n in &env.notes {
                    h.event(tracing::Level::WARN, Some(&env.service), n);
                }
                to_dyn(&env)
            },
        );
    let h = host.clone();
    FuncRegistration::new("check")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |_ctx: NativeCallContext, svc: Map, env: Map| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "restore_test::check")?;
                let env = env_of(env)?;
                let target = h.config.global.backup.restore_testing().rto_target_minutes;
                let mut allowed = Duration::from_secs(u64::from(target) * 60);
                if let Ok(left) = h.remaining() {
                    allowed = allowed.min(left.saturating_sub(Duration::from_secs(5)));
                }
                let watch = h.watch.clone();
                let cancel = move || watch.cancel.load(std::sync::atomic::Ordering::Relaxed);
                let checked = if env.kind == restoretest::KIND_GUEST {
                    restoretest::guest::run_checks(&h.config, cfg, &env, allowed, &cancel)
                } else {
                    restoretest::run_checks(&h.config, cfg, &env, allowed, &cancel)
                };
                to_dyn(&checked)
            },
        );
    let h = host.clone();
    let finish = move |ctx: &NativeCallContext,
                       env: Map,
                       checked: Map,
                       error: Option<String>|
          -> RhaiResult<Dynamic> {
        let env = env_of(env)?;
        let checked: Checked = from_map(checked, "restore_test::finish checked")?;
        let s = store(&h, "restore_test::finish")?;
        let r = restoretest::finish(s, &h.config, &env, &checked, error)
            .map_err(|e| to_rhai(e, ctx))?;
        let level = if r.ok {
            tracing::Level::INFO
        } else {
            tracing::Level::ERROR
        };
        h.event(level, Some(&env.service), &r.summary);
        to_dyn(&r)
    };
    let f2 = finish.clone();
    FuncRegistration::new("finish")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, env: Map, checked: Map| f2(&ctx, env, checked, None),
        );
    FuncRegistration::new("finish")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, env: Map, checked: Map, error: Dynamic| {
                let e = if error.is_unit() {
                    None
                } else if let Some(m) = error.read_lock::<Map>() {
                    Some(
                        m.get("message")
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| format!("{m:?}")),
                    )
                } else {
                    Some(error.to_string())
                };
                finish(&ctx, env, checked, e)
            },
        );
    let h = host.clone();
    FuncRegistration::new("cleanup")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, env: Map| -> RhaiResult<Dynamic> {
                let env = env_of(env)?;
                let rt = h.config.global.backup.restore_testing();
                let mut out = Map::new();
                if rt.cleanup_after_test && rt.cleanup_delay_minutes == 0 {
                    let s = store(&h, "restore_test::cleanup")?;
                    let rm = restoretest::remove(s, &h.config, env.id, Some(&env.dir))
                        .map_err(|e| to_rhai(e, &ctx))?;
                    let line = if env.kind == restoretest::KIND_GUEST {
                        // The record: the script's map may predate the restore.
                        let rec = s
                            .restore_test(env.id)
                            .ok()
                            .flatten()
                            .map(|r| r.environment)
                            .unwrap_or_default();
                        format!(
                            "removed the copy of restore test {}: {}",
                            env.id,
                            restoretest::guest::describe(&rec)
                        )
                    } else {
                        format!(
                            "removed the copy of restore test {}: {} container(s), {} network(s), \
                             {} volume(s)",
                            env.id,
                            rm.containers.len(),
                            rm.networks.len(),
                            rm.volumes.len()
                        )
                    };
                    log_env(&h, &env, &line);
                    out.insert("removed".into(), true.into());
                } else {
                    let line = if rt.cleanup_after_test {
                        format!(
                            "the copy of restore test {} stays {} minute(s) for inspection; a \
                             later run removes it",
                            env.id, rt.cleanup_delay_minutes
                        )
                    } else {
                        format!(
                            "the copy of restore test {} is kept (cleanup_after_test: false)",
                            env.id
                        )
                    };
                    log_env(&h, &env, &line);
                    out.insert("removed".into(), false.into());
                }
                Ok(out.into())
            },
        );
    let h = host.clone();
    FuncRegistration::new("remove")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, env: Map| -> RhaiResult<()> {
                let env = env_of(env)?;
                let s = store(&h, "restore_test::remove")?;
                restoretest::remove(s, &h.config, env.id, Some(&env.dir))
                    .map_err(|e| to_rhai(e, &ctx))?;
                Ok(())
            },
        );
    let _ = strings;
    m
}
