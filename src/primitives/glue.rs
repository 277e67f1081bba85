//! Glue between the typed primitives and Rhai: registration of every
//! module, thrown error maps, dry-run logging, argument conversion.

use super::*;
use crate::config::ServiceConfig;
use crate::error::Error;
use crate::script::Host;
use rhai::{Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext};
use std::sync::Arc;

pub(crate) type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// Builds one namespaced module for a run's host.
type ModuleBuilder = fn(&Arc<Host>) -> Module;

/// Register every primitive module into `engine` for this run's host.
pub fn register_all(engine: &mut Engine, host: &Arc<Host>) {
    let modules: &[(&str, ModuleBuilder)] = &[
        ("archive", archive::module),
        ("catalog", catalog::module),
        ("compose", update::compose_module),
        ("config", config_rhai::module),
        ("consistency", docker::consistency_module),
        ("dest", dest::module),
        ("docker", docker::module),
        ("fs", fs::module),
        ("http", http::module),
        ("state", kv::module),
        ("log", log::module),
        ("monitor", monitor::module),
        ("net", net::module),
        ("notify", notify::module),
        ("pbs", pbs::module),
        ("proc", proc::module),
        ("pve", pve::module),
        ("restore_test", restoretest::module),
        ("sys", sys::module),
        ("systemd", docker::systemd_module),
        ("time", time::module),
        ("update", update::module),
        ("workflow", workflow::module),
    ];
    for (name, build) in modules {
        engine.register_static_module(*name, build(host).into());
    }
}

/// The error value scripts catch: `#{kind, message, service}`.
pub(crate) fn throw(
    kind: &str,
    message: impl Into<String>,
    service: Option<&str>,
) -> Box<EvalAltResult> {
    let message = crate::redact::scrub(&message.into()).into_owned();
    let mut m = Map::new();
    m.insert("kind".into(), kind.into());
    m.insert("message".into(), message.into());
    m.insert(
        "service".into(),
        service
            .map(|s| Dynamic::from(s.to_string()))
            .unwrap_or(Dynamic::UNIT),
    );
    EvalAltResult::ErrorRuntime(m.into(), rhai::Position::NONE).into()
}

/// A crate error as a thrown map.
pub(crate) fn to_rhai(e: Error, ctx: &NativeCallContext) -> Box<EvalAltResult> {
    let svc = Host::tag_service(ctx.tag());
    throw(e.kind(), e.to_string(), svc.as_deref())
}

/// In a dry run, log `would <what>` and return true: the caller then does nothing.
pub(crate) fn dry_run(host: &Host, ctx: &NativeCallContext, what: &str) -> bool {
    if host.dry_run {
        let svc = Host::tag_service(ctx.tag());
        host.event(
            tracing::Level::INFO,
            svc.as_deref(),
            &format!("[dry-run] would {what}"),
        );
    }
    host.dry_run
}

/// Options a script builds as an object map, converted with serde.
pub(crate) fn from_map<T: serde::de::DeserializeOwned>(map: Map, what: &str) -> RhaiResult<T> {
    rhai::serde::from_dynamic::<T>(&Dynamic::from_map(map).flatten())
        .map_err(|e| throw("invalid_argument", format!("{what}: {e}"), None))
}

/// A Rust value as a Rhai value (maps and arrays via serde).
pub(crate) fn to_dyn<T: serde::Serialize>(v: &T) -> RhaiResult<Dynamic> {
    rhai::serde::to_dynamic(v)
}

/// Checked conversion of a script integer.
pub(crate) fn to_u64(v: i64, what: &str) -> RhaiResult<u64> {
    u64::try_from(v).map_err(|_| {
        throw(
            "invalid_argument",
            format!("{what} must not be negative (got {v})"),
            None,
        )
    })
}

/// An array of strings from a script.
pub(crate) fn strings(arr: rhai::Array, what: &str) -> RhaiResult<Vec<String>> {
    arr.into_iter()
        .map(|d| {
            d.flatten().into_string().map_err(|t| {
                throw(
                    "invalid_argument",
                    format!("{what}: expected strings, found {t}"),
                    None,
                )
            })
        })
        .collect()
}

/// The service of the current call, if any.
pub(crate) fn service_of(ctx: &NativeCallContext) -> Option<String> {
    Host::tag_service(ctx.tag())
}

/// The configured service a script's `svc` map stands for, found once by its
/// `name`: adapters read the typed [`ServiceConfig`] rather than the map's
/// fields one by one.
pub(crate) fn service_config<'a>(
    host: &'a Host,
    svc: &Map,
    what: &str,
) -> RhaiResult<&'a ServiceConfig> {
    let name = svc
        .get("name")
        .and_then(|n| {
            n.read_lock::<rhai::ImmutableString>()
                .map(|s| s.to_string())
        })
        .ok_or_else(|| {
            throw(
                "invalid_argument",
                format!("{what}: svc.name missing"),
                None,
            )
        })?;
    host.config
        .services
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            throw(
                "invalid_argument",
                format!("{what}: no configured service named '{name}'"),
                Some(&name),
            )
        })
}
