//! `dest::copy(svc, artifact)` (not `dest::sync`: `sync` is a reserved word
//! in Rhai): copy an archive with its sidecars to each of
//! the service's destinations (directories: local disks, NFS/SMB mounts),
//! hashing while copying and comparing with the recorded checksum.

use super::{dry_run, service_config, throw, to_rhai, RhaiResult};
use crate::catalog::KIND_COPY;
use crate::config::{DestinationConfig, ServiceConfig};
use crate::script::Host;
use crate::state::NewBackup;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use std::path::Path;
use std::sync::Arc;

fn get_str(m: &Map, key: &str) -> Option<String> {
    m.get(key).filter(|v| !v.is_unit()).map(|v| v.to_string())
}

/// The global destinations a service uses (its `destinations` names, or
/// all of them).
pub(super) fn destinations<'a>(h: &'a Host, svc: &ServiceConfig) -> Vec<&'a DestinationConfig> {
    h.destinations_for(svc)
}

fn sync(h: &Host, ctx: &NativeCallContext, svc: Map, artifact: Map) -> RhaiResult<Array> {
    let cfg = service_config(h, &svc, "dest::copy")?;
    let service = cfg.name.clone();
    let path = get_str(&artifact, "path").ok_or_else(|| {
        throw(
            "invalid_argument",
            "dest::sync: artifact.path missing",
            Some(&service),
        )
    })?;
    let mut out = Array::new();
    for d in destinations(h, cfg) {
        let name = d.name.clone();
        let dir = d.path.join(&service);
        let mut r = Map::new();
        r.insert("name".into(), name.clone().into());
        if dry_run(
            h,
            ctx,
            &format!("copy {path} to destination {name} ({})", dir.display()),
        ) {
            r.insert(
                "path".into(),
                dir.join(Path::new(&path).file_name().unwrap_or_default())
                    .display()
                    .to_string()
                    .into(),
            );
            out.push(Dynamic::from_map(r));
            continue;
        }
        let copied =
            crate::archive::copy_to(Path::new(&path), &dir).map_err(|e| to_rhai(e, ctx))?;
        h.event(
            tracing::Level::INFO,
            Some(&service),
            &format!("copied to destination {name}: {}", copied.display()),
        );
        if let Some(store) = &h.store {
            let now = chrono::Utc::now().timestamp();
            let size = std::fs::metadata(&copied).map(|m| m.len()).unwrap_or(0);
            let b = NewBackup {
                service: service.clone(),
                kind: KIND_COPY.into(),
                location: copied.display().to_string(),
                size,
                sha256: get_str(&artifact, "sha256"),
                created_at: artifact
                    .get("created_at")
                    .and_then(|v| v.as_int().ok())
                    .unwrap_or(now),
                verified_at: Some(now),
                run_id: h.run_id,
            };
            store.record_backup(&b).map_err(|e| to_rhai(e, ctx))?;
        }
        r.insert("path".into(), copied.display().to_string().into());
        out.push(Dynamic::from_map(r));
    }
    Ok(out)
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("copy")
        .with_volatility(true)
        .set_into_module(
            &mut m,
            move |ctx: NativeCallContext, svc: Map, artifact: Map| sync(&h, &ctx, svc, artifact),
        );
    m
}
