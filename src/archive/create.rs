//! `create`: walk the sources, write a GNU tar stream into a multithreaded
//! zstd encoder whose output is hashed and counted on its way to a temp file,
//! then publish the archive and its sidecars.
//!
//! Publication order (a backup exists iff the archive has its final name):
//! 1. archive written to `.NAME.tmp-<pid>-<rand>`, flushed, `fsync`ed;
//! 2. `NAME.manifest.json` then `NAME.sha256` written as temps, fsynced, and
//!    renamed into place; the directory is fsynced;
//! 3. the archive temp is renamed to `NAME` (never replacing an existing
//!    file); the directory is fsynced.
//!
//! So a final-named archive always has its checksum sidecar next to it. A
//! crash between 2 and 3 leaves sidecars without an archive plus a temp whose
//! pid is dead: `cleanup_debris` removes both (sidecars only once no live
//! temp for NAME remains). A crash (or SIGKILL) anywhere else leaves only
//! `.NAME.tmp-*` files.

use super::fsutil::{self, TempGuard};
use super::glob::Excludes;
use super::read::hex;
use super::{
    ArchiveInfo, CreateRequest, FileEntry, Manifest, BUF_SIZE, FORMAT, MANIFEST_FILES_MAX,
};
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::Ordering;

const BLOCK: u64 = 512;
/// Buffer between the tar writer and the zstd encoder: coalesces headers and
/// small files; writes of a whole read buffer (1 MiB) pass straight through.
const TAR_BUF: usize = 256 * 1024;

/// Hashes and counts the compressed bytes on their way to the file.
struct HashCount<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashCount<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hasher.update(&b[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Sink = HashCount<BufWriter<File>>;
type TarOut = BufWriter<Compressor>;

/// Where the tar stream goes: through zstd (`NAME.tar.zst`) or straight to
/// the hashed file (`NAME.tar`, `global.backup.compression: false`).
enum Compressor {
    Zstd(zstd::stream::write::Encoder<'static, Sink>),
    Plain(Sink),
}

impl Compressor {
    fn finish(self) -> io::Result<Sink> {
        match self {
            Compressor::Zstd(e) => e.finish(),
            Compressor::Plain(s) => Ok(s),
        }
    }
}

impl Write for Compressor {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(e) => e.write(b),
            Compressor::Plain(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(e) => e.flush(),
            Compressor::Plain(s) => s.flush(),
        }
    }
}

/// `NAME` if nothing in `dest` has it yet, else `STEM-2.EXT`, `STEM-3.EXT`,
/// ... (EXT from `.tar` on): two backups of a service started in the same
/// second get different names.
fn free_name(dest: &Path, fname: &str) -> Result<String> {
    let taken = |n: &str| {
        let p = dest.join(n);
        let (sha, man) = super::sidecar_paths(&p);
        fs::symlink_metadata(&p).is_ok()
            || fs::symlink_metadata(sha).is_ok()
            || fs::symlink_metadata(man).is_ok()
    };
    if !taken(fname) {
        return Ok(fname.to_string());
    }
    let (stem, ext) = match fname.rfind(".tar") {
        Some(i) if i > 0 => fname.split_at(i),
        _ => (fname, ""),
    };
    for n in 2..10_000 {
        let candidate = format!("{stem}-{n}{ext}");
        if !taken(&candidate) {
            return Ok(candidate);
        }
    }
    Err(Error::io(
        dest.join(fname),
        io::Error::new(io::ErrorKind::AlreadyExists, "archive already exists"),
    ))
}

#[cfg(test)]
pub(super) type Hook = Box<dyn FnMut(&Path)>;

#[cfg(test)]
thread_local! {
    /// Test hook: called with a regular file's path after it was opened and
    /// its size taken, before its data is read.
    pub(super) static BEFORE_READ: std::cell::RefCell<Option<Hook>> = const { std::cell::RefCell::new(None) };
}

/// zstd's multithreaded mode buffers about five job sizes per worker (input
/// sections, output buffers); its default job size at level 3 is 8 MiB, which
/// measured 90 MB peak RSS with 2 workers. Cap the total at ~10 MiB of jobs
/// across workers (4 MiB per job at most, zstd's 512 KiB at least): ~53 MB
/// with 2 workers, for <1% compression ratio and no speed loss
/// (docs/benchmarks/backup.md).
fn job_size(workers: u32) -> u32 {
    const MIB: u32 = 1 << 20;
    (10 * MIB / workers.max(1)).clamp(MIB / 2, 4 * MIB)
}

/// Lexical normalization of an absolute path (`.`, `..`, `//`, trailing `/`).
fn normalize_abs(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

pub fn create(req: &CreateRequest) -> Result<ArchiveInfo> {
    let fname = req.file_name;
    if fname.is_empty() || fname.contains('/') || fname.starts_with('.') || fname.contains('\0') {
        return Err(Error::Usage(format!(
            "invalid archive file name {fname:?} (no '/', must not start with '.')"
        )));
    }
    let excludes = Excludes::new(req.exclude).map_err(Error::Usage)?;
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut optional: HashSet<PathBuf> = HashSet::new();
    for s in req.sources {
        if !s.is_absolute() {
            return Err(Error::Usage(format!(
                "backup source {} is not an absolute path",
                s.display()
            )));
        }
        let n = normalize_abs(s);
        if req.optional.iter().any(|o| normalize_abs(o) == n) {
            optional.insert(n.clone());
        }
        if !roots.contains(&n) {
            roots.push(n);
        }
    }
    // A source that does not exist is almost always a typo: the backup
    // fails before anything is written, unless the source is optional.
    let missing: Vec<String> = roots
        .iter()
        .filter(|r| !optional.contains(*r))
        .filter(|r| matches!(fs::metadata(r), Err(e) if e.kind() == io::ErrorKind::NotFound))
        .map(|r| r.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Config(
            missing
                .iter()
                .map(|m| {
                    format!(
                        "backup source {m} does not exist (a typo? mark it `optional: true` \
                         in backup_paths if it may be absent)"
                    )
                })
                .collect(),
        ));
    }
    // A source inside another one is pruned from the outer walk and archived
    // by its own walk, so no entry is written twice.
    let nested: HashSet<PathBuf> = roots
        .iter()
        .filter(|b| roots.iter().any(|a| a != *b && b.starts_with(a)))
        .cloned()
        .collect();

    let dest = req.dest_dir;
    let dest_existed = fs::symlink_metadata(dest).is_ok();
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dest)
            .map_err(|e| Error::io(dest, e))?;
    }
    let fname = &free_name(dest, fname)?;
    let final_path = dest.join(fname);

    let (file, mut guard) = fsutil::create_temp(dest, OsStr::new(fname))?;
    let tmp = guard.path.clone();
    let ioe = |e: io::Error| Error::io(&tmp, e);
    let own = file.metadata().map_err(ioe)?;
    let sink = HashCount {
        inner: BufWriter::with_capacity(BUF_SIZE, file),
        hasher: Sha256::new(),
        count: 0,
    };
    let enc = if req.compress {
        let mut enc = zstd::stream::write::Encoder::new(sink, req.level).map_err(ioe)?;
        let threads = match req.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1),
            n => n,
        };
        enc.multithread(threads).map_err(ioe)?;
        enc.include_checksum(true).map_err(ioe)?;
        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(job_size(threads)))
            .map_err(ioe)?;
        Compressor::Zstd(enc)
    } else {
        Compressor::Plain(sink)
    };

    let mut w = Walker {
        out: BufWriter::with_capacity(TAR_BUF, enc),
        tmp: &tmp,
        buf: vec![0u8; BUF_SIZE],
        excludes,
        nested,
        warnings: Vec::new(),
        unreadable: Vec::new(),
        entries: 0,
        bytes_in: 0,
        links: HashMap::new(),
        names: NameCache::default(),
        cancel: req.cancel,
        own: (own.dev(), own.ino()),
        files: Vec::new(),
        files_truncated: false,
        progress: crate::progress::Progress::bytes(&format!("archiving {fname}"), None),
    };
    for root in &roots {
        w.source(root)?;
    }
    for (name, data) in req.generated {
        w.generated(name, data)?;
    }
    // End of archive: two zero blocks.
    w.out.write_all(&[0u8; 2 * BLOCK as usize]).map_err(ioe)?;
    let Walker {
        out,
        warnings,
        unreadable,
        entries,
        bytes_in,
        files,
        files_truncated,
        ..
    } = w;
    // A backup with nothing in it is never a backup: nothing is published
    // (the temp file goes with `guard`), so it can never count toward
    // retention either.
    if entries == 0 {
        return Err(Error::Other(format!(
            "nothing to back up: no source had anything to archive ({})",
            if roots.is_empty() {
                "no sources".to_string()
            } else {
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        )));
    }
    let enc = out.into_inner().map_err(|e| ioe(e.into_error()))?;
    let sink = enc.finish().map_err(ioe)?;
    let HashCount {
        inner,
        hasher,
        count: size,
    } = sink;
    let file = inner.into_inner().map_err(|e| ioe(e.into_error()))?;
    file.sync_all().map_err(ioe)?;
    drop(file);
    let sha256 = hex(&hasher.finalize());

    let manifest = Manifest {
        format: FORMAT.to_string(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        service: req.meta.service.clone(),
        kind: req.meta.kind.clone(),
        created_at: req.meta.created_at,
        hostname: req.meta.hostname.clone(),
        file_name: fname.to_string(),
        sources: req
            .sources
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect(),
        entries,
        bytes_in,
        size,
        sha256: sha256.clone(),
        compression: if req.compress { "zstd" } else { "none" }.to_string(),
        level: if req.compress { req.level } else { 0 },
        capture: req.meta.capture.clone(),
        files,
        files_truncated,
    };
    publish(dest, fname, &mut guard, &manifest)?;
    if !dest_existed {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsutil::fsync_dir(parent)?;
        }
    }
    Ok(ArchiveInfo {
        path: final_path,
        size,
        sha256,
        entries,
        bytes_in,
        warnings,
        unreadable,
        manifest,
    })
}

/// Steps 2 and 3 of the publication order (module docs). Used by `copy_to`
/// too, with the manifest bytes given.
pub(super) fn publish(
    dest: &Path,
    fname: &str,
    archive_tmp: &mut TempGuard,
    manifest: &Manifest,
) -> Result<()> {
    let mut json =
        serde_json::to_vec_pretty(manifest).map_err(|e| Error::Other(format!("manifest: {e}")))?;
    json.push(b'\n');
    let sidecar = format!("{}  {}\n", manifest.sha256, fname);
    publish_with(dest, fname, archive_tmp, &json, sidecar.as_bytes())
}

pub(super) fn publish_with(
    dest: &Path,
    fname: &str,
    archive_tmp: &mut TempGuard,
    manifest_bytes: &[u8],
    sidecar_bytes: &[u8],
) -> Result<()> {
    let final_path = dest.join(fname);
    let (sha_path, man_path) = super::sidecar_paths(&final_path);
    let mut man_tmp = fsutil::stage_bytes(
        dest,
        man_path.file_name().unwrap_or_default(),
        manifest_bytes,
    )?;
    let mut sha_tmp = fsutil::stage_bytes(
        dest,
        sha_path.file_name().unwrap_or_default(),
        sidecar_bytes,
    )?;
    if fs::symlink_metadata(&final_path).is_ok() {
        return Err(Error::io(
            &final_path,
            io::Error::new(io::ErrorKind::AlreadyExists, "archive already exists"),
        ));
    }
    fsutil::publish(&mut man_tmp, &man_path)?;
    fsutil::publish(&mut sha_tmp, &sha_path)?;
    fsutil::fsync_dir(dest)?;
    fsutil::rename_noreplace(&archive_tmp.path, &final_path)
        .map_err(|e| Error::io(&final_path, e))?;
    archive_tmp.keep();
    fsutil::fsync_dir(dest)
}

/// uid/gid -> user/group names for the tar headers, cached.
#[derive(Default)]
struct NameCache {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl NameCache {
    fn user(&mut self, uid: u32) -> Option<&str> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                lookup(|buf, out| {
                    // SAFETY: buffers sized by the caller; result checked.
                    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
                    let mut res: *mut libc::passwd = std::ptr::null_mut();
                    let rc = unsafe {
                        libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res)
                    };
                    if rc == 0 && !res.is_null() {
                        *out = Some(
                            unsafe { std::ffi::CStr::from_ptr(pw.pw_name) }
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                    rc
                })
            })
            .as_deref()
    }

    fn group(&mut self, gid: u32) -> Option<&str> {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                lookup(|buf, out| {
                    // SAFETY: as above.
                    let mut gr: libc::group = unsafe { std::mem::zeroed() };
                    let mut res: *mut libc::group = std::ptr::null_mut();
                    let rc = unsafe {
                        libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut res)
                    };
                    if rc == 0 && !res.is_null() {
                        *out = Some(
                            unsafe { std::ffi::CStr::from_ptr(gr.gr_name) }
                                .to_string_lossy()
                                .into_owned(),
                        );
                    }
                    rc
                })
            })
            .as_deref()
    }
}

fn lookup(
    mut f: impl FnMut(&mut Vec<libc::c_char>, &mut Option<String>) -> libc::c_int,
) -> Option<String> {
    let mut size = 1024;
    while size <= 1 << 20 {
        let mut buf = vec![0 as libc::c_char; size];
        let mut out = None;
        let rc = f(&mut buf, &mut out);
        if rc == libc::ERANGE {
            size *= 4;
            continue;
        }
        return out.filter(|n| n.len() < 32);
    }
    None
}

struct Walker<'a> {
    out: TarOut,
    tmp: &'a Path,
    buf: Vec<u8>,
    excludes: Excludes,
    nested: HashSet<PathBuf>,
    warnings: Vec<String>,
    /// Sources (or parts of them) that could not be read.
    unreadable: Vec<String>,
    entries: u64,
    bytes_in: u64,
    /// (dev, ino) of files with several links -> archive path of the first.
    links: HashMap<(u64, u64), Vec<u8>>,
    names: NameCache,
    cancel: Option<&'a std::sync::atomic::AtomicBool>,
    /// (dev, ino) of the archive being written: never archived into itself
    /// when the destination is inside a source.
    own: (u64, u64),
    /// Per-file entries for the manifest.
    files: Vec<FileEntry>,
    files_truncated: bool,
    /// Bytes and files read, on a terminal.
    progress: crate::progress::Progress,
}

/// What the walker stores for one entry.
enum Kind<'k> {
    File(&'k mut File),
    Dir,
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
}

impl Walker<'_> {
    fn w(&mut self, b: &[u8]) -> Result<()> {
        self.out.write_all(b).map_err(|e| Error::io(self.tmp, e))
    }

    /// Collected for the caller, which logs them with the run's context.
    fn warn(&mut self, msg: String) {
        self.warnings.push(msg);
    }

    /// A source file or directory the walk cannot read (permissions, an I/O
    /// error): left out with a warning naming it, as restic does; the backup
    /// goes on and ends as a warning rather than failing.
    fn unreadable(&mut self, path: &Path, e: &io::Error) {
        self.warn(format!("{}: cannot read ({e}); skipped", path.display()));
        self.unreadable.push(path.display().to_string());
    }

    fn check_cancel(&self) -> Result<()> {
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    fn source(&mut self, root: &Path) -> Result<()> {
        self.check_cancel()?;
        // The root itself is followed if it is a symlink: a configured path
        // that is a symlink to the data means the data.
        let meta = match fs::metadata(root) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!(
                    "{}: source does not exist, skipped",
                    root.display()
                ));
                return Ok(());
            }
            Err(e) => {
                self.unreadable(root, &e);
                return Ok(());
            }
        };
        let root_len = root.as_os_str().len();
        if !self.entry(root, &meta, true)? || !meta.is_dir() {
            return Ok(());
        }
        // Depth-first, each directory's names sorted (byte order).
        let mut stack: Vec<(PathBuf, std::vec::IntoIter<OsString>)> = Vec::new();
        if let Some(names) = self.list_dir(root)? {
            stack.push((root.to_path_buf(), names.into_iter()));
        }
        while let Some((dir, it)) = stack.last_mut() {
            let Some(name) = it.next() else {
                stack.pop();
                continue;
            };
            let path = dir.join(&name);
            self.check_cancel()?;
            if self.nested.contains(&path) {
                continue;
            }
            if !self.excludes.is_empty() {
                let abs = path.as_os_str().as_bytes();
                let rel = if root_len == 1 {
                    &abs[1..]
                } else {
                    &abs[root_len + 1..]
                };
                if self.excludes.is_excluded(rel, name.as_bytes(), abs) {
                    continue;
                }
            }
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(format!(
                        "{}: file removed before we read it",
                        path.display()
                    ));
                    continue;
                }
                Err(e) => {
                    self.unreadable(&path, &e);
                    continue;
                }
            };
            if self.entry(&path, &meta, false)? && meta.is_dir() {
                if let Some(names) = self.list_dir(&path)? {
                    stack.push((path, names.into_iter()));
                }
            }
        }
        Ok(())
    }

    fn list_dir(&mut self, dir: &Path) -> Result<Option<Vec<OsString>>> {
        let rd = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!(
                    "{}: directory removed before we read it",
                    dir.display()
                ));
                return Ok(None);
            }
            Err(e) => {
                self.unreadable(dir, &e);
                return Ok(None);
            }
        };
        let mut names = Vec::new();
        for e in rd {
            match e {
                Ok(e) => names.push(e.file_name()),
                Err(e) => {
                    // What was listed before the error is still archived.
                    self.unreadable(dir, &e);
                    break;
                }
            }
        }
        names.sort_unstable();
        Ok(Some(names))
    }

    /// Write one entry. Returns false if it was skipped.
    fn entry(&mut self, path: &Path, meta: &Metadata, is_root: bool) -> Result<bool> {
        let arch = &path.as_os_str().as_bytes()[1..];
        let ft = meta.file_type();
        if (meta.dev(), meta.ino()) == self.own {
            self.warn(format!(
                "{}: file is the archive; not dumped",
                path.display()
            ));
            return Ok(false);
        }
        if ft.is_dir() {
            if !arch.is_empty() {
                let mut name = arch.to_vec();
                name.push(b'/');
                self.header(&name, meta, 0, Kind::Dir)?;
            }
            return Ok(true);
        }
        if ft.is_symlink() {
            let target = match fs::read_link(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn(format!(
                        "{}: file removed before we read it",
                        path.display()
                    ));
                    return Ok(false);
                }
                Err(e) => {
                    self.unreadable(path, &e);
                    return Ok(false);
                }
            };
            self.header(
                arch,
                meta,
                0,
                Kind::Symlink(target.into_os_string().into_vec()),
            )?;
            return Ok(true);
        }
        if ft.is_socket() {
            self.warn(format!("{}: socket ignored", path.display()));
            return Ok(false);
        }
        if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            self.warn(format!(
                "{}: special file (device or fifo) skipped; restores refuse them",
                path.display()
            ));
            return Ok(false);
        }
        if !ft.is_file() {
            self.warn(format!("{}: unknown file type, skipped", path.display()));
            return Ok(false);
        }
        self.file(path, arch, is_root).map(|()| true)
    }

    fn file(&mut self, path: &Path, arch: &[u8], is_root: bool) -> Result<()> {
        let mut flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        if !is_root {
            flags |= libc::O_NOFOLLOW;
        }
        let mut f = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!(
                    "{}: file removed before we read it",
                    path.display()
                ));
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                self.warn(format!(
                    "{}: file changed type as we read it, skipped",
                    path.display()
                ));
                return Ok(());
            }
            Err(e) => {
                self.unreadable(path, &e);
                return Ok(());
            }
        };
        let meta = match f.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.unreadable(path, &e);
                return Ok(());
            }
        };
        if !meta.is_file() {
            self.warn(format!(
                "{}: file changed type as we read it, skipped",
                path.display()
            ));
            return Ok(());
        }
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                return self.header(arch, &meta, 0, Kind::Hardlink(first));
            }
            self.links.insert(key, arch.to_vec());
        }
        self.header(arch, &meta, meta.len(), Kind::File(&mut f))
    }

    /// Header (with GNU long name/link records as needed), then the data for
    /// regular files.
    fn header(&mut self, arch: &[u8], meta: &Metadata, size: u64, kind: Kind<'_>) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        let (ty, link) = match &kind {
            Kind::File(_) => (tar::EntryType::Regular, None),
            Kind::Dir => (tar::EntryType::Directory, None),
            Kind::Symlink(t) => (tar::EntryType::Symlink, Some(t.as_slice())),
            Kind::Hardlink(t) => (tar::EntryType::Link, Some(t.as_slice())),
        };
        if let Some(link) = link {
            if link.len() > 100 {
                self.long_record(b'K', link)?;
            }
            let n = link.len().min(100);
            h.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
        }
        if arch.len() > 100 {
            self.long_record(b'L', arch)?;
        }
        let n = arch.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&arch[..n]);
        h.set_entry_type(ty);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid() as u64);
        h.set_gid(meta.gid() as u64);
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(size);
        if let Some(u) = self.names.user(meta.uid()) {
            let _ = h.set_username(u);
        }
        if let Some(g) = self.names.group(meta.gid()) {
            let _ = h.set_groupname(g);
        }
        h.set_cksum();
        self.w(h.as_bytes())?;
        self.entries += 1;
        if self.progress.is_active() {
            self.progress.set_message(format!("{} files", self.entries));
        }
        if let Kind::File(f) = kind {
            self.copy_data(arch, f, meta, size)?;
        }
        Ok(())
    }

    /// A regular file made by the caller (`CreateRequest::generated`).
    fn generated(&mut self, name: &str, data: &[u8]) -> Result<()> {
        self.check_cancel()?;
        let arch = name.trim_start_matches('/').as_bytes();
        if arch.is_empty()
            || arch
                .split(|b| *b == b'/')
                .any(|c| c == b".." || c.is_empty())
        {
            return Err(Error::Usage(format!(
                "invalid generated archive path {name:?}"
            )));
        }
        let mut h = tar::Header::new_gnu();
        if arch.len() > 100 {
            self.long_record(b'L', arch)?;
        }
        let n = arch.len().min(100);
        h.as_old_mut().name[..n].copy_from_slice(&arch[..n]);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.w(h.as_bytes())?;
        self.w(data)?;
        self.pad(data.len() as u64)?;
        self.entries += 1;
        self.bytes_in += data.len() as u64;
        let sha = hex(&Sha256::digest(data));
        self.record_file(arch, data.len() as u64, 0o600, sha);
        Ok(())
    }

    fn record_file(&mut self, arch: &[u8], size: u64, mode: u32, sha256: String) {
        if self.files.len() >= MANIFEST_FILES_MAX {
            self.files_truncated = true;
            return;
        }
        self.files.push(FileEntry {
            path: String::from_utf8_lossy(arch).into_owned(),
            size,
            mode,
            sha256,
        });
    }

    fn long_record(&mut self, ty: u8, data: &[u8]) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::new(ty));
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(data.len() as u64 + 1);
        h.set_cksum();
        self.w(h.as_bytes())?;
        self.w(data)?;
        self.w(&[0])?;
        self.pad(data.len() as u64 + 1)
    }

    fn pad(&mut self, len: u64) -> Result<()> {
        let rem = len % BLOCK;
        if rem != 0 {
            self.w(&[0u8; BLOCK as usize][..(BLOCK - rem) as usize])?;
        }
        Ok(())
    }

    /// Exactly `size` bytes (the size in the header): a file that shrank is
    /// padded with zeros, one that grew is cut, both with GNU tar's warning.
    fn copy_data(&mut self, arch: &[u8], f: &mut File, before: &Metadata, size: u64) -> Result<()> {
        let path = Path::new(OsStr::from_bytes(arch));
        let display = || format!("/{}", path.display());
        #[cfg(test)]
        BEFORE_READ.with(|h| {
            if let Some(h) = h.borrow_mut().as_mut() {
                h(&Path::new("/").join(path));
            }
        });
        if size > 4 * BUF_SIZE as u64 {
            use std::os::fd::AsRawFd;
            // SAFETY: advisory only.
            unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
        }
        let mut remaining = size;
        let mut file_hash = Sha256::new();
        let mut failed = false;
        while remaining > 0 {
            let want = remaining.min(self.buf.len() as u64) as usize;
            let n = match f.read(&mut self.buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The header is written: the rest is padded with zeros
                    // below, and the file is reported as not read.
                    self.warn(format!(
                        "{}: read error after {} of {size} bytes ({e}); the rest is zeros in the archive",
                        display(),
                        size - remaining
                    ));
                    self.unreadable.push(display());
                    failed = true;
                    break;
                }
            };
            if n == 0 {
                break;
            }
            self.out
                .write_all(&self.buf[..n])
                .map_err(|e| Error::io(self.tmp, e))?;
            file_hash.update(&self.buf[..n]);
            self.progress.inc(n as u64);
            remaining -= n as u64;
        }
        let mut changed = failed;
        if remaining > 0 {
            if !failed {
                self.warn(format!(
                "{}: file changed as we read it: shrank by {remaining} bytes; padded with zeros",
                display()
            ));
            }
            changed = true;
            let zeros = [0u8; 8192];
            while remaining > 0 {
                let n = remaining.min(zeros.len() as u64) as usize;
                self.w(&zeros[..n])?;
                file_hash.update(&zeros[..n]);
                remaining -= n as u64;
            }
        }
        self.pad(size)?;
        let sha = hex(&file_hash.finalize());
        self.record_file(arch, size, before.mode() & 0o7777, sha);
        self.bytes_in += size;
        if !changed {
            if let Ok(after) = f.metadata() {
                if after.len() != size
                    || after.mtime() != before.mtime()
                    || after.mtime_nsec() != before.mtime_nsec()
                {
                    self.warn(format!("{}: file changed as we read it", display()));
                }
            }
        }
        Ok(())
    }
}
