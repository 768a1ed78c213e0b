//! handoff-smol runs on its executor threads only: each worker has its own
//! reactor, so no async-io reactor thread starts, and no tokio runtime (workers or
//! blocking pool) hides behind h2 and tokio-rustls. (smol's blocking pool would
//! appear only for DNS of a host name; this backend is an IP literal.)

use std::time::Duration;

use handoff_bench::scenarios::daemon::thread_names;
use handoff_bench::scenarios::list::{openai_daemon, start_mock, Transport};
use handoff_bench::scenarios::{content, run_scenario, Daemon};

/// Executor threads are named after the binary (the main thread is one of them).
const EXECUTOR_PREFIX: &str = "handoff-smol";

/// The one other thread: it sleeps in a blocking read until SIGHUP and then reads
/// the config file; no runtime, no reactor.
const RELOAD_THREAD: &str = "handoff-reload";

#[test]
fn only_executor_threads_also_after_streaming_over_h2c() {
    run_scenario(env!("CARGO_BIN_EXE_handoff-smol"), |cx| async move {
        let mock = start_mock(Transport::H2c, 5, Duration::from_millis(2)).await;
        let daemon = openai_daemon(&cx, &mock, Transport::H2c).args(["--threads", "2"]).start().await;
        expect_only_executor_threads(&daemon, "after start");

        for i in 0..3 {
            let data = format!(r#"{{"prompt":"stream {i} over h2c"}}"#);
            let response = daemon.hand_off(data).await.read_to_end().await;
            assert!(!content(&response.expect_completed_stream()).is_empty());
        }
        assert_eq!(mock.recorder().requests(), 3, "the streams went through the h2c backend");
        expect_only_executor_threads(&daemon, "after streaming");
        daemon.terminate().await;
    });
}

fn expect_only_executor_threads(daemon: &Daemon, when: &str) {
    let names = thread_names(daemon.pid());
    let strangers: Vec<&String> =
        names.iter().filter(|name| !name.starts_with(EXECUTOR_PREFIX) && *name != RELOAD_THREAD).collect();
    assert!(strangers.is_empty(), "{when}: threads that are not executors (a hidden runtime?): {names:?}");
    let executors = names.iter().filter(|name| name.starts_with(EXECUTOR_PREFIX)).count();
    assert_eq!(executors, 2, "{when}: --threads 2 runs two executor threads: {names:?}");
}
