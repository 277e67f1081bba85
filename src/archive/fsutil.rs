//! Small filesystem helpers: our temp names, atomic publication, fsync of a
//! directory, rename without replacing, free space.

use crate::error::{Error, Result};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The infix of our temp files: `.NAME.tmp-<pid>-<rand>`.
pub(super) const TMP_INFIX: &str = ".tmp-";
/// The infix of restore staging dirs: `.NAME.restore-tmp-<pid>-<rand>`.
pub(super) const RESTORE_INFIX: &str = ".restore-tmp-";

/// 12 hex digits, different for every call (per-process random keys plus a
/// counter and the clock).
pub(super) fn rand_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// `.NAME<infix><pid>-<rand>`
pub(super) fn temp_name(name: &OsStr, infix: &str) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(format!("{infix}{}-{}", std::process::id(), rand_suffix()));
    s
}

/// Parse `.NAME<infix><pid>-<rand>` into (NAME, pid).
pub(super) fn parse_temp_name<'a>(name: &'a [u8], infix: &str) -> Option<(&'a [u8], u32)> {
    let rest = name.strip_prefix(b".")?;
    let infix = infix.as_bytes();
    let pos = rest.windows(infix.len()).rposition(|w| w == infix)?;
    let (base, tail) = (&rest[..pos], &rest[pos + infix.len()..]);
    let dash = tail.iter().position(|&b| b == b'-')?;
    let (pid, rand) = (&tail[..dash], &tail[dash + 1..]);
    if base.is_empty()
        || pid.is_empty()
        || !pid.iter().all(u8::is_ascii_digit)
        || rand.is_empty()
        || !rand.iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    let pid = std::str::from_utf8(pid).ok()?.parse().ok()?;
    Some((base, pid))
}

/// Whether a process with this pid exists (EPERM means it exists).
pub(super) fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A file that is removed when dropped unless `keep` was called.
pub(super) struct TempGuard {
    pub path: PathBuf,
    armed: bool,
}

impl TempGuard {
    pub fn keep(&mut self) {
        self.armed = false;
    }
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Create `dir/.NAME.tmp-<pid>-<rand>` exclusively, mode 0600.
pub(super) fn create_temp(dir: &Path, name: &OsStr) -> Result<(File, TempGuard)> {
    loop {
        let path = dir.join(temp_name(name, TMP_INFIX));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => return Ok((f, TempGuard { path, armed: true })),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

/// Write `bytes` to a fresh temp file next to `dir/name`, fsynced; the caller
/// renames it into place with [`publish`].
pub(super) fn stage_bytes(dir: &Path, name: &OsStr, bytes: &[u8]) -> Result<TempGuard> {
    let (mut f, guard) = create_temp(dir, name)?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(&guard.path, e))?;
    Ok(guard)
}

/// Rename a staged temp file to its final path (replacing), disarming it.
pub(super) fn publish(guard: &mut TempGuard, to: &Path) -> Result<()> {
    std::fs::rename(&guard.path, to).map_err(|e| Error::io(to, e))?;
    guard.keep();
    Ok(())
}

/// Rename without replacing an existing `to` (renameat2 RENAME_NOREPLACE;
/// falls back to check-then-rename where the filesystem lacks it).
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let cf = cstr(from)?;
    let ct = cstr(to)?;
    // SAFETY: valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::ENOTSUP) => {
            if std::fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "already exists",
                ));
            }
            std::fs::rename(from, to)
        }
        _ => Err(err),
    }
}

pub(super) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

pub(super) fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Bytes available to an unprivileged user on the filesystem holding `path`
/// (statvfs f_bavail × f_frsize).
pub(super) fn free_space(path: &Path) -> io::Result<u64> {
    let c = cstr(path)?;
    // SAFETY: statvfs fills the zeroed struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Set atime and mtime of `path` without following a final symlink; the
/// atime is left alone.
pub(super) fn set_mtime_nofollow(path: &Path, mtime: i64) -> io::Result<()> {
    let c = cstr(path)?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid path and times array of two.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Remove a tree we created even if modes were already applied to it
/// (directories without write or search permission).
pub(super) fn force_remove_dir_all(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    fn open_up(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::symlink_metadata(p) {
            if m.is_dir() {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                if let Ok(rd) = std::fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    open_up(path);
    std::fs::remove_dir_all(path)
}
