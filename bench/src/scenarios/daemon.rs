//! A daemon binary under test: started on a private socket, watched, signalled, and
//! killed if a scenario ends without stopping it. Its output is kept for the report of
//! a failed scenario.

use std::ffi::OsString;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use tokio::net::UnixStream;
use tokio::time::{sleep, Instant};

use super::client::{Client, Clients, Close};
use crate::load::handoff::{self, ConnectPolicy};
use crate::load::HandoffSocketType;

/// How long a daemon may take from spawn to accepting on its socket.
pub const START_PATIENCE: Duration = Duration::from_secs(15);
/// How long a daemon may take to exit after SIGTERM (its streams have ended by then).
pub const EXIT_PATIENCE: Duration = Duration::from_secs(15);
/// Budget of one handoff's connect and send. Generous: a debug build on two busy
/// cores is slow, and these tests are about what the daemon answers, not how fast.
const HANDOFF_PATIENCE: Duration = Duration::from_secs(5);
/// How often a child's exit or a socket's readiness is checked.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// Output kept per stream of a daemon (the start is what explains a failure).
const MAX_CAPTURED: usize = 512 * 1024;

/// Output captured from one child stream (stdout or stderr).
#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    dropped: usize,
    /// The pipe reached EOF: everything the process wrote is here.
    complete: bool,
}

type SharedOutput = Arc<Mutex<Captured>>;

fn capture(mut source: impl Read + Send + 'static) -> SharedOutput {
    let output = SharedOutput::default();
    let sink = Arc::clone(&output);
    // Ends at EOF, which comes when the child exits (or is killed).
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) | Err(_) => {
                    sink.lock().unwrap_or_else(PoisonError::into_inner).complete = true;
                    return;
                }
                Ok(n) => n,
            };
            let mut captured = sink.lock().unwrap_or_else(PoisonError::into_inner);
            let room = MAX_CAPTURED.saturating_sub(captured.bytes.len()).min(n);
            captured.bytes.extend_from_slice(buf.get(..room).unwrap_or_default());
            captured.dropped += n - room;
        }
    });
    output
}

fn text_of(output: &SharedOutput) -> String {
    let captured = output.lock().unwrap_or_else(PoisonError::into_inner);
    let mut text = String::from_utf8_lossy(&captured.bytes).into_owned();
    if captured.dropped > 0 {
        text.push_str(&format!("\n[... {} more bytes not kept]\n", captured.dropped));
    }
    text
}

/// The output of every daemon a scenario started, printed when the scenario fails.
#[derive(Debug, Clone, Default)]
pub struct DaemonLogs(Arc<Mutex<Vec<DaemonLog>>>);

#[derive(Debug)]
struct DaemonLog {
    command: String,
    stdout: SharedOutput,
    stderr: SharedOutput,
}

impl DaemonLogs {
    fn add(&self, command: String, stdout: &SharedOutput, stderr: &SharedOutput) {
        let log = DaemonLog { command, stdout: Arc::clone(stdout), stderr: Arc::clone(stderr) };
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(log);
    }

    /// Prints each daemon's command line, stdout and stderr to stderr (the test
    /// harness shows it with the failure).
    pub fn print(&self) {
        for log in self.0.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            eprintln!("===== daemon: {}", log.command);
            let stdout = text_of(&log.stdout);
            if !stdout.is_empty() {
                eprintln!("----- stdout\n{stdout}");
            }
            eprintln!("----- stderr\n{}", text_of(&log.stderr));
        }
    }
}

/// Environment variable: the `--threads` every daemon of the list gets unless
/// the scenario names its own.
pub const THREADS_ENV: &str = "HANDOFF_SCENARIO_THREADS";

/// How to start one daemon; made by [`super::Context::daemon`].
#[derive(Debug)]
pub struct DaemonCommand {
    binary: PathBuf,
    socket: PathBuf,
    socket_type: HandoffSocketType,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    soft_fd_limit: Option<u64>,
    fd_limit: Option<u64>,
    logs: DaemonLogs,
    clients: Arc<Clients>,
}

impl DaemonCommand {
    pub(super) fn new(binary: PathBuf, socket: PathBuf, logs: DaemonLogs, clients: Arc<Clients>) -> Self {
        DaemonCommand {
            binary,
            socket,
            socket_type: HandoffSocketType::SeqPacket,
            args: Vec::new(),
            env: Vec::new(),
            soft_fd_limit: None,
            fd_limit: None,
            logs,
            clients,
        }
    }

    /// Another command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// An environment variable (the daemon starts with an otherwise empty
    /// environment, apart from `RUST_LOG` when the test run has one).
    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// The socket path (default: `d.sock` in the scenario's directory).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = path.into();
        self
    }

    /// `--socket-type stream`, and handoffs over SOCK_STREAM.
    pub fn stream_socket(mut self) -> Self {
        self.socket_type = HandoffSocketType::Stream;
        self.args(["--socket-type", "stream"])
    }

    /// Starts the daemon with this soft fd limit (the hard limit stays), as a service
    /// manager's default of 1024 would.
    pub fn soft_fd_limit(mut self, limit: u64) -> Self {
        self.soft_fd_limit = Some(limit);
        self
    }

    /// Starts the daemon with soft and hard fd limits of `limit`, as `prlimit
    /// --nofile=limit` would: it cannot raise them, so it runs out of fds.
    pub fn fd_limit(mut self, limit: u64) -> Self {
        self.fd_limit = Some(limit);
        self
    }

    /// Spawns the daemon without waiting for it to accept.
    pub fn spawn(self) -> Daemon {
        let mut command = Command::new(&self.binary);
        command.arg("--socket").arg(&self.socket).args(&self.args);
        // The whole list runs again with another worker count (`.ci/run` sets it);
        // a scenario that names its own `--threads` keeps it.
        if let Some(threads) = std::env::var_os(THREADS_ENV) {
            if !self.args.iter().any(|arg| arg == "--threads") {
                command.arg("--threads").arg(threads);
            }
        }
        command.env_clear();
        if let Some(log) = std::env::var_os("RUST_LOG") {
            command.env("RUST_LOG", log);
        }
        // The captured log is read as plain text.
        command.env("NO_COLOR", "1");
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        if self.soft_fd_limit.is_some() || self.fd_limit.is_some() {
            use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
            let lowered = match self.fd_limit {
                Some(limit) => Rlimit { current: Some(limit), maximum: Some(limit) },
                None => Rlimit { current: self.soft_fd_limit, maximum: getrlimit(Resource::Nofile).maximum },
            };
            // SAFETY: between fork and exec the closure makes one setrlimit system call
            // (async-signal-safe) and neither allocates nor takes locks.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    setrlimit(Resource::Nofile, lowered).map_err(std::io::Error::from)
                });
            }
        }
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let label = format!("{command:?}");
        let mut child = command.spawn().unwrap_or_else(|error| panic!("spawning {label}: {error}"));
        let stdout = capture(child.stdout.take().map(Output::Stdout).unwrap_or(Output::None));
        let stderr = capture(child.stderr.take().map(Output::Stderr).unwrap_or(Output::None));
        self.logs.add(label.clone(), &stdout, &stderr);
        Daemon {
            child,
            label,
            socket: self.socket,
            socket_type: self.socket_type,
            stdout,
            stderr,
            exit: None,
            clients: self.clients,
        }
    }

    /// Spawns the daemon and waits until it accepts on its socket.
    pub async fn start(self) -> Daemon {
        let mut daemon = self.spawn();
        daemon.wait_until_accepting().await;
        daemon
    }
}

/// A child's output pipe, or none.
enum Output {
    Stdout(ChildStdout),
    Stderr(ChildStderr),
    None,
}

impl Read for Output {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Output::Stdout(out) => out.read(buf),
            Output::Stderr(err) => err.read(buf),
            Output::None => Ok(0),
        }
    }
}

/// A running daemon. Dropping it kills the process if it is still running.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    label: String,
    socket: PathBuf,
    socket_type: HandoffSocketType,
    stdout: SharedOutput,
    stderr: SharedOutput,
    exit: Option<ExitStatus>,
    clients: Arc<Clients>,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        text_of(&self.stderr)
    }

    /// Everything the daemon wrote to stdout so far.
    pub fn stdout(&self) -> String {
        text_of(&self.stdout)
    }

    /// The `--benchmark` summary printed on exit (`name: value` lines), by name.
    pub fn benchmark_summary(&self) -> Vec<(String, u64)> {
        self.stdout()
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(": ")?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// One count of the `--benchmark` summary, by name (`client gone`, ...).
    pub fn summary_count(&self, name: &str) -> Option<u64> {
        self.benchmark_summary().into_iter().find(|(n, _)| n == name).map(|(_, value)| value)
    }

    /// Waits until a connect to the socket succeeds (the probe connection sends
    /// nothing; the daemon drops it). Panics if the daemon exits first.
    pub async fn wait_until_accepting(&mut self) {
        let deadline = Instant::now() + START_PATIENCE;
        let address = SocketAddrUnix::new(&self.socket)
            .unwrap_or_else(|e| panic!("{} is not a Unix socket path: {e}", self.socket.display()));
        let socket_type = match self.socket_type {
            HandoffSocketType::SeqPacket => SocketType::SEQPACKET,
            HandoffSocketType::Stream => SocketType::STREAM,
        };
        loop {
            if let Some(status) = self.try_exit() {
                panic!("{} exited with {status} before accepting on its socket", self.label);
            }
            let probe =
                rustix::net::socket_with(AddressFamily::UNIX, socket_type, SocketFlags::CLOEXEC, None)
                    .unwrap_or_else(|e| panic!("creating a probe socket: {e}"));
            if rustix::net::connect(&probe, &address).is_ok() {
                return;
            }
            drop(probe);
            assert!(
                Instant::now() < deadline,
                "{} did not accept on {} within {START_PATIENCE:?}",
                self.label,
                self.socket.display()
            );
            sleep(POLL_EVERY).await;
        }
    }

    /// Connects to the daemon's socket as the module does.
    pub async fn connect(&self) -> Result<UnixStream, handoff::HandoffError> {
        let policy =
            ConnectPolicy { socket_type: self.socket_type, attempt_timeout: HANDOFF_PATIENCE, attempts: 3 };
        handoff::connect(&self.socket, policy).await
    }

    /// A handoff exactly as mod_socket_handoff makes it: a fresh loopback TCP
    /// connection, one message with `data` (a lone NUL when empty) and the
    /// connection's server side attached; then both of the module's descriptors are
    /// closed. Returns the browser's end.
    pub async fn hand_off(&self, data: impl AsRef<[u8]>) -> Client {
        let (mut client, server) = self.clients.open().await;
        self.send_handoff(data.as_ref(), server).await;
        client.mark_handed_off();
        client
    }

    /// [`Daemon::hand_off`] from a client whose `SO_RCVBUF` is `receive_buffer` bytes.
    pub async fn hand_off_with_receive_buffer(&self, data: impl AsRef<[u8]>, receive_buffer: u32) -> Client {
        let (mut client, server) = self.clients.open_with_receive_buffer(Some(receive_buffer)).await;
        self.send_handoff(data.as_ref(), server).await;
        client.mark_handed_off();
        client
    }

    /// A handoff of a connection whose browser already closed its end (`how`): the
    /// fd the daemon gets is a TCP socket with the peer's FIN, or its RST, on it.
    pub async fn hand_off_closed(&self, data: impl AsRef<[u8]>, how: Close) {
        let (client, server) = self.clients.open().await;
        client.close(how);
        self.send_handoff(data.as_ref(), server).await;
    }

    /// Connects, sends `data` with `server` attached, and closes the module's
    /// descriptors, as mod_socket_handoff does.
    async fn send_handoff(&self, data: &[u8], server: std::os::fd::OwnedFd) {
        let socket = self.connect().await.unwrap_or_else(|e| panic!("handoff to {}: {e}", self.label));
        let sending = handoff::send(&socket, data, server.as_fd(), HANDOFF_PATIENCE, self.socket_type);
        if let Err(error) = sending.await {
            panic!("handoff to {}: {error}", self.label);
        }
        drop(socket);
        drop(server);
    }

    /// Sends one raw message (any data, any number of fds) on a fresh connection,
    /// then closes the connection; the caller closes its copies of the fds.
    pub async fn send_message(&self, data: &[u8], fds: &[BorrowedFd<'_>]) {
        let socket = self.connect().await.unwrap_or_else(|e| panic!("connecting to {}: {e}", self.label));
        match handoff::send_message(&socket, data, fds, HANDOFF_PATIENCE).await {
            Ok(sent) if sent == data.len() => {}
            Ok(sent) => panic!("sent {sent} of {} bytes of one message to {}", data.len(), self.label),
            Err(error) => panic!("sending a message to {}: {error}", self.label),
        }
    }

    /// The client connections this daemon's handoffs use.
    pub fn clients(&self) -> &Arc<Clients> {
        &self.clients
    }

    /// Sends SIGTERM.
    pub fn signal_terminate(&self) {
        self.signal(rustix::process::Signal::TERM);
    }

    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32);
        let Some(pid) = pid else { panic!("{} has no valid pid", self.label) };
        if self.exit.is_none() {
            // The child is not reaped yet, so the pid is still ours.
            if let Err(error) = rustix::process::kill_process(pid, signal) {
                panic!("sending {signal:?} to {}: {error}", self.label);
            }
        }
    }

    /// Sends SIGHUP (reload the configuration).
    pub fn signal_hangup(&self) {
        self.signal(rustix::process::Signal::HUP);
    }

    /// Sends SIGINT (Ctrl-C in a terminal).
    pub fn signal_interrupt(&self) {
        self.signal(rustix::process::Signal::INT);
    }

    /// Sends SIGSTOP: the daemon stops running (and accepting) until SIGCONT, while
    /// the kernel still queues connections and messages on its socket.
    pub fn signal_stop(&self) {
        self.signal(rustix::process::Signal::STOP);
    }

    /// Sends SIGCONT.
    pub fn signal_continue(&self) {
        self.signal(rustix::process::Signal::CONT);
    }

    /// The daemon's resident memory now (`VmRSS` of `/proc/PID/status`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        match crate::load::procfs::Process::Pid(self.pid()).sample(false) {
            Ok(sample) => sample.rss_bytes,
            Err(error) => panic!("reading the memory of {}: {error}", self.label),
        }
    }

    /// The exit status if the daemon has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            match self.child.try_wait() {
                Ok(status) => self.exit = status,
                Err(error) => panic!("waiting for {}: {error}", self.label),
            }
        }
        self.exit
    }

    /// Waits for the daemon to exit, at most `patience`, and for its output to be
    /// read to the end.
    pub async fn wait_exit(&mut self, patience: Duration) -> ExitStatus {
        let deadline = Instant::now() + patience;
        loop {
            if let Some(status) = self.try_exit() {
                let is_complete =
                    |output: &SharedOutput| output.lock().unwrap_or_else(PoisonError::into_inner).complete;
                if is_complete(&self.stdout) && is_complete(&self.stderr) {
                    return status;
                }
            }
            assert!(Instant::now() < deadline, "{} did not exit within {patience:?}", self.label);
            sleep(POLL_EVERY).await;
        }
    }

    /// The soft and hard limits on open files (`/proc/PID/limits`).
    pub fn fd_limits(&self) -> (String, String) {
        let path = format!("/proc/{}/limits", self.pid());
        let limits = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let line = limits.lines().find(|line| line.starts_with("Max open files"));
        let mut fields =
            line.unwrap_or_else(|| panic!("no open-files line in {limits}")).split_whitespace().skip(3);
        match (fields.next(), fields.next()) {
            (Some(soft), Some(hard)) => (soft.to_owned(), hard.to_owned()),
            _ => panic!("unreadable open-files line in {limits}"),
        }
    }

    /// SIGTERM, then the contract's clean stop: exit status 0 and the socket file
    /// removed.
    pub async fn terminate(mut self) {
        self.signal_terminate();
        self.expect_clean_exit().await;
    }

    /// Waits for the exit that follows a SIGTERM and checks it was clean.
    pub async fn expect_clean_exit(&mut self) {
        let status = self.wait_exit(EXIT_PATIENCE).await;
        assert!(status.success(), "{} exited with {status} after SIGTERM, not 0", self.label);
        assert!(
            std::fs::symlink_metadata(&self.socket).is_err(),
            "{} left its socket file {} behind",
            self.label,
            self.socket.display()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A socket file nobody listens on, as a crashed daemon leaves behind.
pub fn make_stale_socket(path: &Path) {
    let address = SocketAddrUnix::new(path)
        .unwrap_or_else(|e| panic!("{} is not a Unix socket path: {e}", path.display()));
    let socket =
        rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None)
            .unwrap_or_else(|e| panic!("creating a socket: {e}"));
    rustix::net::bind(&socket, &address).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
    rustix::net::listen(&socket, 1).unwrap_or_else(|e| panic!("listening on {}: {e}", path.display()));
    // Closing the only descriptor leaves the file with nobody behind it.
    drop(socket);
}

/// The names of a process's threads (`/proc/PID/task/*/comm`).
pub fn thread_names(pid: u32) -> Vec<String> {
    let tasks = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&tasks).unwrap_or_else(|e| panic!("reading {tasks}: {e}"));
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("reading {tasks}: {e}"));
        let comm = entry.path().join("comm");
        // A thread may end between the listing and the read.
        if let Ok(name) = std::fs::read_to_string(&comm) {
            names.push(name.trim_end().to_owned());
        }
    }
    names.sort();
    names
}
