//! Whatever `response_headers` a handoff carries, the client head built from it is
//! one well-formed HTTP/1.1 head: the SSE headers first and unchanged, then exactly
//! the kept headers in the order given, and nothing a value could smuggle in.

use handoff_core::handoff::{self, MAX_RESPONSE_HEADERS, MAX_RESPONSE_HEADER_BYTES};
use handoff_core::http1::{self, CLIENT_HEAD};
use proptest::prelude::*;

/// Parses a head we wrote; returns its header fields.
fn parse_client_head(head: &[u8]) -> Vec<(String, String)> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(head) {
        Ok(httparse::Status::Complete(len)) => len,
        other => panic!("client head does not parse: {other:?}\n{}", String::from_utf8_lossy(head)),
    };
    assert_eq!(len, head.len(), "nothing after the blank line");
    assert_eq!((response.version, response.code), (Some(1), Some(200)));
    response
        .headers
        .iter()
        .map(|field| (field.name.to_owned(), String::from_utf8(field.value.to_vec()).unwrap()))
        .collect()
}

const SSE_FIELDS: [(&str, &str); 4] = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("Connection", "close"),
    ("X-Accel-Buffering", "no"),
];

#[test]
fn a_handoff_without_headers_gets_the_static_head() {
    let handoff = handoff::decode(br#"{"prompt":"hi"}"#).unwrap();
    assert_eq!(&http1::client_head(&handoff.response_headers)[..], CLIENT_HEAD);
}

#[test]
fn kept_headers_follow_the_sse_headers_in_order() {
    let handoff = handoff::decode(
        br#"{"response_headers":{"X-Request-Id":"r-1","Content-Type":"text/html","Set-Cookie":"a=b","Vary":"Origin"}}"#,
    )
    .unwrap();
    let fields = parse_client_head(&http1::client_head(&handoff.response_headers));
    let expected: Vec<(String, String)> = SSE_FIELDS
        .iter()
        .chain(&[("X-Request-Id", "r-1"), ("Set-Cookie", "a=b"), ("Vary", "Origin")])
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(fields, expected);
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z][A-Za-z0-9-]{0,12}",
        prop::sample::select(vec![
            "Content-Type",
            "connection",
            "Transfer-Encoding",
            "Host",
            "Set-Cookie",
            "TE"
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ]
}

fn header_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        4 => "[ -~]{0,80}".prop_map(serde_json::Value::from),
        1 => any::<String>().prop_map(serde_json::Value::from),
        1 => "[a-z\r\n\t\0 :]{0,20}".prop_map(serde_json::Value::from),
        1 => any::<i64>().prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::Null),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_response_headers_give_a_well_formed_head(
        entries in prop::collection::vec((header_name(), header_value()), 0..48),
    ) {
        // Written by hand so duplicate names and the given order survive.
        let members: Vec<String> = entries
            .iter()
            .map(|(name, value)| format!("{}:{}", serde_json::to_string(name).unwrap(), value))
            .collect();
        let data = format!("{{\"response_headers\":{{{}}}}}", members.join(","));
        prop_assume!(data.len() <= handoff::MAX_HANDOFF_BYTES);
        let handoff = handoff::decode(data.as_bytes()).unwrap();

        prop_assert_eq!(handoff.response_headers.len() + handoff.rejected_headers.len(), entries.len());
        prop_assert!(handoff.response_headers.len() <= MAX_RESPONSE_HEADERS);
        let size: usize = handoff.response_headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        prop_assert!(size <= MAX_RESPONSE_HEADER_BYTES);

        // Kept headers are the given ones, in the given order (values trimmed).
        let mut given = entries.iter();
        for (name, value) in &handoff.response_headers {
            let found = given.by_ref().find(|(given_name, given_value)| {
                given_name == name && given_value.as_str().map(|v| v.trim_matches([' ', '\t'])) == Some(value.as_str())
            });
            prop_assert!(found.is_some(), "{} was not given in this order", name);
        }

        let fields = parse_client_head(&http1::client_head(&handoff.response_headers));
        let sse: Vec<(String, String)> =
            SSE_FIELDS.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
        prop_assert_eq!(&fields[..SSE_FIELDS.len()], &sse[..]);
        prop_assert_eq!(&fields[SSE_FIELDS.len()..], &handoff.response_headers[..]);
    }
}
