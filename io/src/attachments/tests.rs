use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use handoff_core::handoff;
use handoff_core::metrics::{HandoffOutcome, StreamSummary};

use super::*;

const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

/// A fresh directory tree for one test: `data/` (the data dir) and a file
/// `outside.txt` next to it that no handoff may reach.
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name =
            format!("handoff-attachments-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let root = std::env::temp_dir().join(name);
        std::fs::create_dir_all(root.join("data/sub")).expect("temp dir");
        std::fs::write(root.join("outside.txt"), "secret").expect("outside file");
        Tree { root }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn write(&self, relative: &str, bytes: &[u8]) {
        std::fs::write(self.data().join(relative), bytes).expect("write");
    }

    fn open(&self, adjust: impl FnOnce(&mut AttachmentConfig)) -> Attachments {
        let mut config = AttachmentConfig { data_dir: Some(self.data()), ..AttachmentConfig::default() };
        adjust(&mut config);
        Attachments::open(&config).expect("open")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn decoded(json: &str) -> Handoff {
    handoff::decode(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"))
}

fn refusal(attachments: &Attachments, json: &str) -> String {
    match load(attachments, &mut decoded(json)) {
        Err(HandoffError::InvalidField { field, reason }) => format!("{field}: {reason}"),
        other => panic!("{json}: expected a 400, got {other:?}"),
    }
}

fn summary(backend_status: Option<u16>) -> StreamSummary {
    StreamSummary {
        outcome: HandoffOutcome::Completed,
        duration: std::time::Duration::ZERO,
        ttfb: None,
        first_event: None,
        events: 1,
        backend_status,
        bytes: 0,
    }
}

#[test]
fn files_under_the_data_dir_reach_the_messages() {
    let tree = Tree::new();
    tree.write("sub/cat.png", PNG);
    tree.write("notes.txt", b"the notes");
    let dir = tree.open(|_| {});
    let mut handoff = decoded(
        r#"{"prompt":"Read {n}","image_paths":["sub/cat.png"],"attachments":[{"ref":"n","path":"./notes.txt"}]}"#,
    );
    let used = load(&dir, &mut handoff).expect("loaded");
    assert!(used.is_none(), "nothing to delete unless --delete-attachments");
    let content = handoff.messages[0].content.get();
    assert!(content.starts_with(r#"[{"type":"text","text":"Read the notes"},"#), "{content}");
    assert!(content.contains(r#""url":"data:image/png;base64,iVBORw0KGgo"#), "{content}");
}

#[test]
fn paths_out_of_the_data_dir_and_symlinks_are_refused_by_the_kernel() {
    let tree = Tree::new();
    tree.write("inside.txt", b"ok");
    std::os::unix::fs::symlink(tree.root.join("outside.txt"), tree.data().join("escape.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink("inside.txt", tree.data().join("alias.txt")).expect("symlink");
    std::os::unix::fs::symlink(tree.root.clone(), tree.data().join("up")).expect("symlink");
    let dir = tree.open(|_| {});
    let text = |path: &str| format!(r#"{{"prompt":"{{t}}","attachments":[{{"ref":"t","path":"{path}"}}]}}"#);
    let outside = refusal(&dir, &text("../outside.txt"));
    assert!(outside.contains("path leads outside data_dir"), "{outside}");
    let deeper = refusal(&dir, &text("sub/../../outside.txt"));
    assert!(deeper.contains("path leads outside data_dir"), "{deeper}");
    for path in ["escape.txt", "alias.txt", "up/outside.txt"] {
        let refused = refusal(&dir, &text(path));
        assert!(refused.contains("symlink"), "{path}: {refused}");
    }
    let missing = refusal(&dir, &text("nope.txt"));
    assert_eq!(missing, r#"attachments: entry 0 ("nope.txt"): no such file under data_dir"#);
}

#[test]
fn only_regular_files_within_the_limits_are_read() {
    let tree = Tree::new();
    tree.write("big.png", &[PNG, &[0u8; 100]].concat());
    tree.write("small.png", PNG);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        tree.data().join("fifo"),
        FileType::Fifo,
        Mode::RUSR | Mode::WUSR,
        0,
    )
    .expect("mkfifo");
    let dir = tree.open(|config| config.max_file_bytes = 64);
    let image = |path: &str| format!(r#"{{"prompt":"x","image_paths":["{path}"]}}"#);
    assert!(refusal(&dir, &image("big.png")).contains("over the size limit"));
    assert!(refusal(&dir, &image("sub")).contains("not a regular file"));
    assert!(
        refusal(&dir, &image("fifo")).contains("not a regular file"),
        "a FIFO neither blocks nor is read"
    );
    load(&dir, &mut decoded(&image("small.png"))).expect("within the limit");

    let two = r#"{"prompt":"x","image_paths":["small.png","small.png"]}"#;
    let tight = tree.open(|config| config.max_total_bytes = PNG.len() as u64 + 5);
    let refused = refusal(&tight, two);
    assert!(refused.starts_with("image_paths: entry 1"), "the second file is over what is left: {refused}");
}

#[test]
fn files_are_deleted_only_when_configured_and_after_a_backend_took_them() {
    let tree = Tree::new();
    let json = r#"{"prompt":"x","image_paths":["sub/a.png"]}"#;
    let path = tree.data().join("sub/a.png");
    tree.write("sub/a.png", PNG);

    let keep = tree.open(|_| {});
    assert!(load(&keep, &mut decoded(json)).expect("loaded").is_none());

    let delete = tree.open(|config| config.delete_after_use = true);
    let used = load(&delete, &mut decoded(json)).expect("loaded").expect("files to delete");
    used.finish(&summary(Some(500)));
    assert!(path.exists(), "a failed request keeps its files");
    let used = load(&delete, &mut decoded(json)).expect("loaded").expect("files to delete");
    used.finish(&summary(None));
    assert!(path.exists(), "no backend answer keeps its files");
    let used = load(&delete, &mut decoded(json)).expect("loaded").expect("files to delete");
    used.finish(&summary(Some(200)));
    assert!(!path.exists(), "used files are deleted");

    tree.write("sub/a.png", PNG);
    let used = load(&delete, &mut decoded(json)).expect("loaded").expect("files to delete");
    std::fs::remove_file(&path).expect("remove");
    tree.write("sub/a.png", b"a new file in its place");
    used.finish(&summary(Some(200)));
    assert!(path.exists(), "a file replaced since it was read is not deleted");
}

#[test]
fn without_a_data_dir_files_are_refused_and_inline_images_still_work() {
    let without = Attachments::open(&AttachmentConfig::default()).expect("nothing to open");
    let mut handoff = decoded(r#"{"prompt":"x","image_paths":["a.png"]}"#);
    assert!(matches!(
        load(&without, &mut handoff),
        Err(HandoffError::InvalidField { field: "image_paths", .. })
    ));
    let inline = r#"{"prompt":"x","images":[{"base64":"AAAA","mime_type":"image/png"}]}"#;
    let tight = Attachments::open(&AttachmentConfig { max_total_bytes: 2, ..AttachmentConfig::default() })
        .expect("nothing to open");
    assert!(
        refusal(&tight, inline).starts_with("images:"),
        "the configured limit holds without a data dir too"
    );
    let mut handoff = decoded(inline);
    load(&without, &mut handoff).expect("inline images need no directory");
    assert!(handoff.messages[0].content.get().contains("data:image/png;base64,AAAA"));
}

#[test]
fn a_relative_or_missing_data_dir_fails_at_start_with_its_path() {
    let missing =
        AttachmentConfig { data_dir: Some(PathBuf::from("/nonexistent/handoff-data")), ..Default::default() };
    let error = Attachments::open(&missing).err().expect("fails");
    assert!(error.to_string().contains("/nonexistent/handoff-data"), "{error}");
}
