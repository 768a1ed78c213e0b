//! Completion records delivered to a webhook: a receiver that is down, and a
//! daemon restarted while it is, lose none of them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

use super::mock_daemon;
use crate::scenarios::{Context, Daemon, DaemonCommand};

/// Streams per daemon run (two runs: 200 in all).
const STREAMS_PER_RUN: usize = 100;
/// How long the receiver stays down.
const RECEIVER_DOWN: Duration = Duration::from_secs(10);

/// Every body POSTed to the receiver, as JSON records, in arrival order.
type Received = Arc<Mutex<Vec<Value>>>;

/// Serves `path` as the webhook receiver: 200 to every POST, each body (an
/// array of records) kept in `received`.
fn start_receiver(path: &Path, received: Received) -> tokio::task::JoinHandle<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
    tokio::spawn(async move {
        loop {
            let Ok((connection, _)) = listener.accept().await else { return };
            let received = received.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(connection);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).await.is_err() {
                    return;
                }
                let batch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let records = batch.as_array().cloned().unwrap_or_default();
                received.lock().unwrap_or_else(PoisonError::into_inner).extend(records);
                let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            });
        }
    })
}

fn webhook_daemon(cx: &Context, socket: &Path, spool: &Path) -> DaemonCommand {
    mock_daemon(cx, 1)
        .arg("--records-webhook")
        .arg(format!("unix:{}:/records", socket.display()))
        .arg("--records-spool-dir")
        .arg(spool)
        .args(["--records-retry-initial-ms", "200", "--records-retry-max-ms", "1000"])
}

async fn run_streams(daemon: &Daemon, run: usize) {
    let mut clients = Vec::with_capacity(STREAMS_PER_RUN);
    for stream in 0..STREAMS_PER_RUN {
        let handoff = serde_json::json!({
            "prompt": "remember me",
            "user_id": format!("user-{}", stream % 7),
            "request_id": format!("run{run}-{stream}"),
            "record_text": true,
        });
        clients.push(daemon.hand_off(handoff.to_string()).await);
    }
    for client in clients {
        client.read_to_end().await.expect_completed_stream();
    }
}

/// 200 streams finish while the receiver is down, the daemon restarted after
/// the first 100; once the receiver is up, every record arrives, and a record
/// sent twice (at-least-once) is the same record both times.
pub async fn webhook_records_survive_a_receiver_down_and_a_daemon_restart(cx: Context) {
    let socket = cx.scratch().path("receiver.sock");
    let spool: PathBuf = cx.scratch().path("spool");
    let down_since = Instant::now();

    let first = webhook_daemon(&cx, &socket, &spool).start().await;
    run_streams(&first, 0).await;
    first.terminate().await;
    let second = webhook_daemon(&cx, &socket, &spool).start().await;
    run_streams(&second, 1).await;

    tokio::time::sleep(RECEIVER_DOWN.saturating_sub(down_since.elapsed())).await;
    let received: Received = Arc::default();
    let receiver = start_receiver(&socket, received.clone());

    let expected = 2 * STREAMS_PER_RUN;
    let deadline = Instant::now() + Duration::from_secs(20);
    let by_id = loop {
        let records = received.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let mut by_id: HashMap<String, Value> = HashMap::new();
        for record in records {
            let id = record["request_id"].as_str().unwrap_or_default().to_owned();
            if let Some(earlier) = by_id.get(&id) {
                assert_eq!(earlier, &record, "a record delivered twice differs the second time");
            }
            by_id.insert(id, record);
        }
        if by_id.len() >= expected || Instant::now() > deadline {
            break by_id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for run in 0..2 {
        for stream in 0..STREAMS_PER_RUN {
            let id = format!("run{run}-{stream}");
            let record =
                by_id.get(&id).unwrap_or_else(|| panic!("no record for {id}: {} arrived", by_id.len()));
            assert_eq!(record["outcome"], "completed", "{record}");
            assert_eq!(record["user_id"], format!("user-{}", stream % 7), "{record}");
            assert_eq!(record["backend"], "default", "{record}");
            assert!(
                record["text"].as_str().is_some_and(|text| !text.is_empty()),
                "the mock's text, {record}"
            );
        }
    }
    assert_eq!(by_id.len(), expected, "only the records of these streams");
    second.terminate().await;
    receiver.abort();
    let left = std::fs::read_dir(&spool)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0, "delivered records leave the spool");
}
