//! `--metrics-addr`: the Prometheus text counts what happened (streams by
//! outcome, refusals, latency histograms), `/healthz` is 200 while accepting and
//! 503 while draining, and every finished stream logs one info line with its
//! outcome and who it was for.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{sleep, timeout, Instant};

use super::{mock_daemon, one_worker, openai_daemon, start_mock, Transport};
use crate::scenarios::{content_events, Close, Context, Daemon};

/// How long a scrape may take, and how long a count may take to show up.
const PATIENCE: Duration = Duration::from_secs(10);

/// Where the endpoint listens.
#[derive(Debug, Clone)]
pub(super) enum Endpoint {
    Tcp(String),
    Unix(PathBuf),
}

/// The address the daemon logged as `metrics listening addr=...` (port 0 was
/// asked for, so only the log knows the port).
pub(super) async fn logged_address(daemon: &Daemon) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = daemon.stderr();
        let addr = log.lines().filter(|line| line.contains("metrics listening")).find_map(|line| {
            line.split_once("addr=").map(|(_, rest)| rest.trim().trim_matches('"').to_owned())
        });
        if let Some(addr) = addr {
            return addr;
        }
        assert!(Instant::now() < deadline, "no 'metrics listening' line within {PATIENCE:?}: {log:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// One request; the status and the body.
async fn get(endpoint: &Endpoint, request: &str) -> (u16, String) {
    try_get(endpoint, request).await.unwrap_or_else(|failure| panic!("{failure}"))
}

/// [`get`], with a failed exchange (connect, reset, timeout) as an error.
async fn try_get(endpoint: &Endpoint, request: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut response = Vec::new();
        match endpoint {
            Endpoint::Tcp(addr) => {
                let mut stream = tokio::net::TcpStream::connect(addr.as_str()).await?;
                stream.write_all(request.as_bytes()).await?;
                stream.read_to_end(&mut response).await?;
            }
            Endpoint::Unix(path) => {
                let mut stream = tokio::net::UnixStream::connect(path).await?;
                stream.write_all(request.as_bytes()).await?;
                stream.read_to_end(&mut response).await?;
            }
        }
        Ok::<_, std::io::Error>(response)
    };
    let response = match timeout(PATIENCE, exchange).await {
        Ok(Ok(response)) => {
            String::from_utf8(response).unwrap_or_else(|e| panic!("a non-UTF-8 response: {e}"))
        }
        Ok(Err(error)) => return Err(format!("{request:?} to {endpoint:?}: {error}")),
        Err(_) => {
            return Err(format!("{request:?} to {endpoint:?}: no complete response within {PATIENCE:?}"))
        }
    };
    // Closed unanswered (every slot busy) is a failed exchange the caller may retry.
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        return Err(format!("{request:?} to {endpoint:?}: closed with no head: {response:?}"));
    };
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no status in {head:?}"));
    assert!(head.contains("\r\nConnection: close"), "every answer closes: {head:?}");
    if request.starts_with("HEAD ") {
        assert!(body.is_empty(), "no body for HEAD: {body:?}");
        return Ok((status, String::new()));
    }
    let length = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    assert_eq!(length, Some(body.len()), "Content-Length matches the body: {head:?}");
    Ok((status, body.to_owned()))
}

async fn get_path(endpoint: &Endpoint, path: &str) -> (u16, String) {
    get(endpoint, &format!("GET {path} HTTP/1.1\r\nHost: metrics\r\n\r\n")).await
}

/// The samples of a Prometheus text exposition: `name{labels}` → value, each
/// family's `# TYPE` checked to come before its samples.
fn parse_exposition(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            typed.push(name.to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) =
            line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample without a value: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a sample with a bad value: {line:?}"));
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            typed.iter().any(|family| name.starts_with(family.as_str())),
            "{name} has no # TYPE before it"
        );
        assert!(name.starts_with("handoff_"), "every family is handoff_*: {line:?}");
        samples.insert(series.to_owned(), value);
    }
    samples
}

pub(super) fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no {series} in {samples:#?}"))
}

/// Scrapes until `ready` holds for the samples (counts land as streams end).
pub(super) async fn scrape_until(
    endpoint: &Endpoint,
    what: &str,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get_path(endpoint, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        let samples = parse_exposition(&body);
        if ready(&samples) {
            return samples;
        }
        assert!(Instant::now() < deadline, "{what} not seen within {PATIENCE:?}:\n{body}");
        sleep(Duration::from_millis(50)).await;
    }
}

pub(super) fn handoffs(outcome: &str, error_type: &str) -> String {
    format!("handoff_handoffs_total{{outcome=\"{outcome}\",type=\"{error_type}\"}}")
}

/// The `stream finished` line that names `request_id`, once it is logged.
async fn stream_line(daemon: &Daemon, request_id: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = daemon.stderr();
        if let Some(line) =
            log.lines().find(|line| line.contains("stream finished") && line.contains(request_id))
        {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no stream line for {request_id} within {PATIENCE:?}: {log}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// The value of `field=` in a text log line (quotes removed).
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let rest = &line[start..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest.split(' ').next()?,
    };
    Some(value)
}

pub async fn metrics_count_streams_refusals_and_latencies(cx: Context) {
    // 18 events 20 ms apart: the client that leaves after one is gone well before the end.
    let daemon = mock_daemon(&cx, 20).args(["--metrics-addr", "127.0.0.1:0"]).start().await;
    let endpoint = Endpoint::Tcp(logged_address(&daemon).await);
    let (status, body) = get_path(&endpoint, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"), "healthy while accepting");
    assert_eq!(get_path(&endpoint, "/nothing-here").await.0, 404);
    assert_eq!(get(&endpoint, "DELETE /metrics HTTP/1.1\r\n\r\n").await.0, 405);
    assert_eq!(get(&endpoint, "\x16\x03\x01 not http\r\n\r\n").await.0, 400);

    // One completed stream, one bad handoff, one client gone.
    let completed = daemon
        .hand_off(r#"{"prompt":"count me","request_id":"req-metrics-1","user_id":"user-7"}"#)
        .await
        .read_to_end()
        .await;
    assert_eq!(content_events(&completed.expect_completed_stream()), 18, "{:?}", completed.text());
    daemon.hand_off("not json").await.read_to_end().await.expect_error_response(400);
    let mut leaving = daemon.hand_off(r#"{"prompt":"leave early","request_id":"req-metrics-2"}"#).await;
    leaving.read_events(1).await;
    leaving.close(Close::Reset);

    let samples = scrape_until(&endpoint, "the client-gone stream", |s| {
        s.get(&handoffs("client_gone", "")).copied() == Some(1.0)
    })
    .await;
    assert_eq!(sample(&samples, &handoffs("completed", "")), 1.0);
    assert_eq!(sample(&samples, &handoffs("rejected", "bad_handoff")), 1.0);
    for (outcome, error_type) in [("rejected", "capacity"), ("rejected", "draining"), ("timeout", "idle")] {
        assert_eq!(
            sample(&samples, &handoffs(outcome, error_type)),
            0.0,
            "{outcome}/{error_type} listed at 0"
        );
    }
    for histogram in
        ["handoff_stream_duration_seconds", "handoff_ttfb_seconds", "handoff_first_event_seconds"]
    {
        assert_eq!(sample(&samples, &format!("{histogram}_count")), 2.0, "{histogram}: two streams");
        assert_eq!(sample(&samples, &format!("{histogram}_bucket{{le=\"+Inf\"}}")), 2.0, "{histogram}");
        assert!(sample(&samples, &format!("{histogram}_sum")) > 0.0, "{histogram}");
    }
    assert_eq!(sample(&samples, "handoff_streams_active"), 0.0);
    assert!(sample(&samples, "handoff_client_sent_bytes_total") >= completed.bytes().len() as f64);
    assert!(sample(&samples, "handoff_client_events_total") >= 19.0, "18 events, and one before the reset");
    let build = samples.keys().find(|series| series.starts_with("handoff_build_info{")).cloned();
    let build = build.unwrap_or_else(|| panic!("no build info in {samples:#?}"));
    assert!(build.contains("runtime=\"tokio\"") || build.contains("runtime=\"smol\""), "{build}");
    let threads = std::env::var(crate::scenarios::daemon::THREADS_ENV).unwrap_or_else(|_| "1".to_owned());
    assert!(build.contains(&format!("threads=\"{threads}\"")), "{build}");

    // The per-stream line: outcome, timings, bytes, events, who it was for.
    let line = stream_line(&daemon, "req-metrics-1").await;
    assert!(line.contains(" INFO "), "at info: {line}");
    assert_eq!(field(&line, "outcome"), Some("completed"), "{line}");
    assert_eq!(field(&line, "events"), Some("18"), "{line}");
    assert_eq!(field(&line, "bytes"), Some(completed.bytes().len().to_string().as_str()), "{line}");
    assert_eq!(field(&line, "user_id"), Some("user-7"), "{line}");
    assert_eq!(field(&line, "client_addr"), Some("127.0.0.1"), "{line}");
    let port = field(&line, "client_port").and_then(|p| p.parse::<u16>().ok());
    assert!(port.is_some_and(|p| p > 0), "{line}");
    for timing in ["duration_ms", "ttfb_ms", "first_event_ms"] {
        let value = field(&line, timing).and_then(|v| v.parse::<f64>().ok());
        assert!(value.is_some_and(|v| v >= 0.0), "{timing} in {line}");
    }
    assert_eq!(field(&line, "error_type"), None, "a completed stream has no error type: {line}");
    let gone = stream_line(&daemon, "req-metrics-2").await;
    assert_eq!(field(&gone, "outcome"), Some("client_gone"), "{gone}");
    daemon.terminate().await;
}

pub async fn metrics_health_is_503_while_draining(cx: Context) {
    let path = cx.scratch().path("metrics.sock");
    // 18 events 300 ms apart: still running well after SIGTERM.
    let mut daemon =
        mock_daemon(&cx, 300).arg("--metrics-addr").arg(&path).args(["--drain-timeout", "30"]).start().await;
    assert_eq!(logged_address(&daemon).await, path.display().to_string());
    let endpoint = Endpoint::Unix(path.clone());
    assert_eq!(get_path(&endpoint, "/healthz").await, (200, "ok\n".to_owned()));
    let mut running = daemon.hand_off(r#"{"prompt":"outlive the signal"}"#).await;
    running.read_events(1).await;

    daemon.signal_terminate();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get_path(&endpoint, "/healthz").await;
        if status == 503 {
            assert_eq!(body, "draining\n");
            break;
        }
        assert_eq!(status, 200, "{body}");
        assert!(Instant::now() < deadline, "/healthz still 200 {PATIENCE:?} after SIGTERM");
        sleep(Duration::from_millis(20)).await;
    }
    // Still served during the drain: the running stream counts as active.
    let samples = parse_exposition(&get_path(&endpoint, "/metrics").await.1);
    assert_eq!(sample(&samples, "handoff_streams_active"), 1.0);
    let head = get(&endpoint, "HEAD /healthz HTTP/1.1\r\n\r\n").await;
    assert_eq!(head.0, 503);

    let response = running.read_to_end().await;
    assert_eq!(content_events(&response.expect_completed_stream()), 18, "{:?}", response.text());
    daemon.expect_clean_exit().await;
    assert!(std::fs::symlink_metadata(&path).is_err(), "the metrics socket is removed at exit");
}

pub async fn metrics_count_backend_statuses_and_connections(cx: Context) {
    let mock = start_mock(Transport::H2c, 3, Duration::from_millis(2)).await;
    // One worker: one backend pool, so its connection count is exact.
    let command =
        one_worker(openai_daemon(&cx, &mock, Transport::H2c)).args(["--metrics-addr", "127.0.0.1:0"]);
    let daemon = command.start().await;
    let endpoint = Endpoint::Tcp(logged_address(&daemon).await);
    let ok = daemon.hand_off(r#"{"prompt":"fine","request_id":"req-ok"}"#).await.read_to_end().await;
    ok.expect_completed_stream();
    let limited = daemon
        .hand_off(r#"{"prompt":"too many","request_id":"req-429","test_pattern":"status:429"}"#)
        .await
        .read_to_end()
        .await;
    limited.expect_failed_stream();

    let samples = scrape_until(&endpoint, "both backend streams finished in the pool", |s| {
        s.get(&handoffs("backend_error", "upstream_status")).copied() == Some(1.0)
            && s.get("handoff_backend_streams_active").copied() == Some(0.0)
    })
    .await;
    assert_eq!(sample(&samples, &handoffs("completed", "")), 1.0);
    assert_eq!(sample(&samples, "handoff_backend_responses_total{status=\"200\"}"), 1.0);
    assert_eq!(sample(&samples, "handoff_backend_responses_total{status=\"429\"}"), 1.0);
    assert_eq!(
        sample(&samples, "handoff_backend_connections_opened_total"),
        1.0,
        "one h2c connection shared"
    );
    assert_eq!(sample(&samples, "handoff_backend_connections_open"), 1.0, "kept open for the next stream");
    assert_eq!(sample(&samples, "handoff_backend_retries_total"), 0.0);
    assert_eq!(sample(&samples, "handoff_first_event_seconds_count"), 1.0, "the 429 wrote no content");

    let line = stream_line(&daemon, "req-429").await;
    assert_eq!(field(&line, "outcome"), Some("backend_error"), "{line}");
    assert_eq!(field(&line, "error_type"), Some("upstream_status"), "{line}");
    assert_eq!(field(&line, "backend_status"), Some("429"), "{line}");
    assert_eq!(field(&stream_line(&daemon, "req-ok").await, "backend_status"), Some("200"));
    daemon.terminate().await;
}

pub async fn metrics_endpoint_bounds_connections_and_heads(cx: Context) {
    let daemon = mock_daemon(&cx, 1).args(["--metrics-addr", "127.0.0.1:0"]).start().await;
    let addr = logged_address(&daemon).await;
    let endpoint = Endpoint::Tcp(addr.clone());
    // Eight connections that send nothing hold every slot (accepted in order)...
    let mut idle = Vec::new();
    for _ in 0..8 {
        let stream = tokio::net::TcpStream::connect(addr.as_str()).await;
        idle.push(stream.unwrap_or_else(|e| panic!("connecting to {addr}: {e}")));
    }
    // ...so a ninth is closed unanswered.
    let mut ninth =
        tokio::net::TcpStream::connect(addr.as_str()).await.unwrap_or_else(|e| panic!("{addr}: {e}"));
    let _ = ninth.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await;
    let mut answer = Vec::new();
    match timeout(PATIENCE, ninth.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => {
            assert!(answer.is_empty(), "over the limit, no answer: {:?}", String::from_utf8_lossy(&answer))
        }
        Ok(Err(error)) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionReset, "{error}"),
        Err(_) => panic!("the ninth connection was neither answered nor closed within {PATIENCE:?}"),
    }
    // The silent ones get 408 at the read timeout, and the endpoint serves again.
    for mut stream in idle {
        let mut response = Vec::new();
        match timeout(PATIENCE, stream.read_to_end(&mut response)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => panic!("a silent connection: {error}"),
            Err(_) => panic!("a silent connection was not timed out within {PATIENCE:?}"),
        }
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    }
    // A slot frees once its client has closed too (the daemon waits for that
    // briefly, so its answer is never cut off by a reset).
    let deadline = Instant::now() + PATIENCE;
    loop {
        match try_get(&endpoint, "GET /healthz HTTP/1.1\r\n\r\n").await {
            Ok((status, _)) => break assert_eq!(status, 200),
            Err(failure) => assert!(Instant::now() < deadline, "no slot free again: {failure}"),
        }
        sleep(Duration::from_millis(20)).await;
    }
    let oversized = format!("GET /metrics HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(5000));
    assert_eq!(get(&endpoint, &oversized).await.0, 431, "a head over 4 KiB");
    daemon.terminate().await;
}
