//! What the daemon refuses before a handoff becomes a stream, and what it does
//! when it runs out of fds: only stream sockets are served (anything else is
//! closed without a byte written), only the allowed users and groups may hand
//! off (closed before their message is read), and a full fd table answers 503
//! from the fd reserve instead of closing clients silently.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::time::{sleep, timeout, Instant};

use super::metrics::{handoffs, logged_address, sample, scrape_until, Endpoint};
use super::{expect_mock_stream, mock_daemon, sole_owner};
use crate::scenarios::{Context, Daemon};

/// How long a count, a log line or an EOF may take to show up.
const PATIENCE: Duration = Duration::from_secs(20);

const REQUEST: &[u8] = br#"{"prompt":"never answered: a private prompt"}"#;

/// A uid and gid this test does not run as (it runs as root in CI).
fn stranger_id() -> String {
    let euid = rustix::process::geteuid().as_raw();
    (if euid == 4242 { 4243 } else { 4242 }).to_string()
}

/// Reads `fd` (non-blocking) until EOF, failing on any byte.
async fn expect_eof_without_bytes(what: &str, fd: OwnedFd) {
    let flags = rustix::fs::fcntl_getfl(&fd).unwrap_or_else(|e| panic!("{what}: F_GETFL: {e}"));
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK)
        .unwrap_or_else(|e| panic!("{what}: F_SETFL: {e}"));
    let mut file = std::fs::File::from(fd);
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 4096];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!("{what}: the daemon wrote {n} bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => panic!("{what}: reading the other end: {error}"),
        }
        assert!(Instant::now() < deadline, "{what}: no EOF within {PATIENCE:?}");
        sleep(Duration::from_millis(20)).await;
    }
}

/// Lines of the daemon's log that contain `text`, once there are `count`.
async fn log_lines(daemon: &Daemon, text: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = daemon.stderr();
        let lines: Vec<String> = log.lines().filter(|line| line.contains(text)).map(str::to_owned).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{count} lines with {text:?} not logged within {PATIENCE:?}: {log}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

pub async fn guard_only_stream_sockets_are_served(cx: Context) {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    let daemon = mock_daemon(&cx, 1).args(["--metrics-addr", "127.0.0.1:0"]).start().await;
    let endpoint = Endpoint::Tcp(logged_address(&daemon).await);
    let pair = |kind| {
        socketpair(AddressFamily::UNIX, kind, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC, None)
            .unwrap_or_else(|e| panic!("socketpair: {e}"))
    };

    // A pipe's write end: a response written into it would reach the reader.
    let (pipe_reader, pipe_writer) = rustix::pipe::pipe().unwrap_or_else(|e| panic!("pipe: {e}"));
    daemon.send_message(REQUEST, &[pipe_writer.as_fd()]).await;
    drop(pipe_writer);
    // A connected UDP socket: a response would arrive as datagrams.
    let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("UDP bind: {e}"));
    let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("UDP bind: {e}"));
    sender.connect(receiver.local_addr().unwrap_or_else(|e| panic!("UDP address: {e}"))).unwrap();
    daemon.send_message(REQUEST, &[sender.as_fd()]).await;
    drop(sender);
    // A regular file opened for writing.
    let path = cx.scratch().write_file("handed-off-file", b"");
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap_or_else(|e| panic!("open: {e}"));
    daemon.send_message(REQUEST, &[file.as_fd()]).await;
    drop(file);
    // Unix SEQPACKET and DGRAM sockets.
    let (seqpacket, seqpacket_peer) = pair(SocketType::SEQPACKET);
    daemon.send_message(REQUEST, &[seqpacket.as_fd()]).await;
    drop(seqpacket);
    let (dgram, dgram_peer) = pair(SocketType::DGRAM);
    daemon.send_message(REQUEST, &[dgram.as_fd()]).await;
    drop(dgram);

    let refused = handoffs("rejected", "not_stream_socket");
    let samples =
        scrape_until(&endpoint, "five fds refused", |s| s.get(&refused).copied() == Some(5.0)).await;
    let bad = handoffs("rejected", "bad_handoff");
    assert_eq!(sample(&samples, &bad), 0.0, "refused before the data is decoded: {samples:?}");
    expect_eof_without_bytes("the pipe", pipe_reader).await;
    expect_eof_without_bytes("the SEQPACKET socket", seqpacket_peer).await;
    // A good stream after them: the daemon has long been done with the five.
    expect_mock_stream(&daemon, r#"{"prompt":"a TCP socket after them"}"#).await;
    receiver.set_nonblocking(true).unwrap_or_else(|e| panic!("non-blocking: {e}"));
    let mut datagram = [0u8; 2048];
    match receiver.recv(&mut datagram) {
        Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the UDP socket got something: {other:?}"),
    }
    match rustix::io::read(&dgram_peer, &mut datagram) {
        Err(rustix::io::Errno::AGAIN) | Ok(0) => {}
        other => panic!("the DGRAM socket got something: {other:?}"),
    }
    let written = std::fs::metadata(&path).unwrap_or_else(|e| panic!("stat: {e}")).len();
    assert_eq!(written, 0, "nothing was written into the file");

    // Logged once per kind: two datagram sockets, one line.
    let lines = log_lines(&daemon, "not a stream socket", 4).await;
    let mut kinds: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.split("kind=").nth(1)?.split(' ').next().map(|kind| kind.trim_matches('"')))
        .collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["datagram_socket", "pipe", "regular_file", "seqpacket_socket"], "{lines:#?}");
    assert!(!daemon.stderr().contains("private prompt"), "the handoff data is not logged");
    daemon.terminate().await;
}

pub async fn guard_a_peer_not_allowed_is_closed_unread(cx: Context) {
    let stranger = stranger_id();
    // A receive timeout longer than the wait below: a connection closed within
    // it was closed by the peer check, not by the wait for a message.
    let daemon = mock_daemon(&cx, 1)
        .args(["--allow-uid", &stranger, "--allow-gid", &stranger, "--receive-timeout", "120"])
        .args(["--metrics-addr", "127.0.0.1:0"])
        .start()
        .await;
    let endpoint = Endpoint::Tcp(logged_address(&daemon).await);
    let refused = handoffs("rejected", "peer_not_allowed");
    // The start-up probe's connection (it sent nothing) is refused too.
    let before = scrape_until(&endpoint, "the probe refused", |s| s.get(&refused).is_some_and(|&n| n >= 1.0))
        .await
        .get(&refused)
        .copied()
        .unwrap_or_default();
    // Sending nothing, the module's connection is closed all the same.
    let mut silent = daemon.connect().await.unwrap_or_else(|e| panic!("connecting: {e}"));
    let mut byte = [0u8; 1];
    match timeout(PATIENCE, silent.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("the daemon wrote {n} bytes to the module's connection"),
        Err(_) => panic!("a refused peer's connection was not closed within {PATIENCE:?}"),
    }
    // A handoff's client gets nothing: the message was never read. The module
    // may even find its connection closed before it sends (EPIPE).
    let (client, server) = cx.clients().open().await;
    let module = daemon.connect().await.unwrap_or_else(|e| panic!("connecting: {e}"));
    let sent = crate::load::handoff::send(
        &module,
        REQUEST,
        server.as_fd(),
        PATIENCE,
        crate::load::HandoffSocketType::SeqPacket,
    )
    .await;
    drop((module, server));
    let response = client.read_to_end().await;
    assert!(
        response.bytes().is_empty(),
        "a refused handoff writes nothing ({sent:?}): {:?}",
        response.text()
    );

    scrape_until(&endpoint, "two more refused peers", |s| s.get(&refused).copied() == Some(before + 2.0))
        .await;
    let line = log_lines(&daemon, "not allowed to hand off", 1).await.remove(0);
    let me = std::process::id().to_string();
    let uid = rustix::process::geteuid().as_raw().to_string();
    assert!(line.contains(&format!("peer_pid={me}")), "the line names the pid: {line}");
    assert!(line.contains(&format!("peer_uid={uid}")), "and the uid: {line}");
    assert!(line.contains("peer_gid="), "and the gid: {line}");
    assert!(!daemon.stderr().contains("private prompt"), "the handoff data is never logged");
    daemon.terminate().await;
}

pub async fn guard_allowed_peers_are_served_and_unknown_names_refused(cx: Context) {
    // This process's uid by name (root in CI) or number; or its gid.
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw().to_string();
    let user = if uid == 0 { "root".to_owned() } else { uid.to_string() };
    let stranger = stranger_id();
    for args in [
        vec!["--allow-uid", &stranger, "--allow-uid", &user],
        vec!["--allow-uid", &stranger, "--allow-gid", &gid],
    ] {
        let daemon = mock_daemon(&cx, 1).args(args.iter().copied()).start().await;
        expect_mock_stream(&daemon, r#"{"prompt":"from an allowed peer"}"#).await;
        daemon.terminate().await;
    }
    let mut unknown = mock_daemon(&cx, 1).args(["--allow-uid", "no-such-user-here"]).spawn();
    let status = unknown.wait_exit(PATIENCE).await;
    assert!(!status.success(), "an unknown user fails the start");
    let log = unknown.stderr();
    assert!(log.contains("--allow-uid") && log.contains("no-such-user-here"), "named in the error: {log}");
    assert!(std::fs::symlink_metadata(unknown.socket()).is_err(), "no socket was bound");
}

/// The fd limit the daemon runs with, and how many handoffs come at once.
const FD_LIMIT: u64 = 160;
const HANDOFFS: usize = 2 * FD_LIMIT as usize;

pub async fn guard_out_of_fds_every_client_gets_a_stream_or_a_503(cx: Context) {
    // Streams of 18 events 60 ms apart hold their fds while the rest arrive.
    let daemon = mock_daemon(&cx, 60)
        .fd_limit(FD_LIMIT)
        .args(["--metrics-addr", "127.0.0.1:0", "--retry-after", "2"])
        .start()
        .await;
    let endpoint = Endpoint::Tcp(logged_address(&daemon).await);
    let warning = log_lines(&daemon, "hard fd limit is below", 1).await.remove(0);
    assert!(warning.contains(&format!("hard_fd_limit={FD_LIMIT}")), "{warning}");
    let daemon = Arc::new(daemon);
    let mut clients = Vec::with_capacity(HANDOFFS);
    for i in 0..HANDOFFS {
        let daemon = Arc::clone(&daemon);
        clients.push(tokio::spawn(async move {
            let client = daemon.hand_off(format!(r#"{{"prompt":"fd pressure {i}"}}"#)).await;
            client.try_read_to_end(Duration::from_secs(60)).await
        }));
    }
    let (mut streams, mut refused, mut silent) = (0usize, 0usize, Vec::new());
    for (i, client) in clients.into_iter().enumerate() {
        let response = client.await.unwrap_or_else(|e| panic!("client {i}: {e}"));
        match response {
            Ok(response) if response.bytes().is_empty() => silent.push(format!("{i}: closed")),
            Ok(response) if response.bytes().starts_with(b"HTTP/1.1 503") => {
                response.expect_error_response(503);
                assert_eq!(response.header("Retry-After").as_deref(), Some("2"), "{:?}", response.text());
                refused += 1;
            }
            Ok(response) => {
                response.expect_completed_stream();
                streams += 1;
            }
            Err(failure) => silent.push(format!("{i}: {failure}")),
        }
    }
    let daemon = sole_owner(daemon);
    let samples = scrape_until(&endpoint, "every handoff counted", |s| {
        s.get(&handoffs("completed", "")).copied() == Some(streams as f64)
    })
    .await;
    eprintln!(
        "{HANDOFFS} handoffs under {FD_LIMIT} fds: {streams} streams, {refused} 503s, silent: {silent:?}"
    );
    assert!(refused > 0, "the fd table never filled: {streams} streams");
    assert_eq!(sample(&samples, &handoffs("rejected", "fd_exhausted")), refused as f64);
    assert!(sample(&samples, "handoff_fd_exhaustion_total{event=\"reserve_used\"}") >= 1.0);
    // Only the handoff that first meets a full table can be lost (the kernel
    // closes its fd before anyone can answer); counted as fd_dropped. One per
    // worker at most, if they meet it at once.
    let dropped = sample(&samples, &handoffs("rejected", "fd_dropped"));
    assert_eq!(dropped, silent.len() as f64, "every silent close is counted: {silent:?}");
    let workers = std::env::var(crate::scenarios::daemon::THREADS_ENV)
        .ok()
        .and_then(|threads| threads.parse::<usize>().ok())
        .unwrap_or(1);
    assert!(silent.len() <= workers, "silent closes: {silent:?}");
    assert_eq!(streams + refused + silent.len(), HANDOFFS);
    // With the table free again, the daemon serves as before.
    expect_mock_stream(&daemon, r#"{"prompt":"after the pressure"}"#).await;
    daemon.terminate().await;
}
