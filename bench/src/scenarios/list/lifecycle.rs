//! Starting and stopping: SIGTERM drains, a drain deadline ends streams with an error
//! event, stale sockets are replaced and live ones left alone, SOCK_STREAM works.

use std::time::Duration;

use tokio::time::{sleep, Instant};

use super::{expect_mock_stream, mock_daemon};
use crate::scenarios::daemon::{make_stale_socket, EXIT_PATIENCE};
use crate::scenarios::{content_events, Context};

/// How long a stopping daemon may take to remove its socket file.
const UNLINK_PATIENCE: Duration = Duration::from_secs(5);

pub async fn sigterm_lets_running_stream_finish(cx: Context) {
    let mut daemon = mock_daemon(&cx, 100).start().await;
    let mut running = daemon.hand_off(r#"{"prompt":"finish me"}"#).await;
    running.read_events(1).await;

    daemon.signal_terminate();
    let deadline = Instant::now() + UNLINK_PATIENCE;
    while std::fs::symlink_metadata(daemon.socket()).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the socket file is still there {UNLINK_PATIENCE:?} after SIGTERM"
        );
        sleep(Duration::from_millis(10)).await;
    }
    if let Ok(_connection) = daemon.connect().await {
        panic!("a new handoff connected after SIGTERM");
    }

    let response = running.read_to_end().await;
    let events = response.expect_completed_stream();
    assert_eq!(content_events(&events), 18, "the running stream finished: {:?}", response.text());
    daemon.expect_clean_exit().await;
}

pub async fn drain_timeout_ends_stream_with_error(cx: Context) {
    // 18 events 500 ms apart: 9 s, far beyond the 1 s drain deadline.
    let mut daemon = mock_daemon(&cx, 500).args(["--drain-timeout", "1"]).start().await;
    let mut running = daemon.hand_off(r#"{"prompt":"too long to wait for"}"#).await;
    running.read_events(1).await;

    daemon.signal_terminate();
    let response = running.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    assert_eq!(error.error_type, "server_shutdown", "{:?}", response.text());
    assert!(content_events(&events) < 18, "the stream was cut short: {:?}", response.text());
    daemon.expect_clean_exit().await;
}

pub async fn stale_socket_is_replaced(cx: Context) {
    let path = cx.scratch().path("d.sock");
    make_stale_socket(&path);
    let daemon = mock_daemon(&cx, 1).socket(&path).start().await;
    expect_mock_stream(&daemon, r#"{"prompt":"on a replaced socket"}"#).await;
    daemon.terminate().await;
}

pub async fn live_socket_is_not_taken_over(cx: Context) {
    let first = mock_daemon(&cx, 1).start().await;
    let mut second = mock_daemon(&cx, 1).spawn();
    let status = second.wait_exit(EXIT_PATIENCE).await;
    assert!(!status.success(), "a second daemon on a live socket exits non-zero, not {status}");
    let message = second.stderr();
    let path = first.socket().display().to_string();
    assert!(message.contains(&path), "the second daemon's message names the socket {path}: {message:?}");
    assert!(std::fs::symlink_metadata(first.socket()).is_ok(), "the live socket file is left alone");

    expect_mock_stream(&first, r#"{"prompt":"the first daemon still serves"}"#).await;
    first.terminate().await;
}

pub async fn stream_socket_type_handoff_works(cx: Context) {
    let daemon = mock_daemon(&cx, 1).stream_socket().start().await;
    expect_mock_stream(&daemon, r#"{"prompt":"over SOCK_STREAM"}"#).await;
    daemon.terminate().await;
}

pub async fn sigint_stops_like_sigterm(cx: Context) {
    let mut daemon = mock_daemon(&cx, 20).start().await;
    let mut running = daemon.hand_off(r#"{"prompt":"interrupted"}"#).await;
    running.read_events(1).await;
    daemon.signal_interrupt();
    let response = running.read_to_end().await;
    assert_eq!(content_events(&response.expect_completed_stream()), 18, "{:?}", response.text());
    daemon.expect_clean_exit().await;
}

pub async fn socket_file_has_the_configured_mode(cx: Context) {
    use std::os::unix::fs::PermissionsExt;
    let mode_of = |path: &std::path::Path| match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let default = mock_daemon(&cx, 1).start().await;
    assert_eq!(mode_of(default.socket()), 0o660, "the default --mode is 0660");
    let private =
        mock_daemon(&cx, 1).socket(cx.scratch().path("private.sock")).args(["--mode", "0600"]).start().await;
    assert_eq!(mode_of(private.socket()), 0o600, "--mode 0600");
    expect_mock_stream(&private, r#"{"prompt":"through a 0600 socket"}"#).await;
    default.terminate().await;
    private.terminate().await;
}

pub async fn soft_fd_limit_is_raised_to_the_hard_limit(cx: Context) {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let soft = hard.map_or(1024, |hard| (hard / 2).min(1024));
    let daemon = mock_daemon(&cx, 1).soft_fd_limit(soft).start().await;
    let (soft_now, hard_now) = daemon.fd_limits();
    assert_eq!(
        soft_now, hard_now,
        "started with a soft limit of {soft}; the daemon raises it to the hard limit"
    );
    daemon.terminate().await;
}

pub async fn sigterm_answers_every_queued_handoff(cx: Context) {
    const QUEUED: usize = 20;
    let mut daemon = mock_daemon(&cx, 10).arg("--benchmark").start().await;
    // Stopped, the daemon accepts nothing; the module's connects and sends still
    // complete, into the listen backlog, as they do on a busy server.
    daemon.signal_stop();
    let mut clients = Vec::with_capacity(QUEUED);
    for i in 0..QUEUED {
        clients.push(daemon.hand_off(format!(r#"{{"prompt":"queued {i}"}}"#)).await);
    }
    daemon.signal_terminate();
    daemon.signal_continue();

    let readers: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(client.try_read_to_end(Duration::from_secs(15))))
        .collect();
    let (mut streamed, mut refused, mut failures) = (0u64, 0u64, Vec::new());
    for (i, reader) in readers.into_iter().enumerate() {
        let response = match reader.await {
            Ok(Ok(response)) => response,
            Ok(Err(failure)) => {
                failures.push(format!("handoff {i}: {failure}"));
                continue;
            }
            Err(panicked) => panic!("reading handoff {i}: {panicked}"),
        };
        if response.bytes().is_empty() {
            failures.push(format!("handoff {i}: a silent close, no response at all"));
            continue;
        }
        match response.status() {
            200 => {
                assert_eq!(content_events(&response.expect_completed_stream()), 18, "{:?}", response.text());
                streamed += 1;
            }
            503 => {
                response.expect_error_response(503);
                let retry_after = response.header("Retry-After");
                let seconds = retry_after.as_deref().and_then(|value| value.parse::<u32>().ok());
                assert!(seconds.is_some(), "a 503 with Retry-After in seconds, not {retry_after:?}");
                refused += 1;
            }
            status => failures.push(format!("handoff {i}: status {status}: {:?}", response.text())),
        }
    }
    eprintln!("{QUEUED} handoffs queued at SIGTERM: {streamed} streamed, {refused} got 503");
    assert!(failures.is_empty(), "{} of {QUEUED} queued handoffs lost: {failures:#?}", failures.len());
    daemon.expect_clean_exit().await;
    let summary = daemon.benchmark_summary();
    assert_eq!(daemon.summary_count("rejected (503)"), Some(refused), "503s counted: {summary:?}");
    assert_eq!(daemon.summary_count("completed"), Some(streamed), "{summary:?}");
}

/// Written to a pipe (as under systemd or a log file), the log is plain text: no
/// colour codes, our own lines at info, and no dependency's debug output.
pub async fn logs_to_a_pipe_are_plain_text_at_info(cx: Context) {
    let mut daemon = mock_daemon(&cx, 5).start().await;
    expect_mock_stream(&daemon, r#"{"prompt":"log me"}"#).await;
    daemon.signal_terminate();
    daemon.expect_clean_exit().await;
    let log = daemon.stderr();
    assert!(log.contains("listening"), "our info lines are logged by default: {log:?}");
    assert!(!log.contains('\u{1b}'), "colour codes written to a pipe: {log:?}");
    assert!(!log.contains("DEBUG") && !log.contains("TRACE"), "debug output by default: {log:?}");
}

/// The socket is bound before the workers' runtimes exist; a SIGTERM sent the
/// moment the socket file appears (as a supervisor stopping a daemon it just
/// started would) must still be a clean stop, never death by the default action.
pub async fn sigterm_at_once_after_start_is_a_clean_stop(cx: Context) {
    for round in 0..10 {
        let socket = cx.scratch().path(&format!("early-{round}.sock"));
        let mut daemon = mock_daemon(&cx, 1).socket(&socket).spawn();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // A tight poll: the window this checks is a millisecond or two long.
        while std::fs::symlink_metadata(&socket).is_err() {
            assert!(std::time::Instant::now() < deadline, "round {round}: no socket file within 10 s");
            std::thread::sleep(Duration::from_micros(50));
        }
        daemon.signal_terminate();
        daemon.expect_clean_exit().await;
    }
}
