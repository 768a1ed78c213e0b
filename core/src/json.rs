//! Minimal JSON writing for the bytes we emit ourselves: string escaping and the
//! OpenAI error object. Writing these by hand avoids a `serde_json::Value` (and its
//! allocations) per event on the hot path.

use bytes::{BufMut, BytesMut};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `s` as a JSON string literal, quotes included (RFC 8259 escaping).
pub fn write_str(out: &mut BytesMut, s: &str) {
    out.reserve(s.len() + 2);
    out.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.put_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.put_slice(b"\\u00");
            out.put_u8(HEX[usize::from(b >> 4)]);
            out.put_u8(HEX[usize::from(b & 0xf)]);
        } else {
            out.put_slice(escape);
        }
        start = i + 1;
    }
    out.put_slice(&bytes[start..]);
    out.put_u8(b'"');
}

/// Appends `{"error":{"message":..,"type":..,"code":..}}` (OpenAI's error shape).
/// `code` is written as `null` when absent.
pub fn write_error_object(out: &mut BytesMut, message: &str, error_type: &str, code: Option<&str>) {
    out.put_slice(b"{\"error\":{\"message\":");
    write_str(out, message);
    out.put_slice(b",\"type\":");
    write_str(out, error_type);
    out.put_slice(b",\"code\":");
    match code {
        Some(code) => write_str(out, code),
        None => out.put_slice(b"null"),
    }
    out.put_slice(b"}}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = BytesMut::new();
        write_str(&mut out, s);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("line\nnext\r\t"), r#""line\nnext\r\t""#);
        assert_eq!(escaped("\u{0}\u{1f}"), r#""\u0000\u001f""#);
    }

    #[test]
    fn passes_unicode_through_unchanged() {
        assert_eq!(escaped("héllo 世界 🎉"), "\"héllo 世界 🎉\"");
    }

    #[test]
    fn escaped_output_round_trips_through_a_json_parser() {
        let input = "mixed \"quotes\" \\ \n\u{7}\u{7f} ünï 😀";
        let parsed: String = serde_json::from_str(&escaped(input)).unwrap();
        assert_eq!(parsed, input);
    }

    #[test]
    fn error_object_has_openai_shape() {
        let mut out = BytesMut::new();
        write_error_object(&mut out, "bad \"x\"", "invalid_request_error", Some("bad_handoff"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "bad \"x\"");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "bad_handoff");
        let mut out = BytesMut::new();
        write_error_object(&mut out, "m", "t", None);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v["error"]["code"].is_null());
    }
}
