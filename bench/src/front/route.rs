//! What a request is for, decided from its head and body alone (no I/O here).

use handoff_core::http1::RequestHead;
use serde::Deserialize;

use super::handoff_data::HandoffFields;
use super::urlencoded;

/// Longest `model` accepted.
const MAX_MODEL: usize = 128;
/// Longest `test_pattern` accepted.
const MAX_TEST_PATTERN: usize = 256;

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /`: the demo page.
    Page,
    /// `GET /stats`: the front's counters as JSON.
    Stats,
    /// `GET|POST /api/stream`: hand the connection to the daemon.
    Stream(HandoffFields),
    /// Answer this status with an error body and close.
    Refused(Refusal),
}

/// A 4xx the front answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal { status, message: message.into() }
    }
}

/// How many body bytes to read before routing: the declared length, refused with
/// 413 above `max_body` before any of it is read.
pub fn body_length(head: &RequestHead, max_body: usize) -> Result<usize, Refusal> {
    let declared = head.content_length.unwrap_or(0);
    match usize::try_from(declared) {
        Ok(len) if len <= max_body => Ok(len),
        _ => Err(Refusal::new(
            413,
            format!("request body of {declared} bytes is over the {max_body}-byte limit"),
        )),
    }
}

/// Routes a request whose whole body has been read.
pub fn route(head: &RequestHead, body: &[u8]) -> Route {
    let method = head.method.as_str();
    match (head.path(), method) {
        ("/" | "/index.html", "GET") => Route::Page,
        ("/stats", "GET") => Route::Stats,
        ("/api/stream", "GET") => stream(urlencoded::decode(head.query().unwrap_or(""))),
        ("/api/stream", "POST") => post(head, body),
        ("/" | "/index.html" | "/stats", _) => {
            Route::Refused(Refusal::new(405, format!("{method} is not allowed here; use GET")))
        }
        ("/api/stream", _) => {
            Route::Refused(Refusal::new(405, format!("{method} is not allowed here; use GET or POST")))
        }
        (path, _) => Route::Refused(Refusal::new(404, format!("no page at {path}"))),
    }
}

/// The fields a JSON body may carry; others are ignored.
#[derive(Debug, Deserialize)]
struct JsonFields {
    prompt: Option<String>,
    model: Option<String>,
    test_pattern: Option<String>,
    max_tokens: Option<u64>,
}

fn post(head: &RequestHead, body: &[u8]) -> Route {
    let media_type = head
        .header("content-type")
        .map(|value| value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media_type.as_str() {
        "application/json" => match serde_json::from_slice::<JsonFields>(body) {
            Ok(json) => checked(json.prompt, json.model, json.test_pattern, json.max_tokens),
            Err(e) => Route::Refused(Refusal::new(
                400,
                format!("the body is not a JSON object of stream fields: {e}"),
            )),
        },
        "application/x-www-form-urlencoded" => match std::str::from_utf8(body) {
            Ok(text) => stream(urlencoded::decode(text)),
            Err(_) => Route::Refused(Refusal::new(400, "the form body is not UTF-8")),
        },
        "" => Route::Refused(Refusal::new(415, "the body needs a Content-Type: application/json or a form")),
        other => {
            Route::Refused(Refusal::new(415, format!("{other} bodies are not taken; send JSON or a form")))
        }
    }
}

/// A stream from query or form pairs; the first of a repeated name counts.
fn stream(pairs: Result<Vec<(String, String)>, urlencoded::FormError>) -> Route {
    let pairs = match pairs {
        Ok(pairs) => pairs,
        Err(e) => return Route::Refused(Refusal::new(400, format!("bad form encoding: {e}"))),
    };
    let get = |name: &str| pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let max_tokens = match get("max_tokens").filter(|v| !v.is_empty()).map(|v| v.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return Route::Refused(Refusal::new(400, "max_tokens is not a whole number")),
    };
    let optional = |value: Option<String>| value.filter(|v| !v.is_empty());
    checked(get("prompt"), optional(get("model")), optional(get("test_pattern")), max_tokens)
}

fn checked(
    prompt: Option<String>,
    model: Option<String>,
    test_pattern: Option<String>,
    max_tokens: Option<u64>,
) -> Route {
    let Some(prompt) = prompt.filter(|p| !p.trim().is_empty()) else {
        return Route::Refused(Refusal::new(400, "a prompt is required"));
    };
    if model.as_ref().is_some_and(|m| m.len() > MAX_MODEL) {
        return Route::Refused(Refusal::new(400, format!("model is over {MAX_MODEL} bytes")));
    }
    if test_pattern.as_ref().is_some_and(|p| p.len() > MAX_TEST_PATTERN) {
        return Route::Refused(Refusal::new(400, format!("test_pattern is over {MAX_TEST_PATTERN} bytes")));
    }
    Route::Stream(HandoffFields { prompt, model, test_pattern, max_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;
    use handoff_core::http1::{parse_request_head, ParsedRequest};

    fn head(text: &str) -> RequestHead {
        match parse_request_head(text.as_bytes(), 8192) {
            ParsedRequest::Complete { head, .. } => head,
            other => panic!("{text:?} parsed as {other:?}"),
        }
    }

    fn get(target: &str) -> Route {
        route(&head(&format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")), b"")
    }

    fn post(content_type: &str, body: &str) -> Route {
        let text = format!(
            "POST /api/stream HTTP/1.1\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        route(&head(&text), body.as_bytes())
    }

    fn status(route: Route) -> u16 {
        match route {
            Route::Refused(refusal) => refusal.status,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn fields(prompt: &str, pattern: Option<&str>) -> Route {
        Route::Stream(HandoffFields {
            prompt: prompt.to_owned(),
            test_pattern: pattern.map(str::to_owned),
            ..HandoffFields::default()
        })
    }

    #[test]
    fn pages_and_stats() {
        assert_eq!(get("/"), Route::Page);
        assert_eq!(get("/?x=1"), Route::Page);
        assert_eq!(get("/stats"), Route::Stats);
        assert_eq!(status(get("/nope")), 404);
        assert_eq!(status(route(&head("DELETE / HTTP/1.1\r\n\r\n"), b"")), 405);
        assert_eq!(status(route(&head("PUT /api/stream HTTP/1.1\r\n\r\n"), b"")), 405);
    }

    #[test]
    fn a_get_stream_takes_its_fields_from_the_query() {
        assert_eq!(
            get("/api/stream?prompt=hello+%F0%9F%98%80&test_pattern=unicode"),
            fields("hello 😀", Some("unicode"))
        );
        assert_eq!(get("/api/stream?prompt=a&test_pattern=&model="), fields("a", None));
        let Route::Stream(full) = get("/api/stream?prompt=a&model=m&max_tokens=5") else {
            panic!("not a stream")
        };
        assert_eq!((full.model.as_deref(), full.max_tokens), (Some("m"), Some(5)));
    }

    #[test]
    fn a_post_stream_takes_json_or_a_form() {
        assert_eq!(
            post("application/json", r#"{"prompt":"日本","test_pattern":"status:500","x":1}"#),
            fields("日本", Some("status:500"))
        );
        assert_eq!(post("application/json; charset=utf-8", r#"{"prompt":"p"}"#), fields("p", None));
        assert_eq!(post("application/x-www-form-urlencoded", "prompt=p+q"), fields("p q", None));
    }

    #[test]
    fn bad_stream_requests_get_4xx() {
        assert_eq!(status(get("/api/stream")), 400);
        assert_eq!(status(get("/api/stream?prompt=+++")), 400);
        assert_eq!(status(get("/api/stream?prompt=%zz")), 400);
        assert_eq!(status(get("/api/stream?prompt=a&max_tokens=many")), 400);
        assert_eq!(status(get(&format!("/api/stream?prompt=a&test_pattern={}", "x".repeat(257)))), 400);
        assert_eq!(status(get(&format!("/api/stream?prompt=a&model={}", "m".repeat(129)))), 400);
        assert_eq!(status(post("application/json", "{")), 400);
        assert_eq!(status(post("application/json", "[1]")), 400);
        assert_eq!(status(post("application/json", r#"{"prompt":5}"#)), 400);
        assert_eq!(status(post("text/plain", "prompt=p")), 415);
        assert_eq!(
            status(route(&head("POST /api/stream HTTP/1.1\r\nContent-Length: 2\r\n\r\n"), b"{}")),
            415
        );
    }

    #[test]
    fn bodies_over_the_bound_are_refused_before_reading() {
        let small = head("POST /api/stream HTTP/1.1\r\nContent-Length: 10\r\n\r\n");
        assert_eq!(body_length(&small, 10), Ok(10));
        assert_eq!(body_length(&small, 9).map_err(|r| r.status), Err(413));
        let huge = head("POST /api/stream HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(body_length(&huge, 1024).map_err(|r| r.status), Err(413));
        assert_eq!(body_length(&head("GET / HTTP/1.1\r\n\r\n"), 0), Ok(0));
    }
}
