//! `config::` for scripts: read the effective configuration (secrets
//! redacted), one service, or all services. `config::get` of a path the
//! schema does not have throws `not_found`; a key that is there but unset
//! gives `()`.

use super::{throw, RhaiResult};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Module};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The value at the dotted `parts` below `v`. A key the configuration has
/// but left unset is there as null (read as `()`), as is a list index past
/// the end and anything below an unset optional section; a key the schema
/// does not have is an error naming the part that was not found.
fn lookup<'a, 'p>(
    mut cur: &'a serde_json::Value,
    section: &str,
    parts: impl Iterator<Item = &'p str>,
) -> Result<&'a serde_json::Value, String> {
    const NULL: &serde_json::Value = &serde_json::Value::Null;
    let mut at = section.to_string();
    for part in parts {
        at.push('.');
        at.push_str(part);
        cur = match cur {
            serde_json::Value::Object(o) => o.get(part).ok_or_else(|| at.clone())?,
            serde_json::Value::Array(a) => {
                let i = part.parse::<usize>().map_err(|_| at.clone())?;
                a.get(i).unwrap_or(NULL)
            }
            serde_json::Value::Null => NULL,
            _ => return Err(at),
        };
    }
    Ok(cur)
}

fn unknown_path(path: &str, at: &str) -> Box<rhai::EvalAltResult> {
    throw(
        "not_found",
        format!("config::get: no configuration key '{path}' ('{at}' is not in the schema)"),
        None,
    )
}

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
            // Every section of the schema serialises to a map or a list.
            if section.is_null() {
                return Err(unknown_path(path, first));
            }
            match lookup(&section, first, parts) {
                Ok(v) => rhai::serde::to_dynamic(v),
                Err(at) => Err(unknown_path(path, &at)),
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_tells_an_unset_key_from_one_the_schema_lacks() {
        let backup = json!({
            "concurrency": 2,
            "proxmox_backup_server": null,
            "destinations": [{"name": "nas"}],
        });
        let get = |path: &str| lookup(&backup, "backup", path.split('.'));
        assert_eq!(get("concurrency"), Ok(&json!(2)));
        assert_eq!(get("proxmox_backup_server"), Ok(&json!(null)));
        assert_eq!(get("proxmox_backup_server.server"), Ok(&json!(null)));
        assert_eq!(get("destinations.0.name"), Ok(&json!("nas")));
        assert_eq!(get("destinations.5"), Ok(&json!(null)));
        assert_eq!(get("concurency"), Err("backup.concurency".to_string()));
        assert_eq!(
            get("concurrency.max"),
            Err("backup.concurrency.max".to_string())
        );
        assert_eq!(
            get("destinations.first"),
            Err("backup.destinations.first".to_string())
        );
    }
}
