//! The alert state machine of one check, pure: `fail_after` consecutive
//! failures before DOWN, `recover_after` successes before UP again, a DOWN
//! alert once, reminders every `remind_every`, a recovery alert only when a
//! DOWN alert went out. A silenced check (maintenance, a parent that is
//! down) changes state but is not alerted; once the silence ends a check
//! still DOWN is alerted on its next cycle.

use crate::state::{CheckState, CheckStatus};

#[derive(Debug, Clone, Copy)]
pub struct AlertPolicy {
    pub fail_after: u32,
    pub recover_after: u32,
    /// 0: never remind.
    pub remind_every_secs: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    Down,
    Reminder,
    Recovered,
}

/// A fresh state for a check never seen before.
pub fn initial(id: &str, service: &str, name: &str, now: i64) -> CheckState {
    CheckState {
        id: id.into(),
        service: service.into(),
        name: name.into(),
        status: CheckStatus::Unknown,
        fails: 0,
        oks: 0,
        since: now,
        last_checked: now,
        last_alert: None,
        alerted: false,
        message: String::new(),
    }
}

/// Apply one result. Returns the new state and the alert it calls for
/// (before silencing: the caller decides with [`silence`]).
pub fn step(
    mut s: CheckState,
    ok: bool,
    message: &str,
    now: i64,
    p: &AlertPolicy,
) -> (CheckState, Option<Alert>) {
    s.last_checked = now;
    s.message = message.to_string();
    let mut alert = None;
    if ok {
        s.oks = s.oks.saturating_add(1);
        s.fails = 0;
        let needed = if s.status == CheckStatus::Unknown {
            1
        } else {
            p.recover_after.max(1)
        };
        if s.status != CheckStatus::Up && s.oks >= needed {
            s.status = CheckStatus::Up;
            s.since = now;
            if s.alerted {
                alert = Some(Alert::Recovered);
            }
        }
    } else {
        s.fails = s.fails.saturating_add(1);
        s.oks = 0;
        if s.status != CheckStatus::Down && s.fails >= p.fail_after.max(1) {
            s.status = CheckStatus::Down;
            s.since = now;
        }
        if s.status == CheckStatus::Down {
            if !s.alerted {
                alert = Some(Alert::Down);
            } else if p.remind_every_secs > 0
                && now - s.last_alert.unwrap_or(s.since) >= p.remind_every_secs
            {
                alert = Some(Alert::Reminder);
            }
        }
    }
    (s, alert)
}

/// Commit (or hold back) the alert `step` asked for. A held-back DOWN leaves
/// `alerted` false, so the check is alerted once the silence ends.
pub fn commit(
    mut s: CheckState,
    alert: Option<Alert>,
    silenced: bool,
    now: i64,
) -> (CheckState, Option<Alert>) {
    match (alert, silenced) {
        (None, _) => (s, None),
        (Some(Alert::Recovered), _) => {
            s.alerted = false;
            (s, Some(Alert::Recovered))
        }
        (Some(_), true) => (s, None),
        (Some(a), false) => {
            s.alerted = true;
            s.last_alert = Some(now);
            (s, Some(a))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(p: &AlertPolicy, results: &[(bool, i64)]) -> Vec<Option<Alert>> {
        let mut s = initial("web/http", "web", "http", 0);
        let mut out = vec![];
        for (ok, t) in results {
            let (n, a) = step(s, *ok, "", *t, p);
            let (n, a) = commit(n, a, false, *t);
            s = n;
            out.push(a);
        }
        out
    }

    #[test]
    fn flapping_alerts_only_after_fail_after_and_recovers_after_recover_after() {
        let p = AlertPolicy {
            fail_after: 3,
            recover_after: 2,
            remind_every_secs: 0,
        };
        let a = run(
            &p,
            &[
                (true, 0),
                (false, 1),
                (false, 2),
                (true, 3),
                (false, 4),
                (false, 5),
                (false, 6),
                (true, 7),
                (false, 8),
                (true, 9),
                (true, 10),
                (true, 11),
            ],
        );
        assert_eq!(
            a,
            vec![
                None,
                None,
                None,
                None,
                None,
                None,
                Some(Alert::Down),
                None,
                None,
                None,
                Some(Alert::Recovered),
                None
            ]
        );
    }

    #[test]
    fn reminders_follow_remind_every() {
        let p = AlertPolicy {
            fail_after: 1,
            recover_after: 1,
            remind_every_secs: 100,
        };
        let a = run(
            &p,
            &[
                (false, 0),
                (false, 50),
                (false, 100),
                (false, 150),
                (false, 200),
            ],
        );
        assert_eq!(
            a,
            vec![
                Some(Alert::Down),
                None,
                Some(Alert::Reminder),
                None,
                Some(Alert::Reminder)
            ]
        );
    }

    #[test]
    fn silenced_down_is_alerted_after_the_silence_and_a_silent_recovery_says_nothing() {
        let p = AlertPolicy {
            fail_after: 1,
            recover_after: 1,
            remind_every_secs: 0,
        };
        let s = initial("a/b", "a", "b", 0);
        let (s, a) = step(s, false, "", 1, &p);
        let (s, a) = commit(s, a, true, 1);
        assert_eq!(a, None);
        let (s2, a2) = step(s.clone(), true, "", 2, &p);
        assert_eq!(commit(s2, a2, false, 2).1, None);
        let (s3, a3) = step(s, false, "", 2, &p);
        assert_eq!(commit(s3, a3, false, 2).1, Some(Alert::Down));
    }
}
