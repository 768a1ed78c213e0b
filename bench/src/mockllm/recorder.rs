//! What the mock saw, for tests to assert on: counters (atomics, cheap enough for a
//! benchmark) and a bounded log of the most recent requests.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

/// The wire protocol a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.1 over plain TCP.
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2Tls,
    /// HTTP/1.1 over TLS (ALPN `http/1.1` or none).
    Http1Tls,
}

impl Protocol {
    /// Whether the request came over HTTP/2 (h2c or TLS).
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2Tls)
    }
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub protocol: Protocol,
    pub method: String,
    pub path: String,
    /// Header names lowercased, in arrival order; values decoded lossily as UTF-8.
    /// HTTP/2 pseudo-headers are not included (see `method` and `path`).
    pub headers: Vec<(String, String)>,
    /// The request body, cut to [`super::MockLlmConfig::recorded_body_bytes`].
    pub body: Bytes,
    /// The body's full length before the cut.
    pub body_len: usize,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, when it is JSON and was not cut.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        if self.body.len() != self.body_len {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
}

/// The counters a test can read or wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// TCP connections accepted since start.
    ConnectionsAccepted,
    /// TCP connections currently open.
    ConnectionsOpen,
    /// Request heads received (every request is one stream, HTTP/1.1 included).
    Requests,
    /// Streams whose response is in progress.
    StreamsActive,
    /// Peak of `StreamsActive` since start.
    MaxStreamsOverall,
    /// Peak number of concurrent streams on any single connection.
    MaxStreamsPerConnection,
    /// Streams the client gave up on before their end: an HTTP/2 RST_STREAM or a dead
    /// connection, an HTTP/1.1 connection closed early.
    StreamsCancelled,
    /// Streams whose planned response was written to the end (any pattern, error
    /// statuses included, except `reset:N`).
    StreamsCompleted,
    /// Streams the mock cut itself on purpose (`reset:N`).
    StreamsReset,
}

/// A wait that reached its timeout first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTimeout {
    pub counter: Counter,
    /// The counter's value when the wait gave up.
    pub last_value: u64,
    pub timeout: Duration,
}

impl fmt::Display for WaitTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mock-llm counter {:?} did not reach the wanted value within {:?} (last value {})",
            self.counter, self.timeout, self.last_value
        )
    }
}

impl std::error::Error for WaitTimeout {}

/// Counters and the request log, shared by every connection of one mock server.
#[derive(Debug)]
pub struct Recorder {
    connections_accepted: AtomicU64,
    connections_open: AtomicU64,
    requests: AtomicU64,
    streams_active: AtomicU64,
    max_streams_overall: AtomicU64,
    max_streams_per_connection: AtomicU64,
    streams_cancelled: AtomicU64,
    streams_completed: AtomicU64,
    streams_reset: AtomicU64,
    request_log: Mutex<VecDeque<RecordedRequest>>,
    request_log_capacity: usize,
    body_capacity: usize,
    /// Waiters registered in `wait_until`; writers skip the notify when there are none,
    /// so a benchmark pays one atomic load per counter change.
    waiters: AtomicUsize,
    changed: Notify,
}

impl Recorder {
    pub(crate) fn new(request_log_capacity: usize, body_capacity: usize) -> Recorder {
        Recorder {
            connections_accepted: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            streams_active: AtomicU64::new(0),
            max_streams_overall: AtomicU64::new(0),
            max_streams_per_connection: AtomicU64::new(0),
            streams_cancelled: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
            streams_reset: AtomicU64::new(0),
            request_log: Mutex::new(VecDeque::new()),
            request_log_capacity,
            body_capacity,
            waiters: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn slot(&self, counter: Counter) -> &AtomicU64 {
        match counter {
            Counter::ConnectionsAccepted => &self.connections_accepted,
            Counter::ConnectionsOpen => &self.connections_open,
            Counter::Requests => &self.requests,
            Counter::StreamsActive => &self.streams_active,
            Counter::MaxStreamsOverall => &self.max_streams_overall,
            Counter::MaxStreamsPerConnection => &self.max_streams_per_connection,
            Counter::StreamsCancelled => &self.streams_cancelled,
            Counter::StreamsCompleted => &self.streams_completed,
            Counter::StreamsReset => &self.streams_reset,
        }
    }

    /// The current value of `counter`.
    pub fn get(&self, counter: Counter) -> u64 {
        self.slot(counter).load(Ordering::SeqCst)
    }

    pub fn connections_accepted(&self) -> u64 {
        self.get(Counter::ConnectionsAccepted)
    }
    pub fn connections_open(&self) -> u64 {
        self.get(Counter::ConnectionsOpen)
    }
    pub fn requests(&self) -> u64 {
        self.get(Counter::Requests)
    }
    pub fn streams_active(&self) -> u64 {
        self.get(Counter::StreamsActive)
    }
    pub fn max_streams_overall(&self) -> u64 {
        self.get(Counter::MaxStreamsOverall)
    }
    pub fn max_streams_per_connection(&self) -> u64 {
        self.get(Counter::MaxStreamsPerConnection)
    }
    pub fn streams_cancelled(&self) -> u64 {
        self.get(Counter::StreamsCancelled)
    }
    pub fn streams_completed(&self) -> u64 {
        self.get(Counter::StreamsCompleted)
    }
    pub fn streams_reset(&self) -> u64 {
        self.get(Counter::StreamsReset)
    }

    /// The most recent requests, oldest first (at most the configured log capacity).
    pub fn requests_seen(&self) -> Vec<RecordedRequest> {
        self.request_log.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// The most recent request, if any was recorded.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.request_log.lock().unwrap_or_else(PoisonError::into_inner).back().cloned()
    }

    /// Waits until `counter` satisfies `is_reached`, or `timeout` passes.
    /// Returns the value that satisfied it.
    pub async fn wait_until(
        &self,
        counter: Counter,
        is_reached: impl Fn(u64) -> bool,
        timeout: Duration,
    ) -> Result<u64, WaitTimeout> {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let outcome = tokio::time::timeout(timeout, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                // Registered before the check, so a change after it still wakes us.
                changed.as_mut().enable();
                let value = self.get(counter);
                if is_reached(value) {
                    return value;
                }
                changed.await;
            }
        })
        .await;
        self.waiters.fetch_sub(1, Ordering::SeqCst);
        outcome.map_err(|_| WaitTimeout { counter, last_value: self.get(counter), timeout })
    }

    /// Waits until `counter` is at least `value`.
    pub async fn wait_for(
        &self,
        counter: Counter,
        value: u64,
        timeout: Duration,
    ) -> Result<u64, WaitTimeout> {
        self.wait_until(counter, |v| v >= value, timeout).await
    }

    fn bump(&self, counter: Counter) -> u64 {
        let value = self.slot(counter).fetch_add(1, Ordering::SeqCst) + 1;
        self.notify();
        value
    }

    fn drop_one(&self, counter: Counter) {
        self.slot(counter).fetch_sub(1, Ordering::SeqCst);
        self.notify();
    }

    fn raise_peak(&self, counter: Counter, value: u64) {
        if self.slot(counter).fetch_max(value, Ordering::SeqCst) < value {
            self.notify();
        }
    }

    fn notify(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify_waiters();
        }
    }

    pub(crate) fn open_connection(self: &Arc<Self>) -> ConnectionGuard {
        self.bump(Counter::ConnectionsAccepted);
        self.bump(Counter::ConnectionsOpen);
        ConnectionGuard { recorder: Arc::clone(self), streams_active: Arc::new(AtomicU64::new(0)) }
    }

    pub(crate) fn is_recording_requests(&self) -> bool {
        self.request_log_capacity > 0
    }

    pub(crate) fn body_capacity(&self) -> usize {
        self.body_capacity
    }

    pub(crate) fn record_request(&self, request: RecordedRequest) {
        if self.request_log_capacity == 0 {
            return;
        }
        let mut log = self.request_log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == self.request_log_capacity {
            log.pop_front();
        }
        log.push_back(request);
    }
}

/// Counts one open connection; dropping it closes the count.
#[derive(Debug)]
pub(crate) struct ConnectionGuard {
    recorder: Arc<Recorder>,
    streams_active: Arc<AtomicU64>,
}

impl ConnectionGuard {
    pub(crate) fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Counts a new request (stream) on this connection.
    pub(crate) fn open_stream(&self) -> StreamGuard {
        let recorder = &self.recorder;
        let number = recorder.bump(Counter::Requests);
        let overall = recorder.bump(Counter::StreamsActive);
        recorder.raise_peak(Counter::MaxStreamsOverall, overall);
        let on_connection = self.streams_active.fetch_add(1, Ordering::SeqCst) + 1;
        recorder.raise_peak(Counter::MaxStreamsPerConnection, on_connection);
        StreamGuard {
            recorder: Arc::clone(recorder),
            connection_streams: Arc::clone(&self.streams_active),
            number,
            outcome: None,
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.recorder.drop_one(Counter::ConnectionsOpen);
    }
}

/// How a stream ended, from the mock's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamOutcome {
    Completed,
    Cancelled,
    Reset,
}

/// Counts one active stream; `finish` records its outcome. A stream dropped without an
/// outcome (server shutdown) only leaves the active count.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    recorder: Arc<Recorder>,
    connection_streams: Arc<AtomicU64>,
    number: u64,
    outcome: Option<StreamOutcome>,
}

impl StreamGuard {
    /// This request's sequence number on the server, from 1.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    pub(crate) fn finish(mut self, outcome: StreamOutcome) {
        self.outcome = Some(outcome);
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // Leave the active count first, so a test that sees the outcome also sees it gone.
        self.connection_streams.fetch_sub(1, Ordering::SeqCst);
        self.recorder.drop_one(Counter::StreamsActive);
        let counter = match self.outcome {
            Some(StreamOutcome::Completed) => Counter::StreamsCompleted,
            Some(StreamOutcome::Cancelled) => Counter::StreamsCancelled,
            Some(StreamOutcome::Reset) => Counter::StreamsReset,
            None => return,
        };
        self.recorder.bump(counter);
    }
}
