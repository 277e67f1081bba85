//! Safe extraction (docs/conventions.md, "Restoring archives safely").
//!
//! One streaming pass: a reader thread hashes the file while this thread
//! decodes and writes every entry into a fresh private staging directory
//! `<parent>/.<target name>.restore-tmp-<pid>-<rand>` (mode 0700). Only when
//! the whole archive was read, every entry passed the checks and the sha256
//! matched, is the staging directory moved into place; on any failure it is
//! removed, so nothing is ever written outside it. "Verify the checksum
//! before extracting" therefore holds for what becomes visible, in one pass.
//! A restore killed before the move leaves its staging directory behind:
//! the next restore into the same target removes every such directory whose
//! process is gone ([`remove_stale_staging`]), as a run does in the backup
//! dirs ([`super::cleanup_debris`]).
//!
//! Every entry is written by us with std::fs (never tar's `unpack`):
//! - paths: no absolute paths, no `..`; `.` and empty components dropped;
//! - parents: every parent component must be a directory we created in this
//!   extraction (tracked in memory), so nothing is ever written through a
//!   symlink from the archive; missing parents are created (0755 at the end);
//! - files: `O_CREAT|O_EXCL|O_NOFOLLOW` (an existing path = a duplicate);
//! - symlinks: target must be relative (absolute targets only with
//!   `allow_absolute_symlinks`, kept verbatim and never followed), and resolve inside the root
//!   lexically from the link's directory; `..` may only lead the target
//!   (`../../lib/x`, not `a/../..`), because after `a` was followed as a
//!   symlink a later `..` would be resolved physically by the kernel;
//! - hardlinks: target must be an already extracted regular file (lstat,
//!   parents checked as above);
//! - devices and fifos are refused; sparse and unknown types refused;
//! - modes lose setuid/setgid/sticky; ownership restored only as root;
//! - caps: entry count, total file bytes (default: free space of the target
//!   filesystem), decompressed bytes over `max_ratio` × compressed size
//!   (checked while decoding, so a bomb stops at the cap).

use super::fsutil;
use super::read::{self, bad, Logical};
use super::{expected_hash, ExtractInfo, ExtractOptions, BUF_SIZE};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// Decompression below this many bytes is never called a bomb, whatever the
/// ratio (a few KiB of zstd can legitimately hold a few MiB of zeros).
pub(super) const RATIO_FLOOR: u64 = 64 * 1024 * 1024;

struct DirState {
    explicit: bool,
    mode: u32,
    mtime: Option<i64>,
    owner: Option<(u32, u32)>,
}

struct Extractor<'a> {
    archive: &'a Path,
    root: PathBuf,
    dirs: HashMap<PathBuf, DirState>,
    entries: u64,
    bytes: u64,
    max_entries: u64,
    allow_absolute_symlinks: bool,
    max_bytes: u64,
    as_root: bool,
    buf: Vec<u8>,
    warnings: Vec<String>,
}

/// Split an archive path into normal components; refuse absolute paths and
/// `..`.
fn components<'p>(archive: &Path, p: &'p [u8]) -> Result<Vec<&'p [u8]>> {
    if p.first() == Some(&b'/') {
        return Err(bad(archive, format!("absolute path refused: {}", lossy(p))));
    }
    let mut out = Vec::new();
    for c in p.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(bad(
                    archive,
                    format!("path with '..' refused: {}", lossy(p)),
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn join(comps: &[&[u8]]) -> PathBuf {
    let mut p = PathBuf::new();
    for c in comps {
        p.push(OsStr::from_bytes(c));
    }
    p
}

impl Extractor<'_> {
    fn bad(&self, m: impl Into<String>) -> Error {
        bad(self.archive, m)
    }

    fn ioe(&self, rel: &Path, e: io::Error) -> Error {
        Error::io(self.root.join(rel), e)
    }

    /// Make sure every parent in `parents` is a directory we created.
    fn parents(&mut self, parents: &[&[u8]]) -> Result<()> {
        let mut cur = PathBuf::new();
        for c in parents {
            cur.push(OsStr::from_bytes(c));
            if self.dirs.contains_key(&cur) {
                continue;
            }
            match DirBuilder::new().mode(0o700).create(self.root.join(&cur)) {
                Ok(()) => {
                    self.dirs.insert(
                        cur.clone(),
                        DirState {
                            explicit: false,
                            mode: 0o755,
                            mtime: None,
                            owner: None,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(self.bad(format!(
                        "{} is not a directory (a file or symlink is in the way)",
                        cur.display()
                    )));
                }
                Err(e) => return Err(self.ioe(&cur, e)),
            }
        }
        Ok(())
    }

    fn entry<R: Read>(&mut self, data: &mut R, l: &Logical<'_>) -> Result<()> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(self.bad(format!("more than {} entries", self.max_entries)));
        }
        let comps = components(self.archive, l.path)?;
        let ty = l.header.entry_type().as_byte();
        if comps.is_empty() {
            // "./": the root itself.
            if ty == b'5' {
                return Ok(());
            }
            return Err(self.bad(format!("entry with an empty path: {:?}", lossy(l.path))));
        }
        let rel = join(&comps);
        let h = l.header;
        let mode = h
            .mode()
            .map_err(|e| self.bad(format!("{}: mode: {e}", rel.display())))?
            & 0o777;
        let mtime = h
            .mtime()
            .map_err(|e| self.bad(format!("{}: mtime: {e}", rel.display())))?
            as i64;
        let owner = if self.as_root {
            let uid = h
                .uid()
                .map_err(|e| self.bad(format!("{}: uid: {e}", rel.display())))?;
            let gid = h
                .gid()
                .map_err(|e| self.bad(format!("{}: gid: {e}", rel.display())))?;
            Some((uid as u32, gid as u32))
        } else {
            None
        };
        let (parent, _) = comps.split_at(comps.len() - 1);
        match ty {
            b'5' => {
                if let Some(st) = self.dirs.get_mut(&rel) {
                    if st.explicit {
                        return Err(self.bad(format!("duplicate path: {}", rel.display())));
                    }
                    *st = DirState {
                        explicit: true,
                        mode,
                        mtime: Some(mtime),
                        owner,
                    };
                    return Ok(());
                }
                self.parents(parent)?;
                match DirBuilder::new().mode(0o700).create(self.root.join(&rel)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(self.bad(format!("duplicate path: {}", rel.display())));
                    }
                    Err(e) => return Err(self.ioe(&rel, e)),
                }
                self.dirs.insert(
                    rel,
                    DirState {
                        explicit: true,
                        mode,
                        mtime: Some(mtime),
                        owner,
                    },
                );
                Ok(())
            }
            b'0' | 0 | b'7' => {
                if l.size > self.max_bytes.saturating_sub(self.bytes) {
                    return Err(self.bad(format!(
                        "needs more than {} bytes (max_bytes or free space of the target filesystem)",
                        self.max_bytes
                    )));
                }
                self.parents(parent)?;
                self.file(data, &rel, l.size, mode, mtime, owner)
            }
            b'2' => {
                let target = l.link.filter(|t| !t.is_empty()).ok_or_else(|| {
                    self.bad(format!("symlink without a target: {}", rel.display()))
                })?;
                self.check_symlink(&rel, parent.len(), target)?;
                self.parents(parent)?;
                let full = self.root.join(&rel);
                match std::os::unix::fs::symlink(OsStr::from_bytes(target), &full) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(self.bad(format!("duplicate path: {}", rel.display())));
                    }
                    Err(e) => return Err(self.ioe(&rel, e)),
                }
                if let Some((uid, gid)) = owner {
                    std::os::unix::fs::lchown(&full, Some(uid), Some(gid))
                        .map_err(|e| self.ioe(&rel, e))?;
                }
                fsutil::set_mtime_nofollow(&full, mtime).map_err(|e| self.ioe(&rel, e))?;
                Ok(())
            }
            b'1' => {
                let target = l.link.ok_or_else(|| {
                    self.bad(format!("hardlink without a target: {}", rel.display()))
                })?;
                let tcomps = components(self.archive, target).map_err(|_| {
                    self.bad(format!(
                        "hardlink {} to {} refused: outside the archive",
                        rel.display(),
                        lossy(target)
                    ))
                })?;
                let not_file = || {
                    self.bad(format!(
                        "hardlink {} to {} refused: not an extracted regular file",
                        rel.display(),
                        lossy(target)
                    ))
                };
                if tcomps.is_empty() {
                    return Err(not_file());
                }
                let mut cur = PathBuf::new();
                for c in &tcomps[..tcomps.len() - 1] {
                    cur.push(OsStr::from_bytes(c));
                    if !self.dirs.contains_key(&cur) {
                        return Err(not_file());
                    }
                }
                let trel = join(&tcomps);
                match fs::symlink_metadata(self.root.join(&trel)) {
                    Ok(m) if m.file_type().is_file() => {}
                    _ => return Err(not_file()),
                }
                self.parents(parent)?;
                match fs::hard_link(self.root.join(&trel), self.root.join(&rel)) {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        Err(self.bad(format!("duplicate path: {}", rel.display())))
                    }
                    Err(e) => Err(self.ioe(&rel, e)),
                }
            }
            b'3' => Err(self.bad(format!("character device refused: {}", rel.display()))),
            b'4' => Err(self.bad(format!("block device refused: {}", rel.display()))),
            b'6' => Err(self.bad(format!("fifo refused: {}", rel.display()))),
            b'S' => Err(self.bad(format!(
                "GNU sparse entries are not supported: {}",
                rel.display()
            ))),
            t => Err(self.bad(format!(
                "unsupported entry type {:?}: {}",
                t as char,
                rel.display()
            ))),
        }
    }

    fn check_symlink(&self, rel: &Path, depth: usize, target: &[u8]) -> Result<()> {
        let refuse = |why: &str| {
            self.bad(format!(
                "symlink {} -> {} refused: {why}",
                rel.display(),
                lossy(target)
            ))
        };
        if target.first() == Some(&b'/') {
            // Never followed while extracting (parents must be directories
            // this extraction created), so an opt-in can keep it verbatim.
            if self.allow_absolute_symlinks {
                return Ok(());
            }
            return Err(refuse(
                "absolute target (restore with --allow-absolute-symlinks to keep such links as they are)",
            ));
        }
        let mut depth = depth;
        let mut seen_name = false;
        for c in target.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    if seen_name {
                        return Err(refuse("'..' after a name"));
                    }
                    if depth == 0 {
                        return Err(refuse("target outside the archive root"));
                    }
                    depth -= 1;
                }
                _ => seen_name = true,
            }
        }
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        data: &mut R,
        rel: &Path,
        size: u64,
        mode: u32,
        mtime: i64,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let full = self.root.join(rel);
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&full)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(self.bad(format!("duplicate path: {}", rel.display())));
            }
            Err(e) => return Err(self.ioe(rel, e)),
        };
        let mut remaining = size;
        while remaining > 0 {
            let want = remaining.min(self.buf.len() as u64) as usize;
            let n = match data.read(&mut self.buf[..want]) {
                Ok(0) => return Err(self.bad(format!("{}: data truncated", rel.display()))),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.bad(format!("{}: {e}", rel.display()))),
            };
            f.write_all(&self.buf[..n])
                .map_err(|e| Error::io(&full, e))?;
            remaining -= n as u64;
        }
        self.bytes += size;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| Error::io(&full, e))?;
        }
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&full, e))?;
        f.set_modified(mtime_to_system(mtime))
            .map_err(|e| Error::io(&full, e))?;
        Ok(())
    }

    /// Directory owners, modes and mtimes, deepest first (they change as
    /// entries are added, and a read-only mode would stop us adding them).
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs: Vec<(&PathBuf, &DirState)> = self.dirs.iter().collect();
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, st) in dirs {
            let full = self.root.join(rel);
            let e = |e| Error::io(&full, e);
            if let Some((uid, gid)) = st.owner {
                std::os::unix::fs::lchown(&full, Some(uid), Some(gid)).map_err(e)?;
            }
            fs::set_permissions(&full, fs::Permissions::from_mode(st.mode)).map_err(e)?;
            if let Some(m) = st.mtime {
                fsutil::set_mtime_nofollow(&full, m).map_err(e)?;
            }
        }
        Ok(())
    }
}

fn mtime_to_system(m: i64) -> std::time::SystemTime {
    if m >= 0 {
        UNIX_EPOCH + Duration::from_secs(m as u64)
    } else {
        UNIX_EPOCH - Duration::from_secs(m.unsigned_abs())
    }
}

/// Refuse a restore target the real restore would refuse (one that exists
/// and is not an empty directory, or has no name), without writing
/// anything: `restore --dry-run` fails exactly as the restore would.
pub fn check_restore_target(target: &Path) -> Result<()> {
    let target = std::path::absolute(target).map_err(|e| Error::io(target, e))?;
    if target.file_name().is_none() || target.parent().is_none() {
        return Err(Error::Usage(format!(
            "invalid restore target {}",
            target.display()
        )));
    }
    check_target(&target).map(|_| ())
}

/// What is at `target` now: nothing (None) or an empty directory (its
/// metadata); anything else is refused.
fn check_target(target: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(target, e)),
        Ok(m) if m.is_dir() => {
            let mut rd = fs::read_dir(target).map_err(|e| Error::io(target, e))?;
            if rd.next().is_some() {
                return Err(Error::Usage(format!(
                    "restore target {} is not empty",
                    target.display()
                )));
            }
            Ok(Some(m))
        }
        Ok(_) => Err(Error::Usage(format!(
            "restore target {} exists and is not a directory",
            target.display()
        ))),
    }
}

/// Remove the staging dirs of earlier restores into `<parent>/<name>`
/// (`.<name>.restore-tmp-<pid>-<rand>`) whose process is gone: a restore
/// killed (SIGKILL, power loss) before it finished leaves one, and nothing
/// else would ever remove it. A staging dir of a live process is another
/// restore into the same target, still running: left alone. Returns a
/// warning for each one that could not be removed.
pub(crate) fn remove_stale_staging(parent: &Path, name: &OsStr) -> Vec<String> {
    let mut warnings = Vec::new();
    let Ok(rd) = fs::read_dir(parent) else {
        return warnings;
    };
    let me = std::process::id();
    for e in rd.flatten() {
        let file_name = e.file_name();
        let Some((base, pid)) =
            fsutil::parse_temp_name(file_name.as_bytes(), fsutil::RESTORE_INFIX)
        else {
            continue;
        };
        if base != name.as_bytes() || pid == me || fsutil::pid_alive(pid) {
            continue;
        }
        // Only a real directory (never follow a symlink of that name).
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        match fsutil::force_remove_dir_all(&p) {
            Ok(()) => tracing::info!(
                "removed the staging dir of an interrupted restore: {}",
                p.display()
            ),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => warnings.push(format!(
                "could not remove the staging dir of an interrupted restore {}: {err}",
                p.display()
            )),
        }
    }
    warnings
}

pub fn extract(path: &Path, target: &Path, opts: &ExtractOptions) -> Result<ExtractInfo> {
    let expected = if opts.skip_checksum {
        None
    } else {
        Some(expected_hash(path, opts.expected_sha256.as_deref())?)
    };
    let target = std::path::absolute(target).map_err(|e| Error::io(target, e))?;
    let (Some(name), Some(parent)) = (target.file_name(), target.parent()) else {
        return Err(Error::Usage(format!(
            "invalid restore target {}",
            target.display()
        )));
    };
    let parent = parent.to_path_buf();
    let name = name.to_os_string();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let compressed = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let existing = check_target(&target)?;

    // Missing parents of the target are created, and removed again on
    // failure.
    let mut created: Vec<PathBuf> = Vec::new();
    {
        let mut p = parent.clone();
        while fs::symlink_metadata(&p).is_err() {
            created.push(p.clone());
            if !p.pop() {
                break;
            }
        }
        if !created.is_empty() {
            fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        }
    }
    let remove_created = |created: &[PathBuf]| {
        for p in created {
            let _ = fs::remove_dir(p);
        }
    };

    // A restore into this target that was killed left its staging dir.
    let stale_warnings = remove_stale_staging(&parent, &name);

    let staging = loop {
        let s = parent.join(fsutil::temp_name(&name, fsutil::RESTORE_INFIX));
        match DirBuilder::new().mode(0o700).create(&s) {
            Ok(()) => break s,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                remove_created(&created);
                return Err(Error::io(&s, e));
            }
        }
    };

    let result = (|| -> Result<ExtractInfo> {
        let max_bytes = match opts.max_bytes {
            Some(b) => b,
            None => fsutil::free_space(&staging).map_err(|e| Error::io(&staging, e))?,
        };
        let cap = if opts.max_ratio == 0 {
            u64::MAX
        } else {
            opts.max_ratio.saturating_mul(compressed).max(RATIO_FLOOR)
        };
        let mut ex = Extractor {
            archive: path,
            root: staging.clone(),
            dirs: HashMap::new(),
            entries: 0,
            bytes: 0,
            max_entries: opts.max_entries,
            allow_absolute_symlinks: opts.allow_absolute_symlinks,
            max_bytes,
            // SAFETY: geteuid has no failure mode.
            as_root: unsafe { libc::geteuid() } == 0,
            buf: vec![0u8; BUF_SIZE],
            warnings: stale_warnings,
        };
        let (walked, hashed) = read::hashed_stream(
            file,
            expected.is_some(),
            |pipe| -> Result<()> {
                let (mut ar, over) = read::decoder(path, pipe, cap)?;
                let r = read::walk(path, &mut ar, |e, l| ex.entry(e, l));
                let r = r.and_then(|()| read::finish(path, ar).map(drop));
                if over.get() {
                    return Err(bad(
                    path,
                    format!(
                        "decompression bomb: more than {cap} bytes decompressed from {compressed} (max_ratio {})",
                        opts.max_ratio
                    ),
                ));
                }
                r
            },
        );
        let hashed = hashed.map_err(|e| Error::io(path, e))?;
        if let Some(exp) = &expected {
            if !hashed.complete || &hashed.sha256 != exp {
                return Err(Error::ChecksumMismatch {
                    path: path.to_path_buf(),
                    expected: exp.clone(),
                    actual: hashed.sha256,
                });
            }
        }
        walked?;
        ex.finish_dirs()?;

        // The root of the restored tree: the replaced directory's mode and
        // owner, else 0755.
        let (mode, owner) = match &existing {
            Some(m) => (m.mode() & 0o7777, Some((m.uid(), m.gid()))),
            None => (0o755, None),
        };
        if let (true, Some((uid, gid))) = (ex.as_root, owner) {
            std::os::unix::fs::chown(&staging, Some(uid), Some(gid))
                .map_err(|e| Error::io(&staging, e))?;
        }
        fs::set_permissions(&staging, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&staging, e))?;
        // Durability before visibility.
        let d = File::open(&staging).map_err(|e| Error::io(&staging, e))?;
        {
            use std::os::fd::AsRawFd;
            // SAFETY: valid fd.
            if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
                return Err(Error::io(&staging, io::Error::last_os_error()));
            }
        }
        drop(d);
        // rename(2) replaces an empty directory atomically and fails on a
        // non-empty one.
        match fs::rename(&staging, &target) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) => {
                return Err(Error::Usage(format!(
                    "restore target {} is not empty",
                    target.display()
                )));
            }
            Err(e) => return Err(Error::io(&target, e)),
        }
        fsutil::fsync_dir(&parent)?;
        Ok(ExtractInfo {
            target: target.clone(),
            entries: ex.entries,
            bytes: ex.bytes,
            warnings: ex.warnings,
        })
    })();
    if result.is_err() {
        let _ = fsutil::force_remove_dir_all(&staging);
        remove_created(&created);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::{create, CreateRequest, ManifestMeta};
    use super::*;

    /// A pid no process has: a child that has exited and been waited for.
    fn dead_pid() -> u32 {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!fsutil::pid_alive(pid));
        pid
    }

    #[test]
    fn a_restore_removes_the_staging_dirs_killed_restores_left() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        fs::create_dir_all(data.join("d")).unwrap();
        fs::write(data.join("d/f"), "x\n").unwrap();
        let info = create(&CreateRequest {
            sources: std::slice::from_ref(&data),
            dest_dir: &t.path().join("b"),
            file_name: "w_1.tar.zst",
            level: 1,
            compress: true,
            optional: &[],
            threads: 1,
            exclude: &[],
            meta: ManifestMeta::default(),
            cancel: None,
            generated: &[],
        })
        .unwrap();
        let parent = t.path().join("srv");
        fs::create_dir_all(&parent).unwrap();
        let dead = dead_pid();
        let me = std::process::id();
        // Killed restores into `web` (one with a read-only dir inside), a
        // live one (this process), a dead one for another target, a file
        // and a symlink that look like staging dirs.
        let stale = parent.join(format!(".web.restore-tmp-{dead}-00000000abcd"));
        fs::create_dir_all(stale.join("ro/x")).unwrap();
        fs::set_permissions(stale.join("ro"), fs::Permissions::from_mode(0o500)).unwrap();
        let stale2 = parent.join(format!(".web.restore-tmp-{dead}-00000000abce"));
        fs::create_dir(&stale2).unwrap();
        let live = parent.join(format!(".web.restore-tmp-{me}-00000000abcf"));
        fs::create_dir(&live).unwrap();
        let other = parent.join(format!(".db.restore-tmp-{dead}-00000000abcd"));
        fs::create_dir(&other).unwrap();
        let file = parent.join(format!(".web.restore-tmp-{dead}-00000000abd0"));
        fs::write(&file, "not a dir").unwrap();
        let link = parent.join(format!(".web.restore-tmp-{dead}-00000000abd1"));
        std::os::unix::fs::symlink(&other, &link).unwrap();

        let out = extract(&info.path, &parent.join("web"), &ExtractOptions::default()).unwrap();
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        assert!(!stale.exists() && !stale2.exists(), "stale staging left");
        for kept in [&live, &other, &file] {
            assert!(kept.exists(), "{} removed", kept.display());
        }
        assert!(fs::symlink_metadata(&link).is_ok(), "symlink removed");
        let rel = data.strip_prefix("/").unwrap();
        assert_eq!(
            fs::read_to_string(parent.join("web").join(rel).join("d/f")).unwrap(),
            "x\n"
        );
        // Nothing of this restore's own is left either.
        let names: Vec<String> = fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".web.") && n.contains(&format!("-{me}-")))
            .collect();
        assert_eq!(names, [live.file_name().unwrap().to_string_lossy()]);
    }
}
