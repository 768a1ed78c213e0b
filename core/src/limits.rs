//! The concurrent-stream limit, the daemon's counters, and the `--benchmark`
//! summary. Shared by every task of a multi-threaded runtime, so counters are
//! atomics (no lock); admission is a guard that gives its slot back when dropped.
//!
//! SKELETON: the API below is the contract; bodies are being written.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// Counters and the limit, shared by all streams of one daemon.
#[derive(Debug, Default)]
pub struct Limits {
    max_streams: u64,
    active: AtomicU64,
}

/// One admitted stream; dropping it frees its slot.
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub active: u64,
    pub peak_concurrent: u64,
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    pub client_gone: u64,
    /// Handoffs answered 503 because of the limit (or draining).
    pub rejected: u64,
    /// Handoffs answered 400.
    pub bad_handoffs: u64,
    pub bytes_sent: u64,
}

impl Limits {
    pub fn new(max_streams: u64) -> Arc<Limits> {
        Arc::new(Limits { max_streams, ..Default::default() })
    }

    /// Admits one more stream, or `None` at the limit (the caller answers 503 and
    /// the rejection is counted).
    pub fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        let _ = (&self.active, self.max_streams);
        todo!("try_admit")
    }

    /// Counts a handoff answered 503 (limit reached or draining).
    pub fn record_rejected(&self) {
        todo!("record_rejected")
    }

    /// Counts a handoff answered 400.
    pub fn record_bad_handoff(&self) {
        todo!("record_bad_handoff")
    }

    /// Counts bytes written to clients.
    pub fn add_bytes_sent(&self, bytes: u64) {
        let _ = bytes;
        todo!("add_bytes_sent")
    }

    /// Counts a stream's outcome (call once per stream, with its `Done`).
    pub fn record_outcome(&self, outcome: &crate::stream::Outcome) {
        let _ = outcome;
        todo!("record_outcome")
    }

    pub fn snapshot(&self) -> Snapshot {
        todo!("snapshot")
    }
}

/// The `--benchmark` summary printed on exit.
pub fn summary(snapshot: &Snapshot) -> String {
    let _ = snapshot;
    todo!("summary")
}
