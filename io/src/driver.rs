//! Drives one client stream: moves bytes between the core's [`Stream`] machine,
//! the client socket, the backend stream and a timer, following the drain rule,
//! then closes the client gracefully.
//!
//! Written as a hand-made future rather than an `async fn`: the compiler keeps an
//! `async fn`'s moved arguments beside its locals and gives each await point its
//! own space, which more than doubled the per-stream task size; here every
//! stream costs exactly one `StreamTask`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use handoff_core::limits::Admission;
use handoff_core::stream::{Input, Outcome, Output, Stream};

use crate::backend::BackendStream;
use crate::client::ClientSocket;
use crate::daemon::Shared;
use crate::runtime::{Runtime, Timer};

/// Work done per poll before yielding to other tasks.
const POLL_BUDGET: usize = 64;

pub struct StreamTask<R: Runtime> {
    id: u64,
    shared: Arc<Shared<R>>,
    machine: Stream,
    client: ClientSocket<R>,
    backend: BackendStream<R>,
    timer: R::Timer,
    /// The deadline the timer is set to; `None` after it fired.
    armed: Option<Instant>,
    /// Held while the stream counts against the limit; released once decided.
    admission: Option<Admission>,
    outcome: Option<Outcome>,
    shutdown_sent: bool,
    stop_registered: bool,
    closing: bool,
}

impl<R: Runtime> StreamTask<R> {
    pub fn new(
        shared: Arc<Shared<R>>,
        id: u64,
        client: R::Fd,
        machine: Stream,
        backend: BackendStream<R>,
        admission: Admission,
    ) -> Self {
        let timer = shared.runtime.timer(Instant::now());
        let mut task = StreamTask {
            id,
            shared,
            machine,
            client: ClientSocket::new(client),
            backend,
            timer,
            armed: None,
            admission: Some(admission),
            outcome: None,
            shutdown_sent: false,
            stop_registered: false,
            closing: false,
        };
        // The head is the machine's first output: write it now, before the task
        // waits its turn on the executor (lowest time to first byte).
        task.drain_outputs();
        task.client.write_now();
        task
    }

    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.stop_registered {
            self.stop_registered = true;
            self.shared.stop.register(self.id, cx.waker());
        }
        for _ in 0..POLL_BUDGET {
            self.drain_outputs();
            if self.client.has_pending_writes() {
                match self.client.poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.backend.release(),
                    Poll::Ready(Err(_)) => {
                        self.input(Input::ClientGone);
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if self.outcome.is_some() && !self.client.has_pending_writes() {
                return Poll::Ready(());
            }
            if !self.shutdown_sent && self.shared.stop.is_forced() {
                self.shutdown_sent = true;
                self.input(Input::Shutdown);
                continue;
            }
            if self.client.is_open() && self.outcome.is_none() && self.client.poll_gone(cx).is_ready() {
                self.input(Input::ClientGone);
                continue;
            }
            // Backpressure: read the backend only once the client took everything.
            if !self.client.has_pending_writes()
                && self.outcome.is_none()
                && self.backend.is_active()
                && self.backend.poll_into(cx, &mut self.machine).is_ready()
            {
                continue;
            }
            if self.armed.is_some() && self.timer.poll_expired(cx).is_ready() {
                self.armed = None;
                self.input(Input::Timeout);
                continue;
            }
            return Poll::Pending;
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn input(&mut self, input: Input<'_>) {
        self.machine.handle_input(Instant::now(), input);
    }

    /// The drain rule: poll outputs until the machine returns its next deadline.
    fn drain_outputs(&mut self) {
        if self.outcome.is_some() {
            return;
        }
        loop {
            match self.machine.poll_output() {
                Output::Write(bytes) => self.client.push(bytes),
                Output::CancelBackend => self.backend.cancel(),
                // The close itself happens once the stream is done and flushed.
                Output::CloseClient => {}
                Output::Done(outcome) => {
                    self.outcome = Some(outcome);
                    return;
                }
                Output::Timeout(deadline) => {
                    if self.armed != Some(deadline) {
                        self.armed = Some(deadline);
                        self.timer.reset(deadline);
                    }
                    return;
                }
            }
        }
    }

    /// The stream is decided: count it, free its slot and its backend, log it.
    fn finish(&mut self) {
        self.backend = BackendStream::None;
        if self.stop_registered {
            self.shared.stop.unregister(self.id);
        }
        let bytes = self.client.bytes_sent();
        self.shared.limits.add_bytes_sent(bytes);
        if let Some(outcome) = &self.outcome {
            self.shared.limits.record_outcome(outcome);
            log_outcome(self.id, outcome, bytes);
        }
        self.admission = None;
    }
}

impl<R: Runtime> Future for StreamTask<R> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Every field is Unpin (the timer is boxed where it needs pinning).
        let this = self.get_mut();
        if !this.closing {
            if this.poll_stream(cx).is_pending() {
                return Poll::Pending;
            }
            this.finish();
            this.closing = true;
        }
        this.client.poll_close(cx, &mut this.timer)
    }
}

fn log_outcome(id: u64, outcome: &Outcome, bytes: u64) {
    match outcome {
        Outcome::Completed => tracing::debug!(stream = id, bytes, "stream completed"),
        Outcome::ClientGone => tracing::debug!(stream = id, bytes, "client went away"),
        Outcome::ClientStalled => tracing::info!(stream = id, bytes, "client stalled"),
        Outcome::Failed(reason) => tracing::info!(stream = id, bytes, ?reason, "stream failed"),
    }
}
