//! Randomized tests over the simulated runtime; the protocol scenarios are in
//! `core/tests/pool_protocol.rs`.

use std::time::Instant;

use proptest::collection::vec;
use proptest::prelude::*;

use super::simulation::simulate;
use super::*;

#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    Instant::now()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_event_sequences_keep_every_rule(script in vec(any::<u8>(), 0..800)) {
        simulate(start(), &script).map_err(TestCaseError::fail)?;
    }

    /// Scripts biased towards arriving and rejected streams and failing connections.
    #[test]
    fn busy_failing_backends_keep_every_rule(script in vec(prop_oneof![Just(0u8), Just(4), Just(7), Just(8), any::<u8>()], 0..800)) {
        simulate(start(), &script).map_err(TestCaseError::fail)?;
    }

    /// Scripts made of ready connections and streams rejected every way: op 8 is
    /// followed by a stream choice and a rejection choice, op 11 with a choice of 1
    /// or 5 modulo 6 rejects an unknown or a waiting stream.
    #[test]
    fn rejections_of_every_kind_keep_every_rule(script in vec(prop_oneof![Just(0u8), Just(3), Just(8), Just(11), Just(2), any::<u8>()], 0..800)) {
        simulate(start(), &script).map_err(TestCaseError::fail)?;
    }
}

/// Scripts that once broke a rule, kept as they were shrunk.
#[test]
fn recorded_failures_replay() {
    let scripts: [&[u8]; 2] = [
        // The last connection able to serve went away after enough failed attempts:
        // the waiting streams must fail rather than wait for a backend known down.
        &[65, 0, 11, 2, 0, 141, 2, 0, 38, 0, 0, 20, 0, 60, 171, 4, 27, 0, 119, 0, 12, 52, 0, 78],
        &[8, 4, 4, 4, 0, 4, 0, 4, 0, 180, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 45, 7, 3, 0, 0, 0, 4, 0, 4, 0, 7],
    ];
    for script in scripts {
        assert_eq!(simulate(start(), script), Ok(()), "script {script:?}");
    }
}

#[test]
fn the_empty_script_settles() {
    assert_eq!(simulate(start(), &[]), Ok(()));
}

#[test]
fn cancelled_streams_do_not_pile_up_in_the_queue() {
    let now = start();
    let mut pool = Pool::new(PoolConfig { max_connecting: 1, max_connections: 1, ..PoolConfig::default() });
    // Nothing ever becomes ready: every stream waits, and most are cancelled.
    for id in 0..10_000 {
        pool.handle_event(now, Event::StreamRequested(StreamId(id)));
        if id % 100 != 0 {
            pool.handle_event(now, Event::StreamFinished(StreamId(id)));
        }
    }
    assert_eq!(pool.stats().queued, 100);
    assert_eq!(pool.check_invariants(), Ok(()));
    assert!(pool.queue.stored() <= 2 * 100 + queue::WaitQueue::<()>::compact_slack() + 1);
}

#[test]
fn only_unprocessed_requests_are_retryable() {
    let retryable: Vec<bool> =
        [Rejection::RefusedStream, Rejection::GoAway, Rejection::NotSent, Rejection::MaybeProcessed]
            .map(Rejection::is_retryable)
            .to_vec();
    assert_eq!(retryable, [true, true, true, false]);
}

/// Drives the pool directly, checking its invariants after every input.
struct Driven {
    pool: Pool,
    now: Instant,
}

impl Driven {
    fn new(config: PoolConfig) -> Driven {
        Driven { pool: Pool::new(config), now: start() }
    }

    fn send(&mut self, event: Event) -> Vec<Command> {
        self.pool.handle_event(self.now, event);
        let commands = std::iter::from_fn(|| self.pool.poll_command()).collect();
        assert_eq!(self.pool.check_invariants(), Ok(()));
        commands
    }

    fn reject(&mut self, stream: u64, rejection: Rejection) -> Vec<Command> {
        self.send(Event::StreamRejected { stream: StreamId(stream), rejection, failure: failure() })
    }
}

fn failure() -> BackendFailure {
    BackendFailure {
        kind: FailureKind::Reset,
        message: "stream reset after the request was written".to_owned(),
    }
}

fn assign(stream: u64, conn: u64) -> Command {
    Command::Assign { stream: StreamId(stream), conn: ConnId(conn) }
}

/// Two ready connections of two slots, stream 0 on connection 0 and stream 1 on
/// connection 1.
fn two_connections() -> Driven {
    let mut driven = Driven::new(PoolConfig { max_streams_per_connection: 2, ..PoolConfig::default() });
    driven.send(Event::StreamRequested(StreamId(0)));
    driven.send(Event::StreamRequested(StreamId(1)));
    driven.send(Event::StreamRequested(StreamId(2)));
    driven.send(Event::ConnectionReady { conn: ConnId(0), peer_max_streams: None });
    assert_eq!(
        driven.send(Event::ConnectionReady { conn: ConnId(1), peer_max_streams: None }),
        [assign(2, 1)]
    );
    // Stream 1 finishes so each connection carries one stream: 0 and 2.
    driven.send(Event::StreamFinished(StreamId(1)));
    driven
}

#[test]
fn each_retryable_rejection_is_retried_once_on_the_other_connection_then_fails() {
    for rejection in [Rejection::RefusedStream, Rejection::GoAway, Rejection::NotSent] {
        let mut driven = two_connections();
        let commands = driven.reject(0, rejection);
        let expected_retry = assign(0, 1);
        match rejection {
            // The connection keeps serving.
            Rejection::RefusedStream => assert_eq!(commands, [expected_retry], "{rejection:?}"),
            // The connection takes nothing new and, carrying nothing, closes.
            _ => assert_eq!(commands, [Command::Close(ConnId(0)), expected_retry], "{rejection:?}"),
        }
        assert!(matches!(
            driven.pool.streams.get(&StreamId(0)),
            Some(StreamSlot::Running { conn: ConnId(1), retried: true, .. })
        ));
        let commands = driven.reject(0, rejection);
        assert_eq!(commands.len(), 1, "{rejection:?}: {commands:?}");
        assert!(
            matches!(&commands[0], Command::Fail { stream: StreamId(0), failure }
                if failure.kind == FailureKind::Unavailable && failure.message.contains("refused the stream twice")),
            "{rejection:?}: {commands:?}"
        );
        assert!(!driven.pool.streams.contains_key(&StreamId(0)), "forgotten after its failure");
        assert!(driven.send(Event::StreamFinished(StreamId(0))).is_empty());
        assert_eq!(driven.pool.stats().active_streams, 1, "{rejection:?}: only stream 2 runs");
    }
}

#[test]
fn a_maybe_processed_request_fails_at_once_and_frees_its_slot() {
    let mut driven = Driven::new(PoolConfig {
        max_streams_per_connection: 1,
        max_connections: 1,
        ..PoolConfig::default()
    });
    driven.send(Event::StreamRequested(StreamId(0)));
    driven.send(Event::StreamRequested(StreamId(1)));
    driven.send(Event::ConnectionReady { conn: ConnId(0), peer_max_streams: None });
    let commands = driven.reject(0, Rejection::MaybeProcessed);
    assert_eq!(commands, [Command::Fail { stream: StreamId(0), failure: failure() }, assign(1, 0)]);
    assert!(driven.pool.retries.is_empty());
}

#[test]
fn a_retried_stream_that_may_have_been_processed_fails_with_its_own_failure() {
    let mut driven = two_connections();
    assert_eq!(driven.reject(0, Rejection::RefusedStream), [assign(0, 1)]);
    assert_eq!(
        driven.reject(0, Rejection::MaybeProcessed),
        [Command::Fail { stream: StreamId(0), failure: failure() }]
    );
}

#[test]
fn a_rejected_stream_not_running_is_answered_and_forgotten() {
    let mut driven = Driven::new(PoolConfig { max_connections: 1, ..PoolConfig::default() });
    // Never seen.
    assert_eq!(
        driven.reject(7, Rejection::RefusedStream),
        [Command::Fail { stream: StreamId(7), failure: failure() }]
    );
    // Waiting in the queue: it loses its place, O(1), and is never assigned.
    for stream in 0..3 {
        driven.send(Event::StreamRequested(StreamId(stream)));
    }
    assert_eq!(
        driven.reject(1, Rejection::NotSent),
        [Command::Fail { stream: StreamId(1), failure: failure() }]
    );
    assert_eq!((driven.pool.queue.len(), driven.pool.queue.stored()), (2, 3));
    let commands = driven.send(Event::ConnectionReady { conn: ConnId(0), peer_max_streams: None });
    assert_eq!(commands, [assign(0, 0), assign(2, 0)]);
}

#[test]
fn a_stream_waiting_for_its_retry_rejected_again_is_answered_and_forgotten() {
    let mut driven = Driven::new(PoolConfig { max_connecting: 1, ..PoolConfig::default() });
    driven.send(Event::StreamRequested(StreamId(0)));
    driven.send(Event::ConnectionReady { conn: ConnId(0), peer_max_streams: None });
    // Connection 1 opens for the retry, which waits for it.
    assert_eq!(driven.reject(0, Rejection::RefusedStream), [Command::Open(ConnId(1))]);
    assert_eq!(driven.pool.retries.len(), 1);
    assert_eq!(
        driven.reject(0, Rejection::MaybeProcessed),
        [Command::Fail { stream: StreamId(0), failure: failure() }]
    );
    assert!(driven.pool.retries.is_empty());
    assert!(driven.send(Event::ConnectionReady { conn: ConnId(1), peer_max_streams: None }).is_empty());
}
