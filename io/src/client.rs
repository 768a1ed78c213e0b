//! The client's socket: writing with backpressure, noticing that the client went
//! away, and closing gracefully. The fd may be any stream socket.

use std::io;
use std::os::fd::AsFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::runtime::{ReadyFd, Runtime, Timer};
use crate::sys;

/// How long a closing socket keeps draining what the client still sends, so that
/// unread bytes never turn the close into a reset that destroys the response's tail.
const LINGER: Duration = Duration::from_secs(2);

pub struct ClientSocket<R: Runtime> {
    fd: R::Fd,
    /// What is still to be written. One buffer: the machine coalesces what one
    /// input produces, and a second write only queues behind a slow client (then
    /// the two are joined), so no queue stays allocated per stream.
    pending: Option<Bytes>,
    /// False once the client went away (EOF, error): nothing more is written.
    open: bool,
    closing: Closing,
    bytes_sent: u64,
}

impl<R: Runtime> ClientSocket<R> {
    pub fn new(fd: R::Fd) -> Self {
        ClientSocket { fd, pending: None, open: true, closing: Closing::NotStarted, bytes_sent: 0 }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn has_pending_writes(&self) -> bool {
        self.open && self.pending.is_some()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    pub fn push(&mut self, bytes: Bytes) {
        if !self.open || bytes.is_empty() {
            return;
        }
        self.pending = Some(match self.pending.take() {
            None => bytes,
            Some(earlier) => {
                let mut joined = BytesMut::with_capacity(earlier.len() + bytes.len());
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&bytes);
                joined.freeze()
            }
        });
    }

    /// Writes what is queued. `Ready(Ok(()))` once everything is written;
    /// `Ready(Err)` when the client is gone (the queue is dropped).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(pending) = self.pending.as_mut().filter(|_| self.open) {
            let fd = self.fd.as_fd();
            match self.fd.poll_write_with(cx, || sys::write(fd, pending)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(written)) => {
                    self.bytes_sent += written as u64;
                    if written >= pending.len() {
                        self.pending = None;
                    } else {
                        pending.advance(written);
                    }
                }
                Poll::Ready(Err(error)) => {
                    self.mark_gone();
                    return Poll::Ready(Err(error));
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Writes what is queued right now, without waiting or registering interest
    /// (the socket is nearly always writable): the response head goes out before
    /// the stream's task is first scheduled. Whatever is left waits for `poll_flush`.
    pub fn write_now(&mut self) {
        let Some(pending) = self.pending.as_mut().filter(|_| self.open) else {
            return;
        };
        match sys::write(self.fd.as_fd(), pending) {
            Ok(written) => {
                self.bytes_sent += written as u64;
                if written >= pending.len() {
                    self.pending = None;
                } else {
                    pending.advance(written);
                }
            }
            Err(error) if sys::would_block(&error) => {}
            Err(_) => self.mark_gone(),
        }
    }

    /// Watches for EOF or an error from the client while nothing is due.
    /// `Ready(())` when the client is gone.
    pub fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.open {
            return Poll::Ready(());
        }
        let fd = self.fd.as_fd();
        // A client that keeps sending is drained a bounded amount per call.
        for _ in 0..4 {
            match self.fd.poll_read_with(cx, || sys::discard_input(fd)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(false)) => continue,
                Poll::Ready(Ok(true)) | Poll::Ready(Err(_)) => {
                    self.mark_gone();
                    return Poll::Ready(());
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn mark_gone(&mut self) {
        self.open = false;
        self.pending = None;
    }

    /// Closes gracefully: flushes (bounded by `LINGER`), shuts down writing,
    /// drains what the client still sends until EOF or `LINGER`; `Ready` once the
    /// fd may be dropped. Drives `timer` for those bounds.
    pub fn poll_close(&mut self, cx: &mut Context<'_>, timer: &mut R::Timer) -> Poll<()> {
        loop {
            match self.closing {
                Closing::NotStarted => {
                    if !self.open {
                        return Poll::Ready(());
                    }
                    timer.reset(Instant::now() + LINGER);
                    self.closing = Closing::Flushing;
                }
                Closing::Flushing => match self.poll_flush(cx) {
                    Poll::Ready(Ok(())) => {
                        if sys::shutdown_write(self.fd.as_fd()).is_err() {
                            return Poll::Ready(());
                        }
                        timer.reset(Instant::now() + LINGER);
                        self.closing = Closing::Draining;
                    }
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return timer.poll_expired(cx),
                },
                Closing::Draining => {
                    if self.poll_gone(cx).is_ready() {
                        return Poll::Ready(());
                    }
                    return timer.poll_expired(cx);
                }
            }
        }
    }
}

/// Where a graceful close is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    NotStarted,
    Flushing,
    Draining,
}

/// Writes one complete response (a 400 or 503) and closes gracefully.
pub async fn respond_and_close<R: Runtime>(runtime: R, fd: R::Fd, response: Bytes) {
    let mut client = ClientSocket::<R>::new(fd);
    client.push(response);
    let mut timer = runtime.timer(Instant::now() + LINGER);
    std::future::poll_fn(|cx| client.poll_close(cx, &mut timer)).await;
}
