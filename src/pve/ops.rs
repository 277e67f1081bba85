//! The typed PVE operations, over any [`Transport`]: snapshots, vzdump,
//! backup listing, restore, clone, power, destroy, node and cluster status,
//! next free VMID, QEMU guest agent exec.
//!
//! Rules enforced before a call: snapshot names (`pve-configid`, 2..40
//! characters, not a reserved name), vzdump's `storage`/`dumpdir`
//! exclusivity and root-only options, restore always naming the target
//! storage. Guest locks are reported, waited for (bounded) when a running
//! task holds them, and never removed.

use super::error::{PveError, PveResult};
use super::tasks;
use super::types::*;
use super::{enc, Method, Params, ParamsBuilder, Transport};
use serde_json::Value;
use std::time::{Duration, Instant};

pub struct Pve {
    pub t: Box<dyn Transport>,
    /// Default timeout of a task (`global.proxmox.task_timeout_seconds`).
    pub task_timeout: Duration,
    /// Default timeout of a vzdump or restore task
    /// (`global.proxmox.backup_timeout_seconds`; a call may pass its own).
    pub backup_timeout: Duration,
    /// How long to wait for a lock held by a running task
    /// (`global.proxmox.lock_wait_seconds`).
    pub lock_wait: Duration,
}

/// Worker types whose task takes a guest's `backup` or `snapshot*` lock.
const LOCKING_WORKERS: &[&str] = &[
    "vzdump",
    "qmsnapshot",
    "vzsnapshot",
    "qmdelsnapshot",
    "vzdelsnapshot",
    "qmrollback",
    "vzrollback",
];

/// An active task on a node, as the task list shows it.
#[derive(Debug, Clone)]
struct ActiveTask {
    upid: String,
    worker: String,
    id: String,
}

/// Check a snapshot name the way PVE does (`pve-configid`, maxLength 40,
/// reserved names), so a bad name fails before any call.
pub fn check_snapname(kind: GuestKind, name: &str) -> PveResult<()> {
    let re = regex::Regex::new(r"^[A-Za-z][A-Za-z0-9_-]{1,39}$").expect("static regex");
    if !re.is_match(name) {
        return Err(PveError::Invalid(format!(
            "invalid snapshot name '{name}': 2 to 40 characters, a letter first, then letters, digits, '-' or '_'"
        )));
    }
    let lower = name.to_ascii_lowercase();
    let reserved = match kind {
        GuestKind::Qemu => ["current", "pending"].contains(&lower.as_str()),
        GuestKind::Lxc => ["current", "vzdump"].contains(&lower.as_str()),
    };
    if reserved {
        return Err(PveError::Invalid(format!(
            "invalid snapshot name '{name}': reserved by Proxmox"
        )));
    }
    Ok(())
}

impl Pve {
    pub fn new(t: Box<dyn Transport>) -> Pve {
        Pve {
            t,
            task_timeout: Duration::from_secs(30 * 60),
            backup_timeout: Duration::from_secs(6 * 3600),
            lock_wait: Duration::from_secs(10 * 60),
        }
    }

    fn get(&self, path: &str, p: Params) -> PveResult<Value> {
        self.t.call(Method::Get, path, &p)
    }

    /// POST/DELETE that starts a task; wait for it.
    fn task(&self, m: Method, path: &str, p: Params, timeout: Duration) -> PveResult<TaskResult> {
        let v = self.t.call(m, path, &p)?;
        let upid = v.as_str().unwrap_or_default().to_string();
        if tasks::parse_upid(&upid).is_none() {
            return Err(PveError::Decode {
                what: format!("{} {path}", m.as_str()),
                message: format!("expected a task id (UPID), got {v}"),
            });
        }
        tasks::wait(self.t.as_ref(), &upid, timeout).map_err(|e| lock_from_task(e, path))
    }

    // ---- status, locks ----

    pub fn guest_status(&self, g: &GuestRef) -> PveResult<GuestStatus> {
        let v = self.get(&format!("{}/status/current", g.path()), Vec::new())?;
        Ok(GuestStatus {
            vmid: g.vmid,
            status: v["status"].as_str().unwrap_or("unknown").to_string(),
            name: v["name"].as_str().map(str::to_string),
            lock: v["lock"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            uptime: num(&v["uptime"]).map(|f| f as u64),
            raw: v,
        })
    }

    /// The active tasks on the guest's node (`source=active`). PVE reports
    /// a running task's status as `RUNNING` in this list (and a task that
    /// just ended with its exit status), so anything else is not running.
    fn active_tasks(&self, node: &str) -> PveResult<Vec<ActiveTask>> {
        let p = ParamsBuilder::new().str("source", "active").build();
        let v = self.get(&format!("/nodes/{}/tasks", enc(node)), p)?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|t| {
                        t["status"]
                            .as_str()
                            .is_none_or(|s| s.is_empty() || s.eq_ignore_ascii_case("running"))
                    })
                    .filter_map(|t| {
                        let upid = t["upid"].as_str()?.to_string();
                        let parsed = tasks::parse_upid(&upid);
                        let field = |k: &str| t[k].as_str().map(str::to_string);
                        let worker = field("type")
                            .or_else(|| parsed.as_ref().map(|u| u.worker_type.clone()))
                            .unwrap_or_default();
                        let id = field("id")
                            .or_else(|| parsed.as_ref().map(|u| u.id.clone()))
                            .unwrap_or_default();
                        Some(ActiveTask { upid, worker, id })
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The active tasks that could hold the guest's lock: its own (id =
    /// VMID), a job over several guests (empty id, e.g. a vzdump of a
    /// pool or of `all`), and any backup or snapshot task on the node.
    fn lock_holders(&self, g: &GuestRef) -> PveResult<Vec<ActiveTask>> {
        let vmid = g.vmid.to_string();
        Ok(self
            .active_tasks(&g.node)?
            .into_iter()
            .filter(|t| {
                t.id == vmid || t.id.is_empty() || LOCKING_WORKERS.contains(&t.worker.as_str())
            })
            .collect())
    }

    /// Fail with a clear "VM 100 is locked (backup)" unless the guest is
    /// unlocked; while an active task on its node could hold the lock, wait
    /// for it, up to `lock_wait`. The lock is called stale (with the unlock
    /// command to run yourself) only when no active task could hold it.
    /// Never unlocks.
    pub fn wait_unlocked(&self, g: &GuestRef) -> PveResult<()> {
        // At most `lock_wait`, cut to the calling thread's deadline (the
        // run's, see crate::proc::until).
        let lock_wait = crate::proc::bounded(self.lock_wait);
        let started = Instant::now();
        let mut said = None;
        loop {
            let st = self.guest_status(g)?;
            let Some(lock) = st.lock else { return Ok(()) };
            let holders = self.lock_holders(g)?;
            let label = format!("{} {}", g.kind.label(), g.vmid);
            let Some(holder) = holders.first() else {
                // The holder may have ended between the two reads.
                if self.guest_status(g)?.lock.is_none() {
                    return Ok(());
                }
                return Err(PveError::Locked {
                    guest: label,
                    lock,
                    detail: format!(
                        " and no active task on node {} could hold the lock; it may be stale. Check it and unlock it yourself (`{} unlock {}`); homelab-autopilot never removes a lock",
                        g.node,
                        if g.kind == GuestKind::Qemu { "qm" } else { "pct" },
                        g.vmid
                    ),
                });
            };
            if started.elapsed() >= lock_wait {
                return Err(PveError::Locked {
                    guest: label,
                    lock,
                    detail: format!(
                        ", still after waiting {}s (proxmox.lock_wait_seconds) for the active task {} ({}) on node {}; it was left running",
                        lock_wait.as_secs(),
                        holder.upid,
                        holder.worker,
                        g.node
                    ),
                });
            }
            if said.as_deref() != Some(holder.upid.as_str()) {
                tracing::info!(
                    "{label} is locked ({lock}); waiting for the active task {} ({})",
                    holder.upid,
                    holder.worker
                );
                said = Some(holder.upid.clone());
            }
            let left = lock_wait.saturating_sub(started.elapsed());
            std::thread::sleep(Duration::from_millis(500).min(left));
        }
    }

    /// Run `op` (which starts a task on the guest) once the guest is
    /// unlocked; when a lock appears between that check and the task (the
    /// task ends "VM is locked"), wait again and retry, within `lock_wait`.
    fn when_unlocked<T>(&self, g: &GuestRef, op: impl Fn() -> PveResult<T>) -> PveResult<T> {
        let started = Instant::now();
        loop {
            self.wait_unlocked(g)?;
            match op() {
                Err(e @ PveError::Locked { .. })
                    if started.elapsed() < crate::proc::bounded(self.lock_wait) =>
                {
                    tracing::info!("{e}; the lock appeared after the check, waiting again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                r => return r,
            }
        }
    }

    // ---- snapshots ----

    pub fn snapshot_create(
        &self,
        g: &GuestRef,
        name: &str,
        description: Option<&str>,
        vmstate: bool,
    ) -> PveResult<TaskResult> {
        check_snapname(g.kind, name)?;
        if vmstate && g.kind == GuestKind::Lxc {
            return Err(PveError::Invalid(
                "containers have no RAM state: vmstate is for VMs only".into(),
            ));
        }
        let mut p = ParamsBuilder::new()
            .str("snapname", name)
            .opt_str("description", description);
        if g.kind == GuestKind::Qemu && vmstate {
            p = p.bool("vmstate", true);
        }
        let p = p.build();
        self.when_unlocked(g, || {
            self.task(
                Method::Post,
                &format!("{}/snapshot", g.path()),
                p.clone(),
                self.task_timeout,
            )
        })
    }

    /// Snapshots, without the `current` pseudo-entry.
    pub fn snapshot_list(&self, g: &GuestRef) -> PveResult<Vec<SnapshotInfo>> {
        let v = self.get(&format!("{}/snapshot", g.path()), Vec::new())?;
        let all: Vec<SnapshotInfo> = serde_json::from_value(v).map_err(|e| PveError::Decode {
            what: "snapshot list".into(),
            message: e.to_string(),
        })?;
        Ok(all.into_iter().filter(|s| s.name != "current").collect())
    }

    pub fn snapshot_rollback(
        &self,
        g: &GuestRef,
        name: &str,
        start: bool,
    ) -> PveResult<TaskResult> {
        check_snapname(g.kind, name)?;
        let p = ParamsBuilder::new()
            .opt_bool("start", start.then_some(true))
            .build();
        self.when_unlocked(g, || {
            self.task(
                Method::Post,
                &format!("{}/snapshot/{}/rollback", g.path(), enc(name)),
                p.clone(),
                self.task_timeout,
            )
        })
    }

    pub fn snapshot_delete(&self, g: &GuestRef, name: &str, force: bool) -> PveResult<TaskResult> {
        check_snapname(g.kind, name)?;
        let p = ParamsBuilder::new()
            .opt_bool("force", force.then_some(true))
            .build();
        self.when_unlocked(g, || {
            self.task(
                Method::Delete,
                &format!("{}/snapshot/{}", g.path(), enc(name)),
                p.clone(),
                self.task_timeout,
            )
        })
    }

    // ---- vzdump and backups ----

    pub fn vzdump(&self, g: &GuestRef, o: &VzdumpOptions) -> PveResult<VzdumpResult> {
        match (&o.storage, &o.dumpdir) {
            (Some(_), Some(_)) => {
                return Err(PveError::Invalid(
                    "vzdump: set storage or dumpdir, not both".into(),
                ))
            }
            (None, None) => return Err(PveError::Invalid("vzdump: set storage or dumpdir".into())),
            (None, Some(_)) if !self.t.is_root() => {
                return Err(PveError::Invalid(
                    "vzdump to a dump directory needs root@pam: API tokens may not set 'dumpdir'. Use a storage (global.backup.direct_storage.storage), password login as root@pam, or local: true on the node".into(),
                ))
            }
            _ => {}
        }
        if (o.notes_template.is_some() || o.protected.is_some()) && o.storage.is_none() {
            return Err(PveError::Invalid(
                "vzdump: notes_template and protect need a storage".into(),
            ));
        }
        if let Some(m) = &o.mode {
            if !["snapshot", "suspend", "stop"].contains(&m.as_str()) {
                return Err(PveError::Invalid(format!(
                    "vzdump: mode '{m}' is not snapshot, suspend or stop"
                )));
            }
        }
        if let Some(c) = &o.compress {
            if !["0", "1", "gzip", "lzo", "zstd"].contains(&c.as_str()) {
                return Err(PveError::Invalid(format!(
                    "vzdump: compress '{c}' is not 0, 1, gzip, lzo or zstd"
                )));
            }
        }
        let p = ParamsBuilder::new()
            .str("vmid", g.vmid.to_string())
            .opt_str("storage", o.storage.clone())
            .opt_str("dumpdir", o.dumpdir.clone())
            .opt_str("mode", o.mode.clone())
            .opt_str("compress", o.compress.clone())
            .opt_str("notes-template", o.notes_template.clone())
            .opt_bool("protected", o.protected)
            .opt_str("prune-backups", o.prune_backups.clone())
            .opt_bool("remove", o.remove)
            .opt_int("bwlimit", o.bwlimit)
            .opt_int("zstd", o.zstd)
            .build();
        self.when_unlocked(g, || self.vzdump_once(g, o, &p))
    }

    /// One vzdump task, waited for, and the backup it wrote.
    fn vzdump_once(&self, g: &GuestRef, o: &VzdumpOptions, p: &Params) -> PveResult<VzdumpResult> {
        let path = format!("/nodes/{}/vzdump", enc(&g.node));
        let started = chrono::Utc::now().timestamp() as u64;
        let v = self.t.call(Method::Post, &path, p)?;
        let upid = v.as_str().unwrap_or_default().to_string();
        if tasks::parse_upid(&upid).is_none() {
            // "OK" means: none of the guests lives on this node; nothing ran.
            return Err(PveError::Invalid(format!(
                "vzdump on node {} did nothing (answer {v}): {} {} is not on that node",
                g.node,
                g.kind.label(),
                g.vmid
            )));
        }
        let timeout = o
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(self.backup_timeout);
        let task = tasks::wait(self.t.as_ref(), &upid, timeout)
            .map_err(|e| lock_from_task(e, &g.path()))?;
        let log = tasks::log_lines(self.t.as_ref(), &upid).unwrap_or_default();
        let (archive, to_pbs) = archive_from_log(&log);
        let mut out = VzdumpResult {
            task,
            volid: None,
            path: None,
            size: None,
            ctime: None,
            verification: None,
            format: None,
        };
        if let Some(storage) = &o.storage {
            let want = archive.as_ref().map(|a| {
                if to_pbs {
                    format!("{storage}:backup/{a}")
                } else {
                    format!("{storage}:backup/{}", a.rsplit('/').next().unwrap_or(a))
                }
            });
            let list = self.list_backups(&g.node, storage, Some(g.vmid))?;
            let found = list
                .iter()
                .find(|b| Some(&b.volid) == want.as_ref())
                .or_else(|| {
                    list.iter()
                        .filter(|b| b.ctime.unwrap_or(0) + 5 >= started)
                        .max_by_key(|b| b.ctime.unwrap_or(0))
                });
            let Some(b) = found else {
                return Err(PveError::Decode {
                    what: "vzdump".into(),
                    message: format!(
                        "the task succeeded but no new backup of {} is listed on storage {storage}",
                        g.vmid
                    ),
                });
            };
            out.volid = Some(b.volid.clone());
            out.size = b.size.or_else(|| size_from_log(&log));
            out.ctime = b.ctime;
            out.verification = b.verification.clone();
            out.format = Some(b.format.clone());
            if !to_pbs {
                out.path = archive;
            }
        } else {
            let Some(path) = archive else {
                return Err(PveError::Decode {
                    what: "vzdump".into(),
                    message: "the task log does not name the archive it wrote".into(),
                });
            };
            // The file is on the node; its size is in the task log.
            out.size = size_from_log(&log);
            out.path = Some(path);
        }
        Ok(out)
    }

    /// Every storage of the cluster (`GET /storage`, optionally of one
    /// type), with its configuration (`prune-backups`, PBS `server` and
    /// `datastore`, ...).
    pub fn storages(&self, kind: Option<&str>) -> PveResult<Vec<Value>> {
        let p = ParamsBuilder::new().opt_str("type", kind).build();
        let v = self.get("/storage", p)?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// The storage's own retention (`prune-backups`) when it limits the
    /// number of backups, and whether the storage is a PBS one.
    pub fn storage_prune_limit(&self, storage: &str) -> PveResult<(Option<String>, bool)> {
        let all = self.storages(None)?;
        let Some(s) = all.iter().find(|s| s["storage"].as_str() == Some(storage)) else {
            return Ok((None, false));
        };
        let is_pbs = s["type"].as_str() == Some("pbs");
        let policy = s["prune-backups"]
            .as_str()
            .filter(|p| limits_count(p))
            .map(str::to_string);
        Ok((policy, is_pbs))
    }

    /// The PVE storage of type `pbs` that points at `server` and
    /// `datastore` (and `namespace`, when given): the ids of every match.
    pub fn find_pbs_storage(
        &self,
        server: &str,
        datastore: &str,
        namespace: Option<&str>,
    ) -> PveResult<Vec<String>> {
        let all = self.storages(Some("pbs"))?;
        Ok(all
            .iter()
            .filter(|s| s["type"].as_str().is_none_or(|t| t == "pbs"))
            .filter(|s| {
                s["server"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(server))
                    && s["datastore"].as_str() == Some(datastore)
                    && namespace.is_none_or(|ns| s["namespace"].as_str().unwrap_or_default() == ns)
            })
            .filter_map(|s| s["storage"].as_str().map(str::to_string))
            .collect())
    }

    /// Backups on a storage (optionally of one VMID), oldest first.
    pub fn list_backups(
        &self,
        node: &str,
        storage: &str,
        vmid: Option<u32>,
    ) -> PveResult<Vec<BackupVolume>> {
        let p = ParamsBuilder::new()
            .str("content", "backup")
            .opt_int("vmid", vmid.map(i64::from))
            .build();
        let v = self.get(
            &format!("/nodes/{}/storage/{}/content", enc(node), enc(storage)),
            p,
        )?;
        let mut list: Vec<BackupVolume> =
            serde_json::from_value(v).map_err(|e| PveError::Decode {
                what: "storage content".into(),
                message: e.to_string(),
            })?;
        list.sort_by_key(|b| b.ctime.unwrap_or(0));
        Ok(list)
    }

    /// Delete a backup volume (refused by PVE when protected).
    pub fn delete_volume(&self, node: &str, volid: &str) -> PveResult<()> {
        let storage = volid.split(':').next().unwrap_or_default();
        let path = format!(
            "/nodes/{}/storage/{}/content/{}",
            enc(node),
            enc(storage),
            enc(volid)
        );
        let v = self.t.call(Method::Delete, &path, &Vec::new())?;
        if let Some(upid) = v.as_str().filter(|s| tasks::parse_upid(s).is_some()) {
            tasks::wait(self.t.as_ref(), upid, self.task_timeout)?;
        }
        Ok(())
    }

    /// Restore a backup into `vmid` (a new guest unless `force`), always
    /// naming the target storage.
    pub fn restore(
        &self,
        target: &GuestRef,
        archive: &str,
        storage: &str,
        o: &RestoreOptions,
    ) -> PveResult<TaskResult> {
        let mut p = ParamsBuilder::new().int("vmid", target.vmid.into());
        p = match target.kind {
            GuestKind::Qemu => p.str("archive", archive),
            GuestKind::Lxc => p.str("ostemplate", archive).bool("restore", true),
        };
        let p = p
            .str("storage", storage)
            .opt_bool("unique", o.unique)
            .opt_bool("force", o.force)
            .opt_bool("start", o.start)
            .opt_int("bwlimit", o.bwlimit)
            .build();
        let path = format!("/nodes/{}/{}", enc(&target.node), target.kind.as_str());
        let timeout = o
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(self.backup_timeout);
        self.task(Method::Post, &path, p, timeout)
    }

    pub fn clone_guest(&self, g: &GuestRef, newid: u32, o: &CloneOptions) -> PveResult<TaskResult> {
        let name_key = if g.kind == GuestKind::Qemu {
            "name"
        } else {
            "hostname"
        };
        let p = ParamsBuilder::new()
            .int("newid", newid.into())
            .opt_str(name_key, o.name.clone())
            .opt_bool("full", o.full)
            .opt_str("storage", o.storage.clone())
            .opt_str("target", o.target.clone())
            .opt_str("snapname", o.snapname.clone())
            .build();
        self.task(
            Method::Post,
            &format!("{}/clone", g.path()),
            p,
            self.task_timeout,
        )
    }

    // ---- power ----

    pub fn start(&self, g: &GuestRef) -> PveResult<TaskResult> {
        self.task(
            Method::Post,
            &format!("{}/status/start", g.path()),
            Vec::new(),
            self.task_timeout,
        )
    }

    pub fn stop(&self, g: &GuestRef) -> PveResult<TaskResult> {
        self.task(
            Method::Post,
            &format!("{}/status/stop", g.path()),
            Vec::new(),
            self.task_timeout,
        )
    }

    /// Clean shutdown; `force_stop` hard-stops a guest that ignores ACPI
    /// once `timeout` runs out.
    pub fn shutdown(
        &self,
        g: &GuestRef,
        timeout: Option<i64>,
        force_stop: bool,
    ) -> PveResult<TaskResult> {
        let p = ParamsBuilder::new()
            .opt_int("timeout", timeout)
            .opt_bool("forceStop", force_stop.then_some(true))
            .build();
        let wait = Duration::from_secs(timeout.unwrap_or(180).max(0) as u64 + 120);
        self.task(
            Method::Post,
            &format!("{}/status/shutdown", g.path()),
            p,
            wait,
        )
    }

    pub fn destroy(&self, g: &GuestRef, purge: bool) -> PveResult<TaskResult> {
        let p = ParamsBuilder::new()
            .opt_bool("purge", purge.then_some(true))
            .build();
        self.task(Method::Delete, &g.path(), p, self.task_timeout)
    }

    // ---- node and cluster ----

    pub fn node_status(&self, node: &str) -> PveResult<NodeStatus> {
        let v = self.get(&format!("/nodes/{}/status", enc(node)), Vec::new())?;
        Ok(NodeStatus::from_value(node, &v))
    }

    pub fn cluster_resources(&self, kind: Option<&str>) -> PveResult<Vec<ClusterResource>> {
        let p = ParamsBuilder::new().opt_str("type", kind).build();
        let v = self.get("/cluster/resources", p)?;
        serde_json::from_value(v).map_err(|e| PveError::Decode {
            what: "cluster resources".into(),
            message: e.to_string(),
        })
    }

    /// Which node (and kind) a VMID lives on.
    pub fn find_guest(&self, vmid: u32) -> PveResult<GuestRef> {
        let all = self.cluster_resources(Some("vm"))?;
        let r = all
            .iter()
            .find(|r| r.vmid == Some(vmid.into()))
            .ok_or_else(|| {
                PveError::Invalid(format!(
                    "VMID {vmid} is not in /cluster/resources (wrong id, or the API token lacks VM.Audit on /vms/{vmid}: privilege-separated tokens see an empty list)"
                ))
            })?;
        let kind = GuestKind::parse(&r.kind).ok_or_else(|| PveError::Decode {
            what: "cluster resources".into(),
            message: format!("VMID {vmid} has type {}", r.kind),
        })?;
        Ok(GuestRef {
            node: r.node.clone().unwrap_or_default(),
            kind,
            vmid,
        })
    }

    pub fn next_vmid(&self) -> PveResult<u32> {
        let v = self.get("/cluster/nextid", Vec::new())?;
        num(&v).map(|f| f as u32).ok_or_else(|| PveError::Decode {
            what: "nextid".into(),
            message: format!("not a number: {v}"),
        })
    }

    // ---- guest agent ----

    /// Start a command in a VM through the QEMU guest agent; returns its pid.
    pub fn agent_exec(&self, g: &GuestRef, argv: &[String], input: Option<&str>) -> PveResult<i64> {
        if g.kind != GuestKind::Qemu {
            return Err(PveError::Invalid(
                "the guest agent is for VMs; use pve::exec in local mode (pct exec) for containers"
                    .into(),
            ));
        }
        if argv.is_empty() {
            return Err(PveError::Invalid("agent exec: empty command".into()));
        }
        let mut p: Params = argv
            .iter()
            .map(|a| ("command".to_string(), a.clone()))
            .collect();
        if let Some(i) = input {
            p.push(("input-data".into(), i.to_string()));
        }
        let v = self
            .t
            .call(Method::Post, &format!("{}/agent/exec", g.path()), &p)?;
        num(&v["pid"])
            .map(|f| f as i64)
            .ok_or_else(|| PveError::Decode {
                what: "agent exec".into(),
                message: format!("no pid in {v}"),
            })
    }

    pub fn agent_exec_status(&self, g: &GuestRef, pid: i64) -> PveResult<Value> {
        let p = ParamsBuilder::new().int("pid", pid).build();
        self.get(&format!("{}/agent/exec-status", g.path()), p)
    }
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreOptions {
    pub unique: Option<bool>,
    pub force: Option<bool>,
    pub start: Option<bool>,
    pub bwlimit: Option<i64>,
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloneOptions {
    pub name: Option<String>,
    pub full: Option<bool>,
    pub storage: Option<String>,
    pub target: Option<String>,
    pub snapname: Option<String>,
}

/// A task that failed because of a lock becomes a [`PveError::Locked`]
/// (keeping the log tail in the detail).
fn lock_from_task(e: PveError, path: &str) -> PveError {
    match (&e, e.lock_name()) {
        (PveError::TaskFailed { log_tail, .. }, Some(lock)) => {
            let segs: Vec<&str> = path.split('/').collect();
            let guest = segs
                .windows(2)
                .find_map(|w| match w[0] {
                    "qemu" => Some(format!("VM {}", w[1])),
                    "lxc" => Some(format!("CT {}", w[1])),
                    _ => None,
                })
                .unwrap_or_else(|| "guest".into());
            PveError::Locked {
                guest,
                lock,
                detail: format!("\n--- task log (last lines)\n{log_tail}"),
            }
        }
        _ => e,
    }
}

/// Whether a `prune-backups` property string limits the number of backups
/// (any `keep-*` above 0, and not `keep-all=1`).
pub fn limits_count(policy: &str) -> bool {
    let mut limited = false;
    for kv in policy.split(',') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let n: u64 = v.trim().parse().unwrap_or(0);
        match k.trim() {
            "keep-all" if n == 1 => return false,
            k if k.starts_with("keep-") && n > 0 => limited = true,
            _ => {}
        }
    }
    limited
}

/// The archive size vzdump logs ("INFO: archive file size: 1.23GB", or
/// "... 1.23 GiB" in newer versions), in bytes.
pub fn size_from_log(lines: &[String]) -> Option<u64> {
    let re = regex::Regex::new(r"archive file size: ([0-9.]+)\s*([KMGTP]?)(i?)B").ok()?;
    lines.iter().rev().find_map(|l| {
        let c = re.captures(l)?;
        let n: f64 = c[1].parse().ok()?;
        let exp = match &c[2] {
            "" => 0,
            "K" => 1,
            "M" => 2,
            "G" => 3,
            "T" => 4,
            _ => 5,
        };
        // PVE's render_bytes and format_size both count in 1024s.
        let bytes = n * 1024f64.powi(exp);
        (bytes > 0.0).then_some(bytes as u64)
    })
}

/// The archive a vzdump task wrote, from its log: a file path (dir storage
/// or dump dir) or a PBS snapshot name (`vm/100/2026-...Z`, flag true).
pub fn archive_from_log(lines: &[String]) -> (Option<String>, bool) {
    for l in lines {
        if let Some(rest) = l.split("creating vzdump archive '").nth(1) {
            return (rest.split('\'').next().map(str::to_string), false);
        }
        if let Some(rest) = l.split("creating Proxmox Backup Server archive '").nth(1) {
            return (rest.split('\'').next().map(str::to_string), true);
        }
    }
    (None, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_follow_pve_configid() {
        for ok in ["ab", "pre-update_1", &format!("a{}", "b".repeat(39))] {
            assert!(check_snapname(GuestKind::Qemu, ok).is_ok(), "{ok}");
        }
        for bad in [
            "a",
            "1abc",
            "has space",
            "dot.ted",
            "current",
            "Pending",
            &format!("a{}", "b".repeat(40)),
        ] {
            assert!(check_snapname(GuestKind::Qemu, bad).is_err(), "{bad}");
        }
        assert!(check_snapname(GuestKind::Lxc, "vzdump").is_err());
        assert!(check_snapname(GuestKind::Lxc, "pending").is_ok());
    }

    #[test]
    fn archive_paths_come_from_the_task_log() {
        let l = vec!["INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-qemu-100-2026_05_01-10_00_00.vma.zst'".to_string()];
        assert_eq!(
            archive_from_log(&l),
            (
                Some("/var/lib/vz/dump/vzdump-qemu-100-2026_05_01-10_00_00.vma.zst".into()),
                false
            )
        );
        let l = vec![
            "INFO: creating Proxmox Backup Server archive 'vm/100/2026-05-01T08:00:00Z'"
                .to_string(),
        ];
        assert_eq!(
            archive_from_log(&l),
            (Some("vm/100/2026-05-01T08:00:00Z".into()), true)
        );
    }
}
