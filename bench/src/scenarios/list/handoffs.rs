//! Handoffs the module should never send, or sends with bad data: each is answered
//! as the contract says, and the daemon goes on serving the next good handoff.

use std::os::fd::AsFd;

use super::{expect_mock_stream, mock_daemon};
use crate::scenarios::Context;

/// The module's limit on handoff data.
const MAX_HANDOFF_BYTES: usize = 64 * 1024;

/// A handoff JSON object of exactly `len` bytes.
fn handoff_of_len(len: usize) -> String {
    let frame = r#"{"prompt":""}"#;
    let prompt = "x".repeat(len.saturating_sub(frame.len()));
    let data = format!(r#"{{"prompt":"{prompt}"}}"#);
    assert_eq!(data.len(), len);
    data
}

pub async fn invalid_json_gets_400(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    for data in [r#"{"prompt": "unterminated"#, "{prompt: 'single quotes'}", "not json at all", "{}}"] {
        let response = daemon.hand_off(data).await.read_to_end().await;
        let error = response.expect_error_response(400);
        assert!(!error.message.is_empty(), "a message saying what was wrong with {data:?}");
    }
    expect_mock_stream(&daemon, r#"{"prompt":"after invalid JSON"}"#).await;
    daemon.terminate().await;
}

pub async fn non_object_json_gets_400(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    for data in ["[1,2,3]", r#""just a string""#, "42", "true", "null"] {
        let response = daemon.hand_off(data).await.read_to_end().await;
        response.expect_error_response(400);
    }
    expect_mock_stream(&daemon, r#"{"prompt":"after non-objects"}"#).await;
    daemon.terminate().await;
}

pub async fn oversize_data_gets_400(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    // Exactly at the limit is fine.
    expect_mock_stream(&daemon, &handoff_of_len(MAX_HANDOFF_BYTES)).await;
    for len in [MAX_HANDOFF_BYTES + 1, 70_000, 200_000] {
        let response = daemon.hand_off(handoff_of_len(len)).await.read_to_end().await;
        response.expect_error_response(400);
    }
    expect_mock_stream(&daemon, r#"{"prompt":"after oversize data"}"#).await;
    daemon.terminate().await;
}

pub async fn extra_fds_are_closed_and_the_first_served(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    let (first, first_server) = cx.clients().open().await;
    let (extra, extra_server) = cx.clients().open().await;
    let servers = [first_server, extra_server];
    daemon.send_message(br#"{"prompt":"two fds"}"#, &[servers[0].as_fd(), servers[1].as_fd()]).await;
    drop(servers);

    let extra = extra.read_to_end().await;
    assert!(extra.bytes().is_empty(), "the extra fd is closed without a response: {:?}", extra.text());
    let served = first.read_to_end().await;
    served.expect_completed_stream();
    expect_mock_stream(&daemon, r#"{"prompt":"after two fds"}"#).await;
    daemon.terminate().await;
}

pub async fn message_without_fd_is_dropped(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    daemon.send_message(br#"{"prompt":"no fd attached"}"#, &[]).await;
    daemon.send_message(b"\0", &[]).await;
    expect_mock_stream(&daemon, r#"{"prompt":"after a message without fd"}"#).await;
    daemon.terminate().await;
}

pub async fn empty_data_and_lone_nul_mean_defaults(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    // As the module sends "no data": a single NUL byte.
    expect_mock_stream(&daemon, "").await;
    for data in [&b""[..], b"\0\0\0", b" \n"] {
        let (client, server) = cx.clients().open().await;
        daemon.send_message(data, &[server.as_fd()]).await;
        drop(server);
        let response = client.read_to_end().await;
        response.expect_completed_stream();
        assert_eq!(
            super::super::content_events(&response.events()),
            18,
            "defaults for {data:?}: {:?}",
            response.text()
        );
    }
    daemon.terminate().await;
}

pub async fn client_bytes_never_reset_the_response(cx: Context) {
    let daemon = mock_daemon(&cx, 5).start().await;
    let mut client = daemon.hand_off(r#"{"prompt":"a browser that keeps talking"}"#).await;
    // Bytes the daemon never reads as a request: a pipelined body, say.
    client.write_all(&vec![b'x'; 64 * 1024]).await;
    client.read_events(1).await;
    client.write_all(b"more bytes while the stream runs").await;
    let response = client.read_to_end().await;
    let events = response.expect_completed_stream();
    assert_eq!(
        crate::scenarios::content_events(&events),
        18,
        "the whole response arrived: {:?}",
        response.text()
    );
    daemon.terminate().await;
}

pub async fn wrong_field_types_get_400(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    for data in [
        r#"{"prompt":5}"#,
        r#"{"messages":"not a list"}"#,
        r#"{"max_tokens":"ten"}"#,
        r#"{"temperature":"hot"}"#,
    ] {
        let response = daemon.hand_off(data).await.read_to_end().await;
        let error = response.expect_error_response(400);
        assert!(!error.message.is_empty(), "a message naming the field of {data}");
    }
    expect_mock_stream(&daemon, r#"{"prompt":"after wrong types"}"#).await;
    daemon.terminate().await;
}

pub async fn silent_module_connection_does_not_stall_others(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    // A module that connects and then sends nothing.
    let silent = daemon.connect().await.unwrap_or_else(|e| panic!("connecting: {e}"));
    expect_mock_stream(&daemon, r#"{"prompt":"served while another connection is silent"}"#).await;
    drop(silent);
    expect_mock_stream(&daemon, r#"{"prompt":"and after it closed"}"#).await;
    daemon.terminate().await;
}

pub async fn bad_handoffs_over_sock_stream_get_400(cx: Context) {
    let daemon = mock_daemon(&cx, 1).stream_socket().start().await;
    for data in
        [String::from("{\"prompt\": nope"), String::from("[1]"), handoff_of_len(MAX_HANDOFF_BYTES + 1)]
    {
        let response = daemon.hand_off(&data).await.read_to_end().await;
        response.expect_error_response(400);
    }
    expect_mock_stream(&daemon, r#"{"prompt":"after bad SOCK_STREAM handoffs"}"#).await;
    daemon.terminate().await;
}
