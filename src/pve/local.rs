//! Local mode (`proxmox.local: true`): running on the PVE host itself.
//!
//! API calls go through `pvesh` (same paths and parameters as the REST API,
//! run as root without HTTP), so every operation in [`super::ops`] works
//! unchanged; `pct exec` runs commands inside containers, which the API
//! cannot do. Arguments are argv arrays; values go after their `--key`.

use super::error::{PveError, PveResult};
use super::{Method, Params, Transport};
use crate::proc::{run, RunInfo, RunOptions};
use serde_json::Value;
use std::time::Duration;

pub struct PveshTransport {
    /// The pvesh program (tests point it at a stub).
    pub program: String,
    pub timeout: Duration,
}

impl Default for PveshTransport {
    fn default() -> Self {
        Self {
            program: "pvesh".into(),
            timeout: Duration::from_secs(6 * 3600),
        }
    }
}

/// Undo [`super::enc`] for a CLI path.
fn dec(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pvesh argv for one call.
pub fn pvesh_argv(program: &str, method: Method, path: &str, params: &Params) -> Vec<String> {
    let verb = match method {
        Method::Get => "get",
        Method::Post => "create",
        Method::Put => "set",
        Method::Delete => "delete",
    };
    let mut argv = vec![program.to_string(), verb.to_string(), dec(path)];
    for (k, v) in params {
        argv.push(format!("--{k}"));
        argv.push(v.clone());
    }
    argv.push("--output-format".into());
    argv.push("json".into());
    argv
}

fn check(program: &str, info: RunInfo) -> PveResult<RunInfo> {
    if info.timed_out {
        return Err(PveError::Command {
            program: program.into(),
            message: "timed out".into(),
        });
    }
    if info.code != 0 {
        return Err(PveError::Command {
            program: program.into(),
            message: format!("exited with {}: {}", info.code, info.stderr.trim()),
        });
    }
    Ok(info)
}

impl Transport for PveshTransport {
    fn call(&self, method: Method, path: &str, params: &Params) -> PveResult<Value> {
        let argv = pvesh_argv(&self.program, method, path, params);
        let opts = RunOptions {
            timeout_seconds: self.timeout.as_secs().max(1),
            max_output: 64 << 20,
            ..Default::default()
        };
        let info = run(&argv, &opts).map_err(|e| PveError::Command {
            program: self.program.clone(),
            message: e.to_string(),
        })?;
        if info.code != 0 {
            let msg = info.stderr.trim().to_string();
            if let Some(lock) = super::error::lock_in(&msg) {
                return Err(PveError::Locked {
                    guest: "guest".into(),
                    lock,
                    detail: format!(": {msg}"),
                });
            }
        }
        let info = check(&self.program, info)?;
        let out = info.stdout.trim();
        if out.is_empty() {
            return Ok(Value::Null);
        }
        Ok(parse_output(out))
    }

    fn is_root(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "pvesh (local)".into()
    }
}

/// pvesh's JSON answer. Task-starting calls run the task in the
/// foreground and may print its log first: the answer (the UPID, as a JSON
/// string or bare) is then the last line.
fn parse_output(out: &str) -> Value {
    if let Ok(v) = serde_json::from_str(out) {
        return v;
    }
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    serde_json::from_str(last).unwrap_or_else(|_| Value::String(last.to_string()))
}

/// Run a command inside a container: `pct exec <vmid> -- argv...`.
pub fn pct_exec(vmid: u32, argv: &[String], timeout: Duration) -> PveResult<RunInfo> {
    if argv.is_empty() {
        return Err(PveError::Invalid("pct exec: empty command".into()));
    }
    let mut full = vec![
        "pct".to_string(),
        "exec".into(),
        vmid.to_string(),
        "--".into(),
    ];
    full.extend(argv.iter().cloned());
    let opts = RunOptions {
        timeout_seconds: timeout.as_secs().max(1),
        ..Default::default()
    };
    run(&full, &opts).map_err(|e| PveError::Command {
        program: "pct".into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvesh_answers_after_a_task_log_are_read_from_the_last_line() {
        let out = "INFO: starting new backup job\nINFO: Finished Backup of VM 100\n\"UPID:pve1:0001:0002:68A60E01:vzdump:100:root@pam:\"";
        assert_eq!(
            parse_output(out),
            Value::String("UPID:pve1:0001:0002:68A60E01:vzdump:100:root@pam:".into())
        );
        assert_eq!(parse_output("{\"a\":1}")["a"], 1);
    }

    #[test]
    fn pvesh_argv_maps_methods_and_decodes_paths() {
        let p = vec![("snapname".to_string(), "pre-up".to_string())];
        let a = pvesh_argv("pvesh", Method::Post, "/nodes/pve1/qemu/100/snapshot", &p);
        assert_eq!(
            a,
            [
                "pvesh",
                "create",
                "/nodes/pve1/qemu/100/snapshot",
                "--snapname",
                "pre-up",
                "--output-format",
                "json"
            ]
        );
        let a = pvesh_argv(
            "pvesh",
            Method::Get,
            &format!(
                "/nodes/pve1/tasks/{}/status",
                super::super::enc("UPID:pve1:1:2:3:x::root@pam:")
            ),
            &Vec::new(),
        );
        assert_eq!(
            a[2],
            "/nodes/pve1/tasks/UPID:pve1:1:2:3:x::root@pam:/status"
        );
    }
}
