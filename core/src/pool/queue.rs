//! The FIFO of streams waiting for a slot, with O(1) cancellation.
//!
//! A cancelled stream is not searched for: its entry stays behind, stale, and is
//! skipped when it reaches the front. Each entry carries the ticket it was queued
//! with, and it is live only while the pool still records the stream as queued with
//! that same ticket, so a stale entry can never be mistaken for a later one. When
//! stale entries outnumber live ones the queue compacts itself, which keeps its
//! memory proportional to the streams really waiting, at amortized O(1) per cancel.

use std::collections::VecDeque;

use super::StreamId;

/// Stale entries tolerated beyond the live count before compacting.
const COMPACT_SLACK: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry<T> {
    pub stream: StreamId,
    pub ticket: u64,
    /// What the pool keeps with the entry (for refused streams: the connection
    /// that refused them).
    pub extra: T,
}

#[derive(Debug)]
pub(super) struct WaitQueue<T> {
    entries: VecDeque<Entry<T>>,
    live: usize,
}

impl<T: Copy> WaitQueue<T> {
    pub fn new() -> Self {
        WaitQueue { entries: VecDeque::new(), live: 0 }
    }

    /// Streams really waiting (stale entries not counted).
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn push_back(&mut self, entry: Entry<T>) {
        self.entries.push_back(entry);
        self.live += 1;
    }

    /// Takes the first live entry, dropping stale ones on the way.
    pub fn pop_front(&mut self, is_live: impl Fn(&Entry<T>) -> bool) -> Option<Entry<T>> {
        while let Some(entry) = self.entries.pop_front() {
            if is_live(&entry) {
                self.live -= 1;
                return Some(entry);
            }
        }
        None
    }

    /// Records that one live entry went stale (its stream was cancelled), and
    /// compacts when stale entries have piled up.
    pub fn forget_one(&mut self, is_live: impl Fn(&Entry<T>) -> bool) {
        self.live = self.live.saturating_sub(1);
        if self.entries.len() > 2 * self.live + COMPACT_SLACK {
            self.entries.retain(|entry| is_live(entry));
        }
    }

    /// Keeps, in order, the entries `keep` returns true for, and counts the ones it
    /// consumed (returned false for while live) as gone. Stale entries are dropped.
    pub fn retain_live(&mut self, mut keep: impl FnMut(&Entry<T>) -> Keep) {
        let mut live = 0;
        self.entries.retain(|entry| match keep(entry) {
            Keep::Waiting => {
                live += 1;
                true
            }
            Keep::Gone => false,
        });
        self.live = live;
    }

    #[cfg(any(test, feature = "__testing"))]
    pub fn entries(&self) -> impl Iterator<Item = &Entry<T>> {
        self.entries.iter()
    }

    /// Entries held, stale ones included (for the invariant checker).
    #[cfg(any(test, feature = "__testing"))]
    pub fn stored(&self) -> usize {
        self.entries.len()
    }

    #[cfg(any(test, feature = "__testing"))]
    pub fn compact_slack() -> usize {
        COMPACT_SLACK
    }
}

/// What [`WaitQueue::retain_live`] does with one entry.
pub(super) enum Keep {
    /// Still waiting: keep it in place.
    Waiting,
    /// Stale or served: drop it.
    Gone,
}
