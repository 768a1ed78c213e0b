//! Whether the daemon is alive: every worker's accept loop stamps a heartbeat
//! as it turns (at least every `beat_every`, idle or not). A worker whose stamp
//! is older than `stale_after` is hung, and then so is the daemon: the health
//! endpoint answers 503 and the service manager's watchdog is not fed, so a
//! hung daemon is restarted instead of silently queueing clients.

use std::time::Duration;

/// When the accept loops stamp their heartbeats and when a stamp is too old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// The longest an accept loop goes without stamping, even with no handoff.
    pub beat_every: Duration,
    /// A stamp older than this means that worker has stopped turning.
    pub stale_after: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { beat_every: Duration::from_secs(1), stale_after: Duration::from_secs(5) }
    }
}

impl Liveness {
    /// With `now` and each worker's last stamp on one clock (time since the
    /// daemon started): true when there is at least one worker and every
    /// worker stamped within `stale_after`.
    pub fn alive(&self, now: Duration, beats: impl IntoIterator<Item = Duration>) -> bool {
        let mut workers = 0usize;
        for beat in beats {
            workers += 1;
            if now.saturating_sub(beat) > self.stale_after {
                return false;
            }
        }
        workers > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn every_worker_recent_is_alive() {
        assert!(Liveness::default().alive(secs(100), [secs(99), secs(96)]));
    }

    #[test]
    fn one_stale_worker_makes_the_daemon_hung() {
        assert!(!Liveness::default().alive(secs(100), [secs(99), secs(94)]));
    }

    #[test]
    fn a_stamp_exactly_at_the_limit_still_counts() {
        assert!(Liveness::default().alive(secs(100), [secs(95)]));
    }

    #[test]
    fn no_workers_is_not_alive() {
        assert!(!Liveness::default().alive(secs(1), []));
    }

    #[test]
    fn a_stamp_after_now_is_fresh() {
        // Stamps and `now` are read without a lock; a stamp may land between them.
        assert!(Liveness::default().alive(secs(10), [secs(11)]));
    }
}
