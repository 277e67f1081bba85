//! Restore tests of Proxmox guests (`vm`, `lxc`; docs/restore-testing.md):
//! the vzdump volume or PBS snapshot of the test's backup restored into a
//! throwaway guest ([`crate::pve::restore`]) with a VMID from
//! `restore_testing.test_environment.vmid_range`, its NICs isolated before
//! it starts, then started and checked, and destroyed only when it still
//! carries every mark of a copy (VMID in the range, our tag, our name
//! prefix).
//!
//! Isolation per `test_environment.type`:
//! - `namespace` (the default): every NIC disconnected (`link_down=1`);
//!   the copy is checked through the QEMU guest agent only.
//! - `isolated_vlan`: every NIC on VLAN `vlan_id` (trunks removed), on
//!   `bridge` when set; `http` / `tcp` checks reach the copy at an address
//!   inside `test_environment.network`.
//! - `separate_node`: restored on `node`; its NICs moved to `bridge` /
//!   `vlan_id` when set, else disconnected.
//!
//! Checks: the guest runs, and a VM whose config enables the agent answers
//! `agent/ping`; `command` / `database` (argv) and `custom` (the script's
//! path inside the guest) run inside the guest: a VM through the agent
//! (`agent/exec`), a container only with `pct exec` on the node
//! (`proxmox.local: true`) – the API has no exec for containers, so there
//! such a check fails and says why.
//!
//! The test's row records the VMID before the restore is started, so the
//! next run ([`super::sweep`]) destroys what a killed run left, after
//! waiting for a restore task still running on it.
//!
//! In a drill ([`super::drill`]) the same functions restore, check and
//! destroy each guest; [`run_dependency_checks`] runs its checks between
//! guests inside the dependent one, `{restore_address:NAME}` read from the
//! dependency's interfaces.

use super::{now_ms, record, CheckOutcome, Checked, Environment};
use crate::config::{
    CommandSpec, Config, HealthCheckConfig, HealthCheckType, ServiceConfig, ServiceType,
    TestEnvironmentType,
};
use crate::error::{Error, Result};
use crate::pve::restore::{Isolation, RestoreRequest};
use crate::pve::{connect, enc, GuestKind, GuestRef, Method, ParamsBuilder, Pve, PveError};
use crate::state::{BackupRecord, Store};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// A guest copy, as recorded in the test's environment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestCopy {
    /// `qemu` or `lxc`.
    pub kind: String,
    pub node: String,
    /// Set (and recorded) before the restore starts.
    pub vmid: Option<u32>,
    pub name: String,
    pub storage: Option<String>,
    /// `namespace`, `isolated_vlan` or `separate_node`.
    pub environment: String,
    pub isolation: Isolation,
    /// What was done to the NICs, for people.
    pub network: String,
    /// The NICs as the copy holds them before it starts.
    pub nics: Vec<String>,
    pub started: bool,
}

fn pve_err(e: PveError) -> Error {
    Error::Pve(e)
}

fn guest_kind(t: ServiceType) -> Option<GuestKind> {
    match t {
        ServiceType::Vm => Some(GuestKind::Qemu),
        ServiceType::Lxc => Some(GuestKind::Lxc),
        _ => None,
    }
}

/// The API client of `global.proxmox`.
pub fn client(cfg: &Config) -> Result<Pve> {
    let p = cfg
        .global
        .proxmox
        .as_ref()
        .ok_or_else(|| Error::Usage("restore tests of vm / lxc need global.proxmox".into()))?;
    let (pve, warnings) = connect::pve_from_config(p).map_err(pve_err)?;
    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(pve)
}

/// `test_environment.vmid_range` as `(first, last)`.
pub fn vmid_range(cfg: &Config) -> Result<(u32, u32)> {
    match cfg
        .global
        .backup
        .restore_testing()
        .test_environment
        .vmid_range
        .as_deref()
    {
        Some([a, b]) => Ok((*a, *b)),
        _ => Err(Error::Usage(
            "restore tests of vm / lxc restore into reserved VMIDs: set \
             global.backup.restore_testing.test_environment.vmid_range (e.g. [9900, 9999])"
                .into(),
        )),
    }
}

fn is_local(cfg: &Config) -> bool {
    cfg.global.proxmox.as_ref().is_some_and(|p| p.local)
}

/// How the copy's NICs are isolated under `test_environment`.
pub fn isolation(cfg: &Config) -> (String, Isolation) {
    let env = cfg.global.backup.restore_testing().test_environment;
    let iso = match env.env_type {
        TestEnvironmentType::Namespace => Isolation {
            link_down: true,
            ..Default::default()
        },
        TestEnvironmentType::IsolatedVlan | TestEnvironmentType::SeparateNode => Isolation {
            link_down: env.vlan_id.is_none() && env.bridge.is_none(),
            tag: env.vlan_id,
            bridge: env.bridge.clone(),
        },
    };
    let name = match env.env_type {
        TestEnvironmentType::Namespace => "namespace",
        TestEnvironmentType::IsolatedVlan => "isolated_vlan",
        TestEnvironmentType::SeparateNode => "separate_node",
    };
    (name.into(), iso)
}

/// The node a copy is restored on: `separate_node`'s `node`, else the
/// service's node (looked up from its VMID when not configured), else
/// `test_environment.node`.
fn node_for(cfg: &Config, svc: &ServiceConfig, pve: Option<&Pve>) -> Result<String> {
    let env = cfg.global.backup.restore_testing().test_environment;
    if env.env_type == TestEnvironmentType::SeparateNode {
        if let Some(n) = env.node {
            return Ok(n);
        }
    }
    if let Some(n) = &svc.node {
        return Ok(n.clone());
    }
    if let (Some(pve), Some(vmid)) = (pve, svc.vmid) {
        if let Ok(g) = pve.find_guest(vmid) {
            return Ok(g.node);
        }
    }
    env.node.ok_or_else(|| {
        Error::Usage(format!(
            "service {}: no node to restore on (set its node, or \
             restore_testing.test_environment.node)",
            svc.name
        ))
    })
}

/// The first VMID of the range no guest of the cluster uses.
fn free_vmid(pve: &Pve, range: (u32, u32)) -> Result<u32> {
    let used = pve.used_vmids().map_err(pve_err)?;
    (range.0..=range.1)
        .find(|v| !used.contains(v))
        .ok_or_else(|| {
            Error::Usage(format!(
                "no free VMID in restore_testing.test_environment.vmid_range [{}, {}]",
                range.0, range.1
            ))
        })
}

/// What a dry run says it would do (reads only).
pub fn describe_plan(cfg: &Config, svc: &ServiceConfig, backup: &BackupRecord) -> String {
    let kind = guest_kind(svc.service_type).unwrap_or(GuestKind::Qemu);
    let (env_name, iso) = isolation(cfg);
    let pve = client(cfg).ok();
    let node = node_for(cfg, svc, pve.as_ref()).unwrap_or_else(|e| format!("? ({e})"));
    let vmid = match (vmid_range(cfg), pve.as_ref()) {
        (Ok(r), Some(p)) => match free_vmid(p, r) {
            Ok(v) => format!("{v} (the first free VMID of [{}, {}])", r.0, r.1),
            Err(e) => format!("? ({e})"),
        },
        (Ok(r), None) => format!("a free VMID of [{}, {}]", r.0, r.1),
        (Err(e), _) => format!("? ({e})"),
    };
    let storage = cfg
        .global
        .backup
        .restore_testing()
        .test_environment
        .storage
        .unwrap_or_else(|| "the backed-up disks' own storages".into());
    format!(
        "restore backup {} ({}) as {} {vmid} named {}<id> on node {node}, storage {storage}; \
         test environment {env_name}: {}, before it starts; tagged {}",
        backup.id,
        backup.location,
        kind.label(),
        crate::pve::restore::copy_name(&svc.name, 0).trim_end_matches('0'),
        iso.describe(),
        crate::pve::restore::TAG
    )
}

/// Tier 1 before a PBS snapshot is restored: when the PBS API is
/// configured, its verification state, verified again by PBS when older
/// than `pbs_verify_max_age_days`; a failed verification fails the test.
fn check_pbs_snapshot(cfg: &Config, env: &Environment) -> Result<()> {
    if super::integrity::parse_pbs_volid(&env.archive).is_none() {
        return Ok(());
    }
    let Some((pbs, datastore, ns)) = super::integrity::pbs_api(cfg) else {
        return Ok(());
    };
    let max = cfg.global.backup.restore_testing().pbs_verify_max_age_days;
    let now = chrono::Utc::now().timestamp();
    let c = super::integrity::verify_pbs(&pbs, &datastore, ns.as_deref(), &env.archive, max, now)?;
    if c.state == "failed" {
        return Err(Error::Other(format!(
            "{}: PBS verification failed{}",
            env.archive,
            c.verify_task
                .map(|t| format!(" (task {t})"))
                .unwrap_or_default()
        )));
    }
    if let Some(t) = c.verify_task {
        tracing::info!("{}: verified by PBS first (task {t})", env.archive);
    }
    Ok(())
}

/// Restore, isolate and start the copy; `env.guest` records each step.
pub fn restore(
    store: &Store,
    cfg: &Config,
    svc: &ServiceConfig,
    env: &mut Environment,
) -> Result<()> {
    let kind = guest_kind(svc.service_type)
        .ok_or_else(|| Error::Usage(format!("service {} is not a vm or lxc", svc.name)))?;
    let range = vmid_range(cfg)?;
    check_pbs_snapshot(cfg, env)?;
    let pve = client(cfg)?;
    let node = node_for(cfg, svc, Some(&pve))?;
    let (env_name, iso) = isolation(cfg);
    let storage = cfg.global.backup.restore_testing().test_environment.storage;
    let vmid = free_vmid(&pve, range)?;
    let name = crate::pve::restore::copy_name(&svc.name, env.id);
    env.guest = Some(GuestCopy {
        kind: kind.as_str().into(),
        node: node.clone(),
        vmid: Some(vmid),
        name: name.clone(),
        storage: storage.clone(),
        environment: env_name,
        network: iso.describe(),
        isolation: iso.clone(),
        ..Default::default()
    });
    // The VMID is in the state DB before anything exists on PVE.
    record(store, env)?;
    let target = GuestRef { node, kind, vmid };
    let req = RestoreRequest {
        target: target.clone(),
        archive: env.archive.clone(),
        storage,
        name,
        description: format!(
            "Restore test {} of service {} (backup {}), made by homelab-autopilot; destroyed \
             automatically.",
            env.id, svc.name, env.backup_id
        ),
        isolation: iso,
        timeout: pve.backup_timeout,
    };
    env.started_ms = now_ms();
    record(store, env)?;
    pve.restore_copy(&req).map_err(pve_err)?;
    let conf = pve.secure_copy(&req).map_err(pve_err)?;
    if let Some(g) = env.guest.as_mut() {
        g.nics = conf
            .iter()
            .filter(|(k, _)| crate::pve::restore::is_net_key(k))
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
    }
    record(store, env)?;
    pve.start(&target).map_err(pve_err)?;
    if let Some(g) = env.guest.as_mut() {
        g.started = true;
    }
    record(store, env)
}

fn target_of(env: &Environment) -> Option<GuestRef> {
    let g = env.guest.as_ref()?;
    Some(GuestRef {
        node: g.node.clone(),
        kind: GuestKind::parse(&g.kind)?,
        vmid: g.vmid?,
    })
}

fn ok(name: &str, detail: impl Into<String>) -> CheckOutcome {
    CheckOutcome {
        name: name.into(),
        ok: true,
        detail: detail.into(),
    }
}

fn fail(name: &str, detail: impl Into<String>) -> CheckOutcome {
    CheckOutcome {
        name: name.into(),
        ok: false,
        detail: detail.into(),
    }
}

/// Whether a VM's `agent` option turns the agent on (`1`, `enabled=1`).
fn agent_enabled(conf: &crate::pve::restore::GuestConfig) -> bool {
    conf.get("agent").is_some_and(|a| {
        a.split(',').any(|p| {
            let v = p.strip_prefix("enabled=").unwrap_or(p);
            matches!(v, "1" | "on" | "yes" | "true")
        })
    })
}

/// Run a command inside the copy.
fn exec(
    pve: &Pve,
    g: &GuestRef,
    local: bool,
    name: &str,
    argv: &[String],
    timeout: Duration,
) -> CheckOutcome {
    if let Err(why) = crate::pve::guest::exec_support(g.kind, local) {
        return fail(name, why);
    }
    match crate::pve::guest::exec(pve, g, local, argv, timeout) {
        Ok(o) if o.code == 0 => ok(name, format!("{} exited 0 in {}", argv[0], g)),
        Ok(o) => {
            let err: String = o.stderr.trim().chars().take(200).collect();
            fail(name, format!("{} exited {} in {g}: {err}", argv[0], o.code))
        }
        Err(e) => fail(name, e.to_string()),
    }
}

/// An http / tcp check of the copy: only at an address inside
/// `test_environment.network`, and never on a disconnected copy.
fn network_check(
    cfg: &Config,
    env: &Environment,
    c: &HealthCheckConfig,
    name: &str,
    timeout: Duration,
) -> CheckOutcome {
    let copy = env.guest.clone().unwrap_or_default();
    if copy.isolation.link_down {
        return fail(
            name,
            format!(
                "the copy is disconnected (test_environment type {}): http and tcp checks \
                 cannot reach it; use isolated_vlan (or separate_node with a bridge or \
                 vlan_id) and test_environment.network",
                copy.environment
            ),
        );
    }
    let host = match c.check_type {
        HealthCheckType::Http => c
            .url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
            .unwrap_or_default(),
        _ => c.host.clone().unwrap_or_default(),
    };
    let Some(net) = cfg.global.backup.restore_testing().test_environment.network else {
        return fail(
            name,
            "set restore_testing.test_environment.network (the isolated network's CIDR): an \
             http or tcp check of a guest copy must name an address inside it, so that it never \
             reaches the live service",
        );
    };
    if !in_cidr(&host, &net) {
        return fail(
            name,
            format!(
                "{host} is not an address inside the test network {net}; a restore test never \
                 checks the live service"
            ),
        );
    }
    let spec = crate::monitor::checks::CheckSpec {
        id: format!("{}/{name}", env.service),
        service: env.service.clone(),
        name: name.to_string(),
        kind: c.check_type.as_str().into(),
        check: c.clone(),
        timeout,
    };
    let r = crate::monitor::checks::run_here(&spec);
    CheckOutcome {
        name: name.into(),
        ok: r.ok,
        detail: r.message,
    }
}

/// Whether `host` is an IP address inside the CIDR `net`.
pub fn in_cidr(host: &str, net: &str) -> bool {
    use std::net::IpAddr;
    let Some((base, len)) = net.split_once('/') else {
        return false;
    };
    let (Ok(ip), Ok(base), Ok(len)) = (
        host.parse::<IpAddr>(),
        base.parse::<IpAddr>(),
        len.parse::<u32>(),
    ) else {
        return false;
    };
    match (ip, base) {
        (IpAddr::V4(a), IpAddr::V4(b)) if len <= 32 => {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) if len <= 128 => {
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Check the copy: it runs, its agent answers (a VM with the agent on),
/// then the service's `restore_testing.health_checks`; retried until all
/// pass or `allowed` has passed since the restore started (a guest takes
/// its time to boot).
pub fn run_checks(
    cfg: &Config,
    svc: &ServiceConfig,
    env: &Environment,
    allowed: Duration,
    cancel: &dyn Fn() -> bool,
) -> Checked {
    let Some(g) = target_of(env) else {
        return Checked {
            checks: vec![fail("guest running", "no copy was restored")],
            passed_at_ms: None,
        };
    };
    let pve = match client(cfg) {
        Ok(p) => p,
        Err(e) => {
            return Checked {
                checks: vec![fail("guest running", e.to_string())],
                passed_at_ms: None,
            }
        }
    };
    let local = is_local(cfg);
    let conf = pve.guest_config(&g).unwrap_or_default();
    let agent = g.kind == GuestKind::Qemu && agent_enabled(&conf);
    let configured: Vec<HealthCheckConfig> = svc
        .restore_testing
        .as_ref()
        .map(|r| r.health_checks.clone())
        .unwrap_or_default();
    let default_timeout = cfg.monitoring.timeout_seconds.max(1);
    let started = Instant::now()
        .checked_sub(Duration::from_millis(
            (now_ms() - env.started_ms).max(0) as u64
        ))
        .unwrap_or_else(Instant::now);
    let deadline = started + allowed;
    let n = 1 + usize::from(agent) + configured.len();
    let mut last: Vec<Option<CheckOutcome>> = vec![None; n];
    loop {
        let running = match pve.guest_status(&g) {
            Ok(s) if s.status == "running" => ok("guest running", format!("{g} is running")),
            Ok(s) => fail("guest running", format!("{g} is {}", s.status)),
            Err(e) => fail("guest running", e.to_string()),
        };
        let up = running.ok;
        last[0] = Some(running);
        let mut i = 1;
        let mut ready = up;
        if agent {
            if !last[i].as_ref().is_some_and(|o| o.ok) {
                last[i] = Some(if !up {
                    fail("guest agent answers", "the guest is not running")
                } else {
                    match pve.agent_ping(&g) {
                        Ok(()) => ok("guest agent answers", "agent/ping answered"),
                        Err(e) => fail("guest agent answers", e.to_string()),
                    }
                });
            }
            ready = ready && last[i].as_ref().is_some_and(|o| o.ok);
            i += 1;
        }
        for c in &configured {
            if !last[i].as_ref().is_some_and(|o| o.ok) {
                let name = crate::monitor::check_name(c);
                let timeout = Duration::from_secs(c.timeout_seconds.unwrap_or(default_timeout));
                last[i] = Some(if !ready {
                    fail(&name, "the guest is not up yet")
                } else {
                    one(cfg, &pve, &g, local, env, c, &name, timeout)
                });
            }
            i += 1;
        }
        let all = last.iter().all(|o| o.as_ref().is_some_and(|o| o.ok));
        if all || Instant::now() >= deadline || cancel() {
            return Checked {
                checks: last.into_iter().flatten().collect(),
                passed_at_ms: all.then(now_ms),
            };
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[allow(clippy::too_many_arguments)]
fn one(
    cfg: &Config,
    pve: &Pve,
    g: &GuestRef,
    local: bool,
    env: &Environment,
    c: &HealthCheckConfig,
    name: &str,
    timeout: Duration,
) -> CheckOutcome {
    match c.check_type {
        HealthCheckType::Command | HealthCheckType::Database => match &c.command {
            Some(CommandSpec::Argv(argv)) if !argv.is_empty() => {
                exec(pve, g, local, name, argv, timeout)
            }
            Some(CommandSpec::Shell(_)) => fail(
                name,
                "restore-test checks take an argv list, not a shell string",
            ),
            _ => fail(name, "no command"),
        },
        HealthCheckType::Custom => match &c.script {
            Some(p) => exec(pve, g, local, name, &[p.display().to_string()], timeout),
            None => fail(name, "no script"),
        },
        HealthCheckType::Http | HealthCheckType::Tcp => network_check(cfg, env, c, name, timeout),
        other => fail(
            name,
            format!(
                "a {} check does not apply to a guest copy (use command, database, custom, http \
                 or tcp)",
                other.as_str()
            ),
        ),
    }
}

/// The placeholder a drill's dependency check uses for dependency NAME's
/// address: `{restore_address:NAME}`.
pub fn address_placeholder(service: &str) -> String {
    format!("{{restore_address:{service}}}")
}

/// The address other copies reach `env`'s copy at: the first one inside
/// `test_environment.network` when that is set, else its first IPv4, else
/// its first other address.
fn address_of(cfg: &Config, pve: &Pve, env: &Environment) -> Result<String> {
    let g = target_of(env)
        .ok_or_else(|| Error::Other(format!("{}: no copy was restored", env.service)))?;
    let all = crate::pve::guest::addresses(pve, &g).map_err(pve_err)?;
    let net = cfg.global.backup.restore_testing().test_environment.network;
    let pick = match &net {
        Some(n) => all.iter().find(|a| in_cidr(&a.to_string(), n)),
        None => all.iter().find(|a| a.is_ipv4()).or_else(|| all.first()),
    };
    pick.map(|a| a.to_string()).ok_or_else(|| {
        Error::Other(format!(
            "{g} reports no address{}",
            net.map(|n| format!(" inside the test network {n}"))
                .unwrap_or_default()
        ))
    })
}

/// A drill's dependency checks from the guest copy `from`: each a
/// `command` run inside that guest (as its own command checks are), with
/// `{restore_address:NAME}` replaced by the address dependency NAME's copy
/// reports; retried while the guests boot, until all pass or `allowed` has
/// passed. Copies whose NICs are disconnected (`namespace`, or no bridge or
/// VLAN) cannot reach each other: then nothing is run and every check
/// fails saying so.
pub fn run_dependency_checks(
    cfg: &Config,
    checks: &[HealthCheckConfig],
    from: &Environment,
    deps: &[&Environment],
    allowed: Duration,
    cancel: &dyn Fn() -> bool,
) -> Vec<CheckOutcome> {
    let all_fail = |why: &str| -> Vec<CheckOutcome> {
        checks
            .iter()
            .map(|c| fail(&crate::monitor::check_name(c), why))
            .collect()
    };
    let Some(g) = target_of(from) else {
        return all_fail("no copy was restored");
    };
    let copy = from.guest.clone().unwrap_or_default();
    if copy.isolation.link_down {
        return all_fail(&format!(
            "not checked: the copies are disconnected (test_environment type {}: {}), so {}              cannot reach {}; a dependency between guests is checked on an isolated network              (isolated_vlan with vlan_id or bridge)",
            copy.environment,
            copy.network,
            from.service,
            deps.iter()
                .map(|d| d.service.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(d) = deps.iter().find(|d| d.guest.is_none()) {
        return all_fail(&format!(
            "{} is not a guest copy: a guest reaches only the other guests of the drill",
            d.service
        ));
    }
    let pve = match client(cfg) {
        Ok(p) => p,
        Err(e) => return all_fail(&e.to_string()),
    };
    let local = is_local(cfg);
    if let Err(why) = crate::pve::guest::exec_support(g.kind, local) {
        return all_fail(&why);
    }
    let default_timeout = cfg.monitoring.timeout_seconds.max(1);
    let deadline = Instant::now() + allowed;
    let mut found: Vec<(String, String)> = Vec::new();
    let mut last: Vec<Option<CheckOutcome>> = vec![None; checks.len()];
    loop {
        for (i, c) in checks.iter().enumerate() {
            if last[i].as_ref().is_some_and(|o| o.ok) {
                continue;
            }
            let name = crate::monitor::check_name(c);
            let timeout = Duration::from_secs(c.timeout_seconds.unwrap_or(default_timeout));
            let argv = match (&c.check_type, &c.command) {
                (HealthCheckType::Command, Some(CommandSpec::Argv(a))) if !a.is_empty() => a,
                _ => {
                    last[i] = Some(fail(
                        &name,
                        "from a guest copy a dependency check is a command (argv) run inside it",
                    ));
                    continue;
                }
            };
            let mut missing = None;
            for d in deps {
                let key = address_placeholder(&d.service);
                if !argv.iter().any(|a| a.contains(&key))
                    || found.iter().any(|(s, _)| s == &d.service)
                {
                    continue;
                }
                match address_of(cfg, &pve, d) {
                    Ok(a) => found.push((d.service.clone(), a)),
                    Err(e) => missing = Some(format!("the address of {}'s copy: {e}", d.service)),
                }
            }
            if let Some(m) = missing {
                last[i] = Some(fail(&name, m));
                continue;
            }
            let argv: Vec<String> = argv
                .iter()
                .map(|a| {
                    found.iter().fold(a.clone(), |a, (svc, addr)| {
                        a.replace(&address_placeholder(svc), addr)
                    })
                })
                .collect();
            last[i] = Some(exec(&pve, &g, local, &name, &argv, timeout));
        }
        let all = last.iter().all(|o| o.as_ref().is_some_and(|o| o.ok));
        if all || Instant::now() >= deadline || cancel() {
            return last.into_iter().flatten().collect();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Wait for a task still running on the copy's VMID (a restore a killed
/// run started), at most the backup timeout.
fn wait_for_tasks(pve: &Pve, g: &GuestRef) -> Result<()> {
    let p = ParamsBuilder::new()
        .str("source", "active")
        .int("vmid", g.vmid.into())
        .build();
    let v = pve
        .t
        .call(Method::Get, &format!("/nodes/{}/tasks", enc(&g.node)), &p)
        .map_err(pve_err)?;
    for t in v.as_array().into_iter().flatten() {
        let running = t["status"].as_str().is_none_or(|s| s == "RUNNING");
        let ours = t["id"].as_str() == Some(g.vmid.to_string().as_str());
        if let (true, true, Some(upid)) = (running, ours, t["upid"].as_str()) {
            tracing::info!("waiting for task {upid} on {g} before removing it");
            // Its outcome does not matter: what it left is removed next.
            let _ = crate::pve::tasks::wait(pve.t.as_ref(), upid, pve.backup_timeout);
        }
    }
    Ok(())
}

/// How a removed copy is named in the log: `VM 9900 (restoretest-web-4)`.
pub fn describe(environment: &serde_json::Value) -> String {
    let copy: GuestCopy = serde_json::from_value(environment["guest"].clone()).unwrap_or_default();
    let label = GuestKind::parse(&copy.kind).map_or("guest", |k| k.label());
    match copy.vmid {
        Some(v) if copy.name.is_empty() => format!("{label} {v}"),
        Some(v) => format!("{label} {v} ({})", copy.name),
        None => "no guest (none was restored)".into(),
    }
}

/// Destroy a test's guest copy (from its recorded environment), after the
/// guard: the VMID in the configured range, our tag and name prefix read
/// back from the guest. Ok(true) when a guest was destroyed, Ok(false)
/// when there was none.
pub fn remove(cfg: &Config, environment: &serde_json::Value) -> Result<bool> {
    if environment["guest"].is_null() {
        return Ok(false);
    }
    let copy: GuestCopy = serde_json::from_value(environment["guest"].clone())
        .map_err(|e| Error::Other(format!("the record of the guest copy is unreadable: {e}")))?;
    let Some(vmid) = copy.vmid else {
        // Killed before a VMID was chosen: nothing was made.
        return Ok(false);
    };
    let kind = GuestKind::parse(&copy.kind).ok_or_else(|| {
        Error::Other(format!(
            "the record of the guest copy names kind '{}'",
            copy.kind
        ))
    })?;
    let g = GuestRef {
        node: copy.node.clone(),
        kind,
        vmid,
    };
    let range = vmid_range(cfg)?;
    if !(range.0..=range.1).contains(&vmid) {
        return Err(Error::Usage(format!(
            "{g}: VMID {vmid} is outside restore_testing.test_environment.vmid_range [{}, {}]; \
             refusing to destroy it",
            range.0, range.1
        )));
    }
    let pve = client(cfg)?;
    wait_for_tasks(&pve, &g)?;
    pve.destroy_copy(&g, range).map_err(pve_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_inside_the_test_network_or_not() {
        assert!(in_cidr("10.99.0.7", "10.99.0.0/24"));
        assert!(!in_cidr("10.99.1.7", "10.99.0.0/24"));
        assert!(!in_cidr("web.lan", "10.99.0.0/24"));
        assert!(in_cidr("fd00::5", "fd00::/64"));
        assert!(!in_cidr("10.99.0.7", "fd00::/64"));
    }
}
