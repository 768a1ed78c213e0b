//! The client's socket: writing with backpressure, noticing that the client went
//! away, and the syscalls of a close. What to do and when (stall bounds, the
//! linger, when to stop writing) is the core's [`handoff_core::stream`] and
//! [`handoff_core::stream::close`]; this moves the bytes and reports what happened.
//! The fd may be any stream socket.

use std::io;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};

use crate::runtime::ReadyFd;
use crate::sys;

/// What the driver needs of a client connection. [`FdClient`] is the real
/// socket; tests drive the daemon with an in-memory one.
pub trait ClientIo: Send + Unpin + 'static {
    /// One write; `Pending` waits for the socket to be writable.
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>>;
    /// One write now, without waiting or registering interest: `Ok(0)` when the
    /// socket would block.
    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize>;
    /// Reads and discards what the client sends; `Ready` on EOF or an error.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// `shutdown(SHUT_WR)`: the client reads EOF after the last byte.
    fn shutdown_write(&mut self) -> io::Result<()>;
}

/// A handed-off socket registered with the runtime.
pub struct FdClient<F: ReadyFd>(pub F);

impl<F: ReadyFd> ClientIo for FdClient<F> {
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let fd = self.0.as_fd();
        self.0.poll_write_with(cx, || sys::write(fd, bytes))
    }

    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match sys::write(self.0.as_fd(), bytes) {
            Err(error) if sys::would_block(&error) => Ok(0),
            result => result,
        }
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let fd = self.0.as_fd();
        // A client that keeps sending is drained a bounded amount per call.
        for _ in 0..4 {
            match self.0.poll_read_with(cx, || sys::discard_input(fd)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(false)) => continue,
                Poll::Ready(Ok(true)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        sys::shutdown_write(self.0.as_fd())
    }
}

/// A client connection and the bytes waiting for it.
pub struct ClientSocket<C: ClientIo> {
    io: C,
    /// What is still to be written, in order: `first`, then `rest`. The machine
    /// coalesces what one input produces, so one buffer is the common case and
    /// holds no copy; later writes behind a slow client are appended to `rest`.
    first: Bytes,
    rest: BytesMut,
    /// False once the client went away (EOF, error): nothing more is written.
    open: bool,
    bytes_sent: u64,
}

/// What one write did.
pub enum Wrote {
    /// The client took this many bytes (maybe not all that waits).
    Took(usize),
    /// The client is gone; what waited is dropped.
    Gone(io::Error),
}

impl<C: ClientIo> ClientSocket<C> {
    pub fn new(io: C) -> Self {
        ClientSocket { io, first: Bytes::new(), rest: BytesMut::new(), open: true, bytes_sent: 0 }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn has_pending_writes(&self) -> bool {
        self.open && !self.first.is_empty()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    pub fn push(&mut self, bytes: Bytes) {
        if !self.open || bytes.is_empty() {
            return;
        }
        if self.first.is_empty() {
            self.first = bytes;
        } else {
            self.rest.extend_from_slice(&bytes);
        }
    }

    /// One write of what waits. `Pending` once the socket is full.
    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Wrote> {
        if !self.has_pending_writes() {
            return Poll::Ready(Wrote::Took(0));
        }
        let result = match self.io.poll_write(cx, &self.first) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(result) => result,
        };
        Poll::Ready(self.account(result))
    }

    /// One write of what waits, without waiting: the response head goes out
    /// before the stream's task is first scheduled.
    pub fn write_now(&mut self) -> Wrote {
        if !self.has_pending_writes() {
            return Wrote::Took(0);
        }
        let result = self.io.write_now(&self.first);
        self.account(result)
    }

    fn account(&mut self, result: io::Result<usize>) -> Wrote {
        match result {
            Ok(written) => {
                let written = written.min(self.first.len());
                self.bytes_sent += written as u64;
                self.first.advance(written);
                if self.first.is_empty() && !self.rest.is_empty() {
                    self.first = std::mem::take(&mut self.rest).freeze();
                }
                Wrote::Took(written)
            }
            Err(error) => {
                self.mark_gone();
                Wrote::Gone(error)
            }
        }
    }

    /// Watches for EOF or an error from the client. `Ready(())` when it is gone.
    pub fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.open {
            return Poll::Ready(());
        }
        let gone = self.io.poll_gone(cx);
        if gone.is_ready() {
            self.mark_gone();
        }
        gone
    }

    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.io.shutdown_write()
    }

    fn mark_gone(&mut self) {
        self.open = false;
        self.first = Bytes::new();
        self.rest = BytesMut::new();
    }
}
