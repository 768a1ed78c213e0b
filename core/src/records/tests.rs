use bytes::Bytes;
use serde_json::Value;

use super::*;
use crate::handoff::{self, Delivery, Format};
use crate::mock;
use crate::stream::testing::{Harness, TEST_HEAD};
use crate::stream::{Input, Source, StreamConfig};

const BODY: &str = concat!(
    "data: {\"id\":\"chatcmpl-9\",\"model\":\"gpt-x-2025\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"model\":\"gpt-x-2025\",\"choices\":[{\"delta\":{\"content\":\"Héllo\"}}]}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"model\":\"gpt-x-2025\",\"choices\":[{\"delta\":{\"content\":\" world\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-9\",\"model\":\"gpt-x-2025\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,",
    "\"completion_tokens\":2,\"total_tokens\":14,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n",
    "data: [DONE]\n\n",
);

fn meta(handoff: &str) -> RecordMeta {
    let handoff = handoff::decode(handoff.as_bytes()).expect("a valid handoff");
    RecordMeta::for_handoff(&handoff, Some("alpha"), Some("default-model"), 7, 0x1234, 1_700_000_000_000)
}

fn record_of(harness: &Harness, meta: &RecordMeta, bytes: u64) -> Value {
    let outcome = harness.outcome().expect("finished").clone();
    let mut summary = harness.stream().summary(harness.now(), &outcome);
    summary.bytes = bytes;
    let json = completion_record(meta, &summary, &outcome, harness.stream().recording());
    serde_json::from_slice(&json).expect("a record is JSON")
}

fn backend_stream(config: &StreamConfig, delivery: Delivery, keep_text: bool) -> Harness {
    let mut harness =
        Harness::with_delivery(config, Bytes::from_static(TEST_HEAD), Source::Backend, delivery);
    harness.record(keep_text, config.record_text_max_bytes);
    harness
}

#[test]
fn a_completed_stream_records_usage_model_id_finish_reason_and_its_text() {
    let config = StreamConfig::default();
    let mut harness = backend_stream(&config, Delivery::default(), true);
    harness.handle(Input::BackendHead { status: 200 });
    harness.handle(Input::BackendData(BODY.as_bytes()));
    harness.handle(Input::BackendEnd);
    let record = record_of(&harness, &meta(r#"{"request_id":"r-1","user_id":42,"prompt":"hi"}"#), 321);
    assert_eq!(record["v"], 1);
    assert_eq!(record["request_id"], "r-1");
    assert_eq!(record["request_id_generated"], false);
    assert_eq!(record["user_id"], "42");
    assert_eq!(record["backend"], "alpha");
    assert_eq!(record["model_requested"], "default-model");
    assert_eq!(record["model"], "gpt-x-2025");
    assert_eq!(record["upstream_id"], "chatcmpl-9");
    assert_eq!(record["outcome"], "completed");
    assert_eq!(record["reason"], Value::Null);
    assert_eq!(record["error_type"], Value::Null);
    assert_eq!(record["finish_reason"], "stop");
    assert_eq!(record["backend_status"], 200);
    assert_eq!(record["started_at_ms"], 1_700_000_000_000_u64);
    assert_eq!(record["bytes_to_client"], 321);
    assert_eq!(record["events_to_client"], 2);
    let usage = &record["usage"];
    assert_eq!(
        (
            &usage["prompt_tokens"],
            &usage["completion_tokens"],
            &usage["total_tokens"],
            &usage["cached_tokens"]
        ),
        (&Value::from(12), &Value::from(2), &Value::from(14), &Value::from(8))
    );
    assert_eq!(usage["reasoning_tokens"], Value::Null);
    assert_eq!(record["text"], "Héllo world");
    assert_eq!(record["text_truncated"], false);
    assert!(record["timings_ms"]["total"].is_u64() && record["timings_ms"]["first_byte"].is_u64());
}

#[test]
fn text_is_kept_only_when_asked_and_cut_at_the_cap_on_a_char_boundary() {
    let mut config = StreamConfig::default();
    let mut harness = backend_stream(&config, Delivery::default(), false);
    harness.handle(Input::BackendHead { status: 200 });
    harness.handle(Input::BackendData(BODY.as_bytes()));
    let record = record_of(&harness, &meta("{}"), 0);
    assert_eq!((&record["text"], &record["text_truncated"]), (&Value::Null, &Value::Bool(false)));
    // "Hé" is 3 bytes: a cap of 2 must not split the é.
    config.record_text_max_bytes = 2;
    let mut harness = backend_stream(&config, Delivery::default(), true);
    harness.handle(Input::BackendHead { status: 200 });
    harness.handle(Input::BackendData(BODY.as_bytes()));
    let record = record_of(&harness, &meta("{}"), 0);
    assert_eq!((&record["text"], &record["text_truncated"]), (&Value::from("H"), &Value::Bool(true)));
    assert_eq!(record["request_id"], "hd-1234-7", "no request_id in the handoff: one is made");
    assert_eq!(record["request_id_generated"], true);
}

#[test]
fn a_failed_stream_records_the_error_type_its_client_saw() {
    let config = StreamConfig::default();
    let mut harness = backend_stream(&config, Delivery::default(), true);
    harness.handle(Input::BackendHead { status: 429 });
    harness.handle(Input::BackendData(
        br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit"}}"#,
    ));
    harness.handle(Input::BackendEnd);
    let seen: Vec<_> =
        harness.client_events().iter().filter_map(|e| e.error_type().map(str::to_owned)).collect();
    let record = record_of(&harness, &meta(r#"{"model":"m-asked"}"#), 0);
    assert_eq!(seen, ["requests"]);
    assert_eq!(record["outcome"], "failed");
    assert_eq!(record["reason"], "upstream_status");
    assert_eq!(record["error_type"], "requests");
    assert_eq!(record["error_code"], "rate_limit");
    assert_eq!(record["backend_status"], 429);
    assert_eq!(record["model_requested"], "m-asked");
    assert_eq!(record["usage"], Value::Null);

    let mut harness = backend_stream(&config, Delivery::default(), false);
    harness.advance_and_wake(config.first_byte_timeout);
    let record = record_of(&harness, &meta("{}"), 0);
    assert_eq!(
        (&record["reason"], &record["error_type"], &record["error_code"]),
        (&Value::from("first_byte_timeout"), &Value::from("timeout"), &Value::from("first_byte_timeout"))
    );
}

#[test]
fn a_mock_stream_records_its_text_and_mock_model() {
    let config = StreamConfig::default();
    let script = mock::Script::new(3, "u", "why?");
    let mut harness = Harness::new(&config, Source::Mock(script));
    harness.record(true, 1 << 20);
    harness.run_until_finished(100);
    let record = record_of(&harness, &meta(r#"{"user_id":"u","prompt":"why?"}"#), 0);
    let sent: String = harness
        .client_events()
        .iter()
        .filter_map(|event| match event {
            crate::stream::testing::ClientEvent::Content { content, .. } => Some(content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(record["outcome"], "completed");
    assert_eq!(
        (&record["model"], &record["upstream_id"]),
        (&Value::from("mock"), &Value::from("chatcmpl-mock-3"))
    );
    assert_eq!(record["finish_reason"], "stop");
    assert_eq!(record["text"], Value::from(sent.as_str()));
    assert!(sent.contains("You asked: why?"));
}

#[test]
fn a_usage_event_is_written_before_done_only_when_asked() {
    let config = StreamConfig::default();
    for usage_event in [false, true] {
        let delivery = Delivery { format: Format::Content, reasoning: false, usage_event };
        let mut harness =
            Harness::with_delivery(&config, Bytes::from_static(TEST_HEAD), Source::Backend, delivery);
        harness.handle(Input::BackendHead { status: 200 });
        harness.handle(Input::BackendData(BODY.as_bytes()));
        let body = String::from_utf8(harness.client_body()).expect("utf-8");
        let usage = "event: usage\ndata: {\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14,\"cached_tokens\":8}\n\ndata: [DONE]\n\n";
        assert_eq!(body.ends_with(usage), usage_event, "{body}");
        assert!(body.ends_with("data: [DONE]\n\n"));
    }
}
