//! `state::` key/value state for scripts, persisted in the state DB with a
//! history per key. Values are any JSON-able Rhai value.

use super::{dry_run, service_of, throw, to_rhai, RhaiResult};
use crate::script::host::{dynamic_to_json, Host};
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use std::sync::Arc;

fn get(h: &Host, ctx: &NativeCallContext, key: &str) -> RhaiResult<Option<Dynamic>> {
    let Some(store) = &h.store else {
        return Ok(None);
    };
    let v = store.kv_get(key).map_err(|e| to_rhai(e, ctx))?;
    v.map(|v| rhai::serde::to_dynamic(&v)).transpose()
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let v = |name: &str| FuncRegistration::new(name).with_volatility(true);
    let h = host.clone();
    v("get").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: &str| -> RhaiResult<Dynamic> {
            Ok(get(&h, &ctx, key)?.unwrap_or(Dynamic::UNIT))
        },
    );
    let h = host.clone();
    v("get").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: &str, default: Dynamic| -> RhaiResult<Dynamic> {
            Ok(get(&h, &ctx, key)?.unwrap_or(default))
        },
    );
    let h = host.clone();
    v("set").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: &str, value: Dynamic| -> RhaiResult<()> {
            if key.is_empty() {
                return Err(throw(
                    "invalid_argument",
                    "state::set: empty key",
                    service_of(&ctx).as_deref(),
                ));
            }
            let json = dynamic_to_json(&value);
            if dry_run(&h, &ctx, &format!("set state {key} = {json}")) {
                return Ok(());
            }
            let Some(store) = &h.store else { return Ok(()) };
            store
                .kv_set(key, &json, h.run_id)
                .map_err(|e| to_rhai(e, &ctx))
        },
    );
    let h = host.clone();
    v("delete").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: &str| -> RhaiResult<bool> {
            if dry_run(&h, &ctx, &format!("delete state {key}")) {
                return Ok(false);
            }
            let Some(store) = &h.store else {
                return Ok(false);
            };
            store.kv_delete(key).map_err(|e| to_rhai(e, &ctx))
        },
    );
    let h = host.clone();
    v("history").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, key: &str, limit: i64| -> RhaiResult<Array> {
            let Some(store) = &h.store else {
                return Ok(Array::new());
            };
            let limit = super::to_u64(limit, "limit")? as usize;
            let rows = store.kv_history(key, limit).map_err(|e| to_rhai(e, &ctx))?;
            rows.into_iter()
                .map(|(ts, v)| {
                    let mut m = Map::new();
                    m.insert("ts".into(), Dynamic::from(ts));
                    m.insert("value".into(), rhai::serde::to_dynamic(&v)?);
                    Ok(Dynamic::from_map(m))
                })
                .collect()
        },
    );
    let h = host.clone();
    v("keys").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, prefix: &str| -> RhaiResult<Array> {
            let Some(store) = &h.store else {
                return Ok(Array::new());
            };
            Ok(store
                .kv_keys(prefix)
                .map_err(|e| to_rhai(e, &ctx))?
                .into_iter()
                .map(Dynamic::from)
                .collect())
        },
    );
    m
}
