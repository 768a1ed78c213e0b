//! Bytes of the response bodies. Each stream renders its constant chunk prefix once;
//! a chunk is then three memcpys into a reused buffer, never a serde call.

use bytes::{BufMut, Bytes, BytesMut};

use super::tokens::Token;

/// The prompt tokens every final usage chunk reports.
pub const PROMPT_TOKENS: u64 = 9;
/// Of [`PROMPT_TOKENS`], how many the usage chunk says were cached.
pub const CACHED_TOKENS: u64 = 3;

/// The end of the event stream.
pub const DONE_EVENT: &[u8] = b"data: [DONE]\n\n";

/// The `error-event` pattern's mid-stream error.
pub const ERROR_EVENT: &[u8] =
    b"data: {\"error\":{\"message\":\"mock-llm error event (X-Test-Pattern: error-event)\",\
\"type\":\"server_error\",\"code\":\"mock_error_event\"}}\n\n";

const ROLE_DELTA: &[u8] = b"{\"role\":\"assistant\"}";
const REASONING_DELTA: &[u8] = b"{\"reasoning_content\":\"Weighing the question first.\"}";
const TOOL_CALL_OPEN: &[u8] = b"{\"tool_calls\":[{\"index\":0,\"id\":\"call_mock_";
const TOOL_CALL_CLOSE: &[u8] =
    b"\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":1}\"}}]}";
const USAGE_CHOICES: &[u8] =
    b",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":0,\"total_tokens\":9}}\n\n";
/// What follows the model name in every chunk that has a choice.
const CHOICE_OPEN: &[u8] = b",\"choices\":[{\"index\":0,\"delta\":";
const CONTENT_OPEN: &[u8] = b"{\"content\":\"";
const CONTENT_CLOSE: &[u8] = b"\"}";
const NOT_FINISHED: &[u8] = b",\"finish_reason\":null}]}\n\n";
const FINISH_OPEN: &[u8] = b"{},\"finish_reason\":\"";
const FINISH_CLOSE: &[u8] = b"\"}]}\n\n";

/// `data: {"id":..,"object":"chat.completion.chunk","created":0,"model":..,"choices":[{"index":0,"delta":`
/// for one stream; every chunk with a choice starts with it, and every chunk starts
/// with its part up to the model (`head_len` bytes).
#[derive(Debug, Clone)]
pub struct ChunkPrefix {
    bytes: Bytes,
    head_len: usize,
}

/// The kinds of chunk that carry no content, as real backends send them: OpenAI's
/// role-only first delta and its usage chunk (`stream_options.include_usage`), the
/// `reasoning_content` deltas of reasoning models, and tool-call deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyChunk {
    Role,
    Reasoning,
    ToolCall,
    Usage,
}

impl EmptyChunk {
    /// Content-less chunk number `index` of a stream: the four kinds in turn.
    pub fn nth(index: u32) -> EmptyChunk {
        match index % 4 {
            0 => EmptyChunk::Role,
            1 => EmptyChunk::Reasoning,
            2 => EmptyChunk::ToolCall,
            _ => EmptyChunk::Usage,
        }
    }
}

impl ChunkPrefix {
    /// `number` becomes the id `chatcmpl-mock-<number>`; `model` is echoed from the request.
    pub fn new(number: u64, model: &str) -> ChunkPrefix {
        // Serializing a str cannot fail.
        let model = serde_json::to_string(model).unwrap_or_else(|_| String::from("\"mock\""));
        let mut prefix = BytesMut::with_capacity(128 + model.len());
        prefix.put_slice(b"data: {\"id\":\"chatcmpl-mock-");
        prefix.put_slice(number.to_string().as_bytes());
        prefix.put_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":");
        prefix.put_slice(model.as_bytes());
        let head_len = prefix.len();
        prefix.put_slice(CHOICE_OPEN);
        ChunkPrefix { bytes: prefix.freeze(), head_len }
    }

    /// The first chunk: `delta: {"role":"assistant"}`.
    pub fn render_role(&self, out: &mut BytesMut) {
        self.render(out, &[ROLE_DELTA, NOT_FINISHED]);
    }

    /// A content chunk carrying `token`.
    pub fn render_content(&self, token: Token, out: &mut BytesMut) {
        self.render(out, &[CONTENT_OPEN, token.json.as_bytes(), CONTENT_CLOSE, NOT_FINISHED]);
    }

    /// The last chunk: empty delta and `finish_reason` (a plain name, see `script`).
    pub fn render_finish(&self, reason: &str, out: &mut BytesMut) {
        self.render(out, &[FINISH_OPEN, reason.as_bytes(), FINISH_CLOSE]);
    }

    /// A chunk without content: see [`EmptyChunk`]; `index` numbers tool calls.
    pub fn render_empty(&self, kind: EmptyChunk, index: u32, out: &mut BytesMut) {
        match kind {
            EmptyChunk::Role => self.render_role(out),
            EmptyChunk::Reasoning => self.render(out, &[REASONING_DELTA, NOT_FINISHED]),
            EmptyChunk::ToolCall => {
                let id = index.to_string();
                self.render(out, &[TOOL_CALL_OPEN, id.as_bytes(), TOOL_CALL_CLOSE, NOT_FINISHED]);
            }
            EmptyChunk::Usage => {
                let head = self.bytes.get(..self.head_len).unwrap_or_default();
                out.reserve(head.len() + USAGE_CHOICES.len());
                out.put_slice(head);
                out.put_slice(USAGE_CHOICES);
            }
        }
    }

    /// The final usage chunk (`stream_options.include_usage`): no choices, and
    /// counts a test can predict: [`PROMPT_TOKENS`] (of which [`CACHED_TOKENS`]
    /// cached), one completion token per content chunk sent.
    pub fn render_usage(&self, completion_tokens: u32, out: &mut BytesMut) {
        let usage = format!(
            ",\"choices\":[],\"usage\":{{\"prompt_tokens\":{PROMPT_TOKENS},\"completion_tokens\":{completion_tokens},\
\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{CACHED_TOKENS}}},\
\"completion_tokens_details\":{{\"reasoning_tokens\":0}}}}}}\n\n",
            PROMPT_TOKENS + u64::from(completion_tokens)
        );
        let head = self.bytes.get(..self.head_len).unwrap_or_default();
        out.reserve(head.len() + usage.len());
        out.put_slice(head);
        out.put_slice(usage.as_bytes());
    }

    fn render(&self, out: &mut BytesMut, parts: &[&[u8]]) {
        out.reserve(self.bytes.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        out.put_slice(&self.bytes);
        for part in parts {
            out.put_slice(part);
        }
    }
}

/// An OpenAI-style error body: `{"error":{"message":..,"type":..,"code":..}}`.
pub fn error_body(message: &str, kind: &str, code: &str) -> Bytes {
    let body = serde_json::json!({ "error": { "message": message, "type": kind, "code": code } });
    Bytes::from(body.to_string())
}

/// The error body for `status:CODE`, with the type and code OpenAI uses for that status.
pub fn status_error_body(status: u16) -> Bytes {
    let (kind, code) = match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("invalid_request_error", "unsupported_country_region_territory"),
        404 => ("invalid_request_error", "model_not_found"),
        429 => ("requests", "rate_limit_exceeded"),
        500..=599 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "mock_status"),
    };
    error_body(&format!("mock-llm status {status} (X-Test-Pattern: status:{status})"), kind, code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mockllm::tokens::ContentKind;
    use serde_json::Value;

    fn event_json(event: &[u8]) -> Value {
        let text = std::str::from_utf8(event).expect("utf-8");
        let data = text.strip_prefix("data: ").and_then(|t| t.strip_suffix("\n\n")).expect("one data event");
        serde_json::from_str(data).expect("chunk is JSON")
    }

    #[test]
    fn chunks_are_openai_chunk_objects() {
        let prefix = ChunkPrefix::new(7, "gpt-\"4\"");
        let mut out = BytesMut::new();
        prefix.render_role(&mut out);
        let role = event_json(&out.split());
        assert_eq!(role["id"], "chatcmpl-mock-7");
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(role["model"], "gpt-\"4\"");
        assert_eq!(role["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(role["choices"][0]["finish_reason"], Value::Null);

        prefix.render_content(ContentKind::Text.token(13), &mut out);
        let content = event_json(&out.split());
        assert_eq!(content["choices"][0]["delta"]["content"], " \"incididunt\"");

        prefix.render_finish("length", &mut out);
        let finish = event_json(&out.split());
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
    }

    #[test]
    fn empty_chunks_carry_no_content() {
        let prefix = ChunkPrefix::new(3, "m");
        let mut out = BytesMut::new();
        let kinds: Vec<EmptyChunk> = (0..4).map(EmptyChunk::nth).collect();
        assert_eq!(kinds, [EmptyChunk::Role, EmptyChunk::Reasoning, EmptyChunk::ToolCall, EmptyChunk::Usage]);
        for (index, kind) in kinds.into_iter().enumerate() {
            prefix.render_empty(kind, index as u32, &mut out);
            let chunk = event_json(&out.split());
            assert_eq!(chunk["id"], "chatcmpl-mock-3", "{kind:?}");
            assert_eq!(chunk["object"], "chat.completion.chunk", "{kind:?}");
            let delta = &chunk["choices"][0]["delta"];
            assert!(delta.get("content").is_none(), "{kind:?}: {chunk}");
            match kind {
                EmptyChunk::Role => assert_eq!(delta["role"], "assistant"),
                EmptyChunk::Reasoning => assert!(delta["reasoning_content"].is_string()),
                EmptyChunk::ToolCall => {
                    let call = &delta["tool_calls"][0];
                    assert_eq!(call["id"], "call_mock_2");
                    assert_eq!(call["function"]["arguments"], "{\"q\":1}");
                }
                EmptyChunk::Usage => {
                    assert_eq!(chunk["choices"], serde_json::json!([]));
                    assert_eq!(chunk["usage"]["total_tokens"], 9);
                }
            }
        }
    }

    #[test]
    fn error_event_and_bodies_use_the_openai_error_shape() {
        let event = event_json(ERROR_EVENT);
        assert_eq!(event["error"]["type"], "server_error");
        let body: Value = serde_json::from_slice(&status_error_body(429)).expect("json");
        assert_eq!(body["error"]["code"], "rate_limit_exceeded");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("429")));
    }
}
