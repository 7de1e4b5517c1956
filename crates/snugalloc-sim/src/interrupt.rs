//! Interrupt: Ctrl-C (SIGINT) and SIGTERM end a run early but cleanly.
//!
//! The handler only raises a flag (an async-signal-safe atomic store). The
//! sampler polls it every tick and ends the current allocator's run as if
//! its time were up; `run` then skips the remaining allocators and still
//! prints the table and writes the JSON report and plots of what ran, so a
//! soak stopped after hours keeps its results. A second signal while
//! stopping falls back to the default action (terminate).

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Relaxed: a lone flag; nothing else is published with it.
    REQUESTED.store(true, Ordering::Relaxed);
    // SAFETY: `signal` is async-signal-safe; restoring the default action
    // lets a second signal terminate the process at once.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` only performs async-signal-safe operations (an
        // atomic store and `signal`).
        unsafe { libc::signal(sig, handler as libc::sighandler_t) };
    }
}

/// Passes a stop request on to a child process (the child installs the
/// same handler, so it ends its run cleanly and reports).
pub fn forward(child_pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(child_pid) else {
        return;
    };
    // SAFETY: `kill` has no memory-safety preconditions; `pid` is our own
    // child, which we have not yet waited for.
    unsafe { libc::kill(pid, libc::SIGINT) };
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    // Relaxed: see `on_signal`.
    REQUESTED.load(Ordering::Relaxed)
}
