//! A fake handoff daemon for the load generator's tests: it takes handoffs on a Unix
//! socket exactly as a real daemon would (one message, one fd by SCM_RIGHTS), records
//! what arrived, and answers on the handed-off socket with a canned response.
#![allow(dead_code)] // Each test file uses its own part of this module.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SocketAddrUnix,
    SocketFlags, SocketType,
};

/// How long the fake daemon waits for the handoffs it expects, at most.
const ACCEPT_WINDOW: Duration = Duration::from_secs(20);

/// How long a silent fake daemon holds its connections before giving up on the test.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// What the fake daemon answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 200, three content events, `data: [DONE]`.
    Complete,
    /// 200, two content events, then close.
    Truncated,
    /// 200, one content event, an `event: error`, then close.
    ErrorEvent,
    /// 503 with a JSON error body.
    Unavailable,
    /// Nothing at all; the connection stays open until the test ends.
    Silent,
    /// Bytes that are not HTTP.
    NotHttp,
    /// Close without writing.
    Close,
}

pub const CONTENT_EVENTS: [&str; 3] = [
    "data: {\"content\":\"Hello\",\"index\":0}\n\n",
    "data: {\"content\":\" from the\",\"index\":1}\n\n",
    "data: {\"content\":\" fake daemon\",\"index\":2}\n\n",
];

const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
                        Connection: close\r\nX-Accel-Buffering: no\r\n\r\n";

impl Reply {
    fn bytes(self) -> Vec<u8> {
        let text = match self {
            Self::Complete => {
                format!("{SSE_HEAD}{}: keep-alive\n\ndata: [DONE]\n\n", CONTENT_EVENTS.concat())
            }
            Self::Truncated => format!("{SSE_HEAD}{}{}", CONTENT_EVENTS[0], CONTENT_EVENTS[1]),
            Self::ErrorEvent => format!(
                "{SSE_HEAD}{}event: error\ndata: {{\"error\":{{\"message\":\"upstream ended early\",\
                 \"type\":\"upstream_truncated\",\"code\":null}}}}\n\n",
                CONTENT_EVENTS[0]
            ),
            Self::Unavailable => {
                let body = "{\"error\":{\"message\":\"over capacity\",\"type\":\"overloaded\",\"code\":503}}";
                format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
            Self::NotHttp => "SSH-2.0-OpenSSH_9.6\r\n\r\n".to_owned(),
            Self::Silent | Self::Close => String::new(),
        };
        text.into_bytes()
    }
}

/// What one handoff delivered to the fake daemon.
#[derive(Debug)]
pub struct Received {
    pub data: Vec<u8>,
    /// File descriptors attached to the message.
    pub fds: usize,
    /// The message or its control data did not fit (MSG_TRUNC / MSG_CTRUNC).
    pub truncated: bool,
    /// The attached fd is a stream socket with a peer.
    pub fd_is_connected_stream: bool,
    /// The attached fd's address family (INET for TCP clients, UNIX for socketpairs).
    pub fd_family: Option<AddressFamily>,
    /// The sender closed the Unix connection after its one message.
    pub closed_after_message: bool,
}

pub struct FakeDaemon {
    pub path: PathBuf,
    release: mpsc::Sender<()>,
    thread: Option<JoinHandle<Vec<Received>>>,
}

static NEXT_SOCKET: AtomicU32 = AtomicU32::new(0);

/// A socket path no other test (or test process) uses.
pub fn unique_socket_path(name: &str) -> PathBuf {
    let n = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("handoff-load-{name}-{}-{n}.sock", std::process::id()))
}

impl FakeDaemon {
    /// Listens on a fresh socket and answers `expected` handoffs, the i-th with `reply(i)`.
    pub fn start(
        socket_type: SocketType,
        expected: usize,
        reply: impl Fn(usize) -> Reply + Send + 'static,
    ) -> Self {
        let path = unique_socket_path("daemon");
        let listener = listen(&path, socket_type);
        let (release, released) = mpsc::channel();
        let thread = std::thread::spawn(move || serve(listener, expected, reply, released));
        Self { path, release, thread: Some(thread) }
    }

    /// Lets held connections go and returns what every handoff delivered.
    pub fn finish(mut self) -> Vec<Received> {
        let _ = self.release.send(());
        self.thread.take().map(|thread| thread.join().expect("fake daemon thread")).unwrap_or_default()
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn listen(path: &Path, socket_type: SocketType) -> OwnedFd {
    let listener = rustix::net::socket_with(AddressFamily::UNIX, socket_type, SocketFlags::CLOEXEC, None)
        .expect("unix socket");
    let address = SocketAddrUnix::new(path).expect("socket path");
    rustix::net::bind(&listener, &address).expect("bind the fake daemon socket");
    rustix::net::listen(&listener, 128).expect("listen");
    // accept() honours SO_RCVTIMEO, which keeps the accept loop bounded.
    rustix::net::sockopt::set_socket_timeout(
        &listener,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_millis(100)),
    )
    .expect("accept timeout");
    listener
}

fn serve(
    listener: OwnedFd,
    expected: usize,
    reply: impl Fn(usize) -> Reply,
    released: mpsc::Receiver<()>,
) -> Vec<Received> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut held = Vec::new();
    while received.len() < expected && started.elapsed() < ACCEPT_WINDOW {
        let Ok(connection) = rustix::net::accept(&listener) else { continue };
        let (message, client) = receive_handoff(&connection);
        received.push(message);
        let Some(client) = client else { continue };
        match reply(received.len() - 1) {
            Reply::Silent => held.push(client),
            answer => respond(client, &answer.bytes()),
        }
    }
    if !held.is_empty() {
        let _ = released.recv_timeout(HOLD_LIMIT);
    }
    received
}

/// Receives the one handoff message, as a daemon does, then checks the sender hung up.
fn receive_handoff(connection: &OwnedFd) -> (Received, Option<OwnedFd>) {
    rustix::net::sockopt::set_socket_timeout(
        connection,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_secs(5)),
    )
    .expect("receive timeout");
    let mut data = vec![0u8; 70 * 1024];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let message = rustix::net::recvmsg(
        connection,
        &mut [IoSliceMut::new(&mut data)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg of the handoff");
    data.truncate(message.bytes);
    let mut fds: Vec<OwnedFd> = Vec::new();
    for ancillary in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = ancillary {
            fds.extend(received);
        }
    }
    let mut rest = [0u8; 16];
    let closed_after_message =
        matches!(rustix::net::recv(connection, &mut rest, RecvFlags::empty()), Ok((0, _)));
    let client = fds.first();
    let received = Received {
        data,
        fds: fds.len(),
        truncated: message.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC),
        fd_is_connected_stream: client.is_some_and(|fd| {
            rustix::net::sockopt::socket_type(fd).is_ok_and(|kind| kind == SocketType::STREAM)
                && rustix::net::getpeername(fd).is_ok()
        }),
        fd_family: client.and_then(|fd| rustix::net::sockopt::socket_domain(fd).ok()),
        closed_after_message,
    };
    (received, fds.into_iter().next())
}

/// Writes the whole response, then closes without `shutdown`: the client sees EOF only
/// if the load generator closed its own copy of the socket after sending it.
fn respond(client: OwnedFd, response: &[u8]) {
    // The handed-off socket arrives non-blocking (as Apache's does); this thread blocks.
    rustix::io::ioctl_fionbio(&client, false).expect("make the client socket blocking");
    let mut rest = response;
    while !rest.is_empty() {
        match rustix::io::write(&client, rest) {
            Ok(n) => rest = &rest[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(errno) => panic!("writing the response: {errno}"),
        }
    }
}
