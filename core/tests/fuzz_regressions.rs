//! Inputs the fuzz targets found, cut down to the rule they broke. The raw inputs
//! are also in `fuzz/regressions/<target>/`, replayed by `fuzz_corpus.rs`.

use handoff_core::{handoff, openai};

/// Message content is kept as raw JSON, and serde_json checks a raw value's
/// syntax without decoding its `\u` escapes, so a lone UTF-16 surrogate got
/// through `decode` into the request body. That body is not I-JSON: strict
/// parsers (serde_json among them) refuse it, so the backend would answer 400
/// rather than the client getting the handoff's own 400. (`prompt` with the same
/// text is already refused: it must decode as a string.)
#[test]
fn a_lone_surrogate_in_message_content_never_reaches_the_request_body() {
    let payloads = [
        r#"{"messages":[{"role":"user","content":"\ud84d"}]}"#,
        r#"{"messages":[{"role":"user","content":"\udc00 trailing"}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"\ud84dX"}]}]}"#,
    ];
    for payload in payloads {
        let Ok(handoff) = handoff::decode(payload.as_bytes()) else { continue };
        let body = openai::request_body(&handoff, "model");
        let parsed = serde_json::from_slice::<serde_json::Value>(&body);
        assert!(
            parsed.is_ok(),
            "{payload} was accepted, and its request body {body:?} is refused: {parsed:?}"
        );
    }
}
