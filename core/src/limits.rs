//! The concurrent-stream limit, the daemon's counters, and the `--benchmark`
//! summary. Shared by every task of a multi-threaded runtime, so counters are
//! atomics (no lock); admission is a guard that gives its slot back when dropped.
//!
//! Every counter is independent, so `Relaxed` ordering is enough: the only
//! cross-counter rule, "active never exceeds the limit", is kept by the
//! compare-exchange on `active` alone.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use crate::stream::Outcome;

/// Counters and the limit, shared by all streams of one daemon.
#[derive(Debug, Default)]
pub struct Limits {
    /// Changed only by a reload ([`Limits::set_max_streams`]).
    max_streams: AtomicU64,
    active: AtomicU64,
    peak_concurrent: AtomicU64,
    started: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    client_gone: AtomicU64,
    client_stalled: AtomicU64,
    rejected: AtomicU64,
    rejected_draining: AtomicU64,
    rejected_user_limit: AtomicU64,
    bad_handoffs: AtomicU64,
    bytes_sent: AtomicU64,
}

/// One admitted stream; dropping it frees its slot (and its user's, if any).
#[derive(Debug)]
pub struct Admission {
    limits: Arc<Limits>,
    /// The stream's place in its user's counts, held as long as the admission.
    user: Option<crate::user_limits::UserSlot>,
}

/// A consistent-enough copy of the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Streams admitted now (their [`Admission`] not yet dropped).
    pub active: u64,
    /// The most streams admitted at once since start; never above the limit.
    pub peak_concurrent: u64,
    /// Streams admitted since start, less those later found bad
    /// ([`Admission::into_bad_handoff`]).
    pub started: u64,
    /// Streams that ended with `[DONE]`.
    pub completed: u64,
    /// Streams that ended with an error event (or could not be sent one).
    pub failed: u64,
    /// Streams whose client went away first.
    pub client_gone: u64,
    /// Streams ended because their client took nothing for the write timeout.
    pub client_stalled: u64,
    /// Handoffs answered 503, for either reason: the limit, or draining.
    pub rejected: u64,
    /// Of `rejected`, those answered 503 because the daemon was shutting down.
    pub rejected_draining: u64,
    /// Handoffs answered 429: their user had as many streams as a per-user limit
    /// allows (not in `rejected`).
    pub rejected_user_limit: u64,
    /// Handoffs answered 400.
    pub bad_handoffs: u64,
    /// Bytes written to clients.
    pub bytes_sent: u64,
}

impl Limits {
    /// Zeroed counters admitting at most `max_streams` streams at once (0 admits none).
    pub fn new(max_streams: u64) -> Arc<Limits> {
        Arc::new(Limits { max_streams: AtomicU64::new(max_streams), ..Default::default() })
    }

    /// The most streams admitted at once.
    pub fn max_streams(&self) -> u64 {
        self.max_streams.load(Relaxed)
    }

    /// A reloaded `--max-connections`: later admissions are judged by it; the
    /// streams already running keep their slots even when over the new limit.
    pub fn set_max_streams(&self, max_streams: u64) {
        self.max_streams.store(max_streams, Relaxed);
    }

    /// Admits one more stream, or `None` at the limit (the caller answers 503 and
    /// the rejection is counted here: do not also call [`Limits::record_rejected`]).
    pub fn try_admit(self: &Arc<Self>) -> Option<Admission> {
        // A compare-exchange loop rather than fetch_add-then-undo: under contention
        // fetch_add would let `active` (and so the peak) overshoot the limit briefly.
        let mut active = self.active.load(Relaxed);
        loop {
            if active >= self.max_streams.load(Relaxed) {
                self.rejected.fetch_add(1, Relaxed);
                return None;
            }
            match self.active.compare_exchange_weak(active, active + 1, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(current) => active = current,
            }
        }
        self.peak_concurrent.fetch_max(active + 1, Relaxed);
        self.started.fetch_add(1, Relaxed);
        Some(Admission { limits: Arc::clone(self), user: None })
    }

    /// Counts a handoff answered 503 because the daemon is draining: in `rejected`
    /// and in `rejected_draining`. [`crate::admission::admit`] calls it.
    pub fn record_rejected_draining(&self) {
        self.rejected.fetch_add(1, Relaxed);
        self.rejected_draining.fetch_add(1, Relaxed);
    }

    /// The same as [`Limits::record_rejected_draining`] (draining is the only 503
    /// that [`Limits::try_admit`] does not count itself); kept for callers written
    /// before [`crate::admission::admit`].
    pub fn record_rejected(&self) {
        self.record_rejected_draining();
    }

    /// Counts a handoff answered 429 for a per-user limit.
    /// [`crate::admission::admit_for_user`] calls it.
    pub fn record_rejected_user_limit(&self) {
        self.rejected_user_limit.fetch_add(1, Relaxed);
    }

    /// Counts a handoff answered 400.
    pub fn record_bad_handoff(&self) {
        self.bad_handoffs.fetch_add(1, Relaxed);
    }

    /// Counts bytes written to clients.
    pub fn add_bytes_sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Relaxed);
    }

    /// Counts a stream's outcome (call once per stream, with its `Done`).
    pub fn record_outcome(&self, outcome: &Outcome) {
        let counter = match outcome {
            Outcome::Completed => &self.completed,
            Outcome::Failed(_) => &self.failed,
            Outcome::ClientGone => &self.client_gone,
            Outcome::ClientStalled => &self.client_stalled,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Every counter now, each read on its own (`Relaxed`), so counters may be
    /// a moment apart from each other.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            active: self.active.load(Relaxed),
            peak_concurrent: self.peak_concurrent.load(Relaxed),
            started: self.started.load(Relaxed),
            completed: self.completed.load(Relaxed),
            failed: self.failed.load(Relaxed),
            client_gone: self.client_gone.load(Relaxed),
            client_stalled: self.client_stalled.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            rejected_draining: self.rejected_draining.load(Relaxed),
            rejected_user_limit: self.rejected_user_limit.load(Relaxed),
            bad_handoffs: self.bad_handoffs.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
        }
    }
}

impl Admission {
    /// This admission holding `slot` (its user's place) until it is dropped.
    pub fn with_user_slot(mut self, slot: Option<crate::user_limits::UserSlot>) -> Admission {
        self.user = slot;
        self
    }

    /// The handoff turned out bad after it was admitted (a file it names could not
    /// be used): it never started, so it counts as a bad handoff, and its slot is
    /// freed now.
    pub fn into_bad_handoff(self) {
        self.limits.started.fetch_sub(1, Relaxed);
        self.limits.record_bad_handoff();
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limits.active.fetch_sub(1, Relaxed);
    }
}

/// The `--benchmark` summary printed on exit: one `key: value` per line.
pub fn summary(snapshot: &Snapshot) -> String {
    let lines = [
        ("peak concurrent streams", snapshot.peak_concurrent),
        ("started", snapshot.started),
        ("completed", snapshot.completed),
        ("failed", snapshot.failed),
        ("client gone", snapshot.client_gone),
        ("client stalled", snapshot.client_stalled),
        ("rejected (503)", snapshot.rejected),
        ("rejected while draining (503)", snapshot.rejected_draining),
        ("rejected per-user limit (429)", snapshot.rejected_user_limit),
        ("bad handoffs (400)", snapshot.bad_handoffs),
        ("bytes sent", snapshot.bytes_sent),
    ];
    let mut text = String::with_capacity(256);
    for (key, value) in lines {
        // Writing to a String cannot fail.
        let _ = writeln!(text, "{key}: {value}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{FailureKind, FailureReason};

    #[test]
    fn admits_up_to_the_limit_and_counts_the_rejection() {
        let limits = Limits::new(2);
        let first = limits.try_admit();
        let second = limits.try_admit();
        assert!(first.is_some() && second.is_some());
        assert!(limits.try_admit().is_none(), "a third stream must be refused at a limit of 2");
        let snapshot = limits.snapshot();
        assert_eq!(snapshot.active, 2);
        assert_eq!(snapshot.started, 2);
        assert_eq!(snapshot.rejected, 1);
        assert_eq!(snapshot.peak_concurrent, 2);
    }

    #[test]
    fn dropping_an_admission_returns_its_slot() {
        let limits = Limits::new(1);
        let admission = limits.try_admit();
        assert!(admission.is_some());
        assert!(limits.try_admit().is_none());
        drop(admission);
        assert_eq!(limits.snapshot().active, 0);
        let again = limits.try_admit();
        assert!(again.is_some(), "the freed slot must be usable again");
        let snapshot = limits.snapshot();
        assert_eq!((snapshot.started, snapshot.rejected, snapshot.peak_concurrent), (2, 1, 1));
    }

    #[test]
    fn zero_limit_admits_nothing() {
        let limits = Limits::new(0);
        assert!(limits.try_admit().is_none());
        assert_eq!(limits.snapshot().started, 0);
    }

    #[test]
    fn concurrent_admissions_fill_the_limit_exactly() {
        const THREADS: usize = 8;
        const ATTEMPTS: usize = 200;
        const MAX: u64 = 1000;
        let limits = Limits::new(MAX);
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let limits = Arc::clone(&limits);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    // Hold every admission so the totals are exact.
                    let held: Vec<Admission> = (0..ATTEMPTS).filter_map(|_| limits.try_admit()).collect();
                    barrier.wait();
                    held.len()
                })
            })
            .collect();
        let admitted: usize =
            handles.into_iter().map(|handle| handle.join().expect("admitting thread panicked")).sum();
        assert_eq!(admitted as u64, MAX);
        let snapshot = limits.snapshot();
        assert_eq!(snapshot.peak_concurrent, MAX);
        assert_eq!(snapshot.started, MAX);
        assert_eq!(snapshot.rejected, (THREADS * ATTEMPTS) as u64 - MAX);
        assert_eq!(snapshot.active, 0, "every admission was dropped with its thread");
    }

    #[test]
    fn concurrent_churn_never_exceeds_the_limit() {
        const THREADS: usize = 6;
        const ROUNDS: usize = 5000;
        const MAX: u64 = 4;
        let limits = Limits::new(MAX);
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let limits = Arc::clone(&limits);
                std::thread::spawn(move || {
                    let mut highest_seen = 0;
                    for _ in 0..ROUNDS {
                        if let Some(admission) = limits.try_admit() {
                            highest_seen = highest_seen.max(limits.snapshot().active);
                            drop(admission);
                        }
                    }
                    highest_seen
                })
            })
            .collect();
        let highest_seen = handles
            .into_iter()
            .map(|handle| handle.join().expect("churning thread panicked"))
            .max()
            .expect("at least one thread");
        let snapshot = limits.snapshot();
        assert!(highest_seen <= MAX, "active reached {highest_seen} with a limit of {MAX}");
        assert!(snapshot.peak_concurrent <= MAX && snapshot.peak_concurrent >= 1);
        assert!(snapshot.peak_concurrent >= highest_seen);
        assert_eq!(snapshot.active, 0);
        assert_eq!(snapshot.started + snapshot.rejected, (THREADS * ROUNDS) as u64);
    }

    #[test]
    fn outcomes_and_counters_are_counted_apart() {
        let limits = Limits::new(10);
        limits.record_outcome(&Outcome::Completed);
        limits.record_outcome(&Outcome::Completed);
        limits.record_outcome(&Outcome::Failed(FailureReason::Backend(FailureKind::Reset)));
        limits.record_outcome(&Outcome::ClientGone);
        limits.record_outcome(&Outcome::ClientStalled);
        limits.record_rejected_draining();
        limits.record_rejected();
        limits.record_bad_handoff();
        limits.add_bytes_sent(1500);
        limits.add_bytes_sent(500);
        assert!(limits.try_admit().is_some());
        let snapshot = limits.snapshot();
        assert_eq!(
            (snapshot.completed, snapshot.failed, snapshot.client_gone, snapshot.client_stalled),
            (2, 1, 1, 1),
            "completed, failed, client gone, client stalled"
        );
        assert_eq!((snapshot.rejected, snapshot.rejected_draining), (2, 2), "both 503s were for draining");
        assert_eq!((snapshot.bad_handoffs, snapshot.bytes_sent, snapshot.started), (1, 2000, 1));
    }

    #[test]
    fn summary_lists_every_counter_one_per_line() {
        let snapshot = Snapshot {
            active: 3,
            peak_concurrent: 41,
            started: 42,
            completed: 37,
            failed: 2,
            client_gone: 1,
            client_stalled: 4,
            rejected: 5,
            rejected_draining: 2,
            rejected_user_limit: 7,
            bad_handoffs: 6,
            bytes_sent: 123_456,
        };
        let text = summary(&snapshot);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "peak concurrent streams: 41",
                "started: 42",
                "completed: 37",
                "failed: 2",
                "client gone: 1",
                "client stalled: 4",
                "rejected (503): 5",
                "rejected while draining (503): 2",
                "rejected per-user limit (429): 7",
                "bad handoffs (400): 6",
                "bytes sent: 123456",
            ]
        );
        assert!(text.ends_with('\n'));
    }
}
