//! `pve::` for scripts: Proxmox VE guests (snapshots, vzdump, restore,
//! clone, power, destroy, guest agent), node and cluster status, and the
//! checks and retention of vzdump backups we keep ourselves.
//!
//! A guest is given as a service map (`svc`: the configured service of that
//! name, with its `vmid`, `type` and optionally `node`) or as a bare VMID
//! (its node and type are then looked up in `/cluster/resources`). Every
//! mutating call honours `--dry-run`. Errors are thrown as maps; `e.kind` is
//! one of `guest_locked`, `task_failed`, `tls_pin_mismatch`, `tls`, `unreachable`,
//! `auth`, `invalid_parameter`, `invalid_argument`, `timeout`, `api`.
//!
//! ```rhai
//! let r = pve::vzdump(svc, #{ storage: "pbs", mode: "snapshot" });
//! pve::snapshot(svc, "pre-update", #{ vmstate: true });
//! ```

use super::{
    dry_run, from_map, service_config, service_of, strings, throw, to_dyn, to_rhai, RhaiResult,
};
use crate::config::ServiceConfig;
use crate::pve::ops::{check_snapname, CloneOptions, RestoreOptions};
use crate::pve::{connect, GuestKind, GuestRef, Pve, PveError, VzdumpOptions};
use crate::retention::{self, RetentionItem};
use crate::script::Host;
use crate::state::BackupRecord;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext, INT};
use serde::Deserialize;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Catalog kinds of guest backups.
pub const KIND_VZDUMP: &str = "vzdump";

type Shared = Arc<OnceLock<Result<Arc<Pve>, Arc<PveError>>>>;

/// What every adapter works with: the run's host and its client, built on
/// first use.
#[derive(Clone)]
struct Api {
    host: Arc<Host>,
    cell: Shared,
}

impl Api {
    /// The run's client (its warnings are logged once per run).
    fn client(&self, ctx: &NativeCallContext) -> RhaiResult<Arc<Pve>> {
        let host = &self.host;
        let r = self.cell.get_or_init(|| {
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

    /// The client and the guest a `guest` argument stands for.
    fn resolve(
        &self,
        ctx: &NativeCallContext,
        target: &Dynamic,
        what: &str,
    ) -> RhaiResult<(Arc<Pve>, GuestRef)> {
        let pve = self.client(ctx)?;
        let g = guest(&self.host, &pve, target, what, ctx)?;
        Ok((pve, g))
    }

    /// Whether this runs on the PVE node itself (`proxmox.local`).
    fn local(&self) -> bool {
        let p = self.host.config.global.proxmox.as_ref();
        p.is_some_and(|p| p.local)
    }

    /// In a dry run, log `would <what>` and return true.
    fn dry_run(&self, ctx: &NativeCallContext, what: &str) -> bool {
        dry_run(&self.host, ctx, what)
    }
}

/// A PVE error as a thrown map with its own kind.
pub(crate) fn pve_err(e: PveError, ctx: &NativeCallContext) -> Box<rhai::EvalAltResult> {
    throw(e.kind(), e.to_string(), service_of(ctx).as_deref())
}

/// A bare VMID argument: an integer or a numeric string (not a map).
fn bare_vmid(d: &Dynamic) -> Option<i64> {
    if d.is_map() {
        return None;
    }
    d.as_int()
        .ok()
        .or_else(|| d.clone().into_string().ok().and_then(|s| s.parse().ok()))
}

/// A script integer as a VMID.
fn to_vmid(v: i64, service: Option<&str>) -> RhaiResult<u32> {
    u32::try_from(v).map_err(|_| throw("invalid_argument", format!("invalid VMID {v}"), service))
}

/// A guest from a service map or a VMID.
fn guest(
    host: &Host,
    pve: &Pve,
    target: &Dynamic,
    what: &str,
    ctx: &NativeCallContext,
) -> RhaiResult<GuestRef> {
    if let Some(id) = bare_vmid(target) {
        let vmid = to_vmid(id, service_of(ctx).as_deref())?;
        return pve.find_guest(vmid).map_err(|e| pve_err(e, ctx));
    }
    let Some(m) = target.read_lock::<Map>() else {
        return Err(throw(
            "invalid_argument",
            format!(
                "expected a service map or a VMID, got {}",
                target.type_name()
            ),
            service_of(ctx).as_deref(),
        ));
    };
    let named = m.get("name").and_then(|n| {
        n.read_lock::<rhai::ImmutableString>()
            .map(|s| s.to_string())
    });
    let configured = named.and_then(|n| host.config.services.iter().find(|s| s.name == n));
    if let Some(svc) = configured {
        return service_guest(pve, svc, ctx);
    }
    if m.get("vmid").is_none() {
        return service_guest(pve, service_config(host, &m, what)?, ctx);
    }
    // A guest map that names no service (`#{vmid, type, node}`, e.g. a
    // clone made by the script): its own fields.
    let id = m.get("vmid").and_then(bare_vmid).ok_or_else(|| {
        throw(
            "invalid_argument",
            format!("{what}: vmid must be an integer"),
            service_of(ctx).as_deref(),
        )
    })?;
    let vmid = to_vmid(id, service_of(ctx).as_deref())?;
    let text = |k: &str| {
        m.get(k)
            .and_then(|v| {
                v.read_lock::<rhai::ImmutableString>()
                    .map(|s| s.to_string())
            })
            .filter(|s| !s.is_empty())
    };
    let kind = text("type").and_then(|t| GuestKind::parse(&t));
    if let (Some(node), Some(kind)) = (text("node"), kind) {
        return Ok(GuestRef { node, kind, vmid });
    }
    pve.find_guest(vmid).map_err(|e| pve_err(e, ctx))
}

/// A configured service's guest: its node and type when both are set,
/// otherwise found by VMID (and checked against the configured type).
fn service_guest(pve: &Pve, svc: &ServiceConfig, ctx: &NativeCallContext) -> RhaiResult<GuestRef> {
    let bad = |m: String| throw("invalid_argument", m, service_of(ctx).as_deref());
    let vmid = svc
        .vmid
        .ok_or_else(|| bad("the service has no vmid".into()))?;
    let kind = GuestKind::parse(svc.service_type.as_str());
    let node = svc.node.clone().filter(|n| !n.is_empty());
    if let (Some(node), Some(kind)) = (node, kind) {
        return Ok(GuestRef { node, kind, vmid });
    }
    let found = pve.find_guest(vmid).map_err(|e| pve_err(e, ctx))?;
    match kind {
        Some(k) if k != found.kind => Err(bad(format!(
            "VMID {vmid} is a {} but the service says type {}",
            found.kind.as_str(),
            k.as_str()
        ))),
        _ => Ok(found),
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
            source: None,
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
            source: Some(e),
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
    svc: &ServiceConfig,
    ctx: &NativeCallContext,
) -> RhaiResult<Dynamic> {
    let mut report = crate::catalog::PruneReport::default();
    let Some(store) = &host.store else {
        return to_dyn(&report);
    };
    let rows: Vec<BackupRecord> = store
        .backups(Some(&svc.name), false)
        .map_err(|e| to_rhai(e, ctx))?
        .into_iter()
        .filter(|b| b.kind == KIND_VZDUMP)
        .collect();
    let items: Vec<RetentionItem> = rows.iter().map(retention_item).collect();
    let now = chrono::Utc::now().timestamp();
    for d in retention::plan(&items, host.retention_for(svc), now) {
        let Some(row) = rows.iter().find(|r| r.id == d.id) else {
            continue;
        };
        let location = row.location.clone();
        if d.keep {
            report.kept.push(location);
        } else if dry_run(
            host,
            ctx,
            &format!("delete vzdump backup {location} (retention)"),
        ) {
            report.would_delete.push(location);
        } else if on_the_node(host, &location) {
            // A dump directory on the node, reached over the API: no API
            // call deletes a file there, so the row stays and says so.
            host.event(
                tracing::Level::WARN,
                Some(&svc.name),
                &format!("retention would delete {location}, but it is in a dump directory on the node, which the API cannot delete from: delete it there (or back up to a PVE storage, or run with proxmox.local: true)"),
            );
            report.kept.push(location);
        } else {
            delete_vzdump(pve, svc, &location, ctx)?;
            store
                .mark_deleted(row.id, now)
                .map_err(|e| to_rhai(e, ctx))?;
            host.event(
                tracing::Level::INFO,
                Some(&svc.name),
                &format!("retention deleted {location}"),
            );
            report.deleted.push(location);
        }
    }
    to_dyn(&report)
}

/// Whether `location` is a dump file on the PVE node that is not readable
/// here (the API is used, not `local: true`).
fn on_the_node(host: &Host, location: &str) -> bool {
    let local = host.config.global.proxmox.as_ref().is_some_and(|p| p.local);
    location.starts_with('/') && !local && !Path::new(location).exists()
}

/// A catalogued backup as retention sees it: verified once complete.
fn retention_item(b: &BackupRecord) -> RetentionItem {
    RetentionItem {
        id: b.id,
        created_at: b.created_at,
        verified: b.verified_at.is_some() && b.status == crate::state::BackupStatus::Complete,
    }
}

/// Delete one vzdump backup: a file we dumped (with its log, notes and
/// protection marker) or a volume on a PVE storage.
fn delete_vzdump(
    pve: Option<&Pve>,
    svc: &ServiceConfig,
    location: &str,
    ctx: &NativeCallContext,
) -> RhaiResult<()> {
    if location.starts_with('/') {
        return delete_dump_files(location, ctx);
    }
    let pve = pve.ok_or_else(|| throw("config", "global.proxmox is not configured", None))?;
    let node = match &svc.node {
        Some(n) => n.clone(),
        None => {
            let vmid = svc.vmid.ok_or_else(|| {
                throw(
                    "invalid_argument",
                    format!("service {}: no vmid", svc.name),
                    None,
                )
            })?;
            pve.find_guest(vmid).map_err(|e| pve_err(e, ctx))?.node
        }
    };
    pve.delete_volume(&node, location)
        .map_err(|e| pve_err(e, ctx))
}

/// A dump file and its companions; missing companions are fine.
fn delete_dump_files(location: &str, ctx: &NativeCallContext) -> RhaiResult<()> {
    let p = Path::new(location);
    for extra in ["", ".log", ".notes", ".protected"] {
        let f = format!("{location}{extra}");
        if let Err(e) = std::fs::remove_file(&f) {
            if e.kind() != std::io::ErrorKind::NotFound || extra.is_empty() && p.exists() {
                return Err(to_rhai(crate::Error::io(f, e), ctx));
            }
        }
    }
    Ok(())
}

// ---- adapters: parse the script's arguments, call src/pve, convert ----

fn status(a: &Api, ctx: &NativeCallContext, target: Dynamic) -> RhaiResult<Dynamic> {
    let (pve, g) = a.resolve(ctx, &target, "pve::status")?;
    to_dyn(&pve.guest_status(&g).map_err(|e| pve_err(e, ctx))?)
}

fn snapshots(a: &Api, ctx: &NativeCallContext, target: Dynamic) -> RhaiResult<Dynamic> {
    let (pve, g) = a.resolve(ctx, &target, "pve::snapshots")?;
    to_dyn(&pve.snapshot_list(&g).map_err(|e| pve_err(e, ctx))?)
}

fn snapshot(
    a: &Api,
    ctx: &NativeCallContext,
    target: Dynamic,
    snap: &str,
    opts: Map,
) -> RhaiResult<Dynamic> {
    let o: SnapshotOptions = from_map(opts, "pve::snapshot options")?;
    let (pve, g) = a.resolve(ctx, &target, "pve::snapshot")?;
    // The reserved names depend on the guest's type, known only now.
    check_snapname(g.kind, snap).map_err(|e| pve_err(e, ctx))?;
    if a.dry_run(ctx, &format!("snapshot {g} as '{snap}'")) {
        return Ok(Dynamic::UNIT);
    }
    let r = pve.snapshot_create(&g, snap, o.description.as_deref(), o.vmstate);
    to_dyn(&r.map_err(|e| pve_err(e, ctx))?)
}

fn rollback(
    a: &Api,
    ctx: &NativeCallContext,
    target: Dynamic,
    snap: &str,
    opts: Map,
) -> RhaiResult<Dynamic> {
    let o: SnapshotOptions = from_map(opts, "pve snapshot options")?;
    let (pve, g) = a.resolve(ctx, &target, "pve::rollback")?;
    if a.dry_run(ctx, &format!("roll {g} back to '{snap}'")) {
        return Ok(Dynamic::UNIT);
    }
    let r = pve.snapshot_rollback(&g, snap, o.start);
    to_dyn(&r.map_err(|e| pve_err(e, ctx))?)
}

fn delete_snapshot(
    a: &Api,
    ctx: &NativeCallContext,
    target: Dynamic,
    snap: &str,
    opts: Map,
) -> RhaiResult<Dynamic> {
    let o: SnapshotOptions = from_map(opts, "pve snapshot options")?;
    let (pve, g) = a.resolve(ctx, &target, "pve::delete_snapshot")?;
    if a.dry_run(ctx, &format!("delete snapshot '{snap}' of {g}")) {
        return Ok(Dynamic::UNIT);
    }
    let r = pve.snapshot_delete(&g, snap, o.force);
    to_dyn(&r.map_err(|e| pve_err(e, ctx))?)
}

/// The configured service a guest argument names, if any.
fn named_service<'h>(host: &'h Host, target: &Dynamic) -> Option<&'h ServiceConfig> {
    let m = target.read_lock::<Map>()?;
    let name = m
        .get("name")?
        .read_lock::<rhai::ImmutableString>()?
        .to_string();
    host.config.services.iter().find(|s| s.name == name)
}

/// Whether the service's own retention (`keep_*`, `retention_days`) has a rule.
fn has_retention(host: &Host, svc: Option<&ServiceConfig>) -> bool {
    svc.is_some_and(|svc| {
        let r = host.retention_for(svc);
        [
            r.retention_days,
            r.keep_last,
            r.keep_daily,
            r.keep_weekly,
            r.keep_monthly,
            r.keep_yearly,
        ]
        .iter()
        .any(|v| v.is_some_and(|n| n > 0))
    })
}

/// A storage with its own retention (`prune-backups` with a count limit)
/// makes vzdump refuse a backup once the limit is reached unless it may
/// prune ("There is a max backup limit of N enforced by the target
/// storage"). So: without our retention (or on a PBS storage, which we do
/// not prune) vzdump prunes by the storage's policy (`remove=1`); with our
/// retention, the limit is lifted for this backup (`prune-backups
/// keep-all=1`) and ours is applied after it. An explicit `remove` or
/// `prune_backups` from the script is kept, except that `remove: false`
/// also lifts the limit.
fn storage_retention(
    a: &Api,
    ctx: &NativeCallContext,
    pve: &Pve,
    svc: Option<&ServiceConfig>,
    o: &mut VzdumpOptions,
) -> RhaiResult<()> {
    let Some(storage) = o.storage.clone() else {
        // A dump directory: vzdump prunes nothing behind our retention.
        o.remove.get_or_insert(false);
        return Ok(());
    };
    if o.prune_backups.is_some() || o.remove == Some(true) {
        return Ok(());
    }
    let (policy, is_pbs) = pve
        .storage_prune_limit(&storage)
        .map_err(|e| pve_err(e, ctx))?;
    let Some(policy) = policy else {
        o.remove.get_or_insert(false);
        return Ok(());
    };
    let ours = o.remove == Some(false) || (!is_pbs && has_retention(&a.host, svc));
    let msg = if ours {
        o.prune_backups = Some("keep-all=1".into());
        o.remove = Some(false);
        format!("storage {storage} has its own retention ({policy}); this backup lifts it and the service's retention applies")
    } else {
        o.remove = Some(true);
        format!("storage {storage} has its own retention ({policy}); vzdump prunes by it")
    };
    a.host
        .event(tracing::Level::INFO, service_of(ctx).as_deref(), &msg);
    Ok(())
}

fn vzdump(a: &Api, ctx: &NativeCallContext, target: Dynamic, opts: Map) -> RhaiResult<Dynamic> {
    let mut o: VzdumpOptions = from_map(opts, "pve::vzdump options")?;
    let (pve, g) = a.resolve(ctx, &target, "pve::vzdump")?;
    let dest = o
        .storage
        .clone()
        .map(|s| format!("storage {s}"))
        .or(o.dumpdir.clone().map(|d| format!("directory {d}")))
        .unwrap_or_default();
    if a.dry_run(ctx, &format!("vzdump {g} to {dest}")) {
        let mut r = Map::new();
        r.insert("dry_run".into(), true.into());
        return Ok(r.into());
    }
    // A dump directory is on the node: create it here only when this is
    // the node (local mode); over the API vzdump creates it there.
    if let (Some(d), true) = (&o.dumpdir, a.local()) {
        if let Err(e) = std::fs::create_dir_all(d) {
            let msg = format!("could not create {d}: {e}");
            a.host
                .event(tracing::Level::DEBUG, service_of(ctx).as_deref(), &msg);
        }
    }
    storage_retention(a, ctx, &pve, named_service(&a.host, &target), &mut o)?;
    let r = pve.vzdump(&g, &o).map_err(|e| pve_err(e, ctx))?;
    if let Some(n) = r.task.warnings {
        let msg = format!(
            "vzdump of {g} finished with {n} warning(s) (task {})",
            r.task.upid
        );
        a.host
            .event(tracing::Level::WARN, service_of(ctx).as_deref(), &msg);
    }
    to_dyn(&r)
}

fn backups(
    a: &Api,
    ctx: &NativeCallContext,
    node: &str,
    storage: &str,
    vmid: Option<INT>,
) -> RhaiResult<Dynamic> {
    let pve = a.client(ctx)?;
    let vmid = vmid.map(|v| to_vmid(v, None)).transpose()?;
    let r = pve.list_backups(node, storage, vmid);
    to_dyn(&r.map_err(|e| pve_err(e, ctx))?)
}

fn delete_backup(a: &Api, ctx: &NativeCallContext, node: &str, volid: &str) -> RhaiResult<Dynamic> {
    let pve = a.client(ctx)?;
    if a.dry_run(ctx, &format!("delete backup {volid}")) {
        return Ok(Dynamic::UNIT);
    }
    pve.delete_volume(node, volid)
        .map_err(|e| pve_err(e, ctx))?;
    Ok(Dynamic::UNIT)
}

/// Where `pve::restore` puts a guest, checked before any call: the target
/// storage, the guest type and the node.
fn restore_place(
    a: &RestoreArgs,
    ctx: &NativeCallContext,
) -> RhaiResult<(String, GuestKind, String)> {
    let bad = |m: &str| {
        throw(
            "invalid_argument",
            format!("pve::restore: {m}"),
            service_of(ctx).as_deref(),
        )
    };
    let storage = a.storage.clone().ok_or_else(|| {
        bad("set storage (the target storage; PVE's default 'local' usually cannot hold disks)")
    })?;
    let kind = a
        .kind
        .as_deref()
        .and_then(GuestKind::parse)
        .ok_or_else(|| bad("set type: vm or lxc"))?;
    let node = a.node.clone().ok_or_else(|| bad("set node"))?;
    Ok((storage, kind, node))
}

fn restore(a: &Api, ctx: &NativeCallContext, archive: &str, opts: Map) -> RhaiResult<Dynamic> {
    let args: RestoreArgs = from_map(opts, "pve::restore options")?;
    let (storage, kind, node) = restore_place(&args, ctx)?;
    let pve = a.client(ctx)?;
    let vmid = match args.vmid {
        Some(v) => v,
        None => pve.next_vmid().map_err(|e| pve_err(e, ctx))?,
    };
    let target = GuestRef { node, kind, vmid };
    let what = format!("restore {archive} as {target} on storage {storage}");
    if a.dry_run(ctx, &what) {
        return Ok(Dynamic::UNIT);
    }
    let f = args.opts;
    let ro = RestoreOptions {
        unique: f.unique,
        force: f.force,
        start: f.start,
        bwlimit: f.bwlimit,
        timeout_seconds: f.timeout_seconds,
    };
    let t = pve
        .restore(&target, archive, &storage, &ro)
        .map_err(|e| pve_err(e, ctx))?;
    let mut r = Map::new();
    r.insert("vmid".into(), (vmid as INT).into());
    r.insert("node".into(), target.node.clone().into());
    r.insert("task".into(), to_dyn(&t)?);
    Ok(r.into())
}

fn clone(
    a: &Api,
    ctx: &NativeCallContext,
    target: Dynamic,
    newid: INT,
    opts: Map,
) -> RhaiResult<Dynamic> {
    let o: CloneOptions = from_map(opts, "pve::clone options")?;
    let (pve, g) = a.resolve(ctx, &target, "pve::clone")?;
    let newid = to_vmid(newid, None)?;
    if a.dry_run(ctx, &format!("clone {g} to {newid}")) {
        return Ok(Dynamic::UNIT);
    }
    let r = pve.clone_guest(&g, newid, &o);
    to_dyn(&r.map_err(|e| pve_err(e, ctx))?)
}

/// `start`, `stop`, `shutdown` or `destroy`.
fn power(
    a: &Api,
    ctx: &NativeCallContext,
    op: &str,
    target: Dynamic,
    opts: Map,
) -> RhaiResult<Dynamic> {
    let o: PowerOptions = from_map(opts, "pve power options")?;
    let (pve, g) = a.resolve(ctx, &target, &format!("pve::{op}"))?;
    if a.dry_run(ctx, &format!("{op} {g}")) {
        return Ok(Dynamic::UNIT);
    }
    let r = match op {
        "start" => pve.start(&g),
        "stop" => pve.stop(&g),
        "shutdown" => pve.shutdown(&g, o.timeout, o.force_stop),
        _ => pve.destroy(&g, o.purge),
    };
    to_dyn(&r.map_err(|e| pve_err(e, ctx))?)
}

fn resources(a: &Api, ctx: &NativeCallContext, kind: Option<&str>) -> RhaiResult<Dynamic> {
    let pve = a.client(ctx)?;
    to_dyn(&pve.cluster_resources(kind).map_err(|e| pve_err(e, ctx))?)
}

fn find(a: &Api, ctx: &NativeCallContext, vmid: INT) -> RhaiResult<Dynamic> {
    let pve = a.client(ctx)?;
    let id = to_vmid(vmid, None)?;
    to_dyn(&pve.find_guest(id).map_err(|e| pve_err(e, ctx))?)
}

fn agent_exec(
    a: &Api,
    ctx: &NativeCallContext,
    target: Dynamic,
    argv: Array,
    opts: Map,
) -> RhaiResult<Dynamic> {
    let o: ExecOptions = from_map(opts, "pve::agent_exec options")?;
    let argv = strings(argv, "pve::agent_exec")?;
    let (pve, g) = a.resolve(ctx, &target, "pve::agent_exec")?;
    if a.dry_run(ctx, &format!("run {argv:?} in {g} (guest agent)")) {
        return Ok(Dynamic::UNIT);
    }
    let pid = pve.agent_exec(&g, &argv, o.input.as_deref());
    Ok(pid.map_err(|e| pve_err(e, ctx))?.into())
}

fn agent_exec_status(
    a: &Api,
    ctx: &NativeCallContext,
    target: Dynamic,
    pid: INT,
) -> RhaiResult<Dynamic> {
    let (pve, g) = a.resolve(ctx, &target, "pve::agent_exec_status")?;
    let v = pve
        .agent_exec_status(&g, pid)
        .map_err(|e| pve_err(e, ctx))?;
    to_dyn(&v)
}

/// Containers: `pct exec` on the host (local mode); VMs: the guest agent.
fn exec(
    a: &Api,
    ctx: &NativeCallContext,
    target: Dynamic,
    argv: Array,
    opts: Map,
) -> RhaiResult<Dynamic> {
    let o: ExecOptions = from_map(opts, "pve::exec options")?;
    let argv = strings(argv, "pve::exec")?;
    let vmid = match target.read_lock::<Map>() {
        Some(m) => service_config(&a.host, &m, "pve::exec")?.vmid,
        None => bare_vmid(&target).and_then(|v| u32::try_from(v).ok()),
    }
    .ok_or_else(|| throw("invalid_argument", "pve::exec: no vmid", None))?;
    if a.dry_run(ctx, &format!("run {argv:?} in guest {vmid}")) {
        return Ok(Dynamic::UNIT);
    }
    if !a.local() {
        return Err(throw(
            "unsupported",
            "pve::exec needs proxmox.local: true (the API has no exec for containers); for VMs use pve::agent_exec",
            service_of(ctx).as_deref(),
        ));
    }
    let timeout = Duration::from_secs(o.timeout_seconds.unwrap_or(300));
    let mut info =
        crate::pve::local::pct_exec(vmid, &argv, timeout).map_err(|e| pve_err(e, ctx))?;
    info.limit_total(a.host.limits.max_string_size);
    to_dyn(&info)
}

/// The PVE storage guests are backed up to for
/// `global.backup.proxmox_backup_server`: its `storage`, or else the one
/// storage of type `pbs` whose `server` and `datastore` (and `namespace`)
/// match; none or several is a configuration error naming the block.
fn pbs_storage(a: &Api, ctx: &NativeCallContext) -> RhaiResult<Dynamic> {
    let cfg = &a.host.config;
    let at = crate::config::place(&cfg.source, "global.backup.proxmox_backup_server");
    let config_err = |m: String| throw("config", format!("{at}: {m}"), service_of(ctx).as_deref());
    let Some(p) = &cfg.global.backup.proxmox_backup_server else {
        return Err(config_err("is not configured".into()));
    };
    if let Some(s) = &p.storage {
        return Ok(s.clone().into());
    }
    let (Some(server), Some(datastore)) = (&p.server, &p.datastore) else {
        return Err(config_err(
            "set storage (the PVE storage id of the PBS datastore), or server and datastore".into(),
        ));
    };
    let pve = a.client(ctx)?;
    let found = pve
        .find_pbs_storage(server, datastore, p.namespace.as_deref())
        .map_err(|e| pve_err(e, ctx))?;
    match found.as_slice() {
        [one] => Ok(one.clone().into()),
        [] => Err(config_err(format!(
            "no PVE storage of type pbs has server {server} and datastore {datastore}{}; add one (Datacenter > Storage > Add > Proxmox Backup Server) or set storage",
            p.namespace.as_deref().map(|n| format!(" and namespace {n}")).unwrap_or_default()
        ))),
        many => Err(config_err(format!(
            "several PVE storages of type pbs have server {server} and datastore {datastore} ({}); set storage to the one to use",
            many.join(", ")
        ))),
    }
}

fn prune_service(a: &Api, ctx: &NativeCallContext, svc: Map) -> RhaiResult<Dynamic> {
    let service = service_config(&a.host, &svc, "pve::prune")?;
    let pve = if a.host.config.global.proxmox.is_some() {
        a.client(ctx).ok()
    } else {
        None
    };
    prune(&a.host, pve.as_deref(), service, ctx)
}

// ---- registration ----

/// Register `$name` as a volatile function whose body gets the shared
/// [`Api`] and the call context by reference.
macro_rules! reg {
    ($m:expr, $api:expr, $name:expr, |$a:ident, $ctx:ident $(, $arg:ident : $t:ty)*| $body:expr) => {{
        let shared = $api.clone();
        FuncRegistration::new($name).with_volatility(true).set_into_module(
            $m,
            move |$ctx: NativeCallContext $(, $arg: $t)*| -> RhaiResult<Dynamic> {
                let ($a, $ctx) = (&shared, &$ctx);
                // Task waits and commands end by the run's deadline; one cut
                // short by it stops the run.
                let deadline = $a.host.deadline()?;
                let r = crate::proc::until(deadline, || $body);
                if r.is_err() {
                    $a.host.remaining()?;
                }
                r
            },
        );
    }};
}

fn register_guests(m: &mut Module, api: &Api) {
    reg!(m, api, "guest", |a, ctx, t: Dynamic| to_dyn(
        &a.resolve(ctx, &t, "pve::guest")?.1
    ));
    reg!(m, api, "status", |a, ctx, t: Dynamic| status(a, ctx, t));
    reg!(m, api, "find", |a, ctx, vmid: INT| find(a, ctx, vmid));
    reg!(m, api, "clone", |a, ctx, t: Dynamic, id: INT, o: Map| {
        clone(a, ctx, t, id, o)
    });
    for op in ["start", "stop", "shutdown", "destroy"] {
        reg!(m, api, op, |a, ctx, t: Dynamic, o: Map| power(
            a, ctx, op, t, o
        ));
        reg!(m, api, op, |a, ctx, t: Dynamic| power(
            a,
            ctx,
            op,
            t,
            Map::new()
        ));
    }
}

fn register_snapshots(m: &mut Module, api: &Api) {
    reg!(m, api, "snapshots", |a, ctx, t: Dynamic| snapshots(
        a, ctx, t
    ));
    reg!(m, api, "snapshot", |a, ctx, t: Dynamic, s: &str| {
        snapshot(a, ctx, t, s, Map::new())
    });
    reg!(m, api, "snapshot", |a, ctx, t: Dynamic, s: &str, o: Map| {
        snapshot(a, ctx, t, s, o)
    });
    reg!(m, api, "rollback", |a, ctx, t: Dynamic, s: &str| {
        rollback(a, ctx, t, s, Map::new())
    });
    reg!(m, api, "rollback", |a, ctx, t: Dynamic, s: &str, o: Map| {
        rollback(a, ctx, t, s, o)
    });
    reg!(m, api, "delete_snapshot", |a, ctx, t: Dynamic, s: &str| {
        delete_snapshot(a, ctx, t, s, Map::new())
    });
    reg!(
        m,
        api,
        "delete_snapshot",
        |a, ctx, t: Dynamic, s: &str, o: Map| delete_snapshot(a, ctx, t, s, o)
    );
}

fn register_backups(m: &mut Module, api: &Api) {
    reg!(m, api, "vzdump", |a, ctx, t: Dynamic, o: Map| vzdump(
        a, ctx, t, o
    ));
    reg!(m, api, "backups", |a, ctx, node: &str, storage: &str| {
        backups(a, ctx, node, storage, None)
    });
    reg!(m, api, "backups", |a,
                             ctx,
                             node: &str,
                             storage: &str,
                             vmid: INT| {
        backups(a, ctx, node, storage, Some(vmid))
    });
    reg!(
        m,
        api,
        "delete_backup",
        |a, ctx, node: &str, volid: &str| delete_backup(a, ctx, node, volid)
    );
    reg!(m, api, "restore", |a, ctx, archive: &str, o: Map| {
        restore(a, ctx, archive, o)
    });
    reg!(m, api, "verify_archive", |_a, ctx, path: &str| {
        to_dyn(&verify_archive(Path::new(path)).map_err(|e| to_rhai(e, ctx))?)
    });
    reg!(m, api, "prune", |a, ctx, svc: Map| prune_service(
        a, ctx, svc
    ));
    reg!(m, api, "pbs_storage", |a, ctx| pbs_storage(a, ctx));
}

fn register_cluster(m: &mut Module, api: &Api) {
    reg!(m, api, "node_status", |a, ctx, node: &str| {
        let pve = a.client(ctx)?;
        to_dyn(&pve.node_status(node).map_err(|e| pve_err(e, ctx))?)
    });
    reg!(m, api, "resources", |a, ctx| resources(a, ctx, None));
    reg!(m, api, "resources", |a, ctx, kind: &str| {
        resources(a, ctx, Some(kind))
    });
    reg!(m, api, "next_vmid", |a, ctx| {
        let id = a.client(ctx)?.next_vmid().map_err(|e| pve_err(e, ctx))?;
        Ok((id as INT).into())
    });
}

fn register_exec(m: &mut Module, api: &Api) {
    reg!(
        m,
        api,
        "agent_exec",
        |a, ctx, t: Dynamic, argv: Array, o: Map| agent_exec(a, ctx, t, argv, o)
    );
    reg!(
        m,
        api,
        "agent_exec_status",
        |a, ctx, t: Dynamic, pid: INT| agent_exec_status(a, ctx, t, pid)
    );
    reg!(m, api, "exec", |a, ctx, t: Dynamic, argv: Array, o: Map| {
        exec(a, ctx, t, argv, o)
    });
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let api = Api {
        host: host.clone(),
        cell: Arc::new(OnceLock::new()),
    };
    register_guests(&mut m, &api);
    register_snapshots(&mut m, &api);
    register_backups(&mut m, &api);
    register_cluster(&mut m, &api);
    register_exec(&mut m, &api);
    m
}
