//! What is due when: pure, driven by the caller's clock, so it is tested
//! with a fake one.
//!
//! Per job the planner keeps the newest slot dealt with (`last`, stored in
//! the state DB) and the next slot after it with its jitter delay. At each
//! [`Planner::tick`] a job whose next slot (plus delay) has come is due:
//! - its workflow still running: the slot is [`SlotAction::Skipped`];
//! - else it is [`SlotAction::Started`], once, however many slots passed
//!   while the daemon was down (the newest of them is taken);
//! - with catch-up off, a slot that passed more than [`STALE`] beyond its
//!   delay ago (the daemon was not running) is [`SlotAction::Missed`].
//!
//! A job seen for the first time starts from "now" ([`SlotAction::Seeded`]):
//! slots before the daemon first knew of it are not owed.

use super::Job;
use crate::schedule::Zone;
use crate::state::SlotAction;
use chrono::{DateTime, Duration, Utc};

/// A slot found later than this after its time (plus jitter) was missed,
/// not merely noticed late by a busy loop.
pub const STALE: Duration = Duration::seconds(90);

/// How the planner reads the schedules.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub zone: Zone,
    /// Each slot's start is delayed by a random 0..=jitter.
    pub jitter: Duration,
    pub catch_up: bool,
}

/// One decision for the caller to carry out and record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub workflow: String,
    pub expression: String,
    pub slot: DateTime<Utc>,
    pub action: SlotAction,
    /// Slots passed over before `slot` (downtime); 0 normally.
    pub passed_over: u32,
    /// The slot passed before the planner started: the daemon was down.
    pub caught_up: bool,
    /// The slot planned after this one.
    pub next: Option<DateTime<Utc>>,
}

struct Entry {
    job: Job,
    last: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    delay: Duration,
}

/// The schedule of every job.
pub struct Planner {
    settings: Settings,
    entries: Vec<Entry>,
    /// When the planner was made (the daemon started or reloaded).
    since: DateTime<Utc>,
    random: Box<dyn FnMut(u64) -> u64 + Send>,
}

impl Planner {
    /// Plan `jobs` at `now`; `stored(workflow)` is the newest slot the
    /// state DB has for it. `random(n)` returns a number in `0..=n` (the
    /// jitter). The decisions returned are the seeds of new jobs.
    pub fn new(
        settings: Settings,
        jobs: Vec<Job>,
        stored: impl Fn(&str) -> Option<DateTime<Utc>>,
        random: Box<dyn FnMut(u64) -> u64 + Send>,
        now: DateTime<Utc>,
    ) -> (Planner, Vec<Decision>) {
        let mut p = Planner {
            settings,
            entries: Vec::new(),
            since: now,
            random,
        };
        let mut seeds = Vec::new();
        for job in jobs {
            let (last, seeded) = match stored(&job.workflow) {
                Some(t) => (t, false),
                None => (now, true),
            };
            let mut e = Entry {
                job,
                last,
                next: None,
                delay: Duration::zero(),
            };
            p.plan_next(&mut e);
            if seeded {
                seeds.push(decision(&e, now, SlotAction::Seeded, 0));
            }
            p.entries.push(e);
        }
        (p, seeds)
    }

    fn plan_next(&mut self, e: &mut Entry) {
        e.next = e.job.schedule.next_in(self.settings.zone, e.last);
        let j = self.settings.jitter.num_seconds().max(0) as u64;
        e.delay = Duration::seconds(if j == 0 { 0 } else { (self.random)(j) as i64 });
    }

    /// The decisions due at `now`. `running(workflow)` says whether a run
    /// of it is still going.
    pub fn tick(&mut self, now: DateTime<Utc>, running: impl Fn(&str) -> bool) -> Vec<Decision> {
        let mut out = Vec::new();
        let zone = self.settings.zone;
        let mut entries = std::mem::take(&mut self.entries);
        for e in &mut entries {
            let Some(next) = e.next else { continue };
            if now < next + e.delay {
                continue;
            }
            // The newest slot not after now; the ones before it are passed
            // over (the run would only repeat itself).
            let mut slot = next;
            let mut passed = 0u32;
            while let Some(n) = e.job.schedule.next_in(zone, slot).filter(|n| *n <= now) {
                slot = n;
                passed += 1;
                if passed >= 1_000_000 {
                    break;
                }
            }
            let stale = now - slot > e.delay + STALE;
            let action = if stale && !self.settings.catch_up {
                SlotAction::Missed
            } else if running(&e.job.workflow) {
                SlotAction::Skipped
            } else {
                SlotAction::Started
            };
            e.last = slot;
            self.plan_next(e);
            let mut d = decision(e, slot, action, passed);
            d.caught_up = slot < self.since;
            out.push(d);
        }
        self.entries = entries;
        out
    }

    /// When the next tick can have something to do.
    pub fn next_wake(&self) -> Option<DateTime<Utc>> {
        self.entries
            .iter()
            .filter_map(|e| e.next.map(|n| n + e.delay))
            .min()
    }

    /// Each job with its next slot (without jitter).
    pub fn upcoming(&self) -> Vec<(&Job, Option<DateTime<Utc>>)> {
        self.entries.iter().map(|e| (&e.job, e.next)).collect()
    }
}

fn decision(e: &Entry, slot: DateTime<Utc>, action: SlotAction, passed_over: u32) -> Decision {
    Decision {
        workflow: e.job.workflow.clone(),
        expression: e.job.schedule.as_str().to_string(),
        slot,
        action,
        passed_over,
        caught_up: false,
        next: e.next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::CronSchedule;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn job(wf: &str, expr: &str) -> Job {
        Job {
            workflow: wf.into(),
            key: "test.schedule",
            schedule: CronSchedule::parse(expr).unwrap(),
        }
    }

    fn utc_settings(jitter: i64, catch_up: bool) -> Settings {
        Settings {
            zone: Zone::parse("UTC").unwrap(),
            jitter: Duration::seconds(jitter),
            catch_up,
        }
    }

    fn fixed(n: u64) -> Box<dyn FnMut(u64) -> u64 + Send> {
        Box::new(move |max| n.min(max))
    }

    fn summary(d: &[Decision]) -> Vec<String> {
        d.iter()
            .map(|d| {
                format!(
                    "{} {} {} +{}",
                    d.workflow,
                    d.slot.format("%d %H:%M"),
                    d.action.as_str(),
                    d.passed_over
                )
            })
            .collect()
    }

    #[test]
    fn a_new_job_is_seeded_and_fires_at_its_next_slot_only() {
        let now = t("2025-01-01T02:10:00Z");
        let (mut p, seeds) = Planner::new(
            utc_settings(0, true),
            vec![job("backup", "30 2 * * *")],
            |_| None,
            fixed(0),
            now,
        );
        assert_eq!(summary(&seeds), ["backup 01 02:10 seeded +0"]);
        assert_eq!(p.next_wake(), Some(t("2025-01-01T02:30:00Z")));
        assert!(p.tick(t("2025-01-01T02:29:59Z"), |_| false).is_empty());
        assert_eq!(
            summary(&p.tick(t("2025-01-01T02:30:00Z"), |_| false)),
            ["backup 01 02:30 started +0"]
        );
        // The same slot never fires twice.
        assert!(p.tick(t("2025-01-01T02:30:30Z"), |_| false).is_empty());
        assert_eq!(p.next_wake(), Some(t("2025-01-02T02:30:00Z")));
    }

    #[test]
    fn downtime_is_caught_up_once_with_the_newest_slot() {
        // Last slot recorded on the 1st; the daemon comes back on the 4th.
        let (mut p, seeds) = Planner::new(
            utc_settings(0, true),
            vec![job("backup", "30 2 * * *")],
            |_| Some(t("2025-01-01T02:30:00Z")),
            fixed(0),
            t("2025-01-04T09:00:00Z"),
        );
        assert!(seeds.is_empty());
        let d = p.tick(t("2025-01-04T09:00:00Z"), |_| false);
        assert_eq!(summary(&d), ["backup 04 02:30 started +2"]);
        assert!(d[0].caught_up);
        assert_eq!(d[0].next, Some(t("2025-01-05T02:30:00Z")));
        assert!(p.tick(t("2025-01-04T09:00:01Z"), |_| false).is_empty());
    }

    #[test]
    fn without_catch_up_a_slot_missed_while_down_is_recorded_not_run() {
        let (mut p, _) = Planner::new(
            utc_settings(0, false),
            vec![job("backup", "30 2 * * *")],
            |_| Some(t("2025-01-01T02:30:00Z")),
            fixed(0),
            t("2025-01-02T09:00:00Z"),
        );
        assert_eq!(
            summary(&p.tick(t("2025-01-02T09:00:00Z"), |_| false)),
            ["backup 02 02:30 missed +0"]
        );
        // A slot noticed a little late (a busy machine) still runs.
        assert_eq!(
            summary(&p.tick(t("2025-01-03T02:31:00Z"), |_| false)),
            ["backup 03 02:30 started +0"]
        );
    }

    #[test]
    fn a_slot_whose_workflow_still_runs_is_skipped_and_the_next_one_runs() {
        let (mut p, _) = Planner::new(
            utc_settings(0, true),
            vec![job("monitor", "* * * * *"), job("backup", "*/2 * * * *")],
            |_| Some(t("2025-01-01T00:00:00Z")),
            fixed(0),
            t("2025-01-01T00:00:30Z"),
        );
        assert_eq!(
            summary(&p.tick(t("2025-01-01T00:01:00Z"), |w| w == "monitor")),
            ["monitor 01 00:01 skipped +0"]
        );
        assert_eq!(
            summary(&p.tick(t("2025-01-01T00:02:00Z"), |w| w == "monitor")),
            ["monitor 01 00:02 skipped +0", "backup 01 00:02 started +0"]
        );
        assert_eq!(
            summary(&p.tick(t("2025-01-01T00:03:00Z"), |_| false)),
            ["monitor 01 00:03 started +0"]
        );
    }

    #[test]
    fn jitter_delays_the_start_but_not_the_slot() {
        let (mut p, _) = Planner::new(
            utc_settings(300, true),
            vec![job("backup", "0 3 * * *")],
            |_| Some(t("2025-01-01T03:00:00Z")),
            fixed(42),
            t("2025-01-01T12:00:00Z"),
        );
        assert_eq!(p.next_wake(), Some(t("2025-01-02T03:00:42Z")));
        assert!(p.tick(t("2025-01-02T03:00:41Z"), |_| false).is_empty());
        let d = p.tick(t("2025-01-02T03:00:42Z"), |_| false);
        assert_eq!(summary(&d), ["backup 02 03:00 started +0"]);
        assert!(!d[0].caught_up);
    }

    #[test]
    fn slots_follow_the_zone_across_a_dst_change() {
        let berlin = Settings {
            zone: Zone::parse("Europe/Berlin").unwrap(),
            jitter: Duration::zero(),
            catch_up: true,
        };
        // 2025-03-30: 02:00 CET -> 03:00 CEST; 02:30 runs once at 03:00 CEST.
        let (mut p, _) = Planner::new(
            berlin,
            vec![job("backup", "30 2 * * *")],
            |_| Some(t("2025-03-29T01:30:00Z")),
            fixed(0),
            t("2025-03-29T12:00:00Z"),
        );
        assert_eq!(p.next_wake(), Some(t("2025-03-30T01:00:00Z")));
        let mut fired = Vec::new();
        let mut now = t("2025-03-29T12:00:00Z");
        while now < t("2025-04-01T00:00:00Z") {
            fired.extend(p.tick(now, |_| false).into_iter().map(|d| d.slot));
            now += Duration::minutes(1);
        }
        assert_eq!(
            fired,
            [t("2025-03-30T01:00:00Z"), t("2025-03-31T00:30:00Z")]
        );
    }
}
