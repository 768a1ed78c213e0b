//! The `mock-llm` binary: first stdout line, --cert-out, flags, SIGTERM.

mod mockllm_support;

use std::net::SocketAddr;
use std::process::Stdio;

use mockllm_support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Starts the binary and reads its `listening on URL` line.
async fn spawn_mock(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-llm"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mock-llm starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let mut line = String::new();
    tokio::time::timeout(PATIENCE, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("first line in time")
        .expect("first line");
    let url = line.trim_end().strip_prefix("listening on ").expect("first line names the URL").to_owned();
    (child, url)
}

fn addr_of(url: &str) -> SocketAddr {
    let authority = url.split_once("://").expect("scheme").1;
    authority.parse().expect("URL authority is a socket address")
}

async fn terminate(mut child: Child) -> String {
    let pid = child.id().expect("running");
    let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("exits in time").expect("status");
    assert!(status.success(), "SIGTERM exits 0: {status}");
    let mut stderr = String::new();
    child.stderr.take().expect("stderr piped").read_to_string(&mut stderr).await.expect("stderr");
    stderr
}

#[tokio::test]
async fn tls_binary_writes_its_ca_and_serves_h2() {
    let cert_path = std::env::temp_dir().join(format!("mock-llm-ca-{}.pem", std::process::id()));
    let cert_arg = cert_path.to_str().expect("utf-8 temp path");
    let (child, url) = spawn_mock(&[
        "--listen",
        "127.0.0.1:0",
        "--tls",
        "--cert-out",
        cert_arg,
        "--tokens",
        "3",
        "--token-delay-ms",
        "1",
        "--threads",
        "1",
    ])
    .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let ca = std::fs::read_to_string(&cert_path).expect("CA written");
    let _ = std::fs::remove_file(&cert_path);
    let tls = tls_connect(addr_of(&url), "localhost", &ca, &[b"h2"]).await;
    let mut send = h2_connect(tls).await;
    let response = h2_read(h2_post(&mut send, "localhost", "https", None, &chat_body(None)).await).await;
    let summary = summarize(&parse_events(&response.body));
    assert_eq!(summary.content_chunks, 3, "--tokens 3");
    assert!(summary.done);
    let stderr = terminate(child).await;
    assert!(stderr.contains("completed 1"), "exit summary: {stderr}");
}

#[tokio::test]
async fn plain_binary_advertises_max_streams() {
    let (child, url) = spawn_mock(&["--max-streams", "9"]).await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let mut tcp = TcpStream::connect(addr_of(&url)).await.expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let mut head = [0u8; 9];
    tokio::time::timeout(PATIENCE, tcp.read_exact(&mut head)).await.expect("in time").expect("frame head");
    assert_eq!(head[3], 0x4, "SETTINGS first");
    let mut payload = vec![0u8; usize::from(head[2])];
    tcp.read_exact(&mut payload).await.expect("payload");
    assert!(
        payload.chunks_exact(6).any(|s| s == [0, 3, 0, 0, 0, 9]),
        "MAX_CONCURRENT_STREAMS 9: {payload:?}"
    );
    terminate(child).await;
}

/// GETs `url` (`http://ADDR/stats`) and returns the JSON body.
async fn stats(url: &str) -> serde_json::Value {
    let addr = addr_of(url.strip_suffix("/stats").expect("a /stats URL"));
    let mut tcp = TcpStream::connect(addr).await.expect("connect to the stats port");
    tcp.write_all(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n").await.expect("request");
    let mut text = String::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_string(&mut text)).await.expect("in time").expect("read");
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    let body = text.split_once("\r\n\r\n").expect("head and body").1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"))
}

#[tokio::test]
async fn stats_listen_counts_completed_and_cancelled_streams() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-llm"))
        .args(["--tokens", "3", "--token-delay-ms", "1", "--stats-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mock-llm starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
    let mut next_line = async || {
        tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("a line")
    };
    let url = next_line().await.strip_prefix("listening on ").expect("first line names the URL").to_owned();
    let stats_url =
        next_line().await.strip_prefix("stats on ").expect("second line names the stats URL").to_owned();

    let mut tcp = TcpStream::connect(addr_of(&url)).await.expect("connect");
    write_http1_request(&mut tcp, "/v1/chat/completions", &[], &chat_body(None)).await;
    let response = read_http1_response(&mut tcp, &mut bytes::BytesMut::new()).await;
    assert_eq!(response.status, 200);
    drop(tcp);
    let after_one = stats(&stats_url).await;
    assert_eq!(
        (after_one["requests"].as_u64(), after_one["streams_completed"].as_u64()),
        (Some(1), Some(1)),
        "{after_one}"
    );
    assert_eq!(after_one["streams_cancelled"].as_u64(), Some(0), "{after_one}");

    // A slow stream whose client leaves after the head is counted as cancelled.
    let mut tcp = TcpStream::connect(addr_of(&url)).await.expect("connect");
    write_http1_request(
        &mut tcp,
        "/v1/chat/completions",
        &[("x-test-pattern", "slow:500")],
        &chat_body(None),
    )
    .await;
    let mut head = [0u8; 12];
    tokio::time::timeout(PATIENCE, tcp.read_exact(&mut head)).await.expect("in time").expect("head");
    drop(tcp);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let now = stats(&stats_url).await;
        if now["streams_cancelled"].as_u64() == Some(1) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the cancel was never counted: {now}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    terminate(child).await;
}
