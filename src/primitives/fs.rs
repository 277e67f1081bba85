//! File system basics for scripts. Reads are bounded; writes are atomic
//! (temp file, fsync, rename, fsync dir) and honour dry-run.

use super::{dry_run, throw, to_rhai, RhaiResult};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Module, NativeCallContext};
use std::path::Path;
use std::sync::Arc;

const MAX_READ: u64 = 16 << 20;

fn read_text(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_READ {
        return Err(Error::Other(format!(
            "{}: larger than {} bytes; fs::read_text is for small files",
            path.display(),
            MAX_READ
        )));
    }
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn list(dir: &Path) -> Result<Array> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names.into_iter().map(Dynamic::from).collect())
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let v = |name: &str| FuncRegistration::new(name).with_volatility(true);
    v("exists").set_into_module(&mut m, |p: &str| Path::new(p).symlink_metadata().is_ok());
    v("is_dir").set_into_module(&mut m, |p: &str| Path::new(p).is_dir());
    v("is_file").set_into_module(&mut m, |p: &str| Path::new(p).is_file());
    v("size").set_into_module(
        &mut m,
        |ctx: NativeCallContext, p: &str| -> RhaiResult<i64> {
            std::fs::metadata(p)
                .map(|m| m.len() as i64)
                .map_err(|e| to_rhai(Error::io(p, e), &ctx))
        },
    );
    v("mtime").set_into_module(
        &mut m,
        |ctx: NativeCallContext, p: &str| -> RhaiResult<i64> {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(p)
                .map(|m| m.mtime())
                .map_err(|e| to_rhai(Error::io(p, e), &ctx))
        },
    );
    v("read_text").set_into_module(
        &mut m,
        |ctx: NativeCallContext, p: &str| -> RhaiResult<String> {
            read_text(Path::new(p)).map_err(|e| to_rhai(e, &ctx))
        },
    );
    v("list").set_into_module(
        &mut m,
        |ctx: NativeCallContext, p: &str| -> RhaiResult<Array> {
            list(Path::new(p)).map_err(|e| to_rhai(e, &ctx))
        },
    );
    FuncRegistration::new("join").set_into_module(&mut m, |a: &str, b: &str| {
        Path::new(a).join(b).display().to_string()
    });
    FuncRegistration::new("basename").set_into_module(&mut m, |p: &str| {
        Path::new(p)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    FuncRegistration::new("dirname").set_into_module(&mut m, |p: &str| {
        Path::new(p)
            .parent()
            .map(|n| n.display().to_string())
            .unwrap_or_default()
    });
    let h = host.clone();
    v("write_text").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, p: &str, text: &str| -> RhaiResult<()> {
            if dry_run(&h, &ctx, &format!("write {} bytes to {p}", text.len())) {
                return Ok(());
            }
            write_atomic(Path::new(p), text.as_bytes(), 0o644).map_err(|e| to_rhai(e, &ctx))
        },
    );
    let h = host.clone();
    v("mkdir").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, p: &str| -> RhaiResult<()> {
            if Path::new(p).is_dir() || dry_run(&h, &ctx, &format!("create directory {p}")) {
                return Ok(());
            }
            std::fs::create_dir_all(p).map_err(|e| to_rhai(Error::io(p, e), &ctx))
        },
    );
    let h = host.clone();
    v("remove").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, p: &str| -> RhaiResult<()> {
            let path = Path::new(p);
            if path.is_dir() {
                return Err(throw(
                    "invalid_argument",
                    format!("fs::remove: {p} is a directory; only files are removed"),
                    None,
                ));
            }
            if dry_run(&h, &ctx, &format!("remove {p}")) {
                return Ok(());
            }
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(to_rhai(Error::io(p, e), &ctx))
                }
                _ => Ok(()),
            }
        },
    );
    m
}
