//! Thin, safe wrappers over the few syscalls the daemon makes on raw fds.

use std::io;
use std::os::fd::BorrowedFd;

use handoff_core::pool::TcpKeepalive;

/// One non-blocking write; `Ok(n)` bytes were taken by the socket.
pub fn write(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    rustix::io::write(fd, bytes).map_err(io::Error::from)
}

/// Reads and discards what the peer sent. `Ok(true)`: the peer closed (EOF).
pub fn discard_input(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut sink = [0u8; 1024];
    // Bounded: a peer that keeps sending cannot hold this loop.
    for _ in 0..64 {
        let read = rustix::io::read(fd, &mut sink)?;
        if read == 0 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Best-effort TCP_NODELAY: the fd may be any stream socket (tests hand off
/// AF_UNIX socketpairs), where the option does not exist.
pub fn set_nodelay_best_effort(fd: BorrowedFd<'_>) {
    let _ = rustix::net::sockopt::set_tcp_nodelay(fd, true);
}

/// SO_KEEPALIVE with the probing core chose (`None`: left off).
pub fn set_tcp_keepalive(fd: BorrowedFd<'_>, keepalive: Option<TcpKeepalive>) -> io::Result<()> {
    use rustix::net::sockopt;
    let Some(keepalive) = keepalive else { return Ok(()) };
    sockopt::set_tcp_keepidle(fd, keepalive.idle)?;
    sockopt::set_tcp_keepintvl(fd, keepalive.interval)?;
    sockopt::set_tcp_keepcnt(fd, keepalive.probes)?;
    sockopt::set_socket_keepalive(fd, true)?;
    Ok(())
}

/// Best-effort SO_SNDBUF (0 leaves the kernel's autotuning alone).
pub fn set_send_buffer_best_effort(fd: BorrowedFd<'_>, bytes: usize) {
    if bytes > 0 {
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, bytes);
    }
}

pub fn shutdown_write(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::net::shutdown(fd, rustix::net::Shutdown::Write).map_err(io::Error::from)
}

/// Sets O_NONBLOCK (handed-off fds arrive blocking).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    rustix::fs::fcntl_setfl(fd, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

/// Raises the soft fd limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => limit.maximum,
        Err(_) => limit.current,
    }
}

/// The hard fd limit (`None`: unlimited).
pub fn hard_fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum
}

pub fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn writes_and_sees_eof_on_a_socketpair() {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let (ours, theirs) =
            socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::NONBLOCK, None).unwrap();
        assert_eq!(write(ours.as_fd(), b"hello world").unwrap(), 11);
        let mut buf = [0u8; 32];
        let read = rustix::io::read(theirs.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..read], b"hello world");
        drop(theirs);
        assert!(discard_input(ours.as_fd()).unwrap());
        set_nodelay_best_effort(ours.as_fd());
    }
}
