//! `--max-connections`: streams beyond the limit get a 503 the browser can retry;
//! `--max-streams-per-user` (and a backend's `max_streams_per_user`): a user's
//! streams beyond its limit get a 429.

use super::{expect_mock_stream, mock_daemon};
use crate::scenarios::Context;

pub async fn third_stream_over_max_connections_gets_503(cx: Context) {
    let daemon = mock_daemon(&cx, 100).args(["--max-connections", "2"]).start().await;
    let mut first = daemon.hand_off(r#"{"prompt":"first"}"#).await;
    let mut second = daemon.hand_off(r#"{"prompt":"second"}"#).await;
    // An event on each means both were admitted and are streaming.
    first.read_events(1).await;
    second.read_events(1).await;

    let refused = daemon.hand_off(r#"{"prompt":"third"}"#).await.read_to_end().await;
    let error = refused.expect_error_response(503);
    assert!(!error.message.is_empty());
    let retry_after =
        refused.header("Retry-After").unwrap_or_else(|| panic!("no Retry-After: {:?}", refused.text()));
    assert!(retry_after.parse::<u32>().is_ok(), "Retry-After in seconds, not {retry_after:?}");

    for running in [first, second] {
        let response = running.read_to_end().await;
        let events = response.expect_completed_stream();
        assert_eq!(crate::scenarios::content_events(&events), 18, "{:?}", response.text());
    }
    // Slots free up when streams end.
    expect_mock_stream(&daemon, r#"{"prompt":"after the first two"}"#).await;
    daemon.terminate().await;
}

/// The 429 a user over its per-user limit gets: `Retry-After: 1` and OpenAI's
/// `rate_limit_exceeded` error.
async fn expect_user_limit_refusal(daemon: &crate::scenarios::Daemon, data: &str) {
    let refused = daemon.hand_off(data).await.read_to_end().await;
    let error = refused.expect_error_response(429);
    assert_eq!(error.error_type, "rate_limit_exceeded", "{:?}", refused.text());
    assert_eq!(error.code.as_deref(), Some("too_many_streams"), "{:?}", refused.text());
    assert!(!error.message.is_empty());
    assert_eq!(refused.header("Retry-After").as_deref(), Some("1"), "{:?}", refused.text());
}

/// `--max-streams-per-user 2`: a user's third concurrent stream gets 429 while
/// another user is served, and the user's slots come back as its streams end.
pub async fn per_user_limit_refuses_a_users_third_stream_with_429_and_serves_others(cx: Context) {
    let daemon = mock_daemon(&cx, 100).args(["--max-streams-per-user", "2"]).start().await;
    let mut first = daemon.hand_off(r#"{"prompt":"first","user_id":"u1"}"#).await;
    let mut second = daemon.hand_off(r#"{"prompt":"second","user_id":"u1"}"#).await;
    // An event on each means both were admitted and hold u1's two slots.
    first.read_events(1).await;
    second.read_events(1).await;

    expect_user_limit_refusal(&daemon, r#"{"prompt":"third","user_id":"u1"}"#).await;
    // Another user, and a handoff without user_id, are not held back by u1.
    expect_mock_stream(&daemon, r#"{"prompt":"other user","user_id":"u2"}"#).await;
    expect_mock_stream(&daemon, r#"{"prompt":"nobody"}"#).await;

    for running in [first, second] {
        let response = running.read_to_end().await;
        let events = response.expect_completed_stream();
        assert_eq!(crate::scenarios::content_events(&events), 18, "{:?}", response.text());
    }
    // u1's streams ended: its slots are free again.
    expect_mock_stream(&daemon, r#"{"prompt":"after the first two","user_id":"u1"}"#).await;
    daemon.terminate().await;
}

/// The config file's top-level `max_streams_per_user` and a backend table's own
/// `max_streams_per_user`: the backend's limit counts only its streams, the
/// top-level one every stream of the user.
pub async fn per_user_limit_of_a_backend_counts_only_its_streams(cx: Context) {
    let config = "max_streams_per_user = 2\n\
                  \n\
                  [backends.slow]\n\
                  kind = \"mock\"\n\
                  max_streams_per_user = 1\n";
    let file = cx.scratch().write_file("user-limits.toml", config.as_bytes());
    let daemon = mock_daemon(&cx, 100).arg("--config").arg(&file).start().await;
    let mut on_slow = daemon.hand_off(r#"{"prompt":"a","user_id":"u1","backend":"slow"}"#).await;
    on_slow.read_events(1).await;
    expect_user_limit_refusal(&daemon, r#"{"prompt":"b","user_id":"u1","backend":"slow"}"#).await;
    // Another user on the same backend has its own count.
    let mut other = daemon.hand_off(r#"{"prompt":"c","user_id":"u2","backend":"slow"}"#).await;
    other.read_events(1).await;
    // The default backend has no limit of its own: u1's second stream is served
    // there, and that is all the top-level limit of 2 allows.
    let mut on_default = daemon.hand_off(r#"{"prompt":"d","user_id":"u1"}"#).await;
    on_default.read_events(1).await;
    expect_user_limit_refusal(&daemon, r#"{"prompt":"e","user_id":"u1"}"#).await;

    for running in [on_slow, other, on_default] {
        let response = running.read_to_end().await;
        response.expect_completed_stream();
    }
    expect_mock_stream(&daemon, r#"{"prompt":"f","user_id":"u1","backend":"slow"}"#).await;
    daemon.terminate().await;
}

/// `--user-token-budget 30`: mock-llm reports 15 tokens per 6-token stream
/// (`PROMPT_TOKENS` + 6), so two streams spend a user's budget; its third
/// handoff gets 429 with `Retry-After` until the next window, another user is
/// served, and a user's budget is its own.
pub async fn a_user_past_its_token_budget_gets_429_and_others_are_served(cx: Context) {
    use super::{openai_daemon, start_mock, Transport};
    let mock = start_mock(Transport::H2c, 6, std::time::Duration::from_millis(1)).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c)
        .args(["--user-token-budget", "30", "--user-token-window", "3600"])
        .start()
        .await;
    assert_eq!(crate::mockllm::PROMPT_TOKENS + 6, 15, "each stream spends 15 tokens");
    for prompt in ["first", "second"] {
        let handoff = format!(r#"{{"prompt":"{prompt}","user_id":"u1"}}"#);
        daemon.hand_off(handoff).await.read_to_end().await.expect_completed_stream();
    }
    let refused = daemon.hand_off(r#"{"prompt":"third","user_id":"u1"}"#).await.read_to_end().await;
    let error = refused.expect_error_response(429);
    assert_eq!(error.error_type, "rate_limit_exceeded");
    assert_eq!(error.code.as_deref(), Some("token_budget_exhausted"));
    let retry_after: u32 = refused
        .header("Retry-After")
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After: {:?}", refused.text()));
    assert!((1..=3600).contains(&retry_after), "until the next window: {retry_after}");
    daemon
        .hand_off(r#"{"prompt":"other","user_id":"u2"}"#)
        .await
        .read_to_end()
        .await
        .expect_completed_stream();
    daemon.hand_off(r#"{"prompt":"anonymous"}"#).await.read_to_end().await.expect_completed_stream();
    assert_eq!(mock.recorder().requests_seen().len(), 4, "the refused handoff never reached the backend");
    daemon.terminate().await;
}
