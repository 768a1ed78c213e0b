//! The `stream` target: a stream machine driven by a script of inputs and clock
//! moves, checked after every step by [`crate::stream::testing::Harness`] (head
//! first, whole events, nothing after the end, `[DONE]` at most once and last and
//! never with an error event, one `Done` last, no livelock) and here for what the
//! harness does not see: held memory, and cancelling a backend that is still
//! sending when the stream ends early.

use std::time::Duration;

use super::event_stream::capacity_bound;
use super::script::Script;
use crate::mock::{self, PROMPT_PREVIEW_CHARS, USER_ID_PREVIEW_CHARS};
use bytes::Bytes;

use crate::handoff::{Delivery, Format};
use crate::stream::testing::{fuzz_config, ClientEvent, Harness, TEST_HEAD};
use crate::stream::{BackendFailure, FailureKind, Input, Outcome, Source, StreamConfig};

/// Most inputs one script hands in.
const MAX_STEPS: usize = 512;

/// Wake-ups allowed for a stream to end on its own after the script (at worst
/// its total timeout, with a keep-alive every 20 ms before it).
const MAX_WAKES: usize = 1_000;

const STATUSES: [u16; 16] =
    [200, 200, 201, 204, 299, 400, 404, 429, 500, 503, 0, 99, 100, 300, 999, u16::MAX];

const KINDS: [FailureKind; 4] =
    [FailureKind::Unavailable, FailureKind::Reset, FailureKind::Protocol, FailureKind::Overloaded];

/// Upstream bytes that reach the machine's later states sooner than random ones.
const FRAGMENTS: &[&[u8]] = &[
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    b"data: {\"choices\":[{\"delta\":{\"content\":\"caf\\u00e9 \\\"x\\\"\\n\"},\"finish_reason\":null}]}\n\n",
    b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\r\n\r\n",
    b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"total_tokens\":5}}\n\n",
    b"data: [DONE]\n\n",
    b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":\"503\"}}\n\n",
    b": keep-alive from a proxy\r\n\r\nid: 7\nevent: message\nretry: 10\n",
    b"data: {not json}\n\n",
    b"\xef\xbb\xbfdata: {\"choices\":[{\"delta\":{\"content\":\"after a BOM\"}}]}\n\n",
    b"{\"error\":{\"message\":\"Rate limited\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}",
    b"data: {\"choices\":[{\"delta\":{\"content\":\"a line longer than the fuzz config allows, so that the decoder reports its limit and the stream fails\"}}]}\n\n",
    b"data: {\"choices\":[{\"delta\":{\"reasoning_content\":\"hm\\n\"}}]}\n\n",
    b"data: {\"choices\":\ndata: [{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\"}]}}]}\n\n",
];

/// Layout: `[source, (connection u64, user id run, prompt run: mock only), steps...]`.
/// The source byte: `% 4` is 0 for the mock script, 1 for a backend stream, 2 or 3
/// for one whose 200 head has already arrived; bit 0x10 reads no non-2xx body;
/// bit 0x20 writes the `openai` format, bit 0x40 asks for reasoning events.
pub(super) fn check(data: &[u8]) -> Result<(), String> {
    drive(data).map(drop)
}

/// Runs the script and then the stream to its end; returns how it ended and
/// whether the backend was cancelled.
fn drive(data: &[u8]) -> Result<(Outcome, bool), String> {
    let mut script = Script::new(data);
    let first = script.byte();
    let mut config = fuzz_config();
    if first & 0x10 != 0 {
        config.max_error_body = 0;
    }
    let format = if first & 0x20 != 0 { Format::OpenAi } else { Format::Content };
    let delivery = Delivery { format, reasoning: first & 0x40 != 0, usage_event: first & 0x08 != 0 };
    let recording = first & 0x04 != 0;
    let is_mock = first % 4 == 0;
    let source = if is_mock {
        let connection = script.u64();
        let user_id = String::from_utf8_lossy(script.run()).into_owned();
        let prompt = String::from_utf8_lossy(script.run()).into_owned();
        Source::Mock(mock::Script::new(connection, &user_id, &prompt).in_format(format))
    } else if first & 0x80 != 0 {
        Source::Passthrough
    } else {
        Source::Backend
    };
    let mut run = Run {
        harness: Harness::with_delivery(&config, Bytes::from_static(TEST_HEAD), source, delivery),
        bound: memory_bound(&config),
        backend_sending: !is_mock,
    };
    if recording {
        run.harness.record(true, config.record_text_max_bytes);
    }
    if first % 4 >= 2 {
        run.hand(Input::BackendHead { status: 200 })?;
    }
    for _ in 0..MAX_STEPS {
        if script.is_empty() {
            break;
        }
        run.step(&mut script)?;
    }
    let outcome = run.harness.run_until_finished(MAX_WAKES);
    run.check_after_step()?;
    if recording {
        check_recording(&run.harness, &outcome, format, config.record_text_max_bytes)?;
    }
    let after = run.harness.handle(Input::ClientGone);
    if !after.is_empty() {
        return Err(format!("a finished stream reacted to input: {after:?}"));
    }
    Ok((outcome, run.harness.cancelled_backend()))
}

/// Most heap a stream may hold between inputs: its SSE decoder's bound, a non-2xx
/// body (doubled for amortized growth), or the mock script's greeting and echo
/// (at most 4 bytes per character, plus the fixed words).
fn memory_bound(config: &StreamConfig) -> usize {
    let decoder = capacity_bound(config.sse_limits);
    let error_body = 2 * config.max_error_body;
    let mock = 4 * (USER_ID_PREVIEW_CHARS + PROMPT_PREVIEW_CHARS) + 64;
    decoder.max(error_body).max(mock)
}

struct Run {
    harness: Harness,
    bound: usize,
    /// The backend request may still be sending: no end or failure was handed in
    /// before the outcome was decided (always false for mock).
    backend_sending: bool,
}

impl Run {
    fn step(&mut self, script: &mut Script<'_>) -> Result<(), String> {
        let op = script.byte();
        match op % 16 {
            0 => {
                let status = STATUSES.get(usize::from(script.byte() % 16)).copied().unwrap_or(200);
                self.hand(Input::BackendHead { status })
            }
            1 | 2 => self.hand(Input::BackendData(script.run())),
            3..=6 => {
                let fragment =
                    FRAGMENTS.get(usize::from(script.byte()) % FRAGMENTS.len()).copied().unwrap_or_default();
                let cut = usize::from(script.byte()) % (fragment.len() + 1);
                let (before, after) = fragment.split_at(cut);
                self.hand(Input::BackendData(before))?;
                self.hand(Input::BackendData(after))
            }
            7 => self.hand(Input::BackendEnd),
            8 => {
                let kind = KINDS.get(usize::from(script.byte() % 4)).copied().unwrap_or(FailureKind::Reset);
                self.hand(Input::BackendFailed(BackendFailure { kind, message: "fuzz failure".to_owned() }))
            }
            9 => self.hand(Input::ClientGone),
            10 => self.hand(Input::Shutdown),
            11 => {
                self.harness.advance(Duration::from_millis(4 * u64::from(script.byte())));
                self.hand(Input::Timeout)
            }
            12 => {
                self.harness.wake_at_deadline();
                self.check_after_step()
            }
            // The clock moves on while the runtime is busy elsewhere.
            13 => {
                self.harness.advance(Duration::from_millis(u64::from(script.byte())));
                Ok(())
            }
            // The client stops (or starts again) reading: stalls and a full
            // client buffer are reached.
            14 => {
                self.harness.auto_take = !self.harness.auto_take;
                self.hand(Input::Timeout)
            }
            _ => {
                let taken = usize::from(script.byte()) * 8;
                self.hand(Input::ClientTook(taken))
            }
        }
    }

    fn hand(&mut self, input: Input<'_>) -> Result<(), String> {
        if self.harness.outcome().is_none() && matches!(input, Input::BackendEnd | Input::BackendFailed(_)) {
            self.backend_sending = false;
        }
        self.harness.handle(input);
        self.check_after_step()
    }

    fn check_after_step(&self) -> Result<(), String> {
        let held = self.harness.stream().buffered_capacity();
        let Some(outcome) = self.harness.outcome() else {
            if held > self.bound {
                return Err(format!("a running stream holds {held} bytes, over {}", self.bound));
            }
            return Ok(());
        };
        if held != 0 {
            return Err(format!("a finished stream ({outcome:?}) still holds {held} bytes"));
        }
        // Only the upstream's own [DONE] lets a still-sending backend go uncancelled.
        if self.backend_sending && *outcome != Outcome::Completed && !self.harness.cancelled_backend() {
            return Err(format!(
                "the stream ended ({outcome:?}) with its backend still sending, uncancelled"
            ));
        }
        Ok(())
    }
}

/// What a stream's record says must match what its client saw: the error type
/// of its error event, and (for a completed content stream) its text.
fn check_recording(
    harness: &Harness,
    outcome: &Outcome,
    format: Format,
    max_text: usize,
) -> Result<(), String> {
    let recording = harness.stream().recording().ok_or("recording was asked for")?;
    let text = recording.text().ok_or("the text was asked for")?;
    if text.len() > max_text {
        return Err(format!("{} bytes of text kept past the cap of {max_text}", text.len()));
    }
    if harness.passthrough() {
        // The upstream's own events (its `event: error` too) pass unread.
        return Ok(());
    }
    let events = harness.client_events();
    let seen_error = events.iter().find_map(ClientEvent::error_type);
    let recorded_error = recording.error().map(|(error_type, _)| error_type);
    if seen_error.is_some() && seen_error != recorded_error {
        return Err(format!("the client saw error {seen_error:?}, the record says {recorded_error:?}"));
    }
    if matches!(outcome, Outcome::Failed(_)) != recorded_error.is_some() {
        return Err(format!("outcome {outcome:?} with recorded error {recorded_error:?}"));
    }
    if *outcome == Outcome::Completed && format == Format::Content {
        let sent: String = events
            .iter()
            .filter_map(|event| match event {
                ClientEvent::Content { content, .. } => Some(content.as_str()),
                _ => None,
            })
            .collect();
        let matches = if recording.text_truncated() { sent.starts_with(text) } else { sent == text };
        if !matches {
            return Err(format!("the client got {sent:?}, the record kept {text:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::FailureReason;

    const AFTER_200: u8 = 2;
    const FRAGMENT: u8 = 3;
    const CLIENT_GONE: u8 = 9;
    const WAKE: u8 = 12;

    #[test]
    fn a_mock_script_runs_to_done() {
        let mut script = vec![0; 9];
        script.extend_from_slice(&[2, b'u', b'7', 1, b'p']);
        assert_eq!(drive(&script), Ok((Outcome::Completed, false)));
    }

    #[test]
    fn upstream_chunks_and_done_complete_without_a_cancel() {
        let mut script = vec![AFTER_200];
        for fragment in 0..6 {
            script.extend_from_slice(&[FRAGMENT, fragment, 5]);
        }
        assert_eq!(drive(&script), Ok((Outcome::Completed, false)));
    }

    #[test]
    fn a_client_leaving_mid_answer_cancels_the_backend() {
        let script = [AFTER_200, FRAGMENT, 1, 0, CLIENT_GONE];
        assert_eq!(drive(&script), Ok((Outcome::ClientGone, true)));
    }

    #[test]
    fn a_silent_backend_times_out_and_is_cancelled() {
        let script = [AFTER_200, WAKE, WAKE, WAKE, WAKE];
        let (outcome, cancelled) = drive(&script).unwrap();
        assert!(matches!(outcome, Outcome::Failed(FailureReason::IdleTimeout)), "{outcome:?}");
        assert!(cancelled);
    }
}
