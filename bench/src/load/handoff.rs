//! The module's side of a handoff: connect to the daemon's Unix socket and send one
//! message, the handoff data with the client's socket attached (SCM_RIGHTS).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags,
    SocketType,
};
use tokio::io::Interest;
use tokio::net::UnixStream;
use tokio::time::{sleep, Instant};

use super::config::HandoffSocketType;

/// Pause before the first retry of a refused connect; it doubles per attempt.
const FIRST_RETRY_BACKOFF: Duration = Duration::from_millis(10);

/// How often a connect is retried while the daemon's accept backlog is full.
const BACKLOG_POLL: Duration = Duration::from_millis(1);

/// How the module tries to reach the daemon.
#[derive(Debug, Clone, Copy)]
pub struct ConnectPolicy {
    pub socket_type: HandoffSocketType,
    /// Budget of one attempt while the daemon's backlog is full (EAGAIN).
    pub attempt_timeout: Duration,
    /// Attempts in all; ENOENT, ECONNREFUSED and a backlog that stays full start another.
    pub attempts: u32,
}

/// Why a handoff did not reach the daemon.
#[derive(Debug)]
pub enum HandoffError {
    /// The socket path cannot be a Unix socket address (too long, NUL byte).
    BadPath { path: String, errno: Errno },
    /// Creating the Unix socket failed (EMFILE and friends).
    Socket(Errno),
    /// The connected socket could not join the runtime's poller.
    Register(io::Error),
    /// Every connect attempt failed; `errno` is the last attempt's.
    Connect { path: String, attempts: u32, errno: Errno },
    /// The daemon did not take the message within the send timeout.
    SendTimedOut { timeout: Duration },
    /// `sendmsg` failed.
    Send(io::Error),
    /// A SOCK_SEQPACKET send took only part of the message.
    ShortSend { sent: usize, len: usize },
}

impl std::fmt::Display for HandoffError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadPath { path, errno } => write!(f, "{path} is not a usable Unix socket path: {errno}"),
            Self::Socket(errno) => write!(f, "creating a Unix socket failed: {errno}"),
            Self::Register(error) => write!(f, "registering the Unix socket with the poller failed: {error}"),
            Self::Connect { path, attempts, errno } => {
                write!(f, "connecting to {path} failed after {attempts} attempt(s): {errno}")
            }
            Self::SendTimedOut { timeout } => {
                write!(f, "the daemon did not take the handoff message within {timeout:?}")
            }
            Self::Send(error) => write!(f, "sendmsg of the handoff message failed: {error}"),
            Self::ShortSend { sent, len } => write!(f, "sendmsg sent {sent} of {len} bytes of one message"),
        }
    }
}

impl std::error::Error for HandoffError {}

/// Connects to the daemon, retrying like the module: a refused or missing socket gets
/// another attempt after a doubling pause, a full backlog is retried within an attempt.
///
/// The connected socket comes back as a tokio `UnixStream` only to be registered with the
/// poller: we wait for writability and call `sendmsg` ourselves, which works the same on a
/// SOCK_SEQPACKET socket, and never use its stream reads or writes.
pub async fn connect(path: &Path, policy: ConnectPolicy) -> Result<UnixStream, HandoffError> {
    let address = SocketAddrUnix::new(path)
        .map_err(|errno| HandoffError::BadPath { path: path.display().to_string(), errno })?;
    let socket_type = match policy.socket_type {
        HandoffSocketType::SeqPacket => SocketType::SEQPACKET,
        HandoffSocketType::Stream => SocketType::STREAM,
    };
    let attempts = policy.attempts.max(1);
    let mut backoff = FIRST_RETRY_BACKOFF;
    let mut attempt = 1;
    loop {
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            socket_type,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .map_err(HandoffError::Socket)?;
        let errno = match connect_attempt(&socket, &address, policy.attempt_timeout).await {
            Ok(()) => {
                return UnixStream::from_std(std::os::unix::net::UnixStream::from(socket))
                    .map_err(HandoffError::Register);
            }
            Err(errno) => errno,
        };
        let retryable = matches!(errno, Errno::NOENT | Errno::CONNREFUSED | Errno::AGAIN);
        if !retryable || attempt >= attempts {
            return Err(HandoffError::Connect { path: path.display().to_string(), attempts: attempt, errno });
        }
        drop(socket);
        sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
        attempt += 1;
    }
}

/// One connect; a nonblocking AF_UNIX connect says EAGAIN while the backlog is full, where
/// the module's blocking connect would wait up to its timeout, so poll for room until then.
async fn connect_attempt(socket: &OwnedFd, address: &SocketAddrUnix, timeout: Duration) -> Result<(), Errno> {
    let deadline = Instant::now() + timeout;
    loop {
        match rustix::net::connect(socket, address) {
            Ok(()) => return Ok(()),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if Instant::now() < deadline => sleep(BACKLOG_POLL).await,
            Err(errno) => return Err(errno),
        }
    }
}

/// Sends the handoff: `data` in one message with `client` attached.
///
/// Empty data goes as a single NUL byte, as the module sends it. On a SOCK_STREAM socket
/// a partial send is completed without the fd, which the first byte already carried.
pub async fn send(
    socket: &UnixStream,
    data: &[u8],
    client: BorrowedFd<'_>,
    timeout: Duration,
    socket_type: HandoffSocketType,
) -> Result<(), HandoffError> {
    let data = if data.is_empty() { &[0u8][..] } else { data };
    let deadline = Instant::now() + timeout;
    let sent = send_with_fd(socket, data, client, deadline, timeout).await?;
    if sent == data.len() {
        return Ok(());
    }
    if socket_type == HandoffSocketType::SeqPacket {
        return Err(HandoffError::ShortSend { sent, len: data.len() });
    }
    let mut rest = data.get(sent..).unwrap_or_default();
    while !rest.is_empty() {
        let n = writable_io(socket, deadline, timeout, |fd| {
            rustix::net::send(fd, rest, SendFlags::NOSIGNAL).map_err(io::Error::from)
        })
        .await?;
        rest = rest.get(n..).unwrap_or_default();
    }
    Ok(())
}

async fn send_with_fd(
    socket: &UnixStream,
    data: &[u8],
    client: BorrowedFd<'_>,
    deadline: Instant,
    timeout: Duration,
) -> Result<usize, HandoffError> {
    send_with_fds(socket, data, &[client], deadline, timeout).await
}

/// Most descriptors [`send_message`] attaches to one message.
pub const MAX_MESSAGE_FDS: usize = 4;

/// Sends one message with `data` exactly as given (empty stays empty) and `fds`
/// attached (none: no control message at all); returns the bytes sent.
///
/// [`send`] is what the module does; this is for messages the module never sends
/// (no fd, several fds, empty data), to see that the daemon survives them.
pub async fn send_message(
    socket: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    timeout: Duration,
) -> Result<usize, HandoffError> {
    send_with_fds(socket, data, fds, Instant::now() + timeout, timeout).await
}

async fn send_with_fds(
    socket: &UnixStream,
    data: &[u8],
    fds: &[BorrowedFd<'_>],
    deadline: Instant,
    timeout: Duration,
) -> Result<usize, HandoffError> {
    if fds.len() > MAX_MESSAGE_FDS {
        let reason = format!("{} fds in one message; at most {MAX_MESSAGE_FDS} are supported", fds.len());
        return Err(HandoffError::Send(io::Error::other(reason)));
    }
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_MESSAGE_FDS))];
    writable_io(socket, deadline, timeout, |fd| {
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("no room for the fds in the control message buffer"));
        }
        rustix::net::sendmsg(fd, &[io::IoSlice::new(data)], &mut control, SendFlags::NOSIGNAL)
            .map_err(io::Error::from)
    })
    .await
}

/// Runs `op` when the socket is writable, until it stops saying EAGAIN or the deadline passes.
async fn writable_io<T>(
    socket: &UnixStream,
    deadline: Instant,
    timeout: Duration,
    mut op: impl FnMut(BorrowedFd<'_>) -> io::Result<T>,
) -> Result<T, HandoffError> {
    loop {
        match tokio::time::timeout_at(deadline, socket.writable()).await {
            Err(_elapsed) => return Err(HandoffError::SendTimedOut { timeout }),
            Ok(ready) => ready.map_err(HandoffError::Send)?,
        }
        match socket.try_io(Interest::WRITABLE, || op(socket.as_fd())) {
            Ok(value) => return Ok(value),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(error) => return Err(HandoffError::Send(error)),
        }
    }
}
