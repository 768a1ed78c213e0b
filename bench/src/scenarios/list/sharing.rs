//! Many streams at once: HTTP/2 connections to the backend are shared up to the
//! server's stream limit, and a thousand concurrent handoffs all complete.

use std::sync::Arc;
use std::time::Duration;

use super::{
    expect_mock_stream, mock_daemon, one_worker, openai_daemon, run_cases, sole_owner, start_mock,
    start_mock_with, Case, Transport,
};
use crate::mockllm::{MockLlmConfig, Script};
use crate::scenarios::{content, Context, Daemon};

/// `count` concurrent handoffs of a plain prompt, each checked to complete with the
/// whole content of a `tokens`-chunk script.
fn completed_streams(daemon: &Arc<Daemon>, count: usize, expected_content: &str) -> Vec<Case> {
    (0..count)
        .map(|i| {
            let daemon = Arc::clone(daemon);
            let expected = expected_content.to_owned();
            let case: Case = (
                format!("stream {i}"),
                Box::pin(async move {
                    let data = serde_json::json!({ "prompt": format!("stream {i}") }).to_string();
                    let response = daemon.hand_off(data).await.read_to_end().await;
                    assert_eq!(content(&response.expect_completed_stream()), expected);
                }),
            );
            case
        })
        .collect()
}

pub async fn hundred_tls_streams_share_two_connections(cx: Context) {
    let (tokens, delay) = (20, Duration::from_millis(20));
    let mock = start_mock(Transport::Tls, tokens, delay).await;
    let daemon = Arc::new(one_worker(openai_daemon(&cx, &mock, Transport::Tls)).start().await);
    let expected = Script::new(tokens, delay, None, None).expected_content();
    run_cases(completed_streams(&daemon, 100, &expected)).await;

    let recorder = mock.recorder();
    assert_eq!(recorder.requests(), 100);
    let connections = recorder.connections_accepted();
    assert!(
        (1..=2).contains(&connections),
        "100 streams multiplexed on {connections} TLS connections, not ≤ 2"
    );
    sole_owner(daemon).terminate().await;
}

pub async fn three_hundred_streams_run_at_once_on_three_connections(cx: Context) {
    // Streams of 20 chunks 150 ms apart (3 s) overlap however slowly they are handed off.
    let (tokens, delay) = (20, Duration::from_millis(150));
    let config = MockLlmConfig { tokens, token_delay: delay, max_streams: 100, ..MockLlmConfig::default() };
    let mock = start_mock_with(Transport::H2c, config).await;
    let daemon = Arc::new(one_worker(openai_daemon(&cx, &mock, Transport::H2c)).start().await);
    let expected = Script::new(tokens, delay, None, None).expected_content();
    run_cases(completed_streams(&daemon, 300, &expected)).await;

    let recorder = mock.recorder();
    assert_eq!(recorder.requests(), 300);
    assert_eq!(
        recorder.max_streams_overall(),
        300,
        "all 300 streams were running at the backend at once (none queued in the daemon)"
    );
    assert_eq!(recorder.connections_accepted(), 3, "300 streams at 100 per connection need 3 connections");
    assert!(
        recorder.max_streams_per_connection() <= 100,
        "the server's SETTINGS_MAX_CONCURRENT_STREAMS holds"
    );
    sole_owner(daemon).terminate().await;
}

pub async fn thousand_concurrent_streams_complete(cx: Context) {
    let daemon = Arc::new(mock_daemon(&cx, 100).arg("--benchmark").start().await);
    let cases: Vec<Case> = (0..1000)
        .map(|i| {
            let daemon = Arc::clone(&daemon);
            let case: Case = (
                format!("stream {i}"),
                Box::pin(async move {
                    let data = serde_json::json!({ "prompt": format!("stream {i}"), "user_id": i });
                    expect_mock_stream(&daemon, &data.to_string()).await;
                }),
            );
            case
        })
        .collect();
    run_cases(cases).await;
    let mut daemon = sole_owner(daemon);
    daemon.signal_terminate();
    daemon.expect_clean_exit().await;

    // The daemon's own count on exit agrees.
    let summary = daemon.benchmark_summary();
    let count = |name: &str| summary.iter().find(|(n, _)| n == name).map(|(_, value)| *value);
    for (name, expected) in [("started", 1000), ("completed", 1000), ("failed", 0), ("client gone", 0)] {
        assert_eq!(count(name), Some(expected), "`{name}` in the --benchmark summary {summary:?}");
    }
    eprintln!("peak concurrent streams: {:?} of 1000", count("peak concurrent streams"));
}

pub async fn streams_per_connection_is_clamped_to_ten(cx: Context) {
    // 10 chunks 100 ms apart: 20 streams handed off together overlap.
    let (tokens, delay) = (10, Duration::from_millis(100));
    let mock = start_mock(Transport::H2c, tokens, delay).await;
    let command =
        one_worker(openai_daemon(&cx, &mock, Transport::H2c)).args(["--h2-streams-per-connection", "5"]);
    let daemon = Arc::new(command.start().await);
    let expected = Script::new(tokens, delay, None, None).expected_content();
    run_cases(completed_streams(&daemon, 20, &expected)).await;

    let recorder = mock.recorder();
    let per_connection = recorder.max_streams_per_connection();
    assert!(per_connection <= 10, "at most 10 streams per connection, saw {per_connection}");
    assert_eq!(recorder.max_streams_overall(), 20, "all 20 streams ran at once");
    assert_eq!(
        recorder.connections_accepted(),
        2,
        "5 is clamped to 10 streams per connection: 2 connections"
    );
    sole_owner(daemon).terminate().await;
}
