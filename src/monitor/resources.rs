//! Host resources: disk usage of mount points (statvfs), memory in use
//! (`/proc/meminfo` MemAvailable), 1-minute load (`/proc/loadavg`), and the
//! warnings `monitoring.resources` asks for.

use crate::config::ResourcesConfig;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct DiskUsage {
    pub path: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_percent: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Resources {
    pub disks: Vec<DiskUsage>,
    pub memory_used_percent: Option<f64>,
    pub load1: Option<f64>,
    /// Thresholds crossed: `#{kind, subject, summary}`.
    pub warnings: Vec<ResourceWarning>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResourceWarning {
    /// `disk`, `memory` or `load`.
    pub kind: String,
    pub subject: String,
    pub summary: String,
}

pub fn disk_usage(path: &Path) -> std::io::Result<DiskUsage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs writes into the zeroed struct we own; `c` is a valid
    // NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    let total = st.f_blocks as u64 * frsize;
    let avail = st.f_bavail as u64 * frsize;
    let free = st.f_bfree as u64 * frsize;
    let used = total.saturating_sub(free);
    // As df computes it: used / (used + available to unprivileged users).
    let denom = used + avail;
    Ok(DiskUsage {
        path: path.display().to_string(),
        total_bytes: total,
        available_bytes: avail,
        used_percent: if denom == 0 {
            0.0
        } else {
            used as f64 * 100.0 / denom as f64
        },
    })
}

pub fn memory_used_percent() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let total = field("MemTotal:")?;
    let avail = field("MemAvailable:")?;
    (total > 0.0).then(|| (total - avail) * 100.0 / total)
}

pub fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Measure and compare with the configured thresholds.
pub fn check(cfg: &ResourcesConfig) -> Resources {
    let mut warnings = Vec::new();
    let mut disks = Vec::new();
    for p in &cfg.paths {
        match disk_usage(p) {
            Ok(d) => {
                if d.used_percent >= cfg.disk_warn_percent as f64 {
                    warnings.push(ResourceWarning {
                        kind: "disk".into(),
                        subject: d.path.clone(),
                        summary: format!(
                            "{} is {:.0}% full ({} free; disk_warn_percent {})",
                            d.path,
                            d.used_percent,
                            crate::units::human_bytes(d.available_bytes),
                            cfg.disk_warn_percent
                        ),
                    });
                }
                disks.push(d);
            }
            Err(e) => warnings.push(ResourceWarning {
                kind: "disk".into(),
                subject: p.display().to_string(),
                summary: format!("cannot read the usage of {}: {e}", p.display()),
            }),
        }
    }
    let mem = memory_used_percent();
    if let Some(m) = mem.filter(|m| *m >= cfg.memory_warn_percent as f64) {
        warnings.push(ResourceWarning {
            kind: "memory".into(),
            subject: "memory".into(),
            summary: format!(
                "memory is {m:.0}% used (memory_warn_percent {})",
                cfg.memory_warn_percent
            ),
        });
    }
    let load = load1();
    if let Some(l) = load.filter(|l| cfg.load_warn > 0.0 && *l >= cfg.load_warn) {
        warnings.push(ResourceWarning {
            kind: "load".into(),
            subject: "load".into(),
            summary: format!("1-minute load is {l:.2} (load_warn {})", cfg.load_warn),
        });
    }
    Resources {
        disks,
        memory_used_percent: mem,
        load1: load,
        warnings,
    }
}
