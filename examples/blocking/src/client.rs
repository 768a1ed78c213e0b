//! One client socket on one thread: the thread blocks in poll(2) until the
//! client can take bytes, sends something, goes away, or core's deadline comes.
//! Writes never block (MSG_DONTWAIT), so a client that stops reading cannot hold
//! the thread past the write-stall deadline core sets.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use bytes::{Buf, Bytes};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

/// What the polled fds reported; nothing when the deadline passed.
pub struct Ready {
    pub fd: PollFlags,
    pub stop: bool,
}

/// Blocks until `fd` has `events`, `stop` is readable or hung up, or `deadline`.
pub fn wait(
    fd: &impl AsFd,
    events: PollFlags,
    stop: Option<BorrowedFd<'_>>,
    deadline: Option<Instant>,
) -> io::Result<Ready> {
    loop {
        let timeout = match deadline.map(|deadline| deadline.saturating_duration_since(Instant::now())) {
            Some(left) if left.is_zero() => return Ok(Ready { fd: PollFlags::empty(), stop: false }),
            // A deadline too far to express waits for an event instead.
            left => left.and_then(|left| Timespec::try_from(left).ok()),
        };
        let mut fds = [PollFd::new(fd, events), PollFd::from_borrowed_fd(fd.as_fd(), PollFlags::empty())];
        if let Some(stop) = stop {
            fds[1] = PollFd::from_borrowed_fd(stop, PollFlags::IN);
        }
        let count = if stop.is_some() { 2 } else { 1 };
        match poll(&mut fds[..count], timeout.as_ref()) {
            Err(Errno::INTR) => continue,
            Err(error) => return Err(error.into()),
            Ok(0) => continue,
            Ok(_) => {}
        }
        // Errors and hang-ups count as ready: the next read or write reports them.
        return Ok(Ready { fd: fds[0].revents(), stop: count == 2 && !fds[1].revents().is_empty() });
    }
}

/// What happened on the client socket.
pub enum Event {
    /// The client took this many bytes.
    Took(usize),
    /// EOF or an error: nothing more can reach it.
    Gone,
    /// The stop fd fired (the drain deadline passed).
    Stop,
    /// Only time passed.
    Timeout,
}

/// A handed-off client and the bytes waiting for it.
pub struct Client {
    fd: OwnedFd,
    pending: VecDeque<Bytes>,
    open: bool,
    pub sent: u64,
}

impl Client {
    pub fn new(fd: OwnedFd) -> Client {
        Client { fd, pending: VecDeque::new(), open: true, sent: 0 }
    }

    pub fn push(&mut self, bytes: Bytes) {
        if self.open && !bytes.is_empty() {
            self.pending.push_back(bytes);
        }
    }

    pub fn has_pending(&self) -> bool {
        self.open && !self.pending.is_empty()
    }

    pub fn shutdown_write(&self) -> io::Result<()> {
        rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Write).map_err(Into::into)
    }

    /// Writes what waits, or blocks until the next event (`stop` only while it matters).
    pub fn next_event(&mut self, deadline: Instant, stop: Option<BorrowedFd<'_>>) -> Event {
        loop {
            if let Some(front) = self.pending.front_mut().filter(|_| self.open) {
                match rustix::net::send(&self.fd, front, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                    Ok(taken) => {
                        front.advance(taken);
                        if front.is_empty() {
                            self.pending.pop_front();
                        }
                        self.sent += taken as u64;
                        return Event::Took(taken);
                    }
                    Err(Errno::AGAIN | Errno::INTR) => {}
                    Err(_) => return self.gone(),
                }
            }
            let events = if self.has_pending() { PollFlags::IN | PollFlags::OUT } else { PollFlags::IN };
            let ready = match wait(&self.fd, events, stop, Some(deadline)) {
                Ok(ready) => ready,
                Err(_) => return self.gone(),
            };
            if ready.stop {
                return Event::Stop;
            }
            if ready.fd.is_empty() {
                return Event::Timeout;
            }
            if ready.fd.intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR) && self.discard_input() {
                return self.gone();
            }
        }
    }

    /// Reads and drops what the client sent (a bounded amount); true once it is gone.
    fn discard_input(&mut self) -> bool {
        let mut sink = [0u8; 1024];
        for _ in 0..64 {
            match rustix::net::recv(&self.fd, &mut sink[..], RecvFlags::DONTWAIT) {
                Ok((_, 0)) => return true,
                Ok(_) => {}
                Err(Errno::AGAIN | Errno::INTR) => return false,
                Err(_) => return true,
            }
        }
        false
    }

    fn gone(&mut self) -> Event {
        self.open = false;
        self.pending.clear();
        Event::Gone
    }
}
