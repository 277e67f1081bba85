//! `pve::` for scripts: Proxmox VE guests (snapshots, vzdump, restore,
//! clone, power, destroy, guest agent), node and cluster status, and the
//! checks and retention of vzdump backups we keep ourselves.
//!
//! A guest is given as a service map (`svc`, with `vmid`, `type` and
//! optionally `node`) or as a bare VMID (its node and type are then looked
//! up in `/cluster/resources`). Every mutating call honours `--dry-run`.
//! Errors are thrown as maps; `e.kind` is one of `guest_locked`,
//! `task_failed`, `tls_pin_mismatch`, `unreachable`, `auth`,
//! `invalid_parameter`, `invalid_argument`, `timeout`, `api`.
//!
//! ```rhai
//! let r = pve::vzdump(svc, #{ storage: "pbs", mode: "snapshot" });
//! pve::snapshot(svc, "pre-update", #{ vmstate: true });
//! ```

use super::{dry_run, from_map, service_of, strings, throw, to_dyn, RhaiResult};
use crate::config::RetentionConfig;
use crate::pve::ops::{CloneOptions, RestoreOptions};
use crate::pve::{connect, GuestKind, GuestRef, Pve, PveError, VzdumpOptions};
use crate::retention::{self, RetentionItem};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext, INT};
use serde::Deserialize;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Catalog kinds of guest backups.
pub const KIND_VZDUMP: &str = "vzdump";

type Shared = Arc<OnceLock<Result<Arc<Pve>, Arc<PveError>>>>;

/// The run's client, built on first use (warnings logged once per run).
fn client(host: &Host, cell: &Shared, ctx: &NativeCallContext) -> RhaiResult<Arc<Pve>> {
    let r = cell.get_or_init(|| {
        let Some(p) = &host.config.global.proxmox else {
            return Err(Arc::new(PveError::Config(
                "global.proxmox is not configured".into(),
            )));
        };
        match connect::pve_from_config(p) {
            Ok((pve, warnings)) => {
                for w in warnings {
                    host.event(tracing::Level::WARN, None, &w);
                }
                Ok(Arc::new(pve))
            }
            Err(e) => Err(Arc::new(e)),
        }
    });
    r.clone()
        .map_err(|e| throw(e.kind(), e.to_string(), service_of(ctx).as_deref()))
}

/// A PVE error as a thrown map with its own kind.
pub(crate) fn pve_err(e: PveError, ctx: &NativeCallContext) -> Box<rhai::EvalAltResult> {
    throw(e.kind(), e.to_string(), service_of(ctx).as_deref())
}

fn int_of(d: &Dynamic) -> Option<i64> {
    d.as_int()
        .ok()
        .or_else(|| d.clone().into_string().ok().and_then(|s| s.parse().ok()))
}

/// A guest from a service map or a VMID.
fn guest(pve: &Pve, target: &Dynamic, ctx: &NativeCallContext) -> RhaiResult<GuestRef> {
    let bad = |m: String| throw("invalid_argument", m, service_of(ctx).as_deref());
    if let Some(id) = int_of(target).filter(|_| !target.is_map()) {
        let vmid = u32::try_from(id).map_err(|_| bad(format!("invalid VMID {id}")))?;
        return pve.find_guest(vmid).map_err(|e| pve_err(e, ctx));
    }
    let Some(m) = target.read_lock::<Map>() else {
        return Err(bad(format!(
            "expected a service map or a VMID, got {}",
            target.type_name()
        )));
    };
    let vmid = m
        .get("vmid")
        .and_then(int_of)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| bad("the service has no vmid".into()))?;
    let kind = m
        .get("type")
        .and_then(|t| t.clone().into_string().ok())
        .and_then(|t| GuestKind::parse(&t));
    let node = m
        .get("node")
        .and_then(|n| n.clone().into_string().ok())
        .filter(|n| !n.is_empty());
    match (node, kind) {
        (Some(node), Some(kind)) => Ok(GuestRef { node, kind, vmid }),
        _ => {
            let found = pve.find_guest(vmid).map_err(|e| pve_err(e, ctx))?;
            if let Some(k) = kind {
                if k != found.kind {
                    return Err(bad(format!(
                        "VMID {vmid} is a {} but the service says type {}",
                        found.kind.as_str(),
                        k.as_str()
                    )));
                }
            }
            Ok(found)
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SnapshotOptions {
    description: Option<String>,
    vmstate: bool,
    start: bool,
    force: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RestoreArgs {
    vmid: Option<u32>,
    #[serde(rename = "type")]
    kind: Option<String>,
    node: Option<String>,
    storage: Option<String>,
    #[serde(flatten)]
    opts: RestoreFlags,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RestoreFlags {
    unique: Option<bool>,
    force: Option<bool>,
    start: Option<bool>,
    bwlimit: Option<i64>,
    timeout_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PowerOptions {
    timeout: Option<i64>,
    force_stop: bool,
    purge: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExecOptions {
    input: Option<String>,
    timeout_seconds: Option<u64>,
}

/// What [`verify_archive`] found.
#[derive(Debug, serde::Serialize)]
pub struct ArchiveCheck {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// `zstd` (fully decoded), or `size-only` for formats we cannot read.
    pub integrity: String,
}

/// Size, sha256 and, for `.zst` archives, a full decode (zstd frame
/// checksums) of a vzdump archive we can read.
pub fn verify_archive(path: &Path) -> crate::Result<ArchiveCheck> {
    use sha2::{Digest, Sha256};
    let io = |e| crate::Error::io(path, e);
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() == 0 {
        return Err(crate::Error::UnsafeArchive {
            path: path.into(),
            message: "empty file".into(),
        });
    }
    let mut hasher = Sha256::new();
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let name = path.to_string_lossy();
    let integrity = if name.ends_with(".zst") {
        let f = std::fs::File::open(path).map_err(io)?;
        let mut dec = zstd::stream::read::Decoder::new(f).map_err(io)?;
        std::io::copy(&mut dec, &mut std::io::sink()).map_err(|e| crate::Error::UnsafeArchive {
            path: path.into(),
            message: format!("zstd decode failed: {e}"),
        })?;
        "zstd".to_string()
    } else {
        "size-only".to_string()
    };
    Ok(ArchiveCheck {
        path: path.display().to_string(),
        size: meta.len(),
        sha256: format!("{:x}", hasher.finalize()),
        integrity,
    })
}

/// Retention over our catalogued vzdump backups of one service (PBS
/// backups are left to PBS's own prune).
fn prune(
    host: &Host,
    pve: Option<&Pve>,
    svc: &Map,
    ctx: &NativeCallContext,
) -> RhaiResult<Dynamic> {
    let name = svc
        .get("name")
        .map(|n| n.to_string())
        .ok_or_else(|| throw("invalid_argument", "pve::prune: svc.name missing", None))?;
    let policy: RetentionConfig = match svc.get("retention") {
        Some(r) if r.is_map() => from_map(r.clone().cast::<Map>(), "retention")?,
        _ => host.config.global.backup.retention.clone(),
    };
    let mut report = crate::catalog::PruneReport::default();
    let Some(store) = &host.store else {
        return to_dyn(&report);
    };
    let rows: Vec<_> = store
        .backups(Some(&name), false)
        .map_err(|e| super::to_rhai(e, ctx))?
        .into_iter()
        .filter(|b| b.kind == KIND_VZDUMP)
        .collect();
    let items: Vec<RetentionItem> = rows
        .iter()
        .map(|b| RetentionItem {
            id: b.id,
            created_at: b.created_at,
            verified: b.verified_at.is_some() && b.status == "complete",
        })
        .collect();
    let now = chrono::Utc::now().timestamp();
    let node = svc.get("node").and_then(|n| n.clone().into_string().ok());
    for d in retention::plan(&items, &policy, now) {
        let Some(row) = rows.iter().find(|r| r.id == d.id) else {
            continue;
        };
        if d.keep {
            report.kept.push(row.location.clone());
            continue;
        }
        if dry_run(
            host,
            ctx,
            &format!("delete vzdump backup {} (retention)", row.location),
        ) {
            report.would_delete.push(row.location.clone());
            continue;
        }
        if row.location.starts_with('/') {
            let p = Path::new(&row.location);
            for extra in ["", ".log", ".notes", ".protected"] {
                let f = format!("{}{extra}", row.location);
                if let Err(e) = std::fs::remove_file(&f) {
                    if e.kind() != std::io::ErrorKind::NotFound || extra.is_empty() && p.exists() {
                        return Err(super::to_rhai(crate::Error::io(f, e), ctx));
                    }
                }
            }
        } else {
            let pve =
                pve.ok_or_else(|| throw("config", "global.proxmox is not configured", None))?;
            let node = match node.clone() {
                Some(n) => n,
                None => {
                    let vmid = svc
                        .get("vmid")
                        .and_then(int_of)
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| {
                            throw("invalid_argument", format!("service {name}: no vmid"), None)
                        })?;
                    pve.find_guest(vmid).map_err(|e| pve_err(e, ctx))?.node
                }
            };
            pve.delete_volume(&node, &row.location)
                .map_err(|e| pve_err(e, ctx))?;
        }
        store
            .mark_deleted(row.id, now)
            .map_err(|e| super::to_rhai(e, ctx))?;
        host.event(
            tracing::Level::INFO,
            Some(&name),
            &format!("retention deleted {}", row.location),
        );
        report.deleted.push(row.location.clone());
    }
    to_dyn(&report)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let cell: Shared = Arc::new(OnceLock::new());
    let v = |name: &str| FuncRegistration::new(name).with_volatility(true);

    macro_rules! reg {
        ($name:expr, |$h:ident, $c:ident, $ctx:ident $(, $a:ident : $t:ty)*| $body:block) => {{
            let $h = host.clone();
            let $c = cell.clone();
            v($name).set_into_module(&mut m, move |$ctx: NativeCallContext $(, $a: $t)*| -> RhaiResult<Dynamic> {
                let _ = (&$h, &$c);
                $body
            });
        }};
    }

    reg!("guest", |h, c, ctx, target: Dynamic| {
        let pve = client(&h, &c, &ctx)?;
        to_dyn(&guest(&pve, &target, &ctx)?)
    });
    reg!("status", |h, c, ctx, target: Dynamic| {
        let pve = client(&h, &c, &ctx)?;
        let g = guest(&pve, &target, &ctx)?;
        to_dyn(&pve.guest_status(&g).map_err(|e| pve_err(e, &ctx))?)
    });
    reg!("snapshots", |h, c, ctx, target: Dynamic| {
        let pve = client(&h, &c, &ctx)?;
        let g = guest(&pve, &target, &ctx)?;
        to_dyn(&pve.snapshot_list(&g).map_err(|e| pve_err(e, &ctx))?)
    });
    for (name, with_opts) in [("snapshot", false), ("snapshot", true)] {
        let h = host.clone();
        let c = cell.clone();
        let f = move |ctx: NativeCallContext,
                      target: Dynamic,
                      snap: &str,
                      opts: Map|
              -> RhaiResult<Dynamic> {
            let o: SnapshotOptions = from_map(opts, "pve::snapshot options")?;
            crate::pve::ops::check_snapname(
                int_of(&target)
                    .map(|_| GuestKind::Qemu)
                    .unwrap_or(GuestKind::Qemu),
                snap,
            )
            .map_err(|e| pve_err(e, &ctx))?;
            let pve = client(&h, &c, &ctx)?;
            let g = guest(&pve, &target, &ctx)?;
            if dry_run(&h, &ctx, &format!("snapshot {g} as '{snap}'")) {
                return Ok(Dynamic::UNIT);
            }
            to_dyn(
                &pve.snapshot_create(&g, snap, o.description.as_deref(), o.vmstate)
                    .map_err(|e| pve_err(e, &ctx))?,
            )
        };
        if with_opts {
            v(name).set_into_module(&mut m, f);
        } else {
            v(name).set_into_module(
                &mut m,
                move |ctx: NativeCallContext, target: Dynamic, snap: &str| {
                    f(ctx, target, snap, Map::new())
                },
            );
        }
    }
    for (name, op) in [("rollback", 0), ("delete_snapshot", 1)] {
        let h = host.clone();
        let c = cell.clone();
        let f = move |ctx: NativeCallContext,
                      target: Dynamic,
                      snap: &str,
                      opts: Map|
              -> RhaiResult<Dynamic> {
            let o: SnapshotOptions = from_map(opts, "pve snapshot options")?;
            let pve = client(&h, &c, &ctx)?;
            let g = guest(&pve, &target, &ctx)?;
            let what = if op == 0 {
                format!("roll {g} back to '{snap}'")
            } else {
                format!("delete snapshot '{snap}' of {g}")
            };
            if dry_run(&h, &ctx, &what) {
                return Ok(Dynamic::UNIT);
            }
            let r = if op == 0 {
                pve.snapshot_rollback(&g, snap, o.start)
            } else {
                pve.snapshot_delete(&g, snap, o.force)
            };
            to_dyn(&r.map_err(|e| pve_err(e, &ctx))?)
        };
        let f2 = f.clone();
        v(name).set_into_module(&mut m, f);
        v(name).set_into_module(
            &mut m,
            move |ctx: NativeCallContext, target: Dynamic, snap: &str| {
                f2(ctx, target, snap, Map::new())
            },
        );
    }
    reg!("vzdump", |h, c, ctx, target: Dynamic, opts: Map| {
        let o: VzdumpOptions = from_map(opts, "pve::vzdump options")?;
        let pve = client(&h, &c, &ctx)?;
        let g = guest(&pve, &target, &ctx)?;
        let dest = o
            .storage
            .clone()
            .map(|s| format!("storage {s}"))
            .or(o.dumpdir.clone().map(|d| format!("directory {d}")))
            .unwrap_or_default();
        if dry_run(&h, &ctx, &format!("vzdump {g} to {dest}")) {
            let mut r = Map::new();
            r.insert("dry_run".into(), true.into());
            return Ok(r.into());
        }
        if let Some(d) = &o.dumpdir {
            if let Err(e) = std::fs::create_dir_all(d) {
                h.event(
                    tracing::Level::DEBUG,
                    service_of(&ctx).as_deref(),
                    &format!("could not create {d} here: {e}"),
                );
            }
        }
        let r = pve.vzdump(&g, &o).map_err(|e| pve_err(e, &ctx))?;
        if let Some(n) = r.task.warnings {
            h.event(
                tracing::Level::WARN,
                service_of(&ctx).as_deref(),
                &format!(
                    "vzdump of {g} finished with {n} warning(s) (task {})",
                    r.task.upid
                ),
            );
        }
        to_dyn(&r)
    });
    reg!("backups", |h, c, ctx, node: &str, storage: &str| {
        let pve = client(&h, &c, &ctx)?;
        to_dyn(
            &pve.list_backups(node, storage, None)
                .map_err(|e| pve_err(e, &ctx))?,
        )
    });
    reg!("backups", |h,
                     c,
                     ctx,
                     node: &str,
                     storage: &str,
                     vmid: INT| {
        let pve = client(&h, &c, &ctx)?;
        let id = u32::try_from(vmid)
            .map_err(|_| throw("invalid_argument", format!("invalid VMID {vmid}"), None))?;
        to_dyn(
            &pve.list_backups(node, storage, Some(id))
                .map_err(|e| pve_err(e, &ctx))?,
        )
    });
    reg!("delete_backup", |h, c, ctx, node: &str, volid: &str| {
        let pve = client(&h, &c, &ctx)?;
        if dry_run(&h, &ctx, &format!("delete backup {volid}")) {
            return Ok(Dynamic::UNIT);
        }
        pve.delete_volume(node, volid)
            .map_err(|e| pve_err(e, &ctx))?;
        Ok(Dynamic::UNIT)
    });
    reg!("restore", |h, c, ctx, archive: &str, opts: Map| {
        let a: RestoreArgs = from_map(opts, "pve::restore options")?;
        let bad = |m: &str| {
            throw(
                "invalid_argument",
                format!("pve::restore: {m}"),
                service_of(&ctx).as_deref(),
            )
        };
        let storage = a.storage.ok_or_else(|| {
            bad("set storage (the target storage; PVE's default 'local' usually cannot hold disks)")
        })?;
        let kind = a
            .kind
            .as_deref()
            .and_then(GuestKind::parse)
            .ok_or_else(|| bad("set type: vm or lxc"))?;
        let node = a.node.ok_or_else(|| bad("set node"))?;
        let pve = client(&h, &c, &ctx)?;
        let vmid = match a.vmid {
            Some(v) => v,
            None => pve.next_vmid().map_err(|e| pve_err(e, &ctx))?,
        };
        let target = GuestRef { node, kind, vmid };
        if dry_run(
            &h,
            &ctx,
            &format!("restore {archive} as {target} on storage {storage}"),
        ) {
            return Ok(Dynamic::UNIT);
        }
        let ro = RestoreOptions {
            unique: a.opts.unique,
            force: a.opts.force,
            start: a.opts.start,
            bwlimit: a.opts.bwlimit,
            timeout_seconds: a.opts.timeout_seconds,
        };
        let t = pve
            .restore(&target, archive, &storage, &ro)
            .map_err(|e| pve_err(e, &ctx))?;
        let mut r = Map::new();
        r.insert("vmid".into(), (vmid as INT).into());
        r.insert("node".into(), target.node.clone().into());
        r.insert("task".into(), to_dyn(&t)?);
        Ok(r.into())
    });
    reg!("clone", |h,
                   c,
                   ctx,
                   target: Dynamic,
                   newid: INT,
                   opts: Map| {
        let o: CloneOptions = from_map(opts, "pve::clone options")?;
        let pve = client(&h, &c, &ctx)?;
        let g = guest(&pve, &target, &ctx)?;
        let newid = u32::try_from(newid)
            .map_err(|_| throw("invalid_argument", format!("invalid VMID {newid}"), None))?;
        if dry_run(&h, &ctx, &format!("clone {g} to {newid}")) {
            return Ok(Dynamic::UNIT);
        }
        to_dyn(
            &pve.clone_guest(&g, newid, &o)
                .map_err(|e| pve_err(e, &ctx))?,
        )
    });
    for name in ["start", "stop", "shutdown", "destroy"] {
        let h = host.clone();
        let c = cell.clone();
        let f = move |ctx: NativeCallContext, target: Dynamic, opts: Map| -> RhaiResult<Dynamic> {
            let o: PowerOptions = from_map(opts, "pve power options")?;
            let pve = client(&h, &c, &ctx)?;
            let g = guest(&pve, &target, &ctx)?;
            if dry_run(&h, &ctx, &format!("{name} {g}")) {
                return Ok(Dynamic::UNIT);
            }
            let r = match name {
                "start" => pve.start(&g),
                "stop" => pve.stop(&g),
                "shutdown" => pve.shutdown(&g, o.timeout, o.force_stop),
                _ => pve.destroy(&g, o.purge),
            };
            to_dyn(&r.map_err(|e| pve_err(e, &ctx))?)
        };
        let f2 = f.clone();
        v(name).set_into_module(&mut m, f);
        v(name).set_into_module(&mut m, move |ctx: NativeCallContext, target: Dynamic| {
            f2(ctx, target, Map::new())
        });
    }
    reg!("node_status", |h, c, ctx, node: &str| {
        let pve = client(&h, &c, &ctx)?;
        to_dyn(&pve.node_status(node).map_err(|e| pve_err(e, &ctx))?)
    });
    reg!("resources", |h, c, ctx| {
        let pve = client(&h, &c, &ctx)?;
        to_dyn(&pve.cluster_resources(None).map_err(|e| pve_err(e, &ctx))?)
    });
    reg!("resources", |h, c, ctx, kind: &str| {
        let pve = client(&h, &c, &ctx)?;
        to_dyn(
            &pve.cluster_resources(Some(kind))
                .map_err(|e| pve_err(e, &ctx))?,
        )
    });
    reg!("find", |h, c, ctx, vmid: INT| {
        let pve = client(&h, &c, &ctx)?;
        let id = u32::try_from(vmid)
            .map_err(|_| throw("invalid_argument", format!("invalid VMID {vmid}"), None))?;
        to_dyn(&pve.find_guest(id).map_err(|e| pve_err(e, &ctx))?)
    });
    reg!("next_vmid", |h, c, ctx| {
        let pve = client(&h, &c, &ctx)?;
        Ok((pve.next_vmid().map_err(|e| pve_err(e, &ctx))? as INT).into())
    });
    reg!("agent_exec", |h,
                        c,
                        ctx,
                        target: Dynamic,
                        argv: Array,
                        opts: Map| {
        let o: ExecOptions = from_map(opts, "pve::agent_exec options")?;
        let argv = strings(argv, "pve::agent_exec")?;
        let pve = client(&h, &c, &ctx)?;
        let g = guest(&pve, &target, &ctx)?;
        if dry_run(&h, &ctx, &format!("run {argv:?} in {g} (guest agent)")) {
            return Ok(Dynamic::UNIT);
        }
        Ok(pve
            .agent_exec(&g, &argv, o.input.as_deref())
            .map_err(|e| pve_err(e, &ctx))?
            .into())
    });
    reg!(
        "agent_exec_status",
        |h, c, ctx, target: Dynamic, pid: INT| {
            let pve = client(&h, &c, &ctx)?;
            let g = guest(&pve, &target, &ctx)?;
            let v = pve
                .agent_exec_status(&g, pid)
                .map_err(|e| pve_err(e, &ctx))?;
            to_dyn(&v)
        }
    );
    reg!("exec", |h,
                  c,
                  ctx,
                  target: Dynamic,
                  argv: Array,
                  opts: Map| {
        // Containers: `pct exec` on the host (local mode); VMs: guest agent.
        let o: ExecOptions = from_map(opts, "pve::exec options")?;
        let argv = strings(argv, "pve::exec")?;
        let local = h.config.global.proxmox.as_ref().is_some_and(|p| p.local);
        let vmid = target
            .read_lock::<Map>()
            .and_then(|m| m.get("vmid").and_then(int_of))
            .or_else(|| int_of(&target))
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| throw("invalid_argument", "pve::exec: no vmid", None))?;
        if dry_run(&h, &ctx, &format!("run {argv:?} in guest {vmid}")) {
            return Ok(Dynamic::UNIT);
        }
        if local {
            let info = crate::pve::local::pct_exec(
                vmid,
                &argv,
                Duration::from_secs(o.timeout_seconds.unwrap_or(300)),
            )
            .map_err(|e| pve_err(e, &ctx))?;
            return to_dyn(&info);
        }
        Err(throw(
            "unsupported",
            "pve::exec needs proxmox.local: true (the API has no exec for containers); for VMs use pve::agent_exec",
            service_of(&ctx).as_deref(),
        ))
    });
    reg!("verify_archive", |h, c, ctx, path: &str| {
        let r = verify_archive(Path::new(path)).map_err(|e| super::to_rhai(e, &ctx))?;
        to_dyn(&r)
    });
    reg!("prune", |h, c, ctx, svc: Map| {
        let pve = if h.config.global.proxmox.is_some() {
            client(&h, &c, &ctx).ok()
        } else {
            None
        };
        prune(&h, pve.as_deref(), &svc, &ctx)
    });
    m
}
