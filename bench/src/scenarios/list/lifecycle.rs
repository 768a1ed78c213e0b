//! Starting and stopping: SIGTERM drains, a drain deadline ends streams with an error
//! event, stale sockets are replaced and live ones left alone, SOCK_STREAM works.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{expect_mock_stream, mock_daemon};
use crate::scenarios::daemon::{make_stale_socket, EXIT_PATIENCE};
use crate::scenarios::{content_events, Context};

/// How long a stopping daemon may take to remove its socket file.
const UNLINK_PATIENCE: Duration = Duration::from_secs(5);

pub async fn sigterm_lets_running_stream_finish(cx: Context) {
    let mut daemon = mock_daemon(&cx, 100).start().await;
    let mut running = daemon.hand_off(r#"{"prompt":"finish me"}"#).await;
    running.read_events(1).await;

    daemon.signal_terminate();
    let deadline = Instant::now() + UNLINK_PATIENCE;
    while std::fs::symlink_metadata(daemon.socket()).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the socket file is still there {UNLINK_PATIENCE:?} after SIGTERM"
        );
        sleep(Duration::from_millis(10)).await;
    }
    if let Ok(_connection) = daemon.connect().await {
        panic!("a new handoff connected after SIGTERM");
    }

    let response = running.read_to_end().await;
    let events = response.expect_completed_stream();
    assert_eq!(content_events(&events), 18, "the running stream finished: {:?}", response.text());
    daemon.expect_clean_exit().await;
}

pub async fn drain_timeout_ends_stream_with_error(cx: Context) {
    // 18 events 500 ms apart: 9 s, far beyond the 1 s drain deadline.
    let mut daemon = mock_daemon(&cx, 500).args(["--drain-timeout", "1"]).start().await;
    let mut running = daemon.hand_off(r#"{"prompt":"too long to wait for"}"#).await;
    running.read_events(1).await;

    daemon.signal_terminate();
    let response = running.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    assert_eq!(error.error_type, "server_shutdown", "{:?}", response.text());
    assert!(content_events(&events) < 18, "the stream was cut short: {:?}", response.text());
    daemon.expect_clean_exit().await;
}

pub async fn stale_socket_is_replaced(cx: Context) {
    let path = cx.scratch().path("d.sock");
    make_stale_socket(&path);
    let daemon = mock_daemon(&cx, 1).socket(&path).start().await;
    expect_mock_stream(&daemon, r#"{"prompt":"on a replaced socket"}"#).await;
    daemon.terminate().await;
}

pub async fn live_socket_is_not_taken_over(cx: Context) {
    let first = mock_daemon(&cx, 1).start().await;
    let mut second = mock_daemon(&cx, 1).spawn();
    let status = second.wait_exit(EXIT_PATIENCE).await;
    assert!(!status.success(), "a second daemon on a live socket exits non-zero, not {status}");
    let message = second.stderr();
    let path = first.socket().display().to_string();
    assert!(message.contains(&path), "the second daemon's message names the socket {path}: {message:?}");
    assert!(std::fs::symlink_metadata(first.socket()).is_ok(), "the live socket file is left alone");

    expect_mock_stream(&first, r#"{"prompt":"the first daemon still serves"}"#).await;
    first.terminate().await;
}

pub async fn stream_socket_type_handoff_works(cx: Context) {
    let daemon = mock_daemon(&cx, 1).stream_socket().start().await;
    expect_mock_stream(&daemon, r#"{"prompt":"over SOCK_STREAM"}"#).await;
    daemon.terminate().await;
}
