//! `schedule print`: the configured schedules as per-workflow systemd
//! timers (with their oneshot services) or as crontab lines, for admins who
//! prefer those to the daemon. Both run `homelab-autopilot run WORKFLOW`,
//! the same session the daemon starts.

use super::Job;
use crate::schedule::Zone;

/// A file to write: its name and contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    pub name: String,
    pub text: String,
}

/// `homelab-autopilot-<workflow>.service` and `.timer` for each job.
/// `argv` is the program and the global options put before `run WORKFLOW`.
pub fn systemd(jobs: &[Job], zone: Zone, jitter_seconds: u64, argv: &[String]) -> Vec<UnitFile> {
    let mut out = Vec::new();
    for j in jobs {
        let wf = &j.workflow;
        let exec: Vec<String> = argv
            .iter()
            .cloned()
            .chain(["run".to_string(), wf.clone()])
            .map(|a| systemd_quote(&a))
            .collect();
        out.push(UnitFile {
            name: format!("homelab-autopilot-{wf}.service"),
            text: format!(
                "# Written by `homelab-autopilot schedule print --systemd` from {key}.\n\
                 [Unit]\n\
                 Description=Homelab Autopilot: {wf} workflow\n\
                 Wants=network-online.target\n\
                 After=network-online.target\n\
                 \n\
                 [Service]\n\
                 Type=oneshot\n\
                 ExecStart={exec}\n\
                 Nice=19\n\
                 IOSchedulingClass=best-effort\n\
                 IOSchedulingPriority=7\n\
                 # Exit 75: another run of the workflow still holds its lock.\n\
                 SuccessExitStatus=75\n",
                key = j.key,
                exec = exec.join(" ")
            ),
        });
        let calendars: String = j
            .schedule
            .systemd_calendars(zone)
            .iter()
            .map(|c| format!("OnCalendar={c}\n"))
            .collect();
        let jitter = if jitter_seconds > 0 {
            format!("RandomizedDelaySec={jitter_seconds}\n")
        } else {
            String::new()
        };
        out.push(UnitFile {
            name: format!("homelab-autopilot-{wf}.timer"),
            text: format!(
                "# Written by `homelab-autopilot schedule print --systemd` from {key}: '{expr}'.\n\
                 [Unit]\n\
                 Description=Homelab Autopilot: {wf} on schedule\n\
                 \n\
                 [Timer]\n\
                 {calendars}\
                 Persistent=true\n\
                 {jitter}\
                 \n\
                 [Install]\n\
                 WantedBy=timers.target\n",
                key = j.key,
                expr = j.schedule.as_str(),
            ),
        });
    }
    out
}

/// /etc/cron.d lines (with the user field) running each job as root.
pub fn crontab(jobs: &[Job], zone: Zone, argv: &[String]) -> String {
    let mut out = String::from(
        "# /etc/cron.d/homelab-autopilot: written by `homelab-autopilot schedule print --cron`.\n\
         # -q: cron mails only what needs a human.\n",
    );
    if let Zone::Named(tz) = zone {
        // cronie and Debian's cron read the schedule in CRON_TZ.
        out.push_str(&format!("CRON_TZ={}\n", tz.name()));
    }
    for j in jobs {
        let cmd: Vec<String> = argv
            .iter()
            .cloned()
            .chain(["-q".into(), "run".into(), j.workflow.clone()])
            .map(|a| shell_quote(&a))
            .collect();
        out.push_str(&format!(
            "{:<15} root {}\n",
            crontab_expr(j.schedule.as_str()),
            cmd.join(" ")
        ));
    }
    out
}

/// Nicknames stay as written (cron knows them); `@`-less ones get it.
fn crontab_expr(expr: &str) -> String {
    if expr.contains(' ') || expr.starts_with('@') {
        expr.to_string()
    } else {
        format!("@{expr}")
    }
}

fn is_plain(a: &str) -> bool {
    !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:+,@".contains(c))
}

/// A word for a crontab line (run by /bin/sh; `%` is cron's newline).
fn shell_quote(a: &str) -> String {
    let q = if is_plain(a) {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    };
    q.replace('%', "\\%")
}

/// A word for `ExecStart=` (systemd.syntax(7) quoting, `%` specifiers and
/// `$` expansion escaped).
fn systemd_quote(a: &str) -> String {
    let escaped = a.replace('%', "%%").replace('$', "$$");
    if is_plain(a) {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::CronSchedule;

    fn jobs() -> Vec<Job> {
        vec![
            Job {
                workflow: "backup".into(),
                key: "global.backup.schedule",
                schedule: CronSchedule::parse("30 2 * * *").unwrap(),
            },
            Job {
                workflow: "monitor".into(),
                key: "monitoring.schedule",
                schedule: CronSchedule::parse("@hourly").unwrap(),
            },
        ]
    }

    #[test]
    fn crontab_lines_quote_what_the_shell_would_split() {
        let argv = vec![
            "/usr/bin/homelab-autopilot".to_string(),
            "--config".into(),
            "/etc/my lab/it's 100%.yaml".into(),
        ];
        let zone = Zone::parse("Europe/Berlin").unwrap();
        let text = crontab(&jobs(), zone, &argv);
        assert!(text.contains("CRON_TZ=Europe/Berlin\n"), "{text}");
        assert!(
            text.contains(
                "30 2 * * *      root /usr/bin/homelab-autopilot --config \
                 '/etc/my lab/it'\\''s 100\\%.yaml' -q run backup\n"
            ),
            "{text}"
        );
        assert!(text.contains("@hourly"), "{text}");
    }

    #[test]
    fn systemd_timers_carry_the_calendar_and_persistence() {
        let argv = vec!["/usr/bin/homelab-autopilot".to_string()];
        let units = systemd(&jobs(), Zone::Local, 300, &argv);
        let names: Vec<&str> = units.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "homelab-autopilot-backup.service",
                "homelab-autopilot-backup.timer",
                "homelab-autopilot-monitor.service",
                "homelab-autopilot-monitor.timer"
            ]
        );
        assert!(units[0]
            .text
            .contains("ExecStart=/usr/bin/homelab-autopilot run backup\n"));
        assert!(units[1].text.contains("OnCalendar=*-*-* 2:30:00\n"));
        assert!(units[1]
            .text
            .contains("Persistent=true\nRandomizedDelaySec=300\n"));
        assert_eq!(systemd_quote("/a b/100%"), "\"/a b/100%%\"");
    }
}
