//! The backend side without a socket: the real pool owner task, HTTP/2 and
//! HTTP/1.1 adapters and per-stream driver, run on the fake runtime against
//! scripted servers over in-memory pipes. Each test checks what a user relies
//! on: one stalled client never stalls its neighbours, bytes that write nothing
//! still return flow-control credit, a request is retried only when the server
//! cannot have processed it, shutdown leaves nothing behind, a connect that
//! never completes fails its streams on the clock, and a dead kept-alive
//! HTTP/1.1 connection is found before a request is lost on it.

mod fake;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fake::server::{self, H1Reply, H2Conn, H2Reply, ServerLog};
use fake::{FakeClient, FakeRuntime, Gate};
use handoff_core::config::{parse_base_url, OpenAiConfig};
use handoff_core::handoff::Handoff;
use handoff_core::http1;
use handoff_core::limits::{Limits, Snapshot};
use handoff_core::pool::{PingConfig, PoolConfig, StreamId};
use handoff_core::stream::{FailureKind, Source, Stream, StreamConfig};
use handoff_io::backend::{BackendStream, OpenAiBackend};
use handoff_io::daemon::Shared;
use handoff_io::driver::StreamTask;
use handoff_io::runtime::Runtime;

const MIB: usize = 1 << 20;
const DONE: &str = "data: [DONE]\n\n";

/// The daemon's backend half: the real `OpenAiBackend` (pool owner task and
/// adapters) and real stream tasks, on the fake runtime.
struct Daemon {
    runtime: FakeRuntime,
    limits: Arc<Limits>,
    shared: Arc<Shared<FakeRuntime>>,
    backend: OpenAiBackend<FakeRuntime>,
    next_id: u64,
}

impl Daemon {
    fn start(runtime: &FakeRuntime, http2: bool, pool: PoolConfig) -> Daemon {
        let openai = OpenAiConfig {
            base: parse_base_url("http://fake:80").expect("a valid base URL"),
            api_key: Some("sk-test".into()),
            default_model: "model".into(),
            http2,
            insecure_tls: false,
            extra_ca: None,
            user_from_user_id: false,
            include_usage: false,
            headers: Vec::new(),
            passthrough: None,
        };
        let limits = Limits::new(100);
        let shared = Shared::for_mock(runtime.clone(), Arc::clone(&limits), StreamConfig::default());
        let backend = OpenAiBackend::start(runtime, &openai, pool).expect("the backend starts");
        Daemon { runtime: runtime.clone(), limits, shared, backend, next_id: 1 }
    }

    /// Starts a stream for `client`, as the daemon does for a handoff; returns
    /// the model name its request carries, to find it at the server.
    fn stream(&mut self, client: &FakeClient) -> String {
        let id = self.next_id;
        self.next_id += 1;
        let model = format!("stream-{id}");
        let handoff = Handoff { model: Some(model.clone()), ..Handoff::default() };
        let backend = self.backend.open_stream(StreamId(id), &handoff);
        let config = &self.shared.stream_config;
        let machine = Stream::new(self.runtime.now(), config, http1::client_head(&[]), Source::Backend);
        let admission = self.limits.try_admit().expect("a slot is free");
        let task: StreamTask<FakeRuntime, FakeClient> =
            StreamTask::new(Arc::clone(&self.shared), id, client.clone(), machine, backend, admission);
        self.runtime.spawn(task);
        model
    }

    fn snapshot(&self) -> Snapshot {
        self.limits.snapshot()
    }

    /// Ends the backend and every client; nothing may be left running or open.
    fn finish(&self, clients: &[&FakeClient]) {
        for client in clients {
            client.leave();
        }
        self.backend.shutdown();
        self.runtime.run_until_stalled();
        assert_eq!(self.runtime.live_tasks(), 0, "no task outlives the backend");
        assert_eq!(self.runtime.connections_open(), 0, "no connection outlives the backend");
    }
}

fn head_len() -> usize {
    http1::client_head(&[]).len()
}

/// An upstream answer of content chunks adding up to about `total` bytes, then
/// `[DONE]`; with the number of content events.
fn content_body(total: usize) -> (Bytes, usize) {
    let mut body = String::with_capacity(total + 64);
    let mut events = 0;
    while body.len() < total {
        let piece = format!("{events:06}{}", "x".repeat(994));
        body.push_str(&format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{piece}\"}}}}]}}\n\n"
        ));
        events += 1;
    }
    body.push_str(DONE);
    (Bytes::from(body), events)
}

/// Content without an end: a stream answered with it keeps running.
fn unfinished_answer() -> Bytes {
    Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}\n\n")
}

fn short_answer() -> Bytes {
    Bytes::from_static(
        b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello\"}}]}\n\ndata: [DONE]\n\n",
    )
}

/// The request a server saw for the stream whose model is `model`.
fn request_for(log: &ServerLog, model: &str) -> usize {
    let needle = format!("\"model\":\"{model}\"");
    let seen = log.seen();
    let found = seen.iter().position(|seen| String::from_utf8_lossy(&seen.request).contains(&needle));
    found.unwrap_or_else(|| panic!("the server saw no request for {model}: {} requests", seen.len()))
}

fn content_events(client: &FakeClient) -> usize {
    client.received_text().matches("data: {\"content\"").count()
}

fn h2_pool() -> PoolConfig {
    PoolConfig::default()
}

fn h1_pool() -> PoolConfig {
    PoolConfig { max_streams_per_connection: 1, ..PoolConfig::default() }
}

/// Two streams on one connection, each answered with 1 MiB (16 stream windows);
/// the first client takes the head and then nothing.
fn stalled_and_reading(pool: PoolConfig) -> (Daemon, ServerLog, [FakeClient; 2], [String; 2], usize) {
    let runtime = FakeRuntime::new();
    let (body, events) = content_body(MIB);
    let log = server::h2(&runtime, |_| H2Conn::Serve, move |_| H2Reply::Body(body.clone()));
    let mut daemon = Daemon::start(&runtime, true, pool);
    let stalled = FakeClient::with_room(head_len());
    let reader = FakeClient::with_room(usize::MAX);
    let models = [daemon.stream(&stalled), daemon.stream(&reader)];
    runtime.run_until_stalled();
    assert_eq!(runtime.connections_opened(), 1, "both streams share one HTTP/2 connection");
    (daemon, log, [stalled, reader], models, events)
}

#[test]
fn a_stalled_client_does_not_stall_its_neighbour_on_the_same_connection() {
    let pool = h2_pool();
    let (stream_window, client_buffer) =
        (pool.h2_stream_window as usize, StreamConfig::default().client_buffer);
    let (daemon, log, [stalled, reader], [stalled_model, reader_model], events) = stalled_and_reading(pool);
    // The reading client got its whole answer while its neighbour took nothing.
    assert!(reader.received_text().ends_with(DONE), "the reading stream completed");
    assert_eq!(content_events(&reader), events);
    let snapshot = daemon.snapshot();
    assert_eq!((snapshot.completed, snapshot.active), (1, 1), "{snapshot:?}");
    assert!(log.get(request_for(&log, &reader_model)).done);
    // The stalled stream holds what its own bounds allow and no more: the
    // machine's client buffer (SSE framing is smaller than the upstream's JSON,
    // so that is at most twice as many upstream bytes), its stream window, and
    // one DATA frame being parsed.
    let pinned = log.get(request_for(&log, &stalled_model)).sent;
    assert!(pinned <= 2 * client_buffer + stream_window + 16 * 1024, "stalled stream took {pinned} bytes");
    assert!(!log.get(request_for(&log, &stalled_model)).done);
    assert_eq!(stalled.received_text().len(), head_len(), "the stalled client took only the head");
    // The stalled client reads again: its stream flows to the end too.
    stalled.read(usize::MAX);
    daemon.runtime.run_until_stalled();
    assert_eq!(content_events(&stalled), events);
    assert_eq!(daemon.snapshot().completed, 2);
    daemon.finish(&[&stalled, &reader]);
}

/// The "before" behaviour, kept as the meaning of `h2_connection_window`: with
/// h2's default 65,535-byte connection window the stalled stream's unread
/// bytes take the whole connection window and its neighbour gets nothing more.
#[test]
fn with_the_h2_default_connection_window_a_stalled_client_starves_its_neighbour() {
    let pool = PoolConfig { h2_connection_window: 65_535, ..h2_pool() };
    let (daemon, log, [stalled, reader], [_, reader_model], events) = stalled_and_reading(pool);
    assert_eq!(daemon.snapshot().completed, 0, "the reading stream is stuck behind its neighbour");
    assert!(content_events(&reader) < events / 2, "got {} of {events}", content_events(&reader));
    assert!(!log.get(request_for(&log, &reader_model)).done);
    // Nothing else holds it up: once the stalled client reads, both finish.
    stalled.read(usize::MAX);
    daemon.runtime.run_until_stalled();
    assert_eq!(daemon.snapshot().completed, 2);
    assert_eq!((content_events(&stalled), content_events(&reader)), (events, events));
    daemon.finish(&[&stalled, &reader]);
}

#[test]
fn chunks_that_write_nothing_still_return_flow_control_credit() {
    let runtime = FakeRuntime::new();
    // 2,000 role-only and usage chunks (~450 KB: seven stream windows), then content.
    let mut body = String::new();
    for i in 0..2_000 {
        let chunk = if i % 2 == 0 {
            format!("data: {{\"id\":\"chatcmpl-{i:08}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0123456789\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\"}},\"finish_reason\":null}}]}}\n\n")
        } else {
            format!("data: {{\"id\":\"chatcmpl-{i:08}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0123456789\",\"choices\":[],\"usage\":{{\"prompt_tokens\":9,\"completion_tokens\":1,\"total_tokens\":10}}}}\n\n")
        };
        body.push_str(&chunk);
    }
    let silent_bytes = body.len();
    assert!(silent_bytes > 400_000 && silent_bytes > 4 * h2_pool().h2_stream_window as usize);
    body.push_str("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"finally\"}}]}\n\n");
    body.push_str(DONE);
    let body = Bytes::from(body);
    let total = body.len();
    let log = server::h2(&runtime, |_| H2Conn::Serve, move |_| H2Reply::Body(body.clone()));
    let mut daemon = Daemon::start(&runtime, true, h2_pool());
    // The client takes the head and then nothing: no client write can release credit.
    let client = FakeClient::with_room(head_len());
    daemon.stream(&client);
    // The clock never moves, so no keep-alive is written either.
    runtime.run_until_stalled();
    let seen = log.get(0);
    assert_eq!((seen.sent, seen.done), (total, true), "the server got the whole answer out");
    let snapshot = daemon.snapshot();
    assert_eq!(snapshot.completed, 1, "[DONE] reached the machine: {snapshot:?}");
    assert_eq!(client.received_text().len(), head_len());
    client.read(usize::MAX);
    runtime.run_until_stalled();
    let text = client.received_text();
    assert!(text.ends_with(&format!("data: {{\"content\":\"finally\"}}\n\n{DONE}")), "{text}");
    assert!(!text.contains(": keep-alive"), "{text}");
    daemon.finish(&[&client]);
}

#[test]
fn a_refused_stream_is_sent_again_and_completes() {
    let runtime = FakeRuntime::new();
    let log = server::h2(
        &runtime,
        |_| H2Conn::Serve,
        |nth| {
            if nth == 0 {
                H2Reply::Reset(h2::Reason::REFUSED_STREAM)
            } else {
                H2Reply::Body(short_answer())
            }
        },
    );
    let mut daemon = Daemon::start(&runtime, true, h2_pool());
    let client = FakeClient::with_room(usize::MAX);
    daemon.stream(&client);
    runtime.run_until_stalled();
    assert_eq!(log.requests(), 2, "refused, then sent again");
    assert!(log.get(1).done, "answered the second time");
    assert_eq!(daemon.snapshot().completed, 1);
    assert!(client.received_text().ends_with(DONE));
    daemon.finish(&[&client]);
}

#[test]
fn a_stream_refused_twice_fails_as_unavailable() {
    let runtime = FakeRuntime::new();
    let log = server::h2(&runtime, |_| H2Conn::Serve, |_| H2Reply::Reset(h2::Reason::REFUSED_STREAM));
    let mut daemon = Daemon::start(&runtime, true, h2_pool());
    let client = FakeClient::with_room(usize::MAX);
    daemon.stream(&client);
    runtime.run_until_stalled();
    assert_eq!(log.requests(), 2, "one retry, not more");
    assert_eq!(daemon.snapshot().failed, 1);
    let text = client.received_text();
    assert!(
        text.contains("event: error") && text.contains(FailureKind::Unavailable.client_message()),
        "{text}"
    );
    daemon.finish(&[&client]);
}

/// A request the server has read, then lost by `reply`, is never sent again:
/// the server sees it once, on one connection, and the client gets an error.
fn not_sent_again(reply: fn() -> H2Reply, kind: FailureKind) {
    let runtime = FakeRuntime::new();
    let log = server::h2(&runtime, |_| H2Conn::Serve, move |_| reply());
    let mut daemon = Daemon::start(&runtime, true, h2_pool());
    let client = FakeClient::with_room(usize::MAX);
    daemon.stream(&client);
    runtime.run_until_stalled();
    assert_eq!(log.requests(), 1, "the request is not sent again");
    assert_eq!(runtime.connections_opened(), 1);
    let snapshot = daemon.snapshot();
    assert_eq!((snapshot.failed, snapshot.completed), (1, 0), "{snapshot:?}");
    let text = client.received_text();
    assert!(text.contains("event: error") && text.contains(kind.client_message()), "{text}");
    daemon.finish(&[&client]);
}

#[test]
fn a_stream_reset_after_the_server_read_it_is_not_sent_again() {
    not_sent_again(|| H2Reply::Reset(h2::Reason::INTERNAL_ERROR), FailureKind::Reset);
}

#[test]
fn a_connection_dropped_after_the_server_read_the_request_is_not_sent_again() {
    not_sent_again(|| H2Reply::DropConnection, FailureKind::Reset);
}

#[test]
fn a_graceful_goaway_below_the_stream_retries_it_on_a_new_connection() {
    let runtime = FakeRuntime::new();
    let gate = Gate::default();
    let first = gate.clone();
    let log = server::h2(
        &runtime,
        move |conn| if conn == 0 { H2Conn::GoAwayWhen(first.clone()) } else { H2Conn::Serve },
        |_| H2Reply::Body(short_answer()),
    );
    let mut daemon = Daemon::start(&runtime, true, h2_pool());
    let client = FakeClient::with_room(usize::MAX);
    daemon.stream(&client);
    // The request is on the wire of the first connection, unanswered.
    runtime.run_until_stalled();
    assert_eq!((runtime.connections_opened(), log.requests()), (1, 0));
    // GOAWAY(last stream id 0, NO_ERROR), then close: the server processed nothing.
    gate.open();
    runtime.run_until_stalled();
    assert_eq!(
        runtime.connections_opened(),
        2,
        "retried on a new connection: {:?} {}",
        daemon.snapshot(),
        client.received_text()
    );
    let seen = log.seen();
    assert_eq!(seen.len(), 1, "processed once, on the new connection");
    assert_eq!(seen[0].conn, 1);
    assert_eq!(daemon.snapshot().completed, 1);
    assert!(client.received_text().ends_with(DONE));
    daemon.finish(&[&client]);
}

#[test]
fn shutdown_fails_waiting_streams_and_leaves_no_task_or_connection() {
    let runtime = FakeRuntime::new();
    let log = server::h2(&runtime, |_| H2Conn::Serve, |_| H2Reply::Hold(unfinished_answer()));
    // One connection of one stream: the second stream waits for the first.
    let pool = PoolConfig { max_connections: 1, max_streams_per_connection: 1, ..h2_pool() };
    let mut daemon = Daemon::start(&runtime, true, pool);
    let running = FakeClient::with_room(usize::MAX);
    let waiting = FakeClient::with_room(usize::MAX);
    daemon.stream(&running);
    daemon.stream(&waiting);
    runtime.run_until_stalled();
    assert_eq!(log.requests(), 1);
    assert!(running.received_text().contains("hello"), "the first stream is running");
    assert_eq!(daemon.snapshot().active, 2);

    daemon.backend.shutdown();
    runtime.run_until_stalled();
    let snapshot = daemon.snapshot();
    assert_eq!((snapshot.failed, snapshot.active), (1, 1), "the waiting stream failed at once: {snapshot:?}");
    let text = waiting.received_text();
    assert!(
        text.contains("event: error") && text.contains(FailureKind::Unavailable.client_message()),
        "{text}"
    );
    // A stream asked for after shutdown fails at once rather than waiting.
    let late = daemon.backend.open_stream(StreamId(99), &Handoff::default());
    assert!(matches!(late, BackendStream::Failed(_)), "a stream after shutdown fails at once");

    // The drain deadline stops the running stream; its connection closes with it.
    daemon.shared.stop.force();
    runtime.run_until_stalled();
    assert_eq!(daemon.snapshot().active, 0);
    running.leave();
    waiting.leave();
    runtime.run_until_stalled();
    assert_eq!(runtime.live_tasks(), 0, "no task outlives shutdown");
    assert_eq!(runtime.connections_open(), 0, "no connection outlives shutdown");
}

/// A connect that never completes fails its stream when the clock passes the
/// connect timeout, and not a moment before.
fn connect_times_out(runtime: FakeRuntime) {
    // One failed attempt is enough to give up, so the timeout is all that is measured.
    let pool = PoolConfig { max_connect_failures: 1, ..h2_pool() };
    let timeout = pool.connect_timeout;
    let mut daemon = Daemon::start(&runtime, true, pool);
    let client = FakeClient::with_room(usize::MAX);
    daemon.stream(&client);
    runtime.run_until_stalled();
    runtime.advance(timeout - Duration::from_millis(1));
    let snapshot = daemon.snapshot();
    assert_eq!((snapshot.failed, snapshot.active), (0, 1), "still connecting: {snapshot:?}");
    runtime.advance(Duration::from_millis(1));
    let snapshot = daemon.snapshot();
    assert_eq!((snapshot.failed, snapshot.active), (1, 0), "failed at the timeout: {snapshot:?}");
    let text = client.received_text();
    assert!(
        text.contains("event: error") && text.contains(FailureKind::Unavailable.client_message()),
        "{text}"
    );
    assert_eq!(runtime.connections_open(), 0, "the attempt's connection is closed");
    daemon.finish(&[&client]);
}

#[test]
fn a_tcp_connect_that_never_completes_fails_the_stream_after_the_connect_timeout() {
    let runtime = FakeRuntime::new();
    runtime.hang_connects();
    connect_times_out(runtime);
}

#[test]
fn a_server_that_never_reads_the_preface_fails_the_stream_after_the_connect_timeout() {
    let runtime = FakeRuntime::new();
    // Pipes of 8 bytes: the 24-byte preface can never be written.
    server::silent(&runtime, 8);
    connect_times_out(runtime);
}

#[test]
fn http1_keeps_a_connection_alive_and_reuses_it() {
    let runtime = FakeRuntime::new();
    let log = server::h1(&runtime, |_| None, |_| H1Reply::Respond(short_answer()));
    let mut daemon = Daemon::start(&runtime, false, h1_pool());
    let first = FakeClient::with_room(usize::MAX);
    daemon.stream(&first);
    runtime.run_until_stalled();
    assert!(first.received_text().ends_with(DONE));
    let second = FakeClient::with_room(usize::MAX);
    daemon.stream(&second);
    runtime.run_until_stalled();
    assert!(second.received_text().ends_with(DONE));
    assert_eq!(log.requests(), 2);
    assert_eq!(runtime.connections_opened(), 1, "the second request reused the first connection");
    daemon.finish(&[&first, &second]);
}

#[test]
fn http1_an_idle_connection_the_server_closed_is_found_before_reuse() {
    let runtime = FakeRuntime::new();
    let close_first = Gate::default();
    let gate = close_first.clone();
    let log = server::h1(
        &runtime,
        move |conn| (conn == 0).then(|| gate.clone()),
        |_| H1Reply::Respond(short_answer()),
    );
    let mut daemon = Daemon::start(&runtime, false, h1_pool());
    let first = FakeClient::with_room(usize::MAX);
    daemon.stream(&first);
    runtime.run_until_stalled();
    assert!(first.received_text().ends_with(DONE));
    assert_eq!(runtime.connections_open(), 1, "kept alive");
    // The server closes the idle connection (its keep-alive timeout).
    close_first.open();
    runtime.run_until_stalled();
    let second = FakeClient::with_room(usize::MAX);
    let second_model = daemon.stream(&second);
    runtime.run_until_stalled();
    assert!(second.received_text().ends_with(DONE), "the request was not lost");
    assert_eq!(runtime.connections_opened(), 2, "a new connection was opened for it");
    assert_eq!(log.requests(), 2, "each request sent exactly once");
    assert_eq!(log.get(request_for(&log, &second_model)).conn, 1);
    assert_eq!(daemon.snapshot().completed, 2);
    daemon.finish(&[&first, &second]);
}

#[test]
fn http1_a_connection_closed_after_the_request_was_written_is_not_sent_again() {
    let runtime = FakeRuntime::new();
    let log = server::h1(&runtime, |_| None, |_| H1Reply::Close);
    let mut daemon = Daemon::start(&runtime, false, h1_pool());
    let client = FakeClient::with_room(usize::MAX);
    daemon.stream(&client);
    runtime.run_until_stalled();
    assert_eq!(log.requests(), 1, "the request is not sent again");
    assert_eq!(runtime.connections_opened(), 1);
    let snapshot = daemon.snapshot();
    assert_eq!((snapshot.failed, snapshot.completed), (1, 0), "{snapshot:?}");
    assert!(client.received_text().contains("event: error"));
    daemon.finish(&[&client]);
}

#[test]
fn shutdown_fails_a_stream_waiting_for_a_connection_and_stops_the_attempt() {
    let runtime = FakeRuntime::new();
    runtime.hang_connects();
    let mut daemon = Daemon::start(&runtime, true, h2_pool());
    let client = FakeClient::with_room(usize::MAX);
    daemon.stream(&client);
    runtime.run_until_stalled();
    assert_eq!(daemon.snapshot().active, 1, "waiting for its connection");
    daemon.backend.shutdown();
    runtime.run_until_stalled();
    let snapshot = daemon.snapshot();
    assert_eq!((snapshot.failed, snapshot.active), (1, 0), "failed at once, not left hanging: {snapshot:?}");
    let text = client.received_text();
    assert!(
        text.contains("event: error") && text.contains(FailureKind::Unavailable.client_message()),
        "{text}"
    );
    client.leave();
    runtime.run_until_stalled();
    assert_eq!(runtime.live_tasks(), 0, "no connection attempt outlives shutdown");
}

fn pinging_pool() -> PoolConfig {
    let ping = PingConfig { interval: Duration::from_secs(30), timeout: Duration::from_secs(10) };
    PoolConfig { idle_timeout: Duration::from_secs(90), ping: Some(ping), ..h2_pool() }
}

/// One stream run to its end on the first connection, which is then idle.
fn after_one_stream(daemon: &mut Daemon, runtime: &FakeRuntime) -> FakeClient {
    let client = FakeClient::with_room(usize::MAX);
    daemon.stream(&client);
    runtime.run_until_stalled();
    assert!(client.received_text().ends_with(DONE));
    assert_eq!(runtime.connections_open(), 1);
    client
}

#[test]
fn an_idle_connection_that_answers_its_pings_stays_and_serves_the_next_stream() {
    let runtime = FakeRuntime::new();
    let log = server::h2(&runtime, |_| H2Conn::Serve, |_| H2Reply::Body(short_answer()));
    let mut daemon = Daemon::start(&runtime, true, pinging_pool());
    let first = after_one_stream(&mut daemon, &runtime);
    // Two PINGs go out and are answered; the connection stays.
    runtime.advance(Duration::from_secs(30));
    runtime.advance(Duration::from_secs(15));
    runtime.advance(Duration::from_secs(30));
    assert_eq!(runtime.connections_open(), 1, "an answered PING keeps the connection");
    let second = FakeClient::with_room(usize::MAX);
    daemon.stream(&second);
    runtime.run_until_stalled();
    assert!(second.received_text().ends_with(DONE));
    assert_eq!((runtime.connections_opened(), log.requests()), (1, 2), "both on the first connection");
    daemon.finish(&[&first, &second]);
}

#[test]
fn a_connection_that_stops_answering_pings_is_dropped_and_its_stream_fails_at_the_ping_deadline() {
    let runtime = FakeRuntime::new();
    let (freeze, release) = (Gate::default(), Gate::default());
    let (first_freeze, first_release) = (freeze.clone(), release.clone());
    let log = server::h2(
        &runtime,
        move |conn| {
            if conn == 0 {
                H2Conn::FreezeWhen { freeze: first_freeze.clone(), release: first_release.clone() }
            } else {
                H2Conn::Serve
            }
        },
        |_| H2Reply::Body(short_answer()),
    );
    let mut daemon = Daemon::start(&runtime, true, pinging_pool());
    let first = after_one_stream(&mut daemon, &runtime);
    // The host vanishes: no FIN, no RST, no answer.
    freeze.open();
    runtime.advance(Duration::from_secs(30));
    // The PING is out; a stream arriving now still goes to the connection.
    let stuck = FakeClient::with_room(usize::MAX);
    daemon.stream(&stuck);
    runtime.advance(Duration::from_secs(9));
    assert_eq!(daemon.snapshot().failed, 0, "not before the PING deadline");
    runtime.advance(Duration::from_secs(1));
    let text = stuck.received_text();
    assert!(text.contains("event: error") && text.contains(FailureKind::Reset.client_message()), "{text}");
    assert_eq!(daemon.snapshot().failed, 1);
    assert_eq!(runtime.connections_open(), 0, "the dead connection is dropped");
    // The next stream gets a new connection and is served.
    let next = FakeClient::with_room(usize::MAX);
    daemon.stream(&next);
    runtime.run_until_stalled();
    assert!(next.received_text().ends_with(DONE), "{}", next.received_text());
    assert_eq!(runtime.connections_opened(), 2);
    assert_eq!(log.seen().last().map(|seen| seen.conn), Some(1));
    release.open();
    daemon.finish(&[&first, &stuck, &next]);
}

#[test]
fn a_graceful_goaway_lets_the_running_stream_finish_and_sends_new_ones_to_a_new_connection() {
    let runtime = FakeRuntime::new();
    let (drain, finish) = (Gate::default(), Gate::default());
    let (first_drain, first_finish) = (drain.clone(), finish.clone());
    let log = server::h2(
        &runtime,
        move |conn| if conn == 0 { H2Conn::DrainWhen(first_drain.clone()) } else { H2Conn::Serve },
        move |nth| {
            if nth == 0 {
                let rest = Bytes::from_static(DONE.as_bytes());
                H2Reply::Then { first: unfinished_answer(), gate: first_finish.clone(), rest }
            } else {
                H2Reply::Body(short_answer())
            }
        },
    );
    let mut daemon = Daemon::start(&runtime, true, h2_pool());
    let running = FakeClient::with_room(usize::MAX);
    daemon.stream(&running);
    runtime.run_until_stalled();
    assert_eq!(content_events(&running), 1, "the first stream is under way");
    // GOAWAY while it runs: it is not cut, and nothing new goes there.
    drain.open();
    runtime.run_until_stalled();
    let next = FakeClient::with_room(usize::MAX);
    daemon.stream(&next);
    runtime.run_until_stalled();
    assert!(next.received_text().ends_with(DONE), "{}", next.received_text());
    assert_eq!(runtime.connections_opened(), 2, "the new stream opened a new connection");
    assert_eq!(log.seen().iter().map(|seen| seen.conn).collect::<Vec<_>>(), [0, 1]);
    assert!(!running.received_text().ends_with(DONE), "the first stream still runs");
    // The draining connection's stream ends as the server wants, not as an error.
    finish.open();
    runtime.run_until_stalled();
    let text = running.received_text();
    assert!(text.ends_with(DONE) && !text.contains("event: error"), "{text}");
    assert_eq!(daemon.snapshot().completed, 2);
    assert_eq!(runtime.connections_open(), 1, "the drained connection closed; the new one stays");
    daemon.finish(&[&running, &next]);
}
