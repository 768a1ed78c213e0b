//! Images and text attachments: what the backend receives, what is refused, and
//! when the files are deleted.

use std::time::Duration;

use serde_json::{json, Value};

use super::{openai_daemon, start_mock, Transport};
use crate::scenarios::Context;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
const PNG_BASE64: &str = "iVBORw0KGgoAAAANSUhEUg==";

/// Files under `--data-dir` and an inline image become `image_url` parts after the
/// prompt's text, a text attachment replaces its `{ref}`; with
/// `--delete-attachments` the files are gone once the stream has ended, and a
/// file outside the directory, through `..` or a symlink, gets a 400 naming the
/// field while the file itself stays untouched.
pub async fn images_and_attachments_reach_the_backend_and_only_from_the_data_dir(cx: Context) {
    let mock = start_mock(Transport::H2c, 3, Duration::from_millis(1)).await;
    let data = cx.scratch().path("data");
    std::fs::create_dir_all(data.join("uploads"))
        .unwrap_or_else(|e| panic!("creating {}: {e}", data.display()));
    let secret = cx.scratch().write_file("secret.txt", b"not for the model");
    std::fs::write(data.join("uploads/cat.png"), PNG).unwrap_or_else(|e| panic!("writing the image: {e}"));
    std::fs::write(data.join("notes.txt"), "line one\nline \"two\"")
        .unwrap_or_else(|e| panic!("writing notes: {e}"));
    std::os::unix::fs::symlink(&secret, data.join("link.txt")).unwrap_or_else(|e| panic!("symlink: {e}"));
    let data_dir = data.to_string_lossy().into_owned();
    let daemon = openai_daemon(&cx, &mock, Transport::H2c)
        .args(["--data-dir", data_dir.as_str(), "--delete-attachments", "true"])
        .start()
        .await;

    let handoff = json!({
        "prompt": "Describe, then use: {notes}",
        "image_paths": ["uploads/cat.png"],
        "images": [{"base64": "R0lGODlh", "mime_type": "image/gif"}],
        "attachments": [{"ref": "notes", "path": "notes.txt"}],
    });
    daemon.hand_off(handoff.to_string()).await.read_to_end().await.expect_completed_stream();
    let requests = mock.recorder().requests_seen();
    assert_eq!(requests.len(), 1);
    let body: Value = requests[0].body_json().unwrap_or_else(|| panic!("not JSON: {:?}", requests[0].body));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [
            {"type": "text", "text": "Describe, then use: line one\nline \"two\""},
            {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lGODlh"}},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG_BASE64}")}},
        ]}])
    );
    assert!(!data.join("uploads/cat.png").exists(), "a used image is deleted");
    assert!(!data.join("notes.txt").exists(), "a used attachment is deleted");

    for (handoff, field, reason) in [
        (
            json!({"prompt": "{s}", "attachments": [{"ref": "s", "path": "../secret.txt"}]}),
            "attachments",
            "outside data_dir",
        ),
        (
            json!({"prompt": "{s}", "attachments": [{"ref": "s", "path": "link.txt"}]}),
            "attachments",
            "symlink",
        ),
        (
            json!({"prompt": "x", "image_paths": ["uploads/../../secret.txt"]}),
            "image_paths",
            "outside data_dir",
        ),
        (json!({"prompt": "x", "image_paths": ["gone.png"]}), "image_paths", "no such file"),
        (json!({"prompt": "x", "image_paths": [secret.to_string_lossy()]}), "image_paths", "relative"),
    ] {
        let response = daemon.hand_off(handoff.to_string()).await.read_to_end().await;
        let error = response.expect_error_response(400);
        assert!(error.message.contains(&format!("`{field}`")), "{handoff}: {}", error.message);
        assert!(error.message.contains(reason), "{handoff}: {}", error.message);
    }
    assert_eq!(mock.recorder().requests_seen().len(), 1, "no refused handoff reached the backend");
    assert_eq!(
        std::fs::read(&secret).ok().as_deref(),
        Some(&b"not for the model"[..]),
        "the outside file is untouched"
    );
    daemon.terminate().await;
}
