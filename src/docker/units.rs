//! `systemd` services: the unit files, as `systemctl cat -- UNIT` prints
//! them (the unit and its drop-ins, each after a `# /path` line), stored in
//! the archive as `homelab-autopilot/systemd/UNIT`.

use crate::archive::{Capture, CapturedUnit};
use crate::error::{Error, Result};

/// Files made for an archive: `(archive path, contents)`.
pub type Generated = Vec<(String, Vec<u8>)>;

/// Where a unit's `systemctl cat` output is in the archive.
pub fn archive_path(unit: &str) -> String {
    format!("homelab-autopilot/systemd/{unit}")
}

/// `systemctl cat -- UNIT`, as `(archive path, contents)`, and the capture
/// that names it.
pub fn capture(unit: &str) -> Result<(Capture, Generated)> {
    let argv = super::hold::systemctl_argv("cat", unit);
    let out = crate::proc::run(
        &argv,
        &crate::proc::RunOptions {
            timeout_seconds: 60,
            max_output: 4 << 20,
            ..Default::default()
        },
    )?;
    if out.code != 0 || out.truncated {
        return Err(Error::Command {
            program: "systemctl".into(),
            message: format!(
                "systemctl cat {unit}: exit {}: {}",
                out.code,
                out.stderr.trim()
            ),
        });
    }
    let path = archive_path(unit);
    let capture = Capture {
        service_type: "systemd".into(),
        units: vec![CapturedUnit {
            unit: unit.to_string(),
            path: path.clone(),
        }],
        ..Default::default()
    };
    Ok((capture, vec![(path, out.stdout.into_bytes())]))
}
