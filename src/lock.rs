//! One exclusive flock per workflow in the lock dir (docs/conventions.md, Locks).
//!
//! `lock_dir/<workflow>.lock` is locked with `flock(LOCK_EX | LOCK_NB)`; the
//! kernel releases it when the file is closed, i.e. when the
//! [`WorkflowLock`] is dropped or the process dies, so there are no stale
//! locks and the file is never deleted (deleting it would let two processes
//! lock two different inodes). The holder writes
//! `pid=123 host=pve1 started=2026-11-25T22:15:00Z workflow=backup` into
//! the file; a contender reads it back to name the holder in
//! [`Error::Locked`] (exit 75).
//!
//! A cron line guarding the same workflow with `flock -n -E 75` must use a
//! *different* file than this one, or our own process would find the lock
//! held by its parent.

use crate::error::{Error, Result};
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The holder record's size: longer than any `pid= host= started=
/// workflow=` line, so every holder overwrites all of the previous one.
const HOLDER_RECORD_LEN: usize = 512;

/// A held workflow lock; released when dropped (or the process dies).
#[derive(Debug)]
pub struct WorkflowLock {
    // Holds the flock; closing the file releases it.
    _file: File,
    path: PathBuf,
    workflow: String,
}

impl WorkflowLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn workflow(&self) -> &str {
        &self.workflow
    }
}

/// Take the lock of `workflow` without waiting; `Error::Locked` naming the
/// holder if another process (or another open of the file) has it.
pub fn acquire(lock_dir: &Path, workflow: &str) -> Result<WorkflowLock> {
    let path = lock_path(lock_dir, workflow)?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(lock_dir)
        .map_err(|e| Error::io(lock_dir, e))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false) // the holder's info must survive a contender's open
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(Error::Locked {
                workflow: workflow.to_string(),
                holder: holder(&file),
            });
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&path, e)),
    }
    let info = format!(
        "pid={} host={} started={} workflow={}\n",
        std::process::id(),
        crate::system::hostname(),
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        workflow
    );
    // One write of a fixed-size record, padded with spaces, and no
    // truncation: a contender reading at any moment sees the old record
    // or the new one, never an empty file.
    let mut record = info.into_bytes();
    record.resize(HOLDER_RECORD_LEN.max(record.len()), b' ');
    file.write_all_at(&record, 0)
        .map_err(|e| Error::io(&path, e))?;
    Ok(WorkflowLock {
        _file: file,
        path,
        workflow: workflow.to_string(),
    })
}

/// Who holds the lock of `workflow` now: `None` when nobody does (or the
/// lock file does not exist yet), else the holder as [`Error::Locked`]
/// names it. Asked of the kernel (`/proc/locks`), never by taking the lock,
/// so a run starting at that moment is never turned away by the question.
pub fn holder_of(lock_dir: &Path, workflow: &str) -> Result<Option<String>> {
    let path = lock_path(lock_dir, workflow)?;
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let m = file.metadata().map_err(|e| Error::io(&path, e))?;
    let locks = std::fs::read_to_string("/proc/locks").map_err(|e| Error::io("/proc/locks", e))?;
    Ok(
        proc_locks_pid(&locks, libc::major(m.dev()), libc::minor(m.dev()), m.ino())
            .map(|_| holder(&file)),
    )
}

/// `lock_dir/<workflow>.lock`, for a name that can be a file name.
fn lock_path(lock_dir: &Path, workflow: &str) -> Result<PathBuf> {
    if !valid_name(workflow) {
        return Err(Error::Other(format!(
            "invalid workflow name for a lock file: {workflow:?} (letters, digits, '.', '_', '-', \
             '@', '+'; not starting with '.')"
        )));
    }
    Ok(lock_dir.join(format!("{workflow}.lock")))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@+".contains(&b))
}

/// Describe the holder of the lock on `file`: "pid 123 on pve1 since
/// 2026-11-25T22:15:00Z" from the file; from /proc/locks when the file has
/// no (or outdated) holder info, e.g. a lock taken by flock(1).
fn holder(file: &File) -> String {
    // The holder writes its record right after it takes the lock: a
    // contender that comes in between reads the previous holder's record
    // (or none). Read again for a moment until the record names the pid the
    // kernel reports.
    let mut last = String::new();
    for attempt in 0..HOLDER_READ_ATTEMPTS {
        let mut buf = vec![0u8; HOLDER_RECORD_LEN * 2];
        let n = file.read_at(&mut buf, 0).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        let from_file = parse_holder(&text);
        let from_kernel = file.metadata().ok().and_then(|m| {
            let locks = std::fs::read_to_string("/proc/locks").ok()?;
            proc_locks_pid(&locks, libc::major(m.dev()), libc::minor(m.dev()), m.ino())
        });
        last = match (from_file, from_kernel) {
            (Some((pid, desc)), Some(kpid)) if pid == kpid => return desc,
            (Some((_, desc)), None) => return desc,
            (_, Some(kpid)) => format!("pid {kpid}, no holder info in the lock file"),
            (None, None) => "holder unknown".to_string(),
        };
        if attempt + 1 < HOLDER_READ_ATTEMPTS {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    last
}

/// 20 reads 10 ms apart: the holder writes its record microseconds after
/// taking the lock; a lock taken by flock(1) never gets one.
const HOLDER_READ_ATTEMPTS: u32 = 20;

/// Parse `pid=123 host=pve1 started=... workflow=...` into the pid and
/// "pid 123 on pve1 since ...".
fn parse_holder(text: &str) -> Option<(u32, String)> {
    let (mut pid, mut host, mut started) = (None, None, None);
    for tok in text.split_whitespace() {
        match tok.split_once('=') {
            Some(("pid", v)) => pid = v.parse::<u32>().ok(),
            Some(("host", v)) => host = Some(v),
            Some(("started", v)) => started = Some(v),
            _ => {}
        }
    }
    let pid = pid?;
    let mut desc = format!("pid {pid}");
    if let Some(h) = host {
        desc.push_str(" on ");
        desc.push_str(h);
    }
    if let Some(s) = started {
        desc.push_str(" since ");
        desc.push_str(s);
    }
    Some((pid, desc))
}

/// The pid holding a FLOCK on device `major:minor`, inode `ino`, per
/// /proc/locks (`1: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF`).
fn proc_locks_pid(locks: &str, major: u32, minor: u32, ino: u64) -> Option<u32> {
    let want = format!("{major:02x}:{minor:02x}:{ino}");
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Waiters are listed as "1: -> FLOCK ..."; skip them.
        if f.len() < 6 || f[1] != "FLOCK" || f[5] != want {
            return None;
        }
        f[4].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    fn expect_locked(r: Result<WorkflowLock>) -> (String, String) {
        match r {
            Err(e @ Error::Locked { .. }) => {
                assert_eq!(e.exit_code(), crate::error::exit::LOCKED);
                let Error::Locked { workflow, holder } = e else {
                    unreachable!()
                };
                (workflow, holder)
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[test]
    fn acquire_contend_release() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("locks");
        let lock = acquire(&dir, "backup").unwrap();
        assert_eq!(lock.path(), dir.join("backup.lock"));
        assert_eq!(lock.workflow(), "backup");
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let info = std::fs::read_to_string(lock.path()).unwrap();
        assert!(
            info.starts_with(&format!("pid={} host=", std::process::id())),
            "{info}"
        );
        assert!(info.contains(" workflow=backup"), "{info}");

        // A second open file description in this process conflicts.
        let (wf, holder) = expect_locked(acquire(&dir, "backup"));
        assert_eq!(wf, "backup");
        let me = format!(
            "pid {} on {} since ",
            std::process::id(),
            crate::system::hostname()
        );
        assert!(holder.starts_with(&me), "{holder}");
        // The contender did not clobber the holder's info.
        assert_eq!(std::fs::read_to_string(lock.path()).unwrap(), info);

        // Asked without taking it: named while held, free when not.
        let asked = holder_of(&dir, "backup").unwrap().expect("held");
        assert!(asked.starts_with(&me), "{asked}");
        assert_eq!(holder_of(&dir, "update").unwrap(), None, "no file yet");

        // Other workflows are independent.
        let other = acquire(&dir, "update").unwrap();
        drop(other);
        assert_eq!(holder_of(&dir, "update").unwrap(), None);

        drop(lock);
        let again = acquire(&dir, "backup").unwrap();
        assert!(
            dir.join("backup.lock").exists(),
            "the lock file is never deleted"
        );
        drop(again);
    }

    #[test]
    fn rejects_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "a b", "x\0y"] {
            assert!(
                matches!(acquire(tmp.path(), bad), Err(Error::Other(_))),
                "{bad:?}"
            );
        }
        assert!(acquire(tmp.path(), "restore-test_1.daily").is_ok());
    }

    #[test]
    fn parse_holder_info() {
        let (pid, d) =
            parse_holder("pid=123 host=pve1 started=2026-11-25T22:15:00Z workflow=backup\n")
                .unwrap();
        assert_eq!(pid, 123);
        assert_eq!(d, "pid 123 on pve1 since 2026-11-25T22:15:00Z");
        assert_eq!(parse_holder("pid=7").unwrap().1, "pid 7");
        assert!(parse_holder("").is_none());
        assert!(parse_holder("garbage").is_none());
    }

    #[test]
    fn parse_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 99 08:01:1234 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:2d:1234 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 4243 00:2d:1234 0 EOF\n";
        assert_eq!(proc_locks_pid(locks, 0, 0x2d, 1234), Some(4242));
        assert_eq!(proc_locks_pid(locks, 8, 1, 1234), None);
        assert_eq!(proc_locks_pid(locks, 0, 0x2d, 1), None);
    }

    fn wait_for(cond: impl Fn() -> bool, what: &str) {
        let t = Instant::now();
        while !cond() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(child: &mut Child) {
        // SAFETY: plain syscall on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
        child.wait().unwrap();
    }

    /// Helper for `lock_held_by_child_process`: run in a re-exec'd test
    /// binary, holds the lock until killed.
    #[test]
    #[ignore = "helper process for lock_held_by_child_process"]
    fn lock_child_holder() {
        let Ok(dir) = std::env::var("HLA_LOCK_CHILD_DIR") else {
            return;
        };
        let dir = PathBuf::from(dir);
        let _lock = acquire(&dir, "backup").unwrap();
        std::fs::write(dir.join("ready"), "").unwrap();
        std::thread::sleep(Duration::from_secs(60));
    }

    #[test]
    fn lock_held_by_child_process() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "lock::tests::lock_child_holder",
                "--ignored",
                "--nocapture",
            ])
            .env("HLA_LOCK_CHILD_DIR", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(|| dir.join("ready").exists(), "the child to take the lock");
        let (_, holder) = expect_locked(acquire(&dir, "backup"));
        assert!(
            holder.starts_with(&format!("pid {} on ", child.id())),
            "{holder}"
        );
        // The kernel frees the lock of a dead process: no stale lock.
        kill(&mut child);
        drop(acquire(&dir, "backup").unwrap());
    }

    #[test]
    fn lock_held_by_flock_command() {
        if Command::new("flock").arg("--version").output().is_err() {
            eprintln!("flock(1) not installed; skipping");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ready = dir.join("ready");
        // --close: the command does not inherit the locked fd, so killing
        // flock(1) releases the lock. Own process group, killed as a whole.
        let mut child = Command::new("flock")
            .args(["-n", "--close"])
            .arg(dir.join("backup.lock"))
            .args(["sh", "-c", "touch \"$1\"; exec sleep 60", "sh"])
            .arg(&ready)
            .process_group(0)
            .spawn()
            .unwrap();
        wait_for(|| ready.exists(), "flock(1) to take the lock");
        let (_, holder) = expect_locked(acquire(&dir, "backup"));
        // flock(1) writes no holder info: the pid comes from /proc/locks
        // when it is readable.
        if std::path::Path::new("/proc/locks").exists() {
            assert_eq!(
                holder,
                format!("pid {}, no holder info in the lock file", child.id())
            );
        }
        // SAFETY: plain syscall on our own child's process group.
        unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
        child.wait().unwrap();
        wait_for(
            || acquire(&dir, "backup").is_ok(),
            "the lock to be released",
        );
    }
}
