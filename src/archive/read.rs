//! The read side shared by verify, list and extract: one streaming pass over
//! the archive file. A producer thread reads the file in 1 MiB chunks and
//! hashes them (sha2, SHA-NI when the CPU has it) while the calling thread
//! decodes zstd and walks the tar stream, so hashing and decoding overlap.

use super::BUF_SIZE;
use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

/// Chunks in flight between the reader thread and the decoder.
const QUEUE: usize = 4;
/// Longest GNU long name / long link accepted (PATH_MAX is 4096).
const MAX_LONG_NAME: u64 = 64 * 1024;
/// Largest pax extended header accepted.
const MAX_PAX: u64 = 1024 * 1024;
/// Zero padding accepted after the end-of-archive marker (GNU tar pads to
/// 10 KiB records).
const MAX_TRAILER: u64 = 1024 * 1024;

pub(super) struct Hashed {
    pub sha256: String,
    pub size: u64,
    /// False when the consumer stopped early and hashing was not requested
    /// to the end.
    pub complete: bool,
}

pub(super) fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// The consumer end of the pipe: a `BufRead` over the chunks.
pub(super) struct PipeReader {
    rx: Receiver<(Vec<u8>, usize)>,
    back: Sender<Vec<u8>>,
    cur: Vec<u8>,
    len: usize,
    pos: usize,
}

impl Read for PipeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for PipeReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.len {
            let old = std::mem::take(&mut self.cur);
            if old.capacity() > 0 {
                let _ = self.back.send(old);
            }
            match self.rx.recv() {
                Ok((buf, n)) => {
                    self.cur = buf;
                    self.len = n;
                    self.pos = 0;
                }
                Err(_) => {
                    self.len = 0;
                    self.pos = 0;
                }
            }
        }
        Ok(&self.cur[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

fn produce(
    mut file: File,
    tx: SyncSender<(Vec<u8>, usize)>,
    pool: Receiver<Vec<u8>>,
    hash_to_end: bool,
) -> io::Result<Hashed> {
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut forwarding = true;
    let mut spare: Option<Vec<u8>> = None;
    loop {
        let mut buf = match spare.take() {
            Some(b) => b,
            None => pool.try_recv().unwrap_or_else(|_| vec![0u8; BUF_SIZE]),
        };
        let n = loop {
            match file.read(&mut buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        if forwarding {
            if let Err(back) = tx.send((buf, n)) {
                forwarding = false;
                if !hash_to_end {
                    return Ok(Hashed {
                        sha256: hex(&hasher.finalize()),
                        size,
                        complete: false,
                    });
                }
                spare = Some(back.0 .0);
            }
        } else {
            spare = Some(buf);
        }
    }
    Ok(Hashed {
        sha256: hex(&hasher.finalize()),
        size,
        complete: true,
    })
}

/// Run `consume` over the file's bytes while a second thread reads and hashes
/// them. `consume` owns the reader; when it returns, the reader thread keeps
/// hashing to the end of the file if `hash_to_end`.
pub(super) fn hashed_stream<T>(
    file: File,
    hash_to_end: bool,
    consume: impl FnOnce(PipeReader) -> T,
) -> (T, io::Result<Hashed>) {
    let (tx, rx) = sync_channel(QUEUE);
    let (back_tx, back_rx) = channel();
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(file, tx, back_rx, hash_to_end));
        let out = consume(PipeReader {
            rx,
            back: back_tx,
            cur: Vec::new(),
            len: 0,
            pos: 0,
        });
        let hashed = producer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("archive reader thread panicked")));
        (out, hashed)
    })
}

/// Counts decompressed bytes, enforces a cap (decompression bombs) and
/// remembers whether the stream hit EOF.
pub(super) struct Counted<R> {
    inner: R,
    pub total: u64,
    pub cap: u64,
    pub eof: bool,
    /// Shared so that the caller can tell a cap refusal from other errors
    /// after the reader moved into the tar archive.
    pub over_cap: std::rc::Rc<std::cell::Cell<bool>>,
}

impl<R> Counted<R> {
    pub fn new(inner: R, cap: u64) -> Self {
        Counted {
            inner,
            total: 0,
            cap,
            eof: false,
            over_cap: Default::default(),
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.over_cap.get() {
            return Err(io::Error::other("decompressed size cap exceeded"));
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        self.total += n as u64;
        if self.total > self.cap {
            self.over_cap.set(true);
            return Err(io::Error::other("decompressed size cap exceeded"));
        }
        Ok(n)
    }
}

/// The first four bytes of every zstd frame.
pub(crate) const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// An archive's tar stream: decoded from zstd (`NAME.tar.zst`), or read as
/// it is (`NAME.tar`, `global.backup.compression: false`).
pub(super) enum Stream<R: BufRead> {
    Zstd(zstd::stream::read::Decoder<'static, R>),
    Plain(R),
}

impl<R: BufRead> Read for Stream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Zstd(d) => d.read(buf),
            Stream::Plain(r) => r.read(buf),
        }
    }
}

pub(super) type Decoded<R> = Counted<Stream<R>>;

/// A tar reader over `input` (through the zstd decoder when it starts with
/// zstd's magic number; a plain tar never does, its first bytes are a file
/// name), with its cap flag.
#[allow(clippy::type_complexity)]
pub(super) fn decoder<R: BufRead>(
    archive: &Path,
    mut input: R,
    cap: u64,
) -> Result<(tar::Archive<Decoded<R>>, std::rc::Rc<std::cell::Cell<bool>>)> {
    let head = input.fill_buf().map_err(|e| Error::io(archive, e))?;
    let stream = if head.starts_with(&ZSTD_MAGIC) {
        Stream::Zstd(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| bad_io(archive, "zstd", e))?,
        )
    } else {
        Stream::Plain(input)
    };
    let c = Counted::new(stream, cap);
    let flag = c.over_cap.clone();
    Ok((tar::Archive::new(c), flag))
}

pub(super) fn bad(archive: &Path, message: impl Into<String>) -> Error {
    Error::UnsafeArchive {
        path: archive.to_path_buf(),
        message: message.into(),
        source: None,
    }
}

/// [`bad`] for a decoder's error: `what: error`, the error kept as source.
pub(super) fn bad_io(archive: &Path, what: &str, e: std::io::Error) -> Error {
    Error::UnsafeArchive {
        path: archive.to_path_buf(),
        message: format!("{what}: {e}"),
        source: Some(e),
    }
}

/// One logical tar entry, after GNU long name/link and pax path records were
/// applied.
pub(super) struct Logical<'p> {
    pub header: &'p tar::Header,
    pub path: &'p [u8],
    pub link: Option<&'p [u8]>,
    pub size: u64,
}

fn read_meta<R: Read>(
    archive: &Path,
    e: &mut tar::Entry<'_, R>,
    max: u64,
    what: &str,
) -> Result<Vec<u8>> {
    let size = e.size();
    if size > max {
        return Err(bad(
            archive,
            format!("{what} of {size} bytes (limit {max})"),
        ));
    }
    let mut v = Vec::with_capacity(size as usize);
    e.read_to_end(&mut v)
        .map_err(|err| bad_io(archive, what, err))?;
    if v.len() as u64 != size {
        return Err(bad(archive, format!("{what}: truncated")));
    }
    Ok(v)
}

fn long_name(archive: &Path, mut v: Vec<u8>) -> Result<Vec<u8>> {
    while v.last() == Some(&0) {
        v.pop();
    }
    if v.contains(&0) {
        return Err(bad(archive, "NUL byte inside a long name"));
    }
    Ok(v)
}

/// (path, linkpath) from a pax header.
type PaxPaths = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Parse pax records `"<len> <key>=<value>\n"`; returns (path, linkpath).
/// A `size` record is refused: we never write one, and a size that disagrees
/// with the header is how parser-differential attacks work.
fn parse_pax(archive: &Path, data: &[u8]) -> Result<PaxPaths> {
    let (mut path, mut link) = (None, None);
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| bad(archive, "malformed pax record"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&l| l > sp + 1 && l <= rest.len())
            .ok_or_else(|| bad(archive, "malformed pax record length"))?;
        let rec = &rest[sp + 1..len];
        let rec = rec
            .strip_suffix(b"\n")
            .ok_or_else(|| bad(archive, "malformed pax record"))?;
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| bad(archive, "malformed pax record"))?;
        let (k, v) = (&rec[..eq], &rec[eq + 1..]);
        match k {
            b"path" => path = Some(v.to_vec()),
            b"linkpath" => link = Some(v.to_vec()),
            b"size" | b"GNU.sparse.size" | b"GNU.sparse.map" | b"GNU.sparse.major" => {
                return Err(bad(
                    archive,
                    format!("unsupported pax record {:?}", String::from_utf8_lossy(k)),
                ))
            }
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok((path, link))
}

/// Walk every logical entry. `visit` gets the entry (a `Read` over its data)
/// and may read its data; unread data is skipped by the tar reader.
pub(super) fn walk<R: Read>(
    archive_path: &Path,
    ar: &mut tar::Archive<R>,
    mut visit: impl FnMut(&mut tar::Entry<'_, R>, &Logical<'_>) -> Result<()>,
) -> Result<()> {
    let entries = ar
        .entries()
        .map_err(|e| bad_io(archive_path, "tar", e))?
        .raw(true);
    let mut long_path: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<PaxPaths> = None;
    for e in entries {
        let mut e = e.map_err(|e| bad_io(archive_path, "tar", e))?;
        match e.header().entry_type().as_byte() {
            b'L' => {
                if long_path.is_some() {
                    return Err(bad(archive_path, "two GNU long names for one entry"));
                }
                let v = read_meta(archive_path, &mut e, MAX_LONG_NAME, "GNU long name")?;
                long_path = Some(long_name(archive_path, v)?);
                continue;
            }
            b'K' => {
                if long_link.is_some() {
                    return Err(bad(archive_path, "two GNU long links for one entry"));
                }
                let v = read_meta(archive_path, &mut e, MAX_LONG_NAME, "GNU long link")?;
                long_link = Some(long_name(archive_path, v)?);
                continue;
            }
            b'x' => {
                if pax.is_some() {
                    return Err(bad(archive_path, "two pax headers for one entry"));
                }
                let v = read_meta(archive_path, &mut e, MAX_PAX, "pax header")?;
                pax = Some(parse_pax(archive_path, &v)?);
                continue;
            }
            b'g' => {
                // Global pax header (git archive writes a comment): ignored.
                read_meta(archive_path, &mut e, MAX_PAX, "pax global header")?;
                continue;
            }
            _ => {}
        }
        let (pax_path, pax_link) = pax.take().unwrap_or_default();
        let header = e.header().clone();
        let path: Vec<u8> = match long_path.take().or(pax_path) {
            Some(p) => p,
            None => header.path_bytes().into_owned(),
        };
        let link: Option<Vec<u8>> = long_link
            .take()
            .or(pax_link)
            .or_else(|| header.link_name_bytes().map(|c| c.into_owned()));
        let size = e.size();
        let logical = Logical {
            header: &header,
            path: &path,
            link: link.as_deref(),
            size,
        };
        visit(&mut e, &logical)?;
    }
    if long_path.is_some() || long_link.is_some() || pax.is_some() {
        return Err(bad(
            archive_path,
            "extension header without a following entry",
        ));
    }
    Ok(())
}

/// After `walk`: the tar stream must have ended on its end-of-archive marker
/// (not on EOF: a truncated stream), be followed only by zero padding, and
/// the zstd stream must end cleanly.
pub(super) fn finish<R: Read>(
    archive_path: &Path,
    ar: tar::Archive<Counted<R>>,
) -> Result<Counted<R>> {
    let mut c = ar.into_inner();
    if c.eof {
        return Err(bad(archive_path, "truncated: no end-of-archive marker"));
    }
    let mut buf = [0u8; 8192];
    let mut trailer = 0u64;
    loop {
        let n = match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad_io(archive_path, "zstd", e)),
        };
        trailer += n as u64;
        if buf[..n].iter().any(|&b| b != 0) {
            return Err(bad(archive_path, "data after the end-of-archive marker"));
        }
        if trailer > MAX_TRAILER {
            return Err(bad(
                archive_path,
                "excessive padding after the end-of-archive marker",
            ));
        }
    }
    Ok(c)
}

/// Map an entry kind to the names in `EntryInfo::kind`.
pub(super) fn kind_name(t: u8) -> &'static str {
    match t {
        b'0' | 0 | b'7' => "file",
        b'5' => "dir",
        b'2' => "symlink",
        b'1' => "hardlink",
        b'3' => "char",
        b'4' => "block",
        b'6' => "fifo",
        _ => "other",
    }
}
