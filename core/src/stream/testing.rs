//! Drives a [`Stream`] on a simulated clock and checks the stream's invariants
//! after every output. The unit tests, the proptest and the fuzz target
//! (`drive_ops`) all go through [`Harness`], so one set of rules is enforced
//! everywhere:
//!
//! - the head is the first output, byte for byte;
//! - every later `Write` is whole, well-formed SSE events;
//! - nothing is written after `CloseClient`, after `[DONE]`, after an error event,
//!   or after the client went away; `[DONE]` and an error event never both appear;
//! - `CancelBackend` at most once, never for mock, never after the backend ended;
//! - exactly one `Done`, after `CloseClient`, last, and matching what was written;
//! - draining ends in `Timeout` within [`MAX_OUTPUTS_PER_INPUT`] outputs (no
//!   livelock), and while running that deadline is in the future (no spinning)
//!   and never past the total or keep-alive deadline (deadlines are re-armed).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{BackendFailure, FailureKind, Input, Outcome, Output, Source, Stream, StreamConfig};
use crate::handoff::Delivery;
use crate::mock;
use crate::sse::SseLimits;

/// More outputs than this after one input means the machine is spinning.
pub const MAX_OUTPUTS_PER_INPUT: usize = 8;

/// The head the harness hands to streams unless told otherwise.
pub const TEST_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";

/// One event as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// `data: {"content":..}` or, from the mock, `{"content":..,"index":N}`.
    Content { content: String, index: Option<u64> },
    /// `event: reasoning` with `{"content":..}`.
    Reasoning(String),
    /// Any other JSON object as the data (the `openai` format's chunks), its
    /// `data:` lines joined as an SSE parser joins them.
    Chunk(String),
    /// `event: usage` with the backend's token counts (its JSON).
    Usage(String),
    /// `data: [DONE]`.
    Done,
    /// `: keep-alive`.
    KeepAlive,
    /// `event: error` with OpenAI's error object.
    Error { message: String, error_type: String, code: Option<String> },
}

impl ClientEvent {
    /// The error event's `type` (None for other events).
    pub fn error_type(&self) -> Option<&str> {
        match self {
            ClientEvent::Error { error_type, .. } => Some(error_type),
            _ => None,
        }
    }
}

/// Splits client body bytes into events, or says what is malformed.
pub fn parse_client_events(bytes: &[u8]) -> Result<Vec<ClientEvent>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("client bytes are not UTF-8: {e}"))?;
    if !text.is_empty() && !text.ends_with("\n\n") {
        return Err(format!("client bytes end inside an event: {text:?}"));
    }
    // JSON-escaped content never holds a raw newline, so "\n\n" only ends events.
    text.split_terminator("\n\n").map(parse_client_event).collect()
}

fn parse_client_event(event: &str) -> Result<ClientEvent, String> {
    if event == ": keep-alive" {
        return Ok(ClientEvent::KeepAlive);
    }
    if event == "data: [DONE]" {
        return Ok(ClientEvent::Done);
    }
    let json = |text: &str| -> Result<serde_json::Value, String> {
        serde_json::from_str(text).map_err(|e| format!("event data is not JSON ({e}): {text:?}"))
    };
    let string = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    if let Some(data) = event.strip_prefix("event: error\ndata: ") {
        let value = json(data)?;
        let error = &value["error"];
        return Ok(ClientEvent::Error {
            message: string(&error["message"]).ok_or_else(|| format!("error without message: {data}"))?,
            error_type: string(&error["type"]).ok_or_else(|| format!("error without type: {data}"))?,
            code: string(&error["code"]),
        });
    }
    if let Some(data) = event.strip_prefix("event: usage\ndata: ") {
        if !json(data)?.is_object() {
            return Err(format!("usage data is not a JSON object: {data:?}"));
        }
        return Ok(ClientEvent::Usage(data.to_owned()));
    }
    if let Some(data) = event.strip_prefix("event: reasoning\ndata: ") {
        let value = json(data)?;
        let content =
            string(&value["content"]).ok_or_else(|| format!("reasoning without content: {data}"))?;
        return Ok(ClientEvent::Reasoning(content));
    }
    if event.starts_with("data: ") {
        let lines: Option<Vec<&str>> = event.split('\n').map(|line| line.strip_prefix("data: ")).collect();
        let data = lines.ok_or_else(|| format!("not an event this daemon writes: {event:?}"))?.join("\n");
        let value = json(&data)?;
        if !value.is_object() {
            return Err(format!("event data is not a JSON object: {data:?}"));
        }
        return Ok(match string(&value["content"]) {
            Some(content) if !data.contains('\n') => {
                ClientEvent::Content { content, index: value["index"].as_u64() }
            }
            _ => ClientEvent::Chunk(data),
        });
    }
    Err(format!("not an event this daemon writes: {event:?}"))
}

/// The one instant the harness reads from the real clock; everything after it is
/// simulated by adding offsets.
#[allow(clippy::disallowed_methods)]
fn clock_origin() -> Instant {
    Instant::now()
}

/// A stream on a simulated clock, with every output checked.
#[derive(Debug)]
pub struct Harness {
    stream: Stream,
    start: Instant,
    now: Instant,
    /// The last `Output::Timeout`.
    deadline: Instant,
    checker: Checker,
    /// Every non-`Timeout` output, in order, with the instant it came out.
    outputs: Vec<(Instant, Output)>,
    /// The simulated client takes every byte as soon as it is written (the
    /// default); when false, bytes wait until [`Harness::take`].
    pub auto_take: bool,
}

impl Harness {
    /// A stream started now (simulated) with [`TEST_HEAD`], drained once.
    pub fn new(config: &StreamConfig, source: Source) -> Harness {
        Harness::with_head(config, Bytes::from_static(TEST_HEAD), source)
    }

    pub fn with_head(config: &StreamConfig, head: Bytes, source: Source) -> Harness {
        Harness::with_delivery(config, head, source, Delivery::default())
    }

    /// A stream writing a backend's events as `delivery` says.
    pub fn with_delivery(config: &StreamConfig, head: Bytes, source: Source, delivery: Delivery) -> Harness {
        let start = clock_origin();
        let mut checker = Checker::new(config, head.clone(), matches!(source, Source::Mock(_)), start);
        checker.passthrough = matches!(source, Source::Passthrough);
        let stream = Stream::with_delivery(start, config, head, source, delivery);
        let mut harness = Harness {
            stream,
            start,
            now: start,
            deadline: start,
            checker,
            outputs: Vec::new(),
            auto_take: true,
        };
        // Nothing has been handled yet, so a deadline that is already due is fine.
        harness.drain(false);
        harness.take_if_auto();
        harness
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    /// The instant of the last `Output::Timeout`.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// How far the simulated clock is past the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// True for a passthrough stream (its client may see the upstream's own errors).
    pub fn passthrough(&self) -> bool {
        self.checker.passthrough
    }

    /// Starts the stream's recording ([`Stream::record`]).
    pub fn record(&mut self, keep_text: bool, max_text: usize) {
        self.stream.record(keep_text, max_text);
    }

    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Hands `input` to the stream at the current simulated time and drains it.
    /// Returns the outputs of this step, `Timeout` excluded.
    pub fn handle(&mut self, input: Input<'_>) -> Vec<Output> {
        if self.checker.outcome.is_none() {
            match input {
                Input::ClientGone => self.checker.client_gone = true,
                Input::BackendEnd | Input::BackendFailed(_) => self.checker.backend_ended = true,
                _ => {}
            }
        }
        let took = match input {
            Input::ClientTook(taken) => taken,
            _ => 0,
        };
        self.stream.handle_input(self.now, input);
        self.checker.took(took, self.now);
        let mut step = self.drain(true);
        step.extend(self.take_if_auto());
        step
    }

    /// The client takes `bytes` of what waits for it.
    pub fn take(&mut self, bytes: usize) -> Vec<Output> {
        self.handle(Input::ClientTook(bytes))
    }

    fn take_if_auto(&mut self) -> Vec<Output> {
        let waiting = self.stream.unwritten();
        if !self.auto_take || waiting == 0 || self.checker.outcome.is_some() {
            return Vec::new();
        }
        self.stream.handle_input(self.now, Input::ClientTook(waiting));
        self.checker.took(waiting, self.now);
        self.drain(true)
    }

    /// Moves the simulated clock without telling the stream.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Moves the clock, then delivers `Input::Timeout`.
    pub fn advance_and_wake(&mut self, by: Duration) -> Vec<Output> {
        self.advance(by);
        self.handle(Input::Timeout)
    }

    /// Jumps the clock to the last deadline given (if it is ahead) and delivers
    /// `Input::Timeout`, as a runtime's timer would.
    pub fn wake_at_deadline(&mut self) -> Vec<Output> {
        self.now = self.now.max(self.deadline);
        self.handle(Input::Timeout)
    }

    /// Wakes at each deadline until the stream finishes; fails after `max_wakes`.
    pub fn run_until_finished(&mut self, max_wakes: usize) -> Outcome {
        for _ in 0..max_wakes {
            if let Some(outcome) = &self.checker.outcome {
                return outcome.clone();
            }
            self.wake_at_deadline();
        }
        match &self.checker.outcome {
            Some(outcome) => outcome.clone(),
            None => panic!("stream not finished after {max_wakes} wake-ups"),
        }
    }

    /// Every output so far (the head's `Write` included), `Timeout` excluded.
    pub fn outputs(&self) -> impl Iterator<Item = &Output> {
        self.outputs.iter().map(|(_, output)| output)
    }

    /// Every `Write` after the head, with the simulated instant it came out.
    pub fn body_writes(&self) -> Vec<(Instant, Bytes)> {
        let writes = self.outputs.iter().filter_map(|(at, output)| match output {
            Output::Write(bytes) => Some((*at, bytes.clone())),
            _ => None,
        });
        writes.skip(1).collect()
    }

    /// Everything written to the client after the head.
    pub fn client_body(&self) -> Vec<u8> {
        self.body_writes().iter().flat_map(|(_, bytes)| bytes.iter().copied()).collect()
    }

    /// The body as events (the checker has already validated its shape).
    pub fn client_events(&self) -> Vec<ClientEvent> {
        parse_client_events(&self.client_body()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The `Done` outcome, once it came out.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.checker.outcome.as_ref()
    }

    pub fn cancelled_backend(&self) -> bool {
        self.checker.cancels > 0
    }

    fn drain(&mut self, after_input: bool) -> Vec<Output> {
        let mut step = Vec::new();
        for _ in 0..MAX_OUTPUTS_PER_INPUT {
            match self.stream.poll_output() {
                Output::Timeout(at) => {
                    self.checker.check_timeout(at, self.now, after_input, self.stream.unwritten());
                    assert_eq!(
                        self.stream.is_finished(),
                        self.checker.outcome.is_some(),
                        "is_finished must turn true exactly when Done comes out"
                    );
                    self.deadline = at;
                    return step;
                }
                output => {
                    self.checker.check_output(&output, self.now);
                    self.outputs.push((self.now, output.clone()));
                    step.push(output);
                }
            }
        }
        panic!(
            "livelock: more than {MAX_OUTPUTS_PER_INPUT} outputs after one input without a Timeout: {step:?}"
        );
    }
}

/// The invariants, as state gathered from the outputs seen so far.
#[derive(Debug)]
struct Checker {
    head: Bytes,
    is_mock: bool,
    /// Upstream events go out as they came: only whole events are checked, and
    /// our own error event.
    passthrough: bool,
    /// Passthrough: the last Write had an `event: error` in it.
    last_write_errors: bool,
    start: Instant,
    total_timeout: Duration,
    keep_alive: Duration,
    head_seen: bool,
    last_write: Instant,
    client_gone: bool,
    backend_ended: bool,
    closed: bool,
    done_written: bool,
    error_written: bool,
    cancels: u32,
    outcome: Option<Outcome>,
    write_timeout: Duration,
    /// When bytes last started to wait for the client, and when it last took some.
    pending_since: Instant,
    last_progress: Instant,
    unwritten: usize,
    min_progress: usize,
    taken_toward_progress: usize,
}

impl Checker {
    fn new(config: &StreamConfig, head: Bytes, is_mock: bool, start: Instant) -> Checker {
        Checker {
            head,
            is_mock,
            passthrough: false,
            last_write_errors: false,
            start,
            total_timeout: config.total_timeout,
            keep_alive: config.keep_alive_interval.max(Duration::from_millis(1)),
            head_seen: false,
            last_write: start,
            client_gone: false,
            backend_ended: false,
            closed: false,
            done_written: false,
            error_written: false,
            cancels: 0,
            outcome: None,
            write_timeout: config.write_timeout,
            pending_since: start,
            last_progress: start,
            unwritten: 0,
            min_progress: config.min_write_progress,
            taken_toward_progress: 0,
        }
    }

    fn check_output(&mut self, output: &Output, now: Instant) {
        assert!(self.outcome.is_none(), "{output:?} after Done");
        if !self.head_seen {
            assert_eq!(output, &Output::Write(self.head.clone()), "the head must be the first output");
            self.head_seen = true;
            self.last_write = now;
            return;
        }
        match output {
            Output::Write(bytes) => self.check_write(bytes, now),
            Output::CancelBackend => {
                assert!(!self.is_mock, "CancelBackend for a mock stream");
                assert_eq!(self.cancels, 0, "CancelBackend twice");
                assert!(!self.backend_ended, "CancelBackend after the backend ended by itself");
                assert!(!self.closed, "CancelBackend after CloseClient");
                self.cancels += 1;
            }
            Output::CloseClient => {
                assert!(!self.closed, "CloseClient twice");
                self.closed = true;
            }
            Output::Done(outcome) => {
                assert!(self.closed, "Done before CloseClient");
                match outcome {
                    // A passthrough stream ends with its upstream's own last event.
                    Outcome::Completed => {
                        assert!(self.done_written || self.passthrough, "Completed without [DONE]")
                    }
                    Outcome::Failed(reason) => {
                        let errored = self.error_written || (self.passthrough && self.last_write_errors);
                        assert!(errored, "Failed({reason:?}) without an error event")
                    }
                    Outcome::ClientGone => {
                        assert!(self.client_gone, "outcome ClientGone but the client did not go");
                        assert!(
                            !self.done_written && !self.error_written,
                            "ClientGone after an ending event"
                        );
                    }
                    Outcome::ClientStalled => {
                        assert!(!self.done_written, "ClientStalled after [DONE]");
                        assert!(self.unwritten > 0, "ClientStalled with nothing waiting for the client");
                        let stalled_since = self.pending_since.max(self.last_progress);
                        assert!(
                            now >= stalled_since + self.write_timeout,
                            "ClientStalled {:?} after the client's last progress; the write timeout is {:?}",
                            now - stalled_since,
                            self.write_timeout
                        );
                    }
                }
                self.outcome = Some(outcome.clone());
            }
            Output::Timeout(_) => unreachable!("drain handles Timeout"),
        }
    }

    fn check_write(&mut self, bytes: &Bytes, now: Instant) {
        assert!(!bytes.is_empty(), "empty Write");
        assert!(!self.closed, "Write after CloseClient");
        assert!(!self.client_gone, "Write after the client went away");
        assert!(!self.done_written, "Write after [DONE]");
        assert!(!self.error_written, "Write after an error event");
        if self.passthrough {
            let text = String::from_utf8_lossy(bytes);
            // Only whole events go out, so every Write ends with a line terminator
            // (the blank line that ended its last event).
            assert!(text.ends_with(['\n', '\r']), "a Write ends an event: {text:?}");
            // An upstream may send its own `event: error`, so ours is told apart
            // only at the end: a failed stream's last Write must carry one.
            self.last_write_errors = text.starts_with("event: error\n") || text.contains("\nevent: error\n");
            return;
        }
        let events = parse_client_events(bytes).unwrap_or_else(|e| panic!("malformed Write: {e}"));
        for (i, event) in events.iter().enumerate() {
            let is_last = i + 1 == events.len();
            match event {
                ClientEvent::Done => {
                    assert!(is_last, "[DONE] followed by more events in one Write");
                    self.done_written = true;
                }
                ClientEvent::Error { .. } => {
                    assert!(is_last, "an error event followed by more events in one Write");
                    self.error_written = true;
                }
                ClientEvent::Content { .. }
                | ClientEvent::Reasoning(_)
                | ClientEvent::Chunk(_)
                | ClientEvent::Usage(_)
                | ClientEvent::KeepAlive => {}
            }
        }
        self.last_write = now;
    }

    /// The client took `bytes`: progress once enough was taken (the machine's rule,
    /// kept here on its own to check it).
    fn took(&mut self, bytes: usize, now: Instant) {
        if bytes == 0 || self.outcome.is_some() {
            return;
        }
        self.taken_toward_progress += bytes;
        if self.taken_toward_progress >= self.min_progress {
            self.taken_toward_progress = 0;
            self.last_progress = now;
        }
    }

    fn check_timeout(&mut self, at: Instant, now: Instant, after_input: bool, unwritten: usize) {
        if self.unwritten == 0 && unwritten > 0 {
            self.pending_since = now;
            self.taken_toward_progress = 0;
        }
        if self.unwritten > 0 && unwritten == 0 {
            // What the client took counts as written for the keep-alive bound.
            self.last_write = now;
        }
        self.unwritten = unwritten;
        if self.outcome.is_some() {
            return;
        }
        if after_input {
            assert!(at > now, "Timeout({at:?}) is not after now ({now:?}): a runtime would spin");
        }
        let slack = Duration::from_millis(1);
        assert!(at <= self.start + self.total_timeout + slack, "Timeout past the total deadline");
        if unwritten == 0 {
            assert!(at <= self.last_write + self.keep_alive + slack, "Timeout past the keep-alive deadline");
        } else {
            let stall = self.pending_since.max(self.last_progress) + self.write_timeout;
            assert!(at <= stall + slack, "Timeout past the write-stall deadline");
        }
    }
}

/// Settings small enough that arbitrary input reaches every deadline and limit.
pub fn fuzz_config() -> StreamConfig {
    StreamConfig {
        keep_alive_interval: Duration::from_millis(20),
        first_byte_timeout: Duration::from_millis(100),
        idle_timeout: Duration::from_millis(60),
        total_timeout: Duration::from_millis(2_000),
        mock_delay: Duration::from_millis(10),
        sse_limits: SseLimits { max_line: 96, max_event: 192 },
        max_error_body: 48,
        write_timeout: Duration::from_millis(80),
        min_write_progress: 32,
        client_buffer: 256,
        client_send_buffer: 0,
        linger: Duration::from_millis(30),
        record_text: true,
        record_text_max_bytes: 40,
    }
}

/// Upstream fragments that reach the machine's deeper states quickly.
const FRAGMENTS: &[&[u8]] = &[
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi \\\"there\\\"\"}}]}\n\n",
    b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    b"data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n",
    b"data: [DONE]\n\n",
    b"data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"code\":null}}\n\n",
    b": upstream comment\r\n\r\n",
    b"data: not json\n\n",
    b"{\"error\":{\"message\":\"Rate limited\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}",
];

const STATUSES: [u16; 10] = [200, 200, 200, 201, 204, 400, 401, 429, 500, 503];

const KINDS: [FailureKind; 4] =
    [FailureKind::Unavailable, FailureKind::Reset, FailureKind::Protocol, FailureKind::Overloaded];

/// Most operations one fuzz input applies.
const MAX_OPS: usize = 512;

/// Drives one stream with operations decoded from arbitrary bytes, checking every
/// invariant after every step, then runs it to its end and returns how it ended.
/// Panics on a violation; this is the body of the `stream` fuzz target and of the
/// proptest.
pub fn drive_ops(data: &[u8]) -> Outcome {
    let mut bytes = data.iter().copied();
    let mut next = || bytes.next();
    let mut config = fuzz_config();
    // The first byte picks the source (mock, a bare backend stream, or most
    // often one whose 200 head has arrived, so content reaches the deep states)
    // and a config variant.
    let first = next().unwrap_or(0);
    if first & 0x10 != 0 {
        // Non-2xx bodies not read at all.
        config.max_error_body = 0;
    }
    let source = match first % 4 {
        0 => Source::Mock(mock::Script::new(u64::from(first), "fuzz", "a prompt")),
        _ => Source::Backend,
    };
    let mut harness = Harness::new(&config, source);
    if first % 4 >= 2 {
        harness.handle(Input::BackendHead { status: 200 });
    }
    for _ in 0..MAX_OPS {
        let Some(op) = next() else { break };
        let arg = next().unwrap_or(0);
        let pick = usize::from(arg);
        // Ending inputs get one slot each, content several, so streams live long
        // enough to reach the deeper states.
        match op % 26 {
            0 | 1 => drop(harness.handle(Input::BackendHead { status: STATUSES[pick % STATUSES.len()] })),
            2 | 3 => {
                let raw: Vec<u8> = (0..arg % 48).map_while(|_| next()).collect();
                harness.handle(Input::BackendData(&raw));
            }
            4..=9 => {
                let fragment = FRAGMENTS[pick % FRAGMENTS.len()];
                let (a, b) = fragment.split_at(usize::from(next().unwrap_or(0)) % (fragment.len() + 1));
                harness.handle(Input::BackendData(a));
                harness.handle(Input::BackendData(b));
            }
            10..=15 => drop(harness.handle(Input::BackendData(FRAGMENTS[pick % FRAGMENTS.len()]))),
            16 => drop(harness.handle(Input::BackendEnd)),
            17 => {
                let failure = BackendFailure { kind: KINDS[pick % KINDS.len()], message: "fuzz".into() };
                harness.handle(Input::BackendFailed(failure));
            }
            18 => drop(harness.handle(Input::ClientGone)),
            19 => drop(harness.handle(Input::Shutdown)),
            20 => drop(harness.wake_at_deadline()),
            21 => drop(harness.advance_and_wake(Duration::from_millis(u64::from(arg)))),
            22 => harness.advance(Duration::from_millis(u64::from(arg))),
            23 => drop(harness.handle(Input::Timeout)),
            24 => harness.auto_take = !harness.auto_take,
            _ => drop(harness.take(pick * 8)),
        }
    }
    // Every stream ends on its own: at worst the total timeout (2 s) fires, and a
    // keep-alive every 20 ms before it bounds the wake-ups.
    let outcome = harness.run_until_finished(1_000);
    assert!(harness.stream().is_finished());
    let after = harness.handle(Input::ClientGone);
    assert!(after.is_empty(), "a finished stream reacted to input: {after:?}");
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse;

    #[test]
    fn client_event_parser_accepts_what_the_encoder_writes() {
        let mut out = bytes::BytesMut::new();
        sse::encode_content(&mut out, "a \"b\"\nc");
        sse::encode_indexed_content(&mut out, "x", 4);
        out.extend_from_slice(sse::KEEP_ALIVE);
        sse::encode_error(&mut out, "m", "t", Some("c"));
        assert_eq!(
            parse_client_events(&out),
            Ok(vec![
                ClientEvent::Content { content: "a \"b\"\nc".into(), index: None },
                ClientEvent::Content { content: "x".into(), index: Some(4) },
                ClientEvent::KeepAlive,
                ClientEvent::Error { message: "m".into(), error_type: "t".into(), code: Some("c".into()) },
            ])
        );
        let mut done = bytes::BytesMut::new();
        done.extend_from_slice(sse::DONE);
        assert_eq!(parse_client_events(&done), Ok(vec![ClientEvent::Done]));
    }

    #[test]
    fn client_event_parser_rejects_partial_and_foreign_events() {
        assert!(parse_client_events(b"data: {\"content\":\"x\"}\n").is_err());
        assert!(parse_client_events(b"id: 3\n\n").is_err());
        assert!(parse_client_events(b"data: {oops}\n\n").is_err());
    }
}
