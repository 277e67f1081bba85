//! Standard 5-field crontab expressions and `@daily`-style nicknames,
//! translated to the `cron` crate's Quartz-style syntax.
//!
//! Users write what crontab(5) accepts (`30 2 * * 0` is Sunday 02:30; 0 and 7
//! are Sunday), but the `cron` crate (0.15) wants `sec min hour dom month dow`
//! with days of the week numbered 1-7 = Sunday-Saturday, and it ANDs the
//! day-of-month and day-of-week fields. So we parse the crontab fields
//! ourselves into explicit value sets, emit them as plain numeric lists (no
//! ranges or steps left for the crate to interpret differently), and apply
//! the Vixie cron rule: when both day fields are restricted (neither starts
//! with `*`), the job runs when *either* matches. That case becomes two
//! schedules (day-of-month only, day-of-week only) and the earliest wins.
//!
//! Schedules are wall-clock times in a [`Zone`] (the machine's local zone or
//! an IANA name such as `Europe/Berlin`). Across a DST change they behave as
//! Vixie cron does: a time that falls in the hour the clock skips runs once,
//! when the clock jumps; a time in the hour the clock repeats runs once, the
//! first time round. A schedule that fires every hour (its hour field covers
//! every hour) follows real time instead: nothing runs for the skipped hour,
//! and the repeated hour runs again.

use chrono::{DateTime, Local, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A validated crontab schedule. Serialises as the text the user wrote.
#[derive(Clone)]
pub struct CronSchedule {
    source: String,
    quartz: Vec<String>,
    schedules: Vec<cron::Schedule>,
    /// The hour field covers all 24 hours: real time across DST changes.
    every_hour: bool,
    /// The values of the five fields (day of week 0-6, Sunday 0), and
    /// whether each day field was written unrestricted (starts with `*`).
    fields: Vec<BTreeSet<u32>>,
    dom_star: bool,
    dow_star: bool,
}

/// The time zone schedules are read in: the machine's local zone, or an
/// IANA zone name. Serialises as `local` or the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    #[default]
    Local,
    Named(chrono_tz::Tz),
}

impl Zone {
    /// `local` (or empty) or an IANA name (`Europe/Berlin`, `UTC`).
    pub fn parse(s: &str) -> Result<Zone, String> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("local") {
            return Ok(Zone::Local);
        }
        t.parse::<chrono_tz::Tz>().map(Zone::Named).map_err(|_| {
            format!(
                "unknown time zone '{t}' (use an IANA name such as Europe/Berlin or UTC, or \
                 'local')"
            )
        })
    }

    pub fn name(&self) -> String {
        match self {
            Zone::Local => "local".into(),
            Zone::Named(tz) => tz.name().into(),
        }
    }

    /// The wall-clock time of an instant.
    pub fn wall(&self, t: DateTime<Utc>) -> NaiveDateTime {
        match self {
            Zone::Local => t.with_timezone(&Local).naive_local(),
            Zone::Named(tz) => t.with_timezone(tz).naive_local(),
        }
    }

    /// The instants a wall-clock time stands for: none in a skipped hour,
    /// two in a repeated one.
    fn instants(&self, w: NaiveDateTime) -> LocalResult<DateTime<Utc>> {
        fn utc<T: TimeZone>(r: LocalResult<DateTime<T>>) -> LocalResult<DateTime<Utc>> {
            match r {
                LocalResult::Single(a) => LocalResult::Single(a.with_timezone(&Utc)),
                LocalResult::Ambiguous(a, b) => {
                    LocalResult::Ambiguous(a.with_timezone(&Utc), b.with_timezone(&Utc))
                }
                LocalResult::None => LocalResult::None,
            }
        }
        match self {
            Zone::Local => utc(Local.from_local_datetime(&w)),
            Zone::Named(tz) => utc(tz.from_local_datetime(&w)),
        }
    }

    /// The instant the clock jumped over a skipped wall-clock time: that
    /// of the first wall-clock minute after it that exists (transitions
    /// happen on whole minutes).
    fn after_gap(&self, w: NaiveDateTime) -> Option<DateTime<Utc>> {
        (1..=24 * 60).find_map(|m| match self.instants(w + chrono::Duration::minutes(m)) {
            LocalResult::Single(a) | LocalResult::Ambiguous(a, _) => Some(a),
            LocalResult::None => None,
        })
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for Zone {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Zone::parse(&s).map_err(serde::de::Error::custom)
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One crontab field: its bounds and the names it accepts.
struct FieldSpec {
    what: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// Value of `names[0]`.
    names_base: u32,
}

const FIELDS: [FieldSpec; 5] = [
    FieldSpec {
        what: "minute",
        min: 0,
        max: 59,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        what: "hour",
        min: 0,
        max: 23,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        what: "day of month",
        min: 1,
        max: 31,
        names: &[],
        names_base: 0,
    },
    FieldSpec {
        what: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
        names_base: 1,
    },
    FieldSpec {
        what: "day of week",
        min: 0,
        max: 7,
        names: &DAYS,
        names_base: 0,
    },
];

/// The crontab text a nickname stands for.
fn nickname(s: &str) -> Option<&'static str> {
    Some(match s.trim_start_matches('@') {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => return None,
    })
}

impl CronSchedule {
    /// Parse a 5-field crontab expression (`min hour dom month dow`) or a
    /// nickname (`@daily`, `daily`, `@weekly`, ...). The error says which
    /// field is wrong and why.
    pub fn parse(expr: &str) -> Result<CronSchedule, String> {
        let trimmed = expr.trim();
        let lower = trimmed.to_ascii_lowercase();
        let text = match nickname(&lower) {
            Some(t) => t,
            None if lower.starts_with('@') => {
                return Err(format!(
                    "unknown schedule nickname '{trimmed}' (use @yearly, @monthly, @weekly, \
                     @daily or @hourly, or a 5-field crontab expression)"
                ))
            }
            None => lower.as_str(),
        };
        let parts: Vec<&str> = text.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or a nickname \
                 like @daily, found {} field{} in '{trimmed}'",
                parts.len(),
                if parts.len() == 1 { "" } else { "s" }
            ));
        }
        let mut sets = Vec::with_capacity(5);
        for (part, spec) in parts.iter().zip(FIELDS.iter()) {
            sets.push(parse_field(part, spec)?);
        }
        // Sunday is both 0 and 7 in crontab.
        if sets[4].remove(&7) {
            sets[4].insert(0);
        }
        let dom_star = parts[2].starts_with('*');
        let dow_star = parts[4].starts_with('*');

        let minute = list(&sets[0], 0, 59, |v| v);
        let hour = list(&sets[1], 0, 23, |v| v);
        let dom = list(&sets[2], 1, 31, |v| v);
        let month = list(&sets[3], 1, 12, |v| v);
        // The cron crate numbers days 1-7 = Sunday-Saturday.
        let dow = list(&sets[4], 0, 6, |v| v + 1);

        let quartz = if !dom_star && !dow_star {
            vec![
                format!("0 {minute} {hour} {dom} {month} *"),
                format!("0 {minute} {hour} * {month} {dow}"),
            ]
        } else {
            vec![format!("0 {minute} {hour} {dom} {month} {dow}")]
        };
        let schedules = quartz
            .iter()
            .map(|q| {
                cron::Schedule::from_str(q)
                    .map_err(|e| format!("invalid schedule '{trimmed}': {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CronSchedule {
            source: trimmed.to_string(),
            quartz,
            schedules,
            every_hour: sets[1].len() == 24,
            fields: sets,
            dom_star,
            dow_star,
        })
    }

    /// The same times as systemd calendar events (systemd.time(7)), one
    /// `OnCalendar=` value each (two when the Vixie day-of-month OR
    /// day-of-week rule applies); `zone` is appended when named.
    pub fn systemd_calendars(&self, zone: Zone) -> Vec<String> {
        let f = &self.fields;
        let tail = match zone {
            Zone::Local => String::new(),
            Zone::Named(tz) => format!(" {}", tz.name()),
        };
        let month = list(&f[3], 1, 12, |v| v);
        let time = format!(
            "{}:{}:00",
            list(&f[1], 0, 23, |v| v),
            list(&f[0], 0, 59, |v| v)
        );
        let dows = || {
            const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
            f[4].iter()
                .map(|d| NAMES[*d as usize])
                .collect::<Vec<_>>()
                .join(",")
        };
        let dom = list(&f[2], 1, 31, |v| v);
        let one = |dow: Option<String>, dom: &str| match dow {
            Some(d) => format!("{d} *-{month}-{dom} {time}{tail}"),
            None => format!("*-{month}-{dom} {time}{tail}"),
        };
        let dow_all = f[4].len() == 7;
        if !self.dom_star && !self.dow_star {
            vec![one(None, &dom), one(Some(dows()), "*")]
        } else if dow_all {
            vec![one(None, &dom)]
        } else {
            vec![one(Some(dows()), &dom)]
        }
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The Quartz expressions handed to the `cron` crate (two when the Vixie
    /// day-of-month OR day-of-week rule applies).
    pub fn quartz(&self) -> Vec<&str> {
        self.quartz.iter().map(String::as_str).collect()
    }

    /// The first time strictly after `t` at which the schedule fires, in
    /// the machine's local zone.
    pub fn next_after(&self, t: DateTime<Local>) -> Option<DateTime<Local>> {
        self.next_in(Zone::Local, t.with_timezone(&Utc))
            .map(|x| x.with_timezone(&Local))
    }

    /// The first wall-clock time strictly after `w` that the expression
    /// names (the `cron` crate reads it on a zone without DST).
    fn next_wall(&self, w: NaiveDateTime) -> Option<NaiveDateTime> {
        let carrier = Utc.from_utc_datetime(&w);
        self.schedules
            .iter()
            .filter_map(|s| s.after(&carrier).next())
            .min()
            .map(|x| x.naive_utc())
    }

    /// The first instant strictly after `t` at which the schedule fires in
    /// `zone`, DST changes handled as the module documentation says.
    pub fn next_in(&self, zone: Zone, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let found = self.next_forward(zone, t)?;
        if !self.every_hour {
            return Some(found);
        }
        // Real time: when the clock went back between `t` and `found`, the
        // repeated wall-clock times fire again (their second instant).
        let off = |x: DateTime<Utc>| zone.wall(x) - x.naive_utc();
        let (before, after) = (off(t), off(found));
        if after >= before {
            return Some(found);
        }
        let mut w = t.naive_utc() + after - chrono::Duration::seconds(1);
        let end = zone.wall(found);
        while let Some(c) = self.next_wall(w) {
            if c >= end {
                break;
            }
            if let LocalResult::Ambiguous(_, second) = zone.instants(c) {
                if second > t && second < found {
                    return Some(second);
                }
            }
            w = c;
        }
        Some(found)
    }

    /// Walk the wall-clock matches after `t`'s wall time; the first that
    /// maps to an instant after `t` wins.
    fn next_forward(&self, zone: Zone, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut w = zone.wall(t);
        // A bound against a zone table that never lets a match exist; each
        // step is one match of the expression.
        for _ in 0..100_000 {
            let c = self.next_wall(w)?;
            let at = match zone.instants(c) {
                LocalResult::Single(x) => Some(x),
                // The first time round only; every-hour schedules also the
                // second (from the first pass, `next_in` looks back for it).
                LocalResult::Ambiguous(first, second) => Some(if first <= t && self.every_hour {
                    second
                } else {
                    first
                }),
                // In the skipped hour: when the clock jumps, unless the
                // schedule fires every hour anyway.
                LocalResult::None if self.every_hour => None,
                LocalResult::None => zone.after_gap(c),
            };
            if let Some(x) = at.filter(|x| *x > t) {
                return Some(x);
            }
            w = c;
        }
        None
    }

    /// Whether the schedule fires in the minute containing `t`.
    pub fn matches(&self, t: DateTime<Local>) -> bool {
        let minute = t
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .unwrap_or(t);
        self.schedules.iter().any(|s| s.includes(minute))
    }
}

/// Expand one crontab field (`*`, `5`, `1-5`, `*/15`, `1-10/2`, `mon-fri`,
/// lists of those) into the set of values it names.
fn parse_field(field: &str, spec: &FieldSpec) -> Result<BTreeSet<u32>, String> {
    let mut out = BTreeSet::new();
    for item in field.split(',') {
        let err = |why: &str| format!("{} field '{field}': {why}", spec.what);
        if item.is_empty() {
            return Err(err("empty list item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| err(&format!("step '{s}' is not a number")))?;
                if step == 0 {
                    return Err(err("step must be at least 1"));
                }
                (r, Some(step))
            }
            None => (item, None),
        };
        let (lo, hi) = if range == "*" {
            // Day of week `*` is 0-6 so that Sunday is not listed twice.
            (spec.min, if spec.max == 7 { 6 } else { spec.max })
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a, spec, field)?, value(b, spec, field)?);
            if a > b {
                return Err(err(&format!("range {range} runs backwards")));
            }
            (a, b)
        } else {
            let v = value(range, spec, field)?;
            // `5/10` means "from 5 to the end, every 10", as in cronie.
            (v, if step.is_some() { spec.max } else { v })
        };
        let step = step.unwrap_or(1) as usize;
        out.extend((lo..=hi).step_by(step));
    }
    Ok(out)
}

/// One value: a number in range or a name (`jan`, `mon`).
fn value(text: &str, spec: &FieldSpec, field: &str) -> Result<u32, String> {
    if let Some(i) = spec.names.iter().position(|n| *n == text) {
        return Ok(i as u32 + spec.names_base);
    }
    let v: u32 = text.parse().map_err(|_| {
        if spec.names.is_empty() {
            format!("{} field '{field}': '{text}' is not a number", spec.what)
        } else {
            format!(
                "{} field '{field}': '{text}' is not a number or a name ({})",
                spec.what,
                spec.names.join(", ")
            )
        }
    })?;
    if v < spec.min || v > spec.max {
        return Err(format!(
            "{} field '{field}': {v} is out of range {}-{}",
            spec.what, spec.min, spec.max
        ));
    }
    Ok(v)
}

/// `*` when the set covers `lo..=hi`, else a comma list of mapped values.
fn list(set: &BTreeSet<u32>, lo: u32, hi: u32, map: impl Fn(u32) -> u32) -> String {
    if set.len() == (hi - lo + 1) as usize {
        return "*".to_string();
    }
    set.iter()
        .map(|v| map(*v).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronSchedule({:?})", self.source)
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl FromStr for CronSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        CronSchedule::parse(s)
    }
}

impl Serialize for CronSchedule {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CronSchedule::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("unambiguous local time")
    }

    fn fmt(t: DateTime<Local>) -> String {
        t.format("%Y-%m-%d %a %H:%M").to_string()
    }

    #[test]
    fn crontab_expressions_fire_when_crontab_would() {
        // 2025-01-01 is a Wednesday.
        let cases: &[(&str, DateTime<Local>, &str)] = &[
            ("30 2 * * 0", at(2025, 1, 1, 0, 0), "2025-01-05 Sun 02:30"),
            ("0 0 * * 7", at(2025, 1, 1, 0, 0), "2025-01-05 Sun 00:00"),
            ("0 0 * * sun", at(2025, 1, 1, 0, 0), "2025-01-05 Sun 00:00"),
            ("0 9 * * 1-5", at(2025, 1, 1, 0, 0), "2025-01-01 Wed 09:00"),
            ("0 9 * * 1-5", at(2025, 1, 3, 10, 0), "2025-01-06 Mon 09:00"),
            (
                "0 9 * * mon-fri",
                at(2025, 1, 4, 0, 0),
                "2025-01-06 Mon 09:00",
            ),
            ("5 4 * * 6-7", at(2025, 1, 1, 0, 0), "2025-01-04 Sat 04:05"),
            (
                "0 22 * * 1-5/2",
                at(2025, 1, 1, 0, 0),
                "2025-01-01 Wed 22:00",
            ),
            (
                "0 22 * * 1-5/2",
                at(2025, 1, 1, 23, 0),
                "2025-01-03 Fri 22:00",
            ),
            ("*/15 * * * *", at(2025, 1, 1, 0, 0), "2025-01-01 Wed 00:15"),
            ("*/15 * * * *", at(2025, 1, 1, 0, 7), "2025-01-01 Wed 00:15"),
            ("0 0 1 * *", at(2025, 1, 1, 0, 0), "2025-02-01 Sat 00:00"),
            (
                "0 12 * jan,jul mon",
                at(2025, 1, 1, 0, 0),
                "2025-01-06 Mon 12:00",
            ),
            ("0 12 1 feb *", at(2025, 1, 1, 0, 0), "2025-02-01 Sat 12:00"),
            ("30 2 * * *", at(2025, 1, 1, 3, 0), "2025-01-02 Thu 02:30"),
            (
                "10/20 * * * *",
                at(2025, 1, 1, 0, 0),
                "2025-01-01 Wed 00:10",
            ),
            (
                "10/20 * * * *",
                at(2025, 1, 1, 0, 50),
                "2025-01-01 Wed 01:10",
            ),
            // Vixie rule: both day fields restricted -> either matches.
            ("0 0 13 * 5", at(2025, 1, 1, 0, 0), "2025-01-03 Fri 00:00"),
            ("0 0 13 * 5", at(2025, 1, 11, 0, 0), "2025-01-13 Mon 00:00"),
            // ... but a field starting with `*` counts as unrestricted: AND.
            ("0 0 */2 * 1", at(2025, 1, 1, 0, 0), "2025-01-13 Mon 00:00"),
            ("@daily", at(2025, 1, 1, 0, 0), "2025-01-02 Thu 00:00"),
            ("@midnight", at(2025, 1, 1, 0, 0), "2025-01-02 Thu 00:00"),
            ("daily", at(2025, 1, 1, 0, 0), "2025-01-02 Thu 00:00"),
            ("@hourly", at(2025, 1, 1, 0, 0), "2025-01-01 Wed 01:00"),
            ("hourly", at(2025, 1, 1, 0, 30), "2025-01-01 Wed 01:00"),
            ("@weekly", at(2025, 1, 1, 0, 0), "2025-01-05 Sun 00:00"),
            ("weekly", at(2025, 1, 1, 0, 0), "2025-01-05 Sun 00:00"),
            ("@monthly", at(2025, 1, 1, 0, 0), "2025-02-01 Sat 00:00"),
            ("monthly", at(2025, 1, 1, 0, 0), "2025-02-01 Sat 00:00"),
            ("@yearly", at(2025, 1, 1, 0, 0), "2026-01-01 Thu 00:00"),
            ("@annually", at(2025, 1, 1, 0, 0), "2026-01-01 Thu 00:00"),
            ("yearly", at(2025, 6, 1, 0, 0), "2026-01-01 Thu 00:00"),
            (
                "  0   3  *  *  0  ",
                at(2025, 1, 1, 0, 0),
                "2025-01-05 Sun 03:00",
            ),
        ];
        for (expr, from, want) in cases {
            let s = CronSchedule::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            let got = s.next_after(*from).map(fmt);
            assert_eq!(got.as_deref(), Some(*want), "{expr} after {}", fmt(*from));
        }
    }

    #[test]
    fn translation_to_quartz_uses_sunday_one_numbering() {
        let cases: &[(&str, &[&str])] = &[
            ("30 2 * * 0", &["0 30 2 * * 1"]),
            ("0 0 * * 7", &["0 0 0 * * 1"]),
            ("0 0 * * 0,7", &["0 0 0 * * 1"]),
            ("0 9 * * 1-5", &["0 0 9 * * 2,3,4,5,6"]),
            ("0 9 * * sat", &["0 0 9 * * 7"]),
            ("*/15 * * * *", &["0 0,15,30,45 * * * *"]),
            ("0 0 1 * *", &["0 0 0 1 * *"]),
            ("0 0 * * 0-7", &["0 0 0 * * *"]),
            ("0 0 13 * 5", &["0 0 0 13 * *", "0 0 0 * * 6"]),
            ("0 0 1 jan *", &["0 0 0 1 1 *"]),
            ("@weekly", &["0 0 0 * * 1"]),
        ];
        for (expr, want) in cases {
            let s = CronSchedule::parse(expr).unwrap();
            assert_eq!(s.quartz(), *want, "{expr}");
        }
    }

    #[test]
    fn invalid_expressions_say_which_field_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("60 * * * *", "minute field '60': 60 is out of range 0-59"),
            ("* 24 * * *", "hour field '24': 24 is out of range 0-23"),
            (
                "0 0 0 * *",
                "day of month field '0': 0 is out of range 1-31",
            ),
            ("0 0 * 13 *", "month field '13': 13 is out of range 1-12"),
            ("0 0 * * 8", "day of week field '8': 8 is out of range 0-7"),
            ("* * * *", "expected 5 fields"),
            ("* * * * * *", "found 6 fields"),
            ("", "found 0 fields"),
            ("@reboot", "unknown schedule nickname '@reboot'"),
            ("fortnightly", "found 1 field in"),
            ("*/0 * * * *", "step must be at least 1"),
            ("5-1 * * * *", "range 5-1 runs backwards"),
            ("a * * * *", "'a' is not a number"),
            ("0 0 * foo *", "'foo' is not a number or a name"),
            ("1,,2 * * * *", "empty list item"),
        ];
        for (expr, want) in cases {
            let err = CronSchedule::parse(expr)
                .err()
                .unwrap_or_else(|| panic!("{expr} parsed"));
            assert!(err.contains(want), "{expr}: {err}");
        }
    }

    #[test]
    fn serialises_as_written_and_matches_minutes() {
        let s = CronSchedule::parse("30 2 * * 0").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"30 2 * * 0\"");
        assert_eq!(s.as_str(), "30 2 * * 0");
        assert!(s.matches(at(2025, 1, 5, 2, 30)));
        assert!(!s.matches(at(2025, 1, 6, 2, 30)));
        let back: CronSchedule = serde_json::from_str("\"@daily\"").unwrap();
        assert_eq!(back.as_str(), "@daily");
        assert!(serde_json::from_str::<CronSchedule>("\"bad\"").is_err());
    }

    /// The next `n` firings after `from` (RFC 3339, UTC), as wall-clock
    /// times with their offset in `zone`.
    fn firings(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let s = CronSchedule::parse(expr).unwrap();
        let z = Zone::parse(zone).unwrap();
        let Zone::Named(tz) = z else {
            panic!("named zone")
        };
        let mut t = DateTime::parse_from_rfc3339(from)
            .unwrap()
            .with_timezone(&Utc);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_in(z, t).expect("a next time");
            out.push(t.with_timezone(&tz).format("%m-%d %H:%M%:z").to_string());
        }
        out
    }

    #[test]
    fn a_daily_time_in_the_skipped_hour_runs_once_when_the_clock_jumps() {
        // Europe/Berlin: 2025-03-30 02:00 CET becomes 03:00 CEST.
        assert_eq!(
            firings("30 2 * * *", "Europe/Berlin", "2025-03-28T12:00:00Z", 3),
            [
                "03-29 02:30+01:00",
                "03-30 03:00+02:00",
                "03-31 02:30+02:00"
            ]
        );
        // America/New_York: 2025-03-09 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            firings("15 2 * * *", "America/New_York", "2025-03-08T12:00:00Z", 2),
            ["03-09 03:00-04:00", "03-10 02:15-04:00"]
        );
    }

    #[test]
    fn a_daily_time_in_the_repeated_hour_runs_once() {
        // Europe/Berlin: 2025-10-26 03:00 CEST goes back to 02:00 CET.
        assert_eq!(
            firings("30 2 * * *", "Europe/Berlin", "2025-10-25T12:00:00Z", 2),
            ["10-26 02:30+02:00", "10-27 02:30+01:00"]
        );
        // Started during the second pass: the slot has been run already.
        assert_eq!(
            firings("30 2 * * *", "Europe/Berlin", "2025-10-26T01:10:00Z", 1),
            ["10-27 02:30+01:00"]
        );
    }

    #[test]
    fn every_hour_schedules_follow_real_time_across_dst() {
        assert_eq!(
            firings("*/30 * * * *", "Europe/Berlin", "2025-10-25T23:50:00Z", 5),
            [
                "10-26 02:00+02:00",
                "10-26 02:30+02:00",
                "10-26 02:00+01:00",
                "10-26 02:30+01:00",
                "10-26 03:00+01:00"
            ]
        );
        // From inside the second pass.
        assert_eq!(
            firings("*/30 * * * *", "Europe/Berlin", "2025-10-26T01:10:00Z", 2),
            ["10-26 02:30+01:00", "10-26 03:00+01:00"]
        );
        assert_eq!(
            firings("*/30 * * * *", "Europe/Berlin", "2025-03-30T00:10:00Z", 3),
            [
                "03-30 01:30+01:00",
                "03-30 03:00+02:00",
                "03-30 03:30+02:00"
            ]
        );
        assert_eq!(
            firings("0 * * * *", "Europe/Berlin", "2025-10-26T00:30:00Z", 2),
            ["10-26 02:00+01:00", "10-26 03:00+01:00"]
        );
    }

    #[test]
    fn zones_parse_by_iana_name_or_local() {
        assert_eq!(Zone::parse("local").unwrap(), Zone::Local);
        assert_eq!(Zone::parse("").unwrap(), Zone::Local);
        assert_eq!(Zone::parse("UTC").unwrap().name(), "UTC");
        assert_eq!(
            Zone::parse("Europe/Berlin").unwrap().to_string(),
            "Europe/Berlin"
        );
        let e = Zone::parse("Mars/Olympus").unwrap_err();
        assert!(e.contains("unknown time zone 'Mars/Olympus'"), "{e}");
        let utc = Zone::parse("UTC").unwrap();
        let s = CronSchedule::parse("0 3 * * *").unwrap();
        let t = DateTime::parse_from_rfc3339("2025-06-01T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            s.next_in(utc, t).unwrap().to_rfc3339(),
            "2025-06-02T03:00:00+00:00"
        );
    }

    #[test]
    fn systemd_calendars_name_the_same_times() {
        let utc = Zone::parse("UTC").unwrap();
        let cases: &[(&str, Zone, &[&str])] = &[
            ("30 2 * * 0", Zone::Local, &["Sun *-*-* 2:30:00"]),
            ("*/15 * * * *", Zone::Local, &["*-*-* *:0,15,30,45:00"]),
            (
                "0 9 * * 1-5",
                utc,
                &["Mon,Tue,Wed,Thu,Fri *-*-* 9:0:00 UTC"],
            ),
            ("@monthly", Zone::Local, &["*-*-1 0:0:00"]),
            (
                "0 0 13 * 5",
                Zone::Local,
                &["*-*-13 0:0:00", "Fri *-*-* 0:0:00"],
            ),
            ("0 4 1 jan,jul *", Zone::Local, &["*-1,7-1 4:0:00"]),
        ];
        for (expr, zone, want) in cases {
            let s = CronSchedule::parse(expr).unwrap();
            assert_eq!(s.systemd_calendars(*zone), *want, "{expr}");
        }
    }
}
