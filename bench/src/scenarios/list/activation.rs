//! Socket activation, service notifications and restarts that lose nothing,
//! without systemd: the test binds the listening socket itself and passes it to
//! each daemon as fd 3 with `LISTEN_FDS=1` and `LISTEN_PID` set to the daemon's
//! pid, and reads `READY=1`, `WATCHDOG=1` and `STOPPING=1` from a datagram
//! socket it binds as `NOTIFY_SOCKET`.

use std::ffi::OsString;
use std::io::Read;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use tokio::net::UnixDatagram;
use tokio::time::{sleep, timeout, Instant};

use super::{expect_mock_stream, mock_daemon};
use crate::load::handoff::{self, ConnectPolicy};
use crate::load::{self, HandoffSocketType, LoadConfig};
use crate::scenarios::client::Client;
use crate::scenarios::daemon::{EXIT_PATIENCE, START_PATIENCE, THREADS_ENV};
use crate::scenarios::{content_events, Context};

/// Streams in the restart run, and the span their arrivals are spread over.
const RESTART_STREAMS: u64 = 3000;
const RESTART_RAMP: Duration = Duration::from_secs(8);
/// When daemon B starts and when A is stopped, from the start of the load.
const START_B_AFTER: Duration = Duration::from_millis(2500);
const STOP_A_AFTER_B: Duration = Duration::from_millis(1000);
/// Budget of the whole load run (ramp, the last streams, slack).
const LOAD_PATIENCE: Duration = Duration::from_secs(60);
/// How long a notification may take to arrive.
const NOTIFY_PATIENCE: Duration = Duration::from_secs(5);

/// The listening socket a service manager would hold, bound by the test.
fn listening_socket(path: &Path, socket_type: SocketType) -> OwnedFd {
    let socket = rustix::net::socket_with(AddressFamily::UNIX, socket_type, SocketFlags::CLOEXEC, None)
        .unwrap_or_else(|e| panic!("creating a socket: {e}"));
    let address =
        SocketAddrUnix::new(path).unwrap_or_else(|e| panic!("{} is not a socket path: {e}", path.display()));
    rustix::net::bind(&socket, &address).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
    rustix::net::listen(&socket, 4096).unwrap_or_else(|e| panic!("listening on {}: {e}", path.display()));
    socket
}

/// One daemon started as a service manager would start it.
struct Activated {
    child: Child,
    name: &'static str,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    notify: Option<UnixDatagram>,
}

/// What to pass a daemon.
struct Launch<'a> {
    name: &'static str,
    /// Dup'ed to fd 3 in the child; `None`: fd 3 is left closed.
    fd3: Option<BorrowedFd<'a>>,
    /// `LISTEN_FDS`; `LISTEN_PID` is set to the daemon's pid when this is given.
    listen_fds: Option<&'a str>,
    /// Where `NOTIFY_SOCKET` is bound (by the test).
    notify: Option<PathBuf>,
    env: Vec<(&'a str, String)>,
    args: Vec<OsString>,
}

impl<'a> Launch<'a> {
    fn new(name: &'static str, socket: &Path) -> Launch<'a> {
        let mut args: Vec<OsString> = vec!["--socket".into(), socket.into()];
        // The list runs again with another worker count; follow it.
        if let Some(threads) = std::env::var_os(THREADS_ENV) {
            args.extend(["--threads".into(), threads]);
        }
        Launch { name, fd3: None, listen_fds: None, notify: None, env: Vec::new(), args }
    }

    fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    fn activated(mut self, fd3: BorrowedFd<'a>, listen_fds: &'a str) -> Self {
        self.fd3 = Some(fd3);
        self.listen_fds = Some(listen_fds);
        self
    }

    fn notify(mut self, path: PathBuf) -> Self {
        self.notify = Some(path);
        self
    }

    fn spawn(self, binary: &Path) -> Activated {
        // `LISTEN_PID` must be the daemon's own pid, known only in the child: a
        // shell sets it to its `$$` and then becomes the daemon.
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg(r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@""#).arg(binary);
        command.args(&self.args).env_clear().env("NO_COLOR", "1");
        if let Some(log) = std::env::var_os("RUST_LOG") {
            command.env("RUST_LOG", log);
        }
        match self.listen_fds {
            Some(count) => command.env("LISTEN_FDS", count),
            // Without LISTEN_FDS the shell's LISTEN_PID means nothing.
            None => &mut command,
        };
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        let notify = self.notify.map(|path| {
            let socket =
                UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
            command.env("NOTIFY_SOCKET", &path);
            socket
        });
        if let Some(fd) = self.fd3 {
            let raw: RawFd = fd.as_raw_fd();
            // SAFETY: between fork and exec the closure makes one dup2 (or one
            // fcntl) system call, async-signal-safe, and neither allocates nor
            // takes locks; `raw` stays open in the parent until the spawn returns.
            unsafe {
                command.pre_exec(move || {
                    let source = BorrowedFd::borrow_raw(raw);
                    if raw == 3 {
                        // Already fd 3: only close-on-exec must go.
                        rustix::io::fcntl_setfd(source, rustix::io::FdFlags::empty())?;
                    } else {
                        // Not dropped: fd 3 must stay open for the exec.
                        let mut target = ManuallyDrop::new(OwnedFd::from_raw_fd(3));
                        rustix::io::dup2(source, &mut target)?;
                    }
                    Ok(())
                });
            }
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("spawning daemon {}: {e}", self.name));
        let stdout = capture(child.stdout.take());
        let stderr = capture(child.stderr.take());
        Activated { child, name: self.name, stdout, stderr, notify }
    }
}

fn capture(source: Option<impl Read + Send + 'static>) -> Arc<Mutex<Vec<u8>>> {
    let output = Arc::new(Mutex::new(Vec::new()));
    if let Some(mut source) = source {
        let sink = Arc::clone(&output);
        // Ends at EOF, when the child exits or is killed.
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n @ 1..) = source.read(&mut buf) {
                let mut kept = sink.lock().unwrap_or_else(PoisonError::into_inner);
                // Enough to explain a failure; a daemon gone wrong cannot fill memory.
                if kept.len() < 1 << 20 {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
        });
    }
    output
}

impl Activated {
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// The daemon's output, for a failure message.
    fn logs(&self) -> String {
        format!("daemon {}:\n--- stdout\n{}--- stderr\n{}", self.name, self.stdout(), self.stderr())
    }

    /// The next notification, failing after [`NOTIFY_PATIENCE`].
    async fn next_notification(&self) -> String {
        let Some(socket) = &self.notify else { panic!("daemon {} has no notify socket", self.name) };
        let mut buf = [0u8; 4096];
        match timeout(NOTIFY_PATIENCE, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Ok(Err(error)) => panic!("reading daemon {}'s notifications: {error}", self.name),
            Err(_) => panic!("daemon {} sent nothing for {NOTIFY_PATIENCE:?}\n{}", self.name, self.logs()),
        }
    }

    /// Waits for `message`, skipping watchdog pings; any other message fails.
    async fn expect_notification(&self, message: &str) {
        loop {
            let got = self.next_notification().await;
            if got == message {
                return;
            }
            assert_eq!(got, "WATCHDOG=1", "daemon {} sent {got:?} while {message:?} was due", self.name);
        }
    }

    fn terminate(&self) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        let Some(pid) = pid else { panic!("daemon {} has no valid pid", self.name) };
        // Not reaped yet (waiting takes `&mut self`), so the pid is still ours.
        if let Err(error) = rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            panic!("sending SIGTERM to daemon {}: {error}", self.name);
        }
    }

    async fn wait_exit(&mut self, patience: Duration) -> ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    // The output threads end at EOF, just after the exit.
                    sleep(Duration::from_millis(50)).await;
                    return status;
                }
                Ok(None) => {}
                Err(error) => panic!("waiting for daemon {}: {error}", self.name),
            }
            assert!(
                Instant::now() < deadline,
                "daemon {} did not exit within {patience:?}\n{}",
                self.name,
                self.logs()
            );
            sleep(Duration::from_millis(10)).await;
        }
    }

    /// A count from the `--benchmark` summary printed on exit.
    fn summary_count(&self, name: &str) -> u64 {
        let stdout = self.stdout();
        let value = stdout.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(": "));
        match value.and_then(|value| value.trim().parse().ok()) {
            Some(count) => count,
            None => panic!("no {name:?} in daemon {}'s summary\n{}", self.name, self.logs()),
        }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Hands off one request to the socket at `path` as the module does; returns
/// the browser's end.
async fn hand_off(cx: &Context, path: &Path, data: &str) -> Client {
    let (mut client, server) = cx.clients().open().await;
    let policy = ConnectPolicy {
        socket_type: HandoffSocketType::SeqPacket,
        attempt_timeout: Duration::from_secs(5),
        attempts: 3,
    };
    let socket = handoff::connect(path, policy).await.unwrap_or_else(|e| panic!("connecting: {e}"));
    let sent =
        handoff::send(&socket, data.as_bytes(), server.as_fd(), Duration::from_secs(5), policy.socket_type);
    sent.await.unwrap_or_else(|e| panic!("handing off: {e}"));
    client.mark_handed_off();
    client
}

pub async fn restart_on_an_inherited_socket_loses_no_handoff(cx: Context) {
    let path = cx.scratch().path("h.sock");
    let listener = listening_socket(&path, SocketType::SEQPACKET);
    let daemon = |name: &'static str, notify: &str| {
        Launch::new(name, &path)
            .args(&["--backend", "mock", "--delay", "20", "--benchmark"])
            .activated(listener.as_fd(), "1")
            .notify(cx.scratch().path(notify))
    };
    let mut a = daemon("A", "a.notify").spawn(cx.binary());
    a.expect_notification("READY=1").await;

    let load_config = LoadConfig { ramp: RESTART_RAMP, ..LoadConfig::new(&path, RESTART_STREAMS) };
    let load = tokio::task::spawn_blocking(move || load::run(load_config));
    sleep(START_B_AFTER).await;
    let mut b = daemon("B", "b.notify").spawn(cx.binary());
    b.expect_notification("READY=1").await;
    sleep(STOP_A_AFTER_B).await;

    a.terminate();
    a.expect_notification("STOPPING=1").await;
    let status = a.wait_exit(EXIT_PATIENCE).await;
    assert!(status.success(), "daemon A exited with {status}\n{}", a.logs());
    assert!(std::fs::symlink_metadata(&path).is_ok(), "daemon A removed the inherited socket's file");

    let report = match timeout(LOAD_PATIENCE, load).await {
        Ok(Ok(Ok(report))) => report,
        Ok(Ok(Err(error))) => panic!("the load run failed: {error}"),
        Ok(Err(error)) => panic!("the load task ended abnormally: {error}"),
        Err(_) => panic!("the load run did not finish within {LOAD_PATIENCE:?}"),
    };
    b.terminate();
    let status = b.wait_exit(EXIT_PATIENCE).await;
    assert!(status.success(), "daemon B exited with {status}\n{}", b.logs());

    let (served_a, served_b) = (a.summary_count("completed"), b.summary_count("completed"));
    eprintln!(
        "restart: {} streams, {} ok, {} failed; daemon A completed {served_a}, daemon B {served_b}",
        report.started, report.ok, report.failed
    );
    assert_eq!(
        (report.failed, report.ok),
        (0, RESTART_STREAMS),
        "every handoff completed across the restart:\n{report}\n{}\n{}",
        a.logs(),
        b.logs()
    );
    assert!(served_a > 0 && served_b > 0, "both daemons served: A {served_a}, B {served_b}");
    assert_eq!(served_a + served_b, report.ok, "each completed stream was served by A or B");
}

pub async fn sigterm_on_an_inherited_socket_leaves_the_queue_to_the_next_daemon(cx: Context) {
    let path = cx.scratch().path("h.sock");
    let listener = listening_socket(&path, SocketType::SEQPACKET);
    let daemon = |name: &'static str, notify: &str| {
        Launch::new(name, &path)
            .args(&["--backend", "mock", "--delay", "100"])
            .activated(listener.as_fd(), "1")
            .notify(cx.scratch().path(notify))
    };
    let mut a = daemon("A", "a.notify").spawn(cx.binary());
    a.expect_notification("READY=1").await;
    let mut running = hand_off(&cx, &path, r#"{"prompt":"served by A while it drains"}"#).await;
    running.read_events(1).await;

    a.terminate();
    a.expect_notification("STOPPING=1").await;
    // A no longer accepts: this one waits in the socket's queue, not answered 503.
    let queued = hand_off(&cx, &path, r#"{"prompt":"queued for B"}"#).await;
    let response = running.read_to_end().await;
    assert_eq!(content_events(&response.expect_completed_stream()), 18, "A finished its stream");
    let status = a.wait_exit(EXIT_PATIENCE).await;
    assert!(status.success(), "daemon A exited with {status}\n{}", a.logs());
    assert!(std::fs::symlink_metadata(&path).is_ok(), "daemon A removed the inherited socket's file");
    assert!(!a.stderr().contains("queued_answered_503=1"), "A answered the queue\n{}", a.logs());

    let mut b = daemon("B", "b.notify").spawn(cx.binary());
    b.expect_notification("READY=1").await;
    let response = queued.read_to_end().await;
    let events = response.expect_completed_stream();
    assert_eq!(content_events(&events), 18, "B served the queued handoff: {:?}", response.text());
    b.terminate();
    let status = b.wait_exit(EXIT_PATIENCE).await;
    assert!(status.success(), "daemon B exited with {status}\n{}", b.logs());
}

pub async fn notify_socket_gets_ready_watchdog_and_stopping(cx: Context) {
    let notify_path = cx.scratch().path("notify");
    let notify =
        UnixDatagram::bind(&notify_path).unwrap_or_else(|e| panic!("binding the notify socket: {e}"));
    let mut daemon =
        mock_daemon(&cx, 1).env("NOTIFY_SOCKET", &notify_path).env("WATCHDOG_USEC", "400000").start().await;
    assert_eq!(receive(&notify).await, "READY=1", "the first notification");
    // Every 200 ms (half of WATCHDOG_USEC); six in a row well within the patience.
    let started = Instant::now();
    for ping in 0..6 {
        assert_eq!(receive(&notify).await, "WATCHDOG=1", "watchdog ping {ping}");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(800), "six pings came in {took:?}: faster than every 200 ms");
    expect_mock_stream(&daemon, r#"{"prompt":"still serving"}"#).await;

    daemon.signal_terminate();
    loop {
        let message = receive(&notify).await;
        if message == "STOPPING=1" {
            break;
        }
        assert_eq!(message, "WATCHDOG=1", "only pings before STOPPING=1");
    }
    daemon.expect_clean_exit().await;
}

/// The next datagram on a notify socket, failing after [`NOTIFY_PATIENCE`].
async fn receive(notify: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    match timeout(NOTIFY_PATIENCE, notify.recv(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Ok(Err(error)) => panic!("reading the notify socket: {error}"),
        Err(_) => panic!("nothing on the notify socket for {NOTIFY_PATIENCE:?}"),
    }
}

pub async fn bad_activation_fds_are_refused(cx: Context) {
    let path = cx.scratch().path("h.sock");
    let stream = listening_socket(&cx.scratch().path("stream.sock"), SocketType::STREAM);
    let good = listening_socket(&path, SocketType::SEQPACKET);
    let not_listening =
        rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .unwrap_or_else(|e| panic!("creating a socket: {e}"));
    let file = std::fs::File::open("/dev/null").unwrap_or_else(|e| panic!("opening /dev/null: {e}"));
    let cases: [(&str, Launch<'_>, &str); 6] = [
        (
            "a SOCK_STREAM listener",
            Launch::new("stream", &path).activated(stream.as_fd(), "1"),
            "SOCK_STREAM",
        ),
        (
            "a socket that is not listening",
            Launch::new("unbound", &path).activated(not_listening.as_fd(), "1"),
            "not listening",
        ),
        ("a file", Launch::new("file", &path).activated(file.as_fd(), "1"), "not a socket"),
        ("two fds", Launch::new("two", &path).activated(good.as_fd(), "2"), "LISTEN_FDS=2"),
        ("no fd 3", Launch { listen_fds: Some("1"), ..Launch::new("none", &path) }, "fd 3 is not open"),
        (
            "a count that is no number",
            Launch::new("nan", &path).activated(good.as_fd(), "x"),
            "LISTEN_FDS=\"x\"",
        ),
    ];
    for (case, launch, reason) in cases {
        let mut daemon = launch.spawn(cx.binary());
        let status = daemon.wait_exit(START_PATIENCE).await;
        assert!(!status.success(), "{case}: the daemon started (status {status})\n{}", daemon.logs());
        let stderr = daemon.stderr();
        assert!(
            stderr.contains("socket activation") && stderr.contains(reason),
            "{case}: the refusal says {reason:?}:\n{stderr}"
        );
    }
    assert!(std::fs::symlink_metadata(&path).is_ok(), "the refused daemons left the socket file alone");
}

pub async fn activation_variables_for_another_process_are_ignored(cx: Context) {
    // LISTEN_PID names another process (the daemon's parent, say): the variables
    // are not for us, so fd 3 is not touched and the socket path is bound.
    let daemon = mock_daemon(&cx, 1).env("LISTEN_PID", "1").env("LISTEN_FDS", "1").start().await;
    expect_mock_stream(&daemon, r#"{"prompt":"on a socket of its own"}"#).await;
    daemon.terminate().await;
}
