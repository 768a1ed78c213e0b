//! Drives one client stream: moves bytes between the core's [`Stream`] machine,
//! the client socket, the backend stream and a timer, following the drain rule.

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

struct StreamTask<R: Runtime> {
    id: u64,
    shared: Arc<Shared<R>>,
    machine: Stream,
    client: ClientSocket<R>,
    backend: BackendStream<R>,
    timer: R::Timer,
    /// The deadline the timer is set to; `None` after it fired.
    armed: Option<Instant>,
    outcome: Option<Outcome>,
    shutdown_sent: bool,
    stop_registered: bool,
}

/// Runs a stream to its end, then closes the client gracefully.
pub async fn run_stream<R: Runtime>(
    shared: Arc<Shared<R>>,
    id: u64,
    client: R::Fd,
    machine: Stream,
    backend: BackendStream<R>,
    admission: Admission,
) {
    let timer = shared.runtime.timer(Instant::now());
    let mut task = StreamTask {
        id,
        shared,
        machine,
        client: ClientSocket::new(client),
        backend,
        timer,
        armed: None,
        outcome: None,
        shutdown_sent: false,
        stop_registered: false,
    };
    std::future::poll_fn(|cx| task.poll(cx)).await;
    let StreamTask { shared, client, backend, outcome, stop_registered, .. } = task;
    drop(backend);
    if stop_registered {
        shared.stop.unregister(id);
    }
    shared.limits.add_bytes_sent(client.bytes_sent());
    if let Some(outcome) = &outcome {
        shared.limits.record_outcome(outcome);
        log_outcome(id, outcome, client.bytes_sent());
    }
    // The slot is free as soon as the stream is decided; closing may linger.
    drop(admission);
    client.close_gracefully(&shared.runtime).await;
}

fn log_outcome(id: u64, outcome: &Outcome, bytes: u64) {
    match outcome {
        Outcome::Completed => tracing::debug!(stream = id, bytes, "stream completed"),
        Outcome::ClientGone => tracing::debug!(stream = id, bytes, "client went away"),
        Outcome::Failed(reason) => tracing::info!(stream = id, bytes, ?reason, "stream failed"),
    }
}

impl<R: Runtime> StreamTask<R> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
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
}
