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

    /// Scripts biased towards arriving and refused streams and failing connections.
    #[test]
    fn busy_failing_backends_keep_every_rule(script in vec(prop_oneof![Just(0u8), Just(4), Just(7), Just(8), any::<u8>()], 0..800)) {
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
