//! Backend connection bookkeeping: which connection gets the next stream, when to
//! open another, and what GOAWAY or a dead connection means for its streams.
//!
//! Shape (quinn): events in through [`Pool::handle_event`] and
//! [`Pool::handle_timeout`], commands out through [`Pool::poll_command`] (drain it
//! until `None` after every input), the next deadline from [`Pool::poll_timeout`].
//! The pool never touches a connection; the runtime carries out its commands and
//! reports back what happened.
//!
//! SKELETON: the API below is the contract; bodies are being written.

use std::time::{Duration, Instant};

use crate::stream::BackendFailure;

/// A backend connection, numbered by the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A client stream wanting a backend stream, numbered by the runtime (unique).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u64);

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
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_streams_per_connection: 100,
            max_connecting: 8,
            max_connections: 1024,
            max_queued: 100_000,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// What happened, as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A stream wants a backend stream.
    StreamRequested(StreamId),
    /// The stream is over (finished, failed or cancelled, queued or running): its
    /// slot, or its place in the queue, is free.
    StreamFinished(StreamId),
    /// The backend refused the stream before sending any byte of it
    /// (REFUSED_STREAM, or beyond a GOAWAY's last stream id). It is retried once on
    /// another connection, then failed.
    StreamRefused(StreamId),
    /// The connection's handshake completed; `peer_max_streams` is the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS (`None`: no limit announced).
    ConnectionReady { conn: ConnId, peer_max_streams: Option<u32> },
    /// The server changed SETTINGS_MAX_CONCURRENT_STREAMS.
    PeerSettings { conn: ConnId, peer_max_streams: Option<u32> },
    /// The connection could not be opened.
    ConnectionFailed { conn: ConnId, reason: String },
    /// The server sent GOAWAY: running streams finish, no new ones go there.
    GoAway(ConnId),
    /// The connection is gone; streams still on it have failed.
    ConnectionClosed { conn: ConnId, reason: String },
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Open a connection and report `ConnectionReady` or `ConnectionFailed`.
    Open(ConnId),
    /// Start the stream on this open connection.
    Assign { stream: StreamId, conn: ConnId },
    /// The stream cannot get a backend stream; tell its machine.
    Fail { stream: StreamId, failure: BackendFailure },
    /// Close this connection (idle, or drained after GOAWAY).
    Close(ConnId),
}

/// A snapshot for logs and the benchmark summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub open: usize,
    pub connecting: usize,
    pub queued: usize,
    pub active_streams: usize,
    /// Connections opened since start.
    pub opened_total: u64,
}

#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Pool {
        Pool { config }
    }

    pub fn handle_event(&mut self, now: Instant, event: Event) {
        let _ = (now, event, &self.config);
        todo!("pool handle_event")
    }

    pub fn poll_command(&mut self) -> Option<Command> {
        todo!("pool poll_command")
    }

    /// The next instant `handle_timeout` has work (closing idle connections).
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!("pool poll_timeout")
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!("pool handle_timeout")
    }

    pub fn stats(&self) -> PoolStats {
        todo!("pool stats")
    }
}
