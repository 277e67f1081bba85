//! `config::` for scripts: read the effective configuration (secrets
//! redacted), one service, or all services.

use super::{throw, RhaiResult};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Module};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    // Each top-level section is serialised (and redacted) on its first
    // `config::get`: `config::get("monitoring.enabled")` does not pay for
    // the services list.
    let sections: Arc<Mutex<HashMap<String, Arc<serde_json::Value>>>> = Arc::default();
    let h = host.clone();
    FuncRegistration::new("get").set_into_module(
        &mut m,
        move |path: &str| -> RhaiResult<Dynamic> {
            let mut parts = path.split('.').filter(|p| !p.is_empty());
            let Some(first) = parts.next() else {
                return rhai::serde::to_dynamic(h.config.to_redacted_json());
            };
            let section = sections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(first.to_string())
                .or_insert_with(|| Arc::new(h.config.redacted_section_json(first)))
                .clone();
            let mut cur = &*section;
            for part in parts {
                cur = match cur {
                    serde_json::Value::Object(o) => o.get(part).unwrap_or(&serde_json::Value::Null),
                    serde_json::Value::Array(a) => part
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| a.get(i))
                        .unwrap_or(&serde_json::Value::Null),
                    _ => &serde_json::Value::Null,
                };
            }
            rhai::serde::to_dynamic(cur)
        },
    );
    let h = host.clone();
    FuncRegistration::new("service").set_into_module(
        &mut m,
        move |name: &str| -> RhaiResult<Dynamic> {
            h.config
                .service(name)
                .map(|s| h.service_map(s))
                .ok_or_else(|| throw("not_found", format!("no service named '{name}'"), None))
        },
    );
    let h = host.clone();
    FuncRegistration::new("services").set_into_module(&mut m, move || -> Array {
        h.config.services.iter().map(|s| h.service_map(s)).collect()
    });
    let h = host.clone();
    FuncRegistration::new("backup_root")
        .set_into_module(&mut m, move || h.paths.backup_root.display().to_string());
    m
}
