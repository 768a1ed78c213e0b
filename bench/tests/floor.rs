//! handoff-floor, from outside: real handoffs of loopback TCP sockets as the module
//! makes them, and every byte compared with what a daemon on its mock backend writes
//! (core's head, core's `mock::Script` for the same handoff data, `[DONE]`), then
//! EOF; SIGTERM stops it cleanly with the daemons' summary.

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::BytesMut;
use handoff_bench::load::DEFAULT_DATA;
use handoff_bench::scenarios::daemon::make_stale_socket;
use handoff_bench::scenarios::{run_scenario, Context, Daemon};
use handoff_core::{handoff, http1, mock, sse};
use tokio::io::AsyncReadExt;
use tokio::time::{sleep, timeout, Instant};

const FLOOR: &str = env!("CARGO_BIN_EXE_handoff-floor");

/// Everything a daemon's mock backend writes for its `number`th stream of `data`:
/// the handoff decoded as the daemons decode it, then core's head, script and `[DONE]`.
fn daemon_bytes(number: u64, data: &str) -> Vec<u8> {
    let handoff = handoff::decode(data.as_bytes()).expect("the standard handoff data decodes");
    let user = handoff.user_id.as_deref().unwrap_or("anonymous");
    let mut out = BytesMut::from(&http1::client_head(&[])[..]);
    let mut script = mock::Script::new(number, user, &handoff.last_user_text());
    while script.write_next(&mut out) {}
    out.extend_from_slice(sse::DONE);
    out.to_vec()
}

fn floor(cx: &Context, delay_ms: u64) -> handoff_bench::scenarios::DaemonCommand {
    cx.daemon().args(["-d", &delay_ms.to_string(), "-b", "mock", "--benchmark"])
}

fn count(daemon: &Daemon, name: &str) -> u64 {
    daemon.summary_count(name).unwrap_or_else(|| panic!("no {name:?} in the summary {:?}", daemon.stdout()))
}

/// The number the floor reports in "N writes waited for EPOLLOUT" on stderr.
fn waited_writes(daemon: &Daemon) -> u64 {
    let stderr = daemon.stderr();
    let line = stderr.lines().find(|line| line.contains("writes waited for EPOLLOUT"));
    let line = line.unwrap_or_else(|| panic!("no write count in {stderr:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|word| *word == "writes").expect("the word is there");
    words[at - 1].parse().unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn floor_writes_the_mock_daemons_bytes_then_closes() {
    run_scenario(FLOOR, |cx| async move {
        let mut daemon = floor(&cx, 10).args(["-m", "0600"]).start().await;
        let mode = std::fs::metadata(daemon.socket()).expect("the socket file exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "-m 0600 applied to the socket");

        // One after another, so the floor numbers them 1, 2, 3 as a daemon would.
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(daemon.hand_off(DEFAULT_DATA).await);
        }
        // A message without an fd is dropped and numbers nothing.
        daemon.send_message(DEFAULT_DATA.as_bytes(), &[]).await;
        // Two fds: the first is the client (stream 4), the second is closed at once.
        let (served, served_fd) = daemon.clients().open().await;
        let (extra, extra_fd) = daemon.clients().open().await;
        daemon.send_message(DEFAULT_DATA.as_bytes(), &[served_fd.as_fd(), extra_fd.as_fd()]).await;
        drop((served_fd, extra_fd));
        clients.push(served);

        let mut total = 0;
        for (number, client) in (1..).zip(clients) {
            let response = client.read_to_end().await;
            let expected = daemon_bytes(number, DEFAULT_DATA);
            assert_eq!(
                response.text(),
                String::from_utf8_lossy(&expected),
                "stream {number}: the head, 18 events and [DONE] a daemon writes, then EOF"
            );
            // Paced, not dumped: the last event is due 18 × 10 ms after the handoff.
            assert!(
                response.elapsed >= Duration::from_millis(170),
                "stream {number} took {:?}",
                response.elapsed
            );
            total += expected.len() as u64;
        }
        let nothing = extra.read_to_end().await;
        assert!(nothing.bytes().is_empty(), "the extra fd is closed unwritten: {:?}", nothing.text());

        daemon.signal_terminate();
        daemon.expect_clean_exit().await;
        assert_eq!(count(&daemon, "started"), 4);
        assert_eq!(count(&daemon, "completed"), 4);
        assert_eq!(count(&daemon, "client gone"), 0);
        assert_eq!(count(&daemon, "bytes sent"), total);
        let peak = count(&daemon, "peak concurrent streams");
        assert!((1..=4).contains(&peak), "peak {peak}");
    });
}

#[test]
fn sigterm_removes_the_socket_and_finishes_running_streams() {
    run_scenario(FLOOR, |cx| async move {
        // 18 × 100 ms: the streams are still running when SIGTERM arrives.
        let mut daemon = floor(&cx, 100).start().await;
        let first = daemon.hand_off(DEFAULT_DATA).await;
        let second = daemon.hand_off(DEFAULT_DATA).await;
        daemon.signal_terminate();

        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::symlink_metadata(daemon.socket()).is_ok() {
            assert!(Instant::now() < deadline, "the socket file is still there 10 s after SIGTERM");
            sleep(Duration::from_millis(5)).await;
        }
        assert!(daemon.try_exit().is_none(), "the floor exited with two streams running");
        assert!(daemon.connect().await.is_err(), "a handoff after SIGTERM found a socket");

        for (number, client) in (1..).zip([first, second]) {
            let response = client.read_to_end().await;
            assert_eq!(response.text(), String::from_utf8_lossy(&daemon_bytes(number, DEFAULT_DATA)));
        }
        daemon.expect_clean_exit().await;
        assert_eq!(count(&daemon, "started"), 2);
        assert_eq!(count(&daemon, "completed"), 2);
        let bytes = daemon_bytes(1, DEFAULT_DATA).len() + daemon_bytes(2, DEFAULT_DATA).len();
        assert_eq!(count(&daemon, "bytes sent"), bytes as u64);
    });
}

#[test]
fn a_client_that_stops_reading_gets_every_byte_later() {
    run_scenario(FLOOR, |cx| async move {
        let mut daemon = floor(&cx, 10).start().await;
        // A Unix stream socket charges every unread write to the sender's buffer, so
        // at the smallest SO_SNDBUF a few unread events fill it and the floor's
        // writes must wait for EPOLLOUT.
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("a socketpair");
        rustix::net::sockopt::set_socket_send_buffer_size(&theirs, 1).expect("SO_SNDBUF");
        daemon.send_message(DEFAULT_DATA.as_bytes(), &[theirs.as_fd()]).await;
        drop(theirs);

        // Every event is due by 180 ms; the client reads nothing until well after.
        sleep(Duration::from_millis(500)).await;
        ours.set_nonblocking(true).expect("non-blocking");
        let mut ours = tokio::net::UnixStream::from_std(ours).expect("registering the client end");
        let mut received = Vec::new();
        let reading = timeout(Duration::from_secs(30), ours.read_to_end(&mut received)).await;
        reading.expect("EOF within 30 s").expect("reading the client end");
        assert_eq!(
            String::from_utf8_lossy(&received),
            String::from_utf8_lossy(&daemon_bytes(1, DEFAULT_DATA))
        );

        daemon.signal_terminate();
        daemon.expect_clean_exit().await;
        assert_eq!(count(&daemon, "completed"), 1);
        assert!(waited_writes(&daemon) >= 1, "no write waited: the test did not fill the buffer");
    });
}

#[test]
fn refuses_a_live_socket_replaces_a_stale_one_and_only_serves_the_mock() {
    run_scenario(FLOOR, |cx| async move {
        let path = cx.scratch().path("stale.sock");
        make_stale_socket(&path);
        let first = floor(&cx, 10).socket(&path).start().await;

        let mut second = floor(&cx, 10).socket(&path).spawn();
        let status = second.wait_exit(Duration::from_secs(15)).await;
        assert!(!status.success(), "a second floor on a live socket must fail");
        assert!(second.stderr().contains("another daemon"), "{}", second.stderr());

        let mut openai = cx.daemon().socket(cx.scratch().path("o.sock")).args(["-b", "openai"]).spawn();
        let status = openai.wait_exit(Duration::from_secs(15)).await;
        assert!(!status.success(), "-b openai is not the floor's");

        let response = first.hand_off(DEFAULT_DATA).await.read_to_end().await;
        assert_eq!(response.text(), String::from_utf8_lossy(&daemon_bytes(1, DEFAULT_DATA)));
        first.terminate().await;
    });
}
