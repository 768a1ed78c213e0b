//! Inputs the fuzz targets found, cut down to the rule they broke. The raw inputs
//! are also in `fuzz/regressions/<target>/`, replayed by `fuzz_corpus.rs`.

use handoff_core::{handoff, openai};

/// Message content is kept as raw JSON, and serde_json checks a raw value's
/// syntax only: it neither decodes `\u` escapes nor reads numbers. So a lone
/// UTF-16 surrogate, or a number beyond f64, got through `decode` into the
/// request body, which is then not I-JSON: strict parsers (serde_json among them)
/// refuse it, and the backend answers 400 where the client should have had the
/// handoff's own 400. (`prompt` with the same text is already refused: it must
/// decode as a string.)
#[test]
fn message_content_that_strict_json_refuses_never_reaches_the_request_body() {
    let payloads = [
        r#"{"messages":[{"role":"user","content":"\ud84d"}]}"#,
        r#"{"messages":[{"role":"user","content":"\udc00 trailing"}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"\ud84dX"}]}]}"#,
        r#"{"messages":[{"role":"user","content":1e400}]}"#,
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"x","n":-1e999}]}]}"#,
    ];
    let refused: Vec<String> = payloads
        .iter()
        .filter_map(|payload| {
            let handoff = handoff::decode(payload.as_bytes()).ok()?;
            let body = openai::request_body(&handoff, &openai::RequestDefaults::model("model"));
            let error = serde_json::from_slice::<serde_json::Value>(&body).err()?;
            Some(format!("{payload} was accepted; its request body is refused: {error}"))
        })
        .collect();
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
