//! `restore ID --volumes`: put the named volumes a backup captured back
//! under the engine's names.
//!
//! 1. Every volume is checked first: one that exists is refused unless
//!    `force` (nothing is written then).
//! 2. The archive is extracted once, safely and checksum-verified, into a
//!    private staging directory beside it (`.restore-volumes-<pid>`; those
//!    of killed restores are removed first).
//! 3. Per volume: created when missing, with the labels it had (Compose's
//!    `com.docker.compose.project` / `com.docker.compose.volume`, so
//!    `docker-compose up` adopts it); the containers using it that run are
//!    stopped (with a hold record, see [`super::hold`]); its mountpoint's
//!    contents are replaced by the archived ones (owner, mode, mtime and
//!    symlinks kept); the containers are started again, also on failure.
//!
//! Writing goes through the volume's mountpoint (`docker volume inspect`
//! Mountpoint): the engine must run on this host, and we as root.

use super::engine;
use super::hold::{self, Mode, Target};
use crate::archive::{self, CapturedVolume, ExtractOptions, Manifest};
use crate::error::{Error, Result};
use crate::state::Store;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What happened to one volume.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VolumeRestored {
    pub name: String,
    pub created: bool,
    pub mountpoint: String,
    /// Containers stopped while it was written, and started again.
    pub stopped: Vec<String>,
}

/// The volumes a manifest captured, or a usage error naming the archive.
pub fn captured(archive: &Path, manifest: &Manifest) -> Result<Vec<CapturedVolume>> {
    let vols = manifest
        .capture
        .as_ref()
        .map(|c| c.volumes.clone())
        .unwrap_or_default();
    if vols.is_empty() {
        return Err(Error::Usage(format!(
            "{}: the backup captured no Docker volumes",
            archive.display()
        )));
    }
    Ok(vols)
}

/// Restore every captured volume of `archive` (see the module docs).
pub fn restore_volumes(
    archive_path: &Path,
    manifest: &Manifest,
    opts: &ExtractOptions,
    force: bool,
    store: Option<&Store>,
) -> Result<Vec<VolumeRestored>> {
    let vols = captured(archive_path, manifest)?;
    let mut existing = Vec::new();
    for v in &vols {
        if !engine::valid_name(&v.name) {
            return Err(Error::UnsafeArchive {
                path: archive_path.to_path_buf(),
                message: format!("invalid volume name {:?} in the manifest", v.name),
                source: None,
            });
        }
        if engine::inspect_volume(&v.name)?.is_some() {
            existing.push(v.name.clone());
        }
    }
    if !existing.is_empty() && !force {
        return Err(Error::Usage(format!(
            "volume(s) {} exist; --force replaces their contents with the backup's",
            existing.join(", ")
        )));
    }
    let dir = archive_path.parent().unwrap_or(Path::new("."));
    remove_stale_staging(dir);
    let staging = dir.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    let result = (|| {
        archive::extract(archive_path, &staging, opts)?;
        let mut out = Vec::new();
        for v in &vols {
            out.push(one(v, &staging, store)?);
        }
        Ok(out)
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

/// The staging dir of a volume restore, beside the archive:
/// `.restore-volumes-<pid>`.
const STAGING_PREFIX: &str = ".restore-volumes-";

/// Remove what volume restores killed before they finished (SIGKILL, power
/// loss) left beside the archives in `dir`: their staging dirs
/// (`.restore-volumes-<pid>`) and the archive's own staging of them
/// (`..restore-volumes-<pid>.restore-tmp-…`), for a pid no process has any
/// more. Never follows a symlink; what cannot be removed is a warning.
fn remove_stale_staging(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name
            .strip_prefix(STAGING_PREFIX)
            .or_else(|| name.strip_prefix(&format!(".{STAGING_PREFIX}")))
        else {
            continue;
        };
        let pid = rest.split('.').next().unwrap_or("");
        let Ok(pid) = pid.parse::<u32>() else {
            continue;
        };
        if pid == me
            || Path::new(&format!("/proc/{pid}")).exists()
            || !e.file_type().is_ok_and(|t| t.is_dir())
        {
            continue;
        }
        let p = e.path();
        match fs::remove_dir_all(&p) {
            Ok(()) => tracing::info!(
                "removed the staging dir of an interrupted volume restore: {}",
                p.display()
            ),
            Err(err) => tracing::warn!(
                "could not remove the staging dir of an interrupted volume restore {}: {err}",
                p.display()
            ),
        }
    }
}

fn one(v: &CapturedVolume, staging: &Path, store: Option<&Store>) -> Result<VolumeRestored> {
    let src = staging.join(&v.path);
    if !src.is_dir() {
        return Err(Error::UnsafeArchive {
            path: staging.to_path_buf(),
            message: format!("volume {}: {} is not in the archive", v.name, v.path),
            source: None,
        });
    }
    let created = match engine::inspect_volume(&v.name)? {
        Some(_) => false,
        None => {
            engine::create_volume(&v.name, &v.labels)?;
            true
        }
    };
    let info = engine::inspect_volume(&v.name)?.ok_or_else(|| Error::Command {
        program: "docker".into(),
        message: format!("volume {} vanished", v.name),
    })?;
    let mountpoint = PathBuf::from(info["Mountpoint"].as_str().unwrap_or(""));
    if !mountpoint.is_absolute() || !mountpoint.is_dir() {
        return Err(Error::Command {
            program: "docker".into(),
            message: format!(
                "volume {}: its mountpoint {} is not a directory on this host",
                v.name,
                mountpoint.display()
            ),
        });
    }
    let users: Vec<Target> = engine::containers(&serde_json::json!({ "volume": [&v.name] }))?
        .iter()
        .map(engine::row_name)
        .filter(|n| !n.is_empty())
        .map(Target::Container)
        .collect();
    let service = format!("restore-volume.{}", v.name);
    let held = hold::hold(store, None, &service, Mode::Stop, &users, &hold::System)?;
    let written = replace_contents(&src, &mountpoint);
    let started = hold::release(store, &held, &hold::System);
    written?;
    started?;
    Ok(VolumeRestored {
        name: v.name.clone(),
        created,
        mountpoint: mountpoint.display().to_string(),
        stopped: held
            .targets
            .iter()
            .map(|t| match t {
                Target::Container(n) | Target::Unit(n) => n.clone(),
            })
            .collect(),
    })
}

/// Empty `dst` (not following symlinks), then copy `src`'s tree into it,
/// and give `dst` itself `src`'s owner and mode.
pub(crate) fn replace_contents(src: &Path, dst: &Path) -> Result<()> {
    for e in fs::read_dir(dst).map_err(|e| Error::io(dst, e))? {
        let p = e.map_err(|e| Error::io(dst, e))?.path();
        let meta = fs::symlink_metadata(&p).map_err(|e| Error::io(&p, e))?;
        if meta.is_dir() {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        }
        .map_err(|e| Error::io(&p, e))?;
    }
    copy_tree(src, dst)?;
    copy_meta(src, dst)
}

fn copy_meta(src: &Path, dst: &Path) -> Result<()> {
    let m = fs::symlink_metadata(src).map_err(|e| Error::io(src, e))?;
    std::os::unix::fs::lchown(dst, Some(m.uid()), Some(m.gid())).map_err(|e| Error::io(dst, e))?;
    if !m.file_type().is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))
            .map_err(|e| Error::io(dst, e))?;
        if let Ok(mtime) = m.modified() {
            let f = fs::File::open(dst).map_err(|e| Error::io(dst, e))?;
            let _ = f.set_modified(mtime);
        }
    }
    Ok(())
}

/// Copy the entries of `src` into the existing directory `dst`.
fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(src)
        .map_err(|e| Error::io(src, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io(src, e))?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let s = e.path();
        let d = dst.join(e.file_name());
        let m = fs::symlink_metadata(&s).map_err(|e| Error::io(&s, e))?;
        let ft = m.file_type();
        if ft.is_dir() {
            fs::create_dir(&d).map_err(|e| Error::io(&d, e))?;
            copy_tree(&s, &d)?;
            copy_meta(&s, &d)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&s).map_err(|e| Error::io(&s, e))?;
            std::os::unix::fs::symlink(&target, &d).map_err(|e| Error::io(&d, e))?;
            copy_meta(&s, &d)?;
        } else if ft.is_file() {
            fs::copy(&s, &d).map_err(|e| Error::io(&d, e))?;
            copy_meta(&s, &d)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_dirs_of_dead_restores_go_and_others_stay() {
        let d = tempfile::tempdir().unwrap();
        // A pid no process has: past the kernel's pid_max.
        let dead = 4_194_304 + 17;
        let me = std::process::id();
        let stale = d.path().join(format!(".restore-volumes-{dead}"));
        fs::create_dir_all(stale.join("vol/data")).unwrap();
        let stale_inner = d.path().join(format!(
            "..restore-volumes-{dead}.restore-tmp-{dead}-00000000abcd"
        ));
        fs::create_dir_all(&stale_inner).unwrap();
        let live = d.path().join(format!(".restore-volumes-{me}"));
        fs::create_dir(&live).unwrap();
        let link = d.path().join(".restore-volumes-4194399");
        std::os::unix::fs::symlink(&live, &link).unwrap();
        let file = d.path().join(".restore-volumes-4194398");
        fs::write(&file, "x").unwrap();
        let other = d.path().join("web_20261130-100000.tar.zst");
        fs::write(&other, "archive").unwrap();
        remove_stale_staging(d.path());
        assert!(!stale.exists() && !stale_inner.exists());
        assert!(live.is_dir() && file.is_file() && other.is_file());
        assert!(fs::symlink_metadata(&link).is_ok(), "the symlink stays");
    }

    #[test]
    fn contents_are_replaced_with_modes_and_links_kept() {
        let d = tempfile::tempdir().unwrap();
        let (src, dst) = (d.path().join("src"), d.path().join("dst"));
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/a"), b"new").unwrap();
        fs::set_permissions(src.join("sub/a"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/a", src.join("link")).unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o750)).unwrap();
        fs::create_dir_all(dst.join("old")).unwrap();
        fs::write(dst.join("old/x"), b"old").unwrap();
        replace_contents(&src, &dst).unwrap();
        assert!(!dst.join("old").exists());
        assert_eq!(fs::read(dst.join("sub/a")).unwrap(), b"new");
        assert_eq!(
            fs::metadata(dst.join("sub/a")).unwrap().mode() & 0o777,
            0o640
        );
        assert_eq!(fs::read_link(dst.join("link")).unwrap(), Path::new("sub/a"));
        assert_eq!(fs::metadata(&dst).unwrap().mode() & 0o777, 0o750);
    }
}
