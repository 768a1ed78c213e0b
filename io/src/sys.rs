//! Thin, safe wrappers over the few syscalls the daemon makes on raw fds.

use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;

use bytes::Bytes;

/// Writes as much of `queue` as the socket takes now, in one `writev`, and drops
/// what was fully written. `Ok(n)`: bytes written (0 only for an empty queue).
pub fn write_queue(fd: BorrowedFd<'_>, queue: &mut Vec<Bytes>) -> io::Result<usize> {
    const MAX_SLICES: usize = 16;
    if queue.is_empty() {
        return Ok(0);
    }
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let count = queue.len().min(MAX_SLICES);
    for (slice, bytes) in slices.iter_mut().zip(queue.iter()) {
        *slice = IoSlice::new(bytes);
    }
    let written = rustix::io::writev(fd, &slices[..count])?;
    consume(queue, written);
    Ok(written)
}

fn consume(queue: &mut Vec<Bytes>, mut written: usize) {
    let mut done = 0;
    for bytes in queue.iter_mut() {
        if written >= bytes.len() {
            written -= bytes.len();
            done += 1;
        } else {
            let _ = bytes.split_to(written);
            break;
        }
    }
    queue.drain(..done);
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

pub fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn write_queue_keeps_the_unwritten_tail() {
        let mut queue = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")];
        consume(&mut queue, 5);
        assert_eq!(queue, vec![Bytes::from_static(b"fg")]);
        consume(&mut queue, 2);
        assert!(queue.is_empty());
    }

    #[test]
    fn writes_and_sees_eof_on_a_socketpair() {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let (ours, theirs) =
            socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::NONBLOCK, None).unwrap();
        let mut queue = vec![Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        assert_eq!(write_queue(ours.as_fd(), &mut queue).unwrap(), 11);
        let mut buf = [0u8; 32];
        let read = rustix::io::read(theirs.as_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..read], b"hello world");
        drop(theirs);
        assert!(discard_input(ours.as_fd()).unwrap());
        set_nodelay_best_effort(ours.as_fd());
    }
}
