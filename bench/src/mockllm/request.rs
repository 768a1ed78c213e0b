//! From a received request to the reply it gets, the same for HTTP/1.1 and HTTP/2.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use super::render::{error_body, status_error_body, ChunkPrefix};
use super::script::{Ending, Script};

/// Request bodies above this get `413`.
pub const MAX_REQUEST_BODY: usize = 8 * 1024 * 1024;

/// Server-wide defaults for every stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamDefaults {
    pub tokens: u32,
    pub token_delay: Duration,
}

/// What the mock answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// `200` with an event stream played from `script`.
    /// `usage`: the request asked for `stream_options.include_usage`, so a
    /// usage chunk follows the finish chunk.
    Stream { script: Script, prefix: ChunkPrefix, usage: bool },
    /// A complete JSON error response.
    Error { status: u16, body: Bytes, head_delay: Duration },
    /// `200` with these events (each whole, in order), `delay` apart: an agent
    /// framework's own event stream, for passthrough backends.
    Events { events: Vec<Bytes>, delay: Duration },
}

/// The fields of a chat completion request the mock looks at.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: Option<String>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// An immediate JSON error response of OpenAI's `invalid_request_error` type.
pub(crate) fn error_reply(status: u16, message: &str, code: &str) -> Reply {
    let body = error_body(message, "invalid_request_error", code);
    Reply::Error { status, body, head_delay: Duration::ZERO }
}

/// The reply to request `number` (`chatcmpl-mock-<number>`).
pub(crate) fn decide(
    defaults: StreamDefaults,
    number: u64,
    method: &str,
    path: &str,
    pattern: Option<&str>,
    body: &[u8],
) -> Reply {
    let route = path.split('?').next().unwrap_or(path);
    if route.ends_with("/runs/stream") && method == "POST" {
        return agent_events(defaults, number, body);
    }
    if !route.ends_with("/chat/completions") {
        let message = format!("mock-llm: no route for {route}");
        return error_reply(404, &message, "not_found");
    }
    if method != "POST" {
        let message = format!("mock-llm: {route} takes POST, not {method}");
        return error_reply(405, &message, "method_not_allowed");
    }
    if body.len() > MAX_REQUEST_BODY {
        let message = format!("mock-llm: request body of {} bytes is over the limit", body.len());
        return error_reply(413, &message, "request_too_large");
    }
    let request: ChatRequest = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("mock-llm: request body is not a chat completion request: {e}");
            return error_reply(400, &message, "invalid_json");
        }
    };
    if request.stream != Some(true) {
        let message = "mock-llm only streams: the request needs \"stream\": true";
        return error_reply(400, message, "stream_required");
    }
    let max_tokens = request.max_completion_tokens.or(request.max_tokens);
    let script = Script::new(defaults.tokens, defaults.token_delay, max_tokens, pattern);
    if let Ending::Status(status) = script.ending {
        return Reply::Error { status, body: status_error_body(status), head_delay: script.head_delay };
    }
    let prefix = ChunkPrefix::new(number, request.model.as_deref().unwrap_or("mock"));
    let usage = request.stream_options.and_then(|options| options.include_usage) == Some(true);
    Reply::Stream { script, prefix, usage }
}

/// What a LangGraph-like `/runs/stream` sends: `metadata` with the run id, a
/// comment, `tokens` `values` events (ids, two `data` lines each, CRLF on the
/// last), then `end`. The request must be a JSON object; it is echoed in
/// `metadata` as `input` so a test sees it arrived as given.
fn agent_events(defaults: StreamDefaults, number: u64, body: &[u8]) -> Reply {
    let Ok(input) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) else {
        return error_reply(400, "mock-llm: a run takes a JSON object", "invalid_json");
    };
    let input = serde_json::Value::Object(input);
    let mut events = vec![
        Bytes::from(format!(
            "event: metadata\nid: run-{number}\ndata: {{\"run_id\":\"run-{number}\",\"input\":{input}}}\n\n"
        )),
        Bytes::from_static(b": heartbeat\n\n"),
    ];
    for step in 0..defaults.tokens {
        events.push(Bytes::from(format!(
            "event: values\nid: {step}\ndata: {{\"step\":{step},\ndata: \"text\":\"t{step}\"}}\r\n\r\n"
        )));
    }
    events.push(Bytes::from_static(b"event: end\ndata: null\n\n"));
    Reply::Events { events, delay: defaults.token_delay }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: StreamDefaults = StreamDefaults { tokens: 20, token_delay: Duration::from_millis(1) };
    const BODY: &[u8] = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;

    fn status(reply: &Reply) -> u16 {
        match reply {
            Reply::Stream { .. } => 200,
            Reply::Error { status, .. } => *status,
            Reply::Events { .. } => 200,
        }
    }

    #[test]
    fn chat_completions_on_any_prefix_streams() {
        for path in ["/v1/chat/completions", "/chat/completions", "/openai/v1/chat/completions?x=1"] {
            assert_eq!(status(&decide(DEFAULTS, 1, "POST", path, None, BODY)), 200, "{path}");
        }
    }

    #[test]
    fn other_requests_get_json_errors() {
        assert_eq!(status(&decide(DEFAULTS, 1, "POST", "/v1/completions", None, BODY)), 404);
        assert_eq!(status(&decide(DEFAULTS, 1, "GET", "/v1/chat/completions", None, BODY)), 405);
        assert_eq!(status(&decide(DEFAULTS, 1, "POST", "/v1/chat/completions", None, b"{")), 400);
        let not_streaming = br#"{"model":"m","messages":[]}"#;
        assert_eq!(status(&decide(DEFAULTS, 1, "POST", "/v1/chat/completions", None, not_streaming)), 400);
        let status_pattern = decide(DEFAULTS, 1, "POST", "/v1/chat/completions", Some("status:503"), BODY);
        assert_eq!(status(&status_pattern), 503);
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let body = br#"{"stream":true,"max_tokens":9,"max_completion_tokens":3}"#;
        match decide(DEFAULTS, 1, "POST", "/v1/chat/completions", None, body) {
            Reply::Stream { script, .. } => assert_eq!(script.content_chunks, 3),
            other => panic!("expected a stream, got {other:?}"),
        }
    }
}
