//! Integrity (tier 1) of a Proxmox vzdump file reachable from this host:
//! its size, a readable header (a VMA image for VMs, a tar archive for
//! containers), and for `.zst` a full decode (zstd checks every frame). A
//! file compressed with something we cannot decode (`.gz`, `.lzo`) is
//! checked by size and its compressor's magic bytes only.
//!
//! A PBS snapshot is verified by PBS itself: its recorded verification
//! state is read, and a verify job started (and waited for) when the last
//! verification is older than `restore_testing.pbs_verify_max_age_days`.

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

/// What PBS says of one snapshot (`verify_pbs`).
#[derive(Debug, Clone, Serialize)]
pub struct PbsCheck {
    pub datastore: String,
    pub backup_type: String,
    pub backup_id: String,
    pub backup_time: i64,
    /// `ok`, `failed` or `none` (never verified).
    pub state: String,
    /// When the verification that gave `state` ran.
    pub verified_at: Option<i64>,
    /// The verify task this check started, if it started one.
    pub verify_task: Option<String>,
}

/// The PBS API client, datastore and namespace of
/// `global.backup.proxmox_backup_server`.
pub type PbsApi = (crate::pve::pbs::Pbs, String, Option<String>);

/// [`PbsApi`], when `proxmox_backup_server` names a server and a datastore
/// (a client that cannot be built is logged as a warning).
pub fn pbs_api(cfg: &crate::config::Config) -> Option<PbsApi> {
    let p = cfg.global.backup.proxmox_backup_server.as_ref()?;
    let datastore = p.datastore.clone()?;
    p.server.as_ref()?;
    match crate::pve::connect::pbs_from_config(p) {
        Ok((pbs, warnings)) => {
            for w in warnings {
                tracing::warn!("{w}");
            }
            Some((pbs, datastore, p.namespace.clone()))
        }
        Err(e) => {
            tracing::warn!("PBS snapshots cannot be asked about: {e}");
            None
        }
    }
}

/// `(type, id, time)` of a PBS volume id as PVE lists it:
/// `<storage>:backup/<vm|ct|host>/<id>/<RFC 3339 time>`.
pub fn parse_pbs_volid(volid: &str) -> Option<(String, String, i64)> {
    let (_, name) = volid.split_once(':')?;
    let mut p = name.strip_prefix("backup/")?.splitn(3, '/');
    let (t, id, time) = (p.next()?, p.next()?, p.next()?);
    if !["vm", "ct", "host"].contains(&t) || id.is_empty() {
        return None;
    }
    let time = chrono::DateTime::parse_from_rfc3339(time).ok()?.timestamp();
    Some((t.into(), id.into(), time))
}

/// A PBS snapshot's verification: its state as PBS recorded it, and a
/// new verify (waited for) when it was never verified or its last
/// verification is older than `max_age_days` (0: never start one).
pub fn verify_pbs(
    pbs: &crate::pve::pbs::Pbs,
    datastore: &str,
    ns: Option<&str>,
    volid: &str,
    max_age_days: u32,
    now: i64,
) -> Result<PbsCheck> {
    let (t, id, time) = parse_pbs_volid(volid).ok_or_else(|| {
        Error::Usage(format!(
            "{volid}: not a PBS backup volume (<storage>:backup/<type>/<id>/<time>)"
        ))
    })?;
    let snaps = pbs
        .snapshots(datastore, ns, Some(&t), Some(&id))
        .map_err(Error::Pve)?;
    let snap = snaps
        .iter()
        .find(|s| s.backup_time == time)
        .ok_or_else(|| {
            Error::Other(format!(
                "{volid}: snapshot {t}/{id}/{time} is not in datastore {datastore}"
            ))
        })?;
    let mut out = PbsCheck {
        datastore: datastore.into(),
        backup_type: t.clone(),
        backup_id: id.clone(),
        backup_time: time,
        state: snap.verification.clone(),
        verified_at: snap.verified_at,
        verify_task: None,
    };
    let max_age = i64::from(max_age_days) * 86400;
    let due = max_age_days > 0
        && (out.state == "none" || out.verified_at.is_none_or(|v| now - v > max_age));
    if due {
        match pbs.verify(datastore, ns, Some(&t), Some(&id), Some(time)) {
            Ok(r) => {
                out.state = "ok".into();
                out.verified_at = Some(now);
                out.verify_task = Some(r.upid);
            }
            Err(crate::pve::PveError::TaskFailed { upid, .. }) => {
                out.state = "failed".into();
                out.verified_at = Some(now);
                out.verify_task = Some(upid);
            }
            Err(e) => return Err(Error::Pve(e)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pbs_volids_name_their_snapshot() {
        assert_eq!(
            parse_pbs_volid("pbs:backup/vm/100/2026-01-02T03:04:05Z"),
            Some(("vm".into(), "100".into(), 1_767_323_045))
        );
        assert_eq!(
            parse_pbs_volid("pbs:backup/ct/200/2026-01-02T03:04:05Z").map(|v| v.0),
            Some("ct".into())
        );
        for bad in [
            "local:backup/vzdump-qemu-100-2026_01_02-03_04_05.vma.zst",
            "pbs:backup/vm/100/yesterday",
            "pbs:images/vm/100/2026-01-02T03:04:05Z",
        ] {
            assert_eq!(parse_pbs_volid(bad), None, "{bad}");
        }
    }

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
