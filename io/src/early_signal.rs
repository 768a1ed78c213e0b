//! SIGINT and SIGTERM that arrive before worker 0's runtime has installed its
//! own handlers. The socket is bound (and connectable) before the runtime
//! exists; without this a stop request in that window killed the process by
//! the default action, leaving the socket file and cutting queued handoffs off.
//! Installed first thing; the runtime's handlers are added beside it, and
//! [`crate::entry::Stop::shutdown`] stops at once when a request came early.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::process::Signal;

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Records SIGINT/SIGTERM from now on.
pub fn install() -> io::Result<()> {
    for signal in [Signal::INT, Signal::TERM].map(Signal::as_raw) {
        // SAFETY: the action only stores to an atomic, which is async-signal-safe.
        unsafe { signal_hook_registry::register(signal, || REQUESTED.store(true, Ordering::SeqCst)) }?;
    }
    Ok(())
}

/// Whether a stop was requested since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Sets the record as a signal would; tests that set it must `clear_request`
/// after, since the record is process-wide.
#[cfg(test)]
pub(crate) fn mark_requested() {
    REQUESTED.store(true, Ordering::SeqCst);
}

#[cfg(test)]
pub(crate) fn clear_request() {
    REQUESTED.store(false, Ordering::SeqCst);
}
