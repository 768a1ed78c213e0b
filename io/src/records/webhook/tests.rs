use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};

use handoff_core::delivery::RecordsSettings;

use super::*;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handoff-webhook-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn config(dir: &Path, secret: Option<&str>) -> WebhookConfig {
    let settings = RecordsSettings {
        webhook: Some(format!("unix:{}:/hook", dir.join("receiver.sock").display())),
        webhook_secret: secret.map(str::to_owned),
        spool_dir: Some(dir.join("spool")),
        retry_initial_ms: 20,
        retry_max_ms: 100,
        batch_max: 7,
        ..RecordsSettings::default()
    };
    settings.validate().expect("valid").expect("records on").webhook.expect("a webhook")
}

fn record(id: usize) -> Vec<u8> {
    format!(r#"{{"v":1,"request_id":"r-{id}","text":"answer {id}"}}"#).into_bytes()
}

/// A receiver on the config's Unix socket: answers `status` to every POST and
/// passes on each request's signature header and body.
struct Receiver {
    requests: mpsc::Receiver<(Option<String>, Vec<u8>)>,
}

fn receiver(dir: &Path, status: u16) -> (Receiver, Arc<AtomicU16>) {
    let path = dir.join("receiver.sock");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind the receiver");
    let status = Arc::new(AtomicU16::new(status));
    let answer = status.clone();
    let (sender, requests) = mpsc::channel();
    std::thread::spawn(move || {
        for connection in listener.incoming() {
            let Ok(connection) = connection else { return };
            let mut reader = BufReader::new(connection);
            let (mut length, mut signature) = (0usize, None);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(value) = lower.strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-handoff-signature:") {
                    signature = line.split_once(':').map(|(_, value)| value.trim().to_owned());
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let code = answer.load(Ordering::Relaxed);
            let _ = reader
                .get_mut()
                .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes());
            if sender.send((signature, body)).is_err() {
                return;
            }
        }
    });
    (Receiver { requests }, status)
}

impl Receiver {
    /// Request ids of the records received until `count` arrived (or 10 s passed).
    fn ids(&self, count: usize) -> Vec<String> {
        let mut ids = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ids.len() < count && Instant::now() < deadline {
            let Ok((_, body)) = self.requests.recv_timeout(Duration::from_millis(100)) else { continue };
            let batch: serde_json::Value = serde_json::from_slice(&body).expect("a JSON body");
            for record in batch.as_array().expect("a batch is an array") {
                ids.push(record["request_id"].as_str().expect("request_id").to_owned());
            }
        }
        ids
    }
}

fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("spool"))
        .expect("spool")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_str().and_then(spool_sequence).is_some())
        .count()
}

fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn expected_ids(range: std::ops::Range<usize>) -> Vec<String> {
    let mut ids: Vec<String> = range.map(|id| format!("r-{id}")).collect();
    ids.sort();
    ids
}

#[test]
fn records_wait_in_the_spool_while_the_receiver_is_down_and_all_arrive_once_it_is_up() {
    let dir = scratch("down-then-up");
    let metrics = Metrics::new();
    let webhook = Webhook::start(&config(&dir, None), 100, metrics.clone()).expect("start");
    for id in 0..30 {
        assert!(webhook.submit(record(id)));
    }
    wait_until("every record spooled and retried", || {
        let totals = metrics.totals();
        totals.records_of(RecordEvent::Spooled) == 30 && totals.records_of(RecordEvent::Retried) > 0
    });
    assert_eq!(spooled(&dir), 30);
    assert!(metrics.totals().records_spool_bytes > 0);

    let (receiver, _) = receiver(&dir, 200);
    let mut ids = receiver.ids(30);
    ids.sort();
    assert_eq!(ids, expected_ids(0..30), "every record once, none lost");
    wait_until("the spool emptied", || spooled(&dir) == 0);
    wait_until("the gauge at zero", || metrics.totals().records_spool_bytes == 0);
    assert_eq!(metrics.totals().records_of(RecordEvent::Delivered), 30);
    webhook.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn spooled_records_survive_a_restart_and_are_delivered_by_the_next_start() {
    let dir = scratch("restart");
    let first = Webhook::start(&config(&dir, None), 100, Metrics::new()).expect("start");
    for id in 0..12 {
        assert!(first.submit(record(id)));
    }
    first.shutdown(Instant::now() + Duration::from_secs(5));
    assert_eq!(spooled(&dir), 12, "queued records are spooled at shutdown");

    let (receiver, _) = receiver(&dir, 200);
    let second = Webhook::start(&config(&dir, None), 100, Metrics::new()).expect("restart");
    assert!(second.submit(record(12)));
    let mut ids = receiver.ids(13);
    ids.sort();
    assert_eq!(ids, expected_ids(0..13));
    wait_until("the spool emptied", || spooled(&dir) == 0);
    second.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn a_refused_batch_is_kept_aside_and_the_next_is_still_delivered() {
    let dir = scratch("rejected");
    let (receiver, status) = receiver(&dir, 400);
    let metrics = Metrics::new();
    let webhook = Webhook::start(&config(&dir, None), 100, metrics.clone()).expect("start");
    assert!(webhook.submit(record(0)));
    assert_eq!(receiver.ids(1), ["r-0"]);
    wait_until("the refusal counted", || metrics.totals().records_of(RecordEvent::Rejected) == 1);
    let rejected = std::fs::read_dir(dir.join("spool").join(REJECTED_DIR)).expect("rejected dir").count();
    assert_eq!(rejected, 1, "a refused record is kept for the operator");

    status.store(200, Ordering::Relaxed);
    assert!(webhook.submit(record(1)));
    assert_eq!(receiver.ids(1), ["r-1"], "the refused record is not sent again");
    webhook.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn a_full_spool_drops_and_counts_records_instead_of_waiting() {
    let dir = scratch("full");
    let mut config = config(&dir, None);
    config.spool_max_bytes = record(0).len() as u64 * 3;
    let metrics = Metrics::new();
    let webhook = Webhook::start(&config, 100, metrics.clone()).expect("start");
    for id in 0..5 {
        assert!(webhook.submit(record(id)));
    }
    wait_until("drops counted", || metrics.totals().records_of(RecordEvent::Dropped) == 2);
    assert_eq!(metrics.totals().records_of(RecordEvent::Spooled), 3);
    webhook.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn posts_carry_the_hmac_of_their_body() {
    let dir = scratch("signed");
    let (receiver, _) = receiver(&dir, 204);
    let webhook = Webhook::start(&config(&dir, Some("Jefe")), 100, Metrics::new()).expect("start");
    assert!(webhook.submit(record(5)));
    let (header, body) = receiver.requests.recv_timeout(Duration::from_secs(10)).expect("a POST");
    assert_eq!(header, Some(signature("Jefe", &body)));
    webhook.shutdown(Instant::now() + Duration::from_secs(5));
}

#[test]
fn the_signature_is_hmac_sha256_in_hex() {
    // RFC 4231, test case 2.
    assert_eq!(
        signature("Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn status_lines_are_read_strictly() {
    assert_eq!(parse_status_line("HTTP/1.1 204 No Content"), Some(204));
    assert_eq!(parse_status_line("HTTP/1.0 500"), Some(500));
    for bad in ["", "HTTP/2 200", "HTTP/1.1 20", "SSH-2.0 x", "HTTP/1.1 abc OK"] {
        assert_eq!(parse_status_line(bad), None, "{bad:?}");
    }
}
