use proptest::prelude::*;

use super::*;

fn decoded(json: &str) -> Handoff {
    decode(json.as_bytes()).unwrap_or_else(|e| panic!("{json} should decode: {e}"))
}

fn invalid_field(json: &str) -> (&'static str, String) {
    match decode(json.as_bytes()) {
        Err(HandoffError::InvalidField { field, reason }) => (field, reason),
        other => panic!("{json} should have an invalid field, got {other:?}"),
    }
}

fn contents(handoff: &Handoff) -> Vec<(&str, &str)> {
    handoff.messages.iter().map(|m| (m.role.as_str(), m.content.get())).collect()
}

#[test]
fn empty_or_padding_only_data_means_all_defaults() {
    for data in [&b""[..], b"\0", b"\0\0\0", b" \n\t\0\r\n", b"\0 \0"] {
        let handoff = decode(data).unwrap();
        assert!(
            handoff.messages.is_empty() && handoff.model.is_none() && handoff.response_headers.is_empty()
        );
    }
}

#[test]
fn nul_and_whitespace_around_the_json_are_trimmed() {
    let handoff = decode(b"\0\n {\"prompt\":\"hi\"} \r\n\0\0").unwrap();
    assert_eq!(handoff.last_user_text(), "hi");
}

#[test]
fn oversized_data_is_refused_before_parsing() {
    let mut data = vec![0u8; MAX_HANDOFF_BYTES + 1];
    assert_eq!(decode(&data).unwrap_err(), HandoffError::TooLarge { len: MAX_HANDOFF_BYTES + 1 });
    // The limit itself is fine, padding included.
    data.truncate(MAX_HANDOFF_BYTES);
    data[..2].copy_from_slice(b"{}");
    assert!(decode(&data).is_ok());
}

#[test]
fn invalid_json_says_where_it_broke() {
    let HandoffError::NotJson(why) = decode(br#"{"prompt": }"#).unwrap_err() else { panic!("not NotJson") };
    assert_eq!(why, "expected value at line 1 column 12");
    // Positions count from the start of the payload, padding included.
    let HandoffError::NotJson(why) = decode(b"\0\0{\"prompt\": }").unwrap_err() else {
        panic!("not NotJson")
    };
    assert_eq!(why, "expected value at line 1 column 14");
    let HandoffError::NotJson(why) = decode(b"\n\n  {\n\"a\": }").unwrap_err() else { panic!("not NotJson") };
    assert_eq!(why, "expected value at line 4 column 6");
}

#[test]
fn broken_payloads_are_not_json() {
    let deep = "[".repeat(10_000);
    let deep_in_unknown_field = format!("{{\"x\":{}}}", "[".repeat(5_000));
    for data in [
        &b"{"[..],
        b"{\"prompt\":\"unterminated",
        b"[1,",
        b"{} trailing",
        b"{}{}",
        b"{\"prompt\":\"\xff\xfe\"}",
        b"{\x0c}",
        b"nul\0inside",
        b"{'single':'quotes'}",
        deep.as_bytes(),
        deep_in_unknown_field.as_bytes(),
    ] {
        assert!(
            matches!(decode(data), Err(HandoffError::NotJson(_))),
            "{:?} should be NotJson, got {:?}",
            String::from_utf8_lossy(data),
            decode(data)
        );
    }
}

#[test]
fn json_that_is_not_an_object_is_refused() {
    for data in ["[]", "[{\"prompt\":\"x\"}]", "\"prompt\"", "42", "-1.5", "true", "null"] {
        assert_eq!(decode(data.as_bytes()).unwrap_err(), HandoffError::NotObject, "{data}");
    }
}

#[test]
fn prompt_becomes_one_user_message_written_back_as_json() {
    // PHP's escapes are decoded; only what JSON needs is escaped again.
    let handoff = decoded(r#"{"prompt":"caf\u00e9 a\/b \"q\""}"#);
    assert_eq!(contents(&handoff), [("user", r#""café a/b \"q\"""#)]);
    assert_eq!(handoff.last_user_text(), "café a/b \"q\"");
}

#[test]
fn messages_win_over_prompt_and_keep_raw_content() {
    let handoff = decoded(
        r#"{"prompt":"ignored","messages":[
            {"role":"system","content":"be brief"},
            {"role":"user","content":[{"type":"text","text":"hi"}],"name":"x"},
            {"role":"assistant","content":null},
            {"role":"assistant"}
        ]}"#,
    );
    assert_eq!(
        contents(&handoff),
        [
            ("system", r#""be brief""#),
            ("user", r#"[{"type":"text","text":"hi"}]"#),
            ("assistant", "null"),
            ("assistant", "null"),
        ]
    );
}

#[test]
fn empty_messages_fall_back_to_prompt() {
    let handoff = decoded(r#"{"messages":[],"prompt":"hello"}"#);
    assert_eq!(contents(&handoff), [("user", r#""hello""#)]);
    assert!(decoded(r#"{"messages":[]}"#).messages.is_empty());
}

#[test]
fn malformed_messages_name_the_field() {
    let (field, reason) = invalid_field(r#"{"messages":"hi"}"#);
    assert_eq!(field, "messages");
    assert!(reason.contains("array"), "{reason}");
    assert_eq!(
        invalid_field(r#"{"messages":[{"role":"user","content":"a"},"b"]}"#).1,
        "message 1 is not an object"
    );
    assert_eq!(invalid_field(r#"{"messages":[["user","a"]]}"#).1, "message 0 is not an object");
    assert_eq!(invalid_field(r#"{"messages":[{"content":"a"}]}"#).1, "message 0 needs a string `role`");
    assert_eq!(
        invalid_field(r#"{"messages":[{"role":7,"content":"a"}]}"#).1,
        "message 0 needs a string `role`"
    );
}

#[test]
fn string_fields_are_read_and_wrong_types_name_the_field() {
    let handoff = decoded(r#"{"model":"gpt-4o","request_id":"r-1","user_id":"u-9","test_pattern":"burst"}"#);
    assert_eq!(handoff.model.as_deref(), Some("gpt-4o"));
    assert_eq!(handoff.request_id.as_deref(), Some("r-1"));
    assert_eq!(handoff.user_id.as_deref(), Some("u-9"));
    assert_eq!(handoff.test_pattern.as_deref(), Some("burst"));
    for field in ["prompt", "model", "request_id", "test_pattern", "system", "user"] {
        for value in ["1", "true", "[]", "{}"] {
            let (named, reason) = invalid_field(&format!(r#"{{"{field}":{value}}}"#));
            assert_eq!((named, reason.as_str()), (field, "must be a string"));
        }
    }
    // The prompt is checked even when messages win.
    assert_eq!(invalid_field(r#"{"messages":[{"role":"user","content":"a"}],"prompt":5}"#).0, "prompt");
}

#[test]
fn empty_model_means_the_default() {
    assert_eq!(decoded(r#"{"model":""}"#).model, None);
}

#[test]
fn user_id_may_be_an_integer() {
    assert_eq!(decoded(r#"{"user_id":42}"#).user_id.as_deref(), Some("42"));
    assert_eq!(decoded(r#"{"user_id":-7}"#).user_id.as_deref(), Some("-7"));
    assert_eq!(
        decoded(r#"{"user_id":18446744073709551615}"#).user_id.as_deref(),
        Some("18446744073709551615")
    );
    for value in ["1.5", "1e3", "true", "[1]", "{}"] {
        let (field, _) = invalid_field(&format!(r#"{{"user_id":{value}}}"#));
        assert_eq!(field, "user_id", "{value}");
    }
}

#[test]
fn max_tokens_is_a_u32() {
    assert_eq!(decoded(r#"{"max_tokens":0}"#).max_tokens, Some(0));
    assert_eq!(decoded(r#"{"max_tokens":4294967295}"#).max_tokens, Some(u32::MAX));
    for value in ["-1", "4294967296", "1.5", "\"100\"", "true"] {
        let (field, reason) = invalid_field(&format!(r#"{{"max_tokens":{value}}}"#));
        assert_eq!((field, reason.as_str()), ("max_tokens", "must be an integer from 0 to 4294967295"));
    }
}

#[test]
fn temperature_is_a_number_from_0_to_2() {
    assert_eq!(decoded(r#"{"temperature":0}"#).temperature, Some(0.0));
    assert_eq!(decoded(r#"{"temperature":0.7}"#).temperature, Some(0.7));
    assert_eq!(decoded(r#"{"temperature":2}"#).temperature, Some(2.0));
    for value in ["-0.1", "2.01", "1e400", "\"1\"", "false"] {
        let (field, reason) = invalid_field(&format!(r#"{{"temperature":{value}}}"#));
        assert_eq!((field, reason.as_str()), ("temperature", "must be a number from 0 to 2"), "{value}");
    }
}

#[test]
fn test_pattern_must_be_a_header_value() {
    assert_eq!(decoded(r#"{"test_pattern":"  slow\tstart "}"#).test_pattern.as_deref(), Some("slow\tstart"));
    assert_eq!(decoded(r#"{"test_pattern":" "}"#).test_pattern, None);
    for value in [r#""a\r\nX-Injected: 1""#, r#""nul\u0000""#, r#""del\u007f""#] {
        let (field, reason) = invalid_field(&format!(r#"{{"test_pattern":{value}}}"#));
        assert_eq!((field, reason.as_str()), ("test_pattern", "header value contains a control character"));
    }
    let long = format!(r#"{{"test_pattern":"{}"}}"#, "p".repeat(1025));
    assert_eq!(invalid_field(&long).0, "test_pattern");
}

#[test]
fn null_means_absent_for_every_field() {
    let handoff = decoded(
        r#"{"prompt":null,"messages":null,"model":null,"user_id":null,"request_id":null,
            "max_tokens":null,"temperature":null,"test_pattern":null,"response_headers":null,
            "system":null,"max_completion_tokens":null,"top_p":null,"seed":null,"presence_penalty":null,
            "frequency_penalty":null,"stop":null,"response_format":null,"tools":null,"tool_choice":null,
            "user":null,"format":null,"reasoning":null}"#,
    );
    assert!(handoff.stop.is_none() && handoff.response_format.is_none() && handoff.tools.is_none());
    assert!(handoff.tool_choice.is_none() && handoff.user.is_none() && handoff.seed.is_none());
    assert!(handoff.top_p.is_none() && handoff.max_completion_tokens.is_none());
    assert_eq!(handoff.delivery, Delivery::default());
    assert!(handoff.messages.is_empty());
    assert_eq!((handoff.model, handoff.user_id, handoff.request_id), (None, None, None));
    assert_eq!((handoff.max_tokens, handoff.temperature, handoff.test_pattern), (None, None, None));
    assert!(handoff.response_headers.is_empty() && handoff.rejected_headers.is_empty());
    // null prompt with messages null: no message at all.
    assert_eq!(decoded(r#"{"messages":null,"prompt":"x"}"#).last_user_text(), "x");
}

#[test]
fn unknown_fields_are_ignored_whatever_they_hold() {
    let handoff = decoded(r#"{"session":{"a":[1,2,{"b":null}]},"prompt":"hi","extra":true,"n":1.5e10}"#);
    assert_eq!(handoff.last_user_text(), "hi");
}

#[test]
fn escaped_keys_are_recognised_and_the_last_duplicate_wins() {
    assert_eq!(decoded(r#"{"pro\u006dpt":"escaped key"}"#).last_user_text(), "escaped key");
    assert_eq!(decoded(r#"{"model":"first","model":"second"}"#).model.as_deref(), Some("second"));
    assert_eq!(decoded(r#"{"model":"first","model":null}"#).model, None);
}

#[test]
fn every_new_option_is_read_with_its_type() {
    let handoff = decoded(
        r#"{"max_completion_tokens":64,"top_p":0.5,"seed":-9223372036854775808,"presence_penalty":-2,
            "frequency_penalty":1.25,"stop":["a","\u0062"],"response_format":{"type":"json_object"},
            "tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto","user":"u-1",
            "format":"openai","reasoning":true}"#,
    );
    assert_eq!(handoff.max_completion_tokens, Some(64));
    assert_eq!(handoff.top_p, Some(0.5));
    assert_eq!(handoff.seed, Some(i64::MIN));
    assert_eq!((handoff.presence_penalty, handoff.frequency_penalty), (Some(-2.0), Some(1.25)));
    assert_eq!(handoff.stop.as_ref().map(Json::get), Some(r#"["a","b"]"#));
    assert_eq!(handoff.response_format.as_ref().map(Json::get), Some(r#"{"type":"json_object"}"#));
    assert_eq!(
        handoff.tools.as_ref().map(Json::get),
        Some(r#"[{"type":"function","function":{"name":"f"}}]"#)
    );
    assert_eq!(handoff.tool_choice.as_ref().map(Json::get), Some(r#""auto""#));
    assert_eq!(handoff.user.as_deref(), Some("u-1"));
    assert_eq!(handoff.delivery, Delivery { format: Format::OpenAi, reasoning: true, usage_event: false });
    assert_eq!(decoded(r#"{"stop":"END"}"#).stop.as_ref().map(Json::get), Some(r#""END""#));
    assert_eq!(
        decoded(r#"{"tool_choice":{"type":"function"}}"#).tool_choice.as_ref().map(Json::get),
        Some(r#"{"type":"function"}"#)
    );
    assert_eq!(decoded(r#"{"format":"content"}"#).delivery, Delivery::default());
    assert_eq!(decoded(r#"{"user":""}"#).user, None);
}

#[test]
fn wrong_types_and_ranges_name_the_field() {
    let cases: &[(&str, &str)] = &[
        ("max_completion_tokens", "-1"),
        ("max_completion_tokens", "\"5\""),
        ("top_p", "1.01"),
        ("top_p", "-0.1"),
        ("top_p", "\"0.5\""),
        ("seed", "1.5"),
        ("seed", "9223372036854775808"),
        ("seed", "\"1\""),
        ("presence_penalty", "2.5"),
        ("presence_penalty", "-2.01"),
        ("frequency_penalty", "3"),
        ("frequency_penalty", "true"),
        ("stop", "5"),
        ("stop", "[\"a\",1]"),
        ("stop", "{}"),
        ("response_format", "\"json_object\""),
        ("response_format", "{\"type\":1}"),
        ("response_format", "{}"),
        ("tools", "{\"type\":\"function\"}"),
        ("tools", "[{\"function\":{}}]"),
        ("tools", "[\"f\"]"),
        ("tool_choice", "1"),
        ("tool_choice", "[\"auto\"]"),
        ("user", "7"),
        ("format", "\"sse\""),
        ("format", "\"OpenAI\""),
        ("format", "1"),
        ("reasoning", "\"yes\""),
        ("reasoning", "1"),
        ("usage_event", "\"true\""),
        ("record_text", "1"),
        ("system", "[\"s\"]"),
    ];
    for (field, value) in cases {
        let json = format!(r#"{{"prompt":"p","{field}":{value}}}"#);
        let (named, reason) = invalid_field(&json);
        assert_eq!(named, *field, "{json}: {reason}");
        let message = HandoffError::InvalidField { field: named, reason }.to_string();
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
    // Forwarded JSON that strict parsers refuse never reaches the backend.
    assert_eq!(invalid_field(r#"{"tools":[{"type":"function","x":"\ud800"}]}"#).0, "tools");
    assert_eq!(invalid_field(r#"{"response_format":{"type":"t","n":1e999}}"#).0, "response_format");
}

#[test]
fn request_id_must_be_a_header_value() {
    assert_eq!(decoded(r#"{"request_id":" r-1 "}"#).request_id.as_deref(), Some("r-1"));
    assert_eq!(decoded(r#"{"request_id":""}"#).request_id, None);
    for value in [r#""a\r\nX-Injected: 1""#, r#""nul\u0000""#] {
        let (field, reason) = invalid_field(&format!(r#"{{"request_id":{value}}}"#));
        assert_eq!((field, reason.as_str()), ("request_id", "header value contains a control character"));
    }
    assert_eq!(invalid_field(&format!(r#"{{"request_id":"{}"}}"#, "r".repeat(1025))).0, "request_id");
}

#[test]
fn system_and_prompt_build_the_conversation_when_messages_are_absent() {
    let handoff = decoded(r#"{"system":"Be brief.","prompt":"Hi"}"#);
    assert_eq!(contents(&handoff), [("system", r#""Be brief.""#), ("user", r#""Hi""#)]);
    assert_eq!(handoff.last_user_text(), "Hi");
    assert_eq!(contents(&decoded(r#"{"system":"s"}"#)), [("system", r#""s""#)]);
    let handoff = decoded(r#"{"system":"s","messages":[{"role":"user","content":"m"}]}"#);
    assert_eq!(contents(&handoff), [("user", r#""m""#)]);
}

#[test]
fn message_contents_are_strings_content_parts_or_null() {
    let handoff = decoded(
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{"url":"data:x"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"role":"tool","tool_call_id":"c1","content":"42","name":"f"}]}"#,
    );
    assert_eq!(
        handoff.messages[1].tool_calls.as_ref().map(|calls| calls.get().starts_with("[{\"id\":\"c1\"")),
        Some(true)
    );
    assert_eq!(handoff.messages[2].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(handoff.messages[2].name.as_deref(), Some("f"));
    for (content, reason) in [
        ("1", "message 0 content must be a string, an array of content parts or null"),
        ("true", "message 0 content must be a string, an array of content parts or null"),
        (r#"{"type":"text"}"#, "message 0 content must be a string, an array of content parts or null"),
        (r#"["text"]"#, "message 0 content part 0 needs a string `type`"),
        (r#"[{"type":"text"},{"text":"x"}]"#, "message 0 content part 1 needs a string `type`"),
    ] {
        let (field, got) =
            invalid_field(&format!(r#"{{"messages":[{{"role":"user","content":{content}}}]}}"#));
        assert_eq!((field, got.as_str()), ("messages", reason), "{content}");
    }
    for (extra, reason) in [
        (r#""name":1"#, "message 0 `name` must be a string"),
        (r#""tool_call_id":[]"#, "message 0 `tool_call_id` must be a string"),
        (r#""tool_calls":{}"#, "message 0 `tool_calls` must be an array of objects"),
        (r#""tool_calls":["x"]"#, "message 0 `tool_calls` must be an array of objects"),
    ] {
        let (field, got) = invalid_field(&format!(r#"{{"messages":[{{"role":"assistant",{extra}}}]}}"#));
        assert_eq!((field, got.as_str()), ("messages", reason), "{extra}");
    }
}

fn headers(handoff: &Handoff) -> Vec<(&str, &str)> {
    handoff.response_headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

fn rejections(handoff: &Handoff) -> Vec<(&str, &str)> {
    handoff.rejected_headers.iter().map(|r| (r.name.as_str(), r.reason)).collect()
}

#[test]
fn response_headers_keep_document_order() {
    let handoff =
        decoded(r#"{"response_headers":{"Z-First":"1","A-Second":"2","M-Third":"3","X-\u0041":"4"}}"#);
    assert_eq!(headers(&handoff), [("Z-First", "1"), ("A-Second", "2"), ("M-Third", "3"), ("X-A", "4")]);
    assert!(handoff.rejected_headers.is_empty());
}

#[test]
fn invalid_response_headers_are_dropped_with_a_reason() {
    let handoff = decoded(
        r#"{"response_headers":{
            "X-Ok":"  padded\t",
            "Content-Type":"text/html",
            "Transfer-Encoding":"chunked",
            "X-Split":"a\r\nSet-Cookie: evil=1",
            "Bad Name":"v",
            "X-Number":5,
            "X-Null":null,
            "x-ok":"duplicate",
            "Set-Cookie":"sid=1; Secure"
        }}"#,
    );
    assert_eq!(headers(&handoff), [("X-Ok", "padded"), ("Set-Cookie", "sid=1; Secure")]);
    assert_eq!(
        rejections(&handoff),
        [
            ("Content-Type", "header defines the SSE response"),
            ("Transfer-Encoding", "hop-by-hop or framing header"),
            ("X-Split", "header value contains a control character"),
            ("Bad Name", "header name is not an RFC 9110 token"),
            ("X-Number", "header value is not a string"),
            ("X-Null", "header value is not a string"),
            ("x-ok", "duplicate header name"),
        ]
    );
}

#[test]
fn response_headers_are_capped_in_count() {
    let entries: Vec<String> = (0..40).map(|i| format!(r#""X-H{i}":"v""#)).collect();
    let handoff = decoded(&format!(r#"{{"response_headers":{{{}}}}}"#, entries.join(",")));
    assert_eq!(handoff.response_headers.len(), MAX_RESPONSE_HEADERS);
    assert_eq!(handoff.response_headers.last().map(|(n, _)| n.as_str()), Some("X-H31"));
    assert_eq!(handoff.rejected_headers.len(), 8);
    assert_eq!(rejections(&handoff)[0], ("X-H32", "more than 32 response headers"));
}

#[test]
fn response_headers_are_capped_in_size() {
    // Each line "X-Hnn: " + 1000 bytes + CRLF is 1010 bytes: eight fit in 8 KiB.
    let value = "v".repeat(1000);
    let entries: Vec<String> = (10..20).map(|i| format!(r#""X-H{i}":"{value}""#)).collect();
    let handoff = decoded(&format!(r#"{{"response_headers":{{{},"X-Small":"s"}}}}"#, entries.join(",")));
    let kept: Vec<&str> = handoff.response_headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(kept, ["X-H10", "X-H11", "X-H12", "X-H13", "X-H14", "X-H15", "X-H16", "X-H17", "X-Small"]);
    assert_eq!(
        rejections(&handoff),
        [
            ("X-H18", "response headers over 8 KiB in total"),
            ("X-H19", "response headers over 8 KiB in total")
        ]
    );
    let total: usize = handoff.response_headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    assert!(total <= MAX_RESPONSE_HEADER_BYTES);
}

#[test]
fn rejected_names_are_cut_for_the_log() {
    let name = "é".repeat(100);
    let handoff = decoded(&format!(r#"{{"response_headers":{{"{name}":"v"}}}}"#));
    let rejected = &handoff.rejected_headers[0];
    assert!(rejected.name.len() <= 64 && name.starts_with(&rejected.name) && !rejected.name.is_empty());
}

#[test]
fn response_headers_must_be_an_object_but_empty_php_arrays_pass() {
    assert!(decoded(r#"{"response_headers":[]}"#).response_headers.is_empty());
    for value in [r#"["X-A: 1"]"#, r#""X-A: 1""#, "1"] {
        let (field, _) = invalid_field(&format!(r#"{{"response_headers":{value}}}"#));
        assert_eq!(field, "response_headers");
    }
}

#[test]
fn last_user_text_is_the_last_user_string() {
    let handoff = decoded(
        r#"{"messages":[
            {"role":"user","content":"first"},
            {"role":"assistant","content":"reply"},
            {"role":"user","content":"second\nline"},
            {"role":"assistant","content":"again"}
        ]}"#,
    );
    assert_eq!(handoff.last_user_text(), "second\nline");
    let parts = decoded(r#"{"messages":[{"role":"user","content":[{"type":"text","text":"x"}]}]}"#);
    assert_eq!(parts.last_user_text(), "");
    assert_eq!(decoded(r#"{"messages":[{"role":"system","content":"s"}]}"#).last_user_text(), "");
    assert_eq!(Handoff::default().last_user_text(), "");
}

#[test]
fn last_user_text_borrows_when_there_is_nothing_to_unescape() {
    let handoff = decoded(r#"{"prompt":"plain text"}"#);
    assert!(matches!(handoff.last_user_text(), Cow::Borrowed("plain text")));
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&data);
    }

    #[test]
    fn json_lookalike_bytes_never_panic(
        data in prop::collection::vec(prop::sample::select(b"{}[]\":,\\0123456789.eE-+ tnulfrasepromptmessages\0".to_vec()), 0..256)
    ) {
        let _ = decode(&data);
    }

    #[test]
    fn any_prompt_comes_back_as_the_last_user_text(prompt in any::<String>(), php_escapes in any::<bool>()) {
        let mut json = serde_json::to_string(&prompt).unwrap();
        if php_escapes {
            // PHP's json_encode escapes '/' and non-ASCII characters by default.
            json = json.replace('/', "\\/").chars().map(|c| {
                if c.is_ascii() { c.to_string() } else {
                    c.encode_utf16(&mut [0; 2]).iter().map(|u| format!("\\u{u:04x}")).collect()
                }
            }).collect();
        }
        let handoff = decode(format!(r#"{{"prompt":{json}}}"#).as_bytes()).unwrap();
        prop_assert_eq!(handoff.last_user_text(), prompt.as_str());
        let forwarded: String = serde_json::from_str(handoff.messages[0].content.get()).unwrap();
        prop_assert_eq!(forwarded, prompt);
    }
}

#[test]
fn usage_event_and_record_text_are_read_as_booleans_and_default_to_off() {
    let handoff = decode(br#"{"prompt":"p","usage_event":true,"record_text":true}"#).unwrap();
    assert!(handoff.delivery.usage_event && handoff.record_text);
    let handoff = decode(br#"{"prompt":"p","usage_event":null}"#).unwrap();
    assert!(!handoff.delivery.usage_event && !handoff.record_text);
}
