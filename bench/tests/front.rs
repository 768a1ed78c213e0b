//! handoff-front over real sockets: a browser-like client on loopback TCP, the fake
//! daemon from the load tests on a Unix socket. The handoff is the module's (one
//! message, the TCP socket attached, our copy closed), the daemon's bytes reach the
//! client untouched, and what the front answers itself is a real HTTP error.

mod load_support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use handoff_bench::front::{bind, serve, FrontConfig, StatsSnapshot};
use load_support::{unique_socket_path, FakeDaemon, Reply, CONTENT_EVENTS};
use rustix::net::{AddressFamily, SocketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// Bound on one exchange with the front.
const EXCHANGE: Duration = Duration::from_secs(10);

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(socket: PathBuf, adjust: impl FnOnce(&mut FrontConfig)) -> Running {
        let mut config = FrontConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), socket);
        config.linger = Duration::from_millis(50);
        adjust(&mut config);
        let front = bind(config).await.expect("bind the front");
        let addr = front.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(front, async {
            let _ = stopped.await;
        }));
        Running { addr, stop: Some(stop), task }
    }

    /// Sends `request` on a fresh connection and reads until the peer closes.
    async fn exchange(&self, request: &[u8]) -> String {
        tokio::time::timeout(EXCHANGE, async {
            let mut client = TcpStream::connect(self.addr).await.expect("connect to the front");
            client.write_all(request).await.expect("send the request");
            let mut out = Vec::new();
            client.read_to_end(&mut out).await.expect("read the response");
            String::from_utf8(out).expect("a UTF-8 response")
        })
        .await
        .expect("the exchange ends in time")
    }

    async fn stats(&self) -> StatsSnapshot {
        let text = self.exchange(b"GET /stats HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let body = text.split_once("\r\n\r\n").expect("a head and a body").1;
        serde_json::from_str(body).unwrap_or_else(|e| panic!("stats {body:?}: {e}"))
    }

    async fn stop(mut self) {
        self.stop.take();
        self.task.await.expect("the front task").expect("the front serves without error");
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

#[test]
fn a_get_stream_is_handed_off_with_its_fields_and_the_daemon_writes_the_response() {
    runtime().block_on(async {
        let daemon = FakeDaemon::start(SocketType::SEQPACKET, 2, |_| Reply::Complete);
        let front = Running::start(daemon.path.clone(), |_| {}).await;
        let get = "GET /api/stream?prompt=Gr%C3%BC%C3%9Fe+%F0%9F%98%80&test_pattern=unicode HTTP/1.1\r\n\
                   Host: t\r\nCookie: other=1; handoff_user=u-7\r\n\r\n";
        let response = front.exchange(get.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream"), "{response}");
        assert!(response.contains(CONTENT_EVENTS[2]) && response.ends_with("data: [DONE]\n\n"), "{response}");

        let body = r#"{"prompt":"日本","model":"m","max_tokens":3}"#;
        let post = format!(
            "POST /api/stream HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = front.exchange(post.as_bytes()).await;
        assert!(response.ends_with("data: [DONE]\n\n"), "{response}");

        let stats = front.stats().await;
        assert_eq!((stats.stream_requests, stats.handed_off, stats.daemon_unreachable), (2, 2, 0), "{stats:?}");
        front.stop().await;

        let received = daemon.finish();
        assert_eq!(received.len(), 2);
        for handoff in &received {
            assert_eq!(handoff.fds, 1);
            assert!(handoff.fd_is_connected_stream && handoff.fd_family == Some(AddressFamily::INET));
            assert!(handoff.closed_after_message, "the front kept its Unix connection open");
        }
        let first: serde_json::Value = serde_json::from_slice(&received[0].data).expect("JSON handoff data");
        assert_eq!(first["prompt"], "Grüße 😀");
        assert_eq!(first["test_pattern"], "unicode");
        assert_eq!(first["user_id"], "u-7");
        let second: serde_json::Value = serde_json::from_slice(&received[1].data).expect("JSON handoff data");
        assert_eq!((&second["prompt"], &second["model"], &second["max_tokens"]), (&"日本".into(), &"m".into(), &3.into()));
        assert!(second.get("user_id").is_none(), "{second}");
        let ids: Vec<&str> = [&first, &second].iter().filter_map(|v| v["request_id"].as_str()).collect();
        assert!(ids.len() == 2 && ids[0] != ids[1], "request ids {ids:?}");
    });
}

#[test]
fn a_daemon_that_is_down_gets_a_503_from_the_front_itself() {
    runtime().block_on(async {
        let front = Running::start(unique_socket_path("front-down"), |_| {}).await;
        let response = front.exchange(b"GET /api/stream?prompt=hi HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(status_of(&response), 503, "{response}");
        assert!(
            response.contains("\r\nRetry-After: 1\r\n") && response.contains("daemon_unreachable"),
            "{response}"
        );
        let stats = front.stats().await;
        assert_eq!(
            (stats.stream_requests, stats.handed_off, stats.daemon_unreachable),
            (1, 0, 1),
            "{stats:?}"
        );
        front.stop().await;
    });
}

#[test]
fn bad_requests_get_4xx_and_bodies_are_bounded() {
    runtime().block_on(async {
        let front = Running::start(unique_socket_path("front-bad"), |config| {
            config.max_body = 64;
            config.max_head = 512;
        })
        .await;
        let cases: Vec<(String, u16)> = vec![
            ("GET /api/stream HTTP/1.1\r\n\r\n".to_owned(), 400),
            ("GET /api/stream?prompt=%zz HTTP/1.1\r\n\r\n".to_owned(), 400),
            ("GET /missing HTTP/1.1\r\n\r\n".to_owned(), 404),
            ("DELETE /api/stream HTTP/1.1\r\n\r\n".to_owned(), 405),
            (
                "POST /api/stream HTTP/1.1\r\nContent-Length: 65\r\nContent-Type: application/json\r\n\r\n"
                    .to_owned(),
                413,
            ),
            ("POST /api/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(), 411),
            (
                "POST /api/stream HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx"
                    .to_owned(),
                415,
            ),
            (
                "POST /api/stream HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n{"
                    .to_owned(),
                400,
            ),
            (format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(600)), 431),
            ("NOT HTTP AT ALL\r\n\r\n".to_owned(), 400),
        ];
        for (request, status) in &cases {
            let response = front.exchange(request.as_bytes()).await;
            assert_eq!(status_of(&response), *status, "{request:?} -> {response}");
            let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
            assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
            let error: serde_json::Value = serde_json::from_str(body).expect("a JSON error body");
            assert!(error["error"]["message"].is_string(), "{body}");
        }
        assert_eq!(front.stats().await.refused, cases.len() as u64);
        front.stop().await;
    });
}

#[test]
fn a_request_that_never_completes_is_answered_408() {
    runtime().block_on(async {
        let front = Running::start(unique_socket_path("front-slow"), |config| {
            config.read_timeout = Duration::from_millis(200);
        })
        .await;
        let response = front.exchange(b"GET /api/stream?prompt=hi HTTP/1.1\r\n").await;
        assert_eq!(status_of(&response), 408, "{response}");
        front.stop().await;
    });
}

#[test]
fn the_page_sets_a_user_cookie_once() {
    runtime().block_on(async {
        let front = Running::start(unique_socket_path("front-page"), |_| {}).await;
        let first = front.exchange(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(status_of(&first), 200);
        assert!(first.contains("Content-Type: text/html; charset=utf-8"), "{first}");
        let cookie = first
            .lines()
            .find_map(|line| line.strip_prefix("Set-Cookie: handoff_user="))
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_else(|| panic!("no user cookie in {first}"));
        assert!(!cookie.is_empty());
        assert!(first.ends_with(handoff_bench::front::DEMO_PAGE), "the page body is the demo page");
        let again = format!("GET / HTTP/1.1\r\nHost: t\r\nCookie: handoff_user={cookie}\r\n\r\n");
        let second = front.exchange(again.as_bytes()).await;
        assert!(!second.contains("Set-Cookie"), "{second}");
        front.stop().await;
    });
}
