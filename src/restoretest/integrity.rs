//! Integrity (tier 1) of a Proxmox vzdump file reachable from this host:
//! its size, a readable header (a VMA image for VMs, a tar archive for
//! containers), and for `.zst` a full decode (zstd checks every frame). A
//! file compressed with something we cannot decode (`.gz`, `.lzo`) is
//! checked by size and its compressor's magic bytes only.

use crate::error::{Error, Result};
use serde::Serialize;
use std::io::Read;
use std::path::Path;

/// What [`verify_vzdump`] found.
#[derive(Debug, Clone, Serialize)]
pub struct VzdumpCheck {
    pub size: u64,
    /// `vma` or `tar`.
    pub format: String,
    /// `full` (decoded to the end) or `header` (size and header only).
    pub depth: String,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::UnsafeArchive {
        path: path.to_path_buf(),
        message: message.into(),
        source: None,
    }
}

/// The format a decoded stream's first bytes show.
fn format_of(head: &[u8]) -> Option<&'static str> {
    if head.starts_with(b"VMA\0") {
        Some("vma")
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some("tar")
    } else {
        None
    }
}

/// Verify a vzdump file (see the module docs).
pub fn verify_vzdump(path: &Path) -> Result<VzdumpCheck> {
    let io = |e| Error::io(path, e);
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size == 0 {
        return Err(bad(path, "empty file"));
    }
    let name = path.to_string_lossy();
    let mut f = std::fs::File::open(path).map_err(io)?;
    if name.ends_with(".zst") {
        let mut dec = zstd::stream::read::Decoder::new(f).map_err(io)?;
        let mut head = vec![0u8; 512];
        let mut got = 0;
        while got < head.len() {
            let n = dec
                .read(&mut head[got..])
                .map_err(|e| bad(path, format!("zstd decode failed: {e}")))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let format = format_of(&head[..got])
            .ok_or_else(|| bad(path, "neither a VMA image nor a tar archive"))?;
        std::io::copy(&mut dec, &mut std::io::sink())
            .map_err(|e| bad(path, format!("zstd decode failed: {e}")))?;
        return Ok(VzdumpCheck {
            size,
            format: format.into(),
            depth: "full".into(),
        });
    }
    let mut head = vec![0u8; 512];
    let n = f.read(&mut head).map_err(io)?;
    let head = &head[..n];
    let (format, depth) = if name.ends_with(".gz") || name.ends_with(".lzo") {
        let magic: &[u8] = if name.ends_with(".gz") {
            b"\x1f\x8b"
        } else {
            b"\x89LZO"
        };
        if !head.starts_with(magic) {
            return Err(bad(path, "not the compressed stream its name says"));
        }
        let f = if name.contains(".vma.") { "vma" } else { "tar" };
        (f, "header")
    } else {
        let f =
            format_of(head).ok_or_else(|| bad(path, "neither a VMA image nor a tar archive"))?;
        (f, "header")
    };
    Ok(VzdumpCheck {
        size,
        format: format.into(),
        depth: depth.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vma_and_tar_dumps_are_read_and_corruption_is_found() {
        let d = tempfile::tempdir().unwrap();
        let mut vma = b"VMA\0".to_vec();
        vma.extend(std::iter::repeat_n(7u8, 100_000));
        let p = d.path().join("vzdump-qemu-100-2026_01_01-00_00_00.vma.zst");
        std::fs::write(&p, zstd::encode_all(&vma[..], 3).unwrap()).unwrap();
        let c = verify_vzdump(&p).unwrap();
        assert_eq!((c.format.as_str(), c.depth.as_str()), ("vma", "full"));

        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        let t = d.path().join("vzdump-lxc-101-2026_01_01-00_00_00.tar");
        std::fs::write(&t, &tar).unwrap();
        assert_eq!(verify_vzdump(&t).unwrap().format, "tar");

        // A flipped byte in the compressed stream, a truncated stream, an
        // empty file, a file of something else.
        let mut z = zstd::encode_all(&vma[..], 3).unwrap();
        let mid = z.len() / 2;
        z[mid] ^= 0xff;
        std::fs::write(&p, &z).unwrap();
        assert!(verify_vzdump(&p).is_err());
        let z = zstd::encode_all(&vma[..], 3).unwrap();
        std::fs::write(&p, &z[..z.len() - 8]).unwrap();
        assert!(verify_vzdump(&p).is_err());
        std::fs::write(&t, b"").unwrap();
        assert!(verify_vzdump(&t).is_err());
        std::fs::write(&t, b"hello").unwrap();
        assert!(verify_vzdump(&t).is_err());
    }
}
