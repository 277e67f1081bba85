//! The update of a Proxmox guest (`vm`, `lxc`): snapshot through the API,
//! the package manager's upgrade inside the guest ([`crate::pve::guest`]),
//! and on failure the rollback to that snapshot, the guest started again.
//!
//! The snapshot's name is chosen when the record is made and stored in
//! it before anything changes; the snapshot itself is the first step of
//! [`apply`]. A rollback of a record whose snapshot does not exist (the run
//! died before taking it) changes nothing, because nothing was changed.

use super::Before;
use crate::config::{Config, ServiceConfig, ServiceType};
use crate::error::{Error, Result};
use crate::pve::guest::{self as g, PackageChange, PackageManager};
use crate::pve::{connect, GuestKind, GuestRef, Pve};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How long one upgrade command may take inside the guest.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long one listing of pending upgrades may take.
const PENDING_TIMEOUT: Duration = Duration::from_secs(600);

fn local(cfg: &Config) -> bool {
    cfg.global.proxmox.as_ref().is_some_and(|p| p.local)
}

/// Whether this service can be updated as a guest, or why not.
pub fn support(cfg: &Config, svc: &ServiceConfig) -> std::result::Result<(), String> {
    let kind = match svc.service_type {
        ServiceType::Vm => GuestKind::Qemu,
        _ => GuestKind::Lxc,
    };
    if cfg.global.proxmox.is_none() {
        return Err("global.proxmox is not configured".into());
    }
    if svc.vmid.is_none() {
        return Err("no vmid".into());
    }
    g::exec_support(kind, local(cfg))
}

fn client(cfg: &Config) -> Result<Pve> {
    let p = cfg
        .global
        .proxmox
        .as_ref()
        .ok_or_else(|| Error::Usage("global.proxmox is not configured".into()))?;
    let (pve, warnings) = connect::pve_from_config(p)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(pve)
}

fn guest_ref(pve: &Pve, svc: &ServiceConfig) -> Result<GuestRef> {
    let vmid = svc
        .vmid
        .ok_or_else(|| Error::Usage(format!("{}: no vmid", svc.name)))?;
    let kind = if svc.service_type == ServiceType::Vm {
        GuestKind::Qemu
    } else {
        GuestKind::Lxc
    };
    match &svc.node {
        Some(node) => Ok(GuestRef {
            node: node.clone(),
            kind,
            vmid,
        }),
        None => {
            let found = pve.find_guest(vmid)?;
            if found.kind != kind {
                return Err(Error::Usage(format!(
                    "{}: VMID {vmid} is a {}, not a {}",
                    svc.name,
                    found.kind.label(),
                    kind.label()
                )));
            }
            Ok(found)
        }
    }
}

fn record_ref(before: &Before) -> Option<GuestRef> {
    match before {
        Before::Guest {
            node, guest, vmid, ..
        } => Some(GuestRef {
            node: node.clone(),
            kind: GuestKind::parse(guest)?,
            vmid: *vmid,
        }),
        _ => None,
    }
}

/// The guest's Proxmox lock (`backup`, `snapshot`, `migrate`, ...) as
/// "VM 100 is locked (backup)", or None when it has none.
pub fn locked(cfg: &Config, svc: &ServiceConfig) -> Result<Option<String>> {
    let pve = client(cfg)?;
    let r = guest_ref(&pve, svc)?;
    Ok(pve
        .guest_status(&r)?
        .lock
        .map(|l| format!("{} {} is locked ({l})", r.kind.label(), r.vmid)))
}

/// Record the guest, its package manager, and the name the snapshot will
/// have (none when snapshots are off for it).
pub fn snapshot(cfg: &Config, svc: &ServiceConfig) -> Result<Before> {
    let pve = client(cfg)?;
    let r = guest_ref(&pve, svc)?;
    let st = pve.guest_status(&r)?;
    if st.status != "running" {
        return Err(Error::Usage(format!(
            "{} {} is {}, not running: its packages cannot be upgraded",
            r.kind.label(),
            r.vmid,
            st.status
        )));
    }
    let pm = g::detect(&pve, &r, local(cfg))?;
    let take = svc
        .update
        .as_ref()
        .and_then(|u| u.snapshot)
        .unwrap_or(cfg.updates.snapshot_before_update);
    Ok(Before::Guest {
        node: r.node.clone(),
        guest: r.kind.as_str().to_string(),
        vmid: r.vmid,
        package_manager: pm.as_str().to_string(),
        snapshot: take.then(|| g::snapshot_name(chrono::Utc::now().timestamp())),
        packages: Vec::new(),
    })
}

fn pm_of(before: &Before) -> Result<PackageManager> {
    match before {
        Before::Guest {
            package_manager, ..
        } => PackageManager::parse(package_manager)
            .ok_or_else(|| Error::Usage(format!("unknown package manager {package_manager:?}"))),
        _ => Err(Error::Usage("not a guest record".into())),
    }
}

fn failed(what: &[String], o: &g::ExecOutput) -> Error {
    let tail = |s: &str| -> String {
        let s = s.trim();
        let start = s.char_indices().rev().nth(400).map(|(i, _)| i).unwrap_or(0);
        s[start..].to_string()
    };
    let detail = if o.stderr.trim().is_empty() {
        tail(&o.stdout)
    } else {
        tail(&o.stderr)
    };
    Error::Command {
        program: what.first().cloned().unwrap_or_default(),
        message: format!("{} exited with {}: {detail}", what.join(" "), o.code),
    }
}

/// The packages an upgrade would change, with their versions now and
/// after (package lists are refreshed; nothing is installed).
pub fn pending(cfg: &Config, before: &Before) -> Result<Vec<PackageChange>> {
    let pve = client(cfg)?;
    let r = record_ref(before).ok_or_else(|| Error::Usage("not a guest record".into()))?;
    let pm = pm_of(before)?;
    let mut out = Vec::new();
    for argv in pm.pending() {
        let o = g::exec(&pve, &r, local(cfg), &argv, PENDING_TIMEOUT)?;
        if !pm.pending_ok(o.code) {
            return Err(failed(&argv, &o));
        }
        out = pm.parse_changes(&o.stdout);
    }
    if out.iter().any(|c| c.from.is_none()) {
        // dnf names only the new version: the installed one is asked for.
        let now = installed(&pve, &r, local(cfg), pm, &out)?;
        for c in out.iter_mut().filter(|c| c.from.is_none()) {
            c.from = now.get(&c.name).cloned();
        }
    }
    Ok(out)
}

/// The installed versions of the first [`NAMED`] of `changes`' packages
/// (the ones a report names), by name.
fn installed(
    pve: &Pve,
    r: &GuestRef,
    local: bool,
    pm: PackageManager,
    changes: &[PackageChange],
) -> Result<BTreeMap<String, String>> {
    let names: Vec<String> = changes.iter().take(NAMED).map(|c| c.name.clone()).collect();
    if names.is_empty() {
        return Ok(BTreeMap::new());
    }
    let argv = pm.installed(&names);
    // A package not installed makes dpkg-query and rpm exit 1 with the
    // others printed: the output is what counts.
    let o = g::exec(pve, r, local, &argv, PENDING_TIMEOUT)?;
    Ok(pm.parse_installed(&o.stdout, &names))
}

/// At most this many packages are named in a result or notification;
/// the rest are counted.
pub const NAMED: usize = 20;

/// A bounded list of packages and their versions, for reports: a guest's
/// `check.changes` (from → to), `before` and `after` (the versions
/// installed then).
#[derive(Debug, Clone, Serialize)]
pub struct Packages {
    /// How many packages in all.
    pub count: usize,
    /// The first [`NAMED`] of them.
    pub packages: Vec<PackageChange>,
    /// How many are not named.
    pub more: usize,
    /// One line: `2 packages: webapp 1 → 2, libc6 2.36-9 → 2.36-10`.
    pub text: String,
    /// Why the versions could not be read (the guest did not answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Packages {
    pub fn new(all: &[PackageChange]) -> Packages {
        let named: Vec<PackageChange> = all.iter().take(NAMED).cloned().collect();
        let v = |x: &Option<String>| x.clone().unwrap_or_else(|| "?".into());
        let mut text = format!(
            "{} package{}",
            all.len(),
            if all.len() == 1 { "" } else { "s" }
        );
        let items: Vec<String> = named
            .iter()
            .map(|c| match &c.to {
                Some(_) => format!("{} {} \u{2192} {}", c.name, v(&c.from), v(&c.to)),
                None => format!("{} {}", c.name, v(&c.from)),
            })
            .collect();
        if !items.is_empty() {
            text.push_str(": ");
            text.push_str(&items.join(", "));
        }
        if all.len() > NAMED {
            text.push_str(&format!(", and {} more", all.len() - NAMED));
        }
        Packages {
            count: all.len(),
            packages: named,
            more: all.len().saturating_sub(NAMED),
            text,
            error: None,
        }
    }
}

/// The recorded packages as they were before the update.
pub fn packages_before(before: &Before) -> Packages {
    let Before::Guest { packages, .. } = before else {
        return Packages::new(&[]);
    };
    let then: Vec<PackageChange> = packages
        .iter()
        .map(|c| PackageChange {
            to: None,
            ..c.clone()
        })
        .collect();
    Packages::new(&then)
}

/// The recorded packages' versions installed now, from → now; never an
/// error (a guest that does not answer is said in `error`).
pub fn packages_now(cfg: &Config, before: &Before) -> Packages {
    let Before::Guest { packages, .. } = before else {
        return Packages::new(&[]);
    };
    let now = (|| -> Result<BTreeMap<String, String>> {
        if packages.is_empty() {
            return Ok(BTreeMap::new());
        }
        let pve = client(cfg)?;
        let r = record_ref(before).ok_or_else(|| Error::Usage("not a guest record".into()))?;
        installed(&pve, &r, local(cfg), pm_of(before)?, packages)
    })();
    match now {
        Ok(now) => Packages::new(
            &packages
                .iter()
                .map(|c| PackageChange {
                    name: c.name.clone(),
                    from: c.from.clone(),
                    to: now.get(&c.name).cloned(),
                })
                .collect::<Vec<_>>(),
        ),
        Err(e) => Packages {
            error: Some(e.to_string()),
            ..packages_before(before)
        },
    }
}

/// Take the recorded snapshot, then upgrade inside the guest.
pub fn apply(cfg: &Config, svc: &ServiceConfig, before: &Before) -> Result<()> {
    let pve = client(cfg)?;
    let r = record_ref(before).ok_or_else(|| Error::Usage("not a guest record".into()))?;
    if let Before::Guest {
        snapshot: Some(name),
        ..
    } = before
    {
        let note = format!("homelab-autopilot: before the update of {}", svc.name);
        pve.snapshot_create(&r, name, Some(&note), false)?;
        tracing::info!("{} {}: snapshot {name} taken", r.kind.label(), r.vmid);
    }
    let pm = pm_of(before)?;
    for argv in pm.upgrade() {
        let o = g::exec(&pve, &r, local(cfg), &argv, UPGRADE_TIMEOUT)?;
        if o.code != 0 {
            return Err(failed(&argv, &o));
        }
    }
    Ok(())
}

/// Back to the recorded snapshot, the guest started; safe to repeat.
pub fn rollback(cfg: &Config, svc: &ServiceConfig, before: &Before) -> Result<Vec<String>> {
    let Before::Guest { snapshot, .. } = before else {
        return Err(Error::Usage("not a guest record".into()));
    };
    let Some(name) = snapshot else {
        return Err(Error::Usage(format!(
            "{}: no snapshot was taken before the update (updates.snapshot_before_update or update.snapshot is false): nothing to roll back to",
            svc.name
        )));
    };
    let pve = client(cfg)?;
    let r = record_ref(before).ok_or_else(|| Error::Usage("not a guest record".into()))?;
    let label = format!("{} {}", r.kind.label(), r.vmid);
    let mut notes = Vec::new();
    if !pve.snapshot_list(&r)?.iter().any(|s| &s.name == name) {
        // The run ended before the snapshot (and so before the upgrade).
        notes.push(format!(
            "{label}: snapshot {name} was never taken, so nothing had changed"
        ));
    } else {
        pve.snapshot_rollback(&r, name, true)?;
        notes.push(format!("{label} rolled back to snapshot {name}"));
    }
    let st = pve.guest_status(&r)?;
    if st.status != "running" {
        pve.start(&r)?;
        notes.push(format!("{label} started"));
    }
    Ok(notes)
}

/// Delete this guest's snapshots of earlier updates older than
/// `updates.keep_snapshot_hours`; never a snapshot we did not name.
pub fn cleanup(cfg: &Config, before: &Before) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(r) = record_ref(before) else {
        return notes;
    };
    let pve = match client(cfg) {
        Ok(p) => p,
        Err(e) => return vec![format!("old snapshots not cleaned up: {e}")],
    };
    let snaps = match pve.snapshot_list(&r) {
        Ok(s) => s,
        Err(e) => return vec![format!("old snapshots not listed: {e}")],
    };
    let now = chrono::Utc::now().timestamp();
    for name in g::expired(&snaps, now, cfg.updates.keep_snapshot_hours) {
        match pve.snapshot_delete(&r, &name, false) {
            Ok(_) => notes.push(format!("deleted the old snapshot {name}")),
            Err(e) => notes.push(format!("old snapshot {name} not deleted: {e}")),
        }
    }
    notes
}

/// Whether the guest runs (`status/current`), for the validation.
pub fn running(cfg: &Config, svc: &ServiceConfig) -> std::result::Result<(), String> {
    let pve = client(cfg).map_err(|e| e.to_string())?;
    let r = guest_ref(&pve, svc).map_err(|e| e.to_string())?;
    let st = pve.guest_status(&r).map_err(|e| e.to_string())?;
    if st.status == "running" {
        Ok(())
    } else {
        Err(format!("{} {} is {}", r.kind.label(), r.vmid, st.status))
    }
}
