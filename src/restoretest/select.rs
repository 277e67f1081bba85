//! Which services a restore-test run tests: `restore_testing.random_services`
//! of them, drawn with weights (the service's `priority`, and the time since
//! its last test: a service never tested, or tested long ago, comes first),
//! and spread over the kinds of copy (an archive and a Docker project before
//! two of either). Services named with `--service` are all tested.

use super::kind_for;
use crate::config::{Config, RestoreTestPriority, ServiceConfig};
use crate::error::Result;
use crate::state::Store;
use std::collections::{BTreeSet, HashMap};

/// Whether a service takes part in restore tests at all.
pub fn eligible(svc: &ServiceConfig) -> bool {
    svc.enabled && svc.backup && svc.restore_testing.as_ref().is_none_or(|r| r.enabled)
}

fn priority_weight(svc: &ServiceConfig) -> f64 {
    match svc.restore_testing.as_ref().map(|r| r.priority) {
        Some(RestoreTestPriority::High) => 4.0,
        Some(RestoreTestPriority::Low) => 1.0,
        _ => 2.0,
    }
}

/// A small xorshift generator seeded from the clock and the pid: enough to
/// break ties between equal services, nothing secret.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t ^ (u64::from(std::process::id()) << 32) | 1)
    }
    /// In [0, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The names to test, in order. `chosen`: the user named them
/// (`--service`): every one is tested, supported or not (the workflow says
/// why it skips one).
pub fn select(
    cfg: &Config,
    store: Option<&Store>,
    services: &[&ServiceConfig],
    chosen: bool,
) -> Result<Vec<String>> {
    if chosen {
        return Ok(services.iter().map(|s| s.name.clone()).collect());
    }
    let n = cfg.global.backup.restore_testing().random_services as usize;
    let last: HashMap<String, i64> = match store {
        Some(s) => s
            .last_restore_tests()?
            .into_iter()
            .map(|r| (r.service, r.started_at))
            .collect(),
        None => HashMap::new(),
    };
    let now = chrono::Utc::now().timestamp();
    let mut rng = Rng::new();
    let mut scored: Vec<(f64, &str, &str)> = services
        .iter()
        .filter(|s| eligible(s))
        .filter_map(|s| {
            let kind = kind_for(s.service_type)?;
            let days = last
                .get(&s.name)
                .map(|t| ((now - t).max(0) as f64 / 86400.0).min(365.0))
                .unwrap_or(366.0);
            let w = priority_weight(s) * (days + 1.0) * (0.75 + 0.5 * rng.next());
            Some((w, s.name.as_str(), kind))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    // Round by round, the best service of each kind not yet taken this round.
    let mut out = Vec::new();
    while out.len() < n && !scored.is_empty() {
        let mut kinds = BTreeSet::new();
        let mut i = 0;
        while i < scored.len() && out.len() < n {
            if kinds.insert(scored[i].2) {
                out.push(scored.remove(i).1.to_string());
            } else {
                i += 1;
            }
        }
    }
    Ok(out)
}
