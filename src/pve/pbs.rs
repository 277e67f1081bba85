//! Proxmox Backup Server: the REST API (port 8007, `PBSAPIToken=ID:SECRET`,
//! errors as plain-text bodies) for snapshots with their verification
//! state, verify, datastore status and prune simulation; and host-path
//! backups with `proxmox-backup-client`, with repository, fingerprint and
//! password passed in its documented environment variables, never argv.

use super::error::{PveError, PveResult};
use super::types::num;
use super::{enc, tasks, Method, ParamsBuilder, Transport};
use crate::config::Secret;
use crate::proc::{run, RunOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Pbs {
    pub t: Box<dyn Transport>,
    pub task_timeout: Duration,
}

/// One backup snapshot in a datastore.
#[derive(Debug, Clone, Serialize)]
pub struct PbsSnapshot {
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    pub size: Option<u64>,
    /// Shown to scripts as `is_protected` (`protected` is reserved in Rhai).
    #[serde(rename = "is_protected")]
    pub protected: bool,
    pub comment: Option<String>,
    /// `ok`, `failed`, or `none` (never verified).
    pub verification: String,
    /// When the last verification started (from its task's UPID).
    pub verified_at: Option<i64>,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DatastoreStatus {
    pub store: String,
    pub total: u64,
    pub used: u64,
    pub avail: u64,
}

/// Keep options of a prune (each at least 1 when set).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeepOptions {
    pub keep_last: Option<i64>,
    pub keep_hourly: Option<i64>,
    pub keep_daily: Option<i64>,
    pub keep_weekly: Option<i64>,
    pub keep_monthly: Option<i64>,
    pub keep_yearly: Option<i64>,
}

impl Pbs {
    pub fn new(t: Box<dyn Transport>) -> Pbs {
        Pbs {
            t,
            task_timeout: Duration::from_secs(6 * 3600),
        }
    }

    /// Snapshots of a datastore, optionally of one type (`vm`, `ct`,
    /// `host`) and id, oldest first.
    pub fn snapshots(
        &self,
        store: &str,
        ns: Option<&str>,
        backup_type: Option<&str>,
        backup_id: Option<&str>,
    ) -> PveResult<Vec<PbsSnapshot>> {
        let p = ParamsBuilder::new()
            .opt_str("ns", ns)
            .opt_str("backup-type", backup_type)
            .opt_str("backup-id", backup_id)
            .build();
        let v = self.t.call(
            Method::Get,
            &format!("/admin/datastore/{}/snapshots", enc(store)),
            &p,
        )?;
        let mut out: Vec<PbsSnapshot> = v
            .as_array()
            .map(|a| a.iter().map(snapshot_from).collect())
            .unwrap_or_default();
        out.sort_by_key(|s| s.backup_time);
        Ok(out)
    }

    /// Start a verification (whole store, a group, or one snapshot) and
    /// wait for it. Returns the task's exit status.
    pub fn verify(
        &self,
        store: &str,
        ns: Option<&str>,
        backup_type: Option<&str>,
        backup_id: Option<&str>,
        backup_time: Option<i64>,
    ) -> PveResult<super::types::TaskResult> {
        let p = ParamsBuilder::new()
            .opt_str("ns", ns)
            .opt_str("backup-type", backup_type)
            .opt_str("backup-id", backup_id)
            .opt_int("backup-time", backup_time)
            .build();
        let v = self.t.call(
            Method::Post,
            &format!("/admin/datastore/{}/verify", enc(store)),
            &p,
        )?;
        let upid = v.as_str().unwrap_or_default();
        tasks::wait(self.t.as_ref(), upid, self.task_timeout)
    }

    pub fn status(&self, store: &str) -> PveResult<DatastoreStatus> {
        let v = self.t.call(
            Method::Get,
            &format!("/admin/datastore/{}/status", enc(store)),
            &Vec::new(),
        )?;
        let g = |k: &str| num(&v[k]).unwrap_or(0.0) as u64;
        Ok(DatastoreStatus {
            store: store.into(),
            total: g("total"),
            used: g("used"),
            avail: g("avail"),
        })
    }

    /// What a prune of one group would keep and remove (`dry-run`).
    pub fn prune_simulate(
        &self,
        store: &str,
        ns: Option<&str>,
        backup_type: &str,
        backup_id: &str,
        keep: &KeepOptions,
    ) -> PveResult<Vec<Value>> {
        for (k, v) in [
            ("keep_last", keep.keep_last),
            ("keep_hourly", keep.keep_hourly),
            ("keep_daily", keep.keep_daily),
            ("keep_weekly", keep.keep_weekly),
            ("keep_monthly", keep.keep_monthly),
            ("keep_yearly", keep.keep_yearly),
        ] {
            if v.is_some_and(|n| n < 1) {
                return Err(PveError::Invalid(format!("{k} must be at least 1")));
            }
        }
        let p = ParamsBuilder::new()
            .str("backup-type", backup_type)
            .str("backup-id", backup_id)
            .opt_str("ns", ns)
            .opt_int("keep-last", keep.keep_last)
            .opt_int("keep-hourly", keep.keep_hourly)
            .opt_int("keep-daily", keep.keep_daily)
            .opt_int("keep-weekly", keep.keep_weekly)
            .opt_int("keep-monthly", keep.keep_monthly)
            .opt_int("keep-yearly", keep.keep_yearly)
            .bool("dry-run", true)
            .build();
        let v = self.t.call(
            Method::Post,
            &format!("/admin/datastore/{}/prune", enc(store)),
            &p,
        )?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }
}

fn snapshot_from(v: &Value) -> PbsSnapshot {
    let files = v["files"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| {
                    // Really objects {filename, size, crypt-mode}; the schema says strings.
                    f.as_str()
                        .map(str::to_string)
                        .or_else(|| f["filename"].as_str().map(str::to_string))
                })
                .collect()
        })
        .unwrap_or_default();
    PbsSnapshot {
        backup_type: v["backup-type"].as_str().unwrap_or_default().into(),
        backup_id: v["backup-id"].as_str().unwrap_or_default().into(),
        backup_time: num(&v["backup-time"]).unwrap_or(0.0) as i64,
        size: num(&v["size"]).map(|f| f as u64),
        protected: v["protected"].as_bool().unwrap_or(false),
        comment: v["comment"].as_str().map(str::to_string),
        verification: v["verification"]["state"]
            .as_str()
            .unwrap_or("none")
            .to_string(),
        verified_at: v["verification"]["upid"].as_str().and_then(upid_starttime),
        files,
    }
}

/// When the task of a UPID started: the `starttime` field (hex unix
/// seconds), 5th in a PVE UPID, 6th in a PBS one (which has a task id
/// before it).
pub fn upid_starttime(upid: &str) -> Option<i64> {
    let parts: Vec<&str> = upid.split(':').collect();
    let i = match parts.len() {
        9 => 4,
        10 => 5,
        _ => return None,
    };
    (parts.first() == Some(&"UPID"))
        .then(|| i64::from_str_radix(parts[i], 16).ok())
        .flatten()
}

/// A host-path backup with `proxmox-backup-client`.
#[derive(Debug, Clone)]
pub struct ClientBackup {
    /// `[[user@realm[!token]@]server[:port]:]datastore`.
    pub repository: String,
    pub password: Option<Secret>,
    pub fingerprint: Option<String>,
    pub namespace: Option<String>,
    pub backup_id: String,
    /// `(archive name without .pxar, directory)`.
    pub paths: Vec<(String, String)>,
    pub timeout: Duration,
    pub program: String,
}

/// The argv and the environment of a `proxmox-backup-client backup` run:
/// secrets and repository only in the environment.
pub fn client_command(b: &ClientBackup) -> (Vec<String>, BTreeMap<String, String>) {
    let mut argv = vec![b.program.clone(), "backup".into()];
    for (name, dir) in &b.paths {
        argv.push(format!("{name}.pxar:{dir}"));
    }
    argv.extend(["--backup-type".into(), "host".into()]);
    argv.extend(["--backup-id".into(), b.backup_id.clone()]);
    if let Some(ns) = &b.namespace {
        argv.extend(["--ns".into(), ns.clone()]);
    }
    let mut env = BTreeMap::new();
    env.insert("PBS_REPOSITORY".to_string(), b.repository.clone());
    if let Some(p) = &b.password {
        env.insert("PBS_PASSWORD".to_string(), p.expose().to_string());
    }
    if let Some(f) = &b.fingerprint {
        env.insert("PBS_FINGERPRINT".to_string(), f.clone());
    }
    env.insert("PROXMOX_OUTPUT_FORMAT".to_string(), "json".into());
    (argv, env)
}

/// Whether `proxmox-backup-client` is on PATH.
pub fn client_installed(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Run the backup; returns the client's stdout.
pub fn client_backup(b: &ClientBackup) -> PveResult<String> {
    if !client_installed(&b.program) {
        return Err(PveError::Command {
            program: b.program.clone(),
            message: "not installed (apt install proxmox-backup-client)".into(),
        });
    }
    let (argv, env) = client_command(b);
    let opts = RunOptions {
        timeout_seconds: b.timeout.as_secs().max(1),
        env,
        ..Default::default()
    };
    let info = run(&argv, &opts).map_err(|e| PveError::Command {
        program: b.program.clone(),
        message: e.to_string(),
    })?;
    if info.timed_out || info.code != 0 {
        return Err(PveError::Command {
            program: b.program.clone(),
            message: format!(
                "{}: {}",
                if info.timed_out {
                    "timed out".to_string()
                } else {
                    format!("exited with {}", info.code)
                },
                info.stderr.trim()
            ),
        });
    }
    Ok(info.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_secrets_go_in_the_environment_only() {
        let b = ClientBackup {
            repository: "root@pam!ha@192.168.1.100:store".into(),
            password: Some(Secret::new("sentinel-secret")),
            fingerprint: Some("AA:BB".into()),
            namespace: None,
            backup_id: "pve1".into(),
            paths: vec![("etc-pve".into(), "/etc/pve".into())],
            timeout: Duration::from_secs(5),
            program: "proxmox-backup-client".into(),
        };
        let (argv, env) = client_command(&b);
        assert!(argv
            .iter()
            .all(|a| !a.contains("sentinel") && !a.contains("192.168")));
        assert_eq!(env["PBS_PASSWORD"], "sentinel-secret");
        assert_eq!(env["PBS_REPOSITORY"], "root@pam!ha@192.168.1.100:store");
        assert!(argv.contains(&"etc-pve.pxar:/etc/pve".to_string()));
    }

    #[test]
    fn snapshot_files_may_be_objects() {
        let v = serde_json::json!({"backup-type":"vm","backup-id":"100","backup-time":1700000000,
            "files":[{"filename":"index.json.blob","size":1}],"verification":{"state":"ok","upid":"x"}});
        let s = snapshot_from(&v);
        assert_eq!(s.files, ["index.json.blob"]);
        assert_eq!(s.verification, "ok");
        assert_eq!(s.verified_at, None);
        let pbs = "UPID:pbs:000004D2:00001A2B:00000001:68A60E01:verify:store1:root@pam:";
        assert_eq!(upid_starttime(pbs), Some(0x68A6_0E01));
        let pve = "UPID:pve1:0006C7D9:0029F72D:68A60E01:vzrestore:104:root@pam:";
        assert_eq!(upid_starttime(pve), Some(0x68A6_0E01));
        assert_eq!(upid_starttime("x"), None);
    }
}
