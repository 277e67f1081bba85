//! Throwaway guests for restore tests: a vzdump volume or PBS snapshot
//! restored into a VMID of a reserved range, isolated from the network
//! before it ever starts, marked so that it cannot be taken for a real
//! guest, and destroyed only when it still carries every one of those
//! marks.
//!
//! The calls (official API schema, PVE 9):
//! - `GET /nodes/{node}/vzdump/extractconfig?volume=` – the backed-up
//!   configuration (a config file's text), read before the restore;
//! - `POST /nodes/{node}/qemu` (`vmid`, `archive`, `storage`, `unique=1`)
//!   or `POST /nodes/{node}/lxc` (`vmid`, `ostemplate` = the archive,
//!   `restore=1`, `storage`, `unique=1`), with the configuration the copy
//!   must have from its first moment passed along (`name` / `hostname`,
//!   `tags`, `description`, `onboot=0`, `protection=0` (a protected copy
//!   could not be destroyed), every `netN` isolated): qemu-server
//!   and pve-container apply options given with a restore over the backed
//!   up ones;
//! - `GET .../config` to read back what the copy holds, and
//!   `PUT .../config` to correct a NIC that is not isolated (and to remove
//!   passthrough devices and host bind mounts the copy must not touch);
//! - `POST .../status/start`, `GET .../status/current`,
//!   `POST /nodes/{node}/qemu/{vmid}/agent/ping`;
//! - `POST .../status/stop`, then `DELETE /nodes/{node}/{qemu|lxc}/{vmid}`
//!   with `purge=1` and `destroy-unreferenced-disks=1`.
//!
//! Booleans go on the wire as `0`/`1`; a `netN` value is a property string
//! (`virtio=BC:24:11:..,bridge=vmbr0,link_down=1`), rewritten key by key so
//! that the model and MAC address survive.

use super::error::{PveError, PveResult};
use super::types::{GuestKind, GuestRef};
use super::{enc, tasks, Method, Params, ParamsBuilder, Pve};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The tag every restored copy carries (`pve-tag-list`).
pub const TAG: &str = "autopilot-restoretest";
/// The start of every restored copy's name (`name` / `hostname`).
pub const NAME_PREFIX: &str = "restoretest-";

/// A guest configuration as `key -> value` text.
pub type GuestConfig = BTreeMap<String, String>;

/// How a copy's NICs are cut off from the live network.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Isolation {
    /// `link_down=1` on every NIC (the cable pulled).
    pub link_down: bool,
    /// `tag=` on every NIC (an isolated VLAN); trunks removed.
    pub tag: Option<u16>,
    /// `bridge=` on every NIC.
    pub bridge: Option<String>,
}

impl Isolation {
    /// For people: what happens to the NICs.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = &self.bridge {
            parts.push(format!("moved to bridge {b}"));
        }
        if let Some(t) = self.tag {
            parts.push(format!("VLAN tag {t}"));
        }
        if self.link_down || parts.is_empty() {
            parts.push("disconnected (link_down=1)".into());
        }
        format!("every NIC {}", parts.join(", "))
    }
}

/// Whether `key` names a NIC (`net0`, `net1`, ...).
pub fn is_net_key(key: &str) -> bool {
    key.strip_prefix("net")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn indexed(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A `netN` property string rewritten for `iso`: the model, MAC address
/// and other keys kept; `link_down`, `tag`, `trunks` (and `bridge` when
/// `iso` names one) replaced. A NIC left without a bridge (qemu's user-mode
/// network, which reaches out through the host) is always disconnected.
pub fn isolate_net(value: &str, iso: &Isolation) -> String {
    let mut kept: Vec<String> = Vec::new();
    let mut has_bridge = false;
    for item in value.split(',').filter(|i| !i.is_empty()) {
        let key = item.split_once('=').map_or(item, |(k, _)| k);
        match key {
            "link_down" | "tag" | "trunks" => continue,
            "bridge" if iso.bridge.is_some() => continue,
            "bridge" => has_bridge = true,
            _ => {}
        }
        kept.push(item.to_string());
    }
    if let Some(b) = &iso.bridge {
        kept.push(format!("bridge={b}"));
        has_bridge = true;
    }
    if let Some(t) = iso.tag {
        kept.push(format!("tag={t}"));
    }
    if iso.link_down || (iso.tag.is_none() && iso.bridge.is_none()) || !has_bridge {
        kept.push("link_down=1".into());
    }
    kept.join(",")
}

/// Whether a NIC as configured is isolated as `iso` asks.
pub fn net_is_isolated(value: &str, iso: &Isolation) -> bool {
    let items: BTreeMap<&str, &str> = value.split(',').filter_map(|i| i.split_once('=')).collect();
    let on = |v: Option<&&str>| {
        v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "on" | "yes" | "true"))
    };
    if on(items.get("link_down")) {
        return true;
    }
    let want_down = iso.link_down || (iso.tag.is_none() && iso.bridge.is_none());
    if want_down || !items.contains_key("bridge") {
        return false;
    }
    let tag_ok = iso
        .tag
        .is_none_or(|t| items.get("tag") == Some(&t.to_string().as_str()))
        && (iso.tag.is_none() || !items.contains_key("trunks"));
    let bridge_ok = iso
        .bridge
        .as_deref()
        .is_none_or(|b| items.get("bridge") == Some(&b));
    tag_ok && bridge_ok
}

/// Keys a copy must not keep: PCI and USB passthrough (the live guest's
/// devices), host devices of a container, and container mount points
/// bound to a host path (the live data).
pub fn unsafe_keys(kind: GuestKind, conf: &GuestConfig) -> Vec<String> {
    conf.iter()
        .filter(|(k, v)| match kind {
            GuestKind::Qemu => indexed(k, "hostpci") || indexed(k, "usb"),
            GuestKind::Lxc => {
                indexed(k, "dev")
                    || (indexed(k, "mp") && v.split(',').next().is_some_and(|s| s.starts_with('/')))
            }
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// A config file's text (`key: value` lines; the description as `#`
/// lines; snapshots in `[name]` sections after the current config).
pub fn parse_config_text(text: &str) -> GuestConfig {
    let mut out = GuestConfig::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.starts_with('[') {
            break;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

fn config_from_value(v: &Value) -> GuestConfig {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The name key of a guest kind's config.
pub fn name_key(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Qemu => "name",
        GuestKind::Lxc => "hostname",
    }
}

/// A copy's name: `restoretest-<service>-<test id>`, as a DNS name.
pub fn copy_name(service: &str, test_id: i64) -> String {
    let mut s: String = service
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s = s.trim_matches('-').to_string();
    let tail = format!("-{test_id}");
    let room = 63 - NAME_PREFIX.len() - tail.len();
    s.truncate(room);
    let s = s.trim_end_matches('-');
    format!("{NAME_PREFIX}{s}{tail}")
}

/// Whether the guest whose configuration is `conf` may be destroyed as a
/// restore test's copy: its VMID in `range`, our tag, our name prefix.
pub fn guard(g: &GuestRef, conf: &GuestConfig, range: (u32, u32)) -> Result<(), String> {
    let mut why = Vec::new();
    if !(range.0..=range.1).contains(&g.vmid) {
        why.push(format!(
            "VMID {} is outside the reserved range [{}, {}]",
            g.vmid, range.0, range.1
        ));
    }
    let tags = conf.get("tags").map(String::as_str).unwrap_or("");
    if !tags
        .split([';', ',', ' '])
        .any(|t| t.eq_ignore_ascii_case(TAG))
    {
        why.push(format!("it does not carry the tag {TAG} (tags: '{tags}')"));
    }
    let name = conf.get(name_key(g.kind)).map(String::as_str).unwrap_or("");
    if !name.starts_with(NAME_PREFIX) {
        why.push(format!(
            "its name '{name}' does not start with {NAME_PREFIX}"
        ));
    }
    if why.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} is not a restore test's copy: {}; refusing to destroy it",
            g,
            why.join("; ")
        ))
    }
}

/// What the copy is made from and where.
#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub target: GuestRef,
    /// A vzdump volume id, a PBS volume id (`pbs:backup/vm/100/...Z`), or
    /// a dump file's absolute path (root only).
    pub archive: String,
    /// The target storage; None: the backed-up disks' own storages.
    pub storage: Option<String>,
    pub name: String,
    pub description: String,
    pub isolation: Isolation,
    pub timeout: Duration,
}

impl Pve {
    fn wait_upid(&self, v: &Value, what: &str, timeout: Duration) -> PveResult<String> {
        let upid = v.as_str().unwrap_or_default().to_string();
        if tasks::parse_upid(&upid).is_none() {
            return Err(PveError::Decode {
                what: what.into(),
                message: format!("expected a task id (UPID), got {v}"),
            });
        }
        tasks::wait(self.t.as_ref(), &upid, timeout)?;
        Ok(upid)
    }

    /// The configuration inside a backup (`vzdump/extractconfig`).
    pub fn backup_config(&self, node: &str, archive: &str) -> PveResult<GuestConfig> {
        let p = ParamsBuilder::new().str("volume", archive).build();
        let v = self.t.call(
            Method::Get,
            &format!("/nodes/{}/vzdump/extractconfig", enc(node)),
            &p,
        )?;
        Ok(parse_config_text(v.as_str().unwrap_or_default()))
    }

    /// A guest's current configuration.
    pub fn guest_config(&self, g: &GuestRef) -> PveResult<GuestConfig> {
        let v = self
            .t
            .call(Method::Get, &format!("{}/config", g.path()), &Vec::new())?;
        Ok(config_from_value(&v))
    }

    /// Change a guest's configuration (`PUT .../config`: applied at once
    /// to a stopped guest).
    pub fn set_guest_config(&self, g: &GuestRef, p: Params) -> PveResult<()> {
        self.t
            .call(Method::Put, &format!("{}/config", g.path()), &p)?;
        Ok(())
    }

    /// The VMIDs in use anywhere in the cluster.
    pub fn used_vmids(&self) -> PveResult<Vec<u32>> {
        Ok(self
            .cluster_resources(Some("vm"))?
            .iter()
            .filter_map(|r| r.vmid.and_then(|v| u32::try_from(v).ok()))
            .collect())
    }

    /// Restore into a new guest (see the module docs): the backed-up
    /// config read first, the copy created with its name, tag,
    /// description, `onboot=0` and isolated NICs. Returns the task's UPID.
    pub fn restore_copy(&self, r: &RestoreRequest) -> PveResult<String> {
        let backed_up = self.backup_config(&r.target.node, &r.archive)?;
        let g = &r.target;
        let mut p = ParamsBuilder::new().int("vmid", g.vmid.into());
        p = match g.kind {
            GuestKind::Qemu => p.str("archive", &r.archive),
            GuestKind::Lxc => p.str("ostemplate", &r.archive).bool("restore", true),
        };
        p = p
            .opt_str("storage", r.storage.clone())
            .bool("unique", true)
            .str(name_key(g.kind), &r.name)
            .str("tags", TAG)
            .str("description", &r.description)
            .bool("onboot", false)
            .bool("protection", false);
        for (k, v) in backed_up.iter().filter(|(k, _)| is_net_key(k)) {
            p = p.str(k, isolate_net(v, &r.isolation));
        }
        let path = format!("/nodes/{}/{}", enc(&g.node), g.kind.as_str());
        let v = self.t.call(Method::Post, &path, &p.build())?;
        self.wait_upid(&v, &format!("POST {path}"), r.timeout)
    }

    /// Read back the copy's configuration and put right what is not as it
    /// must be before it starts: a NIC not isolated, our name or tag
    /// missing, `onboot` or `protection` set, a passthrough device or host
    /// bind mount.
    /// Returns the NICs as they are then; an error when they still are not
    /// isolated.
    pub fn secure_copy(&self, r: &RestoreRequest) -> PveResult<GuestConfig> {
        let g = &r.target;
        let conf = self.guest_config(g)?;
        let mut p = ParamsBuilder::new();
        let mut changed = false;
        for (k, v) in conf.iter().filter(|(k, _)| is_net_key(k)) {
            if !net_is_isolated(v, &r.isolation) {
                p = p.str(k, isolate_net(v, &r.isolation));
                changed = true;
            }
        }
        if conf.get(name_key(g.kind)) != Some(&r.name) {
            p = p.str(name_key(g.kind), &r.name);
            changed = true;
        }
        if guard(g, &conf, (g.vmid, g.vmid)).is_err() {
            p = p.str("tags", TAG);
            changed = true;
        }
        for key in ["onboot", "protection"] {
            if conf.get(key).is_some_and(|v| v != "0") {
                p = p.bool(key, false);
                changed = true;
            }
        }
        let drop = unsafe_keys(g.kind, &conf);
        if !drop.is_empty() {
            p = p.str("delete", drop.join(","));
            changed = true;
        }
        if !changed {
            return Ok(conf);
        }
        self.set_guest_config(g, p.build())?;
        let conf = self.guest_config(g)?;
        let open: Vec<&String> = conf
            .iter()
            .filter(|(k, v)| is_net_key(k) && !net_is_isolated(v, &r.isolation))
            .map(|(k, _)| k)
            .collect();
        if !open.is_empty() {
            return Err(PveError::Invalid(format!(
                "{g}: {} still not isolated after the change; not starting it",
                open.iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(conf)
    }

    /// `agent/ping`: whether the QEMU guest agent inside the VM answers.
    pub fn agent_ping(&self, g: &GuestRef) -> PveResult<()> {
        self.t.call(
            Method::Post,
            &format!("{}/agent/ping", g.path()),
            &Vec::new(),
        )?;
        Ok(())
    }

    /// Stop (when running) and destroy a restore test's copy, after
    /// checking it is one ([`guard`] against its configuration as it is
    /// now). A guest that is already gone is not an error.
    pub fn destroy_copy(&self, g: &GuestRef, range: (u32, u32)) -> PveResult<bool> {
        let conf = match self.guest_config(g) {
            Ok(c) => c,
            Err(e) if gone(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        guard(g, &conf, range).map_err(PveError::Invalid)?;
        if self.guest_status(g)?.status == "running" {
            let v = self.t.call(
                Method::Post,
                &format!("{}/status/stop", g.path()),
                &Vec::new(),
            )?;
            self.wait_upid(&v, "stop", self.task_timeout)?;
        }
        let p = ParamsBuilder::new()
            .bool("purge", true)
            .bool("destroy-unreferenced-disks", true)
            .build();
        let v = self.t.call(Method::Delete, &g.path(), &p)?;
        self.wait_upid(&v, "destroy", self.task_timeout)?;
        Ok(true)
    }
}

/// Whether an error says the guest does not exist (PVE: 500
/// "Configuration file '...' does not exist").
pub fn gone(e: &PveError) -> bool {
    matches!(e, PveError::Api { status: 500, message, .. } if message.contains("does not exist"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vlan(tag: u16, bridge: Option<&str>) -> Isolation {
        Isolation {
            link_down: false,
            tag: Some(tag),
            bridge: bridge.map(str::to_string),
        }
    }

    #[test]
    fn nics_keep_model_and_mac_and_lose_their_way_out() {
        let down = Isolation {
            link_down: true,
            ..Default::default()
        };
        let q = "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,tag=20,trunks=20;30";
        let d = isolate_net(q, &down);
        assert_eq!(
            d,
            "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,link_down=1"
        );
        assert!(net_is_isolated(&d, &down));
        assert!(!net_is_isolated(q, &down));
        let v = isolate_net(q, &vlan(999, Some("vmbr9")));
        assert_eq!(
            v,
            "virtio=BC:24:11:AA:BB:CC,firewall=1,bridge=vmbr9,tag=999"
        );
        assert!(net_is_isolated(&v, &vlan(999, Some("vmbr9"))));
        assert!(!net_is_isolated(q, &vlan(999, None)));
        // A container's NIC; a VM NIC on qemu's user network (no bridge).
        let c = "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=10.0.0.5/24,type=veth";
        assert_eq!(
            isolate_net(c, &vlan(7, None)),
            "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=10.0.0.5/24,type=veth,tag=7"
        );
        assert_eq!(
            isolate_net("e1000=BC:24:11:00:00:02", &vlan(7, None)),
            "e1000=BC:24:11:00:00:02,tag=7,link_down=1"
        );
        assert!(!net_is_isolated("e1000=X,tag=7", &vlan(7, None)));
    }

    #[test]
    fn only_a_guest_with_every_mark_passes_the_guard() {
        let g = |vmid| GuestRef {
            node: "pve1".into(),
            kind: GuestKind::Qemu,
            vmid,
        };
        let conf = |name: &str, tags: &str| {
            GuestConfig::from([
                ("name".to_string(), name.to_string()),
                ("tags".to_string(), tags.to_string()),
            ])
        };
        let ours = conf("restoretest-web-3", "x;autopilot-restoretest");
        assert!(guard(&g(9900), &ours, (9900, 9999)).is_ok());
        assert!(guard(&g(100), &ours, (9900, 9999))
            .unwrap_err()
            .contains("outside the reserved range"));
        assert!(guard(&g(9900), &conf("restoretest-web-3", "prod"), (9900, 9999)).is_err());
        assert!(guard(&g(9900), &conf("web", TAG), (9900, 9999)).is_err());
        assert_eq!(copy_name("My_App", 12), "restoretest-my-app-12");
        assert!(copy_name(&"x".repeat(100), 1).len() <= 63);
    }

    #[test]
    fn config_text_and_unsafe_keys() {
        let t = "#my vm\nname: web\nnet0: virtio=AA,bridge=vmbr0\nhostpci0: 0000:01:00.0\nusb1: host=1-2\n\n[snap1]\nname: old\n";
        let c = parse_config_text(t);
        assert_eq!(c["name"], "web");
        assert_eq!(unsafe_keys(GuestKind::Qemu, &c), ["hostpci0", "usb1"]);
        let l = GuestConfig::from([
            ("mp0".to_string(), "/srv/data,mp=/data".to_string()),
            ("mp1".to_string(), "local-lvm:vm-1-disk-1,mp=/x".to_string()),
            ("dev0".to_string(), "/dev/ttyUSB0".to_string()),
        ]);
        assert_eq!(unsafe_keys(GuestKind::Lxc, &l), ["dev0", "mp0"]);
        assert!(is_net_key("net12") && !is_net_key("net") && !is_net_key("netx"));
    }
}
