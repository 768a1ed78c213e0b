//! The per-stream driver without a socket: a fake runtime whose clock the test
//! moves and an in-memory client whose reading the test controls. Each test
//! checks what a user relies on: a slow or stalled client ends only its own
//! stream, the slot is free the moment the outcome is decided, every client
//! failure reaches the machine, and no task outlives its bounds.

mod fake;

use std::sync::Arc;
use std::time::Duration;

use fake::{FakeClient, FakeRuntime};
use handoff_core::http1;
use handoff_core::limits::Limits;
use handoff_core::mock;
use handoff_core::stream::{Source, Stream, StreamConfig};
use handoff_io::backend::BackendStream;
use handoff_io::daemon::Shared;
use handoff_io::driver::StreamTask;
use handoff_io::runtime::Runtime;

const DELAY: Duration = Duration::from_millis(100);

fn config() -> StreamConfig {
    StreamConfig {
        mock_delay: DELAY,
        write_timeout: Duration::from_secs(30),
        linger: Duration::from_secs(2),
        ..StreamConfig::default()
    }
}

/// Starts one mock stream with `client`; returns the runtime and the counters.
fn start(config: StreamConfig, client: FakeClient, max_streams: u64) -> (FakeRuntime, Arc<Limits>) {
    let runtime = FakeRuntime::new();
    let limits = Limits::new(max_streams);
    let shared = Shared::for_mock(runtime.clone(), Arc::clone(&limits), config.clone());
    let admission = limits.try_admit().expect("a slot is free");
    let head = http1::client_head(&[]);
    let machine = Stream::new(runtime.now(), &config, head, Source::Mock(mock::Script::new(1, "u", "hi")));
    let task: StreamTask<FakeRuntime, FakeClient> =
        StreamTask::new(shared, 1, client, machine, BackendStream::None, admission);
    runtime.spawn(task);
    runtime.run_until_stalled();
    (runtime, limits)
}

/// Moves the clock in `step`s until `total` has passed.
fn run_for(runtime: &FakeRuntime, total: Duration, step: Duration) {
    let mut passed = Duration::ZERO;
    while passed < total {
        runtime.advance(step);
        passed += step;
    }
}

#[test]
fn a_reading_client_gets_every_event_then_a_graceful_bounded_close() {
    let client = FakeClient::with_room(usize::MAX);
    let (runtime, limits) = start(config(), client.clone(), 10);
    run_for(&runtime, DELAY * 18, DELAY);
    let text = client.received_text();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("data: {\"content\"").count(), 18);
    let snapshot = limits.snapshot();
    assert_eq!((snapshot.completed, snapshot.active), (1, 0), "counted and freed at [DONE]");
    // Writing is shut down; the socket lingers for what the client still sends...
    assert!(client.state().shut_down);
    assert_eq!(runtime.live_tasks(), 1, "the close lingers");
    // ...for at most the linger time.
    runtime.advance(Duration::from_secs(2));
    assert_eq!(runtime.live_tasks(), 0, "the task ends when the linger does");
}

#[test]
fn eof_while_lingering_ends_the_task_at_once() {
    let client = FakeClient::with_room(usize::MAX);
    let (runtime, _) = start(config(), client.clone(), 10);
    run_for(&runtime, DELAY * 18, DELAY);
    assert_eq!(runtime.live_tasks(), 1);
    client.leave();
    runtime.run_until_stalled();
    assert_eq!(runtime.live_tasks(), 0);
}

#[test]
fn a_client_that_stops_reading_ends_its_own_stream_after_the_write_timeout() {
    // Room for the head and a little more, then nothing.
    let client = FakeClient::with_room(http1::client_head(&[]).len() + 10);
    // Events 2 s apart: the script would run 36 s, longer than the write timeout.
    let config = StreamConfig { mock_delay: Duration::from_secs(2), ..config() };
    let (runtime, limits) = start(config, client.clone(), 1);
    // The first event (at 2 s) is the last the client takes any of.
    run_for(&runtime, Duration::from_secs(31), Duration::from_secs(1));
    assert_eq!(limits.snapshot().active, 1, "still within the write timeout");
    run_for(&runtime, Duration::from_secs(2), Duration::from_secs(1));
    let snapshot = limits.snapshot();
    assert_eq!(snapshot.client_stalled, 1, "{snapshot:?}");
    assert_eq!(snapshot.completed, 0);
    assert_eq!(snapshot.active, 0, "the slot is free at once");
    assert!(limits.try_admit().is_some(), "the next handoff is admitted");
    assert_eq!(runtime.live_tasks(), 0, "a stalled client is closed without waiting");
    assert!(!client.state().shut_down, "nothing is flushed to a stalled client");
}

#[test]
fn a_slow_client_that_keeps_taking_bytes_is_never_stalled() {
    let client = FakeClient::with_room(150);
    // Each read of 100 bytes counts as progress (at least `min_write_progress`).
    let config = StreamConfig { write_timeout: Duration::from_secs(5), min_write_progress: 64, ..config() };
    let (runtime, limits) = start(config, client.clone(), 10);
    // 100 bytes every 4 s: slower than the script, but progress each time.
    for _ in 0..200 {
        runtime.advance(Duration::from_secs(4));
        client.read(100);
        runtime.run_until_stalled();
        if runtime.live_tasks() == 0 {
            break;
        }
    }
    let snapshot = limits.snapshot();
    assert_eq!((snapshot.completed, snapshot.client_stalled), (1, 0), "{snapshot:?}");
    assert!(client.received_text().ends_with("data: [DONE]\n\n"));
    assert_eq!(runtime.live_tasks(), 0);
}

#[test]
fn the_slot_is_freed_when_done_is_decided_even_if_the_client_has_not_taken_it() {
    let client = FakeClient::with_room(usize::MAX);
    let (runtime, limits) = start(config(), client.clone(), 1);
    run_for(&runtime, DELAY * 17, DELAY);
    // The client stops reading just before the last event and [DONE].
    client.state().room = 0;
    runtime.advance(DELAY);
    let snapshot = limits.snapshot();
    assert_eq!((snapshot.completed, snapshot.active), (1, 0), "{snapshot:?}");
    assert_eq!(runtime.live_tasks(), 1, "the final flush is still waiting");
    // The final flush is bounded by the write timeout.
    run_for(&runtime, Duration::from_secs(30), Duration::from_secs(1));
    assert_eq!(runtime.live_tasks(), 0, "no task outlives the flush bound");
    assert!(!client.received_text().ends_with("data: [DONE]\n\n"));
}

#[test]
fn a_client_gone_before_the_head_is_client_gone_never_completed() {
    let client = FakeClient::with_room(usize::MAX);
    client.leave();
    let (runtime, limits) = start(config(), client.clone(), 1);
    run_for(&runtime, DELAY * 20, DELAY);
    let snapshot = limits.snapshot();
    assert_eq!((snapshot.client_gone, snapshot.completed, snapshot.active), (1, 0, 0), "{snapshot:?}");
    assert_eq!(runtime.live_tasks(), 0);
}

#[test]
fn a_client_leaving_mid_stream_is_client_gone() {
    let client = FakeClient::with_room(usize::MAX);
    let (runtime, limits) = start(config(), client.clone(), 1);
    run_for(&runtime, DELAY * 5, DELAY);
    client.leave();
    runtime.run_until_stalled();
    let snapshot = limits.snapshot();
    assert_eq!((snapshot.client_gone, snapshot.completed, snapshot.active), (1, 0, 0), "{snapshot:?}");
    assert_eq!(runtime.live_tasks(), 0);
}
