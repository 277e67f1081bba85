//! Key/value state for scripts (JSON values), with a per-key history of the
//! last [`KV_HISTORY`] values.

use super::{bad_column, now, Store, KV_HISTORY};
use crate::error::Result;
use rusqlite::{params, OptionalExtension, TransactionBehavior};
use serde_json::Value;

fn parse(idx: usize, s: &str) -> rusqlite::Result<Value> {
    serde_json::from_str(s).map_err(|e| bad_column(idx, e))
}

impl Store {
    pub fn kv_get(&self, key: &str) -> Result<Option<Value>> {
        self.with(|c| {
            let text: Option<String> = c
                .prepare_cached("SELECT value FROM kv WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            text.map(|t| parse(0, &t)).transpose()
        })
    }

    /// Set a key (secrets in string values are masked) and append the value
    /// to its history, keeping the newest [`KV_HISTORY`] entries.
    pub fn kv_set(&self, key: &str, value: &Value, run_id: Option<i64>) -> Result<()> {
        let mut value = value.clone();
        crate::redact::scrub_json(&mut value);
        let text = value.to_string();
        self.with(|c| {
            let ts = now();
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO kv (key, value, updated_at, run_id) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (key) DO UPDATE SET
                   value = excluded.value, updated_at = excluded.updated_at, run_id = excluded.run_id",
            )?
            .execute(params![key, text, ts, run_id])?;
            tx.prepare_cached("INSERT INTO kv_history (key, value, ts, run_id) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![key, text, ts, run_id])?;
            // Everything at or below the (KV_HISTORY+1)-th newest id: a walk
            // of at most KV_HISTORY index entries, usually deleting one row.
            tx.prepare_cached(
                "DELETE FROM kv_history WHERE key = ?1 AND id <=
                   (SELECT id FROM kv_history WHERE key = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![key, KV_HISTORY])?;
            tx.commit()
        })
    }

    /// Remove a key; returns whether it existed. Its history is kept (it
    /// ages out as the key is set again).
    pub fn kv_delete(&self, key: &str) -> Result<bool> {
        self.with(|c| Ok(c.execute("DELETE FROM kv WHERE key = ?1", [key])? > 0))
    }

    /// The newest `limit` values a key had, newest first, as
    /// `(unix seconds, value)`.
    pub fn kv_history(&self, key: &str, limit: usize) -> Result<Vec<(i64, Value)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT ts, value FROM kv_history WHERE key = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![key, super::limit(limit)], |r| {
                let text: String = r.get(1)?;
                Ok((r.get(0)?, parse(1, &text)?))
            })?;
            rows.collect()
        })
    }

    /// Keys starting with `prefix` (case-sensitive), sorted.
    pub fn kv_keys(&self, prefix: &str) -> Result<Vec<String>> {
        self.with(|c| {
            // A range scan from `prefix` on the primary key, stopping at the
            // first key without the prefix (LIKE is case-insensitive and
            // needs escaping; GLOB needs escaping too).
            let mut st = c.prepare_cached("SELECT key FROM kv WHERE key >= ?1 ORDER BY key")?;
            let mut rows = st.query([prefix])?;
            let mut keys = Vec::new();
            while let Some(r) = rows.next()? {
                let k: String = r.get(0)?;
                if !k.starts_with(prefix) {
                    break;
                }
                keys.push(k);
            }
            Ok(keys)
        })
    }
}
