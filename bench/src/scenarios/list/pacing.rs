//! Time and pace: keep-alive comments fill silences, backend timeouts end streams
//! with an error event of type `timeout`, and a slow reader still gets every byte
//! without the daemon's memory growing with the answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{openai_daemon, start_mock, Transport};
use crate::mockllm::Script;
use crate::scenarios::{content, Context, ErrorObject, Event};

const TOKEN_DELAY: Duration = Duration::from_millis(2);

/// A timeout's error event: type `timeout`, the code naming which one, and a message
/// of our own.
fn expect_timeout(error: &ErrorObject, code: &str, response: &str) {
    assert_eq!(error.error_type, "timeout", "the error event's type: {response:?}");
    assert_eq!(error.code.as_deref(), Some(code), "the error event's code: {response:?}");
    assert!(!error.message.is_empty(), "the error says what timed out: {response:?}");
}

pub async fn keep_alive_comment_fills_upstream_silence(cx: Context) {
    let mock = start_mock(Transport::H2c, 5, TOKEN_DELAY).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--keep-alive", "1"]).start().await;
    let data = serde_json::json!({ "prompt": "Think first.", "test_pattern": "stall:2500" });
    let response = daemon.hand_off(data.to_string()).await.read_to_end().await;
    let events = response.expect_completed_stream();
    assert_eq!(
        events.first(),
        Some(&Event::KeepAlive),
        "a `: keep-alive` comment before the first event: {:?}",
        response.text()
    );
    let expected = Script::new(5, TOKEN_DELAY, None, Some("stall:2500")).expected_content();
    assert_eq!(content(&events), expected);
    daemon.terminate().await;
}

pub async fn first_byte_timeout_ends_stream_with_error(cx: Context) {
    let mock = start_mock(Transport::H2c, 5, TOKEN_DELAY).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--first-byte-timeout", "1"]).start().await;
    // The backend says nothing at all for 5 s; the daemon gives up after 1 s.
    let data = serde_json::json!({ "prompt": "Are you there?", "test_pattern": "stall-head:5000" });
    let response = daemon.hand_off(data.to_string()).await.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    assert_eq!(content(&events), "", "no content before the error: {:?}", response.text());
    expect_timeout(&error, "first_byte_timeout", &response.text());
    daemon.terminate().await;
}

pub async fn idle_timeout_ends_stream_with_error(cx: Context) {
    let mock = start_mock(Transport::H2c, 5, TOKEN_DELAY).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--idle-timeout", "1"]).start().await;
    // The body starts, then 5 s pass before each content chunk; the daemon waits 1 s.
    let data = serde_json::json!({ "prompt": "Slowly.", "test_pattern": "slow:5000" });
    let response = daemon.hand_off(data.to_string()).await.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    assert_eq!(content(&events), "", "{:?}", response.text());
    expect_timeout(&error, "idle_timeout", &response.text());
    daemon.terminate().await;
}

pub async fn total_timeout_ends_stream_with_error(cx: Context) {
    let mock = start_mock(Transport::H2c, 20, Duration::from_millis(300)).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--total-timeout", "1"]).start().await;
    // 20 chunks 300 ms apart would take 6 s; the stream may last 1 s in all.
    let response = daemon.hand_off(r#"{"prompt":"A long story."}"#).await.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    let expected = Script::new(20, Duration::from_millis(300), None, None).expected_content();
    let got = content(&events);
    assert!(got.len() < expected.len() && expected.starts_with(&got), "a cut prefix, not {got:?}");
    expect_timeout(&error, "total_timeout", &response.text());
    daemon.terminate().await;
}

pub async fn slow_reader_gets_every_byte(cx: Context) {
    // The daemon holds at most its per-stream buffer and the HTTP/2 windows for a slow
    // reader (a few hundred KiB; the first backend connection and allocator arenas add
    // about 1.6 MiB). The bound leaves room for noise, and the 8 MB answer held in
    // memory would break it.
    const RSS_GROWTH_BOUND: u64 = 8 * 1024 * 1024;
    const RSS_EVERY: Duration = Duration::from_millis(20);
    // 2000 chunks of 4 KiB (8 MB) with no pause: more than loopback socket buffers hold.
    let mock = start_mock(Transport::H2c, 2000, Duration::ZERO).await;
    let daemon = Arc::new(openai_daemon(&cx, &mock, Transport::H2c).start().await);
    let baseline = daemon.rss_bytes();
    let reading = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (daemon, reading) = (Arc::clone(&daemon), Arc::clone(&reading));
        tokio::spawn(async move {
            let mut peak = 0;
            // Bounded by the scenario's own reads; the count bound is a backstop.
            for _ in 0..10_000 {
                peak = peak.max(daemon.rss_bytes());
                if !reading.load(Ordering::SeqCst) {
                    break;
                }
                tokio::time::sleep(RSS_EVERY).await;
            }
            peak
        })
    };
    let data = serde_json::json!({ "prompt": "Everything at once.", "test_pattern": "long" });
    let mut client = daemon.hand_off(data.to_string()).await;
    // The browser takes its time: the daemon must hold back, not drop or reset.
    client.read_until("the response head", |bytes| bytes.windows(4).any(|w| w == b"\r\n\r\n")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let response = client.read_to_end().await;
    reading.store(false, Ordering::SeqCst);
    let peak = sampler.await.unwrap_or_else(|e| panic!("the RSS sampler failed: {e}"));
    let growth = peak.saturating_sub(baseline);
    eprintln!("slow reader: daemon RSS {baseline} bytes before, peak {peak} while streaming (+{growth})");
    let expected = Script::new(2000, Duration::ZERO, None, Some("long")).expected_content();
    let got = content(&response.expect_completed_stream());
    assert!(got == expected, "the content arrived whole: {} of {} bytes", got.len(), expected.len());
    assert!(
        growth < RSS_GROWTH_BOUND,
        "the daemon's RSS grew by {growth} bytes for one slow reader (bound {RSS_GROWTH_BOUND})"
    );
    super::sole_owner(daemon).terminate().await;
}
