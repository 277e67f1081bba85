//! Tasks (UPIDs): every long PVE operation returns one. Wait for it with a
//! timeout, succeed only on `OK` or `WARNINGS: n`, fail with the tail of
//! the task log. The node is taken from the UPID, not from the request.

use super::error::{PveError, PveResult};
use super::types::TaskResult;
use super::{enc, Method, ParamsBuilder, Transport};
use std::time::{Duration, Instant};

/// How many log lines a failure carries.
pub const LOG_TAIL_LINES: u64 = 20;

/// The fields of a PVE (or PBS) UPID we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub worker_type: String,
    pub id: String,
    pub user: String,
}

/// Parse `UPID:node:pid:pstart:starttime:type:id:user:` (PVE) or the PBS
/// form with an extra task_id field.
pub fn parse_upid(s: &str) -> Option<Upid> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.first() != Some(&"UPID") || parts.last() != Some(&"") {
        return None;
    }
    // PVE: 9 parts (trailing empty); PBS: 10.
    let (t, i, u) = match parts.len() {
        9 => (5, 6, 7),
        10 => (6, 7, 8),
        _ => return None,
    };
    if parts[1].is_empty() {
        return None;
    }
    Some(Upid {
        node: parts[1].to_string(),
        worker_type: parts[t].to_string(),
        id: parts[i].to_string(),
        user: parts[u].to_string(),
    })
}

/// How a task ended (PVE::UPID::status_is_error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitClass {
    Ok,
    Warnings(u32),
    Failed,
}

/// `OK`, `WARNINGS: n`, or anything else (the error text).
pub fn classify_exit(exitstatus: &str) -> ExitClass {
    if exitstatus == "OK" {
        return ExitClass::Ok;
    }
    if let Some(n) = exitstatus.strip_prefix("WARNINGS: ") {
        if let Ok(n) = n.trim().parse() {
            return ExitClass::Warnings(n);
        }
    }
    ExitClass::Failed
}

/// Wait for `upid` to stop (polling with a gentle backoff up to 2 s), at
/// most `timeout`, cut to the calling thread's deadline
/// ([`crate::proc::until`]). A task still running then is left running
/// ([`PveError::TaskTimeout`] names it). A poll that fails transiently
/// ([`PveError::is_transient_poll`]: a dropped connection, 595/596, a 500
/// "got timeout" under lock contention) does not end the wait: polling goes
/// on with a longer backoff (up to 10 s) and the task's own outcome decides.
pub fn wait(t: &dyn Transport, upid: &str, timeout: Duration) -> PveResult<TaskResult> {
    let timeout = crate::proc::bounded(timeout);
    let parsed = parse_upid(upid).ok_or_else(|| PveError::Decode {
        what: "task".into(),
        message: format!("expected a UPID, got '{upid}'"),
    })?;
    let base = format!("/nodes/{}/tasks/{}", enc(&parsed.node), enc(upid));
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    let timed_out = || PveError::TaskTimeout {
        upid: upid.to_string(),
        worker: parsed.worker_type.clone(),
        node: parsed.node.clone(),
        after: timeout,
    };
    let mut failed_polls = 0u32;
    let progress =
        crate::progress::Progress::spinner(&format!("{} on {}", parsed.worker_type, parsed.node));
    progress.set_message(format!("waiting for {upid}"));
    loop {
        let st = match t.call(Method::Get, &format!("{base}/status"), &Vec::new()) {
            Ok(st) => {
                failed_polls = 0;
                st
            }
            Err(e) if e.is_transient_poll() => {
                failed_polls += 1;
                tracing::warn!("polling task {upid}: {e}; still waiting for it");
                if started.elapsed() >= timeout {
                    return Err(timed_out());
                }
                let backoff = (Duration::from_millis(500) * 2u32.pow(failed_polls.min(5)))
                    .min(Duration::from_secs(10));
                std::thread::sleep(backoff.min(timeout.saturating_sub(started.elapsed())));
                continue;
            }
            Err(e) => return Err(e),
        };
        if st["status"].as_str() == Some("stopped") {
            let exit = st["exitstatus"].as_str().unwrap_or("unknown").to_string();
            let duration_ms = started.elapsed().as_millis() as u64;
            let warnings = match classify_exit(&exit) {
                ExitClass::Ok => Ok(None),
                ExitClass::Warnings(n) => Ok(Some(n)),
                ExitClass::Failed => Err(()),
            };
            return match warnings {
                Ok(warnings) => Ok(TaskResult {
                    upid: upid.to_string(),
                    exitstatus: exit,
                    warnings,
                    duration_ms,
                }),
                Err(()) => {
                    let log_tail =
                        log_tail(t, &base).unwrap_or_else(|e| format!("(log unavailable: {e})"));
                    let failed = PveError::TaskFailed {
                        upid: upid.to_string(),
                        status: exit.clone(),
                        log_tail,
                    };
                    Err(failed)
                }
            };
        }
        if started.elapsed() >= timeout {
            return Err(timed_out());
        }
        std::thread::sleep(delay.min(timeout.saturating_sub(started.elapsed())));
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// The last [`LOG_TAIL_LINES`] lines of a task log.
pub fn log_tail(t: &dyn Transport, base: &str) -> PveResult<String> {
    let path = format!("{base}/log");
    // The envelope's `total` is not visible through Transport::call, so ask
    // for a generous window and keep the end.
    let p = ParamsBuilder::new()
        .int("start", 0)
        .int("limit", 5000)
        .build();
    let lines = t.call(Method::Get, &path, &p)?;
    let lines: Vec<String> = lines
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["t"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let skip = lines.len().saturating_sub(LOG_TAIL_LINES as usize);
    Ok(lines[skip..].join("\n"))
}

/// The whole log (for finding the archive a vzdump wrote).
pub fn log_lines(t: &dyn Transport, upid: &str) -> PveResult<Vec<String>> {
    let parsed =
        parse_upid(upid).ok_or_else(|| PveError::Invalid(format!("not a UPID: {upid}")))?;
    let path = format!("/nodes/{}/tasks/{}/log", enc(&parsed.node), enc(upid));
    let p = ParamsBuilder::new()
        .int("start", 0)
        .int("limit", 5000)
        .build();
    let v = t.call(Method::Get, &path, &p)?;
    Ok(v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l["t"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upids_parse_in_both_flavours() {
        let u =
            parse_upid("UPID:pve1:0006C7D9:0029F72D:68A60E01:vzrestore:104:cicd@pam!cicd_ansible:")
                .unwrap();
        assert_eq!(
            (u.node.as_str(), u.worker_type.as_str(), u.id.as_str()),
            ("pve1", "vzrestore", "104")
        );
        let p = parse_upid("UPID:pbs:000004D2:00001A2B:00000001:68A60E01:verify:store1:root@pam:")
            .unwrap();
        assert_eq!(p.worker_type, "verify");
        assert!(parse_upid("OK").is_none());
        assert!(parse_upid("UPID:pve1:1:2").is_none());
    }

    /// A task that never stops.
    struct Running;
    impl Transport for Running {
        fn call(
            &self,
            _: Method,
            _: &str,
            _: &super::super::Params,
        ) -> PveResult<serde_json::Value> {
            Ok(serde_json::json!({ "status": "running" }))
        }
        fn is_root(&self) -> bool {
            true
        }
        fn describe(&self) -> String {
            "test".into()
        }
    }

    #[test]
    fn a_wait_ends_by_the_threads_deadline() {
        let upid = "UPID:pve1:0006C7D9:0029F72D:68A60E01:vzdump:104:root@pam:";
        let at = Instant::now() + Duration::from_millis(300);
        let started = Instant::now();
        let e = crate::proc::until(Some(at), || wait(&Running, upid, Duration::from_secs(3600)))
            .unwrap_err();
        assert!(matches!(e, PveError::TaskTimeout { .. }), "{e}");
        assert!(e.to_string().contains(upid), "{e}");
        assert!(Instant::now() >= at);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn only_ok_and_warnings_succeed() {
        assert_eq!(classify_exit("OK"), ExitClass::Ok);
        assert_eq!(classify_exit("WARNINGS: 2"), ExitClass::Warnings(2));
        for failed in [
            "job errors",
            "unexpected status",
            "WARNINGS: x",
            "VM is locked (backup)",
        ] {
            assert_eq!(classify_exit(failed), ExitClass::Failed, "{failed}");
        }
    }
}
