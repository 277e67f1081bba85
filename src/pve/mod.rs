//! Proxmox VE and Proxmox Backup Server clients.
//!
//! One [`Transport`] trait with two implementations: [`client::HttpTransport`]
//! (the REST API over HTTPS: token or ticket auth, TLS pinning, retries of
//! idempotent GETs) and [`local::PveshTransport`] (`pvesh` on the PVE host
//! itself, for `local: true`). [`Pve`] builds every typed operation
//! (snapshots, vzdump, restore, power, tasks...) on top of either, so the
//! same code path runs against the API, the host CLIs and the fake server in
//! the tests. Parameter names, paths and enums follow the official API
//! schema (the Proxmox API viewer's `apidata`, https://pve.proxmox.com/pve-docs/api-viewer/);
//! the wire traps handled here (UPIDs, 0/1 booleans, error shapes, token
//! headers, lock errors) are described where they are handled.

pub mod client;
pub mod connect;
pub mod error;
pub mod guest;
pub mod local;
pub mod ops;
pub mod pbs;
pub mod restore;
pub mod tasks;
pub mod tls;
pub mod types;

pub use client::{Auth, HttpTransport};
pub use error::{PveError, PveResult};
pub use ops::Pve;
pub use types::*;

use serde_json::Value;

/// HTTP method of an API call (pvesh: get / create / set / delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

/// Request parameters in wire form: booleans already `0`/`1`, repeated keys
/// allowed (vzdump `exclude-path`).
pub type Params = Vec<(String, String)>;

/// How API calls reach Proxmox: HTTPS or `pvesh` on the host.
pub trait Transport: Send + Sync {
    /// Call `method path` (path relative to `/api2/json`, e.g.
    /// `/nodes/pve1/status`) and return the `data` member of the answer.
    fn call(&self, method: Method, path: &str, params: &Params) -> PveResult<Value>;
    /// Whether calls run as root@pam (root-only vzdump options).
    fn is_root(&self) -> bool;
    /// Short description for logs (`https://host:8006` or `pvesh`).
    fn describe(&self) -> String;
}

/// Helper for building [`Params`].
#[derive(Debug, Default, Clone)]
pub struct ParamsBuilder(Params);

impl ParamsBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn str(mut self, k: &str, v: impl Into<String>) -> Self {
        self.0.push((k.to_string(), v.into()));
        self
    }
    pub fn opt_str(self, k: &str, v: Option<impl Into<String>>) -> Self {
        match v {
            Some(v) => self.str(k, v),
            None => self,
        }
    }
    pub fn int(self, k: &str, v: i64) -> Self {
        self.str(k, v.to_string())
    }
    pub fn opt_int(self, k: &str, v: Option<i64>) -> Self {
        match v {
            Some(v) => self.int(k, v),
            None => self,
        }
    }
    /// A boolean the PVE way: `1` or `0`, never `true`.
    pub fn bool(self, k: &str, v: bool) -> Self {
        self.str(k, if v { "1" } else { "0" })
    }
    pub fn opt_bool(self, k: &str, v: Option<bool>) -> Self {
        match v {
            Some(v) => self.bool(k, v),
            None => self,
        }
    }
    pub fn build(self) -> Params {
        self.0
    }
}

/// Percent-encode one path segment (UPIDs carry `!`, `@`, `:`; volids `:` and `/`).
pub fn enc(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
