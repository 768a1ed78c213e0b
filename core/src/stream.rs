//! The per-client-stream machine: everything one stream decides, from the head to
//! `[DONE]` or an error event, for both the OpenAI backend and the mock script.
//!
//! Shape (str0m): inputs through [`Stream::handle_input`], outputs drained through
//! [`Stream::poll_output`] until it returns [`Output::Timeout`]. One task owns each
//! machine; nothing in it is shared.
//!
//! SKELETON: the API below is the contract; bodies are being written.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::mock;
use crate::sse::SseLimits;

/// Per-stream settings (from [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// A `: keep-alive` comment goes out after this long with nothing written.
    pub keep_alive_interval: Duration,
    /// From the start until the backend's first body byte.
    pub first_byte_timeout: Duration,
    /// Longest backend silence once its body has started.
    pub idle_timeout: Duration,
    /// Longest a stream may last in all.
    pub total_timeout: Duration,
    /// Spacing of the mock backend's events.
    pub mock_delay: Duration,
    pub sse_limits: SseLimits,
    /// Most bytes of a non-2xx backend body kept to find its error message.
    pub max_error_body: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            keep_alive_interval: Duration::from_secs(15),
            first_byte_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
            total_timeout: Duration::from_secs(30 * 60),
            mock_delay: Duration::from_millis(50),
            sse_limits: SseLimits::default(),
            max_error_body: 8 * 1024,
        }
    }
}

/// Where the stream's events come from.
#[derive(Debug)]
pub enum Source {
    /// A real backend: events arrive as `Input::Backend*`.
    Backend,
    /// The mock script: the machine paces its events on its own deadlines.
    Mock(mock::Script),
}

/// Why the backend failed, as the runtime saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendFailure {
    pub kind: FailureKind,
    /// Human-readable detail for the error event and the log.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// Could not connect, or the connection died before the response started.
    Unavailable,
    /// The stream was reset or the connection died mid-response.
    Reset,
    /// The backend broke HTTP or HTTP/2 rules.
    Protocol,
    /// No backend capacity: the wait queue is full.
    Overloaded,
}

/// One input. `now` comes with every call to [`Stream::handle_input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// The backend's response status (HTTP/1.1 status line or HTTP/2 `:status`).
    BackendHead { status: u16 },
    /// Response body bytes, split anywhere. The machine takes all of them.
    BackendData(&'a [u8]),
    /// The response body ended cleanly (END_STREAM, or the HTTP/1.1 body's end).
    BackendEnd,
    /// The backend failed.
    BackendFailed(BackendFailure),
    /// The client's socket reported EOF or an error.
    ClientGone,
    /// The daemon's drain deadline passed: end the stream now.
    Shutdown,
    /// Nothing happened but time: a deadline the machine gave may have passed.
    Timeout,
}

/// How a stream ended; reported exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `[DONE]` was written.
    Completed,
    /// An error event was written (or nothing could be).
    Failed(FailureReason),
    /// The client went away first.
    ClientGone,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// Non-2xx status from the backend.
    UpstreamStatus(u16),
    /// `{"error":...}` in the upstream stream.
    UpstreamError,
    /// The upstream ended with neither `[DONE]` nor a finish_reason.
    UpstreamTruncated,
    /// Undecodable upstream bytes (SSE limits, chunk JSON).
    UpstreamProtocol,
    Backend(FailureKind),
    FirstByteTimeout,
    IdleTimeout,
    TotalTimeout,
    Shutdown,
}

/// What the runtime must do next, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes for the client, in order after every earlier `Write`.
    Write(Bytes),
    /// Stop the backend request now (RST_STREAM / drop the HTTP/1.1 connection).
    CancelBackend,
    /// Flush every earlier `Write`, then close the client gracefully.
    CloseClient,
    /// The outcome, exactly once and last; the machine is finished after it.
    Done(Outcome),
    /// Drained: nothing to do until this instant or the next input.
    Timeout(Instant),
}

/// One client stream.
#[derive(Debug)]
pub struct Stream {
    _private: (),
}

impl Stream {
    /// A stream that has just been handed off. Its first output is `Write(head)`.
    pub fn new(now: Instant, config: &StreamConfig, head: Bytes, source: Source) -> Stream {
        let _ = (now, config, head, source);
        todo!("Stream::new")
    }

    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        let _ = (now, input);
        todo!("handle_input")
    }

    pub fn poll_output(&mut self) -> Output {
        todo!("poll_output")
    }

    /// True once `Done` has been returned.
    pub fn is_finished(&self) -> bool {
        todo!("is_finished")
    }
}
