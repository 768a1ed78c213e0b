//! The few system calls the floor makes besides writing: the listening socket,
//! receiving one handoff's fd, the fd limit, and SIGINT/SIGTERM as bytes on a
//! socket the event loop watches.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendFlags,
    SocketAddrUnix, SocketFlags, SocketType,
};

/// Creates, binds and listens on a non-blocking SOCK_SEQPACKET socket with `mode`.
/// A stale socket file (nobody accepting) is replaced; a live daemon's is not.
pub fn bind(path: &Path, mode: u32) -> Result<OwnedFd, String> {
    let at = |what: &str, error: io::Error| format!("{}: {what}: {error}", path.display());
    let address = SocketAddrUnix::new(path).map_err(|e| at("socket path", e.into()))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(format!("{}: exists and is not a socket; refusing to replace it", path.display()));
        }
        Ok(_) => {
            let probe = rustix::net::socket_with(
                AddressFamily::UNIX,
                SocketType::SEQPACKET,
                SocketFlags::CLOEXEC,
                None,
            )
            .map_err(|e| at("socket", e.into()))?;
            if rustix::net::connect(&probe, &address).is_ok() {
                return Err(format!("{}: another daemon is listening on this socket", path.display()));
            }
            std::fs::remove_file(path).map_err(|e| at("removing the stale socket", e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(at("inspecting the socket path", e)),
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| at("socket", e.into()))?;
    rustix::net::bind(&fd, &address).map_err(|e| at("bind", e.into()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| at("chmod", e))?;
    // As deep as the kernel allows (net.core.somaxconn), like the daemons.
    rustix::net::listen(&fd, 65_535).map_err(|e| at("listen", e.into()))?;
    Ok(fd)
}

/// What one `recvmsg` on an accepted handoff connection gave.
pub enum Received {
    /// The client's socket (the message's first fd; any others were closed).
    Client(OwnedFd),
    /// A message without a usable fd, or the peer closed: nothing to serve.
    Nothing,
}

/// Most fds received from one message: more than one is a protocol error, but
/// they must be received to be closed.
const MAX_FDS: usize = 8;

/// One `recvmsg` (MSG_CMSG_CLOEXEC, non-blocking). The data is not needed: the
/// buffer is small and the rest of a longer message is discarded by the kernel.
/// `Err(AGAIN)`: the message has not arrived yet.
pub fn receive(conn: BorrowedFd<'_>) -> Result<Received, Errno> {
    let mut data = [0u8; 64];
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(&mut data)];
    let message =
        rustix::net::recvmsg(conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC | RecvFlags::DONTWAIT)?;
    let mut client = None;
    for ancillary in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = ancillary {
            for fd in fds {
                // Extra fds are dropped here, which closes them.
                if client.is_none() {
                    client = Some(fd);
                }
            }
        }
    }
    // Cut control data may have lost fds: trust none (dropping closes them).
    if message.flags.contains(ReturnFlags::CTRUNC) {
        return Ok(Received::Nothing);
    }
    Ok(client.map_or(Received::Nothing, Received::Client))
}

/// Raises the soft fd limit to the hard limit, like the daemons.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
}

/// SIGINT and SIGTERM, each delivered as one byte (the signal number) on the
/// returned socket, which the event loop reads (a self-pipe: rustix has no signalfd).
pub fn signal_socket() -> Result<OwnedFd, String> {
    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("creating the signal socket: {e}"))?;
    // The handler needs the fd for the life of the process: it is never closed.
    let raw = theirs.as_raw_fd();
    std::mem::forget(theirs);
    for signal in [rustix::process::Signal::INT, rustix::process::Signal::TERM] {
        let byte = signal.as_raw() as u8;
        let action = move || {
            // SAFETY: `raw` stays open for the life of the process (forgotten above).
            let fd = unsafe { BorrowedFd::borrow_raw(raw) };
            // A full socket means signals are already waiting to be read: dropping
            // this one loses nothing.
            let _ = rustix::net::send(fd, &[byte], SendFlags::DONTWAIT | SendFlags::NOSIGNAL);
        };
        // SAFETY: the action makes one async-signal-safe system call (send, a raw
        // syscall through rustix) and neither allocates nor takes a lock;
        // signal-hook-registry saves and restores errno around it.
        unsafe { signal_hook_registry::register(signal.as_raw(), action) }
            .map_err(|e| format!("installing the {signal:?} handler: {e}"))?;
    }
    Ok(ours)
}

/// Reads the signals waiting on the signal socket; returns how many.
pub fn take_signals(socket: BorrowedFd<'_>) -> usize {
    let mut buf = [0u8; 64];
    let mut count = 0;
    // Bounded: a few reads drain any burst a person can send.
    for _ in 0..16 {
        match rustix::io::read(socket, &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => count += n,
        }
    }
    count
}
