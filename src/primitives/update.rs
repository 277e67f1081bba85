//! `update::` — the update transaction (docs/updates.md), thin over
//! [`crate::update`]:
//! - `update::plan(services)`: the services in update order (`depends_on`
//!   first); a cycle throws;
//! - `update::kind(svc)`: `#{kind, supported, reason}`;
//! - `update::blocked_by(svc)`: the dependency of `svc` whose update in
//!   this run did not end well, or `()`;
//! - `update::busy(svc)`: `()`, or why the service must not be touched
//!   now (a backup run holds its lock; a Proxmox guest is locked);
//! - `update::snapshot(svc)`: the record of what runs now;
//! - `update::check(svc, before)`: anything new? Pulls the images (nothing
//!   running changes); in a dry run asks the registries instead, pulling
//!   nothing. With `update.backup_volumes` and something new, the
//!   project's volumes are backed up here, by the backup workflow's
//!   `backup_service` (`volume_backup`: the catalog ID; a failed backup
//!   throws, so nothing has changed), and `update::begin` records that ID;
//! - `update::begin(svc, before)` → `txn`, `update::step(txn, step)`,
//!   `update::finish(txn, outcome, result)`: the transaction's row in the
//!   state DB (a dry run writes nothing);
//! - `update::apply(svc, txn)`, `update::rollback(svc, txn)`,
//!   `update::cleanup(svc, txn)`;
//! - `update::validate(svc[, #{timeout_seconds, soak_seconds,
//!   interval_seconds}])`: the monitor's checks until they pass, then the
//!   soak (defaults: `updates.health_check_timeout_seconds`,
//!   `updates.soak_seconds`);
//! - `update::before(txn)`, `update::current(txn)`: what ran / runs (image,
//!   ID, digest; for a guest its upgraded packages' versions, bounded:
//!   `#{count, packages: [#{name, from, to}], more, text}`);
//! - `update::unfinished()`: open transactions of processes that are gone.
//!
//! Lower-level, for scripts of their own: `docker::pull(ref)`,
//! `docker::image_digest(ref)`, `docker::recreate(container, ref)`,
//! `compose::pull(svc)`, `compose::up(svc)`.

use super::{dry_run, from_map, service_config, throw, to_dyn, to_rhai, RhaiResult};
use crate::script::Host;
use crate::update::{self, validate, Before, Outcome};
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How each service's update ended in this process's run (for
/// `blocked_by`; a dry run has no state DB to keep it in).
static OUTCOMES: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());

/// What `update::check` found per service that belongs in the record
/// `update::begin` writes next: the volume backup it took, a guest's
/// pending packages with their versions.
static CHECKED: Mutex<BTreeMap<String, Checked>> = Mutex::new(BTreeMap::new());

#[derive(Default)]
struct Checked {
    volume_backup: Option<i64>,
    packages: Vec<crate::pve::guest::PackageChange>,
}

/// `update.backup_volumes`: back up a Compose project before its update,
/// through the backup workflow's own step; the backup's catalog ID.
fn backup_volumes(h: &Host, ctx: &NativeCallContext, svc: &Map) -> RhaiResult<i64> {
    let name = svc.get("name").map(|n| n.to_string()).unwrap_or_default();
    h.event(
        tracing::Level::INFO,
        Some(&name),
        "update.backup_volumes: backing up the volumes before the update",
    );
    let r = super::workflow::run_step(h, ctx, "backup", "backup_service", svc.clone())?;
    let id = r
        .read_lock::<Map>()
        .and_then(|m| m.get("id").and_then(|i| i.as_int().ok()));
    match id {
        Some(id) if id > 0 => {
            h.event(
                tracing::Level::INFO,
                Some(&name),
                &format!("volumes backed up: backup {id}"),
            );
            Ok(id)
        }
        _ => Err(throw(
            "update",
            "update.backup_volumes: the backup workflow took no backup",
            Some(&name),
        )),
    }
}

/// The archive and checksum of a catalogued backup.
fn backup_archive(
    h: &Host,
    ctx: &NativeCallContext,
    id: i64,
) -> RhaiResult<(std::path::PathBuf, Option<String>)> {
    let row = match &h.store {
        Some(store) => store.backup(id).map_err(|e| to_rhai(e, ctx))?,
        None => None,
    };
    let b = row.ok_or_else(|| {
        throw(
            "not_found",
            format!("the volume backup {id} of the update is not in the catalog"),
            None,
        )
    })?;
    Ok((b.location.into(), b.sha256))
}

/// A transaction as scripts carry it.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Txn {
    id: Option<i64>,
    service: String,
    kind: String,
    before: Before,
    #[serde(default)]
    step: Option<String>,
    #[serde(default)]
    run_id: Option<i64>,
    #[serde(default)]
    started_at: Option<i64>,
}

fn txn_of(m: Map) -> RhaiResult<Txn> {
    from_map(m, "update transaction")
}

fn before_of(m: Map) -> RhaiResult<Before> {
    from_map(m, "update record")
}

fn cancelled(h: &Host) -> bool {
    use std::sync::atomic::Ordering;
    h.watch.cancel.load(Ordering::Relaxed)
        || h.watch
            .deadline
            .get()
            .copied()
            .flatten()
            .is_some_and(|d| std::time::Instant::now() >= d)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ValidateOpts {
    timeout_seconds: Option<u64>,
    soak_seconds: Option<u64>,
    interval_seconds: Option<u64>,
}

fn plan(h: &Host, services: Array) -> RhaiResult<Array> {
    let mut named = Vec::new();
    let mut by_name = BTreeMap::new();
    for s in services {
        let m = s.clone().try_cast::<Map>().ok_or_else(|| {
            throw(
                "invalid_argument",
                "update::plan: a service is not a map",
                None,
            )
        })?;
        let cfg = service_config(h, &m, "update::plan")?;
        named.push((cfg.name.clone(), cfg.depends_on.clone()));
        by_name.insert(cfg.name.clone(), s);
    }
    let order = update::order(&named).map_err(|e| throw(e.kind(), e.to_string(), None))?;
    Ok(order
        .into_iter()
        .filter_map(|n| by_name.remove(&n))
        .collect())
}

fn note_outcome(service: &str, outcome: &str) {
    OUTCOMES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(service.to_string(), outcome.to_string());
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("plan")
        .with_volatility(true)
        .set_into_module(&mut m, move |services: Array| plan(&h, services));
    let h = host.clone();
    FuncRegistration::new("kind")
        .with_volatility(true)
        .set_into_module(&mut m, move |svc: Map| -> RhaiResult<Dynamic> {
            let cfg = service_config(&h, &svc, "update::kind")?;
            let mut out = Map::new();
            match update::kind_of(&h.config, cfg) {
                Ok(k) => {
                    out.insert("kind".into(), k.into());
                    out.insert("supported".into(), true.into());
                    out.insert("reason".into(), Dynamic::UNIT);
                }
                Err(why) => {
                    out.insert("kind".into(), Dynamic::UNIT);
                    out.insert("supported".into(), false.into());
                    out.insert("reason".into(), why.into());
                }
            }
            Ok(out.into())
        });
    let h = host.clone();
    FuncRegistration::new("blocked_by")
        .with_volatility(true)
        .set_into_module(&mut m, move |svc: Map| -> RhaiResult<Dynamic> {
            let cfg = service_config(&h, &svc, "update::blocked_by")?;
            let done = OUTCOMES.lock().unwrap_or_else(|e| e.into_inner());
            for d in &cfg.depends_on {
                if let Some(o) = done.get(d) {
                    let bad =
                        Outcome::parse(o).is_none_or(|o| o.is_failure() || (o == Outcome::Skipped));
                    if bad {
                        let mut out = Map::new();
                        out.insert("service".into(), d.clone().into());
                        out.insert("outcome".into(), o.clone().into());
                        return Ok(out.into());
                    }
                }
            }
            Ok(Dynamic::UNIT)
        });
    let h = host.clone();
    FuncRegistration::new("busy")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "update::busy")?;
                Ok(update::busy(&h.config, cfg, &h.paths.lock_dir)
                    .map_err(|e| to_rhai(e, &ctx))?
                    .map_or(Dynamic::UNIT, Dynamic::from))
            },
        );
    let h = host.clone();
    FuncRegistration::new("snapshot")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "update::snapshot")?;
                let b = update::snapshot(&h.config, cfg, &h.paths.state_dir)
                    .map_err(|e| to_rhai(e, &ctx))?;
                to_dyn(&b)
            },
        );
    let h = host.clone();
    FuncRegistration::new("check")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, before: Map| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "update::check")?;
                let before = before_of(before)?;
                let c = update::check(&h.config, cfg, &before, !h.dry_run)
                    .map_err(|e| to_rhai(e, &ctx))?;
                let mut out = to_dyn(&c)?;
                if let (Some(text), Some(mut m)) = (c.changed(), out.write_lock::<Map>()) {
                    m.insert("changed".into(), text.into());
                }
                let mut checked = Checked::default();
                if let Before::Guest { .. } = before {
                    let changes = update::guest::Packages::new(&c.changes);
                    if c.available {
                        h.event(
                            tracing::Level::INFO,
                            Some(&cfg.name),
                            &format!("upgradable: {}", changes.text),
                        );
                    }
                    if let Some(mut m) = out.write_lock::<Map>() {
                        m.insert("changes".into(), to_dyn(&changes)?);
                    }
                    checked.packages = c.changes.clone();
                }
                let wanted = cfg.update.as_ref().is_some_and(|u| u.backup_volumes);
                if c.available && wanted && !h.dry_run {
                    if let Before::DockerCompose { .. } = before {
                        let id = backup_volumes(&h, &ctx, &svc)?;
                        checked.volume_backup = Some(id);
                        if let Some(mut m) = out.write_lock::<Map>() {
                            m.insert("volume_backup".into(), Dynamic::from(id));
                        }
                    }
                }
                CHECKED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(cfg.name.clone(), checked);
                Ok(out)
            },
        );
    let h = host.clone();
    FuncRegistration::new("begin")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, before: Map| -> RhaiResult<Dynamic> {
                let cfg = service_config(&h, &svc, "update::begin")?;
                let mut before = before_of(before)?;
                let checked = CHECKED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&cfg.name)
                    .unwrap_or_default();
                match &mut before {
                    Before::DockerCompose { volume_backup, .. }
                        if checked.volume_backup.is_some() =>
                    {
                        *volume_backup = checked.volume_backup;
                    }
                    Before::Guest { packages, .. } if packages.is_empty() => {
                        *packages = checked.packages;
                    }
                    _ => {}
                }
                let mut id = None;
                if let (Some(store), false) = (&h.store, h.dry_run) {
                    let pid = std::process::id();
                    let start = crate::docker::hold::pid_start(pid).unwrap_or(0);
                    let v = serde_json::to_value(&before)
                        .map_err(|e| throw("internal", e.to_string(), Some(&cfg.name)))?;
                    id = Some(
                        store
                            .update_begin(h.run_id, &cfg.name, before.kind(), &v, pid, start)
                            .map_err(|e| to_rhai(e, &ctx))?,
                    );
                }
                to_dyn(&Txn {
                    id,
                    service: cfg.name.clone(),
                    kind: before.kind().into(),
                    before,
                    step: Some("recorded".into()),
                    run_id: h.run_id,
                    started_at: Some(chrono::Utc::now().timestamp()),
                })
            },
        );
    let h = host.clone();
    FuncRegistration::new("step")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, txn: Map, step: &str| -> RhaiResult<()> {
                let t = txn_of(txn)?;
                // A dry run writes nothing, also to a killed run's open row.
                if let (Some(store), Some(id), false) = (&h.store, t.id, h.dry_run) {
                    store.update_step(id, step).map_err(|e| to_rhai(e, &ctx))?;
                }
                Ok(())
            },
        );
    let h = host.clone();
    FuncRegistration::new("finish")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, txn: Map, outcome: &str, result: Map| -> RhaiResult<()> {
                let t = txn_of(txn)?;
                finish(&h, &ctx, &t.service, t.id, outcome, result)
            },
        );
    let h = host.clone();
    FuncRegistration::new("record")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, outcome: &str, result: Map| -> RhaiResult<()> {
                // An outcome reached without a transaction (skipped, up to
                // date before anything was recorded, a failed pre-check).
                let cfg = service_config(&h, &svc, "update::record")?;
                let kind = update::kind_of(&h.config, cfg).unwrap_or("none");
                let id = match (&h.store, h.dry_run) {
                    (Some(store), false) => Some(
                        store
                            .update_begin(
                                h.run_id,
                                &cfg.name,
                                kind,
                                &serde_json::json!({}),
                                std::process::id(),
                                0,
                            )
                            .map_err(|e| to_rhai(e, &ctx))?,
                    ),
                    _ => None,
                };
                finish(&h, &ctx, &cfg.name, id, outcome, result)
            },
        );
    let h = host.clone();
    FuncRegistration::new("apply")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, txn: Map| -> RhaiResult<()> {
                let cfg = service_config(&h, &svc, "update::apply")?;
                let t = txn_of(txn)?;
                if dry_run(&h, &ctx, &format!("apply the {} update", t.kind)) {
                    return Ok(());
                }
                update::apply(&h.config, cfg, &t.before).map_err(|e| to_rhai(e, &ctx))
            },
        );
    let h = host.clone();
    FuncRegistration::new("rollback")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, txn: Map| -> RhaiResult<Array> {
                let cfg = service_config(&h, &svc, "update::rollback")?;
                let t = txn_of(txn)?;
                if dry_run(&h, &ctx, "roll back") {
                    return Ok(Array::new());
                }
                let mut notes = Vec::new();
                if let Before::DockerCompose {
                    volume_backup: Some(id),
                    ..
                } = &t.before
                {
                    // The containers stop and the volumes come back before
                    // the old images start.
                    let (archive, sha256) = backup_archive(&h, &ctx, *id)?;
                    notes =
                        update::restore_volumes(&t.before, &archive, sha256, h.store.as_deref())
                            .map_err(|e| to_rhai(e, &ctx))?;
                }
                notes.extend(
                    update::rollback(&h.config, cfg, &t.before).map_err(|e| to_rhai(e, &ctx))?,
                );
                for n in &notes {
                    h.event(tracing::Level::INFO, Some(&cfg.name), n);
                }
                Ok(notes.into_iter().map(Dynamic::from).collect())
            },
        );
    let h = host.clone();
    FuncRegistration::new("cleanup")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, txn: Map| -> RhaiResult<Array> {
                let cfg = service_config(&h, &svc, "update::cleanup")?;
                let t = txn_of(txn)?;
                if dry_run(&h, &ctx, "remove the previous images") {
                    return Ok(Array::new());
                }
                let notes = update::cleanup(&h.config, &t.before);
                for n in &notes {
                    h.event(tracing::Level::INFO, Some(&cfg.name), n);
                }
                Ok(notes.into_iter().map(Dynamic::from).collect())
            },
        );
    let h = host.clone();
    FuncRegistration::new("validate")
        .with_volatility(true)
        .set_into_module(&mut m, move |svc: Map| validate_fn(&h, svc, Map::new()));
    let h = host.clone();
    FuncRegistration::new("validate")
        .with_volatility(true)
        .set_into_module(&mut m, move |svc: Map, opts: Map| {
            validate_fn(&h, svc, opts)
        });
    FuncRegistration::new("before")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, txn: Map| -> RhaiResult<Dynamic> {
                let t = txn_of(txn)?;
                if let Before::Guest { .. } = t.before {
                    return to_dyn(&update::guest::packages_before(&t.before));
                }
                to_dyn(&update::previous(&t.before).map_err(|e| to_rhai(e, &ctx))?)
            },
        );
    let h = host.clone();
    FuncRegistration::new("current")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, txn: Map| -> RhaiResult<Dynamic> {
                let t = txn_of(txn)?;
                if let Before::Guest { .. } = t.before {
                    return to_dyn(&update::guest::packages_now(&h.config, &t.before));
                }
                to_dyn(&update::current(&t.before).map_err(|e| to_rhai(e, &ctx))?)
            },
        );
    let h = host.clone();
    FuncRegistration::new("unfinished")
        .with_volatility(true)
        .set_into_module(&mut m, move |ctx: NativeCallContext| -> RhaiResult<Array> {
            let Some(store) = &h.store else {
                return Ok(Array::new());
            };
            let rows = store.updates_open().map_err(|e| to_rhai(e, &ctx))?;
            let mut out = Array::new();
            for r in rows {
                let alive = r.pid.is_some_and(|p| {
                    crate::docker::hold::pid_start(p).is_some()
                        && crate::docker::hold::pid_start(p) == r.pid_start
                });
                if alive {
                    continue;
                }
                let Ok(before) = serde_json::from_value::<Before>(r.before.clone()) else {
                    // Nothing recorded that could be undone: close it.
                    if !h.dry_run {
                        store
                            .update_finish(
                                r.id,
                                Outcome::Aborted.as_str(),
                                None,
                                &serde_json::json!({"message": "unreadable record"}),
                            )
                            .map_err(|e| to_rhai(e, &ctx))?;
                    }
                    continue;
                };
                out.push(to_dyn(&Txn {
                    id: Some(r.id),
                    service: r.service,
                    kind: r.kind,
                    before,
                    step: Some(r.step),
                    run_id: r.run_id,
                    started_at: Some(r.started_at),
                })?);
            }
            Ok(out)
        });
    m
}

fn finish(
    h: &Host,
    ctx: &NativeCallContext,
    service: &str,
    id: Option<i64>,
    outcome: &str,
    result: Map,
) -> RhaiResult<()> {
    if Outcome::parse(outcome).is_none() {
        return Err(throw(
            "invalid_argument",
            format!("update::finish: unknown outcome {outcome:?} (one of updated, up_to_date, skipped, rolled_back, aborted, rollback_failed)"),
            Some(service),
        ));
    }
    note_outcome(service, outcome);
    if let (Some(store), Some(id), false) = (&h.store, id, h.dry_run) {
        let v = crate::script::host::dynamic_to_json(&Dynamic::from_map(result));
        let after = v.get("after").cloned();
        store
            .update_finish(id, outcome, after.as_ref(), &v)
            .map_err(|e| to_rhai(e, ctx))?;
    }
    Ok(())
}

fn validate_fn(h: &Host, svc: Map, opts: Map) -> RhaiResult<Dynamic> {
    let cfg = service_config(h, &svc, "update::validate")?;
    let o: ValidateOpts = from_map(opts, "update::validate options")?;
    let u = &h.config.updates;
    let opts = validate::Options {
        timeout: Duration::from_secs(o.timeout_seconds.unwrap_or(u.health_check_timeout_seconds)),
        soak: Duration::from_secs(o.soak_seconds.unwrap_or(u.soak_seconds)),
        interval: Duration::from_secs(o.interval_seconds.unwrap_or(2).max(1)),
    };
    let v = validate::validate(&h.config, cfg, opts, &|| cancelled(h));
    h.event(
        if v.ok {
            tracing::Level::INFO
        } else {
            tracing::Level::WARN
        },
        Some(&cfg.name),
        &format!("validation: {}", v.message),
    );
    to_dyn(&v)
}

/// `compose::` — `pull(svc)` and `up(svc)` of a docker_compose service.
pub(super) fn compose_module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    for (name, up) in [("pull", false), ("up", true)] {
        let h = host.clone();
        FuncRegistration::new(name)
            .with_volatility(true)
            .set_into_module(
                &mut m,
                move |ctx: NativeCallContext, svc: Map| -> RhaiResult<()> {
                    let cfg = service_config(&h, &svc, &format!("compose::{name}"))?;
                    let (Some(file), Some(project)) = (
                        cfg.compose_file.clone(),
                        crate::monitor::compose_project(cfg),
                    ) else {
                        return Err(throw(
                            "config",
                            format!("compose::{name}: not a docker_compose service"),
                            Some(&cfg.name),
                        ));
                    };
                    if dry_run(
                        &h,
                        &ctx,
                        &format!("run compose {name} for project {project}"),
                    ) {
                        return Ok(());
                    }
                    let r = if up {
                        crate::docker::compose::up(&file, &project)
                    } else {
                        crate::docker::compose::pull(&file, &project)
                    };
                    r.map_err(|e| to_rhai(e, &ctx))
                },
            );
    }
    m
}

/// `docker::pull`, `docker::image_digest`, `docker::recreate`, registered
/// into the `docker` module.
pub(super) fn register_docker(host: &Arc<Host>, m: &mut Module) {
    let h = host.clone();
    FuncRegistration::new("pull")
        .with_volatility(true)
        .set_into_module(
            m,
            move |ctx: NativeCallContext, reference: &str| -> RhaiResult<Dynamic> {
                if dry_run(&h, &ctx, &format!("pull {reference}")) {
                    return Ok(Dynamic::UNIT);
                }
                to_dyn(&crate::docker::image::pull(reference).map_err(|e| to_rhai(e, &ctx))?)
            },
        );
    FuncRegistration::new("image_digest")
        .with_volatility(true)
        .set_into_module(
            m,
            move |ctx: NativeCallContext, reference: &str| -> RhaiResult<Dynamic> {
                let info =
                    crate::docker::image::inspect(reference).map_err(|e| to_rhai(e, &ctx))?;
                match info {
                    None => Ok(Dynamic::UNIT),
                    Some(i) => {
                        let mut out = Map::new();
                        out.insert("id".into(), i.id.clone().into());
                        out.insert(
                            "digest".into(),
                            i.digest_for(reference)
                                .map(Dynamic::from)
                                .unwrap_or(Dynamic::UNIT),
                        );
                        out.insert(
                            "repo_digests".into(),
                            Dynamic::from_array(
                                i.repo_digests.into_iter().map(Dynamic::from).collect(),
                            ),
                        );
                        Ok(out.into())
                    }
                }
            },
        );
    let h = host.clone();
    FuncRegistration::new("recreate")
        .with_volatility(true)
        .set_into_module(
            m,
            move |ctx: NativeCallContext,
                  container: &str,
                  reference: &str|
                  -> RhaiResult<Dynamic> {
                if dry_run(&h, &ctx, &format!("recreate {container} on {reference}")) {
                    return Ok(Dynamic::UNIT);
                }
                to_dyn(
                    &crate::docker::recreate::recreate(container, reference)
                        .map_err(|e| to_rhai(e, &ctx))?,
                )
            },
        );
}
