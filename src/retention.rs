//! Retention planning: which backups to keep and why. Pure: no I/O, the
//! caller deletes what the plan says.
//!
//! Semantics (borg/restic "forget", rules applied independently as restic
//! does, then united):
//! - no rule set: keep everything. A rule set to 0 counts as not set (it
//!   would keep nothing on its own; treating it as "delete everything" is
//!   never what a backup tool should guess).
//! - `retention_days N`: keep what is younger than N days
//!   (`created_at > now - N*86400`).
//! - `keep_last N`: the N newest.
//! - `keep_daily` / `keep_weekly` / `keep_monthly` / `keep_yearly N`: the
//!   newest backup of each of the N most recent calendar days / ISO weeks /
//!   months / years (local time) that have backups.
//! - A backup is kept if any rule keeps it.
//! - The newest *verified* backup is always kept, whatever the rules say.
//!   Unverified backups newer than it are subject to the rules like any other.
//!
//! Order is newest first by `created_at`, ties broken by the higher id
//! (inserted later).
//!
//! The items are the backups that are there: the catalog
//! ([`crate::catalog::prune`]) leaves out rows whose files are `missing` or
//! that retention is already `deleting`, so `keep_last: 7` keeps seven real
//! backups and a file deleted by hand is never the "newest verified" one.

use crate::config::RetentionConfig;
use chrono::{DateTime, Datelike, Local, TimeZone, Utc};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RetentionItem {
    pub id: i64,
    pub created_at: i64,
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetentionDecision {
    pub id: i64,
    pub keep: bool,
    /// Why it is kept ("within retention_days (30)", "keep_daily #3",
    /// "newest verified backup", "no rule configured"), or, for a backup
    /// to delete, "no retention rule keeps it".
    pub reasons: Vec<String>,
}

pub const REASON_NO_RULE: &str = "no rule configured";
pub const REASON_NEWEST_VERIFIED: &str = "newest verified backup";
pub const REASON_DELETE: &str = "no retention rule keeps it";

/// Plan with calendar buckets in local time (`chrono::Local`, i.e. `TZ`).
/// One decision per item, newest first.
pub fn plan(items: &[RetentionItem], policy: &RetentionConfig, now: i64) -> Vec<RetentionDecision> {
    plan_in(items, policy, now, &Local)
}

/// [`plan`] with calendar buckets in the time zone `tz`.
pub fn plan_in<Tz: TimeZone>(
    items: &[RetentionItem],
    policy: &RetentionConfig,
    now: i64,
    tz: &Tz,
) -> Vec<RetentionDecision> {
    let mut order: Vec<&RetentionItem> = items.iter().collect();
    order.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    let mut out: Vec<RetentionDecision> = order
        .iter()
        .map(|it| RetentionDecision {
            id: it.id,
            keep: false,
            reasons: Vec::new(),
        })
        .collect();
    let mut keep = |i: usize, reason: String| {
        out[i].keep = true;
        out[i].reasons.push(reason);
    };

    let set = |v: Option<u32>| v.filter(|&n| n > 0);
    // Field by field (no destructuring), so a field added to the config
    // does not break this build; a new rule needs code here anyway.
    let retention_days = policy.retention_days;
    let keep_last = policy.keep_last;
    let keep_daily = policy.keep_daily;
    let keep_weekly = policy.keep_weekly;
    let keep_monthly = policy.keep_monthly;
    let keep_yearly = policy.keep_yearly;
    let rules = [
        retention_days,
        keep_last,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
    ];
    if rules.iter().all(|r| set(*r).is_none()) {
        for i in 0..order.len() {
            keep(i, REASON_NO_RULE.to_string());
        }
        return out;
    }

    if let Some(days) = set(retention_days) {
        let cutoff = now.saturating_sub(i64::from(days) * 86_400);
        for (i, it) in order.iter().enumerate() {
            if it.created_at > cutoff {
                keep(i, format!("within retention_days ({days})"));
            }
        }
    }
    if let Some(n) = set(keep_last) {
        for i in 0..order.len().min(n as usize) {
            keep(i, format!("keep_last #{}", i + 1));
        }
    }

    // Calendar buckets, computed once per item.
    let local: Vec<DateTime<Tz>> = order.iter().map(|it| to_tz(it.created_at, tz)).collect();
    let buckets: [Bucket<Tz>; 4] = [
        ("keep_daily", keep_daily, |d| (d.year(), d.month(), d.day())),
        ("keep_weekly", keep_weekly, |d| {
            let w = d.iso_week();
            (w.year(), w.week(), 0)
        }),
        ("keep_monthly", keep_monthly, |d| (d.year(), d.month(), 0)),
        ("keep_yearly", keep_yearly, |d| (d.year(), 0, 0)),
    ];
    for (name, n, key) in buckets {
        let Some(n) = set(n) else { continue };
        let mut last: Option<Key> = None;
        let mut count = 0u32;
        for (i, d) in local.iter().enumerate() {
            if count == n {
                break;
            }
            let k = key(d);
            if last != Some(k) {
                last = Some(k);
                count += 1;
                keep(i, format!("{name} #{count}"));
            }
        }
    }

    if let Some(i) = order.iter().position(|it| it.verified) {
        keep(i, REASON_NEWEST_VERIFIED.to_string());
    }
    for d in out.iter_mut().filter(|d| !d.keep) {
        d.reasons.push(REASON_DELETE.to_string());
    }
    out
}

/// A calendar bucket key: (year, month or ISO week, day), unused parts 0.
type Key = (i32, u32, u32);

/// A calendar rule: its name, its count, and the bucket of a time.
type Bucket<Tz> = (&'static str, Option<u32>, fn(&DateTime<Tz>) -> Key);

fn to_tz<Tz: TimeZone>(ts: i64, tz: &Tz) -> DateTime<Tz> {
    let utc = DateTime::from_timestamp(ts, 0).unwrap_or(if ts < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    utc.with_timezone(tz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, NaiveDate};
    use std::collections::BTreeMap;

    const DAY: i64 = 86_400;

    fn ts(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0)
            .unwrap()
            .timestamp()
    }

    fn now() -> i64 {
        ts(2026, 6, 15, 12, 0)
    }

    fn item(id: i64, created_at: i64, verified: bool) -> RetentionItem {
        RetentionItem {
            id,
            created_at,
            verified,
        }
    }

    fn policy(f: impl FnOnce(&mut RetentionConfig)) -> RetentionConfig {
        let mut p = RetentionConfig::default();
        f(&mut p);
        p
    }

    fn kept(d: &[RetentionDecision]) -> Vec<i64> {
        d.iter().filter(|d| d.keep).map(|d| d.id).collect()
    }

    fn reasons(d: &[RetentionDecision], id: i64) -> Vec<String> {
        d.iter().find(|d| d.id == id).unwrap().reasons.clone()
    }

    /// Table: (name, items, policy, expected kept ids newest first), UTC
    /// buckets.
    #[test]
    fn rules_table() {
        let n = now();
        // Unverified, one per day going back: id i is i days old (+1h).
        let daily: Vec<RetentionItem> = (0..40)
            .map(|i| item(i, n - i * DAY - 3600, false))
            .collect();
        let cases: Vec<(&str, Vec<RetentionItem>, RetentionConfig, Vec<i64>)> = vec![
            (
                "empty input",
                vec![],
                policy(|p| p.keep_last = Some(3)),
                vec![],
            ),
            (
                "retention_days: strictly younger than N days",
                vec![
                    item(1, n - DAY, false),
                    item(2, n - 29 * DAY, false),
                    item(3, n - 30 * DAY, false), // exactly 30 days: not younger
                    item(4, n - 31 * DAY, false),
                ],
                policy(|p| p.retention_days = Some(30)),
                vec![1, 2],
            ),
            (
                "keep_last",
                daily.clone(),
                policy(|p| p.keep_last = Some(3)),
                vec![0, 1, 2],
            ),
            (
                "keep_last larger than the list",
                daily[..2].to_vec(),
                policy(|p| p.keep_last = Some(10)),
                vec![0, 1],
            ),
            (
                "keep_daily: newest of each of the N most recent days that have backups",
                vec![
                    item(10, ts(2026, 6, 15, 10, 0), false),
                    item(11, ts(2026, 6, 15, 8, 0), false),
                    item(12, ts(2026, 6, 13, 23, 59), false), // the 14th has none
                    item(13, ts(2026, 6, 13, 0, 0), false),
                    item(14, ts(2026, 6, 12, 5, 0), false),
                    item(15, ts(2026, 6, 11, 5, 0), false),
                ],
                policy(|p| p.keep_daily = Some(3)),
                vec![10, 12, 14],
            ),
            (
                "keep_weekly: ISO weeks (Mon 2026-06-08 starts week 24)",
                vec![
                    item(20, ts(2026, 6, 8, 0, 30), false),  // Mon, week 24
                    item(21, ts(2026, 6, 7, 23, 30), false), // Sun, week 23
                    item(22, ts(2026, 6, 1, 0, 0), false),   // Mon, week 23
                    item(23, ts(2026, 5, 31, 12, 0), false), // Sun, week 22
                ],
                policy(|p| p.keep_weekly = Some(3)),
                vec![20, 21, 23],
            ),
            (
                "keep_weekly: ISO year boundary (2026-12-31 is in 2026-W53, 2027-01-04 in W01)",
                vec![
                    item(30, ts(2027, 1, 4, 1, 0), false),
                    item(31, ts(2027, 1, 3, 1, 0), false), // Sun: still 2026-W53
                    item(32, ts(2026, 12, 31, 1, 0), false),
                    item(33, ts(2026, 12, 27, 1, 0), false), // W52
                ],
                policy(|p| p.keep_weekly = Some(3)),
                vec![30, 31, 33],
            ),
            (
                "keep_monthly",
                vec![
                    item(40, ts(2026, 6, 1, 0, 0), false),
                    item(41, ts(2026, 5, 31, 23, 0), false),
                    item(42, ts(2026, 5, 2, 0, 0), false),
                    item(43, ts(2026, 3, 2, 0, 0), false),
                    item(44, ts(2026, 2, 2, 0, 0), false),
                ],
                policy(|p| p.keep_monthly = Some(3)),
                vec![40, 41, 43],
            ),
            (
                "keep_yearly",
                vec![
                    item(50, ts(2026, 1, 1, 0, 0), false),
                    item(51, ts(2025, 12, 31, 23, 0), false),
                    item(52, ts(2025, 6, 1, 0, 0), false),
                    item(53, ts(2023, 6, 1, 0, 0), false),
                    item(54, ts(2022, 6, 1, 0, 0), false),
                ],
                policy(|p| p.keep_yearly = Some(3)),
                vec![50, 51, 53],
            ),
            (
                "union: keep_last 2 + keep_weekly 2 + retention_days 5",
                daily.clone(),
                policy(|p| {
                    p.keep_last = Some(2);
                    p.keep_weekly = Some(2);
                    p.retention_days = Some(5);
                }),
                // days 0..4 by retention_days; 2026-06-15 is a Monday, so
                // the newest of the previous ISO week is day 1 (Sunday).
                vec![0, 1, 2, 3, 4],
            ),
            (
                "union: keep_daily 2 + keep_monthly 2",
                daily.clone(),
                policy(|p| {
                    p.keep_daily = Some(2);
                    p.keep_monthly = Some(2);
                }),
                // June 15 and 14 daily; June (day 0) and May (day 15 = May 31).
                vec![0, 1, 15],
            ),
            (
                "equal timestamps: the higher id is newer",
                vec![
                    item(60, n - 10, false),
                    item(61, n - 10, false),
                    item(59, n - 10, false),
                ],
                policy(|p| p.keep_last = Some(1)),
                vec![61],
            ),
            (
                "equal timestamps in one day bucket",
                vec![item(62, n - 10, false), item(63, n - 10, false)],
                policy(|p| p.keep_daily = Some(5)),
                vec![63],
            ),
            (
                "newest verified is kept when every rule deletes it",
                vec![
                    item(70, n - 10 * DAY, false),
                    item(71, n - 11 * DAY, true),
                    item(72, n - 12 * DAY, true),
                ],
                policy(|p| p.retention_days = Some(1)),
                vec![71],
            ),
            (
                "unverified newer than the newest verified follow the rules",
                vec![
                    item(80, n - 100, false),
                    item(81, n - 200, false),
                    item(82, n - 300, true),
                    item(83, n - 400, true),
                ],
                policy(|p| p.keep_last = Some(1)),
                vec![80, 82],
            ),
            (
                "no verified backup at all: only the rules",
                daily[..5].to_vec(),
                policy(|p| p.keep_last = Some(1)),
                vec![0],
            ),
        ];
        for (name, items, pol, want) in cases {
            let d = plan_in(&items, &pol, n, &Utc);
            assert_eq!(d.len(), items.len(), "{name}: one decision per item");
            assert_eq!(kept(&d), want, "{name}: {d:#?}");
            for w in d.windows(2) {
                let (a, b) = (
                    items.iter().find(|i| i.id == w[0].id).unwrap(),
                    items.iter().find(|i| i.id == w[1].id).unwrap(),
                );
                assert!(
                    (a.created_at, a.id) > (b.created_at, b.id),
                    "{name}: newest first"
                );
            }
            for x in &d {
                assert!(!x.reasons.is_empty(), "{name}: every decision has a reason");
                if !x.keep {
                    assert_eq!(x.reasons, [REASON_DELETE], "{name}");
                }
            }
        }
    }

    #[test]
    fn no_rule_keeps_everything() {
        let items: Vec<_> = (0..5)
            .map(|i| item(i, now() - i * 400 * DAY, i == 3))
            .collect();
        for pol in [
            RetentionConfig::default(),
            // 0 counts as not set.
            policy(|p| {
                p.retention_days = Some(0);
                p.keep_last = Some(0);
            }),
        ] {
            let d = plan_in(&items, &pol, now(), &Utc);
            assert_eq!(kept(&d), vec![0, 1, 2, 3, 4]);
            assert!(d.iter().all(|x| x.reasons == [REASON_NO_RULE]));
        }
    }

    #[test]
    fn reasons_name_every_rule() {
        let n = now();
        let items = vec![item(1, n - 60, true), item(2, n - 120, false)];
        let pol = policy(|p| {
            p.retention_days = Some(30);
            p.keep_last = Some(1);
            p.keep_daily = Some(1);
            p.keep_weekly = Some(1);
            p.keep_monthly = Some(1);
            p.keep_yearly = Some(1);
        });
        let d = plan_in(&items, &pol, n, &Utc);
        assert_eq!(
            reasons(&d, 1),
            [
                "within retention_days (30)",
                "keep_last #1",
                "keep_daily #1",
                "keep_weekly #1",
                "keep_monthly #1",
                "keep_yearly #1",
                "newest verified backup",
            ]
        );
        assert_eq!(reasons(&d, 2), ["within retention_days (30)"]);

        // The guard alone.
        let old = vec![item(5, n - 10 * DAY, true), item(6, n - 11 * DAY, true)];
        let d = plan_in(&old, &policy(|p| p.retention_days = Some(1)), n, &Utc);
        assert_eq!(kept(&d), [5]);
        assert_eq!(reasons(&d, 5), [REASON_NEWEST_VERIFIED]);
        assert_eq!(reasons(&d, 6), [REASON_DELETE]);
    }

    #[test]
    fn time_zones_move_day_boundaries() {
        // 23:30 and 00:30 UTC: two days in UTC, one day at UTC+2 and at UTC-2.
        let items = vec![
            item(1, ts(2026, 6, 16, 0, 30), false),
            item(2, ts(2026, 6, 15, 23, 30), false),
        ];
        let pol = policy(|p| p.keep_daily = Some(2));
        let east = FixedOffset::east_opt(2 * 3600).unwrap();
        let west = FixedOffset::west_opt(2 * 3600).unwrap();
        assert_eq!(kept(&plan_in(&items, &pol, now(), &Utc)), [1, 2]);
        assert_eq!(kept(&plan_in(&items, &pol, now(), &east)), [1]);
        assert_eq!(kept(&plan_in(&items, &pol, now(), &west)), [1]);
        // Month boundary the same way.
        let items = vec![
            item(3, ts(2026, 7, 1, 0, 30), false),
            item(4, ts(2026, 6, 30, 23, 30), false),
        ];
        let pol = policy(|p| p.keep_monthly = Some(2));
        assert_eq!(kept(&plan_in(&items, &pol, now(), &Utc)), [3, 4]);
        assert_eq!(kept(&plan_in(&items, &pol, now(), &west)), [3]);
    }

    /// `plan` buckets in the machine's local time: compute the expected
    /// buckets with chrono::Local so the test holds in any TZ.
    #[test]
    fn plan_uses_local_time() {
        let n = now();
        let items: Vec<_> = (0..30).map(|i| item(i, n - i * 7 * 3600, false)).collect();
        let d = plan(&items, &policy(|p| p.keep_daily = Some(3)), n);
        let mut newest_per_day: BTreeMap<NaiveDate, (i64, i64)> = BTreeMap::new();
        for it in &items {
            let day = Local.timestamp_opt(it.created_at, 0).unwrap().date_naive();
            let e = newest_per_day.entry(day).or_insert((it.created_at, it.id));
            *e = (*e).max((it.created_at, it.id));
        }
        let mut want: Vec<i64> = newest_per_day
            .values()
            .rev()
            .take(3)
            .map(|&(_, id)| id)
            .collect();
        want.sort_by_key(|id| std::cmp::Reverse(items[*id as usize].created_at));
        assert_eq!(kept(&d), want);
    }

    #[test]
    fn extreme_timestamps_do_not_panic() {
        let items = vec![
            item(1, i64::MAX, false),
            item(2, i64::MIN, true),
            item(3, 0, false),
        ];
        let pol = policy(|p| {
            p.retention_days = Some(u32::MAX);
            p.keep_daily = Some(2);
            p.keep_yearly = Some(5);
        });
        let d = plan_in(&items, &pol, now(), &Utc);
        assert_eq!(d.len(), 3);
        assert!(
            d.iter().find(|x| x.id == 2).unwrap().keep,
            "newest verified"
        );
    }
}
