//! The client's socket: writing with backpressure, noticing that the client went
//! away, and closing gracefully. The fd may be any stream socket.

use std::io;
use std::os::fd::AsFd;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::runtime::{ReadyFd, Runtime, Timer};
use crate::sys;

/// How long a closing socket keeps draining what the client still sends, so that
/// unread bytes never turn the close into a reset that destroys the response's tail.
const LINGER: Duration = Duration::from_secs(2);

pub struct ClientSocket<R: Runtime> {
    fd: R::Fd,
    queue: Vec<Bytes>,
    /// False once the client went away (EOF, error): nothing more is written.
    open: bool,
    bytes_sent: u64,
}

impl<R: Runtime> ClientSocket<R> {
    pub fn new(fd: R::Fd) -> Self {
        ClientSocket { fd, queue: Vec::new(), open: true, bytes_sent: 0 }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    pub fn has_pending_writes(&self) -> bool {
        self.open && !self.queue.is_empty()
    }

    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    pub fn push(&mut self, bytes: Bytes) {
        if self.open && !bytes.is_empty() {
            self.queue.push(bytes);
        }
    }

    /// Writes what is queued. `Ready(Ok(()))` once everything is written;
    /// `Ready(Err)` when the client is gone (the queue is dropped).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.has_pending_writes() {
            let fd = self.fd.as_fd();
            let queue = &mut self.queue;
            match self.fd.poll_write_with(cx, || sys::write_queue(fd, queue)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(written)) => self.bytes_sent += written as u64,
                Poll::Ready(Err(error)) => {
                    self.mark_gone();
                    return Poll::Ready(Err(error));
                }
            }
        }
        Poll::Ready(Ok(()))
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
        self.queue = Vec::new();
    }

    /// Flushes (bounded by `LINGER`), shuts down writing, drains what the client
    /// still sends until EOF or `LINGER`, then closes the fd (by dropping it).
    pub async fn close_gracefully(mut self, runtime: &R) {
        if !self.open {
            return;
        }
        let mut timer = runtime.timer(Instant::now() + LINGER);
        let flushed = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = self.poll_flush(cx) {
                return Poll::Ready(result.is_ok());
            }
            timer.poll_expired(cx).map(|()| false)
        })
        .await;
        if !flushed || sys::shutdown_write(self.fd.as_fd()).is_err() {
            return;
        }
        let mut timer = runtime.timer(Instant::now() + LINGER);
        std::future::poll_fn(|cx| {
            if self.poll_gone(cx).is_ready() {
                return Poll::Ready(());
            }
            timer.poll_expired(cx)
        })
        .await;
    }
}

/// Writes one complete response (a 400 or 503) and closes gracefully.
pub async fn respond_and_close<R: Runtime>(runtime: R, fd: R::Fd, response: Bytes) {
    let mut client = ClientSocket::<R>::new(fd);
    client.push(response);
    client.close_gracefully(&runtime).await;
}
