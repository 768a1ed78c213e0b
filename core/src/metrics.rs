//! The daemon's metrics: what each worker counts, how outcomes and refusals map
//! to labels, the per-stream summary (the info log line and the histograms),
//! and the sums a scrape reads. No I/O: the exposition and the endpoint's
//! sockets live in handoff-io.
//!
//! # Cost on the hot path
//! Each worker owns one [`WorkerMetrics`] (aligned to its own cache lines) and is
//! the only writer of it, with `Relaxed` atomics, once per handoff, per stream
//! end, per backend response head or per pool event; never per SSE event. A
//! scrape sums every worker's copy ([`Metrics::totals`]); only that and a
//! worker's registration take the registry's lock.

pub mod endpoint;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::admission::Refusal;
use crate::pool::PoolStats;
use crate::stream::{FailureKind, FailureReason, Outcome};

/// Upper bounds of the latency histograms' buckets, in seconds (one more
/// bucket, `+Inf`, takes the rest). From a millisecond, for the time to first
/// byte, to half an hour, the longest a stream may last by default.
pub const BUCKET_BOUNDS: [f64; 18] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];

const BUCKETS: usize = BUCKET_BOUNDS.len() + 1;

/// [`BUCKET_BOUNDS`] in microseconds, the unit observations are compared in.
const BOUNDS_MICROS: [u64; BUCKET_BOUNDS.len()] = {
    let mut micros = [0u64; BUCKET_BOUNDS.len()];
    let mut i = 0;
    while i < micros.len() {
        micros[i] = (BUCKET_BOUNDS[i] * 1_000_000.0) as u64;
        i += 1;
    }
    micros
};

/// A latency histogram with fixed buckets: one atomic add for the bucket and
/// one for the sum per observation, no lock (unlike `prometheus-client`'s own).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Counts one observation, in whole microseconds (a longer one than
    /// `u64::MAX` µs saturates); a value equal to a bound goes in that bound's bucket.
    pub fn observe(&self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        // A value equal to a bound belongs to that bucket (Prometheus' `le`).
        let index = BOUNDS_MICROS.partition_point(|&bound| bound < micros);
        self.buckets[index].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// The counts now. Each bucket and the sum are read one by one, not as a
    /// whole, so an observation racing the read may show in some but not others.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

/// A histogram's counts as read at one scrape (summed over workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations per bucket of [`BUCKET_BOUNDS`] (not cumulative), then `+Inf`.
    pub buckets: [u64; BUCKETS],
    /// Every observation added together, in microseconds (saturating when summed).
    pub sum_micros: u64,
}

impl HistogramSnapshot {
    /// How many observations there were (all buckets together).
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// [`HistogramSnapshot::sum_micros`] in seconds, the unit the exposition uses.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1_000_000.0
    }

    /// `(upper bound in seconds, observations in that bucket)`, the last bound
    /// `+Inf`: the shape the exposition encoder takes (it accumulates).
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        BUCKET_BOUNDS.iter().copied().chain([f64::INFINITY]).zip(self.buckets.iter().copied()).collect()
    }

    fn add(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.buckets.iter_mut().zip(other.buckets) {
            *mine += theirs;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
    }
}

/// What became of one handoff: the `outcome` and `type` labels of
/// `handoff_handoffs_total`, and the same words in the per-stream log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HandoffOutcome {
    /// The stream ended with `[DONE]`.
    Completed,
    /// The client went away before the stream ended.
    ClientGone,
    /// The client took no bytes for the write timeout, so its stream was ended.
    ClientStalled,
    /// The backend failed; the type is the client's error event `type`.
    BackendError(BackendError),
    /// A stream deadline passed; which one is the `type`.
    Timeout(TimeoutKind),
    /// The drain deadline passed and the stream was ended.
    Shutdown,
    /// Never became a stream.
    Rejected(Rejection),
}

/// How the backend failed a stream: the `type` label of a
/// [`HandoffOutcome::BackendError`] (`upstream_status`, `backend_unavailable`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendError {
    /// A non-2xx status (the status itself is in `handoff_backend_responses_total`).
    UpstreamStatus,
    /// An `{"error":..}` object in the upstream stream.
    UpstreamError,
    /// The upstream ended with neither `[DONE]` nor a `finish_reason`.
    UpstreamTruncated,
    /// Undecodable SSE or chunk JSON, or HTTP/HTTP/2 rules broken.
    UpstreamProtocol,
    /// No connection, or it died before the response started (`backend_unavailable`).
    Unavailable,
    /// The stream was reset or its connection died mid-response (`upstream_reset`).
    Reset,
    /// No backend capacity: the pool's wait queue was full (`overloaded`).
    Overloaded,
}

/// Which deadline ended a stream: the `type` label of a [`HandoffOutcome::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The backend sent no response head within `--first-byte-timeout`.
    FirstByte,
    /// The backend sent nothing mid-stream for `--idle-timeout`.
    Idle,
    /// The stream reached `--total-timeout`.
    Total,
}

/// Why a handoff never became a stream: the `type` label of a
/// [`HandoffOutcome::Rejected`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rejection {
    /// 503: every stream slot was taken.
    Capacity,
    /// 400: the handoff data did not decode.
    BadHandoff,
    /// 503: the daemon was draining.
    Draining,
    /// The module's connection carried no usable client socket (no fd,
    /// truncated control data, a receive error or timeout): nobody to answer.
    PeerRefused,
    /// The connecting process's uid and gid are not in `--allow-uid` /
    /// `--allow-gid`: closed before its message was read.
    PeerNotAllowed,
    /// The handed-off fd is not a stream socket (a pipe, a file, a datagram
    /// socket): closed without a byte written.
    NotStreamSocket,
    /// 503 from the fd reserve: the process was out of file descriptors.
    FdExhausted,
    /// The kernel had no fd for the client socket and closed it (MSG_CTRUNC
    /// with none received): that client got nothing, nobody could answer.
    FdDropped,
    /// 429: the handoff's user had as many streams as a per-user limit allows.
    UserLimit,
    /// 429: the handoff's user had spent its token budget for the window.
    TokenBudget,
}

/// What the fd reserve saw, for `handoff_fd_exhaustion_total{event}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FdEvent {
    /// `accept` failed with EMFILE or ENFILE.
    AcceptFailed,
    /// After an accept, no second fd was free for the client socket.
    NoRoomForClient,
    /// The reserve was released to take one more handoff.
    ReserveUsed,
    /// Accepting paused: even the reserve did not make room (or was spent).
    Paused,
    /// The reserve could not be re-opened at once (retried before each accept).
    ReserveNotRestored,
}

impl FdEvent {
    /// Every event, in the order of the counters and of [`Totals::fd_events`].
    pub const ALL: [FdEvent; 5] = [
        FdEvent::AcceptFailed,
        FdEvent::NoRoomForClient,
        FdEvent::ReserveUsed,
        FdEvent::Paused,
        FdEvent::ReserveNotRestored,
    ];
    const COUNT: usize = Self::ALL.len();

    fn index(self) -> usize {
        Self::ALL.iter().position(|&event| event == self).unwrap_or(0)
    }

    /// The `event` label.
    pub fn label(self) -> &'static str {
        match self {
            FdEvent::AcceptFailed => "accept_failed",
            FdEvent::NoRoomForClient => "no_room_for_client",
            FdEvent::ReserveUsed => "reserve_used",
            FdEvent::Paused => "paused",
            FdEvent::ReserveNotRestored => "reserve_not_restored",
        }
    }
}

impl HandoffOutcome {
    /// Every value, in the order of the counters (`HandoffOutcome::index`, private).
    pub const ALL: [HandoffOutcome; 24] = [
        HandoffOutcome::Completed,
        HandoffOutcome::ClientGone,
        HandoffOutcome::ClientStalled,
        HandoffOutcome::BackendError(BackendError::UpstreamStatus),
        HandoffOutcome::BackendError(BackendError::UpstreamError),
        HandoffOutcome::BackendError(BackendError::UpstreamTruncated),
        HandoffOutcome::BackendError(BackendError::UpstreamProtocol),
        HandoffOutcome::BackendError(BackendError::Unavailable),
        HandoffOutcome::BackendError(BackendError::Reset),
        HandoffOutcome::BackendError(BackendError::Overloaded),
        HandoffOutcome::Timeout(TimeoutKind::FirstByte),
        HandoffOutcome::Timeout(TimeoutKind::Idle),
        HandoffOutcome::Timeout(TimeoutKind::Total),
        HandoffOutcome::Shutdown,
        HandoffOutcome::Rejected(Rejection::Capacity),
        HandoffOutcome::Rejected(Rejection::BadHandoff),
        HandoffOutcome::Rejected(Rejection::Draining),
        HandoffOutcome::Rejected(Rejection::PeerRefused),
        HandoffOutcome::Rejected(Rejection::PeerNotAllowed),
        HandoffOutcome::Rejected(Rejection::NotStreamSocket),
        HandoffOutcome::Rejected(Rejection::FdExhausted),
        HandoffOutcome::Rejected(Rejection::FdDropped),
        HandoffOutcome::Rejected(Rejection::UserLimit),
        HandoffOutcome::Rejected(Rejection::TokenBudget),
    ];
    const COUNT: usize = Self::ALL.len();

    /// Its slot in a worker's counters (a scan of 23: once per stream).
    fn index(self) -> usize {
        Self::ALL.iter().position(|&o| o == self).unwrap_or(0)
    }

    /// The `outcome` label.
    pub fn outcome(self) -> &'static str {
        match self {
            HandoffOutcome::Completed => "completed",
            HandoffOutcome::ClientGone => "client_gone",
            HandoffOutcome::ClientStalled => "client_stalled",
            HandoffOutcome::BackendError(_) => "backend_error",
            HandoffOutcome::Timeout(_) => "timeout",
            HandoffOutcome::Shutdown => "shutdown",
            HandoffOutcome::Rejected(_) => "rejected",
        }
    }

    /// The `type` label: the error type (the client's error event `type` for a
    /// backend error), the timeout's kind, the refusal's reason; empty otherwise.
    pub fn error_type(self) -> &'static str {
        match self {
            HandoffOutcome::Completed
            | HandoffOutcome::ClientGone
            | HandoffOutcome::ClientStalled
            | HandoffOutcome::Shutdown => "",
            HandoffOutcome::BackendError(error) => match error {
                BackendError::UpstreamStatus => "upstream_status",
                BackendError::UpstreamError => "upstream_error",
                BackendError::UpstreamTruncated => "upstream_truncated",
                BackendError::UpstreamProtocol => "upstream_protocol",
                BackendError::Unavailable => "backend_unavailable",
                BackendError::Reset => "upstream_reset",
                BackendError::Overloaded => "overloaded",
            },
            HandoffOutcome::Timeout(kind) => match kind {
                TimeoutKind::FirstByte => "first_byte",
                TimeoutKind::Idle => "idle",
                TimeoutKind::Total => "total",
            },
            HandoffOutcome::Rejected(reason) => match reason {
                Rejection::Capacity => "capacity",
                Rejection::BadHandoff => "bad_handoff",
                Rejection::Draining => "draining",
                Rejection::PeerRefused => "peer_refused",
                Rejection::PeerNotAllowed => "peer_not_allowed",
                Rejection::NotStreamSocket => "not_stream_socket",
                Rejection::FdExhausted => "fd_exhausted",
                Rejection::FdDropped => "fd_dropped",
                Rejection::UserLimit => "user_limit",
                Rejection::TokenBudget => "token_budget",
            },
        }
    }

    /// How a stream's outcome is counted.
    pub fn of_stream(outcome: &Outcome) -> HandoffOutcome {
        match outcome {
            Outcome::Completed => HandoffOutcome::Completed,
            Outcome::ClientGone => HandoffOutcome::ClientGone,
            Outcome::ClientStalled => HandoffOutcome::ClientStalled,
            Outcome::Failed(reason) => match *reason {
                FailureReason::UpstreamStatus(_) => {
                    HandoffOutcome::BackendError(BackendError::UpstreamStatus)
                }
                FailureReason::UpstreamError => HandoffOutcome::BackendError(BackendError::UpstreamError),
                FailureReason::UpstreamTruncated => {
                    HandoffOutcome::BackendError(BackendError::UpstreamTruncated)
                }
                FailureReason::UpstreamProtocol | FailureReason::Backend(FailureKind::Protocol) => {
                    HandoffOutcome::BackendError(BackendError::UpstreamProtocol)
                }
                FailureReason::Backend(FailureKind::Unavailable) => {
                    HandoffOutcome::BackendError(BackendError::Unavailable)
                }
                FailureReason::Backend(FailureKind::Reset) => {
                    HandoffOutcome::BackendError(BackendError::Reset)
                }
                FailureReason::Backend(FailureKind::Overloaded) => {
                    HandoffOutcome::BackendError(BackendError::Overloaded)
                }
                FailureReason::FirstByteTimeout => HandoffOutcome::Timeout(TimeoutKind::FirstByte),
                FailureReason::IdleTimeout => HandoffOutcome::Timeout(TimeoutKind::Idle),
                FailureReason::TotalTimeout => HandoffOutcome::Timeout(TimeoutKind::Total),
                FailureReason::Shutdown => HandoffOutcome::Shutdown,
            },
        }
    }

    /// How an admission refusal is counted.
    pub fn of_refusal(refusal: &Refusal) -> HandoffOutcome {
        HandoffOutcome::Rejected(Rejection::of(refusal))
    }
}

impl Rejection {
    /// How an admission refusal is counted (see also [`HandoffOutcome::of_refusal`]).
    pub fn of(refusal: &Refusal) -> Rejection {
        match refusal {
            Refusal::BadHandoff(_) => Rejection::BadHandoff,
            Refusal::AtCapacity => Rejection::Capacity,
            Refusal::Draining => Rejection::Draining,
            Refusal::UserLimit => Rejection::UserLimit,
            Refusal::TokenBudget { .. } => Rejection::TokenBudget,
        }
    }
}

/// One finished stream, as decided by its machine: what the info log line says
/// and what the histograms observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// What became of the stream: its `handoff_handoffs_total` series.
    pub outcome: HandoffOutcome,
    /// From the handoff to the outcome.
    pub duration: Duration,
    /// From the handoff until the client took its first bytes (the head).
    pub ttfb: Option<Duration>,
    /// From the handoff until the first content event was written.
    pub first_event: Option<Duration>,
    /// Content events written (keep-alives, `[DONE]` and error events not counted).
    pub events: u32,
    /// The backend's response status, when a backend answered.
    pub backend_status: Option<u16>,
    /// Bytes the client took; the driver sets it once the socket is closed.
    pub bytes: u64,
}

/// Backend statuses counted one by one (100..=599); anything else is `other`.
const STATUS_FIRST: u16 = 100;
const STATUSES: usize = 500;

/// One worker's counters: written only by that worker, read by scrapes.
/// Aligned so no other worker's counters share its cache lines.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerMetrics {
    handoffs: [AtomicU64; HandoffOutcome::COUNT],
    ttfb: Histogram,
    first_event: Histogram,
    duration: Histogram,
    bytes_sent: AtomicU64,
    events_sent: AtomicU64,
    /// Backend response heads by status, 100..=599, then `other` (inline, not
    /// boxed: a heap block could share a cache line with another thread's data).
    backend_statuses: [AtomicU64; STATUSES + 1],
    pool_open: AtomicU64,
    pool_connecting: AtomicU64,
    pool_queued: AtomicU64,
    pool_streams: AtomicU64,
    pool_opened_total: AtomicU64,
    pool_retries_total: AtomicU64,
    pool_ping_timeouts_total: AtomicU64,
    fd_events: [AtomicU64; FdEvent::COUNT],
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            handoffs: Default::default(),
            ttfb: Histogram::default(),
            first_event: Histogram::default(),
            duration: Histogram::default(),
            bytes_sent: AtomicU64::new(0),
            events_sent: AtomicU64::new(0),
            backend_statuses: std::array::from_fn(|_| AtomicU64::new(0)),
            pool_open: AtomicU64::new(0),
            pool_connecting: AtomicU64::new(0),
            pool_queued: AtomicU64::new(0),
            pool_streams: AtomicU64::new(0),
            pool_opened_total: AtomicU64::new(0),
            pool_retries_total: AtomicU64::new(0),
            pool_ping_timeouts_total: AtomicU64::new(0),
            fd_events: Default::default(),
        }
    }
}

impl WorkerMetrics {
    /// A handoff that did not become a stream.
    pub fn record_rejected(&self, rejection: Rejection) {
        self.handoffs[HandoffOutcome::Rejected(rejection).index()].fetch_add(1, Relaxed);
    }

    /// The fd reserve saw `event`.
    pub fn record_fd_event(&self, event: FdEvent) {
        self.fd_events[event.index()].fetch_add(1, Relaxed);
    }

    /// A stream's outcome was decided: its count and its latencies.
    pub fn record_stream(&self, summary: &StreamSummary) {
        self.handoffs[summary.outcome.index()].fetch_add(1, Relaxed);
        self.duration.observe(summary.duration);
        if let Some(ttfb) = summary.ttfb {
            self.ttfb.observe(ttfb);
        }
        if let Some(first_event) = summary.first_event {
            self.first_event.observe(first_event);
        }
        self.events_sent.fetch_add(u64::from(summary.events), Relaxed);
    }

    /// A stream's socket closed after `bytes` reached its client.
    pub fn record_bytes_sent(&self, bytes: u64) {
        self.bytes_sent.fetch_add(bytes, Relaxed);
    }

    /// A backend response head arrived with this status.
    pub fn record_backend_status(&self, status: u16) {
        let index = status.checked_sub(STATUS_FIRST).map_or(STATUSES, |i| usize::from(i).min(STATUSES));
        self.backend_statuses[index].fetch_add(1, Relaxed);
    }

    /// The worker's backend pool after its latest event.
    pub fn record_pool(&self, stats: &PoolStats) {
        let as_u64 = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        self.pool_open.store(as_u64(stats.open), Relaxed);
        self.pool_connecting.store(as_u64(stats.connecting), Relaxed);
        self.pool_queued.store(as_u64(stats.queued), Relaxed);
        self.pool_streams.store(as_u64(stats.active_streams), Relaxed);
        self.pool_opened_total.store(stats.opened_total, Relaxed);
        self.pool_retries_total.store(stats.retries_total, Relaxed);
        self.pool_ping_timeouts_total.store(stats.ping_timeouts_total, Relaxed);
    }
}

/// Every worker's counters, summed at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    workers: Mutex<Vec<Arc<WorkerMetrics>>>,
    /// Configuration reloads (SIGHUP) applied and refused: the process's, not a
    /// worker's (one thread reloads).
    reloads_applied: AtomicU64,
    reloads_failed: AtomicU64,
    /// Completion records by what became of them (the records threads', once
    /// per record, never per event).
    records: [AtomicU64; RecordEvent::COUNT],
    /// Gauge: bytes of records waiting in the webhook's spool.
    records_spool_bytes: AtomicU64,
}

/// What became of a completion record: the `result` label of
/// `handoff_records_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RecordEvent {
    /// Appended to the records file.
    Written,
    /// Taken by the webhook receiver (2xx).
    Delivered,
    /// Written to the webhook's spool.
    Spooled,
    /// Lost: the queue or the spool was full, or the file could not be written.
    Dropped,
    /// Refused by the receiver for good (a 4xx), kept aside in the spool.
    Rejected,
    /// A webhook attempt that failed and will be retried.
    Retried,
}

impl RecordEvent {
    /// Every event, in the order they are exposed.
    pub const ALL: [RecordEvent; 6] = [
        RecordEvent::Written,
        RecordEvent::Delivered,
        RecordEvent::Spooled,
        RecordEvent::Dropped,
        RecordEvent::Rejected,
        RecordEvent::Retried,
    ];
    /// How many there are.
    pub const COUNT: usize = RecordEvent::ALL.len();

    /// The `result` label.
    pub fn label(self) -> &'static str {
        match self {
            RecordEvent::Written => "written",
            RecordEvent::Delivered => "delivered",
            RecordEvent::Spooled => "spooled",
            RecordEvent::Dropped => "dropped",
            RecordEvent::Rejected => "rejected",
            RecordEvent::Retried => "retried",
        }
    }

    fn index(self) -> usize {
        RecordEvent::ALL.iter().position(|event| *event == self).unwrap_or(0)
    }
}

/// What one scrape reads: every worker's counters summed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    handoffs: [u64; HandoffOutcome::COUNT],
    /// [`StreamSummary::ttfb`] of every stream that had one.
    pub ttfb: HistogramSnapshot,
    /// [`StreamSummary::first_event`] of every stream that had one.
    pub first_event: HistogramSnapshot,
    /// [`StreamSummary::duration`] of every stream.
    pub duration: HistogramSnapshot,
    /// Bytes written to clients, counted as each stream's socket closes.
    pub bytes_sent: u64,
    /// Content events written to clients ([`StreamSummary::events`] summed).
    pub events_sent: u64,
    /// `(status, responses)` for each status seen, ascending; `None` for a
    /// status outside 100..=599.
    pub backend_statuses: Vec<(Option<u16>, u64)>,
    /// Gauge: backend connections open now, as of each pool's latest event.
    pub backend_connections_open: u64,
    /// Gauge: backend connections being opened now.
    pub backend_connections_connecting: u64,
    /// Gauge: backend requests waiting for a connection slot now.
    pub backend_streams_queued: u64,
    /// Gauge: backend requests on a connection now.
    pub backend_streams_active: u64,
    /// Backend connections opened since start.
    pub backend_connections_opened: u64,
    /// Backend requests sent again after a rejection the server cannot have
    /// processed, since start.
    pub backend_retries: u64,
    /// Backend connections dropped because a PING went unanswered, since start.
    pub backend_ping_timeouts: u64,
    /// Configuration reloads applied since start.
    pub config_reloads_applied: u64,
    /// Configuration reloads refused (the old configuration stayed), since start.
    pub config_reloads_failed: u64,
    /// Completion records per [`RecordEvent`], since start.
    pub records: [u64; RecordEvent::COUNT],
    /// Gauge: bytes of records in the webhook's spool.
    pub records_spool_bytes: u64,
    fd_events: [u64; FdEvent::COUNT],
}

impl Totals {
    /// Handoffs per outcome, every outcome listed (zeros too, so a rate of a
    /// series that has not happened yet is 0 rather than absent).
    pub fn handoffs(&self) -> impl Iterator<Item = (HandoffOutcome, u64)> + '_ {
        HandoffOutcome::ALL.iter().copied().zip(self.handoffs.iter().copied())
    }

    /// Completion records that met `event` since start.
    pub fn records_of(&self, event: RecordEvent) -> u64 {
        self.records.get(event.index()).copied().unwrap_or(0)
    }

    /// The fd reserve's events, every event listed.
    pub fn fd_events(&self) -> impl Iterator<Item = (FdEvent, u64)> + '_ {
        FdEvent::ALL.iter().copied().zip(self.fd_events.iter().copied())
    }
}

impl Metrics {
    /// An empty registry, shared by every worker and the metrics endpoint.
    pub fn new() -> Arc<Metrics> {
        Arc::new(Metrics::default())
    }

    /// Counts one configuration reload: applied, or refused (a bad file).
    pub fn record_reload(&self, applied: bool) {
        let counter = if applied { &self.reloads_applied } else { &self.reloads_failed };
        counter.fetch_add(1, Relaxed);
    }

    /// Counts `count` records that met `event`.
    pub fn record_records(&self, event: RecordEvent, count: u64) {
        if let Some(counter) = self.records.get(event.index()) {
            counter.fetch_add(count, Relaxed);
        }
    }

    /// Sets the spool gauge.
    pub fn set_records_spool_bytes(&self, bytes: u64) {
        self.records_spool_bytes.store(bytes, Relaxed);
    }

    /// A new worker's counters, included in every later [`Metrics::totals`].
    pub fn register(&self) -> Arc<WorkerMetrics> {
        let worker = Arc::new(WorkerMetrics::default());
        if let Ok(mut workers) = self.workers.lock() {
            workers.push(Arc::clone(&worker));
        }
        worker
    }

    /// Every registered worker's counters summed, for one scrape. Takes the
    /// registry's lock; a poisoned lock reads as all zeros.
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        let mut statuses = [0u64; STATUSES + 1];
        totals.config_reloads_applied = self.reloads_applied.load(Relaxed);
        totals.config_reloads_failed = self.reloads_failed.load(Relaxed);
        for (total, count) in totals.records.iter_mut().zip(self.records.iter()) {
            *total = count.load(Relaxed);
        }
        totals.records_spool_bytes = self.records_spool_bytes.load(Relaxed);
        let Ok(workers) = self.workers.lock() else { return totals };
        for worker in workers.iter() {
            for (total, count) in totals.handoffs.iter_mut().zip(worker.handoffs.iter()) {
                *total += count.load(Relaxed);
            }
            totals.ttfb.add(&worker.ttfb.snapshot());
            totals.first_event.add(&worker.first_event.snapshot());
            totals.duration.add(&worker.duration.snapshot());
            totals.bytes_sent += worker.bytes_sent.load(Relaxed);
            totals.events_sent += worker.events_sent.load(Relaxed);
            for (total, count) in statuses.iter_mut().zip(worker.backend_statuses.iter()) {
                *total += count.load(Relaxed);
            }
            totals.backend_connections_open += worker.pool_open.load(Relaxed);
            totals.backend_connections_connecting += worker.pool_connecting.load(Relaxed);
            totals.backend_streams_queued += worker.pool_queued.load(Relaxed);
            totals.backend_streams_active += worker.pool_streams.load(Relaxed);
            totals.backend_connections_opened += worker.pool_opened_total.load(Relaxed);
            totals.backend_retries += worker.pool_retries_total.load(Relaxed);
            totals.backend_ping_timeouts += worker.pool_ping_timeouts_total.load(Relaxed);
            for (total, count) in totals.fd_events.iter_mut().zip(worker.fd_events.iter()) {
                *total += count.load(Relaxed);
            }
        }
        totals.backend_statuses = statuses
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, &n)| {
                (u16::try_from(i).ok().filter(|&i| usize::from(i) < STATUSES).map(|i| i + STATUS_FIRST), n)
            })
            .collect();
        totals
    }
}

#[cfg(test)]
mod tests;
