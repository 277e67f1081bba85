//! File system basics for scripts. Reads are bounded by the engine's
//! limits (a file's text by the string limit, a listing by the array
//! limit); writes are atomic (temp file, fsync, rename, fsync dir), honour
//! dry-run, and stay under `global.scripts.allow_paths` when it is set.

use super::{dry_run, service_of, throw, to_rhai, RhaiResult};
use crate::error::{Error, Result};
use crate::files::write_atomic;
use crate::script::Host;
use rhai::{Array, Dynamic, FuncRegistration, Module, NativeCallContext};
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// The text of a file of at most `max` bytes. The size is checked while
/// reading, so a file that grows, or a device or `/proc` file that reports
/// no size, cannot exceed it.
fn read_text(path: &Path, max: usize) -> Result<String> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if buf.len() > max {
        return Err(Error::Other(format!(
            "{}: larger than {max} bytes (the scripts' string limit); fs::read_text is for small files",
            path.display()
        )));
    }
    String::from_utf8(buf).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        )
    })
}

/// The sorted names in a directory of at most `max` entries.
fn list(dir: &Path, max: usize) -> Result<Array> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let Ok(e) = e else { continue };
        if names.len() == max {
            return Err(Error::Other(format!(
                "{}: more than {max} entries (the scripts' array limit)",
                dir.display()
            )));
        }
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names.into_iter().map(Dynamic::from).collect())
}

/// Where a write to `path` lands: the path made absolute, every directory
/// on the way resolved (symlinks and `..`; a part that does not exist yet
/// is taken as written). The last part is not followed: a write replaces
/// it, a removal removes it.
fn write_target(path: &Path) -> std::io::Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let parts: Vec<Component> = abs.components().collect();
    let mut out = PathBuf::from("/");
    for (i, c) in parts.iter().enumerate() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                let next = out.join(name);
                out = if i + 1 < parts.len() {
                    std::fs::canonicalize(&next).unwrap_or(next)
                } else {
                    next
                };
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Refuse a write outside `global.scripts.allow_paths` (when it is set).
fn check_write(host: &Host, ctx: &NativeCallContext, what: &str, p: &str) -> RhaiResult<()> {
    let Some(allowed) = &host.config.global.scripts.allow_paths else {
        return Ok(());
    };
    let target = write_target(Path::new(p)).map_err(|e| to_rhai(Error::io(p, e), ctx))?;
    let inside = allowed.iter().any(|dir| {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        target.starts_with(dir)
    });
    if inside {
        return Ok(());
    }
    let dirs = allowed
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(throw(
        "permission_denied",
        format!(
            "{what}: {} is outside global.scripts.allow_paths ({dirs})",
            target.display()
        ),
        service_of(ctx).as_deref(),
    ))
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
    let max = host.limits.max_string_size;
    v("read_text").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, p: &str| -> RhaiResult<String> {
            read_text(Path::new(p), max).map_err(|e| to_rhai(e, &ctx))
        },
    );
    let max = host.limits.max_array_size;
    v("list").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, p: &str| -> RhaiResult<Array> {
            list(Path::new(p), max).map_err(|e| to_rhai(e, &ctx))
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
            check_write(&h, &ctx, "fs::write_text", p)?;
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
            check_write(&h, &ctx, "fs::mkdir", p)?;
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
            check_write(&h, &ctx, "fs::remove", p)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_target_resolves_symlinked_and_dotted_parents() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let inside = root.join("inside");
        let outside = root.join("outside");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, inside.join("link")).unwrap();
        let t = |p: PathBuf| write_target(&p).unwrap();
        assert_eq!(t(inside.join("a.txt")), inside.join("a.txt"));
        assert_eq!(t(inside.join("link/a.txt")), outside.join("a.txt"));
        assert_eq!(t(inside.join("../outside/a.txt")), outside.join("a.txt"));
        assert_eq!(t(inside.join("new/dir/../a.txt")), inside.join("new/a.txt"));
        // The last part is not followed: writing replaces the link itself.
        assert_eq!(t(inside.join("link")), inside.join("link"));
    }

    #[test]
    fn reads_are_bounded_while_reading() {
        let e = read_text(Path::new("/dev/zero"), 1000).unwrap_err();
        assert!(e.to_string().contains("larger than 1000 bytes"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            std::fs::write(dir.path().join(format!("f{i}")), "").unwrap();
        }
        assert_eq!(list(dir.path(), 3).unwrap().len(), 3);
        assert!(list(dir.path(), 2).is_err());
    }
}
