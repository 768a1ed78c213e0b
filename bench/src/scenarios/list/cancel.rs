//! A browser that goes away cancels its upstream stream at once, so the backend stops
//! spending tokens: RST_STREAM over HTTP/2, a closed connection over HTTP/1.1.

use std::time::Duration;

use super::{openai_daemon, start_mock, Transport};
use crate::mockllm::Counter;
use crate::scenarios::Context;

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
