//! `pbs::` for scripts: Proxmox Backup Server (`global.backup.
//! proxmox_backup_server`): snapshots with their verification state, start
//! a verify, datastore status, prune simulation, and host-path backups with
//! `proxmox-backup-client` (`pbs_backup` in the design card).
//!
//! ```rhai
//! for s in pbs::snapshots(#{ type: "vm", id: "100" }) { print(`${s.backup_time} ${s.verification}`); }
//! if pbs::client_available() { pbs::backup(svc); }
//! ```

use super::pve::pve_err;
use super::{dry_run, from_map, service_config, service_of, throw, to_dyn, RhaiResult};
use crate::config::ProxmoxBackupServerConfig;
use crate::pve::pbs::{client_backup, client_installed, ClientBackup, KeepOptions, Pbs};
use crate::pve::{connect, PveError};
use crate::script::Host;
use rhai::{Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const CLIENT: &str = "proxmox-backup-client";

type Shared = Arc<OnceLock<Result<Arc<Pbs>, Arc<PveError>>>>;

fn cfg(host: &Host) -> Option<&ProxmoxBackupServerConfig> {
    host.config.global.backup.proxmox_backup_server.as_ref()
}

fn client(host: &Host, cell: &Shared, ctx: &NativeCallContext) -> RhaiResult<Arc<Pbs>> {
    cell.get_or_init(|| {
        let p = cfg(host).ok_or_else(|| {
            PveError::Config("global.backup.proxmox_backup_server is not configured".into())
        })?;
        let (pbs, warnings) = connect::pbs_from_config(p)?;
        for w in warnings {
            host.event(tracing::Level::WARN, None, &w);
        }
        Ok(Arc::new(pbs))
    })
    .clone()
    .map_err(|e| throw(e.kind(), e.to_string(), service_of(ctx).as_deref()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Select {
    store: Option<String>,
    ns: Option<String>,
    #[serde(rename = "type")]
    backup_type: Option<String>,
    id: Option<String>,
    time: Option<i64>,
}

fn store_of(host: &Host, s: &Option<String>) -> RhaiResult<String> {
    s.clone()
        .or_else(|| cfg(host).and_then(|c| c.datastore.clone()))
        .ok_or_else(|| {
            throw(
                "config",
                "no datastore: set global.backup.proxmox_backup_server.datastore or pass store",
                None,
            )
        })
}

fn ns_of(host: &Host, s: &Option<String>) -> Option<String> {
    s.clone()
        .or_else(|| cfg(host).and_then(|c| c.namespace.clone()))
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let cell: Shared = Arc::new(OnceLock::new());
    let v = |name: &str| FuncRegistration::new(name).with_volatility(true);

    let (h, c) = (host.clone(), cell.clone());
    v("snapshots").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, sel: Map| -> RhaiResult<Dynamic> {
            let s: Select = from_map(sel, "pbs::snapshots")?;
            let pbs = client(&h, &c, &ctx)?;
            let store = store_of(&h, &s.store)?;
            let r = pbs
                .snapshots(
                    &store,
                    ns_of(&h, &s.ns).as_deref(),
                    s.backup_type.as_deref(),
                    s.id.as_deref(),
                )
                .map_err(|e| pve_err(e, &ctx))?;
            to_dyn(&r)
        },
    );
    let (h, c) = (host.clone(), cell.clone());
    v("verify").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, sel: Map| -> RhaiResult<Dynamic> {
            let s: Select = from_map(sel, "pbs::verify")?;
            let store = store_of(&h, &s.store)?;
            if dry_run(&h, &ctx, &format!("verify datastore {store}")) {
                return Ok(Dynamic::UNIT);
            }
            let pbs = client(&h, &c, &ctx)?;
            let ns = ns_of(&h, &s.ns);
            let (kind, id) = (s.backup_type.as_deref(), s.id.as_deref());
            // Its task wait ends by the run's deadline, which then stops the run.
            let r = crate::proc::until(h.deadline()?, || {
                pbs.verify(&store, ns.as_deref(), kind, id, s.time)
            });
            if r.is_err() {
                h.remaining()?;
            }
            let r = r.map_err(|e| pve_err(e, &ctx))?;
            to_dyn(&r)
        },
    );
    let (h, c) = (host.clone(), cell.clone());
    v("status").set_into_module(
        &mut m,
        move |ctx: NativeCallContext| -> RhaiResult<Dynamic> {
            let pbs = client(&h, &c, &ctx)?;
            let store = store_of(&h, &None)?;
            to_dyn(&pbs.status(&store).map_err(|e| pve_err(e, &ctx))?)
        },
    );
    let (h, c) = (host.clone(), cell.clone());
    v("prune_simulate").set_into_module(
        &mut m,
        move |ctx: NativeCallContext,
              backup_type: &str,
              id: &str,
              keep: Map|
              -> RhaiResult<Dynamic> {
            let k: KeepOptions = from_map(keep, "pbs::prune_simulate keep options")?;
            let pbs = client(&h, &c, &ctx)?;
            let store = store_of(&h, &None)?;
            let r = pbs
                .prune_simulate(&store, ns_of(&h, &None).as_deref(), backup_type, id, &k)
                .map_err(|e| pve_err(e, &ctx))?;
            to_dyn(&r)
        },
    );
    v("client_available").set_into_module(&mut m, || client_installed(CLIENT));
    let h = host.clone();
    v("backup").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, svc: Map| -> RhaiResult<Dynamic> {
            // Host paths to PBS with proxmox-backup-client (secrets via env).
            let p = cfg(&h).ok_or_else(|| {
                throw(
                    "config",
                    "global.backup.proxmox_backup_server is not configured",
                    None,
                )
            })?;
            let service = service_config(&h, &svc, "pbs::backup")?;
            let name = service.name.clone();
            let paths: Vec<(String, String)> = service
                .backup_paths
                .iter()
                .filter(|p| p.path.is_dir())
                .map(|p| p.path.display().to_string())
                .map(|p| {
                    let n: String = p
                        .trim_matches('/')
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                        .collect();
                    (if n.is_empty() { "root".into() } else { n }, p)
                })
                .collect();
            if paths.is_empty() {
                return Err(throw(
                    "config",
                    format!("service {name}: no existing directory to back up with {CLIENT}"),
                    Some(&name),
                ));
            }
            let server = p
                .server
                .clone()
                .ok_or_else(|| throw("config", "proxmox_backup_server.server is not set", None))?;
            let store = p.datastore.clone().ok_or_else(|| {
                throw("config", "proxmox_backup_server.datastore is not set", None)
            })?;
            let user = p
                .username
                .clone()
                .map(|u| format!("{u}@"))
                .unwrap_or_default();
            let repository = format!("{user}{server}:{}:{store}", p.port);
            if dry_run(
                &h,
                &ctx,
                &format!(
                    "back up {} to PBS {server}:{store} with {CLIENT}",
                    paths
                        .iter()
                        .map(|p| p.1.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ) {
                return Ok(Dynamic::UNIT);
            }
            let password = match p.password_source() {
                Some(s) => Some(s.resolve().map_err(|e| super::to_rhai(e, &ctx))?),
                None => None,
            };
            let b = ClientBackup {
                repository: repository.clone(),
                password,
                fingerprint: p.fingerprint.first().cloned(),
                namespace: p.namespace.clone(),
                backup_id: h.hostname.clone(),
                paths,
                timeout: Duration::from_secs(6 * 3600),
                program: CLIENT.into(),
            };
            // Ends by the run's deadline, which then stops the run.
            let out = crate::proc::until(h.deadline()?, || client_backup(&b));
            if out.is_err() {
                h.remaining()?;
            }
            let out = out.map_err(|e| pve_err(e, &ctx))?;
            let mut r = Map::new();
            r.insert("repository".into(), repository.into());
            r.insert("output".into(), out.into());
            Ok(r.into())
        },
    );
    m
}
