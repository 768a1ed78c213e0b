//! A stream is bounded by its own client: a client that stops reading ends only its
//! own stream (after `--write-timeout`), never slows its neighbours on the same HTTP/2
//! connection, and gives its admission slot back at once; chunks that write nothing
//! to the client still release their flow-control credit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{one_worker, openai_daemon, start_mock_with, Transport};
use crate::mockllm::{Counter, MockLlmConfig, Script};
use crate::scenarios::{content, Client, Context, Daemon};

/// The stalled client's `SO_RCVBUF` (the kernel doubles it): a window of a few KiB.
/// Linux loopback then keeps freeing ~2 KiB of the sender's queue every second or
/// two while the window is closed; the daemon must not take that for a reader.
pub const STALLED_RECEIVE_BUFFER: u32 = 4096;
/// A `long` answer of 2,000 chunks of 4 KiB: about 8 MiB, far more than the stalled
/// client's kernel buffers, the daemon's 64 KiB per-stream buffer and the 64 KiB
/// HTTP/2 stream window can hold together.
const LONG_CHUNKS: u32 = 2000;
/// How long after its handoff the stalled stream has filled every buffer on its path.
const STALL_SETTLES: Duration = Duration::from_millis(300);
/// How long past its write timeout a stalled stream may take to be cancelled at the
/// backend (the daemon's timer, the RST_STREAM, mock-llm noticing it).
const CANCEL_SLACK: Duration = Duration::from_millis(1500);
/// How early a write timeout may fire, measured from our side of the handoff (the
/// daemon may take the handoff a moment before we note the time).
const CLOCK_SLACK: Duration = Duration::from_millis(50);
/// How long a stalled client's socket may stay open after its stream was ended.
const CLOSE_PATIENCE: Duration = Duration::from_secs(5);

/// Handoff data of the stream that is never read.
fn stalled_request() -> String {
    serde_json::json!({ "prompt": "an answer nobody reads", "test_pattern": "long" }).to_string()
}

/// After its stream was ended, the stalled client reads what the kernel still holds
/// for it: the connection closes (EOF, or a reset for the bytes never delivered)
/// within [`CLOSE_PATIENCE`], and the answer is not complete.
async fn expect_stalled_stream_closed(stalled: Client) {
    match stalled.try_read_to_end(CLOSE_PATIENCE).await {
        Ok(response) => assert!(
            !response.bytes().ends_with(b"data: [DONE]\n\n"),
            "the stalled stream was ended, not completed ({} bytes)",
            response.bytes().len()
        ),
        Err(failure) => assert!(
            failure.starts_with("reading the response failed"),
            "the stalled client's connection was not closed within {CLOSE_PATIENCE:?}: {}",
            failure.chars().take(300).collect::<String>()
        ),
    }
}

/// Waits for the stalled stream's upstream to be cancelled at mock-llm, at most
/// `write_timeout` + [`CANCEL_SLACK`] after `stalled_at`; returns when, after
/// `stalled_at`, it was seen.
async fn stalled_stream_cancelled(
    mock_recorder: &crate::mockllm::Recorder,
    stalled_at: Instant,
    write_timeout: Duration,
) -> Result<Duration, String> {
    let deadline = stalled_at + write_timeout + CANCEL_SLACK;
    let patience = deadline.saturating_duration_since(Instant::now());
    match mock_recorder.wait_for(Counter::StreamsCancelled, 1, patience).await {
        Ok(_) => Ok(stalled_at.elapsed()),
        Err(timeout) => Err(format!(
            "the stalled stream's upstream was not cancelled within {:?} of its handoff: {timeout}",
            write_timeout + CANCEL_SLACK
        )),
    }
}

/// A short stream handed off right after the stalled one ended: it must be admitted
/// (a 200 stream to its end) where `--max-connections` would refuse it if the
/// stalled stream still held its slot.
async fn slot_reusable(daemon: &Daemon) -> Result<(), String> {
    let data = serde_json::json!({ "prompt": "the freed slot", "max_tokens": 3 }).to_string();
    let response = daemon.hand_off(data).await.read_to_end().await;
    if response.status() != 200 {
        return Err(format!(
            "a handoff right after the stalled stream ended was refused: {:?}",
            response.text()
        ));
    }
    response.expect_completed_stream();
    Ok(())
}

pub async fn stalled_client_does_not_slow_ninety_nine_on_its_connection(cx: Context) {
    const FLOWING: usize = 99;
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    // Each flowing answer: 100 chunks 80 ms apart, so the backend takes 8 s, longer
    // than the stall lasts: the 99 still hold their slots when the stalled one ends.
    // Long enough that 5% (400 ms) is well above what a loaded CI machine adds to
    // a handoff, so the bound measures the stall, not the machine.
    const FLOW_CHUNKS: u32 = 100;
    const FLOW_DELAY_MS: u64 = 80;
    // The contract's bound for the flowing streams: 5% of the backend's own duration
    // plus a small absolute allowance (handoff, request, lingering close).
    const RELATIVE_SLACK: f64 = 0.05;
    const ABSOLUTE_SLACK: Duration = Duration::from_millis(100);
    // How long a flowing client waits for its end: twice the backend's duration tells
    // "slowed down" from "stuck" and still fails fast.
    const FLOWING_PATIENCE: Duration = Duration::from_secs(16);

    let pattern = format!("slow:{FLOW_DELAY_MS}");
    let backend_duration = Duration::from_millis(FLOW_DELAY_MS) * FLOW_CHUNKS;
    let bound = backend_duration.mul_f64(1.0 + RELATIVE_SLACK) + ABSOLUTE_SLACK;
    // mock-llm allows 100 streams per connection, as many as the daemon puts on one:
    // the stalled stream and the 99 share a single connection.
    let config = MockLlmConfig {
        tokens: LONG_CHUNKS,
        token_delay: Duration::ZERO,
        max_streams: 100,
        ..Default::default()
    };
    let mock = start_mock_with(Transport::H2c, config).await;
    let command = one_worker(openai_daemon(&cx, &mock, Transport::H2c)).args([
        "--max-connections",
        "100",
        "--write-timeout",
        "2",
        "--benchmark",
    ]);
    let daemon = Arc::new(command.start().await);
    let recorder = Arc::clone(mock.recorder());

    let stalled = daemon.hand_off_with_receive_buffer(stalled_request(), STALLED_RECEIVE_BUFFER).await;
    let stalled_at = Instant::now();
    if let Err(timeout) = recorder.wait_for(Counter::Requests, 1, Duration::from_secs(5)).await {
        panic!("the stalled stream's request never reached the backend: {timeout}");
    }
    tokio::time::sleep(STALL_SETTLES).await;

    let finished = Arc::new(AtomicUsize::new(0));
    let expected =
        Script::new(LONG_CHUNKS, Duration::ZERO, Some(FLOW_CHUNKS.into()), Some(&pattern)).expected_content();
    let flowing: Vec<_> = (0..FLOWING)
        .map(|i| {
            let (daemon, finished, expected) = (Arc::clone(&daemon), Arc::clone(&finished), expected.clone());
            let data = serde_json::json!({
                "prompt": format!("flowing {i}"),
                "max_tokens": FLOW_CHUNKS,
                "test_pattern": pattern,
            });
            tokio::spawn(async move {
                let client = daemon.hand_off(data.to_string()).await;
                let response = client.try_read_to_end(FLOWING_PATIENCE).await?;
                finished.fetch_add(1, Ordering::SeqCst);
                if content(&response.expect_completed_stream()) != expected {
                    return Err(format!("stream {i} did not get the whole answer"));
                }
                Ok::<Duration, String>(response.elapsed)
            })
        })
        .collect();

    // The stall ends after the write timeout; then the freed slot is used at once, the
    // stalled client's socket still open and unread.
    let cancelled = stalled_stream_cancelled(&recorder, stalled_at, WRITE_TIMEOUT).await;
    let flowing_when_cancelled = FLOWING - finished.load(Ordering::SeqCst);
    let connections_when_cancelled = recorder.connections_accepted();
    let shared_connection = recorder.max_streams_per_connection();
    let slot = match cancelled {
        Ok(_) => slot_reusable(&daemon).await,
        Err(_) => Err("not tried: the stalled stream was never ended".to_owned()),
    };

    let mut elapsed = Vec::new();
    let mut failures = Vec::new();
    for task in flowing {
        match task.await {
            Ok(Ok(took)) => elapsed.push(took),
            Ok(Err(failure)) => failures.push(failure),
            Err(panicked) => failures.push(format!("a flowing client failed: {panicked}")),
        }
    }
    // Only now: a stalled client that closed its socket would unblock a daemon that
    // never ends its stream, and hide what the 99 went through.
    if cancelled.is_ok() {
        expect_stalled_stream_closed(stalled).await;
    } else {
        drop(stalled);
    }
    let worst = elapsed.iter().max().copied();
    let ratio = |took: Duration| took.as_secs_f64() / backend_duration.as_secs_f64();
    // A failure's text quotes what the client received.
    let without_content = failures.iter().filter(|failure| !failure.contains("data: {")).count();
    eprintln!(
        "1 stalled + {FLOWING} flowing on one HTTP/2 connection: {} of {FLOWING} flowing streams \
         finished within {:?} ({without_content} got no content at all); worst {:?} = {} x the \
         backend's {backend_duration:?}; stalled stream's upstream \
         cancelled {cancelled:?} after its handoff (write timeout {WRITE_TIMEOUT:?}); \
         {flowing_when_cancelled} flowing then; a new handoff right after: {slot:?}; peak streams \
         on one backend connection {shared_connection}, connections {connections_when_cancelled}",
        elapsed.len(),
        FLOWING_PATIENCE,
        worst,
        worst.map_or("-".to_owned(), |took| format!("{:.3}", ratio(took))),
    );

    let summary_of_failures: Vec<String> =
        failures.iter().take(3).map(|f| f.chars().take(300).collect()).collect();
    assert!(
        failures.is_empty(),
        "{} of {FLOWING} flowing streams failed, e.g. {summary_of_failures:#?}",
        failures.len()
    );
    let slow: Vec<&Duration> = elapsed.iter().filter(|took| **took > bound).collect();
    assert!(
        slow.is_empty(),
        "{} of {FLOWING} flowing streams took longer than {bound:?} (the backend's {backend_duration:?} \
         + 5% + {ABSOLUTE_SLACK:?}): {slow:?}",
        slow.len()
    );
    let cancelled = cancelled.unwrap_or_else(|failure| panic!("{failure}"));
    assert!(
        cancelled + CLOCK_SLACK >= WRITE_TIMEOUT,
        "the stalled stream was ended after {cancelled:?}, before its write timeout {WRITE_TIMEOUT:?}"
    );
    slot.unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(
        flowing_when_cancelled, FLOWING,
        "the slot check means something only while the 99 hold their slots"
    );
    assert_eq!(shared_connection, 100, "the stalled stream and the 99 shared one backend connection");
    assert_eq!(connections_when_cancelled, 1, "one backend connection carried all 100 streams");

    let mut daemon = super::sole_owner(daemon);
    daemon.signal_terminate();
    daemon.expect_clean_exit().await;
    let summary = daemon.benchmark_summary();
    assert_eq!(daemon.summary_count("client stalled"), Some(1), "in the --benchmark summary {summary:?}");
    assert_eq!(daemon.summary_count("completed"), Some(100), "99 + the freed slot's stream: {summary:?}");
}

pub async fn stalled_client_ends_after_write_timeout_and_frees_its_slot(cx: Context) {
    // `--idle-timeout 1` is shorter than the stall: a backend held back by the
    // client's flow control is not idle, so the stream ends as stalled, not timed out.
    const WRITE_TIMEOUT: Duration = Duration::from_secs(3);
    let config = MockLlmConfig { tokens: LONG_CHUNKS, token_delay: Duration::ZERO, ..Default::default() };
    let mock = start_mock_with(Transport::H2c, config).await;
    let command = openai_daemon(&cx, &mock, Transport::H2c).args([
        "--max-connections",
        "1",
        "--write-timeout",
        "3",
        "--idle-timeout",
        "1",
        "--benchmark",
    ]);
    let mut daemon = command.start().await;
    let stalled = daemon.hand_off_with_receive_buffer(stalled_request(), STALLED_RECEIVE_BUFFER).await;
    let stalled_at = Instant::now();

    let cancelled = stalled_stream_cancelled(mock.recorder(), stalled_at, WRITE_TIMEOUT).await;
    let cancelled = cancelled.unwrap_or_else(|failure| panic!("{failure}"));
    eprintln!("stalled stream's upstream cancelled {cancelled:?} after its handoff (write timeout 3 s)");
    assert!(
        cancelled + CLOCK_SLACK >= WRITE_TIMEOUT,
        "the stalled stream was ended after {cancelled:?}, before its write timeout {WRITE_TIMEOUT:?} \
         (was the backend's idle timeout charged while it waited on the client?)"
    );
    // `--max-connections 1`: this is refused unless the stalled stream gave its slot back.
    slot_reusable(&daemon).await.unwrap_or_else(|failure| panic!("{failure}"));
    expect_stalled_stream_closed(stalled).await;
    assert_eq!(mock.recorder().streams_completed(), 1, "only the freed slot's stream ran to its end");

    daemon.signal_terminate();
    daemon.expect_clean_exit().await;
    let summary = daemon.benchmark_summary();
    for (name, expected) in [("client stalled", 1), ("completed", 1), ("failed", 0), ("client gone", 0)] {
        assert_eq!(daemon.summary_count(name), Some(expected), "`{name}` in the summary {summary:?}");
    }
}

pub async fn content_after_two_thousand_content_less_chunks_arrives_at_once(cx: Context) {
    // Role-only, `reasoning_content`, `tool_calls` and usage chunks (about 450 KB)
    // write nothing to the client, but the daemon consumed them: their flow-control
    // credit must go back without waiting for a client write (the next keep-alive
    // is 15 s away by default).
    const WITHIN: Duration = Duration::from_secs(1);
    let config = MockLlmConfig { tokens: 3, token_delay: Duration::ZERO, ..Default::default() };
    let mock = start_mock_with(Transport::H2c, config).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).start().await;
    let data =
        serde_json::json!({ "prompt": "Think, call tools, then answer.", "test_pattern": "empty:2000" });
    let mut client = daemon.hand_off(data.to_string()).await;
    // The backend sends everything back to back: the content follows the 2,000 chunks
    // at once, so it is due at the client right after the handoff.
    const FIRST_CONTENT: &[u8] = b"data: {\"content\":\"Lorem\"}";
    let arrival = client
        .try_read_until("the first content event", Duration::from_secs(5), |bytes| {
            bytes.windows(FIRST_CONTENT.len()).any(|w| w == FIRST_CONTENT)
        })
        .await;
    let took = client.since_handoff();
    eprintln!("content after 2,000 content-less chunks: {arrival:?} after {took:?}");
    if let Err(failure) = arrival {
        panic!("{}", failure.chars().take(400).collect::<String>());
    }
    assert!(took <= WITHIN, "the content arrived {took:?} after the handoff, not within {WITHIN:?}");
    let response = client.read_to_end().await;
    let expected = Script::new(3, Duration::ZERO, None, Some("empty:2000")).expected_content();
    assert_eq!(content(&response.expect_completed_stream()), expected);
    assert_eq!(mock.recorder().streams_completed(), 1);
    daemon.terminate().await;
}
