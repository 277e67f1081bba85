//! Progress on a terminal: bytes and files of an archive being written or
//! verified, a Proxmox task being waited on, the steps of an update. Drawn
//! on stderr with indicatif, only when stderr is a terminal and neither
//! `--json` nor `-q` was given (never under cron, systemd or a pipe); log
//! lines written meanwhile are printed above the bars
//! ([`crate::logging`] calls [`suspend`]).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);
static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// Turn progress on for this process (`commands::main` decides).
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)))
}

/// Run `f` (a write to stderr) with the bars cleared, then redraw them.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match MULTI.get() {
        Some(m) if is_enabled() => m.suspend(f),
        _ => f(),
    }
}

/// One bar or spinner; does nothing when progress is off. Cleared when
/// dropped.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Bytes through a stream of unknown or known total size, with the
    /// number of files in the message.
    pub fn bytes(what: &str, total: Option<u64>) -> Progress {
        Self::new(|| {
            let (bar, template) = match total {
                Some(t) => (
                    ProgressBar::new(t),
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
                ),
                None => (
                    ProgressBar::no_length(),
                    "{spinner} {prefix} {bytes} {binary_bytes_per_sec} {msg} {elapsed}",
                ),
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(what.to_string());
            bar
        })
    }

    /// Something waited on (a task, a step): a spinner with its message
    /// and the time so far.
    pub fn spinner(what: &str) -> Progress {
        Self::new(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        })
    }

    fn new(make: impl FnOnce() -> ProgressBar) -> Progress {
        if !is_enabled() {
            return Progress { bar: None };
        }
        Progress {
            bar: Some(multi().add(make())),
        }
    }

    /// Whether anything is drawn (to skip formatting messages otherwise).
    pub fn is_active(&self) -> bool {
        self.bar.is_some()
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn set_message(&self, msg: impl Into<String>) {
        if let Some(b) = &self.bar {
            b.set_message(msg.into());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            multi().remove(&b);
        }
    }
}
