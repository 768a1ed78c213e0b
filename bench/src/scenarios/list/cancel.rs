//! A browser that goes away cancels its upstream stream at once, so the backend stops
//! spending tokens: RST_STREAM over HTTP/2, a closed connection over HTTP/1.1.

use std::time::Duration;

use tokio::time::sleep;

use super::{mock_daemon, openai_daemon, start_mock, Transport};
use crate::mockllm::Counter;
use crate::scenarios::{Close, Context, Daemon};

/// The contract's bound from the client's close to the backend seeing the cancel.
const CANCEL_WITHIN: Duration = Duration::from_secs(1);

pub async fn client_disconnect_cancels_upstream_over_h2c(cx: Context) {
    disconnect_cancels_upstream(cx, Transport::H2c).await;
}

pub async fn client_disconnect_cancels_upstream_over_tls(cx: Context) {
    disconnect_cancels_upstream(cx, Transport::Tls).await;
}

pub async fn client_disconnect_cancels_upstream_over_http1(cx: Context) {
    disconnect_cancels_upstream(cx, Transport::Http1).await;
}

async fn disconnect_cancels_upstream(cx: Context, transport: Transport) {
    // 200 chunks 25 ms apart: the upstream would run for 5 s if nobody stopped it.
    let mock = start_mock(transport, 200, Duration::from_millis(25)).await;
    let daemon = openai_daemon(&cx, &mock, transport).start().await;
    let mut client = daemon.hand_off(r#"{"prompt":"a long answer, please"}"#).await;
    client.read_events(2).await;
    let recorder = mock.recorder();
    assert_eq!(recorder.streams_cancelled(), 0, "nothing was cancelled before the client left");

    drop(client);
    if let Err(timeout) = recorder.wait_for(Counter::StreamsCancelled, 1, CANCEL_WITHIN).await {
        panic!(
            "the backend stream was not cancelled within {CANCEL_WITHIN:?} of the client leaving: {timeout}"
        );
    }
    assert_eq!(recorder.streams_completed(), 0, "the upstream stream did not run to its end");

    // The daemon carries on: a short stream on the same backend completes.
    let data = r#"{"prompt":"short, please","max_tokens":3}"#;
    daemon.hand_off(data).await.read_to_end().await.expect_completed_stream();
    daemon.terminate().await;
}

pub async fn clients_gone_at_once_leave_no_upstream_streams(cx: Context) {
    let mock = start_mock(Transport::H2c, 200, Duration::from_millis(25)).await;
    let daemon = openai_daemon(&cx, &mock, Transport::H2c).start().await;
    for i in 0..20 {
        let client = daemon.hand_off(format!(r#"{{"prompt":"gone {i}"}}"#)).await;
        drop(client);
    }
    // Handoffs are taken in order: once a later stream has run to its end, the
    // daemon has seen every earlier client leave.
    let data = r#"{"prompt":"still here","max_tokens":3}"#;
    daemon.hand_off(data).await.read_to_end().await.expect_completed_stream();

    let recorder = mock.recorder();
    if let Err(timeout) =
        recorder.wait_until(Counter::StreamsActive, |active| active == 0, CANCEL_WITHIN).await
    {
        panic!("upstream streams of departed clients still running after {CANCEL_WITHIN:?}: {timeout}");
    }
    assert_eq!(recorder.streams_completed(), 1, "only the last stream ran to its end");
    assert_eq!(
        recorder.streams_cancelled() + 1,
        recorder.requests(),
        "every request of a departed client was cancelled"
    );
    daemon.terminate().await;
}

/// The browser reset its connection before the handoff, so even the daemon's first
/// write (the head) fails: that failure, like any later one, ends the stream.
pub async fn client_closed_before_handoff_cancels_upstream(cx: Context) {
    // 200 chunks 25 ms apart: 5 s of tokens for nobody if the daemon does not notice.
    let mock = start_mock(Transport::H2c, 200, Duration::from_millis(25)).await;
    let mut daemon = openai_daemon(&cx, &mock, Transport::H2c).arg("--benchmark").start().await;
    daemon.hand_off_closed(r#"{"prompt":"nobody is listening"}"#, Close::Reset).await;
    let recorder = mock.recorder();
    // A daemon may also notice before it asks the backend at all; then nothing runs.
    let cancelled = recorder.wait_for(Counter::StreamsCancelled, 1, CANCEL_WITHIN).await;
    eprintln!(
        "client reset before its handoff: upstream cancelled: {cancelled:?}, {} requests",
        recorder.requests()
    );
    if let Err(timeout) = cancelled {
        let requests = recorder.requests();
        assert!(
            requests == 0,
            "the backend stream of a client reset before its handoff was not cancelled within \
             {CANCEL_WITHIN:?} ({requests} requests reached the backend): {timeout}"
        );
    }

    daemon.signal_terminate();
    daemon.expect_clean_exit().await;
    assert_eq!(recorder.streams_completed(), 0, "the upstream did not run to its end");
    assert_eq!(recorder.streams_cancelled(), recorder.requests(), "every request it made was cancelled");
    expect_client_gone(&daemon);
}

pub async fn client_closed_before_handoff_is_gone_with_the_mock_backend(cx: Context) {
    // 18 events 50 ms apart: the stream would complete after 0.9 s.
    let mut daemon = mock_daemon(&cx, 50).arg("--benchmark").start().await;
    daemon.hand_off_closed(r#"{"prompt":"nobody is listening"}"#, Close::Reset).await;
    // Nothing outside the daemon sees this stream end; wait past the time it would have
    // completed, so a daemon that missed the close has counted it completed.
    sleep(Duration::from_millis(1500)).await;
    daemon.signal_terminate();
    daemon.expect_clean_exit().await;
    expect_client_gone(&daemon);
}

/// The `--benchmark` summary of a daemon whose only stream's client left first.
fn expect_client_gone(daemon: &Daemon) {
    let summary = daemon.benchmark_summary();
    for (name, expected) in [("client gone", 1), ("completed", 0)] {
        assert_eq!(daemon.summary_count(name), Some(expected), "`{name}` in the summary {summary:?}");
    }
}
