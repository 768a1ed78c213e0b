//! What the front has done, for `GET /stats` (tests assert on it: one stream request
//! per submitted prompt means the browser never reconnected).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters; relaxed atomics, each one independent.
#[derive(Debug, Default)]
pub struct Stats {
    connections: AtomicU64,
    pages: AtomicU64,
    stream_requests: AtomicU64,
    handed_off: AtomicU64,
    daemon_unreachable: AtomicU64,
    refused: AtomicU64,
}

/// The counters at one moment, as `/stats` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// TCP connections accepted.
    pub connections: u64,
    /// Demo pages served.
    pub pages: u64,
    /// Valid `/api/stream` requests (GET or POST).
    pub stream_requests: u64,
    /// Of those, handed to the daemon.
    pub handed_off: u64,
    /// Of those, answered 503 because the daemon could not be reached.
    pub daemon_unreachable: u64,
    /// Requests answered with a 4xx.
    pub refused: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Count {
    Connection,
    Page,
    StreamRequest,
    HandedOff,
    DaemonUnreachable,
    Refused,
}

impl Stats {
    pub(super) fn add(&self, count: Count) {
        let counter = match count {
            Count::Connection => &self.connections,
            Count::Page => &self.pages,
            Count::StreamRequest => &self.stream_requests,
            Count::HandedOff => &self.handed_off,
            Count::DaemonUnreachable => &self.daemon_unreachable,
            Count::Refused => &self.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Ordering::Relaxed),
            pages: self.pages.load(Ordering::Relaxed),
            stream_requests: self.stream_requests.load(Ordering::Relaxed),
            handed_off: self.handed_off.load(Ordering::Relaxed),
            daemon_unreachable: self.daemon_unreachable.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}
