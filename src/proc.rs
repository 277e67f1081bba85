//! Running commands: argv arrays only (never `sh -c` with interpolated
//! values), a timeout that kills the whole process group, bounded captured
//! output, optional nice/ionice (lower priority for heavy work).
//!
//! The argv goes to `execve` as it is: no shell is involved, so nothing in
//! an argument is expanded or split. A caller that wants a shell runs
//! `sh -c` itself.
//!
//! A caller can bound all the blocking work of its thread by a deadline
//! ([`until`]): a command started inside the scope gets a timeout of at
//! most the time left, and so does a Proxmox task wait
//! (`crate::pve::tasks::wait`).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Options of one command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunOptions {
    pub timeout_seconds: u64,
    pub env: BTreeMap<String, String>,
    pub cwd: Option<PathBuf>,
    /// Bytes kept of stdout and of stderr each; the rest is counted, not kept.
    pub max_output: usize,
    pub nice: Option<i32>,
    /// `idle`, `best-effort` or `none`.
    pub ionice: Option<String>,
    pub stdin: Option<String>,
    /// A command that changes nothing: it runs in a dry run too.
    pub read_only: bool,
    /// Throw when the exit code is not 0.
    pub check: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            timeout_seconds: 300,
            env: BTreeMap::new(),
            cwd: None,
            max_output: 1 << 20,
            nice: None,
            ionice: None,
            stdin: None,
            read_only: false,
            check: false,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub truncated: bool,
    pub duration_ms: u64,
}

thread_local! {
    /// When the blocking work of this thread must end (see [`until`]).
    static UNTIL: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Run `f` with every timeout of the blocking work it does on this thread
/// (commands, Proxmox task waits) cut to end by `deadline` at the latest.
/// Scopes nest; the earlier deadline wins. None adds no bound.
pub fn until<T>(deadline: Option<Instant>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Instant>);
    impl Drop for Restore {
        fn drop(&mut self) {
            UNTIL.set(self.0);
        }
    }
    let prev = UNTIL.get();
    let _restore = Restore(prev);
    UNTIL.set(match (prev, deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    });
    f()
}

/// `timeout`, cut to the time left before this thread's deadline
/// ([`until`]).
pub fn bounded(timeout: Duration) -> Duration {
    match UNTIL.get() {
        Some(at) => timeout.min(at.saturating_duration_since(Instant::now())),
        None => timeout,
    }
}

impl RunInfo {
    /// Keep at most `max` bytes of stdout and stderr together (each at a
    /// character boundary), marking the result `truncated` when anything
    /// is cut. Each stream is sure of half; what one does not use, the
    /// other may.
    pub fn limit_total(&mut self, max: usize) {
        if self.stdout.len() + self.stderr.len() <= max {
            return;
        }
        let err_keep = self.stderr.len().min(max - self.stdout.len().min(max / 2));
        cut(&mut self.stderr, err_keep);
        cut(&mut self.stdout, max - self.stderr.len());
        self.truncated = true;
    }
}

/// Truncate `s` to at most `max` bytes, at a character boundary.
fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut at = max;
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    s.truncate(at);
}

fn read_bounded(mut r: impl Read, max: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 8192];
    let mut truncated = false;
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
            }
        }
    }
    (kept, truncated)
}

/// The ioprio class for an `ionice` word: `idle` 3, `best-effort` 2;
/// None (or `none`) leaves it unchanged.
pub fn ionice_class(word: Option<&str>) -> Option<i32> {
    match word {
        Some("idle") => Some(3),
        Some("best-effort") => Some(2),
        _ => None,
    }
}

/// Set the nice level and ioprio class of the calling process (between fork
/// and exec: of the child). Only syscalls, so it is safe in `pre_exec`.
/// Both are tried; the error names the first that failed.
pub fn set_priority(
    nice: Option<i32>,
    ioclass: Option<i32>,
) -> Result<(), (&'static str, std::io::Error)> {
    let mut first_err = Ok(());
    if let Some(n) = nice {
        // SAFETY: plain syscall on the calling process.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
            first_err = Err(("nice", std::io::Error::last_os_error()));
        }
    }
    if let Some(class) = ioclass {
        // ioprio_set(IOPRIO_WHO_PROCESS, self, class << 13 | level); the
        // best-effort class at its lowest level (7).
        let level = if class == 2 { 7 } else { 0 };
        // SAFETY: plain syscall on the calling process.
        if unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, (class << 13) | level) } != 0 {
            first_err = first_err.and(Err(("ionice", std::io::Error::last_os_error())));
        }
    }
    first_err
}

/// Run `argv` to completion or timeout (cut to the thread's deadline,
/// see [`until`]).
pub fn run(argv: &[String], opts: &RunOptions) -> Result<RunInfo> {
    let Some((program, args)) = argv.split_first() else {
        return Err(Error::Usage("proc::run: empty argv".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(&opts.env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if opts.stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    if let Some(cwd) = &opts.cwd {
        cmd.current_dir(cwd);
    }
    // Own process group, so a timeout kills the command's children too.
    cmd.process_group(0);
    let nice = opts.nice;
    let ioclass = ionice_class(opts.ionice.as_deref());
    if nice.is_some() || ioclass.is_some() {
        // SAFETY: set_priority makes only async-signal-safe syscalls, as
        // required between fork and exec. A failure leaves the priority as is.
        unsafe {
            cmd.pre_exec(move || {
                let _ = set_priority(nice, ioclass);
                Ok(())
            });
        }
    }
    // Taken before the clock starts, so a command cut to the deadline is
    // killed at or after it.
    let timeout = bounded(Duration::from_secs(opts.timeout_seconds.max(1)));
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| Error::Command {
        program: program.clone(),
        message: e.to_string(),
    })?;
    if let (Some(input), Some(mut stdin)) = (opts.stdin.clone(), child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let max = opts.max_output;
    let out = child
        .stdout
        .take()
        .map(|o| std::thread::spawn(move || read_bounded(o, max)));
    let err = child
        .stderr
        .take()
        .map(|e| std::thread::spawn(move || read_bounded(e, max)));
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if started.elapsed() >= timeout => {
                timed_out = true;
                // SAFETY: signalling our own child's process group.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                return Err(Error::Command {
                    program: program.clone(),
                    message: e.to_string(),
                })
            }
        }
    };
    let (stdout, t1) = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let (stderr, t2) = err.and_then(|h| h.join().ok()).unwrap_or_default();
    let code = status.and_then(|s| {
        use std::os::unix::process::ExitStatusExt;
        s.code().or_else(|| s.signal().map(|sig| 128 + sig))
    });
    Ok(RunInfo {
        code: code.unwrap_or(-1) as i64,
        stdout: crate::redact::scrub(&String::from_utf8_lossy(&stdout)).into_owned(),
        stderr: crate::redact::scrub(&String::from_utf8_lossy(&stderr)).into_owned(),
        timed_out,
        truncated: t1 || t2,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn captures_output_and_exit_code() {
        let info = run(
            &argv(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            &RunOptions::default(),
        )
        .unwrap();
        assert_eq!(
            (info.code, info.stdout.as_str(), info.stderr.as_str()),
            (3, "out\n", "err\n")
        );
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let opts = RunOptions {
            timeout_seconds: 1,
            ..Default::default()
        };
        let t = Instant::now();
        let info = run(&argv(&["sh", "-c", "sleep 30 & sleep 30"]), &opts).unwrap();
        assert!(info.timed_out);
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_is_bounded() {
        let opts = RunOptions {
            max_output: 10,
            ..Default::default()
        };
        let info = run(&argv(&["sh", "-c", "yes | head -c 100000"]), &opts).unwrap();
        assert_eq!(info.stdout.len(), 10);
        assert!(info.truncated);
    }

    #[test]
    fn a_thread_deadline_cuts_the_timeout() {
        let t = Instant::now();
        let at = Instant::now() + Duration::from_millis(300);
        let info = until(Some(at), || {
            run(&argv(&["sleep", "30"]), &RunOptions::default())
        })
        .unwrap();
        assert!(info.timed_out);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        // Outside the scope there is no bound.
        assert_eq!(bounded(Duration::from_secs(7)), Duration::from_secs(7));
        let inner = until(Some(at), || {
            until(Some(at + Duration::from_secs(60)), || {
                bounded(Duration::from_secs(60))
            })
        });
        assert!(inner <= Duration::from_millis(300));
    }

    #[test]
    fn total_output_is_limited_at_char_boundaries() {
        let mut info = RunInfo {
            code: 0,
            stdout: "é".repeat(10),
            stderr: "warn".into(),
            timed_out: false,
            truncated: false,
            duration_ms: 0,
        };
        info.limit_total(11);
        assert_eq!(info.stderr, "warn");
        assert_eq!(info.stdout, "ééé");
        assert!(info.truncated);
        let mut both = RunInfo {
            stdout: "o".repeat(100),
            stderr: "e".repeat(100),
            truncated: false,
            ..info
        };
        both.limit_total(10);
        assert_eq!((both.stdout.len(), both.stderr.len()), (5, 5));
    }

    #[test]
    fn missing_program_is_a_command_error() {
        let e = run(&argv(&["/nonexistent/prog"]), &RunOptions::default()).unwrap_err();
        assert_eq!(e.kind(), "command");
    }
}
