//! SIGINT and SIGTERM (Ctrl-C, `systemctl stop`, shutdown) during a run.
//!
//! The first signal only records itself: the run session sees it, asks the
//! run to stop at its next safe point (the script between two statements, an
//! archive between two entries) and then ends the run as `aborted` with its
//! cleanup, fail ping and notification. A second signal ends the process at
//! once, from the handler, with 128 + the signal's number: the crash path
//! (temp debris removed by the next run, the run row marked aborted by the
//! next run of the workflow) still holds.

use std::sync::atomic::{AtomicI32, Ordering};

/// The first signal received (0: none).
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    if RECEIVED
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
}

/// Handle SIGINT and SIGTERM as described above, for the rest of the
/// process.
pub fn install() {
    handle(&[libc::SIGINT, libc::SIGTERM], on_signal);
}

/// Install `handler` for each of `signals` (restarting interrupted system
/// calls). The handler must be async-signal-safe.
pub fn handle(signals: &[libc::c_int], handler: extern "C" fn(libc::c_int)) {
    for &sig in signals {
        // SAFETY: the caller's handler is async-signal-safe (atomics,
        // _exit); the sigaction struct is fully initialised.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = handler as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                tracing::warn!(
                    "could not install the handler of signal {sig}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
    }
}

/// The first SIGINT or SIGTERM received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// The exit code for a run ended by `sig`: 130 for SIGINT, 143 for SIGTERM.
pub fn exit_code(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(1)
}

/// `SIGINT`, `SIGTERM`, or `signal N`.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}
