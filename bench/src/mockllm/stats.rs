//! `--stats-listen`: mock-llm's counters as JSON on a plain loopback port, so a test
//! that runs mock-llm as a process (the browser test) can see what reached it, such
//! as a stream the client's departure cancelled. One request per connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use handoff_core::http1::{parse_request_head, ParsedRequest};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::recorder::Recorder;

/// Largest request head read.
const MAX_HEAD: usize = 4096;
/// How long one stats connection may take, request and response.
const CONNECTION_BOUND: Duration = Duration::from_secs(2);

/// The counters `/stats` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub connections_accepted: u64,
    pub requests: u64,
    pub streams_active: u64,
    pub streams_completed: u64,
    pub streams_cancelled: u64,
    pub streams_reset: u64,
}

impl StatsSnapshot {
    pub fn of(recorder: &Recorder) -> StatsSnapshot {
        StatsSnapshot {
            connections_accepted: recorder.connections_accepted(),
            requests: recorder.requests(),
            streams_active: recorder.streams_active(),
            streams_completed: recorder.streams_completed(),
            streams_cancelled: recorder.streams_cancelled(),
            streams_reset: recorder.streams_reset(),
        }
    }
}

/// Answers `GET /stats` on `listener` until the task is dropped.
pub async fn serve_stats(listener: TcpListener, recorder: Arc<Recorder>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: the next accept may succeed.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let recorder = Arc::clone(&recorder);
        tokio::spawn(async move {
            // A stats client that misbehaves only loses its own answer.
            let _ = tokio::time::timeout(CONNECTION_BOUND, answer(stream, &recorder)).await;
        });
    }
}

async fn answer(mut stream: TcpStream, recorder: &Recorder) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let status = loop {
        match parse_request_head(&buf, MAX_HEAD) {
            ParsedRequest::Complete { head, .. } if head.method == "GET" && head.path() == "/stats" => {
                break 200
            }
            ParsedRequest::Complete { .. } => break 404,
            ParsedRequest::Refused(status) => break status,
            ParsedRequest::Incomplete => {}
            // A result a newer core added: answer 400 like a malformed head rather
            // than read on, which could wait for a head that never parses.
            _ => break 400,
        }
        buf.reserve(1024);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    let body = if status == 200 {
        serde_json::to_string(&StatsSnapshot::of(recorder)).map_err(io::Error::other)?
    } else {
        format!("{{\"error\":{{\"message\":\"only GET /stats is served here\",\"type\":\"not_found\",\"code\":{status}}}}}")
    };
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Error" },
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
