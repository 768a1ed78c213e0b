//! Named backends (`[backends.NAME]` in the config file): a handoff's `backend`
//! picks one, each sends its own key, model and headers, and an unknown name is
//! refused rather than served by another backend.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::{start_mock, Transport, API_KEY};
use crate::scenarios::Context;

const ALPHA_KEY: &str = "sk-alpha-backend-0123456789";

pub async fn named_backends_serve_the_handoffs_that_name_them_and_unknown_names_get_400(cx: Context) {
    let alpha = start_mock(Transport::H2c, 2, Duration::from_millis(1)).await;
    let beta = start_mock(Transport::Http1, 2, Duration::from_millis(1)).await;
    let config = format!(
        "[backends.alpha]\n\
         base_url = \"{}\"\n\
         api_key_env = \"ALPHA_KEY\"\n\
         model = \"alpha-model\"\n\
         headers = {{ X-Tenant = \"alpha\" }}\n\
         \n\
         [backends.beta]\n\
         base_url = \"{}\"\n\
         http2 = false\n\
         model = \"beta-model\"\n",
        alpha.base_url(),
        beta.base_url(),
    );
    let file = cx.scratch().write_file("backends.toml", config.as_bytes());
    // The default backend is the built-in mock; OPENAI_API_KEY is set to show that
    // no named backend inherits it.
    let daemon = cx
        .daemon()
        .args(["--delay", "1", "--config"])
        .arg(&file)
        .env("ALPHA_KEY", ALPHA_KEY)
        .env("OPENAI_API_KEY", API_KEY)
        .start()
        .await;

    completes(&daemon, r#"{"prompt":"hi","backend":"alpha"}"#).await;
    let seen = alpha.recorder().requests_seen();
    assert_eq!(seen.len(), 1, "alpha served it");
    let body: Value = seen[0].body_json().unwrap_or_else(|| panic!("not JSON: {:?}", seen[0].body));
    assert_eq!(body["model"], "alpha-model", "the backend's default model");
    assert_eq!(seen[0].header("x-tenant"), Some("alpha"), "its configured header");
    assert_eq!(seen[0].header("authorization"), Some(format!("Bearer {ALPHA_KEY}").as_str()), "its own key");

    let handoff = r#"{"prompt":"hi","backend":"beta","model":"asked-for"}"#;
    completes(&daemon, handoff).await;
    let seen = beta.recorder().requests_seen();
    assert_eq!(seen.len(), 1, "beta served it");
    let body: Value = seen[0].body_json().unwrap_or_else(|| panic!("not JSON: {:?}", seen[0].body));
    assert_eq!(body["model"], "asked-for", "the handoff's model wins");
    assert_eq!(seen[0].header("authorization"), None, "the default backend's key is not sent to beta");
    assert_eq!(seen[0].header("x-tenant"), None, "alpha's header stays alpha's");

    for handoff in [r#"{"prompt":"hi"}"#, r#"{"prompt":"hi","backend":"default"}"#] {
        completes(&daemon, handoff).await;
    }
    let response = daemon.hand_off(r#"{"prompt":"hi","backend":"gamma"}"#).await.read_to_end().await;
    let error = response.expect_error_response(400);
    assert!(error.message.contains("`backend`") && error.message.contains("gamma"), "{}", error.message);
    let served = (alpha.recorder().requests_seen().len(), beta.recorder().requests_seen().len());
    assert_eq!(served, (1, 1), "the default and the refused handoff reached neither");
}

/// A `passthrough` backend (an agent framework's `/runs/stream`): the handoff's
/// `body` goes upstream as given to the `path` it names under the configured
/// prefixes, and the upstream's events (types, ids, comments, multi-line data,
/// CRLF) reach the client byte for byte, with no `[DONE]` of ours. A path outside
/// the prefixes, or no body, is a 400 that reaches no backend.
pub async fn passthrough_backend_forwards_the_upstreams_events_unchanged(cx: Context) {
    let mock = start_mock(Transport::H2c, 3, Duration::from_millis(1)).await;
    let config = format!(
        "[backends.agent]\nkind = \"passthrough\"\nbase_url = \"{}\"\npaths = [\"/runs/\", \"/threads/\"]\n",
        mock.url()
    );
    let file = cx.scratch().write_file("agent.toml", config.as_bytes());
    let daemon = cx.daemon().args(["--config"]).arg(&file).start().await;

    let handoff =
        r#"{"backend":"agent","path":"/runs/stream","body":{"assistant_id":"a1","input":{"q":"héllo 😀"}}}"#;
    let response = daemon.hand_off(handoff).await.read_to_end().await;
    assert_eq!(response.status(), 200, "{}", response.text());
    let body = String::from_utf8(response.body().to_vec()).expect("UTF-8");
    let input = r#""input":{"assistant_id":"a1","input":{"q":"héllo 😀"}}"#;
    let expected = format!(
        "event: metadata\nid: run-1\ndata: {{\"run_id\":\"run-1\",{input}}}\n\n: heartbeat\n\n\
         event: values\nid: 0\ndata: {{\"step\":0,\ndata: \"text\":\"t0\"}}\r\n\r\n\
         event: values\nid: 1\ndata: {{\"step\":1,\ndata: \"text\":\"t1\"}}\r\n\r\n\
         event: values\nid: 2\ndata: {{\"step\":2,\ndata: \"text\":\"t2\"}}\r\n\r\n\
         event: end\ndata: null\n\n"
    );
    assert_eq!(body, expected, "the upstream's bytes, nothing added");
    let seen = mock.recorder().requests_seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/runs/stream");
    let sent: Value = seen[0].body_json().unwrap_or_else(|| panic!("not JSON: {:?}", seen[0].body));
    assert_eq!(sent, serde_json::json!({"assistant_id":"a1","input":{"q":"héllo 😀"}}), "the body as given");

    for (handoff, field) in [
        (r#"{"backend":"agent","path":"/assistants","body":{}}"#, "`path`"),
        (r#"{"backend":"agent","path":"/runs/../assistants","body":{}}"#, "`path`"),
        (r#"{"backend":"agent","path":"/runs/stream"}"#, "`body`"),
        (r#"{"path":"/runs/stream","body":{}}"#, "`body`"),
    ] {
        let error = daemon.hand_off(handoff).await.read_to_end().await.expect_error_response(400);
        assert!(error.message.contains(field), "{handoff}: {}", error.message);
    }
    assert_eq!(mock.recorder().requests_seen().len(), 1, "no refused handoff reached the backend");
}

/// Hands off `data` and expects a stream that completes.
async fn completes(daemon: &crate::scenarios::Daemon, data: impl AsRef<[u8]>) {
    daemon.hand_off(data).await.read_to_end().await.expect_completed_stream();
}

/// Writes the config file whole (a temporary file renamed over it), as an
/// operator's editor or deployment would, so a reload never reads half of it.
fn write_config(path: &std::path::Path, text: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, text).unwrap_or_else(|e| panic!("writing {}: {e}", temporary.display()));
    std::fs::rename(&temporary, path).unwrap_or_else(|e| panic!("renaming over {}: {e}", path.display()));
}

/// Waits (bounded) until the daemon's log has `count` lines containing `text`.
async fn wait_for_log(daemon: &crate::scenarios::Daemon, text: &str, count: usize) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = daemon.stderr();
        if log.matches(text).count() >= count {
            return log;
        }
        assert!(tokio::time::Instant::now() < deadline, "no {text:?} in the log after 10 s:\n{log}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGHUP reloads the named backends: new handoffs go where the new file says,
/// a stream started before finishes on the backend it started with, and a bad
/// file is refused naming file, line and key while the running config stays.
pub async fn sighup_reloads_backends_and_a_bad_file_keeps_the_running_config(cx: Context) {
    let first = start_mock(Transport::H2c, 3, Duration::from_millis(1)).await;
    let second = start_mock(Transport::H2c, 3, Duration::from_millis(1)).await;
    let table = |name: &str, mock: &crate::mockllm::MockLlm| {
        format!("[backends.{name}]\nbase_url = \"{}\"\n", mock.base_url())
    };
    let file = cx.scratch().path("reload.toml");
    write_config(&file, &table("alpha", &first));
    let daemon = cx.daemon().args(["--delay", "1", "--config"]).arg(&file).start().await;

    // A slow stream on alpha (about a second), under way across the reload.
    let slow = daemon.hand_off(r#"{"prompt":"slow","backend":"alpha","test_pattern":"slow:300"}"#).await;
    write_config(&file, &[table("alpha", &second), table("beta", &first)].concat());
    daemon.signal_hangup();
    wait_for_log(&daemon, "configuration reloaded", 1).await;

    completes(&daemon, r#"{"prompt":"after","backend":"alpha"}"#).await;
    assert_eq!(second.recorder().requests_seen().len(), 1, "alpha is the second mock now");
    completes(&daemon, r#"{"prompt":"new","backend":"beta"}"#).await;
    assert_eq!(first.recorder().requests_seen().len(), 2, "beta exists now, on the first mock");
    slow.read_to_end().await.expect_completed_stream();

    // A typo on line 3: refused, and alpha still goes to the second mock.
    write_config(&file, &format!("{}bogus = 1\n", table("alpha", &first)));
    daemon.signal_hangup();
    let log = wait_for_log(&daemon, "configuration was refused", 1).await;
    let path = file.display().to_string();
    assert!(log.contains(&format!("{path}:1")) && log.contains("backends.alpha.bogus"), "{log}");
    completes(&daemon, r#"{"prompt":"still","backend":"alpha"}"#).await;
    assert_eq!(second.recorder().requests_seen().len(), 2, "the running configuration stayed");
    let response = daemon.hand_off(r#"{"prompt":"x","backend":"gamma"}"#).await.read_to_end().await;
    response.expect_error_response(400);
}

/// Relays every connection made to a Unix socket at `path` to `target` (TCP),
/// standing in for a model server that listens on a Unix socket.
async fn unix_relay(path: &std::path::Path, target: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener =
        tokio::net::UnixListener::bind(path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    })
}

/// `base_url = "unix:SOCKET:/v1"`: a backend on a Unix socket, over HTTP/1.1 and
/// over h2c, gets the request at the HTTP path after the socket's.
pub async fn a_backend_on_a_unix_socket_is_reached_over_http1_and_h2c(cx: Context) {
    let mock = start_mock(Transport::H2c, 3, Duration::from_millis(1)).await;
    let socket = cx.scratch().path("llm.sock");
    let relay = unix_relay(&socket, mock.local_addr()).await;
    let config = format!(
        "[backends.local1]\nbase_url = \"unix:{path}:/v1\"\nhttp2 = false\n\n[backends.local2]\nbase_url = \"unix:{path}:/v1\"\nhttp2 = true\n",
        path = socket.display()
    );
    let file = cx.scratch().write_file("unix.toml", config.as_bytes());
    let daemon = cx.daemon().args(["--config"]).arg(&file).start().await;
    for backend in ["local1", "local2"] {
        let handoff = format!(r#"{{"prompt":"over a unix socket","backend":"{backend}"}}"#);
        completes(&daemon, handoff).await;
    }
    let seen = mock.recorder().requests_seen();
    assert_eq!(seen.len(), 2, "both reached the server behind the socket");
    for request in &seen {
        assert_eq!(request.path, "/v1/chat/completions");
    }
    let protocols: Vec<String> = seen.iter().map(|request| format!("{:?}", request.protocol)).collect();
    assert_eq!(protocols, ["Http1", "H2c"], "HTTP/1.1 for local1, h2c for local2");
    relay.abort();
}

/// A TCP relay to `target` whose open connections can be frozen: bytes stop
/// flowing both ways without a FIN or RST, as when a backend host vanishes.
/// Connections made after the freeze flow normally.
struct FreezingRelay {
    address: std::net::SocketAddr,
    accepted: Arc<AtomicU64>,
    /// Connections numbered up to this are frozen (numbers start at 1).
    frozen_up_to: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FreezingRelay {
    async fn start(target: std::net::SocketAddr) -> FreezingRelay {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("relay bind: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("relay address: {e}"));
        let accepted = Arc::new(AtomicU64::new(0));
        let frozen_up_to = Arc::new(AtomicU64::new(0));
        let (counter, frozen) = (Arc::clone(&accepted), Arc::clone(&frozen_up_to));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let frozen = Arc::clone(&frozen);
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(target).await else { return };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let up = pump(client_read, server_write, number, Arc::clone(&frozen));
                    let down = pump(server_read, client_write, number, frozen);
                    tokio::join!(up, down);
                });
            }
        });
        FreezingRelay { address, accepted, frozen_up_to, task }
    }

    /// Freezes every connection open now.
    fn freeze_open_connections(&self) {
        self.frozen_up_to.store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either ends; once connection `number` is frozen,
/// holds both open and forwards nothing.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    number: u64,
    frozen_up_to: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else { return };
        if number <= frozen_up_to.load(Ordering::SeqCst) {
            // The test ends the relay task; this connection just never moves again.
            let _keep = (from, to);
            return std::future::pending().await;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// An idle HTTP/2 connection whose peer goes silent (no FIN, no RST) is found by
/// its unanswered PING and dropped, and the next stream gets a new connection.
pub async fn a_silent_backend_connection_is_dropped_after_an_unanswered_ping(cx: Context) {
    let mock = start_mock(Transport::H2c, 3, Duration::from_millis(1)).await;
    let relay = FreezingRelay::start(mock.local_addr()).await;
    let base = format!("http://{}/v1", relay.address);
    let daemon = cx
        .daemon()
        .args(["--threads", "1", "--backend", "openai", "--openai-base", base.as_str()])
        .args(["--backend-ping-interval", "1", "--backend-ping-timeout", "1"])
        .start()
        .await;
    completes(&daemon, r#"{"prompt":"first"}"#).await;
    relay.freeze_open_connections();
    wait_for_log(&daemon, "did not answer a PING in time", 1).await;
    completes(&daemon, r#"{"prompt":"second"}"#).await;
    assert_eq!(mock.recorder().requests_seen().len(), 2);
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 2, "the second stream opened a new connection");
    relay.task.abort();
}
