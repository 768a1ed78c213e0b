//! Backend connection bookkeeping: which connection gets the next stream, when to
//! open another, and what GOAWAY or a dead connection means for its streams.
//!
//! Shape (quinn): events in through [`Pool::handle_event`] and
//! [`Pool::handle_timeout`], commands out through [`Pool::poll_command`] (drain it
//! until `None` after every input), the next deadline from [`Pool::poll_timeout`].
//! The pool never touches a connection; the runtime carries out its commands and
//! reports back what happened.
//!
//! # Rules
//! - **Choosing.** A stream goes to a ready, non-draining connection with a free
//!   slot; a connection's capacity is `max_streams_per_connection`, lowered by the
//!   peer's SETTINGS_MAX_CONCURRENT_STREAMS. The busiest such connection wins (ties:
//!   lowest [`ConnId`]), so connections fill before new ones open and the spare ones
//!   go idle and close. The choice is the first element of an ordered set: O(log n).
//! - **Waiting.** Without a free slot a stream waits in a FIFO of at most
//!   `max_queued` streams; beyond it the stream fails as
//!   [`FailureKind::Overloaded`]. Connections open only for streams the connections
//!   already opening cannot take (each is expected to carry
//!   `max_streams_per_connection`), within `max_connecting` and `max_connections`.
//! - **Retries.** A stream whose request got no response head is reported as
//!   [`Event::StreamRejected`] with what the transport knows ([`Rejection`]). Only
//!   a request the server cannot have processed is sent again: REFUSED_STREAM, a
//!   GOAWAY whose last stream id is below the stream's, or a connection that failed
//!   before the request's first byte was written ([`Rejection::is_retryable`]). A
//!   request that may have reached the server fails at once with the transport's
//!   failure, so a POST is never repeated. This is the one retry rule, for HTTP/1.1
//!   and HTTP/2 alike; the adapters only report. A retried stream waits ahead of
//!   the FIFO and goes to another connection, opening one if needed; it goes back
//!   to the rejecting connection only when nothing else is open, opening or allowed
//!   to open. GOAWAY and "not sent" also mean the connection takes nothing new
//!   (drained as after [`Event::GoAway`]); REFUSED_STREAM leaves it serving. A
//!   second rejection fails the stream: as `Unavailable` ("refused twice") when it
//!   too was retryable, else with its failure. Rejections are rare, so the few
//!   retried streams waiting are rescanned on each input that leaves a slot free.
//! - **Connection failures** (`ConnectionFailed`, or a connection closed or told to
//!   go away before it was ready) count up; a ready connection resets the count.
//!   After each failure no connection opens for a backoff that starts at
//!   `connect_backoff` and doubles up to `max_connect_backoff`; waiting streams stay
//!   queued and the next open happens when it expires (a deadline from
//!   [`Pool::poll_timeout`]). Once `max_connect_failures` failures have come in a
//!   row and no connection is open or opening to serve the waiting streams, they all
//!   fail as `Unavailable` with the last reason, and until the backoff expires new
//!   streams fail at once the same way instead of waiting (the backend is known to be
//!   down); the first stream after it probes with a new connection. So a waiting
//!   stream is served, fails, or is waiting for a slot that a running stream will
//!   free; and connection attempts are paced by the backoff, never a spin.
//! - **GOAWAY** drains a connection: its streams run to the end, new ones go
//!   elsewhere, and when the last one finishes the pool commands `Close`.
//! - **ConnectionClosed** fails every stream still on the connection as `Reset`
//!   (`ConnectionFailed` about a ready connection means the same).
//! - **Idle**: a ready connection carrying nothing for `idle_timeout` is closed.
//! - **PING** (`ping`, HTTP/2 only): a ready connection carrying nothing is pinged
//!   every `ping.interval` ([`Command::Ping`]); one whose answer ([`Event::Pong`])
//!   has not come within `ping.timeout` is dead, whatever it carries by then: the
//!   pool forgets it, fails its streams as `Reset` and commands [`Command::Abort`].
//!   So a connection that died silently (no FIN, no RST: a vanished host, a
//!   dropped NAT entry) is found while idle, before streams are put on it, and a
//!   stream put on it meanwhile fails at the ping deadline rather than at its own
//!   much longer timeouts.
//!
//! A connection the pool commands `Close` (or that failed or closed) is forgotten at
//! once; later events naming it, like events naming unknown streams, are ignored.

mod queue;

#[cfg(any(test, feature = "__testing"))]
mod invariants;
#[cfg(any(test, feature = "__testing"))]
#[doc(hidden)]
pub mod simulation;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::stream::{BackendFailure, FailureKind};
use queue::{Entry, Keep, WaitQueue};

/// A backend connection, numbered by the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A client stream wanting a backend stream, numbered by the runtime (unique).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

/// Pool settings. Zero counts are raised to 1 by [`Pool::new`]: connections open
/// only for waiting streams, so a pool that may not open one, or where no stream may
/// wait, would never serve anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Streams one connection may carry (OPENAI_H2_STREAMS_PER_HANDLE, clamped
    /// 10–1000; 1 for HTTP/1.1). The peer's SETTINGS_MAX_CONCURRENT_STREAMS
    /// lowers it further per connection.
    pub max_streams_per_connection: u32,
    /// Connections whose handshake may be in flight at once.
    pub max_connecting: usize,
    /// Connections open or opening at once.
    pub max_connections: usize,
    /// Streams that may wait for a connection; beyond it they fail as overloaded.
    pub max_queued: usize,
    /// An open connection carrying no stream for this long is closed.
    pub idle_timeout: Duration,
    /// No connection opens for this long after a failed one; doubled for each
    /// further failure in a row.
    pub connect_backoff: Duration,
    /// The longest backoff.
    pub max_connect_backoff: Duration,
    /// Failures in a row after which waiting streams fail instead of waiting for
    /// another attempt.
    pub max_connect_failures: u32,
    /// How long opening one connection (TCP, TLS, HTTP/2 preface) may take.
    pub connect_timeout: Duration,
    /// HTTP/2 flow-control window per stream: the most bytes one stream can have
    /// in flight, and so the most a stalled client pins in the connection.
    pub h2_stream_window: u32,
    /// HTTP/2 connection window: sized so every stream can have its window in
    /// flight at once, so no stream waits on a neighbour's unread bytes.
    pub h2_connection_window: u32,
    /// An HTTP/1.1 response decided before its body ended is read to its end (so
    /// the connection can be kept) for at most this long...
    pub h1_drain_timeout: Duration,
    /// ...and at most this many bytes; otherwise the connection is closed.
    pub h1_drain_max_bytes: usize,
    /// TCP keepalive on backend sockets (`None`: off), so a peer that vanished
    /// without a FIN or RST (a rebooted host, a dropped NAT entry) is noticed by
    /// the kernel even while the connection is idle.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// HTTP/2 PING on idle connections (`None`: off, as for HTTP/1.1, which has
    /// no ping).
    pub ping: Option<PingConfig>,
}

/// HTTP/2 PING keepalive: how often an idle connection is pinged and how long
/// its answer may take before the connection counts as dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingConfig {
    /// From the moment a connection carries nothing (or its last answer came)
    /// to the next PING.
    pub interval: Duration,
    /// How long the answer may take.
    pub timeout: Duration,
}

/// TCP keepalive probing: the kernel declares the connection dead after `idle`
/// of silence plus `probes` unanswered probes `interval` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Silence before the first probe (TCP_KEEPIDLE).
    pub idle: Duration,
    /// Between probes (TCP_KEEPINTVL).
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped (TCP_KEEPCNT).
    pub probes: u32,
}

impl TcpKeepalive {
    /// Probes after `idle` of silence, three of them a third of `idle` apart (at
    /// least a second): a dead peer is noticed within twice `idle`.
    pub fn after(idle: Duration) -> TcpKeepalive {
        let interval = (idle / 3).max(Duration::from_secs(1));
        TcpKeepalive { idle, interval, probes: 3 }
    }
}

impl PoolConfig {
    /// The connection window that lets `streams` streams each fill `window`,
    /// within HTTP/2's 2^31-1 limit.
    pub fn connection_window_for(streams: u32, window: u32) -> u32 {
        let max = (1u64 << 31) - 1;
        u32::try_from((u64::from(streams) * u64::from(window)).min(max)).unwrap_or(u32::MAX >> 1)
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_streams_per_connection: 100,
            max_connecting: 8,
            max_connections: 1024,
            max_queued: 100_000,
            idle_timeout: Duration::from_secs(90),
            connect_backoff: Duration::from_millis(100),
            max_connect_backoff: Duration::from_secs(5),
            max_connect_failures: 3,
            connect_timeout: Duration::from_secs(10),
            h2_stream_window: 64 * 1024,
            h2_connection_window: PoolConfig::connection_window_for(100, 64 * 1024),
            h1_drain_timeout: Duration::from_secs(5),
            h1_drain_max_bytes: 1 << 20,
            tcp_keepalive: Some(TcpKeepalive::after(Duration::from_secs(30))),
            ping: Some(PingConfig { interval: Duration::from_secs(30), timeout: Duration::from_secs(10) }),
        }
    }
}

/// What happened, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A stream wants a backend stream.
    StreamRequested(StreamId),
    /// The stream is over (finished, failed or cancelled, queued or running): its
    /// slot, or its place in the queue, is free.
    StreamFinished(StreamId),
    /// The stream's request, running on a connection, failed before any response head.
    /// The pool frees its slot and either queues it again (retryable, not retried before;
    /// preferably on another connection) or fails it with `failure`
    /// (`Command::Fail`). A stream the pool does not know as running gets `Command::Fail`
    /// with `failure`, so the waiting side always gets an answer.
    ///
    /// `GoAway` and `NotSent` also stop new streams going to the connection, as
    /// [`Event::GoAway`] does. When a connection dies, report its streams'
    /// rejections before its `ConnectionClosed`, which fails the streams still on it
    /// as `Reset`.
    StreamRejected {
        /// The stream whose request got no head.
        stream: StreamId,
        /// What the transport knows about whether the server processed it.
        rejection: Rejection,
        /// The failure the stream gets if it is not sent again.
        failure: BackendFailure,
    },
    /// The connection's handshake completed; `peer_max_streams` is the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS (`None`: no limit announced).
    ConnectionReady {
        /// The connection the pool asked for with [`Command::Open`].
        conn: ConnId,
        /// The server's stream limit; `Some(1)` for HTTP/1.1.
        peer_max_streams: Option<u32>,
    },
    /// The server changed SETTINGS_MAX_CONCURRENT_STREAMS.
    PeerSettings {
        /// The connection whose server changed its limit.
        conn: ConnId,
        /// The new limit (`None`: no limit).
        peer_max_streams: Option<u32>,
    },
    /// The connection could not be opened.
    ConnectionFailed {
        /// The connection being opened.
        conn: ConnId,
        /// Why, for logs and for the failure of streams that gave up waiting.
        reason: String,
    },
    /// The server sent GOAWAY: running streams finish, no new ones go there.
    GoAway(ConnId),
    /// The connection is gone; streams still on it have failed.
    ConnectionClosed {
        /// The connection that ended.
        conn: ConnId,
        /// Why, carried into the failures of its streams.
        reason: String,
    },
    /// The answer to this connection's [`Command::Ping`] arrived.
    Pong(ConnId),
}

/// What the transport knows about a request that got no response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// RST_STREAM(REFUSED_STREAM): the server did not process the request.
    RefusedStream,
    /// GOAWAY whose last stream id is below this stream's: not processed.
    GoAway,
    /// The connection failed before any byte of the request was written.
    NotSent,
    /// The request may have reached the server (written, then the stream or connection failed).
    MaybeProcessed,
}

impl Rejection {
    /// True when the server cannot have processed the request, so sending it again is safe.
    pub fn is_retryable(self) -> bool {
        match self {
            Rejection::RefusedStream | Rejection::GoAway | Rejection::NotSent => true,
            Rejection::MaybeProcessed => false,
        }
    }

    /// True when the connection can take no new stream: the server sent GOAWAY, or
    /// the connection failed.
    fn ends_connection(self) -> bool {
        match self {
            Rejection::GoAway | Rejection::NotSent => true,
            Rejection::RefusedStream | Rejection::MaybeProcessed => false,
        }
    }
}

/// What the runtime must do.
///
/// Exhaustive on purpose: a driver that matches it fails to compile when a new
/// command appears, instead of silently ignoring it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open a connection and report `ConnectionReady` or `ConnectionFailed`.
    Open(ConnId),
    /// Start the stream on this open connection.
    Assign {
        /// The stream to start.
        stream: StreamId,
        /// The ready connection to start it on.
        conn: ConnId,
    },
    /// The stream cannot get a backend stream; tell its machine.
    Fail {
        /// The stream that gets no backend stream.
        stream: StreamId,
        /// What its machine is told, and so what the client sees.
        failure: BackendFailure,
    },
    /// Close this connection (idle, or drained after GOAWAY).
    Close(ConnId),
    /// Send an HTTP/2 PING on this connection and report [`Event::Pong`] when its
    /// answer comes. At most one is outstanding per connection.
    Ping(ConnId),
    /// Drop this connection now, without waiting for its streams: it did not
    /// answer a PING in time. Its streams have already been failed.
    Abort(ConnId),
}

/// A snapshot for logs and the benchmark summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open (ready or draining).
    pub open: usize,
    /// Connections whose handshake is in flight.
    pub connecting: usize,
    /// Streams waiting for a slot, retries included.
    pub queued: usize,
    /// Streams running on a connection.
    pub active_streams: usize,
    /// Connections opened since start.
    pub opened_total: u64,
    /// Rejected requests queued to be sent again, since start.
    pub retries_total: u64,
    /// Connections found dead because a PING went unanswered, since start.
    pub ping_timeouts_total: u64,
}

/// The pool machine: one per backend and worker, fed by the runtime that owns
/// the connections (see the module docs for the rules it keeps).
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    conns: HashMap<ConnId, Conn>,
    streams: HashMap<StreamId, StreamSlot>,
    /// Ready, non-draining connections with a free slot, busiest first, then by id.
    available: BTreeSet<(Reverse<u32>, ConnId)>,
    /// Ready connections carrying nothing, by the instant they have idled too long.
    idle: BTreeSet<(Instant, ConnId)>,
    /// Each connection's PING deadline: when to send one, or when its answer is due.
    pings: BTreeSet<(Instant, ConnId)>,
    /// New streams waiting for a slot.
    queue: WaitQueue<()>,
    /// Rejected streams waiting for their one retry, served before `queue`; each
    /// remembers the connection that rejected it.
    retries: WaitQueue<ConnId>,
    commands: VecDeque<Command>,
    failures: ConnectFailures,
    next_conn: u64,
    next_ticket: u64,
    /// Connections in [`ConnState::Connecting`].
    connecting: usize,
    /// Connections in [`ConnState::Ready`] (draining ones excluded).
    serving: usize,
    /// Streams assigned to a connection.
    active: usize,
    opened_total: u64,
    retries_total: u64,
    ping_timeouts_total: u64,
}

#[derive(Debug)]
struct Conn {
    state: ConnState,
    peer_max_streams: Option<u32>,
    /// Streams running here; each stream's slot records its index.
    streams: Vec<StreamId>,
    /// The running count under which the connection sits in `available`.
    available_as: Option<u32>,
    /// Its key in `idle`.
    idle_deadline: Option<Instant>,
    /// Its PING state; the instant is its key in `pings`.
    ping: PingTimer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PingTimer {
    Off,
    /// Idle: a PING goes out at this instant.
    SendAt(Instant),
    /// A PING is out; the connection is dead if no answer came by this instant.
    AnswerBy(Instant),
}

impl PingTimer {
    fn deadline(self) -> Option<Instant> {
        match self {
            PingTimer::Off => None,
            PingTimer::SendAt(at) | PingTimer::AnswerBy(at) => Some(at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Connecting,
    Ready,
    /// GOAWAY received: running streams finish, nothing new starts.
    Draining,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamSlot {
    /// In `retries` when `retried` (rejected once, waiting for its retry), else in
    /// `queue`, under `ticket`.
    Queued {
        ticket: u64,
        retried: bool,
    },
    Running {
        conn: ConnId,
        index: u32,
        retried: bool,
    },
}

#[derive(Debug, Default)]
struct ConnectFailures {
    /// Failed attempts since the last connection became ready.
    in_a_row: u32,
    /// No connection opens before this.
    retry_at: Option<Instant>,
    last_reason: String,
}

impl Pool {
    /// A pool with no connections, which opens them as streams ask.
    pub fn new(config: PoolConfig) -> Pool {
        let config = PoolConfig {
            max_streams_per_connection: config.max_streams_per_connection.max(1),
            max_connecting: config.max_connecting.max(1),
            max_connections: config.max_connections.max(1),
            max_queued: config.max_queued.max(1),
            max_connect_failures: config.max_connect_failures.max(1),
            ..config
        };
        Pool {
            config,
            conns: HashMap::new(),
            streams: HashMap::new(),
            available: BTreeSet::new(),
            idle: BTreeSet::new(),
            pings: BTreeSet::new(),
            queue: WaitQueue::new(),
            retries: WaitQueue::new(),
            commands: VecDeque::new(),
            failures: ConnectFailures::default(),
            next_conn: 0,
            next_ticket: 0,
            connecting: 0,
            serving: 0,
            active: 0,
            opened_total: 0,
            retries_total: 0,
            ping_timeouts_total: 0,
        }
    }

    /// Takes one report from the runtime; then drain [`Pool::poll_command`] and
    /// re-arm the timer from [`Pool::poll_timeout`].
    pub fn handle_event(&mut self, now: Instant, event: Event) {
        self.expire_backoff(now);
        match event {
            Event::StreamRequested(stream) => self.handle_stream_requested(now, stream),
            Event::StreamFinished(stream) => self.handle_stream_finished(now, stream),
            Event::StreamRejected { stream, rejection, failure } => {
                self.handle_stream_rejected(now, stream, rejection, failure)
            }
            Event::ConnectionReady { conn, peer_max_streams } => {
                self.handle_connection_ready(now, conn, peer_max_streams)
            }
            Event::PeerSettings { conn, peer_max_streams } => {
                if let Some(entry) = self.conns.get_mut(&conn) {
                    entry.peer_max_streams = peer_max_streams;
                    self.reindex(conn, now);
                }
            }
            Event::ConnectionFailed { conn, reason } => self.handle_connection_lost(now, conn, reason),
            Event::GoAway(conn) => self.handle_go_away(now, conn),
            Event::ConnectionClosed { conn, reason } => self.handle_connection_lost(now, conn, reason),
            Event::Pong(conn) => self.handle_pong(now, conn),
        }
        self.serve_waiting(now);
    }

    /// The next thing the runtime must do, in order; `None` once all are taken.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next instant `handle_timeout` has work: closing an idle connection,
    /// sending a PING or giving up on its answer, or opening a connection for
    /// waiting streams once a connect backoff ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.idle.first().map(|&(deadline, _)| deadline);
        let ping = self.pings.first().map(|&(deadline, _)| deadline);
        let retry = self.failures.retry_at.filter(|_| self.waiting() > 0);
        [idle, ping, retry].into_iter().flatten().min()
    }

    /// Acts on every deadline up to `now` (idle closes, PINGs, the end of a
    /// connect backoff); harmless when called early.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_backoff(now);
        while let Some(&(deadline, conn)) = self.idle.first() {
            if deadline > now {
                break;
            }
            self.remove_conn(conn);
            self.commands.push_back(Command::Close(conn));
        }
        self.expire_pings(now);
        self.serve_waiting(now);
    }

    /// Sends the PINGs that are due and declares dead the connections whose
    /// answer is overdue.
    fn expire_pings(&mut self, now: Instant) {
        let Some(ping) = self.config.ping else {
            return;
        };
        while let Some(&(deadline, conn)) = self.pings.first() {
            if deadline > now {
                break;
            }
            let timer = self.conns.get(&conn).map_or(PingTimer::Off, |entry| entry.ping);
            match timer {
                PingTimer::SendAt(_) => {
                    self.set_ping(conn, PingTimer::AnswerBy(later(now, ping.timeout)));
                    self.commands.push_back(Command::Ping(conn));
                }
                PingTimer::AnswerBy(_) => {
                    self.ping_timeouts_total += 1;
                    let reason =
                        format!("the backend did not answer an HTTP/2 PING within {:?}", ping.timeout);
                    if let Some(entry) = self.remove_conn(conn) {
                        self.fail_streams_of(entry, &reason);
                    }
                    self.commands.push_back(Command::Abort(conn));
                }
                // Not in the set under a deadline; dropped should one linger.
                PingTimer::Off => {
                    self.pings.remove(&(deadline, conn));
                }
            }
        }
    }

    fn handle_pong(&mut self, now: Instant, conn: ConnId) {
        if self.conns.get(&conn).is_some_and(|entry| matches!(entry.ping, PingTimer::AnswerBy(_))) {
            self.set_ping(conn, PingTimer::Off);
            self.reindex(conn, now);
        }
    }

    /// Moves the connection's PING timer, keeping `pings` in step.
    fn set_ping(&mut self, conn_id: ConnId, timer: PingTimer) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if let Some(deadline) = conn.ping.deadline() {
            self.pings.remove(&(deadline, conn_id));
        }
        if let Some(deadline) = timer.deadline() {
            self.pings.insert((deadline, conn_id));
        }
        conn.ping = timer;
    }

    /// The gauges and totals now.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            open: self.conns.len() - self.connecting,
            connecting: self.connecting,
            queued: self.waiting(),
            active_streams: self.active,
            opened_total: self.opened_total,
            retries_total: self.retries_total,
            ping_timeouts_total: self.ping_timeouts_total,
        }
    }

    /// True when no stream is running or waiting (connections may still be open).
    pub fn is_idle(&self) -> bool {
        self.active == 0 && self.waiting() == 0
    }

    fn waiting(&self) -> usize {
        self.queue.len() + self.retries.len()
    }

    fn handle_stream_requested(&mut self, now: Instant, stream: StreamId) {
        if self.streams.contains_key(&stream) {
            return;
        }
        if let Some(conn) = self.best_available(None) {
            self.assign(now, stream, conn, false);
        } else if self.is_backend_down() {
            let message = format!("backend unreachable: {}", self.failures.last_reason);
            self.fail(stream, FailureKind::Unavailable, message);
        } else if self.queue.len() >= self.config.max_queued {
            let message = format!("all backend connections busy and {} streams waiting", self.queue.len());
            self.fail(stream, FailureKind::Overloaded, message);
        } else {
            let ticket = self.take_ticket();
            self.queue.push_back(Entry { stream, ticket, extra: () });
            self.streams.insert(stream, StreamSlot::Queued { ticket, retried: false });
        }
    }

    fn handle_stream_finished(&mut self, now: Instant, stream: StreamId) {
        match self.streams.remove(&stream) {
            Some(StreamSlot::Running { conn, index, .. }) => self.release(now, conn, index),
            queued => self.forget_queued(queued),
        }
    }

    /// Leaves the queue entry of a stream just removed from `streams` stale: O(1).
    fn forget_queued(&mut self, slot: Option<StreamSlot>) {
        let streams = &self.streams;
        match slot {
            Some(StreamSlot::Queued { retried: false, .. }) => {
                self.queue.forget_one(|entry| is_queued(streams, entry))
            }
            Some(StreamSlot::Queued { retried: true, .. }) => {
                self.retries.forget_one(|entry| is_queued(streams, entry))
            }
            Some(StreamSlot::Running { .. }) | None => {}
        }
    }

    fn handle_stream_rejected(
        &mut self,
        now: Instant,
        stream: StreamId,
        rejection: Rejection,
        failure: BackendFailure,
    ) {
        let (conn, index, retried) = match self.streams.remove(&stream) {
            Some(StreamSlot::Running { conn, index, retried }) => (conn, index, retried),
            queued @ Some(StreamSlot::Queued { .. }) => {
                // Not running, so nothing to retry; forgotten like a cancelled stream
                // so the pool never assigns a stream the runtime has been told failed.
                self.forget_queued(queued);
                self.commands.push_back(Command::Fail { stream, failure });
                return;
            }
            None => {
                self.commands.push_back(Command::Fail { stream, failure });
                return;
            }
        };
        self.release(now, conn, index);
        if rejection.ends_connection() {
            self.stop_new_streams(now, conn);
        }
        if !rejection.is_retryable() {
            self.commands.push_back(Command::Fail { stream, failure });
        } else if retried {
            self.fail(stream, FailureKind::Unavailable, "the backend refused the stream twice".to_owned());
        } else {
            let ticket = self.take_ticket();
            self.retries_total += 1;
            self.retries.push_back(Entry { stream, ticket, extra: conn });
            self.streams.insert(stream, StreamSlot::Queued { ticket, retried: true });
        }
    }

    fn handle_connection_ready(&mut self, now: Instant, conn: ConnId, peer_max_streams: Option<u32>) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        entry.peer_max_streams = peer_max_streams;
        if entry.state == ConnState::Connecting {
            entry.state = ConnState::Ready;
            self.connecting -= 1;
            self.serving += 1;
            self.failures.in_a_row = 0;
            self.failures.retry_at = None;
        }
        self.reindex(conn, now);
    }

    fn handle_go_away(&mut self, now: Instant, conn: ConnId) {
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        match entry.state {
            ConnState::Connecting => {
                // Counted as a failure: a server that turns every new connection
                // away must not have the pool reopen at once, forever.
                self.remove_conn(conn);
                self.commands.push_back(Command::Close(conn));
                self.record_connect_failure(now, "the backend sent GOAWAY during the handshake".to_owned());
            }
            ConnState::Ready => self.stop_new_streams(now, conn),
            ConnState::Draining => {}
        }
    }

    /// A ready connection drains: running streams finish, nothing new starts, and it
    /// closes with its last stream (at once if it carries none).
    fn stop_new_streams(&mut self, now: Instant, conn: ConnId) {
        let Some(entry) = self.conns.get_mut(&conn).filter(|entry| entry.state == ConnState::Ready) else {
            return;
        };
        entry.state = ConnState::Draining;
        self.serving -= 1;
        if entry.streams.is_empty() {
            self.remove_conn(conn);
            self.commands.push_back(Command::Close(conn));
        } else {
            self.reindex(conn, now);
        }
    }

    /// `ConnectionFailed` or `ConnectionClosed`: before the handshake completed it is
    /// a failed attempt, after it the streams still running there fail.
    fn handle_connection_lost(&mut self, now: Instant, conn: ConnId, reason: String) {
        let Some(entry) = self.remove_conn(conn) else {
            return;
        };
        if entry.state == ConnState::Connecting {
            self.record_connect_failure(now, reason);
            return;
        }
        self.fail_streams_of(entry, &reason);
    }

    /// Fails, as `Reset`, every stream still on a connection just forgotten.
    fn fail_streams_of(&mut self, entry: Conn, reason: &str) {
        let mut orphans = entry.streams;
        // Sorted so the runtime sees the failures in a reproducible order.
        orphans.sort_unstable();
        for stream in orphans {
            self.streams.remove(&stream);
            self.active -= 1;
            self.fail(stream, FailureKind::Reset, reason.to_owned());
        }
    }

    fn record_connect_failure(&mut self, now: Instant, reason: String) {
        let failures = &mut self.failures;
        failures.in_a_row = failures.in_a_row.saturating_add(1);
        let doublings = failures.in_a_row.saturating_sub(1).min(31);
        let backoff = self.config.connect_backoff.saturating_mul(1 << doublings);
        failures.retry_at = Some(later(now, backoff.min(self.config.max_connect_backoff)));
        failures.last_reason = reason;
    }

    /// Enough attempts failed in a row, the backoff runs, and nothing open or
    /// opening could serve a waiting stream: waiting would only delay the failure.
    fn is_backend_down(&self) -> bool {
        self.failures.in_a_row >= self.config.max_connect_failures
            && self.failures.retry_at.is_some()
            && self.connecting == 0
            && self.serving == 0
    }

    fn fail_all_waiting(&mut self) {
        let message = format!(
            "backend unreachable after {} attempts: {}",
            self.failures.in_a_row, self.failures.last_reason
        );
        while let Some(entry) = self.retries.pop_front(|entry| is_queued(&self.streams, entry)) {
            self.streams.remove(&entry.stream);
            self.fail(entry.stream, FailureKind::Unavailable, message.clone());
        }
        while let Some(entry) = self.queue.pop_front(|entry| is_queued(&self.streams, entry)) {
            self.streams.remove(&entry.stream);
            self.fail(entry.stream, FailureKind::Unavailable, message.clone());
        }
    }

    fn expire_backoff(&mut self, now: Instant) {
        if self.failures.retry_at.is_some_and(|retry_at| now >= retry_at) {
            self.failures.retry_at = None;
        }
    }

    /// After every input: waiting streams onto free slots (retried ones first),
    /// then open connections for the ones left over.
    fn serve_waiting(&mut self, now: Instant) {
        if self.waiting() > 0 && self.is_backend_down() {
            // Reached by a failure, or by the last connection that could serve them
            // going away after enough failures.
            self.fail_all_waiting();
            return;
        }
        if !self.retries.is_empty() && !self.available.is_empty() {
            self.serve_retries(now);
        }
        while let Some(conn) = self.best_available(None) {
            let Some(entry) = self.queue.pop_front(|entry| is_queued(&self.streams, entry)) else {
                break;
            };
            self.assign(now, entry.stream, conn, false);
        }
        self.open_for_waiting();
    }

    fn serve_retries(&mut self, now: Instant) {
        // Another connection will do if one is open, opening, or may open now.
        let more_coming = self.connecting > 0 || self.may_open();
        let mut retries = std::mem::replace(&mut self.retries, WaitQueue::new());
        retries.retain_live(|entry| {
            if !is_queued(&self.streams, entry) {
                return Keep::Gone;
            }
            let rejected_by = entry.extra;
            let target = self.best_available(Some(rejected_by)).or_else(|| {
                let back_to_it =
                    !more_coming && self.conns.get(&rejected_by).is_some_and(|c| c.available_as.is_some());
                back_to_it.then_some(rejected_by)
            });
            match target {
                Some(conn) => {
                    self.assign(now, entry.stream, conn, true);
                    Keep::Gone
                }
                None => Keep::Waiting,
            }
        });
        self.retries = retries;
    }

    fn open_for_waiting(&mut self) {
        let per_connection = self.config.max_streams_per_connection as usize;
        let mut expected = self.connecting.saturating_mul(per_connection);
        while self.waiting() > expected && self.may_open() {
            let conn = ConnId(self.next_conn);
            self.next_conn += 1;
            self.conns.insert(
                conn,
                Conn {
                    state: ConnState::Connecting,
                    peer_max_streams: None,
                    streams: Vec::new(),
                    available_as: None,
                    idle_deadline: None,
                    ping: PingTimer::Off,
                },
            );
            self.connecting += 1;
            self.opened_total += 1;
            self.commands.push_back(Command::Open(conn));
            expected = expected.saturating_add(per_connection);
        }
    }

    fn may_open(&self) -> bool {
        self.connecting < self.config.max_connecting
            && self.conns.len() < self.config.max_connections
            && self.failures.retry_at.is_none()
    }

    /// The busiest connection with a free slot, skipping `except`.
    fn best_available(&self, except: Option<ConnId>) -> Option<ConnId> {
        // At most two elements are looked at: `except` is one connection.
        self.available.iter().map(|&(_, conn)| conn).find(|&conn| Some(conn) != except)
    }

    fn assign(&mut self, now: Instant, stream: StreamId, conn_id: ConnId, retried: bool) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let index = conn.streams.len() as u32;
        conn.streams.push(stream);
        self.streams.insert(stream, StreamSlot::Running { conn: conn_id, index, retried });
        self.active += 1;
        self.commands.push_back(Command::Assign { stream, conn: conn_id });
        self.reindex(conn_id, now);
    }

    /// Frees the slot at `index` of `conn_id` (the stream's entry is already gone).
    fn release(&mut self, now: Instant, conn_id: ConnId, index: u32) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        let index = index as usize;
        if index >= conn.streams.len() {
            return;
        }
        conn.streams.swap_remove(index);
        if let Some(&moved) = conn.streams.get(index) {
            if let Some(StreamSlot::Running { index: moved_index, .. }) = self.streams.get_mut(&moved) {
                *moved_index = index as u32;
            }
        }
        self.active -= 1;
        if conn.state == ConnState::Draining && conn.streams.is_empty() {
            self.remove_conn(conn_id);
            self.commands.push_back(Command::Close(conn_id));
        } else {
            self.reindex(conn_id, now);
        }
    }

    /// Puts the connection where its state, load and capacity say it belongs: in
    /// `available` if it can take a stream, in `idle` if it carries none.
    fn reindex(&mut self, conn_id: ConnId, now: Instant) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return;
        };
        if let Some(running) = conn.available_as.take() {
            self.available.remove(&(Reverse(running), conn_id));
        }
        let running = conn.streams.len() as u32;
        if conn.state == ConnState::Ready && running < capacity(&self.config, conn) {
            self.available.insert((Reverse(running), conn_id));
            conn.available_as = Some(running);
        }
        let is_idle = conn.state == ConnState::Ready && running == 0;
        match (conn.idle_deadline, is_idle) {
            (None, true) => {
                let deadline = later(now, self.config.idle_timeout);
                self.idle.insert((deadline, conn_id));
                conn.idle_deadline = Some(deadline);
            }
            (Some(deadline), false) => {
                self.idle.remove(&(deadline, conn_id));
                conn.idle_deadline = None;
            }
            _ => {}
        }
        // An idle connection is pinged; a busy one shows its health through its
        // streams. A PING already out keeps its deadline either way.
        let ping = match (conn.ping, self.config.ping) {
            (PingTimer::Off, Some(ping)) if is_idle => PingTimer::SendAt(later(now, ping.interval)),
            (PingTimer::SendAt(_), _) if !is_idle => PingTimer::Off,
            (current, _) => current,
        };
        if ping != conn.ping {
            self.set_ping(conn_id, ping);
        }
    }

    /// Forgets a connection and its index entries; its streams are the caller's.
    fn remove_conn(&mut self, conn_id: ConnId) -> Option<Conn> {
        let conn = self.conns.remove(&conn_id)?;
        if let Some(running) = conn.available_as {
            self.available.remove(&(Reverse(running), conn_id));
        }
        if let Some(deadline) = conn.idle_deadline {
            self.idle.remove(&(deadline, conn_id));
        }
        if let Some(deadline) = conn.ping.deadline() {
            self.pings.remove(&(deadline, conn_id));
        }
        match conn.state {
            ConnState::Connecting => self.connecting -= 1,
            ConnState::Ready => self.serving -= 1,
            ConnState::Draining => {}
        }
        Some(conn)
    }

    fn fail(&mut self, stream: StreamId, kind: FailureKind, message: String) {
        self.commands.push_back(Command::Fail { stream, failure: BackendFailure { kind, message } });
    }

    fn take_ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }
}

/// Streams the connection may carry now.
fn capacity(config: &PoolConfig, conn: &Conn) -> u32 {
    match conn.peer_max_streams {
        Some(peer) => peer.min(config.max_streams_per_connection),
        None => config.max_streams_per_connection,
    }
}

/// `now + by`, kept representable for any configured duration.
fn later(now: Instant, by: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(365 * 24 * 3600);
    now.checked_add(by).or_else(|| now.checked_add(FAR)).unwrap_or(now)
}

/// Whether a queue entry still stands for a waiting stream.
fn is_queued<T>(streams: &HashMap<StreamId, StreamSlot>, entry: &Entry<T>) -> bool {
    matches!(streams.get(&entry.stream), Some(&StreamSlot::Queued { ticket, .. }) if ticket == entry.ticket)
}
