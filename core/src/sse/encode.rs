//! The events we send the client. JSON string escaping turns every CR and LF into
//! `\r` / `\n`, so each payload stays on one `data:` line.

use bytes::{BufMut, BytesMut};

use crate::json;

/// Appends `data: {"content":"..."}\n\n`.
pub fn encode_content(out: &mut BytesMut, content: &str) {
    out.reserve(content.len() + 24);
    out.put_slice(b"data: {\"content\":");
    json::write_str(out, content);
    out.put_slice(b"}\n\n");
}

/// Appends `event: usage\ndata: {"prompt_tokens":..}\n\n`: the backend's token
/// counts, for a client that asked (`usage_event`).
pub fn encode_usage(out: &mut BytesMut, usage: &crate::openai::Usage) {
    let mut json = String::with_capacity(128);
    // Writing to a String cannot fail.
    let _ = usage.write_json(&mut json);
    out.reserve(json.len() + 24);
    out.put_slice(b"event: usage\ndata: ");
    out.put_slice(json.as_bytes());
    out.put_slice(b"\n\n");
}

/// Appends `event: reasoning\ndata: {"content":"..."}\n\n`: a reasoning model's
/// thinking, apart from the answer.
pub fn encode_reasoning(out: &mut BytesMut, reasoning: &str) {
    out.reserve(reasoning.len() + 40);
    out.put_slice(b"event: reasoning\ndata: {\"content\":");
    json::write_str(out, reasoning);
    out.put_slice(b"}\n\n");
}

/// Appends `data` as one event's data, its bytes as they are: one `data:` line
/// per line of it (a decoded upstream event's data holds LF between its lines
/// and no CR), so a client's SSE parser joins them back into exactly `data`.
pub fn encode_data(out: &mut BytesMut, data: &str) {
    out.reserve(data.len() + 8);
    for line in data.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Appends `data: {"content":"...","index":N}\n\n` (the mock backend's events).
pub fn encode_indexed_content(out: &mut BytesMut, content: &str, index: u32) {
    out.reserve(content.len() + 44);
    out.put_slice(b"data: {\"content\":");
    json::write_str(out, content);
    out.put_slice(b",\"index\":");
    write_decimal(out, index);
    out.put_slice(b"}\n\n");
}

/// Appends `event: error\ndata: {"error":{"message":..,"type":..,"code":..}}\n\n`.
pub fn encode_error(out: &mut BytesMut, message: &str, error_type: &str, code: Option<&str>) {
    out.put_slice(b"event: error\ndata: ");
    json::write_error_object(out, message, error_type, code);
    out.put_slice(b"\n\n");
}

fn write_decimal(out: &mut BytesMut, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        // `n % 10` is below 10, so the cast cannot truncate.
        *slot = b'0' + (n % 10) as u8;
        start -= 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(digits.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_keeps_its_lines_and_a_reasoning_event_is_named() {
        let mut out = BytesMut::new();
        encode_data(&mut out, "{\"a\":\n1}");
        assert_eq!(out, &b"data: {\"a\":\ndata: 1}\n\n"[..]);
        out.clear();
        encode_data(&mut out, "{}");
        assert_eq!(out, &b"data: {}\n\n"[..]);
        out.clear();
        encode_reasoning(&mut out, "why\n\"so\"");
        assert_eq!(out, &b"event: reasoning\ndata: {\"content\":\"why\\n\\\"so\\\"\"}\n\n"[..]);
    }

    #[test]
    fn decimal_index_covers_the_u32_range() {
        for n in [0, 7, 10, 99, 100, 4_294_967_295] {
            let mut out = BytesMut::new();
            write_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
