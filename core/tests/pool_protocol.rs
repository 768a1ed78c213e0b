//! The backend pool driven like a runtime drives it: report what happened, drain
//! the commands, check them. No sockets; time is a fake instant moved by hand.

use std::time::{Duration, Instant};

use handoff_core::pool::{Command, ConnId, Event, PingConfig, Pool, PoolConfig, Rejection, StreamId};
use handoff_core::stream::{BackendFailure, FailureKind};

struct Runtime {
    pool: Pool,
    now: Instant,
}

impl Runtime {
    #[allow(clippy::disallowed_methods)]
    fn new(config: PoolConfig) -> Runtime {
        Runtime { pool: Pool::new(config), now: Instant::now() }
    }

    fn report(&mut self, event: Event) -> Vec<Command> {
        self.pool.handle_event(self.now, event);
        self.drain()
    }

    fn request(&mut self, streams: impl IntoIterator<Item = u64>) -> Vec<Command> {
        let mut commands = Vec::new();
        for stream in streams {
            commands.extend(self.report(Event::StreamRequested(StreamId(stream))));
        }
        commands
    }

    fn finish(&mut self, stream: u64) -> Vec<Command> {
        self.report(Event::StreamFinished(StreamId(stream)))
    }

    fn ready(&mut self, conn: u64, peer_max_streams: Option<u32>) -> Vec<Command> {
        self.report(Event::ConnectionReady { conn: ConnId(conn), peer_max_streams })
    }

    /// Reports the stream rejected, with [`transport_failure`] as its failure.
    fn reject(&mut self, stream: u64, rejection: Rejection) -> Vec<Command> {
        self.report(Event::StreamRejected {
            stream: StreamId(stream),
            rejection,
            failure: transport_failure(),
        })
    }

    fn connection_failed(&mut self, conn: u64, reason: &str) -> Vec<Command> {
        self.report(Event::ConnectionFailed { conn: ConnId(conn), reason: reason.to_owned() })
    }

    /// Moves the clock and lets the pool act on whatever fell due.
    fn advance(&mut self, by: Duration) -> Vec<Command> {
        self.now += by;
        self.pool.handle_timeout(self.now);
        self.drain()
    }

    fn drain(&mut self) -> Vec<Command> {
        let commands: Vec<Command> = std::iter::from_fn(|| self.pool.poll_command()).collect();
        // The checker exists with the `__testing` feature (`cargo test --features __testing`).
        #[cfg(feature = "__testing")]
        self.pool.check_invariants().unwrap_or_else(|broken| panic!("pool invariant broken: {broken}"));
        commands
    }
}

/// The failure a transport reports with a rejection.
fn transport_failure() -> BackendFailure {
    BackendFailure { kind: FailureKind::Reset, message: "the backend reset the stream".to_owned() }
}

fn failed_with_transport_failure(stream: u64) -> Command {
    Command::Fail { stream: StreamId(stream), failure: transport_failure() }
}

const RETRYABLE: [Rejection; 3] = [Rejection::RefusedStream, Rejection::GoAway, Rejection::NotSent];

fn config(max_streams_per_connection: u32) -> PoolConfig {
    PoolConfig { max_streams_per_connection, ..PoolConfig::default() }
}

fn opens(commands: &[Command]) -> Vec<u64> {
    commands.iter().filter_map(|c| if let Command::Open(conn) = c { Some(conn.0) } else { None }).collect()
}

/// (stream, connection) pairs in order.
fn assigns(commands: &[Command]) -> Vec<(u64, u64)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Assign { stream, conn } => Some((stream.0, conn.0)),
            _ => None,
        })
        .collect()
}

/// (stream, kind, message) triples in order.
fn fails(commands: &[Command]) -> Vec<(u64, FailureKind, String)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Fail { stream, failure } => Some((stream.0, failure.kind, failure.message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_busiest_connection_fills_before_another_opens() {
    let mut rt = Runtime::new(config(3));
    assert_eq!(rt.request([0]), [Command::Open(ConnId(0))]);
    assert_eq!(assigns(&rt.ready(0, None)), [(0, 0)]);
    assert_eq!(
        rt.request([1, 2]),
        [
            Command::Assign { stream: StreamId(1), conn: ConnId(0) },
            Command::Assign { stream: StreamId(2), conn: ConnId(0) }
        ]
    );
    // Connection 0 is full: the fourth stream needs a second connection.
    assert_eq!(rt.request([3]), [Command::Open(ConnId(1))]);
    assert_eq!(assigns(&rt.ready(1, None)), [(3, 1)]);

    // Connection 0 (two streams) is busier than connection 1 (one): it gets the next.
    assert!(rt.finish(0).is_empty());
    assert_eq!(assigns(&rt.request([4])), [(4, 0)]);

    // Connection 0 empties; new streams go to connection 1 so 0 can idle and close.
    for stream in [1, 2, 4] {
        assert!(rt.finish(stream).is_empty());
    }
    assert_eq!(assigns(&rt.request([5])), [(5, 1)]);
    let stats = rt.pool.stats();
    assert_eq!((stats.open, stats.connecting, stats.active_streams, stats.opened_total), (2, 0, 2, 2));
}

#[test]
fn equally_busy_connections_tie_to_the_lowest_id() {
    let mut rt = Runtime::new(PoolConfig { max_streams_per_connection: 2, ..PoolConfig::default() });
    rt.request(0..4);
    rt.ready(1, None);
    rt.ready(0, None);
    // Streams 0,1 went to connection 1 (ready first), 2,3 to connection 0.
    rt.finish(0);
    rt.finish(2);
    assert_eq!(assigns(&rt.request([4])), [(4, 0)]);
}

#[test]
fn three_hundred_requests_open_three_connections_then_all_run() {
    let mut rt = Runtime::new(config(100));
    let commands = rt.request(0..300);
    assert_eq!(opens(&commands), [0, 1, 2], "one connection per 100 waiting streams, all at once");
    assert!(assigns(&commands).is_empty());
    assert_eq!(rt.pool.stats().queued, 300);

    let mut assigned = Vec::new();
    for conn in 0..3 {
        let commands = rt.ready(conn, None);
        assert!(opens(&commands).is_empty());
        assert!(assigns(&commands).iter().all(|&(_, to)| to == conn));
        assigned.extend(assigns(&commands));
    }
    assert_eq!(assigned.len(), 300);
    let mut streams: Vec<u64> = assigned.iter().map(|&(stream, _)| stream).collect();
    assert!(streams.windows(2).all(|pair| pair[0] < pair[1]), "served first come, first served");
    streams.dedup();
    assert_eq!(streams.len(), 300);
    let stats = rt.pool.stats();
    assert_eq!((stats.queued, stats.active_streams, stats.open, stats.opened_total), (0, 300, 3, 3));
}

#[test]
fn max_connecting_paces_the_opening() {
    let mut rt = Runtime::new(PoolConfig { max_connecting: 2, ..config(10) });
    assert_eq!(opens(&rt.request(0..50)), [0, 1]);
    // Each connection that completes makes room for the next handshake.
    let commands = rt.ready(0, None);
    assert_eq!(assigns(&commands).len(), 10);
    assert_eq!(opens(&commands), [2]);
}

#[test]
fn peer_settings_lower_the_capacity_below_the_configured_one() {
    let mut rt = Runtime::new(PoolConfig { max_connections: 1, ..config(100) });
    assert_eq!(opens(&rt.request(0..60)), [0]);
    // The server allows 50 concurrent streams, not our 100.
    assert_eq!(assigns(&rt.ready(0, Some(50))).len(), 50);
    assert_eq!(rt.pool.stats().queued, 10);

    // Lowered to 40 while 50 run: nothing new starts until fewer than 40 run.
    assert!(rt.report(Event::PeerSettings { conn: ConnId(0), peer_max_streams: Some(40) }).is_empty());
    for stream in 0..10 {
        assert!(rt.finish(stream).is_empty(), "40 running is not below the limit of 40");
    }
    assert_eq!(assigns(&rt.finish(10)), [(50, 0)]);

    // Raised: the rest of the queue starts at once.
    let commands = rt.report(Event::PeerSettings { conn: ConnId(0), peer_max_streams: None });
    assert_eq!(
        assigns(&commands).iter().map(|&(stream, _)| stream).collect::<Vec<_>>(),
        (51..60).collect::<Vec<_>>()
    );
}

#[test]
fn a_lower_peer_limit_opens_another_connection_for_the_rest() {
    let mut rt = Runtime::new(config(100));
    assert_eq!(opens(&rt.request(0..100)), [0]);
    let commands = rt.ready(0, Some(50));
    assert_eq!(assigns(&commands).len(), 50);
    assert_eq!(opens(&commands), [1], "the 50 left over need a connection of their own");
    assert_eq!(assigns(&rt.ready(1, Some(50))).len(), 50);
}

#[test]
fn a_full_queue_fails_new_streams_as_overloaded() {
    let mut rt = Runtime::new(PoolConfig { max_queued: 2, max_connections: 1, ..config(1) });
    assert_eq!(opens(&rt.request([0, 1])), [0]);
    let failed = fails(&rt.request([2]));
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].0, failed[0].1), (2, FailureKind::Overloaded));
    assert!(!failed[0].2.is_empty());
    // Once a slot frees up, the queue moves and there is room again.
    assert_eq!(assigns(&rt.ready(0, None)), [(0, 0)]);
    assert!(fails(&rt.request([3])).is_empty());
    assert_eq!(rt.pool.stats().queued, 2);
}

#[test]
fn goaway_drains_the_connection_then_closes_it() {
    let mut rt = Runtime::new(config(10));
    rt.request([0, 1]);
    rt.ready(0, None);
    assert!(rt.report(Event::GoAway(ConnId(0))).is_empty(), "running streams finish where they are");
    // A new stream goes elsewhere, though connection 0 has free slots.
    assert_eq!(rt.request([2]), [Command::Open(ConnId(1))]);
    assert!(rt.finish(0).is_empty());
    assert_eq!(rt.finish(1), [Command::Close(ConnId(0))]);
    assert_eq!(assigns(&rt.ready(1, None)), [(2, 1)]);
    // Later news about the closed connection changes nothing.
    assert!(rt.report(Event::ConnectionClosed { conn: ConnId(0), reason: "closed".to_owned() }).is_empty());
    assert_eq!(rt.pool.stats().open, 1);
}

#[test]
fn goaway_on_an_idle_connection_closes_it_at_once() {
    let mut rt = Runtime::new(config(10));
    rt.request([0]);
    rt.ready(0, None);
    rt.finish(0);
    assert_eq!(rt.report(Event::GoAway(ConnId(0))), [Command::Close(ConnId(0))]);
}

#[test]
fn a_closed_connection_fails_its_streams_and_the_queue_gets_a_new_one() {
    let mut rt = Runtime::new(PoolConfig { max_connections: 1, ..config(2) });
    rt.request([0, 1, 2]);
    assert_eq!(assigns(&rt.ready(0, None)), [(0, 0), (1, 0)]);
    // The server lowers its limit, so stream 2 keeps waiting when stream 1 ends.
    rt.report(Event::PeerSettings { conn: ConnId(0), peer_max_streams: Some(1) });
    assert!(rt.finish(1).is_empty());
    // Stream 1 finished before the connection died: only stream 0 fails.
    let commands =
        rt.report(Event::ConnectionClosed { conn: ConnId(0), reason: "connection reset".to_owned() });
    assert_eq!(fails(&commands), [(0, FailureKind::Reset, "connection reset".to_owned())]);
    assert_eq!(opens(&commands), [1], "stream 2 still waits and needs a connection");
    assert_eq!(assigns(&rt.ready(1, None)), [(2, 1)]);
    // The runtime reporting stream 0 over afterwards is harmless.
    assert!(rt.finish(0).is_empty());
    assert_eq!(rt.pool.stats().active_streams, 1);
}

#[test]
fn a_refused_stream_is_retried_once_elsewhere_then_failed() {
    let mut rt = Runtime::new(config(2));
    rt.request(0..3);
    rt.ready(0, None);
    assert_eq!(assigns(&rt.ready(1, None)), [(2, 1)]);
    // Connections 0 and 1 carry one stream each after the refusal: 0 would win the
    // tie, but it just refused stream 0.
    let commands = rt.reject(0, Rejection::RefusedStream);
    assert_eq!(commands, [Command::Assign { stream: StreamId(0), conn: ConnId(1) }]);
    let commands = rt.reject(0, Rejection::RefusedStream);
    let failed = fails(&commands);
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].0, failed[0].1), (0, FailureKind::Unavailable));
    assert!(failed[0].2.contains("refused the stream twice"));
    assert!(assigns(&commands).is_empty());
    // Connection 0 kept serving: the next stream goes there.
    assert_eq!(assigns(&rt.request([3])), [(3, 0)]);
}

/// Every retryable rejection: retried once on the other connection (though the
/// rejecting one would win the tie), then failed as unavailable.
#[test]
fn every_retryable_rejection_is_retried_once_elsewhere_then_failed() {
    for rejection in RETRYABLE {
        let mut rt = Runtime::new(config(2));
        rt.request(0..3);
        rt.ready(0, None);
        assert_eq!(assigns(&rt.ready(1, None)), [(2, 1)]);
        rt.finish(1);
        assert_eq!(assigns(&rt.reject(0, rejection)), [(0, 1)], "{rejection:?}");
        let commands = rt.reject(0, rejection);
        let failed: Vec<(u64, FailureKind)> = fails(&commands).iter().map(|f| (f.0, f.1)).collect();
        assert_eq!(failed, [(0, FailureKind::Unavailable)], "{rejection:?}");
        assert!(assigns(&commands).is_empty() && opens(&commands).is_empty(), "{rejection:?}: {commands:?}");
        // The pool has forgotten it: its end reported later changes nothing.
        assert!(rt.finish(0).is_empty(), "{rejection:?}");
        assert_eq!(rt.pool.stats().active_streams, 1, "{rejection:?}: stream 2 alone runs");
    }
}

/// GOAWAY below the stream's id, or a connection that failed before the request
/// was written: the connection takes nothing new, and closes with its last stream.
#[test]
fn a_go_away_or_not_sent_rejection_drains_the_connection() {
    for rejection in [Rejection::GoAway, Rejection::NotSent] {
        let mut rt = Runtime::new(config(3));
        rt.request(0..2);
        assert_eq!(assigns(&rt.ready(0, None)), [(0, 0), (1, 0)]);
        // Stream 0 waits for a new connection; stream 1 still runs on connection 0.
        let commands = rt.reject(0, rejection);
        assert_eq!(commands, [Command::Open(ConnId(1))], "{rejection:?}");
        // A new stream does not go to connection 0, which has free slots.
        assert!(rt.request([2]).is_empty(), "{rejection:?}");
        assert_eq!(assigns(&rt.ready(1, None)), [(0, 1), (2, 1)], "{rejection:?}: the retry first");
        assert_eq!(rt.finish(1), [Command::Close(ConnId(0))], "{rejection:?}");
    }
}

#[test]
fn a_refused_stream_waits_for_a_new_connection_ahead_of_the_queue() {
    let mut rt = Runtime::new(PoolConfig { max_connecting: 1, max_connections: 2, ..config(1) });
    rt.request([0]);
    rt.ready(0, None);
    assert_eq!(opens(&rt.request([1, 2])), [1]);
    // Connection 0 refused stream 0: stream 0 waits for connection 1, and stream 1
    // takes the slot on connection 0 meanwhile.
    let commands = rt.reject(0, Rejection::RefusedStream);
    assert_eq!(assigns(&commands), [(1, 0)]);
    // The refused stream goes first on the new connection, before stream 2.
    assert_eq!(assigns(&rt.ready(1, None)), [(0, 1)]);
    assert_eq!(rt.pool.stats().queued, 1);
}

#[test]
fn a_refused_stream_goes_back_when_no_other_connection_is_allowed() {
    let mut rt = Runtime::new(PoolConfig { max_connections: 1, ..config(2) });
    rt.request([0]);
    rt.ready(0, None);
    assert_eq!(assigns(&rt.reject(0, Rejection::RefusedStream)), [(0, 0)]);
}

/// A connection that failed or said GOAWAY is never given the retry back, even
/// when no other may open: the retry waits for the connection to go.
#[test]
fn a_dead_connection_never_gets_its_rejected_stream_back() {
    for rejection in [Rejection::GoAway, Rejection::NotSent] {
        let mut rt = Runtime::new(PoolConfig { max_connections: 1, ..config(2) });
        rt.request([0, 1]);
        rt.ready(0, None);
        assert!(rt.reject(0, rejection).is_empty(), "{rejection:?}");
        assert_eq!(rt.pool.stats().queued, 1);
        // Its last stream ends, it closes, and a new connection serves the retry.
        assert_eq!(rt.finish(1), [Command::Close(ConnId(0)), Command::Open(ConnId(1))], "{rejection:?}");
        assert_eq!(assigns(&rt.ready(1, None)), [(0, 1)], "{rejection:?}");
    }
}

#[test]
fn a_request_that_may_have_been_processed_fails_at_once_and_frees_its_slot() {
    let mut rt = Runtime::new(PoolConfig { max_connections: 1, ..config(1) });
    rt.request([0, 1]);
    assert_eq!(assigns(&rt.ready(0, None)), [(0, 0)]);
    let commands = rt.reject(0, Rejection::MaybeProcessed);
    // Not sent again, failed with the transport's failure; the connection serves on.
    assert_eq!(
        commands,
        [failed_with_transport_failure(0), Command::Assign { stream: StreamId(1), conn: ConnId(0) }]
    );
    assert!(rt.finish(0).is_empty());
    let stats = rt.pool.stats();
    assert_eq!((stats.active_streams, stats.queued, stats.open), (1, 0, 1));
}

#[test]
fn a_retried_request_that_may_have_been_processed_fails_with_its_failure() {
    for rejection in RETRYABLE {
        let mut rt = Runtime::new(config(2));
        rt.request(0..3);
        rt.ready(0, None);
        assert_eq!(assigns(&rt.ready(1, None)), [(2, 1)]);
        assert_eq!(assigns(&rt.reject(0, rejection)), [(0, 1)], "{rejection:?}");
        assert_eq!(
            rt.reject(0, Rejection::MaybeProcessed),
            [failed_with_transport_failure(0)],
            "{rejection:?}"
        );
    }
}

#[test]
fn a_rejection_of_a_stream_not_running_is_answered_with_its_failure() {
    for rejection in RETRYABLE.into_iter().chain([Rejection::MaybeProcessed]) {
        let mut rt = Runtime::new(PoolConfig { max_connections: 1, ..config(1) });
        // Never requested, or already over.
        assert_eq!(rt.reject(7, rejection), [failed_with_transport_failure(7)], "{rejection:?}");
        rt.request([0, 1, 2]);
        rt.ready(0, None);
        rt.finish(0);
        assert_eq!(rt.reject(0, rejection), [failed_with_transport_failure(0)], "{rejection:?}");
        // Still waiting: answered, and it loses its place in the queue.
        assert_eq!(rt.reject(2, rejection), [failed_with_transport_failure(2)], "{rejection:?}");
        assert_eq!(rt.pool.stats().queued, 0, "{rejection:?}");
        assert!(rt.finish(1).is_empty(), "{rejection:?}: stream 2 is not assigned");
    }
}

#[test]
fn a_stream_cancelled_while_queued_loses_its_place() {
    let mut rt = Runtime::new(config(10));
    rt.request(0..5);
    assert!(rt.finish(1).is_empty());
    assert!(rt.finish(3).is_empty());
    assert!(rt.finish(3).is_empty(), "a duplicate report is ignored");
    assert_eq!(rt.pool.stats().queued, 3);
    assert_eq!(assigns(&rt.ready(0, None)), [(0, 0), (2, 0), (4, 0)]);
}

#[test]
fn an_idle_connection_closes_after_the_idle_timeout() {
    let idle_timeout = Duration::from_secs(90);
    // Pings off: their deadlines would come first (they have a test of their own).
    let mut rt = Runtime::new(PoolConfig { idle_timeout, ping: None, ..config(10) });
    rt.request([0]);
    rt.ready(0, None);
    assert_eq!(rt.pool.poll_timeout(), None, "a busy connection has no idle deadline");
    rt.finish(0);
    let idle_since = rt.now;
    assert_eq!(rt.pool.poll_timeout(), Some(idle_since + idle_timeout));

    // A stream in the meantime resets the clock.
    assert!(rt.advance(Duration::from_secs(60)).is_empty());
    assert_eq!(assigns(&rt.request([1])), [(1, 0)]);
    assert_eq!(rt.pool.poll_timeout(), None);
    rt.finish(1);
    let idle_since = rt.now;

    assert!(rt.advance(idle_timeout - Duration::from_millis(1)).is_empty());
    assert_eq!(rt.advance(Duration::from_millis(1)), [Command::Close(ConnId(0))]);
    assert_eq!(rt.now, idle_since + idle_timeout);
    assert_eq!(rt.pool.poll_timeout(), None);
    assert_eq!(rt.pool.stats().open, 0);
    assert!(rt.pool.is_idle());
}

#[test]
fn failed_connections_are_retried_with_backoff_then_waiting_streams_fail() {
    let mut rt = Runtime::new(PoolConfig {
        connect_backoff: Duration::from_millis(100),
        max_connect_backoff: Duration::from_secs(5),
        max_connect_failures: 3,
        ..config(100)
    });
    assert_eq!(opens(&rt.request([0])), [0]);

    // First failure: the stream keeps waiting; a new attempt after 100 ms.
    assert!(rt.connection_failed(0, "connection refused").is_empty());
    assert_eq!(rt.pool.poll_timeout(), Some(rt.now + Duration::from_millis(100)));
    assert!(rt.request([1]).is_empty(), "no attempt during the backoff");
    assert!(rt.advance(Duration::from_millis(99)).is_empty());
    assert_eq!(opens(&rt.advance(Duration::from_millis(1))), [1]);

    // Second failure: the backoff doubles.
    assert!(rt.connection_failed(1, "connection refused").is_empty());
    assert_eq!(rt.pool.poll_timeout(), Some(rt.now + Duration::from_millis(200)));
    assert_eq!(opens(&rt.advance(Duration::from_millis(200))), [2]);

    // Third failure in a row with nothing else open: the waiting streams fail.
    let failed = fails(&rt.connection_failed(2, "connection refused"));
    let failed_streams: Vec<(u64, FailureKind)> = failed.iter().map(|f| (f.0, f.1)).collect();
    assert_eq!(failed_streams, [(0, FailureKind::Unavailable), (1, FailureKind::Unavailable)]);
    assert!(failed.iter().all(|f| f.2.contains("connection refused")));
    assert_eq!(rt.pool.poll_timeout(), None, "nothing waits, so nothing to wake for");
    assert!(rt.pool.is_idle());

    // While the backoff (400 ms) runs, new streams fail at once instead of waiting.
    let failed = fails(&rt.request([2]));
    assert_eq!(failed.iter().map(|f| (f.0, f.1)).collect::<Vec<_>>(), [(2, FailureKind::Unavailable)]);
    // After it, the next stream tries again, and a working connection resets it all.
    rt.advance(Duration::from_millis(400));
    assert_eq!(opens(&rt.request([3])), [3]);
    assert_eq!(assigns(&rt.ready(3, None)), [(3, 3)]);
    rt.finish(3);
    assert_eq!(assigns(&rt.request([4])), [(4, 3)]);
}

#[test]
fn a_failed_attempt_leaves_streams_waiting_for_an_open_connection() {
    let mut rt = Runtime::new(PoolConfig { max_connect_failures: 1, ..config(1) });
    rt.request([0]);
    rt.ready(0, None);
    assert_eq!(opens(&rt.request([1])), [1]);
    // The only failure allowed, but connection 0 will free its slot: stream 1 waits.
    assert!(fails(&rt.connection_failed(1, "timed out")).is_empty());
    assert_eq!(assigns(&rt.finish(0)), [(1, 0)]);
}

#[test]
fn backoff_never_exceeds_its_cap() {
    let mut rt = Runtime::new(PoolConfig {
        connect_backoff: Duration::from_millis(100),
        max_connect_backoff: Duration::from_millis(300),
        max_connect_failures: 10,
        ..config(1)
    });
    rt.request([0]);
    for (conn, backoff) in [(0, 100), (1, 200), (2, 300), (3, 300)] {
        rt.connection_failed(conn, "refused");
        assert_eq!(rt.pool.poll_timeout(), Some(rt.now + Duration::from_millis(backoff)));
        assert_eq!(opens(&rt.advance(Duration::from_millis(backoff))), [conn + 1]);
    }
}

#[test]
fn goaway_during_the_handshake_counts_as_a_failed_attempt() {
    let mut rt = Runtime::new(PoolConfig { connect_backoff: Duration::from_millis(100), ..config(10) });
    rt.request([0]);
    assert_eq!(rt.report(Event::GoAway(ConnId(0))), [Command::Close(ConnId(0))]);
    assert_eq!(rt.pool.poll_timeout(), Some(rt.now + Duration::from_millis(100)));
    assert_eq!(opens(&rt.advance(Duration::from_millis(100))), [1]);
}

#[test]
fn events_about_unknown_streams_and_connections_are_ignored() {
    let mut rt = Runtime::new(config(10));
    let before = rt.pool.stats();
    for event in [
        Event::StreamFinished(StreamId(7)),
        Event::ConnectionReady { conn: ConnId(7), peer_max_streams: Some(1) },
        Event::PeerSettings { conn: ConnId(7), peer_max_streams: None },
        Event::ConnectionFailed { conn: ConnId(7), reason: String::new() },
        Event::GoAway(ConnId(7)),
        Event::ConnectionClosed { conn: ConnId(7), reason: String::new() },
    ] {
        assert!(rt.report(event).is_empty());
    }
    assert_eq!(rt.pool.stats(), before);
    // A stream requested twice is served once.
    rt.request([1]);
    rt.request([1]);
    assert_eq!(assigns(&rt.ready(0, None)), [(1, 0)]);
}

#[test]
fn enormous_configured_durations_do_not_overflow_the_clock() {
    let mut rt = Runtime::new(PoolConfig {
        idle_timeout: Duration::MAX,
        connect_backoff: Duration::MAX,
        max_connect_backoff: Duration::MAX,
        ..config(10)
    });
    rt.request([0]);
    rt.connection_failed(0, "refused");
    assert!(rt.pool.poll_timeout().is_some_and(|deadline| deadline > rt.now));
    rt.request([1]);
    assert_eq!(rt.pool.stats().queued, 2);

    let mut rt = Runtime::new(PoolConfig { idle_timeout: Duration::MAX, ..config(10) });
    rt.request([0]);
    rt.ready(0, None);
    rt.finish(0);
    assert!(rt.pool.poll_timeout().is_some_and(|deadline| deadline > rt.now));
}

fn pinging(interval: u64, timeout: u64) -> PoolConfig {
    let ping = PingConfig { interval: Duration::from_secs(interval), timeout: Duration::from_secs(timeout) };
    PoolConfig { idle_timeout: Duration::from_secs(90), ping: Some(ping), ..config(10) }
}

/// Streams 0.. run on connection 0, then finish: it is idle.
fn idle_connection(rt: &mut Runtime, streams: u64) {
    rt.request(0..streams);
    rt.ready(0, None);
    for stream in 0..streams {
        rt.finish(stream);
    }
}

#[test]
fn an_idle_connection_is_pinged_and_one_that_answers_stays_until_its_idle_timeout() {
    let mut rt = Runtime::new(pinging(30, 10));
    idle_connection(&mut rt, 1);
    let idle_since = rt.now;
    assert_eq!(rt.pool.poll_timeout(), Some(idle_since + Duration::from_secs(30)));
    assert_eq!(rt.advance(Duration::from_secs(30)), [Command::Ping(ConnId(0))]);
    assert_eq!(rt.pool.poll_timeout(), Some(rt.now + Duration::from_secs(10)), "the answer is due");
    assert!(rt.advance(Duration::from_secs(5)).is_empty());
    assert!(rt.report(Event::Pong(ConnId(0))).is_empty());
    assert!(rt.report(Event::Pong(ConnId(0))).is_empty(), "a second answer changes nothing");
    assert_eq!(rt.pool.poll_timeout(), Some(rt.now + Duration::from_secs(30)), "the next PING");
    assert_eq!(rt.advance(Duration::from_secs(30)), [Command::Ping(ConnId(0))]);
    assert!(rt.report(Event::Pong(ConnId(0))).is_empty());
    // 65 s idle; the idle timeout (90 s) still closes it, pings or not.
    assert!(rt.advance(Duration::from_secs(24)).is_empty());
    assert_eq!(rt.advance(Duration::from_secs(1)), [Command::Close(ConnId(0))]);
    assert_eq!(rt.pool.poll_timeout(), None, "nothing is left to ping");
    assert_eq!(rt.pool.stats().ping_timeouts_total, 0);
}

#[test]
fn a_connection_that_does_not_answer_a_ping_is_dead_and_its_streams_fail_at_the_deadline() {
    let mut rt = Runtime::new(pinging(30, 10));
    idle_connection(&mut rt, 1);
    assert_eq!(rt.advance(Duration::from_secs(30)), [Command::Ping(ConnId(0))]);
    // A stream arrives while the answer is awaited: the connection still looks fine.
    assert_eq!(assigns(&rt.request([1])), [(1, 0)]);
    assert!(rt.advance(Duration::from_secs(9)).is_empty());
    let commands = rt.advance(Duration::from_secs(1));
    assert_eq!(commands.len(), 2, "{commands:?}");
    let failed = fails(&commands);
    assert_eq!(failed.len(), 1, "{commands:?}");
    assert_eq!((failed[0].0, failed[0].1), (1, FailureKind::Reset));
    assert!(failed[0].2.contains("PING"), "{}", failed[0].2);
    assert_eq!(commands[1], Command::Abort(ConnId(0)), "after its streams' failures");
    let stats = rt.pool.stats();
    assert_eq!((stats.open, stats.active_streams, stats.ping_timeouts_total), (0, 0, 1));
    // Forgotten: a late answer or the stream's own report changes nothing, and the
    // next stream gets a new connection.
    assert!(rt.report(Event::Pong(ConnId(0))).is_empty());
    assert!(rt.finish(1).is_empty());
    assert_eq!(opens(&rt.request([2])), [1]);
}

#[test]
fn a_busy_connection_is_not_pinged_and_pings_off_sends_none() {
    let mut rt = Runtime::new(pinging(30, 10));
    rt.request([0]);
    rt.ready(0, None);
    assert_eq!(rt.pool.poll_timeout(), None, "a busy connection has no PING due");
    assert!(rt.advance(Duration::from_secs(120)).is_empty());
    rt.finish(0);
    assert_eq!(rt.advance(Duration::from_secs(30)), [Command::Ping(ConnId(0))]);

    let mut off = Runtime::new(PoolConfig { ping: None, ..pinging(30, 10) });
    idle_connection(&mut off, 1);
    assert_eq!(off.pool.poll_timeout(), Some(off.now + Duration::from_secs(90)), "only the idle timeout");
    assert_eq!(off.advance(Duration::from_secs(90)), [Command::Close(ConnId(0))]);
}
