//! Typed values of the PVE API, decoded leniently: PVE sends many numbers
//! as strings (`"memory":"2048"`, `nextid`, storage `size`), so every
//! numeric field here accepts either.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A number sent as a JSON number or a string.
pub fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(num(&Value::deserialize(d)?).map(|f| f as u64))
}

pub fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(num(&Value::deserialize(d)?))
}

/// A boolean sent as 0/1, "0"/"1" or true/false.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_f64().unwrap_or(0.0) != 0.0,
        Value::String(s) => matches!(s.as_str(), "1" | "true" | "yes" | "on"),
        _ => false,
    })
}

/// Any JSON value as a number, if it is one (or a numeric string).
pub fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// qemu (`vm` services) or lxc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestKind {
    Qemu,
    Lxc,
}

impl GuestKind {
    /// The path segment: `qemu` / `lxc`.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Qemu => "qemu",
            GuestKind::Lxc => "lxc",
        }
    }
    /// `vm`/`qemu` or `lxc`/`ct`.
    pub fn parse(s: &str) -> Option<GuestKind> {
        match s {
            "vm" | "qemu" => Some(GuestKind::Qemu),
            "lxc" | "ct" => Some(GuestKind::Lxc),
            _ => None,
        }
    }
    /// How PVE names it in messages: "VM" / "CT".
    pub fn label(self) -> &'static str {
        match self {
            GuestKind::Qemu => "VM",
            GuestKind::Lxc => "CT",
        }
    }
}

/// A guest on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestRef {
    pub node: String,
    pub kind: GuestKind,
    pub vmid: u32,
}

impl GuestRef {
    pub fn path(&self) -> String {
        format!(
            "/nodes/{}/{}/{}",
            super::enc(&self.node),
            self.kind.as_str(),
            self.vmid
        )
    }
}

impl std::fmt::Display for GuestRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} on {}", self.kind.label(), self.vmid, self.node)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub snaptime: Option<u64>,
    #[serde(default, deserialize_with = "lenient_bool")]
    pub vmstate: bool,
    #[serde(default)]
    pub parent: Option<String>,
    #[serde(default)]
    pub snapstate: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub state: String,
    #[serde(default)]
    pub upid: Option<String>,
}

/// One backup volume in a storage's content list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupVolume {
    pub volid: String,
    #[serde(default)]
    pub format: String,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub size: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub ctime: Option<u64>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub vmid: Option<u64>,
    #[serde(default)]
    pub notes: Option<String>,
    /// PVE's `protected`; shown to scripts as `is_protected` (`protected`
    /// is a reserved word in Rhai).
    #[serde(
        default,
        deserialize_with = "lenient_bool",
        rename(serialize = "is_protected")
    )]
    pub protected: bool,
    #[serde(default)]
    pub verification: Option<Verification>,
    #[serde(default)]
    pub subtype: Option<String>,
}

/// `GET .../status/current`, the fields we use (the rest is kept in `raw`).
#[derive(Debug, Clone, Serialize)]
pub struct GuestStatus {
    pub vmid: u32,
    pub status: String,
    pub name: Option<String>,
    pub lock: Option<String>,
    pub uptime: Option<u64>,
    pub raw: Value,
}

/// One row of `GET /cluster/resources`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterResource {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default, deserialize_with = "lenient_u64")]
    pub vmid: Option<u64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub lock: Option<String>,
    #[serde(default)]
    pub storage: Option<String>,
    #[serde(default)]
    pub plugintype: Option<String>,
}

/// `GET /nodes/{node}/status`, reduced to cpu, memory and rootfs.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node: String,
    /// 0..1 fraction.
    pub cpu: f64,
    pub memory_total: u64,
    pub memory_used: u64,
    pub rootfs_total: u64,
    pub rootfs_used: u64,
    pub rootfs_avail: u64,
    pub uptime: Option<u64>,
    pub pveversion: Option<String>,
}

impl NodeStatus {
    pub fn from_value(node: &str, v: &Value) -> NodeStatus {
        let g = |a: &str, b: &str| num(&v[a][b]).unwrap_or(0.0) as u64;
        NodeStatus {
            node: node.to_string(),
            cpu: num(&v["cpu"]).unwrap_or(0.0),
            memory_total: g("memory", "total"),
            memory_used: g("memory", "used"),
            rootfs_total: g("rootfs", "total"),
            rootfs_used: g("rootfs", "used"),
            rootfs_avail: g("rootfs", "avail"),
            uptime: num(&v["uptime"]).map(|f| f as u64),
            pveversion: v["pveversion"].as_str().map(str::to_string),
        }
    }
}

/// The outcome of a finished task.
#[derive(Debug, Clone, Serialize)]
pub struct TaskResult {
    pub upid: String,
    pub exitstatus: String,
    /// `WARNINGS: n` → Some(n).
    pub warnings: Option<u32>,
    pub duration_ms: u64,
}

/// Where vzdump writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VzdumpTarget {
    /// A PVE storage (dir, NFS, or a PBS storage).
    Storage(String),
    /// A directory on the node (root only).
    Dumpdir(String),
}

/// vzdump options (the subset a homelab uses). Names follow the schema.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VzdumpOptions {
    /// PVE storage id (PBS or dir).
    pub storage: Option<String>,
    /// Dump directory on the node (root@pam or local mode only).
    pub dumpdir: Option<String>,
    /// snapshot | suspend | stop.
    pub mode: Option<String>,
    /// 0 | 1 | gzip | lzo | zstd.
    pub compress: Option<String>,
    pub notes_template: Option<String>,
    /// vzdump `protected`; scripts write `protect` (`protected` is a
    /// reserved word in Rhai).
    #[serde(alias = "protect")]
    pub protected: Option<bool>,
    /// Property string `keep-last=3,keep-daily=7`.
    pub prune_backups: Option<String>,
    /// Let vzdump prune by `prune-backups` (default: leave it to us / PBS).
    pub remove: Option<bool>,
    pub bwlimit: Option<i64>,
    pub zstd: Option<i64>,
    pub timeout_seconds: Option<u64>,
}

/// The volume a vzdump produced.
#[derive(Debug, Clone, Serialize)]
pub struct VzdumpResult {
    pub task: TaskResult,
    /// Volume id (`local:backup/vzdump-...` or `pbs:backup/vm/100/...`),
    /// when written to a storage.
    pub volid: Option<String>,
    /// File path on the node, when written to a dump dir (or known).
    pub path: Option<String>,
    pub size: Option<u64>,
    pub ctime: Option<u64>,
    pub verification: Option<Verification>,
    pub format: Option<String>,
}
