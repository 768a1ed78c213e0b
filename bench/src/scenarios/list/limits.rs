//! `--max-connections`: streams beyond the limit get a 503 the browser can retry.

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
