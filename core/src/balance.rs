//! Spreading handoffs over workers.
//!
//! Every worker accepts from the one listening socket (AF_UNIX has no
//! `SO_REUSEPORT` distribution) and a new connection wakes them all; the first to
//! call `accept` takes it. Measured with two workers and 5,000 handoffs, that
//! split them 3,598 to 1,402. So a worker holding more than an even share of the
//! open client sockets, plus a slack, leaves the connection to the others for a
//! moment, and takes it itself if it is still queued then: a busy sibling must
//! never leave a handoff waiting for long.

use std::time::Duration;

/// How one worker decides whether to accept now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptBalance {
    /// Workers accepting from the socket; with one, nothing is ever deferred.
    pub workers: u64,
    /// Sockets above an even share a worker may hold and still accept at once.
    pub slack: u64,
    /// How long an over-share worker leaves a queued connection to the others.
    pub defer: Duration,
}

impl Default for AcceptBalance {
    fn default() -> Self {
        AcceptBalance { workers: 1, slack: 8, defer: Duration::from_millis(1) }
    }
}

impl AcceptBalance {
    /// With `own` of `total` open client sockets (every worker's), how long this
    /// worker waits before accepting: `None` to accept now.
    pub fn defer_for(&self, own: u64, total: u64) -> Option<Duration> {
        if self.workers <= 1 {
            return None;
        }
        let even_share = total.div_ceil(self.workers);
        (own > even_share.saturating_add(self.slack)).then_some(self.defer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_workers() -> AcceptBalance {
        AcceptBalance { workers: 2, ..AcceptBalance::default() }
    }

    #[test]
    fn one_worker_always_accepts_at_once() {
        let single = AcceptBalance::default();
        assert_eq!(single.defer_for(1_000, 1_000), None);
    }

    #[test]
    fn a_worker_within_its_share_and_slack_accepts_at_once() {
        let balance = two_workers();
        assert_eq!(balance.defer_for(0, 0), None);
        assert_eq!(balance.defer_for(50, 100), None);
        assert_eq!(balance.defer_for(58, 100), None, "the slack allows 8 above the share");
        assert_eq!(balance.defer_for(9, 9), None, "a lone first few streams need no balancing");
    }

    #[test]
    fn a_worker_over_its_share_defers_briefly() {
        let balance = two_workers();
        assert_eq!(balance.defer_for(59, 100), Some(Duration::from_millis(1)));
        assert_eq!(balance.defer_for(3_598, 5_000), Some(Duration::from_millis(1)));
    }

    #[test]
    fn the_share_rounds_up_with_an_odd_total() {
        let balance = AcceptBalance { workers: 3, slack: 0, ..AcceptBalance::default() };
        assert_eq!(balance.defer_for(4, 10), None, "10 / 3 rounds up to 4");
        assert!(balance.defer_for(5, 10).is_some());
    }

    #[test]
    fn counts_read_at_different_moments_never_overflow() {
        let balance = AcceptBalance { slack: u64::MAX, ..two_workers() };
        assert_eq!(balance.defer_for(u64::MAX, u64::MAX), None);
        // `own` can exceed `total` when the two atomics were read apart.
        assert!(two_workers().defer_for(100, 10).is_some());
    }
}
