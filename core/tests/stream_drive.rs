//! Drives a stream through its public API only, the way a runtime does: after
//! every input, poll until `Timeout`, then sleep until that instant.

use std::time::{Duration, Instant};

use bytes::Bytes;
use handoff_core::mock::{Script, EVENT_COUNT};
use handoff_core::stream::{Input, Outcome, Output, Source, Stream, StreamConfig};

#[allow(clippy::disallowed_methods)]
fn clock_origin() -> Instant {
    Instant::now()
}

/// A runtime's loop on a simulated clock: returns the writes (with when they
/// happened) and the outcome. Fails on livelock: a drain that never reaches
/// `Timeout`, or a stream that never finishes.
fn run_like_a_runtime(mut stream: Stream, start: Instant) -> (Vec<(Duration, Bytes)>, Outcome) {
    let mut now = start;
    let mut writes = Vec::new();
    let mut outcome = None;
    let mut closed = false;
    for _wake in 0..1_000 {
        let mut deadline = None;
        for _ in 0..8 {
            match stream.poll_output() {
                Output::Write(bytes) => {
                    assert!(!closed, "write after CloseClient");
                    writes.push((now - start, bytes));
                }
                Output::CancelBackend => panic!("a mock stream has no backend to cancel"),
                Output::CloseClient => closed = true,
                Output::Done(done) => {
                    assert!(closed, "Done before CloseClient");
                    outcome = Some(done);
                }
                Output::Timeout(at) => {
                    deadline = Some(at);
                    break;
                }
            }
        }
        let deadline = deadline.expect("drain reaches Timeout within 8 outputs");
        if let Some(outcome) = outcome {
            assert!(stream.is_finished());
            return (writes, outcome);
        }
        now = now.max(deadline);
        stream.handle_input(now, Input::Timeout);
    }
    panic!("stream did not finish within 1000 wake-ups");
}

#[test]
fn a_mock_stream_runs_to_done_under_the_drain_rule() {
    let config = StreamConfig { mock_delay: Duration::from_millis(705), ..StreamConfig::default() };
    let start = clock_origin();
    let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n");
    let stream = Stream::new(start, &config, head.clone(), Source::Mock(Script::new(1, "7", "Hi")));
    let (writes, outcome) = run_like_a_runtime(stream, start);
    assert_eq!(outcome, Outcome::Completed);
    assert_eq!(writes[0], (Duration::ZERO, head));
    assert_eq!(writes.len(), 1 + EVENT_COUNT as usize);
    for (i, (at, _)) in writes.iter().enumerate().skip(1) {
        assert_eq!(*at, Duration::from_millis(705) * i as u32);
    }
    let (_, last) = writes.last().expect("writes");
    assert!(last.ends_with(b"\"index\":17}\n\ndata: [DONE]\n\n"), "last write: {last:?}");
}
