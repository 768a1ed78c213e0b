//! The built-in mock backend: the exact head, 18 indexed events paced by `--delay`,
//! `[DONE]`, EOF; the handoff's user id, prompt and response headers.

use std::time::Duration;

use super::{expect_mock_stream, mock_daemon};
use crate::scenarios::{Context, Event, SSE_HEAD};

/// Longer than the 50 characters the mock echoes, with a quote and non-ASCII text.
const PROMPT: &str =
    "Why is the sky blue at noon but red at sunset? Explain \"scattering\" in a few words, bitte schön.";

pub async fn mock_stream_is_head_eighteen_indexed_events_and_done(cx: Context) {
    let daemon = mock_daemon(&cx, 100).start().await;
    let data = serde_json::json!({ "prompt": PROMPT, "user_id": "user-4711" }).to_string();
    let response = daemon.hand_off(data).await.read_to_end().await;

    let events = response.expect_completed_stream();
    assert_eq!(events.len(), 19, "18 content events and [DONE], nothing else: {:?}", response.text());
    for (i, event) in events.iter().take(18).enumerate() {
        match event {
            Event::Indexed { content, index } => {
                assert_eq!(*index, i as u64, "event {i} of {:?}", response.text());
                assert!(!content.is_empty(), "event {i} has content");
            }
            other => panic!("event {i} is {other:?}, not an indexed content event"),
        }
    }
    let text_of = |i: usize| match events.get(i) {
        Some(Event::Indexed { content, .. }) => content.clone(),
        _ => String::new(),
    };
    assert!(text_of(1).contains("user-4711"), "the user id in {:?}", text_of(1));
    let echoed: String = PROMPT.chars().take(50).collect();
    assert!(text_of(2).contains(&echoed), "the prompt's first 50 characters in {:?}", text_of(2));
    assert!(!text_of(2).contains(PROMPT), "the prompt is cut to 50 characters: {:?}", text_of(2));
    // 18 events spaced by 100 ms cannot all arrive at once: the last is due at 1.8 s.
    assert!(
        response.elapsed >= Duration::from_millis(1700),
        "18 events 100 ms apart arrived in {:?}",
        response.elapsed
    );
    daemon.terminate().await;
}

pub async fn response_headers_join_the_head_in_order(cx: Context) {
    let daemon = mock_daemon(&cx, 5).start().await;
    // Written by hand: the order of the object's members is what is under test.
    let data = concat!(
        r#"{"prompt":"headers","response_headers":{"#,
        r#""X-Request-Id":"req-42","#,
        r#""Bad Header":"space in the name","#,
        r#""Set-Cookie":"session=abc; Path=/","#,
        r#""Content-Length":"99","#,
        r#""X-Injected":"a\r\nEvil: 1","#,
        r#""Cache-Control":"public","#,
        r#""Connection":"keep-alive","#,
        r#""Proxy-Authenticate":"Basic","#,
        r#""X-Trace":"t-1""#,
        r#"}}"#
    );
    let response = daemon.hand_off(data).await.read_to_end().await;
    let expected_head = format!(
        "{}X-Request-Id: req-42\r\nSet-Cookie: session=abc; Path=/\r\nX-Trace: t-1\r\n\r\n",
        SSE_HEAD.strip_suffix("\r\n").unwrap_or(SSE_HEAD)
    );
    response.expect_stream_head(&expected_head);
    let events = response.events();
    assert_eq!(events.last(), Some(&Event::Done), "{:?}", response.text());

    // Invalid headers are dropped, not fatal: the next plain handoff is served too.
    expect_mock_stream(&daemon, r#"{"prompt":"after headers"}"#).await;
    daemon.terminate().await;
}

pub async fn php_escaped_handoff_is_decoded(cx: Context) {
    let daemon = mock_daemon(&cx, 1).start().await;
    // PHP's json_encode escapes `/` and non-ASCII by default.
    let data = r#"{"prompt":"caf\u00e9 \/ cr\u00e8me \ud83d\ude00","user_id":"\u00fcser\/7"}"#;
    let events = expect_mock_stream(&daemon, data).await;
    let text_of = |i: usize| match events.get(i) {
        Some(Event::Indexed { content, .. }) => content.clone(),
        _ => String::new(),
    };
    assert!(text_of(1).contains("üser/7"), "the decoded user id in {:?}", text_of(1));
    assert!(text_of(2).contains("café / crème 😀"), "the decoded prompt in {:?}", text_of(2));
    daemon.terminate().await;
}
