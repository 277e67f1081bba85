//! Validate requests against the official PVE / PBS API schemas
//! (`*-apidata.json` in [`schema_dir`]) or, where those are absent, the
//! compact description of the endpoints the client calls
//! (`endpoints.json`), the way PVE::JSONSchema does:
//! path template + method must exist, no unknown parameters
//! (`additionalProperties: 0`), required ones present, types (booleans
//! only `0`/`1` in PVE forms), enums, anchored patterns, min/max,
//! maxLength, `requires`, the named formats from NOTES.md, and `name[n]`
//! indexed properties. Errors come back PVE-shaped: `{param: message}`.

use regex::Regex;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Where the official schema files are looked for: `$HLA_PVE_API_DIR`, or
/// `../shared/pve-api` beside the repository.
pub fn schema_dir() -> PathBuf {
    match std::env::var_os("HLA_PVE_API_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/pve-api")),
    }
}

/// The compact description of the endpoints the client calls (our own
/// format, see its `about`).
pub const COMPACT: &str = include_str!("endpoints.json");

/// The official schema `name` (`pve-apidata.json`), when its folder exists.
pub fn official(name: &str) -> Option<Schema> {
    let dir = schema_dir();
    if !dir.is_dir() {
        return None;
    }
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let tree: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    Some(Schema::new(&tree, name.starts_with("pbs")))
}

/// The official schema `name` when present, else the compact description of
/// the same flavour: every test runs either way.
pub fn load(name: &str) -> Schema {
    official(name).unwrap_or_else(|| compact(name.starts_with("pbs")))
}

/// The compact description (`endpoints.json`) of PVE or PBS as a schema.
pub fn compact(pbs: bool) -> Schema {
    let all: Value = serde_json::from_str(COMPACT).expect("endpoints.json is JSON");
    let section = all[if pbs { "pbs" } else { "pve" }]
        .as_object()
        .expect("endpoints.json has pve and pbs objects");
    let mut by_path: Vec<(Vec<String>, HashMap<String, Value>)> = Vec::new();
    for (key, ep) in section {
        let (method, path) = key
            .split_once(' ')
            .unwrap_or_else(|| panic!("endpoints.json: '{key}' is not 'METHOD /path'"));
        for k in ep.as_object().into_iter().flat_map(|o| o.keys()) {
            assert!(
                ["params", "returns", "note"].contains(&k.as_str()),
                "endpoints.json: {key}: unknown key '{k}'"
            );
        }
        let mut props = serde_json::Map::new();
        for (name, spec) in ep["params"].as_object().into_iter().flatten() {
            let spec = spec
                .as_str()
                .unwrap_or_else(|| panic!("endpoints.json: {key}: {name} is not a string"));
            let def =
                param_def(spec).unwrap_or_else(|e| panic!("endpoints.json: {key}: {name}: {e}"));
            props.insert(name.clone(), def);
        }
        let segs = segments(path);
        // Path variables are required parameters, as in the official tree.
        for s in &segs {
            if let Some(v) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                props.insert(v.to_string(), serde_json::json!({"type": "string"}));
            }
        }
        let mut info =
            serde_json::json!({"parameters": {"additionalProperties": 0, "properties": props}});
        if let Some(r) = ep["returns"].as_str() {
            info["returns"] = serde_json::json!({ "type": r });
        }
        match by_path.iter_mut().find(|(s, _)| *s == segs) {
            Some((_, methods)) => {
                methods.insert(method.to_string(), info);
            }
            None => by_path.push((segs, HashMap::from([(method.to_string(), info)]))),
        }
    }
    Schema {
        entries: by_path,
        pbs,
        regex_cache: Default::default(),
        source: "compact",
    }
}

/// One compact parameter spec (`integer required format=pve-vmid min=100`)
/// as the official tree writes it.
fn param_def(spec: &str) -> Result<Value, String> {
    let mut words = spec.split_whitespace();
    let ty = words.next().ok_or("empty spec")?;
    if !["string", "integer", "number", "boolean", "array"].contains(&ty) {
        return Err(format!("unknown type '{ty}'"));
    }
    let mut def = serde_json::json!({ "type": ty, "optional": 1 });
    let number = |k: &str, v: &str| -> Result<Value, String> {
        v.parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{k}={v} is not a number"))
    };
    for w in words {
        match w.split_once('=') {
            None if w == "required" => {
                def.as_object_mut().unwrap().remove("optional");
            }
            Some(("format", v)) => def["format"] = v.into(),
            Some(("enum", v)) => def["enum"] = v.split('|').collect::<Vec<_>>().into(),
            Some(("min", v)) => def["minimum"] = number("min", v)?,
            Some(("max", v)) => def["maximum"] = number("max", v)?,
            Some(("maxlen", v)) => def["maxLength"] = number("maxlen", v)?,
            Some(("requires", v)) => def["requires"] = v.into(),
            _ => return Err(format!("unknown word '{w}'")),
        }
    }
    Ok(def)
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[derive(Debug)]
pub enum Rejection {
    /// 501: no such path or method.
    NotImplemented(String),
    /// 400 with per-parameter errors.
    Params(BTreeMap<String, String>),
}

pub struct Schema {
    /// (segments of the path template, method) -> method info.
    entries: Vec<(Vec<String>, HashMap<String, Value>)>,
    pbs: bool,
    regex_cache: std::sync::Mutex<HashMap<String, Regex>>,
    /// "official" or "compact".
    pub source: &'static str,
}

impl Schema {
    fn new(tree: &Value, pbs: bool) -> Schema {
        let mut entries = Vec::new();
        fn walk(n: &Value, out: &mut Vec<(Vec<String>, HashMap<String, Value>)>) {
            if let (Some(path), Some(info)) = (n["path"].as_str(), n["info"].as_object()) {
                let segs = path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                out.push((
                    segs,
                    info.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                ));
            }
            if let Some(c) = n["children"].as_array() {
                for c in c {
                    walk(c, out);
                }
            }
        }
        for n in tree.as_array().expect("schema is an array") {
            walk(n, &mut entries);
        }
        Schema {
            entries,
            pbs,
            regex_cache: Default::default(),
            source: "official",
        }
    }

    /// Every (method, path template, method info), in no set order.
    pub fn endpoints(&self) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (segs, methods) in &self.entries {
            for (m, info) in methods {
                out.push((m.clone(), format!("/{}", segs.join("/")), info));
            }
        }
        out
    }

    /// The method info of exactly this path template (`/nodes/{node}/status`).
    pub fn info(&self, method: &str, template: &str) -> Option<&Value> {
        let segs = segments(template);
        self.entries
            .iter()
            .find(|(s, _)| *s == segs)
            .and_then(|(_, m)| m.get(method))
    }

    /// The declared type of the answer to a concrete request, if any.
    pub fn returns(&self, method: &str, path: &str) -> Option<String> {
        let (_, info) = self.lookup(method, path).ok()?;
        info["returns"]["type"].as_str().map(str::to_string)
    }

    /// Find the template for a concrete path: (template vars, method info).
    fn lookup(
        &self,
        method: &str,
        path: &str,
    ) -> Result<(BTreeMap<String, String>, &Value), Rejection> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut best: Option<(usize, &Vec<String>, &HashMap<String, Value>)> = None;
        for (tpl, info) in &self.entries {
            if tpl.len() != segs.len() {
                continue;
            }
            let mut literal = 0;
            let ok = tpl.iter().zip(&segs).all(|(t, s)| {
                if t.starts_with('{') {
                    true
                } else if t == s {
                    literal += 1;
                    true
                } else {
                    false
                }
            });
            if ok && best.is_none_or(|b| literal > b.0) {
                best = Some((literal, tpl, info));
            }
        }
        let Some((_, tpl, info)) = best else {
            return Err(Rejection::NotImplemented(format!(
                "Method '{method} {path}' not implemented"
            )));
        };
        let Some(m) = info.get(method) else {
            return Err(Rejection::NotImplemented(format!(
                "Method '{method} {path}' not implemented"
            )));
        };
        let mut vars = BTreeMap::new();
        for (t, s) in tpl.iter().zip(&segs) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                vars.insert(name.to_string(), percent_decode(s));
            }
        }
        Ok((vars, m))
    }

    /// Check one request. `params` are the decoded query or form pairs.
    pub fn validate(
        &self,
        method: &str,
        path: &str,
        params: &[(String, String)],
    ) -> Result<BTreeMap<String, String>, Rejection> {
        let (vars, info) = self.lookup(method, path)?;
        let props = info["parameters"]["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut errors = BTreeMap::new();
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in params {
            seen.entry(k.clone()).or_default().push(v.clone());
        }
        for (k, vals) in &seen {
            if vars.contains_key(k) {
                if vals.iter().any(|v| Some(v) != vars.get(k)) {
                    errors.insert(
                        k.clone(),
                        "duplicate parameter (already defined in URI) with conflicting values!"
                            .into(),
                    );
                }
                continue;
            }
            let Some(def) = prop_for(&props, k) else {
                errors.insert(k.clone(), "property is not defined in schema and the schema does not allow additional properties".into());
                continue;
            };
            if vals.len() > 1 && def["type"] != "array" {
                errors.insert(
                    k.clone(),
                    "property is not an array but was given more than once".into(),
                );
                continue;
            }
            for v in vals {
                if let Err(e) = self.check_value(&def, v) {
                    errors.insert(k.clone(), e);
                    break;
                }
            }
        }
        for (k, def) in &props {
            if vars.contains_key(k) || k.contains("[n]") {
                continue;
            }
            if !is_true(&def["optional"]) && !seen.contains_key(k) {
                errors.insert(
                    k.clone(),
                    "property is missing and it is not optional".into(),
                );
            }
            if let (Some(req), true) = (def["requires"].as_str(), seen.contains_key(k)) {
                if !seen.contains_key(req) && !vars.contains_key(req) {
                    errors.insert(
                        k.clone(),
                        format!("missing property - '{k}' requires this property"),
                    );
                    errors.insert(
                        req.to_string(),
                        format!("missing property - '{k}' requires this property"),
                    );
                }
            }
        }
        if errors.is_empty() {
            Ok(vars)
        } else {
            Err(Rejection::Params(errors))
        }
    }

    fn regex(&self, pat: &str) -> Regex {
        let mut c = self.regex_cache.lock().unwrap();
        c.entry(pat.to_string())
            .or_insert_with(|| {
                let p = if self.pbs {
                    pat.trim_start_matches('/')
                        .trim_end_matches('/')
                        .to_string()
                } else {
                    format!(
                        "^(?:{})$",
                        pat.replace("(?^i:", "(?i:").replace("(?^:", "(?:")
                    )
                };
                Regex::new(&p).unwrap_or_else(|e| panic!("schema pattern {pat}: {e}"))
            })
            .clone()
    }

    pub fn check_value(&self, def: &Value, v: &str) -> Result<(), String> {
        let ty = def["type"].as_str().unwrap_or("string");
        match ty {
            "boolean" => {
                let ok = if self.pbs {
                    matches!(v, "0" | "1" | "true" | "false")
                } else {
                    matches!(v, "0" | "1")
                };
                if !ok {
                    return Err(format!("type check ('boolean') failed - got '{v}'"));
                }
            }
            "integer" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| format!("type check ('integer') failed - got '{v}'"))?;
                if let Some(min) = num(&def["minimum"]) {
                    if (n as f64) < min {
                        return Err(format!("value must have a minimum value of {min}"));
                    }
                }
                if let Some(max) = num(&def["maximum"]) {
                    if (n as f64) > max {
                        return Err(format!("value must have a maximum value of {max}"));
                    }
                }
                if let Value::String(f) = &def["format"] {
                    check_format(f, v)?;
                }
            }
            "number" => {
                v.parse::<f64>()
                    .map_err(|_| format!("type check ('number') failed - got '{v}'"))?;
            }
            "string" | "array" => {
                if let Some(max) = num(&def["maxLength"]) {
                    if v.chars().count() as f64 > max {
                        return Err(format!("value may only be {max} characters long"));
                    }
                }
                if let Some(min) = num(&def["minLength"]) {
                    if (v.chars().count() as f64) < min {
                        return Err(format!("value must be at least {min} characters long"));
                    }
                }
                if let Some(en) = def["enum"].as_array() {
                    if !en.iter().any(|e| e.as_str() == Some(v)) {
                        let list = en
                            .iter()
                            .filter_map(|e| e.as_str())
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(format!(
                            "value '{v}' does not have a value in the enumeration '{list}'"
                        ));
                    }
                }
                if let Some(p) = def["pattern"].as_str() {
                    if !self.regex(p).is_match(v) {
                        return Err("value does not match the regex pattern".into());
                    }
                }
                match &def["format"] {
                    Value::String(f) => check_format(f, v)?,
                    Value::Object(sub) => check_property_string(sub, v)?,
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }
}

pub(super) fn is_true(v: &Value) -> bool {
    matches!(v, Value::Bool(true)) || v.as_i64() == Some(1) || v.as_str() == Some("1")
}

pub(super) fn num(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// The definition for `k`, expanding indexed `net[n]` to `net0`, `net1`...
fn prop_for(props: &serde_json::Map<String, Value>, k: &str) -> Option<Value> {
    if let Some(d) = props.get(k) {
        return Some(d.clone());
    }
    let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() < k.len() {
        return props.get(&format!("{base}[n]")).cloned();
    }
    None
}

/// The named formats [`check_format`] checks (a `-list` of each too).
pub const FORMATS: &[&str] = &[
    "pve-vmid",
    "pve-node",
    "pve-storage-id",
    "pve-configid",
    "dns-name",
    "pve-tag",
    "pve-storage-content",
    "pve-fingerprint",
    "pbs-safe-id",
    "pbs-ns",
    "pbs-userid",
    "prune-backups",
    "pve-qm-net",
    "pve-lxc-net",
];

fn check_format(f: &str, v: &str) -> Result<(), String> {
    if let Some(r) = check_named_property_string(f, v) {
        return r;
    }
    if let Some(item) = f.strip_suffix("-list") {
        for part in Regex::new(r"[,;\s]+")
            .unwrap()
            .split(v)
            .filter(|s| !s.is_empty())
        {
            check_format(item, part)?;
        }
        return Ok(());
    }
    let re = |p: &str| Regex::new(p).unwrap();
    let ok = match f {
        "pve-vmid" => re(r"^[1-9][0-9]{2,8}$").is_match(v),
        "pve-node" => re(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$").is_match(v),
        "pve-storage-id" => re(r"(?i)^[a-z][a-z0-9\-_.]*[a-z0-9]$").is_match(v),
        "pve-configid" => re(r"(?i)^[a-z][a-z0-9_-]+$").is_match(v),
        "dns-name" => re(r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$").is_match(v),
        "pve-tag" => re(r"(?i)^[a-z0-9_][a-z0-9_\-+.]*$").is_match(v),
        "pve-storage-content" => ["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"].contains(&v),
        "pve-fingerprint" => re(r"^([A-Fa-f0-9]{2}:){31}[A-Fa-f0-9]{2}$").is_match(v),
        // PBS identifiers, where the PBS API gives regular expressions.
        "pbs-safe-id" => re(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$").is_match(v),
        "pbs-ns" => {
            v.is_empty()
                || (v.split('/').count() <= 8
                    && v.split('/').all(|p| re(r"^[A-Za-z0-9_][A-Za-z0-9._\-]*$").is_match(p)))
        }
        "pbs-userid" => re(r"^[^\s:/\x00-\x1f\x7f]+@[A-Za-z0-9_][A-Za-z0-9._\-]*$").is_match(v),
        "prune-backups" => {
            return check_property_string_keys(v, &["keep-all", "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly"]);
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(match f {
            "pve-configid" => format!("invalid format - invalid configuration ID '{v}'"),
            _ => format!("invalid format - value '{v}' does not match format {f}"),
        })
    }
}

fn check_property_string_keys(v: &str, keys: &[&str]) -> Result<(), String> {
    for kv in v.split(',').filter(|s| !s.is_empty()) {
        let k = kv.split('=').next().unwrap_or_default();
        if !kv.contains('=') || !keys.contains(&k) {
            return Err(format!(
                "invalid format - property string: unknown key '{k}'"
            ));
        }
    }
    Ok(())
}

fn check_property_string(sub: &serde_json::Map<String, Value>, v: &str) -> Result<(), String> {
    let default_key = sub
        .iter()
        .find(|(_, d)| is_true(&d["default_key"]))
        .map(|(k, _)| k.clone());
    for kv in v.split(',').filter(|s| !s.is_empty()) {
        let (k, val) = match kv.split_once('=') {
            Some((k, val)) => (k.to_string(), val),
            None => match &default_key {
                Some(k) => (k.clone(), kv),
                None => return Err(format!("invalid format - value without key '{kv}'")),
            },
        };
        let Some(def) = sub.get(&k) else {
            return Err(format!(
                "invalid format - property string: unknown key '{k}'"
            ));
        };
        check_property_value(&k, def, val)?;
    }
    Ok(())
}

/// One value inside a property string (PVE::JSONSchema::parse_property_string:
/// booleans through parse_boolean, integers within their bounds).
fn check_property_value(k: &str, def: &Value, val: &str) -> Result<(), String> {
    match def["type"].as_str() {
        Some("boolean") => {
            let ok = ["1", "0", "on", "off", "yes", "no", "true", "false"]
                .contains(&val.to_ascii_lowercase().as_str());
            if !ok {
                return Err(format!(
                    "invalid format - {k}: type check ('boolean') failed - got '{val}'"
                ));
            }
        }
        Some("integer") => {
            let n: i64 = val.parse().map_err(|_| {
                format!("invalid format - {k}: type check ('integer') failed - got '{val}'")
            })?;
            let (min, max) = (num(&def["minimum"]), num(&def["maximum"]));
            if min.is_some_and(|m| (n as f64) < m) || max.is_some_and(|m| (n as f64) > m) {
                return Err(format!(
                    "invalid format - {k}: value must be between {min:?} and {max:?}"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Property-string formats of the compact description: their keys, and
/// the definitions of the keys whose values are checked (as in the
/// official schema).
pub fn property_format(name: &str) -> Option<(Vec<&'static str>, Value)> {
    let typed = serde_json::json!({
        "link_down": {"type": "boolean"},
        "firewall": {"type": "boolean"},
        "tag": {"type": "integer", "minimum": 1, "maximum": 4094},
    });
    let keys = match name {
        "pve-qm-net" => vec![
            "bridge",
            "e1000",
            "e1000-82540em",
            "e1000-82544gc",
            "e1000-82545em",
            "e1000e",
            "firewall",
            "i82551",
            "i82557b",
            "i82559er",
            "link_down",
            "macaddr",
            "model",
            "mtu",
            "ne2k_isa",
            "ne2k_pci",
            "pcnet",
            "queues",
            "rate",
            "rtl8139",
            "tag",
            "trunks",
            "virtio",
            "vmxnet3",
        ],
        "pve-lxc-net" => vec![
            "bridge",
            "firewall",
            "gw",
            "gw6",
            "host-managed",
            "hwaddr",
            "ip",
            "ip6",
            "link_down",
            "mtu",
            "name",
            "rate",
            "tag",
            "trunks",
            "type",
        ],
        _ => return None,
    };
    Some((keys, typed))
}

fn check_named_property_string(name: &str, v: &str) -> Option<Result<(), String>> {
    let (keys, typed) = property_format(name)?;
    Some((|| {
        for kv in v.split(',').filter(|s| !s.is_empty()) {
            let Some((k, val)) = kv.split_once('=') else {
                return Err(format!("invalid format - value without key '{kv}'"));
            };
            if !keys.contains(&k) {
                return Err(format!(
                    "invalid format - property string: unknown key '{k}'"
                ));
            }
            check_property_value(k, &typed[k], val)?;
        }
        Ok(())
    })())
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decode `a=1&b=2` (splitting on `;` too, like pve-http-server).
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    s.split(['&', ';'])
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}
