//! A client response as the contract fixes it: the HTTP/1.1 head, then SSE events
//! whose framing is checked byte for byte.

use std::time::Duration;

use serde_json::Value;

use super::client::find_subslice;

/// The head of every successful stream without `response_headers`.
pub const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\n\
Content-Type: text/event-stream\r\n\
Cache-Control: no-cache\r\n\
Connection: close\r\n\
X-Accel-Buffering: no\r\n\
\r\n";

/// One complete response, read to EOF.
#[derive(Debug, Clone)]
pub struct Response {
    bytes: Vec<u8>,
    /// From the handoff to EOF.
    pub elapsed: Duration,
}

/// An OpenAI-shaped error: `{"error":{"message":..,"type":..,"code":..}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorObject {
    pub message: String,
    pub error_type: String,
    pub code: Option<String>,
}

/// One SSE block of a stream body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `: keep-alive`
    KeepAlive,
    /// `data: {"content":"..."}`
    Content(String),
    /// `data: {"content":"...","index":N}` (the mock backend's events)
    Indexed { content: String, index: u64 },
    /// `event: reasoning` + `data: {"content":"..."}` (asked for with `reasoning`)
    Reasoning(String),
    /// `event: error` + `data: {"error":{...}}`
    Error(ErrorObject),
    /// `data: [DONE]`
    Done,
}

/// How a stream body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Done,
    Error(ErrorObject),
    /// Neither: the connection just closed.
    Cut,
}

impl Response {
    pub fn new(bytes: Vec<u8>, elapsed: Duration) -> Response {
        Response { bytes, elapsed }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The whole response, lossily as text (for failure messages).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    fn split(&self) -> (&[u8], &[u8]) {
        let Some(end) = find_subslice(&self.bytes, b"\r\n\r\n") else {
            panic!("no complete response head in {:?}", self.text());
        };
        self.bytes.split_at(end + 4)
    }

    /// The head, status line to the blank line inclusive.
    pub fn head(&self) -> String {
        let (head, _) = self.split();
        match std::str::from_utf8(head) {
            Ok(head) => head.to_owned(),
            Err(e) => panic!("the response head is not UTF-8 ({e}): {:?}", self.text()),
        }
    }

    pub fn body(&self) -> &[u8] {
        self.split().1
    }

    pub fn status(&self) -> u16 {
        let head = self.head();
        let status =
            head.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|s| s.parse().ok());
        status.unwrap_or_else(|| panic!("no HTTP/1.1 status line in {head:?}"))
    }

    /// Header fields in order (names as written).
    pub fn headers(&self) -> Vec<(String, String)> {
        let head = self.head();
        head.split("\r\n")
            .skip(1)
            .take_while(|line| !line.is_empty())
            .map(|line| match line.split_once(": ") {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => panic!("malformed header line {line:?} in {head:?}"),
            })
            .collect()
    }

    /// The value of the one header named `name` (case-insensitive); panics if it
    /// appears more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut values = self.headers().into_iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
        let first = values.next().map(|(_, value)| value);
        assert!(values.next().is_none(), "header {name} appears more than once in {:?}", self.head());
        first
    }

    /// The body parsed as SSE events; panics on anything the contract does not allow.
    pub fn events(&self) -> Vec<Event> {
        parse_events(self.body()).unwrap_or_else(|e| panic!("{e}\nin the response {:?}", self.text()))
    }

    /// A successful stream: the exact SSE head, content events, `[DONE]`, EOF.
    /// Returns the events (keep-alive comments included).
    pub fn expect_completed_stream(&self) -> Vec<Event> {
        self.expect_stream_head(SSE_HEAD);
        let events = self.events();
        assert_eq!(ending(&events), Ending::Done, "the stream did not end with [DONE]: {:?}", self.text());
        events
    }

    /// A failed stream: the exact SSE head, content events, one error event, EOF;
    /// no `[DONE]`. Returns the events and the error.
    pub fn expect_failed_stream(&self) -> (Vec<Event>, ErrorObject) {
        self.expect_stream_head(SSE_HEAD);
        let events = self.events();
        match ending(&events) {
            Ending::Error(error) => (events, error),
            other => panic!("the stream ended with {other:?}, not an error event: {:?}", self.text()),
        }
    }

    /// A successful stream in the `openai` format: the exact SSE head, then
    /// events whose data (its `data:` lines joined) is a JSON object each, then
    /// `[DONE]`, EOF; keep-alive comments may come between. Returns the objects.
    pub fn expect_openai_stream(&self) -> Vec<Value> {
        self.expect_stream_head(SSE_HEAD);
        let text = std::str::from_utf8(self.body())
            .unwrap_or_else(|e| panic!("the SSE body is not UTF-8 ({e}): {:?}", self.text()));
        let Some(events) = text.strip_suffix("data: [DONE]\n\n") else {
            panic!("the stream did not end with [DONE]: {:?}", self.text());
        };
        let mut chunks = Vec::new();
        for block in events.split_terminator("\n\n") {
            if block == ": keep-alive" {
                continue;
            }
            let lines: Option<Vec<&str>> =
                block.split('\n').map(|line| line.strip_prefix("data: ")).collect();
            let Some(lines) = lines else { panic!("not a data event: {block:?} in {:?}", self.text()) };
            let data = lines.join("\n");
            match serde_json::from_str::<Value>(&data) {
                Ok(value) if value.is_object() => chunks.push(value),
                _ => panic!("event data is not a JSON object: {data:?} in {:?}", self.text()),
            }
        }
        chunks
    }

    pub fn expect_stream_head(&self, head: &str) {
        assert_eq!(self.head(), head, "the response head; whole response: {:?}", self.text());
    }

    /// A complete error response: `status`, `Content-Type: application/json`, an
    /// exact `Content-Length`, and an OpenAI error body, then EOF.
    pub fn expect_error_response(&self, status: u16) -> ErrorObject {
        assert_eq!(self.status(), status, "status of {:?}", self.text());
        let content_type = self.header("Content-Type");
        assert_eq!(content_type.as_deref(), Some("application/json"), "in {:?}", self.text());
        let length =
            self.header("Content-Length").unwrap_or_else(|| panic!("no Content-Length: {:?}", self.text()));
        assert_eq!(
            length.parse::<usize>().ok(),
            Some(self.body().len()),
            "Content-Length vs body: {:?}",
            self.text()
        );
        let body: Value = serde_json::from_slice(self.body())
            .unwrap_or_else(|e| panic!("the error body is not JSON ({e}): {:?}", self.text()));
        error_object(&body).unwrap_or_else(|e| panic!("{e}: {:?}", self.text()))
    }
}

/// How `events` ended.
pub fn ending(events: &[Event]) -> Ending {
    match events.last() {
        Some(Event::Done) => Ending::Done,
        Some(Event::Error(error)) => Ending::Error(error.clone()),
        _ => Ending::Cut,
    }
}

/// The text a browser reassembles from the content events.
pub fn content(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Content(text) | Event::Indexed { content: text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// How many content events there are.
pub fn content_events(events: &[Event]) -> usize {
    events.iter().filter(|event| matches!(event, Event::Content(_) | Event::Indexed { .. })).count()
}

/// Parses an SSE body as the daemon must write it: blocks ending in a blank line,
/// each a `: keep-alive` comment, one `data:` line, or `event: error` and one `data:`
/// line; nothing after `[DONE]` or an error event.
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the SSE body is not UTF-8: {e}"))?;
    let mut events = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some((block, after)) = rest.split_once("\n\n") else {
            return Err(format!("the body ends inside an event: {rest:?}"));
        };
        if matches!(events.last(), Some(Event::Done | Event::Error(_))) {
            return Err(format!("an event after the stream's end: {block:?}"));
        }
        events.push(parse_block(block)?);
        rest = after;
    }
    Ok(events)
}

fn parse_block(block: &str) -> Result<Event, String> {
    if block == ": keep-alive" {
        return Ok(Event::KeepAlive);
    }
    if let Some(data) = block.strip_prefix("event: error\ndata: ") {
        if !data.starts_with("{\"error\":{\"message\":") {
            return Err(format!("an error event not in OpenAI's error shape: {block:?}"));
        }
        let value: Value = serde_json::from_str(data)
            .map_err(|e| format!("error event data is not JSON ({e}): {block:?}"))?;
        return error_object(&value).map(Event::Error).map_err(|e| format!("{e}: {block:?}"));
    }
    if let Some(data) = block.strip_prefix("event: reasoning\ndata: ") {
        let value: Value = serde_json::from_str(data)
            .map_err(|e| format!("reasoning event data is not JSON ({e}): {block:?}"))?;
        let only_content = value.as_object().is_some_and(|object| object.len() == 1);
        return match value.get("content").and_then(Value::as_str) {
            Some(text) if only_content => Ok(Event::Reasoning(text.to_owned())),
            _ => Err(format!("a reasoning event that is not {{\"content\":..}}: {block:?}")),
        };
    }
    let Some(data) = block.strip_prefix("data: ") else {
        return Err(format!("not an event the contract allows: {block:?}"));
    };
    if data == "[DONE]" {
        return Ok(Event::Done);
    }
    let Some(string_and_rest) = data.strip_prefix("{\"content\":") else {
        return Err(format!("a data event that is not {{\"content\":..}}: {block:?}"));
    };
    // The content is one JSON string literal; the stream deserializer says where it ends.
    let mut strings = serde_json::Deserializer::from_str(string_and_rest).into_iter::<String>();
    let content = match strings.next() {
        Some(Ok(content)) => content,
        _ => return Err(format!("the content is not a JSON string: {block:?}")),
    };
    let after = string_and_rest.get(strings.byte_offset()..).unwrap_or_default();
    if after == "}" {
        return Ok(Event::Content(content));
    }
    let index = after.strip_prefix(",\"index\":").and_then(|n| n.strip_suffix('}'));
    match index {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            let index = digits.parse().map_err(|e| format!("index {digits}: {e}"))?;
            Ok(Event::Indexed { content, index })
        }
        _ => Err(format!("unexpected bytes after the content: {block:?}")),
    }
}

fn error_object(value: &Value) -> Result<ErrorObject, String> {
    let top = value.as_object().filter(|o| o.len() == 1).ok_or("not an object with only `error`")?;
    let error = top.get("error").and_then(Value::as_object).ok_or("`error` is not an object")?;
    let message = error.get("message").and_then(Value::as_str).ok_or("`error.message` is not a string")?;
    let error_type = error.get("type").and_then(Value::as_str).ok_or("`error.type` is not a string")?;
    let code = match error.get("code") {
        Some(Value::Null) => None,
        Some(Value::String(code)) => Some(code.clone()),
        _ => return Err("`error.code` is neither a string nor null".to_owned()),
    };
    Ok(ErrorObject { message: message.to_owned(), error_type: error_type.to_owned(), code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_parsed_with_exact_framing() {
        let body = b": keep-alive\n\ndata: {\"content\":\"a\\\"b\",\"index\":0}\n\ndata: {\"content\":\"\\n\"}\n\ndata: [DONE]\n\n";
        let events = parse_events(body).unwrap();
        assert_eq!(
            events,
            vec![
                Event::KeepAlive,
                Event::Indexed { content: "a\"b".to_owned(), index: 0 },
                Event::Content("\n".to_owned()),
                Event::Done
            ]
        );
        assert_eq!(content(&events), "a\"b\n");
    }

    #[test]
    fn error_events_follow_the_openai_shape() {
        let body = b"event: error\ndata: {\"error\":{\"message\":\"m\",\"type\":\"t\",\"code\":null}}\n\n";
        let events = parse_events(body).unwrap();
        let expected = ErrorObject { message: "m".into(), error_type: "t".into(), code: None };
        assert_eq!(ending(&events), Ending::Error(expected));
    }

    #[test]
    fn framing_mistakes_are_rejected() {
        for body in [
            &b"data: {\"content\":\"a\"}\n"[..],
            b"data: {\"content\":\"a\"} \n\n",
            b"data:{\"content\":\"a\"}\n\n",
            b"data: {\"content\":\"a\",\"index\":x}\n\n",
            b"data: {\"text\":\"a\"}\n\n",
            b"data: [DONE]\n\ndata: {\"content\":\"a\"}\n\n",
            b"event: error\ndata: {\"message\":\"m\"}\n\n",
            b": other comment\n\n",
        ] {
            assert!(parse_events(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn responses_split_into_head_and_body() {
        let bytes = format!("{SSE_HEAD}data: [DONE]\n\n").into_bytes();
        let response = Response::new(bytes, Duration::ZERO);
        assert_eq!(response.head(), SSE_HEAD);
        assert_eq!(response.status(), 200);
        assert_eq!(response.header("x-accel-buffering").as_deref(), Some("no"));
        assert_eq!(response.expect_completed_stream(), vec![Event::Done]);
    }
}
