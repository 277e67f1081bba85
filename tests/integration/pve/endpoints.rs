//! The compact description of the endpoints the client calls
//! (`endpoints.json`): it agrees with the official schema wherever that is
//! found, it covers every request path in `src/pve/`, and it names only
//! formats the validator checks.

use super::schema::{self, is_true, num, Schema, FORMATS};
use crate::harness::{require, Requirement};
use serde_json::Value;
use std::collections::BTreeSet;

/// The official Proxmox VE / PBS API schema files (`*-apidata.json`, the
/// api-viewer's data from pve-docs and proxmox-backup), looked for in
/// `$HLA_PVE_API_DIR` or `../shared/pve-api` beside the repository. Without
/// them the fake server uses `endpoints.json`, so only the cross-check below
/// waits for them.
pub const PVE_SCHEMA: Requirement = Requirement {
    name: "the official Proxmox API schema",
    install: "put pve-apidata.json and pbs-apidata.json in the folder HLA_PVE_API_DIR names",
    probe: pve_schema_available,
    tests: &["pve::endpoints::the_compact_description_agrees_with_the_official_schema"],
    optional: true,
};

pub fn pve_schema_available() -> Result<(), String> {
    let dir = schema::schema_dir();
    for f in ["pve-apidata.json", "pbs-apidata.json"] {
        if !dir.join(f).is_file() {
            return Err(format!("no {}", dir.join(f).display()));
        }
    }
    Ok(())
}

fn enum_set(v: &Value) -> Option<BTreeSet<String>> {
    v.as_array().map(|a| {
        a.iter()
            .map(|e| e.as_str().map_or_else(|| e.to_string(), str::to_string))
            .collect()
    })
}

/// Values on which a pattern and the named format replacing it must agree.
const PROBES: &[&str] = &[
    "",
    "a",
    "web",
    "web-1",
    "a.b-c_d",
    "_x",
    "-x",
    ".x",
    "x-",
    "a b",
    "a/b",
    "a/b/c",
    "1/2/3/4/5/6/7/8",
    "1/2/3/4/5/6/7/8/9",
    "/a",
    "a/",
    "a:b",
    "a\tb",
    "root@pam",
    "user@pbs",
    "a@b@pam",
    "x@-y",
    "x@",
    "@pam",
    "root",
    "100",
    "vm",
    "pve1",
    "local-lvm",
];

/// How one described parameter differs from its official definition.
fn param_drift(official: &Schema, o: &Value, compact: &Schema, c: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let ty = |d: &Value| d["type"].as_str().unwrap_or("string").to_string();
    if ty(o) != ty(c) {
        out.push(format!("type {} (official {})", ty(c), ty(o)));
    }
    if is_true(&o["optional"]) != is_true(&c["optional"]) {
        out.push(format!(
            "{} (official: {})",
            if is_true(&c["optional"]) {
                "optional"
            } else {
                "required"
            },
            if is_true(&o["optional"]) {
                "optional"
            } else {
                "required"
            }
        ));
    }
    if enum_set(&o["enum"]) != enum_set(&c["enum"]) {
        out.push(format!(
            "enum {:?} (official {:?})",
            enum_set(&c["enum"]),
            enum_set(&o["enum"])
        ));
    }
    for (k, name) in [
        ("minimum", "min"),
        ("maximum", "max"),
        ("maxLength", "maxlen"),
    ] {
        if num(&o[k]) != num(&c[k]) {
            out.push(format!(
                "{name} {:?} (official {:?})",
                num(&c[k]),
                num(&o[k])
            ));
        }
    }
    if o["requires"].as_str() != c["requires"].as_str() {
        out.push(format!(
            "requires {} (official {})",
            c["requires"], o["requires"]
        ));
    }
    match (&o["format"], &o["pattern"]) {
        (Value::String(f), _) if c["format"].as_str() != Some(f) => {
            out.push(format!("format {} (official {f})", c["format"]))
        }
        (Value::Object(sub), _) => match c["format"].as_str().and_then(schema::property_format) {
            Some((keys, _)) => {
                let mine: BTreeSet<&str> = keys.into_iter().collect();
                let theirs: BTreeSet<&str> = sub.keys().map(String::as_str).collect();
                if mine != theirs {
                    out.push(format!(
                        "property string keys {mine:?} (official {theirs:?})"
                    ));
                }
            }
            None => out.push("the official format is a property string".into()),
        },
        (Value::Null, Value::Null) if !c["format"].is_null() => {
            out.push(format!("format {} (official: none)", c["format"]))
        }
        (Value::Null, Value::String(p)) => {
            if c["format"].is_null() {
                out.push(format!("no format for the official pattern {p}"));
            }
            for v in PROBES {
                let (want, got) = (
                    official.check_value(o, v).is_ok(),
                    compact.check_value(c, v).is_ok(),
                );
                if want != got {
                    out.push(format!(
                        "format {} takes {v:?}: {got}, the official pattern {p}: {want}",
                        c["format"]
                    ));
                }
            }
        }
        _ => {}
    }
    out
}

#[test]
fn the_compact_description_agrees_with_the_official_schema() {
    if !require(&PVE_SCHEMA) {
        return;
    }
    let mut drift = Vec::new();
    for (file, pbs) in [("pve-apidata.json", false), ("pbs-apidata.json", true)] {
        let official = schema::official(file).expect("probed above");
        let compact = schema::compact(pbs);
        for (method, tpl, c) in compact.endpoints() {
            let at = format!("{file}: {method} {tpl}");
            let Some(o) = official.info(&method, &tpl) else {
                drift.push(format!("{at}: not in the official schema"));
                continue;
            };
            if let Some(r) = c["returns"]["type"].as_str() {
                if o["returns"]["type"].as_str() != Some(r) {
                    drift.push(format!(
                        "{at}: returns {r} (official {})",
                        o["returns"]["type"]
                    ));
                }
            }
            let vars: BTreeSet<&str> = tpl
                .split('/')
                .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                .collect();
            let (op, cp) = (
                &o["parameters"]["properties"],
                &c["parameters"]["properties"],
            );
            for (name, od) in op.as_object().into_iter().flatten() {
                if !vars.contains(name.as_str()) && !is_true(&od["optional"]) && cp[name].is_null()
                {
                    drift.push(format!(
                        "{at}: the required parameter {name} is not described"
                    ));
                }
            }
            for (name, cd) in cp.as_object().into_iter().flatten() {
                if vars.contains(name.as_str()) {
                    continue;
                }
                match op.get(name) {
                    None => drift.push(format!("{at}: {name} is not an official parameter")),
                    Some(od) => {
                        for d in param_drift(&official, od, &compact, cd) {
                            drift.push(format!("{at}: {name}: {d}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        drift.is_empty(),
        "tests/integration/pve/endpoints.json disagrees with the official schema:\n{}",
        drift.join("\n")
    );
}

#[test]
fn the_compact_description_names_only_formats_the_validator_checks() {
    for pbs in [false, true] {
        for (method, tpl, info) in schema::compact(pbs).endpoints() {
            for (name, d) in info["parameters"]["properties"]
                .as_object()
                .into_iter()
                .flatten()
            {
                if let Some(f) = d["format"].as_str() {
                    let base = f.strip_suffix("-list").unwrap_or(f);
                    assert!(
                        FORMATS.contains(&base),
                        "{method} {tpl}: {name}: unknown format {f}"
                    );
                }
            }
        }
    }
}

/// A request path as written in the client: `/nodes/{}/vzdump` (from the
/// root) or `{}/snapshot` (after a guest's or task's path).
struct Written {
    at: String,
    path: String,
    method: Option<&'static str>,
}

/// Request paths in `src/pve/` (test modules left out), each with the HTTP
/// method named nearest to it within three lines (or in the next eight when
/// the path is bound by `let`), if any.
fn written_paths() -> Vec<Written> {
    let lit = regex::Regex::new(r#""((?:\{[a-z_]*\})?(?:/[A-Za-z0-9_.{}\-]+)+)""#).unwrap();
    let method =
        regex::Regex::new(r"Method::(Get|Post|Put|Delete)\b|self\.(get)\(|\.(post)\(").unwrap();
    let roots = [
        "access", "admin", "cluster", "nodes", "pools", "storage", "version",
    ];
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/pve");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let text = text.split("#[cfg(test)]").next().unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let methods: Vec<(usize, &'static str)> = lines
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                method.captures_iter(l).map(move |c| {
                    let m = c.iter().skip(1).flatten().next().unwrap().as_str();
                    (
                        i,
                        match m.to_ascii_lowercase().as_str() {
                            "get" => "GET",
                            "post" => "POST",
                            "put" => "PUT",
                            _ => "DELETE",
                        },
                    )
                })
            })
            .collect();
        for (i, l) in lines.iter().enumerate() {
            if l.trim_start().starts_with("//") {
                continue;
            }
            for c in lit.captures_iter(l) {
                let path = c[1].to_string();
                let first = path
                    .trim_start_matches(|c| c != '/')
                    .split('/')
                    .nth(1)
                    .unwrap_or("");
                if !path.starts_with('{') && !roots.contains(&first) {
                    continue;
                }
                // `let path = format!(..)` is used by a call a few lines on.
                let bound = l.contains("let ") || (i > 0 && lines[i - 1].contains("let "));
                let method = methods
                    .iter()
                    .filter(|(j, _)| match bound {
                        true => (i.saturating_sub(1)..=i + 8).contains(j),
                        false => j.abs_diff(i) <= 3,
                    })
                    .min_by_key(|(j, _)| (j.abs_diff(i), *j > i))
                    .map(|(_, m)| *m);
                out.push(Written {
                    at: format!("{}:{}", file.file_name().unwrap().to_string_lossy(), i + 1),
                    path,
                    method,
                });
            }
        }
    }
    out
}

/// Whether a written path can be this endpoint template (`{}` or `{x}`
/// stands for any one segment; a leading one for a path prefix).
fn fits(written: &str, template: &str) -> bool {
    let w: Vec<&str> = written.split('/').collect();
    let t: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let (anchored, w) = if w[0].is_empty() {
        (true, &w[1..])
    } else {
        (false, &w[1..])
    };
    if w.len() > t.len() || (anchored && w.len() != t.len()) {
        return false;
    }
    let tail = &t[t.len() - w.len()..];
    w.iter()
        .zip(tail)
        .all(|(w, t)| w.starts_with('{') || t.starts_with('{') || w == t)
}

#[test]
fn every_request_the_client_writes_is_described() {
    let written = written_paths();
    assert!(
        written.len() >= 20,
        "the scan of src/pve/ found too little: {}",
        written.len()
    );
    let mut all: Vec<(String, String)> = Vec::new();
    for pbs in [false, true] {
        for (m, t, _) in schema::compact(pbs).endpoints() {
            all.push((m, t));
        }
    }
    let mut missing = Vec::new();
    for w in &written {
        let fitting: Vec<&(String, String)> =
            all.iter().filter(|(_, t)| fits(&w.path, t)).collect();
        // A task's base path (`/nodes/{}/tasks/{}`) is only ever extended.
        let base = fitting.is_empty()
            && all
                .iter()
                .any(|(_, t)| fits(&format!("{}/{{}}", w.path), t) && w.path.starts_with('/'));
        let ok = match w.method {
            _ if base => true,
            Some(m) => fitting.iter().any(|(fm, _)| fm == m),
            None => !fitting.is_empty(),
        };
        if !ok {
            missing.push(format!("{}: {} {}", w.at, w.method.unwrap_or("?"), w.path));
        }
    }
    assert!(
        missing.is_empty(),
        "requests in src/pve/ that tests/integration/pve/endpoints.json does not describe:\n{}",
        missing.join("\n")
    );
    let unused: Vec<String> = all
        .iter()
        .filter(|(_, t)| !written.iter().any(|w| fits(&w.path, t)))
        .map(|(m, t)| format!("{m} {t}"))
        .collect();
    assert!(
        unused.is_empty(),
        "described but never written in src/pve/: {unused:?}"
    );
}
