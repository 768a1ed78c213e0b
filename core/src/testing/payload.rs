//! The `handoff` target: any payload decodes or fails cleanly, and what a decoded
//! handoff puts on the wire is exactly what it says.

use crate::handoff::{self, Handoff, MAX_RESPONSE_HEADERS, MAX_RESPONSE_HEADER_BYTES};
use crate::http1::{self, BackendRequest, CLIENT_HEAD};

/// More header fields than any head we build can have.
const MAX_PARSED_HEADERS: usize = 64;

pub(super) fn check(data: &[u8]) -> Result<(), String> {
    let handoff = match handoff::decode(data) {
        Ok(handoff) => handoff,
        Err(error) if error.to_string().is_empty() => return Err(format!("{error:?} has no message")),
        Err(_) => return Ok(()),
    };
    check_kept_headers(&handoff)?;
    check_client_head(&handoff)?;
    check_request_head(&handoff)?;
    // The mock backend echoes this; it must not panic whatever the content is.
    let _ = handoff.last_user_text();
    super::chunk::check_request_body(&handoff, &crate::openai::RequestDefaults::model("fuzz-default-model"))
}

fn check_kept_headers(handoff: &Handoff) -> Result<(), String> {
    let kept = &handoff.response_headers;
    if kept.len() > MAX_RESPONSE_HEADERS {
        return Err(format!("{} response headers kept, over {MAX_RESPONSE_HEADERS}", kept.len()));
    }
    let size: usize = kept.iter().map(|(name, value)| name.len() + value.len() + 4).sum();
    if size > MAX_RESPONSE_HEADER_BYTES {
        return Err(format!("kept response headers take {size} bytes, over {MAX_RESPONSE_HEADER_BYTES}"));
    }
    for (name, value) in kept {
        if let Some(reason) = http1::header_rejection(name, value) {
            return Err(format!("kept header {name:?}: {value:?} that is rejected: {reason}"));
        }
    }
    if let Some(rejected) = handoff.rejected_headers.iter().find(|rejected| rejected.name.len() > 64) {
        return Err(format!("rejected header name kept at {} bytes", rejected.name.len()));
    }
    if let Some(pattern) = &handoff.test_pattern {
        if let Some(reason) = http1::header_rejection("X-Test-Pattern", pattern) {
            return Err(format!("test pattern {pattern:?} is not a valid header value: {reason}"));
        }
    }
    if let Some(id) = &handoff.request_id {
        if let Some(reason) = http1::header_rejection("X-Request-Id", id) {
            return Err(format!("request id {id:?} is not a valid header value: {reason}"));
        }
    }
    Ok(())
}

/// The head parses as the fixed SSE head fields, then the kept headers in order,
/// and nothing else; no field name appears twice.
fn check_client_head(handoff: &Handoff) -> Result<(), String> {
    let head = http1::client_head(&handoff.response_headers);
    let parsed = parse_response_head(&head)?;
    let mut expected = parse_response_head(CLIENT_HEAD)?;
    expected
        .extend(handoff.response_headers.iter().map(|(name, value)| (name.clone(), value.clone().into())));
    if parsed != expected {
        return Err(format!("client head fields {parsed:?}, expected {expected:?}"));
    }
    for (i, (name, _)) in parsed.iter().enumerate() {
        if parsed.iter().skip(i + 1).any(|(other, _)| other.eq_ignore_ascii_case(name)) {
            return Err(format!("client head has {name:?} twice"));
        }
    }
    Ok(())
}

/// The fields of a complete 200 response head that is all of `head`.
fn parse_response_head(head: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        other => return Err(format!("client head {:?} parsed as {other:?}", String::from_utf8_lossy(head))),
    }
    if response.code != Some(200) {
        return Err(format!("client head status {:?}", response.code));
    }
    Ok(response.headers.iter().map(|header| (header.name.to_owned(), header.value.to_vec())).collect())
}

/// The backend request head carries the test pattern and the request id as one
/// intact field each.
fn check_request_head(handoff: &Handoff) -> Result<(), String> {
    let head = http1::request_head(&BackendRequest {
        authority: "backend.test:8080",
        path: "/v1/chat/completions",
        api_key: Some("sk-fuzz"),
        test_pattern: handoff.test_pattern.as_deref(),
        request_id: handoff.request_id.as_deref(),
        content_length: 0,
        extra_headers: &[],
    });
    let mut headers = [httparse::EMPTY_HEADER; MAX_PARSED_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(&head) {
        Ok(httparse::Status::Complete(len)) if len == head.len() => {}
        other => {
            return Err(format!("request head {:?} parsed as {other:?}", String::from_utf8_lossy(&head)))
        }
    }
    let values = |name: &str| -> Vec<&[u8]> {
        let named = request.headers.iter().filter(|header| header.name.eq_ignore_ascii_case(name));
        named.map(|header| header.value).collect()
    };
    let patterns: Vec<&[u8]> = handoff.test_pattern.iter().map(|pattern| pattern.as_bytes()).collect();
    let ids: Vec<&[u8]> = handoff.request_id.iter().map(|id| id.as_bytes()).collect();
    if values("x-test-pattern") != patterns
        || values("x-request-id") != ids
        || request.headers.len() != 6 + patterns.len() + ids.len()
    {
        return Err(format!(
            "request head {:?} for test pattern {:?} and request id {:?}",
            String::from_utf8_lossy(&head),
            handoff.test_pattern,
            handoff.request_id
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_head_parses_as_its_fields() {
        let fields = parse_response_head(CLIENT_HEAD).unwrap();
        let names: Vec<&str> = fields.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["Content-Type", "Cache-Control", "Connection", "X-Accel-Buffering"]);
    }

    #[test]
    fn kept_headers_follow_the_fixed_ones() {
        let payload = br#"{"response_headers":{"X-A":"1","X-B":"2\r\nX-Evil: 1"},"test_pattern":"p"}"#;
        let handoff = handoff::decode(payload).unwrap();
        assert_eq!(handoff.response_headers, [("X-A".to_owned(), "1".to_owned())]);
        let fields = parse_response_head(&http1::client_head(&handoff.response_headers)).unwrap();
        assert_eq!(fields.last(), Some(&("X-A".to_owned(), b"1".to_vec())));
        assert_eq!(check(payload), Ok(()));
    }
}
