use super::*;
use crate::handoff;
use crate::metrics::HandoffOutcome;

fn config() -> AttachmentConfig {
    AttachmentConfig { data_dir: Some(PathBuf::from("/srv/data")), ..AttachmentConfig::default() }
}

fn decoded(json: &str) -> Handoff {
    handoff::decode(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn refused(json: &str) -> (String, String) {
    match handoff::decode(json.as_bytes()) {
        Err(HandoffError::InvalidField { field, reason }) => (field.to_owned(), reason),
        other => panic!("{json}: expected a refused field, got {other:?}"),
    }
}

fn planned(handoff: &mut Handoff, config: &AttachmentConfig) -> Plan {
    match Plan::new(handoff, config) {
        Ok(Some(plan)) => plan,
        other => panic!("expected a plan, got {other:?}"),
    }
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

#[test]
fn a_handoff_without_attachments_costs_no_plan() {
    let mut handoff = decoded(r#"{"prompt":"hi"}"#);
    assert!(matches!(Plan::new(&mut handoff, &AttachmentConfig::default()), Ok(None)));
}

#[test]
fn image_files_become_data_url_parts_after_the_prompt_text() {
    let mut handoff = decoded(r#"{"prompt":"what is this?","image_paths":["a/cat.png"]}"#);
    let plan = planned(&mut handoff, &config());
    let files: Vec<_> = plan.files().map(|file| file.path.to_owned()).collect();
    assert_eq!(files, ["a/cat.png"]);
    plan.apply(&mut handoff, vec![PNG.to_vec()]).expect("applied");
    let content: serde_json::Value = serde_json::from_str(handoff.messages[0].content.get()).expect("JSON");
    assert_eq!(
        content,
        serde_json::json!([
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", base64::encode(PNG))}},
        ])
    );
}

#[test]
fn inline_images_join_a_content_part_array_and_keep_its_parts() {
    let mut handoff = decoded(
        r#"{"messages":[{"role":"user","content":[{"type":"text","text":"t"}]}],
            "images":[{"base64":"R0lGODlh","mime_type":"image/gif"}]}"#,
    );
    let plan = planned(&mut handoff, &AttachmentConfig::default());
    assert_eq!(plan.files().count(), 0, "inline images need no data_dir");
    plan.apply(&mut handoff, Vec::new()).expect("applied");
    assert_eq!(
        handoff.messages[0].content.get(),
        r#"[{"type":"text","text":"t"},{"type":"image_url","image_url":{"url":"data:image/gif;base64,R0lGODlh"}}]"#
    );
}

#[test]
fn images_without_any_user_message_get_one_of_their_own() {
    let mut handoff = decoded(r#"{"images":[{"base64":"AAAA","mime_type":"image/jpeg"}]}"#);
    planned(&mut handoff, &AttachmentConfig::default()).apply(&mut handoff, Vec::new()).expect("applied");
    assert_eq!(handoff.messages.len(), 1);
    assert_eq!(handoff.messages[0].role, "user");
    assert!(handoff.messages[0].content.get().contains("data:image/jpeg;base64,AAAA"));
}

#[test]
fn a_file_that_is_no_image_is_refused_by_its_content_not_its_name() {
    let mut handoff = decoded(r#"{"prompt":"x","image_paths":["fake.png"]}"#);
    let plan = planned(&mut handoff, &config());
    match plan.apply(&mut handoff, vec![b"<html>".to_vec()]) {
        Err(HandoffError::InvalidField { field: "image_paths", reason }) => {
            assert!(reason.contains("not a PNG, JPEG, GIF or WebP"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    for (bytes, expected) in [
        (&b"\xFF\xD8\xFF\xE0"[..], ImageType::Jpeg),
        (b"GIF89a..", ImageType::Gif),
        (b"RIFF\0\0\0\0WEBPVP8 ", ImageType::Webp),
        (PNG, ImageType::Png),
    ] {
        assert_eq!(ImageType::sniff(bytes), Some(expected));
    }
    assert_eq!(ImageType::sniff(b"RIFF\0\0\0\0WAVE"), None);
}

#[test]
fn text_attachments_replace_their_reference_in_user_messages_only() {
    let mut handoff = decoded(
        r#"{"system":"keep {notes} here","prompt":"Summarise: {notes}","attachments":[{"ref":"notes","path":"n.txt"}]}"#,
    );
    let plan = planned(&mut handoff, &config());
    plan.apply(&mut handoff, vec!["line \"one\"\nline two".as_bytes().to_vec()]).expect("applied");
    assert_eq!(handoff.messages[0].content.get(), r#""keep {notes} here""#, "system untouched");
    assert_eq!(handoff.messages[1].content.get(), r#""Summarise: line \"one\"\nline two""#);
}

#[test]
fn an_attachment_nobody_refers_to_or_that_is_not_text_is_refused() {
    let mut handoff = decoded(r#"{"prompt":"no reference","attachments":[{"ref":"a","path":"a.txt"}]}"#);
    let plan = planned(&mut handoff, &config());
    assert!(matches!(
        plan.apply(&mut handoff, vec![b"text".to_vec()]),
        Err(HandoffError::InvalidField { field: "attachments", .. })
    ));
    let mut handoff = decoded(r#"{"prompt":"{a}","attachments":[{"ref":"a","path":"a.bin"}]}"#);
    let plan = planned(&mut handoff, &config());
    match plan.apply(&mut handoff, vec![vec![0xFF, 0xFE]]) {
        Err(HandoffError::InvalidField { field: "attachments", reason }) => {
            assert!(reason.contains("UTF-8"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn files_need_a_data_dir_and_stay_within_the_count() {
    let mut handoff = decoded(r#"{"prompt":"x","image_paths":["a.png"]}"#);
    match Plan::new(&mut handoff, &AttachmentConfig::default()) {
        Err(HandoffError::InvalidField { field: "image_paths", reason }) => {
            assert!(reason.contains("data_dir"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let mut handoff = decoded(r#"{"prompt":"x","image_paths":["a.png","b.png","c.png"]}"#);
    let few = AttachmentConfig { max_files: 2, ..config() };
    assert!(matches!(
        Plan::new(&mut handoff, &few),
        Err(HandoffError::InvalidField { field: "image_paths", .. })
    ));
}

#[test]
fn the_read_limit_is_the_smaller_of_the_file_cap_and_what_is_left() {
    let mut handoff = decoded(
        r#"{"prompt":"x","image_paths":["a.png"],"images":[{"base64":"AAAAAAAA","mime_type":"image/png"}]}"#,
    );
    let tight = AttachmentConfig { max_file_bytes: 100, max_total_bytes: 106, ..config() };
    let plan = planned(&mut handoff, &tight);
    // The 8 base64 symbols weigh 6 bytes of the 106.
    assert_eq!(plan.read_limit(0), 100);
    assert_eq!(plan.read_limit(40), 60);
    assert_eq!(plan.read_limit(500), 0);
    let mut handoff = decoded(r#"{"images":[{"base64":"AAAAAAAA","mime_type":"image/png"}]}"#);
    let none_left = AttachmentConfig { max_total_bytes: 5, ..config() };
    assert!(matches!(
        Plan::new(&mut handoff, &none_left),
        Err(HandoffError::InvalidField { field: "images", .. })
    ));
}

#[test]
fn a_failed_open_names_the_field_the_entry_and_the_reason() {
    let mut handoff = decoded(
        r#"{"prompt":"{t}","image_paths":["ok.png"],"attachments":[{"ref":"t","path":"../../etc/passwd"}]}"#,
    );
    let plan = planned(&mut handoff, &config());
    let files: Vec<_> = plan.files().collect();
    assert_eq!(files.len(), 2);
    match plan.failed(files[1], FileFailure::OutsideDataDir) {
        HandoffError::InvalidField { field, reason } => {
            assert_eq!(field, "attachments");
            assert_eq!(reason, r#"entry 0 ("../../etc/passwd"): path leads outside data_dir"#);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn malformed_fields_are_refused_naming_the_field() {
    for (json, field) in [
        (r#"{"images":"x"}"#, "images"),
        (r#"{"images":[{"base64":"AAAA"}]}"#, "images"),
        (r#"{"images":[{"base64":"AAAA","mime_type":"image/svg+xml"}]}"#, "images"),
        (r#"{"images":[{"base64":"AA A","mime_type":"image/png"}]}"#, "images"),
        (r#"{"images":[{"base64":"AAA","mime_type":"image/png"}]}"#, "images"),
        (r#"{"image_paths":[1]}"#, "image_paths"),
        (r#"{"image_paths":["/etc/passwd"]}"#, "image_paths"),
        (r#"{"image_paths":[""]}"#, "image_paths"),
        (r#"{"image_paths":["a\u0000b"]}"#, "image_paths"),
        (r#"{"attachments":[{"ref":"a b","path":"x"}]}"#, "attachments"),
        (r#"{"attachments":[{"ref":"a","path":"x"},{"ref":"a","path":"y"}]}"#, "attachments"),
        (r#"{"attachments":[{"path":"x"}]}"#, "attachments"),
    ] {
        assert_eq!(refused(json).0, field, "{json}");
    }
}

#[test]
fn files_are_deleted_only_after_a_backend_took_the_request() {
    let summary = |status: Option<u16>| StreamSummary {
        outcome: HandoffOutcome::Completed,
        duration: std::time::Duration::ZERO,
        ttfb: None,
        first_event: None,
        events: 0,
        backend_status: status,
        bytes: 0,
    };
    assert!(delete_after(&summary(Some(200))));
    assert!(!delete_after(&summary(Some(429))), "a refused request may be retried with the files");
    assert!(!delete_after(&summary(None)), "no backend answered (or the mock served it)");
}
