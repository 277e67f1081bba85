//! The Rhai adapter of [`crate::archive`]: `archive::create`, `verify`,
//! `verify_checksum`, `list`, `extract`.

use super::{dry_run, from_map, service_of, strings, to_dyn, to_rhai, RhaiResult};
use crate::archive::{self, CreateRequest, ExtractOptions, ManifestMeta};
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Map, Module, NativeCallContext};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One of `archive::create`'s sources: a path, or `#{path, optional}` (the
/// form `svc.backup_paths` entries have).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SourceArg {
    Path(PathBuf),
    Entry {
        path: PathBuf,
        #[serde(default)]
        optional: bool,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateArgs {
    sources: Vec<SourceArg>,
    service: Option<String>,
    dest_dir: Option<PathBuf>,
    file_name: Option<String>,
    level: Option<i32>,
    threads: Option<u32>,
    #[serde(default)]
    exclude: Vec<String>,
    kind: Option<String>,
    /// What a docker / compose / systemd backup captured (manifest).
    capture: Option<archive::Capture>,
    /// Files made by the script: archive path -> contents.
    #[serde(default)]
    generated: std::collections::BTreeMap<String, String>,
}

fn create(h: &Host, ctx: &NativeCallContext, opts: Map) -> RhaiResult<Dynamic> {
    let args: CreateArgs = from_map(opts, "archive::create options")?;
    let service = args
        .service
        .or_else(|| service_of(ctx))
        .unwrap_or_else(|| "archive".into());
    let now = chrono::Utc::now().timestamp();
    let backup = &h.config.global.backup;
    let dest_dir = args.dest_dir.unwrap_or_else(|| h.backup_dir(&service));
    let file_name = with_extension(
        args.file_name
            .unwrap_or_else(|| format!("{service}_{}.tar.zst", super::time::stamp(now))),
        backup.zstd(),
    );
    let path = dest_dir.join(&file_name);
    // Optional: marked so here, or in the service's own backup_paths.
    let configured: Vec<&PathBuf> = h
        .config
        .service(&service)
        .map(|s| {
            s.backup_paths
                .iter()
                .filter(|p| p.optional)
                .map(|p| &p.path)
                .collect()
        })
        .unwrap_or_default();
    let mut sources: Vec<PathBuf> = Vec::new();
    let mut optional: Vec<PathBuf> = Vec::new();
    for s in args.sources {
        let (p, opt) = match s {
            SourceArg::Path(p) => (p, false),
            SourceArg::Entry { path, optional } => (path, optional),
        };
        if opt || configured.contains(&&p) {
            optional.push(p.clone());
        }
        sources.push(p);
    }
    let shown: Vec<String> = sources.iter().map(|p| p.display().to_string()).collect();
    if dry_run(
        h,
        ctx,
        &format!(
            "create archive {} from [{}]",
            path.display(),
            shown.join(", ")
        ),
    ) {
        for s in &sources {
            if s.symlink_metadata().is_err() {
                let what = if optional.contains(s) {
                    "it would be skipped (optional)"
                } else {
                    "the backup would fail (mark it optional if it may be absent)"
                };
                h.event(
                    tracing::Level::WARN,
                    Some(&service),
                    &format!("{}: does not exist; {what}", s.display()),
                );
            }
        }
        let mut m = Map::new();
        m.insert("dry_run".into(), true.into());
        m.insert("path".into(), path.display().to_string().into());
        m.insert("service".into(), service.into());
        m.insert("created_at".into(), Dynamic::from(now));
        return Ok(Dynamic::from_map(m));
    }
    let generated: Vec<(String, Vec<u8>)> = args
        .generated
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    let req = CreateRequest {
        generated: &generated,
        sources: &sources,
        optional: &optional,
        dest_dir: &dest_dir,
        file_name: &file_name,
        level: args.level.unwrap_or(backup.compression_level),
        compress: backup.zstd(),
        threads: args.threads.unwrap_or(backup.threads),
        exclude: &args.exclude,
        meta: ManifestMeta {
            service: service.clone(),
            kind: args.kind.unwrap_or_else(|| "archive".into()),
            created_at: now,
            hostname: h.hostname.clone(),
            capture: args.capture,
        },
        cancel: Some(&h.watch.cancel),
    };
    let info = archive::create(&req).map_err(|e| to_rhai(e, ctx))?;
    for w in &info.warnings {
        h.event(tracing::Level::WARN, Some(&service), w);
    }
    if !info.unreadable.is_empty() {
        // The run ends as a warning (exit 3): this backup is not whole.
        h.partial
            .fetch_add(info.unreadable.len(), std::sync::atomic::Ordering::Relaxed);
    }
    h.event(
        tracing::Level::INFO,
        Some(&service),
        &format!(
            "archive {} written: {} entries, {} bytes in, {} bytes out",
            info.path.display(),
            info.entries,
            info.bytes_in,
            info.size
        ),
    );
    let mut v = serde_json::to_value(&info.manifest).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        // Per-file entries stay in the manifest sidecar: scripts get counts.
        m.remove("files");
        m.insert("path".into(), info.path.display().to_string().into());
        m.insert("warnings".into(), serde_json::json!(info.warnings));
        m.insert("unreadable".into(), serde_json::json!(info.unreadable));
    }
    to_dyn(&v)
}

/// `NAME.tar.zst` with compression, `NAME.tar` without
/// (`global.backup.compression`), whatever extension the script gave.
fn with_extension(name: String, compress: bool) -> String {
    match (compress, name.strip_suffix(".tar.zst")) {
        (true, Some(_)) => name,
        (false, Some(stem)) => format!("{stem}.tar"),
        (true, None) => match name.strip_suffix(".tar") {
            Some(stem) => format!("{stem}.tar.zst"),
            None => name,
        },
        (false, None) => name,
    }
}

fn verify_map(info: &archive::VerifyInfo) -> Map {
    let mut m = Map::new();
    m.insert("path".into(), info.path.display().to_string().into());
    m.insert("sha256".into(), info.sha256.clone().into());
    m.insert("size".into(), Dynamic::from(info.size as i64));
    m.insert("entries".into(), Dynamic::from(info.entries as i64));
    m.insert("bytes_out".into(), Dynamic::from(info.bytes_out as i64));
    m.insert(
        "verified_at".into(),
        Dynamic::from(chrono::Utc::now().timestamp()),
    );
    m
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let v = |name: &str| FuncRegistration::new(name).with_volatility(true);
    let h = host.clone();
    v("create").set_into_module(&mut m, move |ctx: NativeCallContext, opts: Map| {
        create(&h, &ctx, opts)
    });
    v("verify").set_into_module(
        &mut m,
        |ctx: NativeCallContext, path: &str| -> RhaiResult<Map> {
            archive::verify(Path::new(path), None)
                .map(|i| verify_map(&i))
                .map_err(|e| to_rhai(e, &ctx))
        },
    );
    v("verify").set_into_module(
        &mut m,
        |ctx: NativeCallContext, path: &str, sha256: &str| -> RhaiResult<Map> {
            archive::verify(Path::new(path), Some(sha256))
                .map(|i| verify_map(&i))
                .map_err(|e| to_rhai(e, &ctx))
        },
    );
    let h = host.clone();
    v("verify_as_configured").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, path: &str, sha256: &str| -> RhaiResult<Map> {
            use crate::config::VerifyMode;
            let mode = h.config.global.backup.verify_mode();
            let info = match mode {
                VerifyMode::Checksum => archive::verify_checksum(Path::new(path), Some(sha256)),
                VerifyMode::Full => archive::verify(Path::new(path), Some(sha256)),
            };
            info.map(|i| verify_map(&i)).map_err(|e| to_rhai(e, &ctx))
        },
    );
    v("verify_checksum").set_into_module(
        &mut m,
        |ctx: NativeCallContext, path: &str| -> RhaiResult<Map> {
            archive::verify_checksum(Path::new(path), None)
                .map(|i| verify_map(&i))
                .map_err(|e| to_rhai(e, &ctx))
        },
    );
    v("list").set_into_module(&mut m, |ctx: NativeCallContext, path: &str| -> RhaiResult<Array> {
        let entries = archive::list(Path::new(path)).map_err(|e| to_rhai(e, &ctx))?;
        entries
            .iter()
            .map(|e| {
                to_dyn(&serde_json::json!({"path": e.path, "kind": e.kind, "size": e.size, "mode": e.mode, "mtime": e.mtime, "link_target": e.link_target}))
            })
            .collect()
    });
    let h = host.clone();
    v("extract").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, path: &str, target: &str| -> RhaiResult<Map> {
            let mut out = Map::new();
            out.insert("target".into(), target.into());
            if dry_run(&h, &ctx, &format!("extract {path} into {target}")) {
                return Ok(out);
            }
            let info = archive::extract(
                Path::new(path),
                Path::new(target),
                &ExtractOptions::default(),
            )
            .map_err(|e| to_rhai(e, &ctx))?;
            out.insert("entries".into(), Dynamic::from(info.entries as i64));
            out.insert("bytes".into(), Dynamic::from(info.bytes as i64));
            Ok(out)
        },
    );
    let _ = strings;
    m
}
