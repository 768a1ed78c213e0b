//! The per-client-stream machine: everything one stream decides, from the head to
//! `[DONE]` or an error event, for both the OpenAI backend and the mock script.
//!
//! Shape (str0m): inputs through [`Stream::handle_input`], outputs drained through
//! [`Stream::poll_output`] until it returns [`Output::Timeout`]. One task owns each
//! machine; nothing in it is shared.
//!
//! # What a stream writes
//! The head first (given to [`Stream::new`]), then one SSE event per piece of
//! content, then either `data: [DONE]` (success) or one `event: error` (failure),
//! never both, and nothing after either. `: keep-alive` comments fill silences.
//! Every `Write` holds whole events, and the events one input produces are
//! coalesced into one `Write` (one syscall).
//!
//! # The upstream rules
//! - 2xx head: each upstream event's `data` is a chat chunk; non-empty
//!   `delta.content` becomes one client event, role-only and usage chunks none.
//! - `[DONE]` from the upstream, or a `finish_reason` followed by a clean end (or by
//!   a backend failure: the answer was already complete), completes the stream.
//! - A clean end with neither is a truncated answer: error `upstream_truncated`.
//! - An upstream `{"error":..}` object, undecodable SSE or chunk JSON, a backend
//!   failure, a non-2xx status (its body is read up to a bound for OpenAI's error
//!   object), a timeout or a shutdown end the stream with an error event.
//!
//! # Time
//! Deadlines are kept as whole milliseconds since the stream started (`u32`, so
//! they cost four bytes each and saturate after 49 days). Activity is rounded up
//! and expiry checked rounded down, so no deadline fires early. The earliest one
//! is cached after every input; [`Output::Timeout`] never walks anything. Every
//! input, not only [`Input::Timeout`], also runs the deadlines that are due, so a
//! runtime whose timer lost a race to a busy backend still enforces them.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

use crate::handoff::{Delivery, Format};
use crate::metrics::{HandoffOutcome, StreamSummary};
use crate::mock;
use crate::openai::{self, ChunkEvent};
use crate::sse::{self, RawEvents, SseDecoder, SseLimits};

pub mod close;
pub mod recording;

use recording::Recording;
#[cfg(any(test, feature = "__testing"))]
#[doc(hidden)]
pub mod testing;
#[cfg(test)]
mod tests;

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
    /// Bounds on the backend's SSE lines and events; past one the stream fails
    /// as [`FailureReason::UpstreamProtocol`].
    pub sse_limits: SseLimits,
    /// Most bytes of a non-2xx backend body kept to find its error message.
    pub max_error_body: usize,
    /// A client that takes no byte for this long while bytes wait for it ends its
    /// own stream (`ClientStalled`); also bounds the final flush.
    pub write_timeout: Duration,
    /// Progress that resets the write-stall deadline: the client must take this
    /// many bytes (or everything that waits). Smaller writes still count toward
    /// it; this keeps the kernel's trickle through a closed TCP window (a few
    /// KiB freed per zero-window probe) from passing for a reading client.
    pub min_write_progress: usize,
    /// Client bytes a stream may hold unwritten before it stops reading its
    /// backend (so a slow reader fills only its own buffers).
    pub client_buffer: usize,
    /// SO_SNDBUF for client sockets (0: the kernel's autotuning). Bytes the
    /// kernel accepted count as taken, so this bounds how much a client that
    /// reads nothing absorbs before its write stall starts.
    pub client_send_buffer: usize,
    /// After the response, how long a closing socket drains what the client
    /// still sends before the fd is closed.
    pub linger: Duration,
    /// Keep the assistant's text for the stream's record even when the
    /// handoff does not ask (`record_text`).
    pub record_text: bool,
    /// Most bytes of text a record keeps (the rest is marked truncated).
    pub record_text_max_bytes: usize,
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
            write_timeout: Duration::from_secs(30),
            min_write_progress: 16 * 1024,
            client_buffer: 64 * 1024,
            client_send_buffer: 64 * 1024,
            linger: Duration::from_secs(2),
            record_text: false,
            record_text_max_bytes: 64 * 1024,
        }
    }
}

/// Where the stream's events come from.
#[derive(Debug)]
#[non_exhaustive]
pub enum Source {
    /// A real backend: events arrive as `Input::Backend*`.
    Backend,
    /// The mock script: the machine paces its events on its own deadlines.
    Mock(mock::Script),
    /// A passthrough backend: events arrive as `Input::Backend*` and go to the
    /// client unchanged, whole events only; the stream ends with the upstream.
    Passthrough,
}

/// Why the backend failed, as the runtime saw it.
///
/// Only `kind` reaches the client (as our own text, [`FailureKind::client_message`]);
/// `message` may name hosts, addresses or OS errors and goes to the log only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendFailure {
    /// What kind of failure: picks the client's error event and the metric.
    pub kind: FailureKind,
    /// Detail for the log (never written to a client).
    pub message: String,
}

/// How the backend failed, coarsely: what the client and the metrics are told
/// (the detail stays in [`BackendFailure::message`]).
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

impl FailureKind {
    /// The `type` of the error event a client gets for this failure.
    pub fn error_type(self) -> &'static str {
        match self {
            FailureKind::Unavailable => "backend_unavailable",
            FailureKind::Reset => "upstream_reset",
            FailureKind::Protocol => "upstream_protocol",
            FailureKind::Overloaded => "overloaded",
        }
    }

    /// The message of the error event a client gets: ours, with no transport detail.
    pub fn client_message(self) -> &'static str {
        match self {
            FailureKind::Unavailable => "the model backend could not be reached",
            FailureKind::Reset => "the model backend stopped its answer",
            FailureKind::Protocol => "the model backend sent a response that could not be read",
            FailureKind::Overloaded => "too many requests are waiting for the model backend",
        }
    }
}

/// One input. `now` comes with every call to [`Stream::handle_input`].
///
/// Backend inputs are ignored by a mock stream, and every input is ignored once
/// the stream has decided its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input<'a> {
    /// The backend's response status (HTTP/1.1 status line or HTTP/2 `:status`).
    /// Exactly one, before any body byte; the runtime filters out 1xx heads.
    BackendHead {
        /// The HTTP status code (2xx: events follow; otherwise an error body).
        status: u16,
    },
    /// Response body bytes, split anywhere. The machine takes all of them.
    BackendData(&'a [u8]),
    /// The response body ended cleanly (END_STREAM, or the HTTP/1.1 body's end).
    BackendEnd,
    /// The backend failed.
    BackendFailed(BackendFailure),
    /// The client took this many bytes of what was written (a write returned).
    /// Progress (`min_write_progress` bytes) resets the write-stall deadline;
    /// taking everything clears it.
    ClientTook(usize),
    /// The client's socket reported EOF or an error.
    ClientGone,
    /// The daemon's drain deadline passed: end the stream now.
    Shutdown,
    /// Nothing happened but time: a deadline the machine gave may have passed.
    Timeout,
}

/// How a stream ended; reported exactly once.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// `[DONE]` was written.
    Completed,
    /// An error event was written (or nothing could be).
    Failed(FailureReason),
    /// The client went away first.
    ClientGone,
    /// The client took no bytes for the write timeout; its stream was ended.
    ClientStalled,
}

/// Why a stream ended with an error event ([`Outcome::Failed`]), for the
/// metrics and the log.
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
    /// The backend failed as the runtime reported ([`Input::BackendFailed`])
    /// before the answer was complete.
    Backend(FailureKind),
    /// No response head came within [`StreamConfig::first_byte_timeout`] of the
    /// stream's start.
    FirstByteTimeout,
    /// The backend sent nothing for [`StreamConfig::idle_timeout`] after its
    /// head (time spent waiting on a slow client is not counted).
    IdleTimeout,
    /// The stream reached [`StreamConfig::total_timeout`].
    TotalTimeout,
    /// The daemon's drain deadline passed ([`Input::Shutdown`]).
    Shutdown,
}

/// What the runtime must do next, in order.
///
/// A stream ends with, in this order: its last `Write` (the `[DONE]` or error
/// event, if any), `CancelBackend` (only if the backend is still sending),
/// `CloseClient`, `Done`. `CloseClient` comes on every path, including after
/// [`Input::ClientGone`], so the runtime closes the client fd in exactly one place.
///
/// Exhaustive on purpose: a driver that matches it fails to compile when a new
/// output appears, instead of silently ignoring it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes for the client, in order after every earlier `Write`. Always whole
    /// SSE events (or the head).
    Write(Bytes),
    /// Stop the backend request now (RST_STREAM / drop the HTTP/1.1 connection).
    /// At most once, never for a mock stream, and never once the backend has
    /// ended or failed on its own. Not sent after the upstream's `[DONE]`: the
    /// backend is finishing by itself (the runtime may still drop the request).
    CancelBackend,
    /// Flush every earlier `Write`, then close the client gracefully. After
    /// [`Input::ClientGone`] there is nothing to flush: just close the fd.
    CloseClient,
    /// The outcome, exactly once and last; the machine is finished after it.
    Done(Outcome),
    /// Drained: nothing to do until this instant or the next input. Once the
    /// stream is finished the instant is far away and means nothing.
    Timeout(Instant),
}

/// Whole milliseconds since the stream started: every deadline is one of these.
type Millis = u32;

/// A deadline that is not armed.
const NEVER: Millis = Millis::MAX;

/// One client stream.
///
/// Small on purpose (tens of thousands live at once): timers are `u32`
/// milliseconds, the pending output is one `Bytes` plus the fixed ending
/// sequence, and the only heap held between inputs is the SSE decoder's partial
/// line (or a non-2xx body being read, or the mock script's echo text).
///
/// # The client's pace
/// The machine counts the bytes it has written that the client has not yet taken
/// ([`Input::ClientTook`]). While any wait, the write-stall deadline runs (reset by
/// every bit of progress); when it passes, the stream ends as
/// [`Outcome::ClientStalled`] and its upstream is cancelled. Once `client_buffer`
/// bytes wait, [`Stream::wants_backend_data`] turns false: the runtime stops
/// reading the backend, so flow control holds the upstream back for this stream
/// alone, and the backend's idle deadline is not charged for that wait.
#[derive(Debug)]
pub struct Stream {
    start: Instant,
    /// Client bytes not yet handed out by `poll_output` (empty: none).
    write: Bytes,
    /// Bytes written (handed out or queued) that the client has not taken.
    unwritten: u32,
    /// Bytes taken since the write-stall deadline was last set.
    taken_toward_progress: u32,
    feed: Feed,
    settings: Settings,
    deadlines: Deadlines,
    end: End,
    progress: Progress,
    /// What the completion record needs (`None`: records are off).
    recording: Option<Box<Recording>>,
}

/// What the stream's summary reports (see [`Stream::summary`]).
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// When the client first took bytes (NEVER: not yet).
    first_taken: Millis,
    /// When the first content event was written (NEVER: none).
    first_event: Millis,
    /// Content events written.
    events: u32,
    /// The backend's response status (0: none).
    backend_status: u16,
}

/// The config values the stream still needs after `new`, compactly.
#[derive(Debug, Clone, Copy)]
struct Settings {
    keep_alive: Millis,
    idle: Millis,
    mock_delay: Millis,
    max_error_body: u32,
    write_timeout: Millis,
    client_buffer: u32,
    min_write_progress: u32,
}

/// Armed deadlines, in milliseconds since the start.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    total: Millis,
    /// The first-byte deadline until the response head, the idle one after it.
    /// Only read while a backend is feeding the stream.
    backend: Millis,
    keep_alive: Millis,
    /// While unwritten bytes wait: the client must take some by then.
    write_stall: Millis,
    /// The earliest armed deadline, cached after every input for `poll_output`.
    wake: Millis,
}

/// What feeds the stream's content, and how far it has got.
#[derive(Debug)]
enum Feed {
    Mock(mock::Script),
    /// Backend request sent; no response head yet.
    /// `delivery` says how the events will be written (it sits in the decoder's
    /// padding, so a stream stays as small as it was).
    AwaitingHead {
        decoder: SseDecoder,
        delivery: Delivery,
    },
    /// 2xx: body bytes are upstream SSE events.
    Events {
        decoder: SseDecoder,
        finish_seen: bool,
        delivery: Delivery,
    },
    /// A passthrough backend's request sent; no response head yet.
    AwaitingRawHead {
        events: RawEvents,
    },
    /// 2xx from a passthrough backend: its events go to the client unchanged.
    Raw {
        events: RawEvents,
    },
    /// Non-2xx: keeping the start of the body to find its error message.
    ErrorBody {
        status: u16,
        body: Vec<u8>,
    },
    /// Nothing more will come (the outcome is decided).
    Over,
}

impl Feed {
    /// True while a backend request may still be sending: cancelling it helps.
    fn is_backend_running(&self) -> bool {
        matches!(
            self,
            Feed::AwaitingHead { .. }
                | Feed::Events { .. }
                | Feed::AwaitingRawHead { .. }
                | Feed::Raw { .. }
                | Feed::ErrorBody { .. }
        )
    }
}

/// The fixed tail of a stream's outputs: the "tiny queue" after the last write.
#[derive(Debug)]
enum End {
    Running,
    /// The outcome is decided; these outputs are still to be handed out, in order.
    Ending {
        cancel_backend: bool,
        close_client: bool,
        outcome: Outcome,
    },
    /// `Done` has been handed out.
    Finished,
}

/// How one stretch of upstream events ended the stream, if it did. Whatever had to
/// be written for it (`[DONE]` or the error event) has been written.
enum Verdict {
    Continue,
    Completed,
    Failed(FailureReason),
}

impl Stream {
    /// A stream that has just been handed off. Its first output is `Write(head)`.
    pub fn new(now: Instant, config: &StreamConfig, head: Bytes, source: Source) -> Stream {
        Stream::with_delivery(now, config, head, source, Delivery::default())
    }

    /// [`Stream::new`], writing a backend's events as `delivery` says (a mock
    /// script carries its own format).
    pub fn with_delivery(
        now: Instant,
        config: &StreamConfig,
        head: Bytes,
        source: Source,
        delivery: Delivery,
    ) -> Stream {
        let settings = Settings {
            // A zero interval would ask for a keep-alive at every wake-up.
            keep_alive: millis_ceil(config.keep_alive_interval).max(1),
            idle: millis_ceil(config.idle_timeout),
            mock_delay: millis_ceil(config.mock_delay),
            max_error_body: u32::try_from(config.max_error_body).unwrap_or(u32::MAX),
            write_timeout: millis_ceil(config.write_timeout).max(1),
            client_buffer: u32::try_from(config.client_buffer).unwrap_or(u32::MAX).max(1),
            min_write_progress: u32::try_from(config.min_write_progress).unwrap_or(u32::MAX),
        };
        let (feed, backend) = match source {
            Source::Backend => (
                Feed::AwaitingHead { decoder: SseDecoder::new(config.sse_limits), delivery },
                millis_ceil(config.first_byte_timeout),
            ),
            Source::Passthrough => (
                Feed::AwaitingRawHead { events: RawEvents::new(config.sse_limits.max_event) },
                millis_ceil(config.first_byte_timeout),
            ),
            Source::Mock(script) => (Feed::Mock(script), NEVER),
        };
        let deadlines = Deadlines {
            total: millis_ceil(config.total_timeout),
            backend,
            // The head counts as a write: it is handed out at once.
            keep_alive: settings.keep_alive,
            write_stall: if head.is_empty() { NEVER } else { settings.write_timeout },
            wake: 0,
        };
        let unwritten = u32::try_from(head.len()).unwrap_or(u32::MAX);
        let mut stream = Stream {
            start: now,
            write: head,
            unwritten,
            taken_toward_progress: 0,
            feed,
            settings,
            deadlines,
            end: End::Running,
            progress: Progress { first_taken: NEVER, first_event: NEVER, events: 0, backend_status: 0 },
            recording: None,
        };
        stream.deadlines.wake = stream.earliest_deadline();
        stream
    }

    /// Feeds one input at `now` (the runtime's monotonic clock): what the
    /// backend sent, what the client's socket did, or [`Input::Timeout`] when
    /// the instant of the last [`Output::Timeout`] passed. Every input also
    /// runs the deadlines due at `now`. The machine never blocks and does no
    /// I/O: after each call the driver drains [`Stream::poll_output`] and
    /// carries the outputs out. Inputs after the outcome is decided are
    /// ignored.
    pub fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if !matches!(self.end, End::Running) {
            return;
        }
        let elapsed = self.millis_floor(now);
        let activity = self.millis_ceil(now);
        let events_before = self.progress.events;
        let mut out = BytesMut::new();
        match input {
            Input::BackendHead { status } => {
                if self.feed.is_backend_running() {
                    self.progress.backend_status = status;
                    if let Some(recording) = self.recording.as_deref_mut() {
                        recording.note_first_byte(activity);
                    }
                }
                self.handle_backend_head(activity, status, &mut out)
            }
            Input::BackendData(data) => self.handle_backend_data(activity, data, &mut out),
            Input::BackendEnd => self.handle_backend_end(&mut out),
            Input::BackendFailed(failure) => self.handle_backend_failed(&failure, &mut out),
            Input::ClientTook(taken) => {
                if taken > 0 && self.progress.first_taken == NEVER {
                    self.progress.first_taken = activity;
                }
                self.handle_client_took(activity, taken)
            }
            Input::ClientGone => {
                // The client cannot read anything any more, queued bytes included.
                self.write = Bytes::new();
                let cancel = self.feed.is_backend_running();
                self.end_with(Outcome::ClientGone, cancel);
            }
            Input::Shutdown => {
                error_event(
                    &mut out,
                    &mut self.recording,
                    "the server is shutting down",
                    "server_shutdown",
                    None,
                );
                self.fail(FailureReason::Shutdown);
            }
            Input::Timeout => {}
        }
        self.handle_deadlines(elapsed, &mut out);
        if events_before == 0 && self.progress.events > 0 {
            self.progress.first_event = activity;
        }
        self.queue_write(activity, out);
        self.deadlines.wake = self.earliest_deadline();
    }

    /// The stream's summary once `outcome` is decided (at `now`): its duration,
    /// when the client took its first bytes and when the first content event
    /// was written (each from the stream's start), events written and the
    /// backend's status. `bytes` is left at 0 for the caller, which knows what
    /// its socket took.
    pub fn summary(&self, now: Instant, outcome: &Outcome) -> StreamSummary {
        let at = |millis: Millis| (millis != NEVER).then(|| Duration::from_millis(u64::from(millis)));
        StreamSummary {
            outcome: HandoffOutcome::of_stream(outcome),
            duration: now.saturating_duration_since(self.start),
            ttfb: at(self.progress.first_taken),
            first_event: at(self.progress.first_event),
            events: self.progress.events,
            backend_status: (self.progress.backend_status != 0).then_some(self.progress.backend_status),
            bytes: 0,
        }
    }

    /// The next thing the runtime must do. Call it after [`Stream::new`] and
    /// after every [`Stream::handle_input`], in a loop, until it returns
    /// [`Output::Timeout`]; arm a timer for that instant and feed
    /// [`Input::Timeout`] when it passes. `Write`s are queued to the client in
    /// the order returned; the ending sequence is described on [`Output`].
    /// After [`Output::Done`] it only returns a meaningless `Timeout`.
    pub fn poll_output(&mut self) -> Output {
        if !self.write.is_empty() {
            return Output::Write(std::mem::take(&mut self.write));
        }
        match &mut self.end {
            End::Running => Output::Timeout(self.instant_at(self.deadlines.wake)),
            End::Ending { cancel_backend, close_client, outcome } => {
                if std::mem::take(cancel_backend) {
                    return Output::CancelBackend;
                }
                if std::mem::take(close_client) {
                    return Output::CloseClient;
                }
                let outcome = outcome.clone();
                self.end = End::Finished;
                Output::Done(outcome)
            }
            End::Finished => Output::Timeout(self.instant_at(NEVER)),
        }
    }

    /// Starts keeping what the stream's completion record needs (call it right
    /// after [`Stream::new`]); the text too when `keep_text`, up to
    /// `max_text` bytes.
    pub fn record(&mut self, keep_text: bool, max_text: usize) {
        let mut recording = Recording::new(keep_text, max_text);
        if let Feed::Mock(script) = &self.feed {
            recording.note_chunk(Some(&script.response_id()), Some(mock::MODEL), None);
        }
        self.recording = Some(Box::new(recording));
    }

    /// What was kept for the record ([`Stream::record`]); `None` when not asked.
    pub fn recording(&self) -> Option<&Recording> {
        self.recording.as_deref()
    }

    /// True once `Done` has been returned.
    pub fn is_finished(&self) -> bool {
        matches!(self.end, End::Finished)
    }

    /// True while the runtime should read the backend: a backend is still
    /// sending and fewer than `client_buffer` bytes wait for the client. Reading
    /// stops otherwise, so a slow client holds back only its own upstream.
    pub fn wants_backend_data(&self) -> bool {
        matches!(self.end, End::Running) && self.feed.is_backend_running() && !self.is_blocked_on_client()
    }

    /// Bytes written that the client has not taken yet.
    pub fn unwritten(&self) -> usize {
        self.unwritten as usize
    }

    fn is_blocked_on_client(&self) -> bool {
        self.unwritten >= self.settings.client_buffer
    }

    fn handle_client_took(&mut self, at: Millis, taken: usize) {
        // Nothing waited: no progress to count (and no reason to move the keep-alive).
        if taken == 0 || self.unwritten == 0 {
            return;
        }
        let was_blocked = self.is_blocked_on_client();
        let taken = u32::try_from(taken).unwrap_or(u32::MAX);
        self.unwritten = self.unwritten.saturating_sub(taken);
        self.taken_toward_progress = self.taken_toward_progress.saturating_add(taken);
        if self.unwritten == 0 {
            self.taken_toward_progress = 0;
            self.deadlines.write_stall = NEVER;
            // Bytes just reached the client: the connection is not idle.
            self.deadlines.keep_alive =
                self.deadlines.keep_alive.max(at.saturating_add(self.settings.keep_alive));
        } else if self.taken_toward_progress >= self.settings.min_write_progress {
            self.taken_toward_progress = 0;
            self.deadlines.write_stall = at.saturating_add(self.settings.write_timeout);
        }
        if was_blocked && !self.is_blocked_on_client() {
            // The wait was the client's, not the backend's: its silence starts now.
            self.deadlines.backend = self.deadlines.backend.max(at.saturating_add(self.settings.idle));
        }
    }

    /// Bytes of heap this stream holds between inputs (for the per-stream memory
    /// bound): the SSE decoder's buffers, a non-2xx body being read, or the mock
    /// script's echo text. Client bytes not yet handed out are not counted.
    pub fn buffered_capacity(&self) -> usize {
        match &self.feed {
            Feed::Mock(script) => script.buffered_capacity(),
            Feed::AwaitingHead { decoder, .. } | Feed::Events { decoder, .. } => decoder.buffered_capacity(),
            Feed::AwaitingRawHead { events } | Feed::Raw { events } => events.buffered_capacity(),
            Feed::ErrorBody { body, .. } => body.capacity(),
            Feed::Over => 0,
        }
    }

    fn handle_backend_head(&mut self, at: Millis, status: u16, out: &mut BytesMut) {
        // What a 2xx body feeds: chat chunks, or a passthrough's raw events.
        let body_feed = match std::mem::replace(&mut self.feed, Feed::Over) {
            Feed::AwaitingHead { decoder, delivery } => {
                Feed::Events { decoder, finish_seen: false, delivery }
            }
            Feed::AwaitingRawHead { events } => Feed::Raw { events },
            Feed::Events { .. } | Feed::Raw { .. } | Feed::ErrorBody { .. } => {
                error_event(
                    out,
                    &mut self.recording,
                    "the backend sent a second response head",
                    "upstream_protocol",
                    None,
                );
                self.end_with(Outcome::Failed(FailureReason::UpstreamProtocol), true);
                return;
            }
            feed @ (Feed::Mock(_) | Feed::Over) => {
                self.feed = feed;
                return;
            }
        };
        // The head ends the first-byte wait; from now on silence is idleness.
        self.deadlines.backend = at.saturating_add(self.settings.idle);
        self.feed = if (200..300).contains(&status) {
            body_feed
        } else if self.settings.max_error_body == 0 {
            // Nothing of the body is wanted: stop the backend sending it.
            write_status_error(out, &mut self.recording, status, &[]);
            self.end_with(Outcome::Failed(FailureReason::UpstreamStatus(status)), true);
            return;
        } else {
            Feed::ErrorBody { status, body: Vec::new() }
        };
    }

    fn handle_backend_data(&mut self, at: Millis, data: &[u8], out: &mut BytesMut) {
        if data.is_empty() {
            return;
        }
        let idle_deadline = at.saturating_add(self.settings.idle);
        match &mut self.feed {
            Feed::Mock(_) | Feed::Over => {}
            Feed::AwaitingHead { .. } | Feed::AwaitingRawHead { .. } => {
                let message = "the backend sent body bytes before its response head";
                error_event(out, &mut self.recording, message, "upstream_protocol", None);
                self.fail(FailureReason::UpstreamProtocol);
            }
            Feed::ErrorBody { status, body } => {
                self.deadlines.backend = idle_deadline;
                let limit = usize::try_from(self.settings.max_error_body).unwrap_or(usize::MAX);
                let room = limit.saturating_sub(body.len());
                body.extend_from_slice(data.get(..room).unwrap_or(data));
                if body.len() >= limit {
                    let status = *status;
                    write_status_error(out, &mut self.recording, status, body);
                    self.fail(FailureReason::UpstreamStatus(status));
                }
            }
            Feed::Raw { events } => {
                self.deadlines.backend = idle_deadline;
                match events.feed(data, out) {
                    Ok(count) => self.progress.events = self.progress.events.saturating_add(count),
                    Err(error) => {
                        error_event(out, &mut self.recording, &error.to_string(), "upstream_protocol", None);
                        self.fail(FailureReason::UpstreamProtocol);
                    }
                }
            }
            Feed::Events { decoder, finish_seen, delivery } => {
                self.deadlines.backend = idle_deadline;
                match forward_events(
                    decoder,
                    finish_seen,
                    &mut self.progress.events,
                    *delivery,
                    data,
                    out,
                    &mut self.recording,
                ) {
                    Verdict::Continue => {}
                    Verdict::Completed => self.end_with(Outcome::Completed, false),
                    Verdict::Failed(reason) => self.fail(reason),
                }
            }
        }
    }

    fn handle_backend_end(&mut self, out: &mut BytesMut) {
        // The backend has stopped by itself: nothing below cancels it.
        let outcome = match std::mem::replace(&mut self.feed, Feed::Over) {
            feed @ (Feed::Mock(_) | Feed::Over) => {
                self.feed = feed;
                return;
            }
            Feed::AwaitingHead { .. } | Feed::AwaitingRawHead { .. } => {
                let message = "the backend ended its response before sending a status";
                error_event(out, &mut self.recording, message, "upstream_protocol", None);
                Outcome::Failed(FailureReason::UpstreamProtocol)
            }
            Feed::Events { mut decoder, finish_seen, .. } => {
                // An event cut off by the end is discarded (WHATWG); only what was
                // dispatched counts.
                decoder.finish();
                if finish_seen {
                    out.put_slice(sse::DONE);
                    Outcome::Completed
                } else {
                    let message = "the backend's answer ended before it was complete";
                    error_event(out, &mut self.recording, message, "upstream_truncated", None);
                    Outcome::Failed(FailureReason::UpstreamTruncated)
                }
            }
            // Passthrough: the upstream's own end is the end (its framework ends
            // with its own event); an event it cut off is dropped, as WHATWG
            // clients drop it, and nothing of ours is added.
            Feed::Raw { .. } => Outcome::Completed,
            Feed::ErrorBody { status, body } => {
                write_status_error(out, &mut self.recording, status, &body);
                Outcome::Failed(FailureReason::UpstreamStatus(status))
            }
        };
        self.end_with(outcome, false);
    }

    fn handle_backend_failed(&mut self, failure: &BackendFailure, out: &mut BytesMut) {
        let outcome = match std::mem::replace(&mut self.feed, Feed::Over) {
            feed @ (Feed::Mock(_) | Feed::Over) => {
                self.feed = feed;
                return;
            }
            // The answer was complete; only its tail (usage, [DONE]) was lost.
            Feed::Events { finish_seen: true, .. } => {
                out.put_slice(sse::DONE);
                Outcome::Completed
            }
            // The status is the better explanation than how the body broke off.
            Feed::ErrorBody { status, body } => {
                write_status_error(out, &mut self.recording, status, &body);
                Outcome::Failed(FailureReason::UpstreamStatus(status))
            }
            Feed::AwaitingHead { .. }
            | Feed::Events { .. }
            | Feed::AwaitingRawHead { .. }
            | Feed::Raw { .. } => {
                error_event(
                    out,
                    &mut self.recording,
                    failure.kind.client_message(),
                    failure.kind.error_type(),
                    None,
                );
                Outcome::Failed(FailureReason::Backend(failure.kind))
            }
        };
        self.end_with(outcome, false);
    }

    /// Acts on every deadline that is due at `now`.
    fn handle_deadlines(&mut self, now: Millis, out: &mut BytesMut) {
        if !matches!(self.end, End::Running) {
            return;
        }
        if self.unwritten > 0 && now >= self.deadlines.write_stall {
            // Nothing more can reach this client: drop what waits and stop the upstream.
            self.write = Bytes::new();
            out.clear();
            let cancel = self.feed.is_backend_running();
            self.end_with(Outcome::ClientStalled, cancel);
            return;
        }
        if now >= self.deadlines.total {
            let limit = Duration::from_millis(u64::from(self.deadlines.total));
            let message = format!("the stream reached its time limit of {limit:?}");
            error_event(out, &mut self.recording, &message, "timeout", Some("total_timeout"));
            self.fail(FailureReason::TotalTimeout);
            return;
        }
        if self.feed.is_backend_running() && !self.is_blocked_on_client() && now >= self.deadlines.backend {
            self.handle_backend_deadline(out);
            return;
        }
        if let Feed::Mock(script) = &mut self.feed {
            // Due times come from the plan, not from this wake-up, so a late wake
            // catches up in one write instead of stretching the stream.
            while !script.is_finished() && mock_due(self.settings.mock_delay, script.events_written()) <= now
            {
                match self.recording.as_deref_mut() {
                    Some(recording) => script.write_next_noting(out, &mut |text| recording.note_text(text)),
                    None => script.write_next(out),
                };
                self.progress.events = self.progress.events.saturating_add(1);
            }
            if script.is_finished() {
                if let Some(recording) = self.recording.as_deref_mut() {
                    recording.note_chunk(None, None, Some("stop"));
                }
                out.put_slice(sse::DONE);
                self.end_with(Outcome::Completed, false);
                return;
            }
        }
        // A keep-alive behind bytes the client has not taken would prove nothing.
        if out.is_empty() && self.unwritten == 0 && now >= self.deadlines.keep_alive {
            out.put_slice(sse::KEEP_ALIVE);
        }
    }

    /// The first-byte or idle deadline passed (or a non-2xx body stalled).
    fn handle_backend_deadline(&mut self, out: &mut BytesMut) {
        let reason = match &self.feed {
            Feed::AwaitingHead { .. } | Feed::AwaitingRawHead { .. } => {
                let limit = Duration::from_millis(u64::from(self.deadlines.backend));
                let message = format!("the backend sent no response within {limit:?}");
                error_event(out, &mut self.recording, &message, "timeout", Some("first_byte_timeout"));
                FailureReason::FirstByteTimeout
            }
            Feed::Events { .. } | Feed::Raw { .. } => {
                let limit = Duration::from_millis(u64::from(self.settings.idle));
                let message = format!("the backend sent nothing for {limit:?}");
                error_event(out, &mut self.recording, &message, "timeout", Some("idle_timeout"));
                FailureReason::IdleTimeout
            }
            // The status explains more than the stall: report it with what arrived.
            Feed::ErrorBody { status, body } => {
                write_status_error(out, &mut self.recording, *status, body);
                FailureReason::UpstreamStatus(*status)
            }
            Feed::Mock(_) | Feed::Over => return,
        };
        self.fail(reason);
    }

    /// Ends the stream after its error event has been written.
    fn fail(&mut self, reason: FailureReason) {
        let cancel = self.feed.is_backend_running();
        self.end_with(Outcome::Failed(reason), cancel);
    }

    fn end_with(&mut self, outcome: Outcome, cancel_backend: bool) {
        // Frees the decoder's buffers, an error body or the script's text at once.
        self.feed = Feed::Over;
        self.end = End::Ending { cancel_backend, close_client: true, outcome };
    }

    fn queue_write(&mut self, at: Millis, out: BytesMut) {
        if out.is_empty() {
            return;
        }
        self.deadlines.keep_alive = at.saturating_add(self.settings.keep_alive);
        if self.unwritten == 0 {
            self.deadlines.write_stall = at.saturating_add(self.settings.write_timeout);
            self.taken_toward_progress = 0;
        }
        self.unwritten = self.unwritten.saturating_add(u32::try_from(out.len()).unwrap_or(u32::MAX));
        let bytes = out.freeze();
        if self.write.is_empty() {
            self.write = bytes;
        } else {
            // Only when the caller did not drain (e.g. the head is still queued).
            let mut joined = BytesMut::with_capacity(self.write.len() + bytes.len());
            joined.put_slice(&self.write);
            joined.put_slice(&bytes);
            self.write = joined.freeze();
        }
    }

    fn earliest_deadline(&self) -> Millis {
        let feed = match &self.feed {
            Feed::Mock(script) if !script.is_finished() => {
                mock_due(self.settings.mock_delay, script.events_written())
            }
            feed if feed.is_backend_running() && !self.is_blocked_on_client() => self.deadlines.backend,
            _ => NEVER,
        };
        let client = if self.unwritten > 0 { self.deadlines.write_stall } else { self.deadlines.keep_alive };
        self.deadlines.total.min(client).min(feed)
    }

    fn millis_floor(&self, now: Instant) -> Millis {
        Millis::try_from(now.saturating_duration_since(self.start).as_millis()).unwrap_or(NEVER)
    }

    fn millis_ceil(&self, now: Instant) -> Millis {
        millis_ceil(now.saturating_duration_since(self.start))
    }

    fn instant_at(&self, at: Millis) -> Instant {
        // Cannot overflow on any real clock (49 days past a recent instant).
        self.start.checked_add(Duration::from_millis(u64::from(at))).unwrap_or(self.start)
    }
}

/// Feeds body bytes through the SSE decoder and each event through the chunk
/// parser, writing the client's events to `out` as `delivery` says. Stops at the
/// first event that ends the stream; anything after it in `data` is ignored.
///
/// `events` counts the events that carried text (content or reasoning); in
/// [`Format::OpenAi`] every chunk is forwarded, but only those count.
fn forward_events(
    decoder: &mut SseDecoder,
    finish_seen: &mut bool,
    events: &mut u32,
    delivery: Delivery,
    data: &[u8],
    out: &mut BytesMut,
    recording: &mut Option<Box<Recording>>,
) -> Verdict {
    let mut rest = data;
    // Each call consumes at least one byte or reports that it consumed them all,
    // so `data.len() + 1` calls always suffice; the bound guards against a
    // decoder bug turning into a spinning stream.
    for _ in 0..=data.len() {
        let (consumed, event) = match decoder.decode(rest) {
            Ok(step) => step,
            Err(error) => {
                error_event(out, recording, &error.to_string(), "upstream_protocol", None);
                return Verdict::Failed(FailureReason::UpstreamProtocol);
            }
        };
        let Some(event) = event else {
            if consumed >= rest.len() {
                return Verdict::Continue;
            }
            rest = rest.get(consumed..).unwrap_or_default();
            continue;
        };
        match openai::parse_chunk(event.data) {
            Ok(ChunkEvent::Delta { content, reasoning, finish_reason, usage, id, model, .. }) => {
                let content = content.filter(|content| !content.is_empty());
                let reasoning = reasoning.filter(|reasoning| !reasoning.is_empty());
                if let Some(recording) = recording.as_deref_mut() {
                    recording.note_chunk(id.as_deref(), model.as_deref(), finish_reason.as_deref());
                    if let Some(content) = &content {
                        recording.note_text(content);
                    }
                    if let Some(usage) = usage {
                        recording.note_usage(usage);
                    }
                }
                match delivery.format {
                    Format::Content => {
                        if let Some(reasoning) = reasoning.filter(|_| delivery.reasoning) {
                            sse::encode_reasoning(out, &reasoning);
                            *events = events.saturating_add(1);
                        }
                        if let Some(content) = content {
                            sse::encode_content(out, &content);
                            *events = events.saturating_add(1);
                        }
                        if let Some(usage) = usage.filter(|_| delivery.usage_event) {
                            sse::encode_usage(out, &usage);
                        }
                    }
                    Format::OpenAi => {
                        // The chunk parsed as JSON of the expected shape: its bytes
                        // go out as they came, never re-serialized.
                        sse::encode_data(out, event.data);
                        if content.is_some() || reasoning.is_some() {
                            *events = events.saturating_add(1);
                        }
                    }
                }
                *finish_seen |= finish_reason.is_some();
            }
            Ok(ChunkEvent::Done) => {
                out.put_slice(sse::DONE);
                return Verdict::Completed;
            }
            Ok(ChunkEvent::Error(error)) => {
                error_event(out, recording, &error.message, &error.error_type, error.code.as_deref());
                return Verdict::Failed(FailureReason::UpstreamError);
            }
            Err(error) => {
                error_event(out, recording, &error.to_string(), "upstream_protocol", None);
                return Verdict::Failed(FailureReason::UpstreamProtocol);
            }
        }
        rest = rest.get(consumed..).unwrap_or_default();
    }
    let message = "the SSE decoder stopped consuming the backend's body";
    error_event(out, recording, message, "upstream_protocol", None);
    Verdict::Failed(FailureReason::UpstreamProtocol)
}

fn write_status_error(out: &mut BytesMut, recording: &mut Option<Box<Recording>>, status: u16, body: &[u8]) {
    let error = openai::error_from_status(status, body);
    error_event(out, recording, &error.message, &error.error_type, error.code.as_deref());
}

/// Writes the client's error event, and notes its type for the record.
fn error_event(
    out: &mut BytesMut,
    recording: &mut Option<Box<Recording>>,
    message: &str,
    error_type: &str,
    code: Option<&str>,
) {
    if let Some(recording) = recording {
        recording.note_error(error_type, code);
    }
    sse::encode_error(out, message, error_type, code);
}

/// When mock event `index` (0-based) is due: `(index + 1) * delay`.
fn mock_due(delay: Millis, index: u32) -> Millis {
    delay.saturating_mul(index.saturating_add(1))
}

fn millis_ceil(duration: Duration) -> Millis {
    Millis::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(NEVER)
}
