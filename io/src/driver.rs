//! Drives one client stream: moves bytes between the core's [`Stream`] machine,
//! the client socket, the backend stream and a timer, following the drain rule;
//! then closes the client as the core's [`Closing`] says.
//!
//! Only this feeds a stream machine: the backend adapters return events, the
//! client socket reports what it took, and every decision (what to write, when
//! to read the backend, when a stall or a deadline ends the stream, how long the
//! close may take) comes back out of core. The outcome is counted and the
//! admission slot released the moment the machine decides it; the close that
//! follows is bounded by core deadlines.
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
use handoff_core::metrics::StreamSummary;
use handoff_core::records::{completion_record, RecordMeta};
use handoff_core::stream::close::{CloseInput, CloseOutput, Closing};
use handoff_core::stream::{Input, Outcome, Output, Stream};

use crate::backend::{BackendEvent, BackendStream};
use crate::client::{ClientIo, ClientSocket, FdClient, Wrote};
use crate::daemon::{Shared, SocketHold};
use crate::metrics::Identity;
use crate::runtime::{Runtime, Timer};

/// Work done per poll before yielding to other tasks.
const POLL_BUDGET: usize = 64;

pub struct StreamTask<R: Runtime, C: ClientIo = FdClient<<R as Runtime>::Fd>> {
    id: u64,
    shared: Arc<Shared<R>>,
    machine: Stream,
    client: ClientSocket<C>,
    backend: BackendStream<R>,
    timer: R::Timer,
    /// The deadline the timer is set to; `None` after it fired.
    armed: Option<Instant>,
    /// Held while the stream counts against the limit; released once decided.
    admission: Option<Admission>,
    /// Set once the outcome is decided: the socket is being closed.
    closing: Option<Closing>,
    shutdown_sent: bool,
    stop_registered: bool,
    /// Who the stream is for (boxed: one pointer per stream), for its log line.
    identity: Option<Box<Identity>>,
    /// The handoff's files, when they are to be deleted after a used request.
    used_files: Option<Box<crate::attachments::UsedFiles>>,
    /// Built when the outcome is decided; logged once the socket has closed
    /// (with the bytes the client took). `None` when streams are not logged.
    summary: Option<Box<StreamSummary>>,
    /// What the stream's completion record says of its request (`None`:
    /// records are off); the record is built once the socket has closed.
    record: Option<Box<RecordMeta>>,
    /// The outcome, kept from the decision to the close for the record.
    outcome: Option<Outcome>,
    /// The user whose token budget this stream's usage is spent from (`None`:
    /// no budget, or no user).
    budget_user: Option<Box<str>>,
    /// The daemon waits for this socket's close at shutdown.
    _hold: SocketHold<R>,
}

impl<R: Runtime, C: ClientIo> StreamTask<R, C> {
    pub fn new(
        shared: Arc<Shared<R>>,
        id: u64,
        client: C,
        machine: Stream,
        backend: BackendStream<R>,
        admission: Admission,
    ) -> Self {
        let timer = shared.runtime.timer(shared.runtime.now());
        let hold = shared.hold_socket();
        let mut task = StreamTask {
            id,
            shared,
            machine,
            client: ClientSocket::new(client),
            backend,
            timer,
            armed: None,
            admission: Some(admission),
            closing: None,
            shutdown_sent: false,
            stop_registered: false,
            identity: None,
            used_files: None,
            summary: None,
            record: None,
            outcome: None,
            budget_user: None,
            _hold: hold,
        };
        // The head is the machine's first output: write it now, before the task
        // waits its turn on the executor (lowest time to first byte).
        task.drain_outputs();
        let wrote = task.client.write_now();
        task.wrote(wrote);
        task.drain_outputs();
        task
    }

    /// Who the stream is for, named in its log line.
    pub fn with_identity(mut self, identity: Option<Box<Identity>>) -> Self {
        self.identity = identity;
        self
    }

    /// Files the handoff brought, deleted after the outcome if core allows it.
    pub fn with_used_files(mut self, used_files: Option<Box<crate::attachments::UsedFiles>>) -> Self {
        self.used_files = used_files;
        self
    }

    /// Builds a completion record for this stream once its socket has closed.
    /// Spends the stream's usage from `user`'s token budget at its outcome.
    pub fn with_budget_user(mut self, user: Option<Box<str>>) -> Self {
        self.budget_user = user;
        self
    }

    pub fn with_record(mut self, record: Option<Box<RecordMeta>>) -> Self {
        self.record = record;
        self
    }

    /// True once the outcome is decided (counted, slot released).
    pub fn is_decided(&self) -> bool {
        self.closing.is_some()
    }

    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.stop_registered {
            self.stop_registered = true;
            self.shared.stop.register(self.id, cx.waker());
        }
        for _ in 0..POLL_BUDGET {
            self.drain_outputs();
            if self.closing.is_some() {
                return Poll::Ready(());
            }
            if !self.shutdown_sent && self.shared.stop.is_forced() {
                self.shutdown_sent = true;
                self.input(Input::Shutdown);
                continue;
            }
            if self.client.has_pending_writes() {
                if let Poll::Ready(wrote) = self.client.poll_write(cx) {
                    self.wrote(wrote);
                    continue;
                }
            }
            if self.client.poll_gone(cx).is_ready() {
                self.input(Input::ClientGone);
                continue;
            }
            if self.machine.wants_backend_data() && self.poll_backend(cx).is_ready() {
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

    /// Feeds the backend's next event to the machine; `Ready` after each one.
    fn poll_backend(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = self.shared.runtime.now();
        let event = match self.backend.poll_event(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(event) => event,
        };
        let input = match event {
            BackendEvent::Head(status) => {
                self.shared.metrics.record_backend_status(status);
                Input::BackendHead { status }
            }
            BackendEvent::Data(data) => Input::BackendData(data),
            BackendEvent::End => Input::BackendEnd,
            BackendEvent::Failed(failure) => {
                // The detail (hosts, OS errors) is for the log; the client gets ours.
                tracing::info!(stream = self.id, kind = ?failure.kind, detail = %failure.message, "backend failed");
                Input::BackendFailed(failure)
            }
        };
        self.machine.handle_input(now, input);
        // The machine took every byte: flow-control credit goes back at once,
        // whether or not the bytes made a client write.
        self.backend.consumed();
        Poll::Ready(())
    }

    fn wrote(&mut self, wrote: Wrote) {
        match wrote {
            Wrote::Took(0) => {}
            Wrote::Took(taken) => self.input(Input::ClientTook(taken)),
            Wrote::Gone(error) => {
                tracing::debug!(stream = self.id, %error, "writing to the client failed");
                self.input(Input::ClientGone);
            }
        }
    }

    fn input(&mut self, input: Input<'_>) {
        self.machine.handle_input(self.shared.runtime.now(), input);
    }

    /// The drain rule: poll outputs until the machine returns its next deadline.
    fn drain_outputs(&mut self) {
        if self.closing.is_some() {
            return;
        }
        loop {
            match self.machine.poll_output() {
                Output::Write(bytes) => self.client.push(bytes),
                Output::CancelBackend => self.backend.cancel(),
                // The close follows `Done`, as `Closing` says.
                Output::CloseClient => {}
                Output::Done(outcome) => return self.decide(outcome),
                Output::Timeout(deadline) => {
                    self.arm(deadline);
                    return;
                }
            }
        }
    }

    fn arm(&mut self, deadline: Instant) {
        if self.armed != Some(deadline) {
            self.armed = Some(deadline);
            self.timer.reset(deadline);
        }
    }

    /// The outcome is decided: count it, free the slot and the backend now; the
    /// socket's close follows.
    fn decide(&mut self, outcome: Outcome) {
        self.backend = BackendStream::None;
        if self.stop_registered {
            self.shared.stop.unregister(self.id);
        }
        self.shared.limits.record_outcome(&outcome);
        let now = self.shared.runtime.now();
        let summary = self.machine.summary(now, &outcome);
        self.shared.metrics.record_stream(&summary);
        if let Some(used_files) = self.used_files.take() {
            used_files.finish(&summary);
        }
        if self.shared.log_streams || self.record.is_some() {
            self.summary = Some(Box::new(summary));
        }
        if self.record.is_some() {
            self.outcome = Some(outcome.clone());
        }
        if let Some(user) = self.budget_user.take() {
            if let Some(usage) = self.machine.recording().and_then(|recording| recording.usage()) {
                let budget = self.shared.global.user_limits.budget();
                budget.spend(Some(&user), usage, crate::daemon::unix_millis());
            }
        }
        self.admission = None;
        self.armed = None;
        self.closing = Some(Closing::after(now, &self.shared.stream_config, &outcome));
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(closing) = self.closing.as_mut() else {
            return Poll::Ready(());
        };
        let closed = close_socket(
            cx,
            &self.shared.runtime,
            closing,
            &mut self.client,
            &mut self.timer,
            &mut self.armed,
        );
        if closed.is_ready() {
            let bytes = self.client.bytes_sent();
            self.shared.limits.add_bytes_sent(bytes);
            self.shared.metrics.record_bytes_sent(bytes);
            if let Some(mut summary) = self.summary.take() {
                summary.bytes = bytes;
                if self.shared.log_streams {
                    crate::metrics::log_stream(self.id, &summary, self.identity.as_deref());
                }
                self.submit_record(&summary);
            }
        }
        closed
    }
}

impl<R: Runtime, C: ClientIo> StreamTask<R, C> {
    /// Hands the finished stream's record to the records threads (once per
    /// stream; the sink never blocks).
    fn submit_record(&mut self, summary: &StreamSummary) {
        let (Some(meta), Some(outcome), Some(sink)) =
            (self.record.take(), self.outcome.take(), self.shared.records.as_ref())
        else {
            return;
        };
        sink.submit(completion_record(&meta, summary, &outcome, self.machine.recording()));
    }
}

impl<R: Runtime, C: ClientIo> Future for StreamTask<R, C> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Every field is Unpin (the timer is boxed where it needs pinning).
        let this = self.get_mut();
        if this.closing.is_none() && this.poll_stream(cx).is_pending() {
            return Poll::Pending;
        }
        this.poll_close(cx)
    }
}

/// Carries out a [`Closing`]: writes what is left, shuts down writing, watches
/// for EOF, and reports each to the machine; `Ready` once it says `Close` (the
/// caller then drops the socket).
pub fn close_socket<R: Runtime, C: ClientIo>(
    cx: &mut Context<'_>,
    runtime: &R,
    closing: &mut Closing,
    client: &mut ClientSocket<C>,
    timer: &mut R::Timer,
    armed: &mut Option<Instant>,
) -> Poll<()> {
    for _ in 0..POLL_BUDGET {
        match closing.poll_output() {
            CloseOutput::Close => return Poll::Ready(()),
            CloseOutput::ShutdownWrite => {
                if client.shutdown_write().is_err() {
                    closing.handle_input(runtime.now(), CloseInput::ClientGone);
                }
                continue;
            }
            CloseOutput::Timeout(deadline) if *armed != Some(deadline) => {
                *armed = Some(deadline);
                timer.reset(deadline);
            }
            _ => {}
        }
        if closing.is_flushing() {
            if !client.has_pending_writes() {
                closing.handle_input(runtime.now(), CloseInput::Flushed);
                continue;
            }
            match client.poll_write(cx) {
                Poll::Ready(Wrote::Took(taken)) => {
                    closing.handle_input(runtime.now(), CloseInput::ClientTook(taken));
                    continue;
                }
                Poll::Ready(Wrote::Gone(_)) => {
                    closing.handle_input(runtime.now(), CloseInput::ClientGone);
                    continue;
                }
                Poll::Pending => {}
            }
        } else if client.poll_gone(cx).is_ready() {
            closing.handle_input(runtime.now(), CloseInput::ClientGone);
            continue;
        }
        if armed.is_some() && timer.poll_expired(cx).is_ready() {
            *armed = None;
            closing.handle_input(runtime.now(), CloseInput::Timeout);
            continue;
        }
        return Poll::Pending;
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}
