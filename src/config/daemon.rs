//! `daemon:`: how `homelab-autopilot daemon` reads and keeps the schedules
//! (docs/scheduling.md).

use crate::schedule::Zone;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// The zone the `schedule` keys are read in: `local` (the default) or
    /// an IANA name such as `Europe/Berlin`.
    pub timezone: Zone,
    /// Each scheduled run starts up to this many seconds after its slot,
    /// at random (0: on the minute).
    pub jitter_seconds: u64,
    /// A slot missed while the daemon was not running is run once when it
    /// starts again (as systemd's `Persistent=true`).
    pub catch_up: bool,
    /// After SIGTERM, how long running workflows may take to finish before
    /// they are asked to stop at their next safe point.
    pub stop_grace_seconds: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            timezone: Zone::Local,
            jitter_seconds: 0,
            catch_up: true,
            stop_grace_seconds: 120,
        }
    }
}
