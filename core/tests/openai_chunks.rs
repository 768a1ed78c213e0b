//! Reading the upstream's streamed payloads and error bodies.

use std::borrow::Cow;

use handoff_core::openai::{error_from_status, parse_chunk, ChunkError, ChunkEvent, UpstreamError, Usage};

fn delta<'a>(content: Option<&'a str>, finish_reason: Option<&'a str>) -> ChunkEvent<'a> {
    ChunkEvent::Delta {
        content: content.map(Cow::Borrowed),
        reasoning: None,
        finish_reason: finish_reason.map(Cow::Borrowed),
        usage: None,
        id: None,
        model: None,
    }
}

/// `event` as a chunk with this `id` and `model` carries it.
fn identified<'a>(event: ChunkEvent<'a>, chunk_id: &'a str, chunk_model: Option<&'a str>) -> ChunkEvent<'a> {
    match event {
        ChunkEvent::Delta { content, reasoning, finish_reason, usage, .. } => ChunkEvent::Delta {
            content,
            reasoning,
            finish_reason,
            usage,
            id: Some(Cow::Borrowed(chunk_id)),
            model: chunk_model.map(Cow::Borrowed),
        },
        other => other,
    }
}

fn upstream_error(message: &str, error_type: &str, code: Option<&str>) -> UpstreamError {
    UpstreamError {
        message: message.to_owned(),
        error_type: error_type.to_owned(),
        code: code.map(str::to_owned),
    }
}

const CONTENT_CHUNK: &str = r#"{"id":"chatcmpl-AbC1","object":"chat.completion.chunk","created":1726000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}]}"#;

#[test]
fn content_chunks_yield_their_content_borrowed_from_the_payload() {
    let event = parse_chunk(CONTENT_CHUNK).unwrap();
    assert_eq!(
        event,
        identified(delta(Some("Hello"), None), "chatcmpl-AbC1", Some("gpt-4o-mini-2024-07-18"))
    );
    let ChunkEvent::Delta { content: Some(Cow::Borrowed(content)), .. } = event else {
        panic!("content without escapes is borrowed, got {event:?}");
    };
    assert!(CONTENT_CHUNK.as_bytes().as_ptr_range().contains(&content.as_ptr()));
}

#[test]
fn escaped_content_is_unescaped() {
    let data = r#"{"choices":[{"index":0,"delta":{"content":"line\nnext \"q\" caf\u00e9 \ud83d\ude00"}}]}"#;
    assert_eq!(parse_chunk(data).unwrap(), delta(Some("line\nnext \"q\" café 😀"), None));
}

#[test]
fn the_role_only_first_chunk_has_no_content() {
    let data = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}"#;
    assert_eq!(parse_chunk(data).unwrap(), identified(delta(None, None), "c", None));
    let data = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null}}]}"#;
    assert_eq!(parse_chunk(data).unwrap(), delta(Some(""), None));
}

#[test]
fn the_last_chunk_carries_the_finish_reason() {
    let data = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}"#;
    assert_eq!(parse_chunk(data).unwrap(), identified(delta(None, Some("stop")), "c", None));
    let data = r#"{"choices":[{"index":0,"delta":{"content":"end"},"finish_reason":"length"}]}"#;
    assert_eq!(parse_chunk(data).unwrap(), delta(Some("end"), Some("length")));
}

#[test]
fn an_empty_finish_reason_means_not_finished() {
    let data = r#"{"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":""}]}"#;
    assert_eq!(parse_chunk(data).unwrap(), delta(Some("a"), None));
}

#[test]
fn usage_chunks_with_empty_choices_have_no_content() {
    let data = r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"completion_tokens_details":{"reasoning_tokens":0}}}"#;
    let ChunkEvent::Delta { content: None, usage: Some(usage), id: Some(id), .. } =
        parse_chunk(data).unwrap()
    else {
        panic!("a usage chunk")
    };
    assert_eq!(id, "c");
    let expected = Usage {
        prompt_tokens: Some(9),
        completion_tokens: Some(12),
        total_tokens: Some(21),
        cached_tokens: None,
        reasoning_tokens: Some(0),
    };
    assert_eq!(usage, expected);
}

#[test]
fn usage_reads_cached_tokens_and_a_usage_of_another_shape_reads_as_none() {
    let data = r#"{"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":5,"total_tokens":105,"prompt_tokens_details":{"cached_tokens":64,"audio_tokens":0}}}"#;
    let ChunkEvent::Delta { usage: Some(usage), .. } = parse_chunk(data).unwrap() else { panic!("usage") };
    assert_eq!(
        (usage.prompt_tokens, usage.cached_tokens, usage.reasoning_tokens),
        (Some(100), Some(64), None)
    );
    // A count that is not a non-negative integer is left out, not an error.
    let data = r#"{"choices":[],"usage":{"prompt_tokens":-1,"completion_tokens":2.5,"total_tokens":"7"}}"#;
    let ChunkEvent::Delta { usage: Some(usage), .. } = parse_chunk(data).unwrap() else { panic!("usage") };
    assert_eq!(usage, Usage::default());
    for odd in [
        r#"{"choices":[],"usage":"lots"}"#,
        r#"{"choices":[],"usage":[1,2]}"#,
        r#"{"choices":[],"usage":null}"#,
    ] {
        let ChunkEvent::Delta { usage, .. } = parse_chunk(odd).unwrap() else { panic!("a delta: {odd}") };
        assert_eq!(usage, None, "{odd}");
    }
    let mut json = String::new();
    Usage { prompt_tokens: Some(3), total_tokens: Some(5), ..Usage::default() }
        .write_json(&mut json)
        .unwrap();
    assert_eq!(json, r#"{"prompt_tokens":3,"total_tokens":5}"#);
}

#[test]
fn tool_call_deltas_and_null_content_have_no_content() {
    let data = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#;
    assert_eq!(parse_chunk(data).unwrap(), delta(None, None));
    let data = r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\""}}]}}]}"#;
    assert_eq!(parse_chunk(data).unwrap(), delta(None, None));
}

#[test]
fn reasoning_deltas_are_read_apart_from_the_content() {
    let data = r#"{"choices":[{"index":0,"delta":{"reasoning_content":"Weighing it.","content":null},"finish_reason":null}]}"#;
    let expected = ChunkEvent::Delta {
        content: None,
        reasoning: Some(Cow::Borrowed("Weighing it.")),
        finish_reason: None,
        usage: None,
        id: None,
        model: None,
    };
    assert_eq!(parse_chunk(data).unwrap(), expected);
    let both = r#"{"choices":[{"delta":{"reasoning_content":"a\nb","content":"c"}}]}"#;
    let ChunkEvent::Delta { content, reasoning, .. } = parse_chunk(both).unwrap() else { panic!("a delta") };
    assert_eq!((content.as_deref(), reasoning.as_deref()), (Some("c"), Some("a\nb")));
    assert_eq!(
        parse_chunk(r#"{"choices":[{"delta":{"reasoning_content":7}}]}"#).unwrap_err(),
        ChunkError::UnexpectedShape("`choices[0].delta.reasoning_content` is not a string")
    );
}

#[test]
fn unknown_fields_anywhere_are_ignored() {
    let data = r#"{"x":[1,{"y":null}],"choices":[{"z":true,"delta":{"content":"a","extra":{"deep":[[]]}},"finish_reason":null}],"error":null}"#;
    assert_eq!(parse_chunk(data).unwrap(), delta(Some("a"), None));
    assert_eq!(parse_chunk("{}").unwrap(), delta(None, None));
}

#[test]
fn only_the_first_choice_is_read() {
    let data =
        r#"{"choices":[{"delta":{"content":"first"}},{"delta":{"content":"second"}},"not even an object"]}"#;
    assert_eq!(parse_chunk(data).unwrap(), delta(Some("first"), None));
}

#[test]
fn done_is_the_exact_sentinel_up_to_surrounding_whitespace() {
    assert_eq!(parse_chunk("[DONE]").unwrap(), ChunkEvent::Done);
    assert_eq!(parse_chunk(" [DONE]\r\n").unwrap(), ChunkEvent::Done);
    assert!(matches!(parse_chunk("[done]"), Err(ChunkError::NotJson(_))));
    assert!(matches!(parse_chunk("[DONE] now"), Err(ChunkError::NotJson(_))));
}

#[test]
fn an_error_object_in_the_stream_is_an_error() {
    let data = r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}"#;
    assert_eq!(
        parse_chunk(data).unwrap(),
        ChunkEvent::Error(upstream_error(
            "The server had an error while processing your request.",
            "server_error",
            None
        ))
    );
}

#[test]
fn error_codes_may_be_strings_or_numbers() {
    let with_code = |code: &str| {
        let data = format!(r#"{{"error":{{"message":"m","type":"t","code":{code}}}}}"#);
        match parse_chunk(&data).unwrap() {
            ChunkEvent::Error(error) => error.code,
            other => panic!("not an error: {other:?}"),
        }
    };
    assert_eq!(with_code(r#""rate_limit_exceeded""#).as_deref(), Some("rate_limit_exceeded"));
    assert_eq!(with_code("429").as_deref(), Some("429"));
    assert_eq!(with_code("-1").as_deref(), Some("-1"));
    assert_eq!(with_code("null"), None);
}

#[test]
fn errors_without_a_type_or_as_bare_strings_get_the_upstream_error_type() {
    assert_eq!(
        parse_chunk(r#"{"error":{"message":"overloaded"}}"#).unwrap(),
        ChunkEvent::Error(upstream_error("overloaded", "upstream_error", None))
    );
    assert_eq!(
        parse_chunk(r#"{"error":"model not found"}"#).unwrap(),
        ChunkEvent::Error(upstream_error("model not found", "upstream_error", None))
    );
}

#[test]
fn flat_errors_of_compatible_servers_are_errors() {
    let data = r#"{"object":"error","message":"max_tokens is too large","type":"BadRequestError","param":null,"code":400}"#;
    assert_eq!(
        parse_chunk(data).unwrap(),
        ChunkEvent::Error(upstream_error("max_tokens is too large", "BadRequestError", Some("400")))
    );
}

#[test]
fn payloads_that_are_not_json_are_not_json() {
    for data in ["", "{", "hello", "[1,2", r#""text"#, r#"{"choices":["#, r#"{"choices":[]} trailing"#] {
        assert!(matches!(parse_chunk(data), Err(ChunkError::NotJson(_))), "{data:?}");
    }
}

#[test]
fn json_of_the_wrong_shape_names_what_is_wrong() {
    let cases = [
        ("[1,2]", "expected a JSON object"),
        (r#""text""#, "expected a JSON object"),
        ("42", "expected a JSON object"),
        (r#"{"choices":{}}"#, "`choices` is not an array"),
        (r#"{"choices":"none"}"#, "`choices` is not an array"),
        (r#"{"choices":[1]}"#, "`choices[0]` is not an object"),
        (r#"{"choices":[[{"content":"x"}]]}"#, "`choices[0]` is not an object"),
        (r#"{"choices":[{"delta":["x"]}]}"#, "`choices[0].delta` is not an object"),
        (r#"{"choices":[{"delta":{"content":5}}]}"#, "`choices[0].delta.content` is not a string"),
        (r#"{"choices":[{"finish_reason":1}]}"#, "`choices[0].finish_reason` is not a string"),
        (r#"{"error":5}"#, "`error` is neither an object nor a string"),
        (r#"{"error":{"message":["m"]}}"#, "`error.message` is not a string"),
        (r#"{"error":{"message":"m","code":{}}}"#, "`error.code` is neither a string nor a number"),
        (r#"{"object":7}"#, "`object` is not a string"),
    ];
    for (data, problem) in cases {
        assert_eq!(parse_chunk(data), Err(ChunkError::UnexpectedShape(problem)), "{data}");
    }
}

#[test]
fn a_failed_request_reports_the_error_object_of_its_body() {
    let body = br#"{
  "error": {
    "message": "Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM).",
    "type": "tokens",
    "param": null,
    "code": "rate_limit_exceeded"
  }
}"#;
    assert_eq!(
        error_from_status(429, body),
        upstream_error(
            "Rate limit reached for gpt-4o-mini in organization org-x on tokens per min (TPM).",
            "tokens",
            Some("rate_limit_exceeded")
        )
    );
    let flat = br#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","param":null,"code":404}"#;
    assert_eq!(
        error_from_status(404, flat),
        upstream_error("The model `x` does not exist.", "NotFoundError", Some("404"))
    );
}

#[test]
fn a_failed_request_without_an_error_object_reports_its_status() {
    let expected = upstream_error("backend answered HTTP 502", "upstream_error", None);
    for body in [
        &b"<html><body>502 Bad Gateway</body></html>"[..],
        b"",
        br#"{"error":{"message":"cut sh"#,
        br#"{"detail":"Not Found"}"#,
        b"\xFF\xFE{}",
    ] {
        assert_eq!(error_from_status(502, body), expected);
    }
}

/// OpenAI's answer to a wrong key, as it sends it.
const INVALID_KEY_BODY: &str = r#"{
    "error": {
        "message": "Incorrect API key provided: sk-proj-********************WXyz. You can find your API key at https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": null,
        "code": "invalid_api_key"
    }
}"#;

#[test]
fn a_401_body_is_reported_without_the_key() {
    let error = error_from_status(401, INVALID_KEY_BODY.as_bytes());
    assert_eq!(
        error,
        upstream_error(
            "Incorrect API key provided: sk-[redacted]. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            Some("invalid_api_key")
        )
    );
    assert!(!error.message.contains("WXyz"));
}

#[test]
fn error_chunks_in_the_stream_are_redacted_in_every_shape() {
    let key = "sk-abcdefghijklmnopqrstuvwxyz0123456789ABCD";
    let cases = [
        format!(
            r#"{{"error":{{"message":"bad key {key}","type":"invalid_request_error","code":"invalid_api_key"}}}}"#
        ),
        format!(r#"{{"error":"bad key {key}"}}"#),
        format!(r#"{{"object":"error","message":"bad key {key}","type":"AuthenticationError","code":401}}"#),
    ];
    for data in &cases {
        let Ok(ChunkEvent::Error(error)) = parse_chunk(data) else {
            panic!("an error event expected from {data}")
        };
        assert_eq!(error.message, "bad key sk-[redacted]", "{data}");
    }
    let data = r#"{"error":{"message":"proxy refused Authorization: Bearer tok_9f8e7d6c","type":"Bearer x","code":"sk-abcdefghijklmnopqrstuvwx"}}"#;
    assert_eq!(
        parse_chunk(data).unwrap(),
        ChunkEvent::Error(upstream_error(
            "proxy refused Authorization: Bearer [redacted]",
            "Bearer [redacted]",
            Some("sk-[redacted]")
        ))
    );
    // The same body as a non-2xx answer is redacted the same way.
    assert_eq!(
        error_from_status(403, data.as_bytes()).message,
        "proxy refused Authorization: Bearer [redacted]"
    );
}
