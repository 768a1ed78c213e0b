//! The responses the front writes itself (the daemon writes every stream's).

use std::fmt::Write as _;

/// A complete `Connection: close` response with `Content-Length`.
pub fn response(status: u16, content_type: &str, extra_headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let reason =
        http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error");
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra_headers {
        // Writing into a String cannot fail.
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// An error in OpenAI's shape, as the daemon and the module answer them:
/// `{"error":{"message":..,"type":..,"code":..}}`.
pub fn error(
    status: u16,
    message: &str,
    error_type: &str,
    code: &str,
    retry_after_secs: Option<u32>,
) -> Vec<u8> {
    let body = serde_json::json!({"error": {"message": message, "type": error_type, "code": code}});
    let retry_after = retry_after_secs.map(|secs| secs.to_string());
    let headers: Vec<(&str, &str)> = retry_after.iter().map(|secs| ("Retry-After", secs.as_str())).collect();
    response(status, "application/json", &headers, body.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_has_an_exact_length_and_the_openai_shape() {
        let bytes = error(503, "daemon down", "service_unavailable", "daemon_unreachable", Some(2));
        let text = String::from_utf8(bytes).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains("\r\nRetry-After: 2"), "{head}");
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())), "{head}");
        let value: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(value["error"]["message"], "daemon down");
        assert_eq!(value["error"]["type"], "service_unavailable");
        assert_eq!(value["error"]["code"], "daemon_unreachable");
    }
}
