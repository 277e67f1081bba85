//! Archives: tar + zstd, streaming, sha256 of the compressed bytes computed in
//! the same pass, atomic publication with a `.sha256` sidecar (sha256sum's
//! format) and a `.manifest.json` sidecar; full streaming verification; safe
//! extraction (docs/conventions.md, "Restoring archives safely").
//!
//! Layout of a backup in a directory:
//! - `NAME` (e.g. `web_20261125_221500.tar.zst`): GNU tar in zstd; entry
//!   paths are the absolute source paths without their leading `/`, like GNU
//!   tar; the compressed bytes are what the checksum covers.
//! - `NAME.sha256`: `<hex>  NAME\n`, so `sha256sum -c NAME.sha256` works.
//! - `NAME.manifest.json`: [`Manifest`].
//!
//! A backup exists iff `NAME` exists; it is only ever given that name after
//! it is whole and fsynced and its sidecars are in place (see `create.rs`
//! for the order). Sidecars without their archive, and `.NAME.tmp-<pid>-*`
//! files of dead processes, are debris that [`cleanup_debris`] removes.
//!
//! Hashing uses sha2 0.10, which picks the SHA-NI (x86) / SHA2 (aarch64)
//! instructions at run time through `cpufeatures`.

mod create;
mod extract;
mod fsutil;
mod glob;
mod read;

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;

pub use create::create;

/// Whether a file name is one of our archives' (`*.tar.zst`, or `*.tar`
/// written with `compression: false`), not a dot file.
pub fn is_archive_name(name: &str) -> bool {
    !name.starts_with('.') && (name.ends_with(".tar.zst") || name.ends_with(".tar"))
}
pub use extract::{check_restore_target, extract};

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

/// `Manifest::format` of the archives this module writes.
pub const FORMAT: &str = "homelab-autopilot.archive/v1";
/// Read and write buffer size.
pub(crate) const BUF_SIZE: usize = 1 << 20;
/// Temp files of a live process older than this are debris anyway.
const DEBRIS_AGE: Duration = Duration::from_secs(24 * 3600);

/// What to archive and where.
#[derive(Debug, Clone)]
pub struct CreateRequest<'a> {
    /// Absolute paths (files or directories). Stored as the path without its
    /// leading `/`. A source that is a symlink is followed (its contents are
    /// archived under the source's own path); symlinks below it are stored
    /// as symlinks. A source inside another source is archived once.
    pub sources: &'a [PathBuf],
    /// Created (mode 0700) if missing.
    pub dest_dir: &'a Path,
    /// e.g. `web_20261125_221500.tar.zst`; no `/`, must not start with `.`.
    pub file_name: &'a str,
    /// zstd level.
    pub level: i32,
    /// zstd (`NAME.tar.zst`) or a plain tar (`NAME.tar`); readers tell them
    /// apart by zstd's magic number.
    pub compress: bool,
    /// Sources that may be absent (`backup_paths` entries marked
    /// `optional: true`, the default host paths): skipped with a warning.
    /// Any other source that does not exist fails the backup before
    /// anything is written.
    pub optional: &'a [PathBuf],
    /// zstd worker threads; 0 = number of cores.
    pub threads: u32,
    /// Glob patterns (see the `glob` module: `*`, `?`, `[..]`, `**`),
    /// matched against the path relative to each source root and against the
    /// file name; a pattern starting with `/` against the absolute path.
    pub exclude: &'a [String],
    pub meta: ManifestMeta,
    /// Regular files made by the caller rather than read from disk
    /// (`systemctl cat` output, a container's inspect JSON): `(archive path
    /// without a leading '/', contents)`, stored mode 0600, owned by root,
    /// after the sources.
    pub generated: &'a [(String, Vec<u8>)],
    /// Checked between entries; when set, `create` fails with
    /// `Error::Cancelled` and leaves nothing behind.
    pub cancel: Option<&'a AtomicBool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestMeta {
    pub service: String,
    /// "archive"
    pub kind: String,
    /// Unix seconds.
    pub created_at: i64,
    pub hostname: String,
    /// What a docker / docker_compose / systemd backup captured.
    pub capture: Option<Capture>,
}

/// Most per-file entries a manifest lists; past that `files_truncated`.
pub const MANIFEST_FILES_MAX: usize = 100_000;

/// One regular file in an archive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    /// As stored (no leading `/`).
    pub path: String,
    pub size: u64,
    /// Permission bits (`0o644` is 420).
    pub mode: u32,
    /// sha256 of the stored data, lowercase hex.
    pub sha256: String,
}

/// What a service backup captured beyond plain paths: containers, volumes,
/// systemd units (docs/docker.md).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// `docker`, `docker_compose` or `systemd`.
    pub service_type: String,
    /// `stop`, `pause` or `live`.
    pub consistency: String,
    /// docker_compose: the project name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default)]
    pub containers: Vec<CapturedContainer>,
    #[serde(default)]
    pub volumes: Vec<CapturedVolume>,
    #[serde(default)]
    pub units: Vec<CapturedUnit>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedContainer {
    pub name: String,
    pub id: String,
    /// The image as configured (`postgres:16`).
    pub image: String,
    /// The image's repo digest (`postgres@sha256:...`); for a locally built
    /// or imported image, which has none, its image ID (`sha256:...`).
    pub image_digest: String,
    /// Whether it was running when the backup started.
    pub running: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedVolume {
    /// The engine's name (`<project>_<volume>` for Compose).
    pub name: String,
    /// Where its contents are in the archive: the mountpoint without its
    /// leading `/` (`var/lib/docker/volumes/NAME/_data`).
    pub path: String,
    pub mountpoint: String,
    pub driver: String,
    /// The volume's labels (`com.docker.compose.project`, ...), given back
    /// to it when a restore creates it.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct CapturedUnit {
    pub unit: String,
    /// Where `systemctl cat UNIT` is in the archive.
    pub path: String,
}

/// The `NAME.manifest.json` sidecar.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT`]
    pub format: String,
    pub tool_version: String,
    pub service: String,
    pub kind: String,
    pub created_at: i64,
    pub hostname: String,
    pub file_name: String,
    pub sources: Vec<String>,
    /// Tar entries (files, dirs, symlinks, hardlinks).
    pub entries: u64,
    /// Uncompressed bytes of regular file data.
    pub bytes_in: u64,
    /// Archive bytes.
    pub size: u64,
    /// sha256 of the archive bytes, lowercase hex.
    pub sha256: String,
    /// "zstd", or "none" for a plain tar.
    pub compression: String,
    pub level: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Capture>,
    /// Every regular file (up to [`MANIFEST_FILES_MAX`]): size, mode, sha256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub files_truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ArchiveInfo {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    pub entries: u64,
    pub bytes_in: u64,
    /// Skipped missing sources, files that changed while read, sockets...
    pub warnings: Vec<String>,
    /// Files and directories under the sources that could not be read
    /// (left out, or zero-filled after a read error); each has a warning.
    pub unreadable: Vec<String>,
    pub manifest: Manifest,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyInfo {
    pub path: PathBuf,
    pub sha256: String,
    /// Archive bytes.
    pub size: u64,
    /// Tar entries (0 for the quick check).
    pub entries: u64,
    /// Regular file data bytes (0 for the quick check).
    pub bytes_out: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EntryInfo {
    /// As stored, without a trailing `/` for directories.
    pub path: String,
    /// file dir symlink hardlink char block fifo other
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub link_target: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExtractOptions {
    /// Refuse archives with more entries.
    pub max_entries: u64,
    /// Refuse archives whose file data exceeds this; None = free space of
    /// the target filesystem.
    pub max_bytes: Option<u64>,
    /// Refuse when more than `max_ratio` × the compressed size is
    /// decompressed (never below 64 MiB); 0 = no limit.
    pub max_ratio: u64,
    /// Instead of the `.sha256` sidecar.
    pub expected_sha256: Option<String>,
    pub skip_checksum: bool,
    /// Keep symlinks with absolute targets (`/etc/localtime ->
    /// /usr/share/zoneinfo/...`) as they are. They are never followed while
    /// extracting; off by default (docs/conventions.md refuses links that resolve
    /// outside the root).
    pub allow_absolute_symlinks: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            max_entries: 10_000_000,
            max_bytes: None,
            max_ratio: 1000,
            expected_sha256: None,
            skip_checksum: false,
            allow_absolute_symlinks: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExtractInfo {
    pub target: PathBuf,
    pub entries: u64,
    /// Regular file data bytes written.
    pub bytes: u64,
    pub warnings: Vec<String>,
}

/// `(NAME.sha256, NAME.manifest.json)` next to the archive.
pub fn sidecar_paths(archive: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut s: OsString = archive.as_os_str().to_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    (with(".sha256"), with(".manifest.json"))
}

fn archive_file_name(archive: &Path) -> Result<String> {
    archive
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Usage(format!("invalid archive path {}", archive.display())))
}

fn normalize_hex(archive: &Path, s: &str, what: &str) -> Result<String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::UnsafeArchive {
            path: archive.to_path_buf(),
            message: format!("{what} is not a sha256 hex digest: {s:?}"),
            source: None,
        });
    }
    Ok(s.to_ascii_lowercase())
}

/// The digest in the `.sha256` sidecar; None if there is no sidecar.
fn read_sidecar(archive: &Path) -> Result<Option<String>> {
    let (sha, _) = sidecar_paths(archive);
    let text = match fs::read_to_string(&sha) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&sha, e)),
    };
    let first = text.split_whitespace().next().unwrap_or("");
    normalize_hex(archive, first, &format!("{}", sha.display())).map(Some)
}

/// `expected` if given, else the sidecar's; no sidecar = UnsafeArchive.
pub(crate) fn expected_hash(archive: &Path, expected: Option<&str>) -> Result<String> {
    match expected {
        Some(e) => normalize_hex(archive, e, "expected checksum"),
        None => read_sidecar(archive)?.ok_or_else(|| Error::UnsafeArchive {
            path: archive.to_path_buf(),
            message: format!(
                "no checksum: {} is missing",
                sidecar_paths(archive).0.display()
            ),
            source: None,
        }),
    }
}

pub fn read_manifest(archive: &Path) -> Result<Manifest> {
    let (_, man) = sidecar_paths(archive);
    let bytes = fs::read(&man).map_err(|e| Error::io(&man, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::UnsafeArchive {
        path: man.clone(),
        message: format!("malformed manifest: {e}"),
        source: Some(e.into()),
    })
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    hash_file(path).map(|(h, _)| h)
}

fn hash_file(path: &Path) -> Result<(String, u64)> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((read::hex(&hasher.finalize()), size))
}

fn mismatch(path: &Path, expected: String, actual: String) -> Error {
    Error::ChecksumMismatch {
        path: path.to_path_buf(),
        expected,
        actual,
    }
}

/// Quick check: re-read and hash the archive (entries/bytes_out are 0).
pub fn verify_checksum(path: &Path, expected_sha256: Option<&str>) -> Result<VerifyInfo> {
    let expected = expected_hash(path, expected_sha256)?;
    let (actual, size) = hash_file(path)?;
    if actual != expected {
        return Err(mismatch(path, expected, actual));
    }
    Ok(VerifyInfo {
        path: path.to_path_buf(),
        sha256: actual,
        size,
        entries: 0,
        bytes_out: 0,
    })
}

/// Full check in one streaming pass: hash the compressed bytes and, at the
/// same time, decode the zstd stream and read every tar entry to the end.
/// A checksum mismatch wins over a decoding error (a flipped byte usually
/// breaks both); a stream that decodes badly under a matching checksum is
/// UnsafeArchive. If the manifest sidecar describes this archive, its entry
/// and byte counts must match too.
pub fn verify(path: &Path, expected_sha256: Option<&str>) -> Result<VerifyInfo> {
    let expected = expected_hash(path, expected_sha256)?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let (walked, hashed) = read::hashed_stream(file, true, |pipe| -> Result<(u64, u64)> {
        let (mut ar, _) = read::decoder(path, pipe, u64::MAX)?;
        let mut buf = vec![0u8; BUF_SIZE];
        let (mut entries, mut bytes) = (0u64, 0u64);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let progress = crate::progress::Progress::bytes(&format!("verifying {name}"), None);
        read::walk(path, &mut ar, |e, l| {
            entries += 1;
            if progress.is_active() {
                progress.set_message(format!("{entries} entries"));
            }
            if read::kind_name(l.header.entry_type().as_byte()) == "file" {
                let mut got = 0u64;
                loop {
                    match e.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            got += n as u64;
                            progress.inc(n as u64);
                        }
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => {
                            return Err(read::bad(
                                path,
                                format!("{}: {err}", String::from_utf8_lossy(l.path)),
                            ))
                        }
                    }
                }
                if got != l.size {
                    return Err(read::bad(
                        path,
                        format!("{}: data truncated", String::from_utf8_lossy(l.path)),
                    ));
                }
                bytes += got;
            }
            Ok(())
        })?;
        read::finish(path, ar)?;
        Ok((entries, bytes))
    });
    let hashed = hashed.map_err(|e| Error::io(path, e))?;
    if hashed.sha256 != expected {
        return Err(mismatch(path, expected, hashed.sha256));
    }
    let (entries, bytes_out) = walked?;
    if let Ok(m) = read_manifest(path) {
        if m.sha256 == hashed.sha256 && (m.entries != entries || m.bytes_in != bytes_out) {
            return Err(read::bad(
                path,
                format!(
                    "manifest says {} entries / {} bytes, archive has {entries} / {bytes_out}",
                    m.entries, m.bytes_in
                ),
            ));
        }
    }
    Ok(VerifyInfo {
        path: path.to_path_buf(),
        sha256: hashed.sha256,
        size: hashed.size,
        entries,
        bytes_out,
    })
}

/// Every entry, in archive order (one streaming pass, no checksum check).
pub fn list(path: &Path) -> Result<Vec<EntryInfo>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let input = io::BufReader::with_capacity(BUF_SIZE, file);
    let (mut ar, _) = read::decoder(path, input, u64::MAX)?;
    let mut out = Vec::new();
    read::walk(path, &mut ar, |_, l| {
        let h = l.header;
        let ty = h.entry_type().as_byte();
        let mut p = l.path;
        while p.len() > 1 && p.ends_with(b"/") {
            p = &p[..p.len() - 1];
        }
        let link = matches!(ty, b'1' | b'2')
            .then(|| l.link.map(|t| String::from_utf8_lossy(t).into_owned()))
            .flatten();
        out.push(EntryInfo {
            path: String::from_utf8_lossy(p).into_owned(),
            kind: read::kind_name(ty).to_string(),
            size: l.size,
            mode: h.mode().unwrap_or(0) & 0o7777,
            mtime: h.mtime().unwrap_or(0) as i64,
            link_target: link,
        });
        Ok(())
    })?;
    read::finish(path, ar)?;
    Ok(out)
}

/// Copy the archive and its sidecars into `dest_dir` (created if missing),
/// hashing the bytes as they are written and comparing with the sidecar;
/// published in the same order as `create` (sidecars, then the archive under
/// its final name). If `dest_dir` already holds this archive with the same
/// checksum, nothing is copied. Returns the new archive path.
pub fn copy_to(archive: &Path, dest_dir: &Path) -> Result<PathBuf> {
    let expected = expected_hash(archive, None)?;
    let fname = archive_file_name(archive)?;
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dest_dir)
            .map_err(|e| Error::io(dest_dir, e))?;
    }
    let dest = dest_dir.join(&fname);
    if fs::symlink_metadata(&dest).is_ok() {
        return match read_sidecar(&dest)? {
            Some(h) if h == expected => Ok(dest),
            _ => Err(Error::io(
                &dest,
                io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "a different archive with this name exists",
                ),
            )),
        };
    }
    let (sha_src, man_src) = sidecar_paths(archive);
    let sidecar = fs::read(&sha_src).map_err(|e| Error::io(&sha_src, e))?;
    let manifest = match fs::read(&man_src) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&man_src, e)),
    };

    let mut src = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let (file, mut guard) = fsutil::create_temp(dest_dir, std::ffi::OsStr::new(&fname))?;
    let mut out = file;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(archive, e)),
        };
        let chunk = &buf[..n];
        out.write_all(chunk)
            .map_err(|e| Error::io(&guard.path, e))?;
        hasher.update(chunk);
    }
    out.sync_all().map_err(|e| Error::io(&guard.path, e))?;
    drop(out);
    let actual = read::hex(&hasher.finalize());
    if actual != expected {
        return Err(mismatch(archive, expected, actual));
    }
    let (sha_dst, man_dst) = sidecar_paths(&dest);
    match manifest {
        Some(m) => create::publish_with(dest_dir, &fname, &mut guard, &m, &sidecar)?,
        None => {
            let mut sha_tmp =
                fsutil::stage_bytes(dest_dir, sha_dst.file_name().unwrap_or_default(), &sidecar)?;
            fsutil::publish(&mut sha_tmp, &sha_dst)?;
            fsutil::fsync_dir(dest_dir)?;
            fsutil::rename_noreplace(&guard.path, &dest).map_err(|e| Error::io(&dest, e))?;
            guard.keep();
            fsutil::fsync_dir(dest_dir)?;
            let _ = man_dst;
        }
    }
    Ok(dest)
}

/// Remove the archive, then its sidecars (missing sidecars are fine; a
/// crash in between leaves sidecars without an archive: debris). Error if
/// none of the three existed.
pub fn remove(archive: &Path) -> Result<()> {
    let (sha, man) = sidecar_paths(archive);
    let mut any = false;
    for p in [archive, sha.as_path(), man.as_path()] {
        match fs::remove_file(p) {
            Ok(()) => any = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(p, e)),
        }
    }
    if !any {
        return Err(Error::io(
            archive,
            io::Error::new(io::ErrorKind::NotFound, "no such archive"),
        ));
    }
    if let Some(dir) = archive.parent().filter(|d| !d.as_os_str().is_empty()) {
        fsutil::fsync_dir(dir)?;
    }
    Ok(())
}

/// Remove our own debris in `dir`, nothing else:
/// - `.NAME.tmp-<pid>-<rand>` files (archives and sidecars being written) and
///   `.NAME.restore-tmp-<pid>-<rand>` directories (restore staging) whose
///   process is gone, or that are older than 24 hours;
/// - sidecars without their archive (`NAME.manifest.json` whose `format` is
///   ours, and `NAME.sha256`), unless a live temp for NAME remains: that is a
///   `create` or `copy_to` between publishing the sidecars and the archive.
///
/// Returns what was removed (nothing if `dir` does not exist).
pub fn cleanup_debris(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let names = match list_names(dir) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Ok(removed)
        }
        r => r?,
    };
    let now = SystemTime::now();
    let me = std::process::id();
    for name in &names {
        let b = name.as_bytes();
        let (infix, is_dir) = if fsutil::parse_temp_name(b, fsutil::TMP_INFIX).is_some() {
            (fsutil::TMP_INFIX, false)
        } else if fsutil::parse_temp_name(b, fsutil::RESTORE_INFIX).is_some() {
            (fsutil::RESTORE_INFIX, true)
        } else {
            continue;
        };
        let Some((_, pid)) = fsutil::parse_temp_name(b, infix) else {
            continue;
        };
        let path = dir.join(name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if is_dir != meta.is_dir() || meta.file_type().is_symlink() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > DEBRIS_AGE);
        let alive = pid == me || fsutil::pid_alive(pid);
        if alive && !old {
            continue;
        }
        let r = if is_dir {
            fsutil::force_remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        match r {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
    }

    // Orphaned sidecars. The live-temp check comes before the archive check:
    // the archive temp is renamed to NAME atomically, so if no temp is seen,
    // NAME exists by now unless the backup really is gone.
    for name in &names {
        let Some(base) = name.as_bytes().strip_suffix(b".manifest.json") else {
            continue;
        };
        if base.is_empty() || base.starts_with(b".") {
            continue;
        }
        let archive = dir.join(std::ffi::OsStr::from_bytes(base));
        if names.iter().any(|n| n.as_bytes() == base) {
            continue;
        }
        let man_path = dir.join(name);
        let ours = fs::read(&man_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v.get("format").and_then(|f| f.as_str()) == Some(FORMAT));
        if !ours {
            continue;
        }
        let live_temp = list_names(dir)?.iter().any(|n| {
            fsutil::parse_temp_name(n.as_bytes(), fsutil::TMP_INFIX)
                .is_some_and(|(b, pid)| b == base && (pid == me || fsutil::pid_alive(pid)))
        });
        if live_temp || fs::symlink_metadata(&archive).is_ok() {
            continue;
        }
        let (sha, man) = sidecar_paths(&archive);
        for p in [sha, man] {
            match fs::remove_file(&p) {
                Ok(()) => removed.push(p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&p, e)),
            }
        }
    }
    if !removed.is_empty() {
        fsutil::fsync_dir(dir)?;
    }
    Ok(removed)
}

fn list_names(dir: &Path) -> Result<Vec<OsString>> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut v = Vec::new();
    for e in rd {
        v.push(e.map_err(|e| Error::io(dir, e))?.file_name());
    }
    v.sort();
    Ok(v)
}
