//! One backend stream over a shared HTTP/2 connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_channel::oneshot;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use handoff_core::pool::{ConnId, StreamId};
use handoff_core::stream::{BackendFailure, FailureKind, Input, Stream};

use super::pool::{Lease, PoolMsg, PoolSender};
use super::{unavailable, Request};
use crate::runtime::Runtime;

enum State<R: Runtime> {
    Acquiring(oneshot::Receiver<Result<Lease<R>, BackendFailure>>),
    Sending { conn: ConnId, send: SendRequest<Bytes> },
    Responding { conn: ConnId, response: ResponseFuture, _body: SendStream<Bytes> },
    Receiving { body: RecvStream, _request: SendStream<Bytes> },
    Ended,
}

pub struct H2Stream<R: Runtime> {
    id: StreamId,
    state: State<R>,
    pool: PoolSender<R>,
    request: Request,
    /// Received bytes not yet given back to the flow-control window: they are
    /// released only once forwarded to the client, so a slow client slows its
    /// own upstream.
    unreleased: usize,
    refused_once: bool,
}

impl<R: Runtime> H2Stream<R> {
    pub fn new(
        id: StreamId,
        pool: PoolSender<R>,
        request: Request,
        lease: oneshot::Receiver<Result<Lease<R>, BackendFailure>>,
    ) -> Self {
        H2Stream { id, state: State::Acquiring(lease), pool, request, unreleased: 0, refused_once: false }
    }

    pub fn is_active(&self) -> bool {
        !matches!(self.state, State::Ended)
    }

    /// Makes progress; feeds at most one piece of input to `machine` per call.
    pub fn poll_into(&mut self, cx: &mut Context<'_>, machine: &mut Stream) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Acquiring(lease) => match Pin::new(lease).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(Ok(Lease::H2 { conn, send }))) => {
                        self.state = State::Sending { conn, send }
                    }
                    Poll::Ready(Ok(Ok(Lease::H1 { .. }))) => {
                        return self
                            .fail(machine, unavailable("pool handed an HTTP/1.1 lease to an HTTP/2 stream"));
                    }
                    // The pool has already forgotten the stream.
                    Poll::Ready(Ok(Err(failure))) => {
                        self.state = State::Ended;
                        machine.handle_input(Instant::now(), Input::BackendFailed(failure));
                        return Poll::Ready(());
                    }
                    Poll::Ready(Err(oneshot::Canceled)) => {
                        self.state = State::Ended;
                        machine.handle_input(
                            Instant::now(),
                            Input::BackendFailed(unavailable("the backend pool stopped")),
                        );
                        return Poll::Ready(());
                    }
                },
                State::Sending { conn, send } => {
                    let conn = *conn;
                    let ready = match send.poll_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(ready) => ready,
                    };
                    let sent = ready.and_then(|()| send.send_request(self.request.h2_head(), false));
                    match sent {
                        Ok((response, mut body)) => {
                            // Capacity for the body is reserved by h2 as the window allows.
                            match body.send_data(self.request.body.clone(), true) {
                                Ok(()) => self.state = State::Responding { conn, response, _body: body },
                                Err(error) => {
                                    if !self.retry(conn, &error, machine) {
                                        return Poll::Ready(());
                                    }
                                }
                            }
                        }
                        Err(error) => {
                            if !self.retry(conn, &error, machine) {
                                return Poll::Ready(());
                            }
                        }
                    }
                }
                State::Responding { conn, response, .. } => {
                    let conn = *conn;
                    match Pin::new(response).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(response)) => {
                            let status = response.status().as_u16();
                            let body = response.into_body();
                            let State::Responding { _body, .. } =
                                std::mem::replace(&mut self.state, State::Ended)
                            else {
                                unreachable!("state checked by the enclosing match");
                            };
                            self.state = State::Receiving { body, _request: _body };
                            // Past the point of retrying: the request need not be kept.
                            self.request.release();
                            machine.handle_input(Instant::now(), Input::BackendHead { status });
                            return Poll::Ready(());
                        }
                        Poll::Ready(Err(error)) => {
                            if !self.retry(conn, &error, machine) {
                                return Poll::Ready(());
                            }
                        }
                    }
                }
                State::Receiving { body, .. } => {
                    let polled = body.poll_data(cx);
                    return match polled {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Some(Ok(data))) => {
                            self.unreleased += data.len();
                            machine.handle_input(Instant::now(), Input::BackendData(&data));
                            Poll::Ready(())
                        }
                        Poll::Ready(Some(Err(error))) => {
                            let failure = failure_of(&error);
                            self.fail(machine, failure)
                        }
                        Poll::Ready(None) => {
                            self.finish();
                            machine.handle_input(Instant::now(), Input::BackendEnd);
                            Poll::Ready(())
                        }
                    };
                }
                State::Ended => return Poll::Pending,
            }
        }
    }

    /// A refusal before any response byte (REFUSED_STREAM, GOAWAY, a closed
    /// connection) goes back to the pool, which retries it once elsewhere. Returns
    /// false when the stream failed instead (the machine has been told).
    fn retry(&mut self, conn: ConnId, error: &h2::Error, machine: &mut Stream) -> bool {
        if error.is_go_away() {
            let _ = self.pool.unbounded_send(PoolMsg::GoAway(conn));
        }
        let refused =
            error.is_go_away() || error.reason() == Some(h2::Reason::REFUSED_STREAM) || error.is_io();
        if refused && !self.refused_once {
            self.refused_once = true;
            let (reply, lease) = oneshot::channel();
            if self.pool.unbounded_send(PoolMsg::Acquire { stream: self.id, refused: true, reply }).is_ok() {
                self.state = State::Acquiring(lease);
                return true;
            }
        }
        let _ = self.fail(machine, failure_of(error));
        false
    }

    fn fail(&mut self, machine: &mut Stream, failure: BackendFailure) -> Poll<()> {
        self.finish();
        machine.handle_input(Instant::now(), Input::BackendFailed(failure));
        Poll::Ready(())
    }

    /// Gives forwarded bytes back to the flow-control window.
    pub fn release(&mut self) {
        if self.unreleased == 0 {
            return;
        }
        if let State::Receiving { body, .. } = &mut self.state {
            let _ = body.flow_control().release_capacity(self.unreleased);
        }
        self.unreleased = 0;
    }

    /// Stops the request: RST_STREAM(CANCEL) when it is on the wire.
    pub fn cancel(&mut self) {
        match &mut self.state {
            State::Responding { _body, .. } => _body.send_reset(h2::Reason::CANCEL),
            State::Receiving { _request, .. } => _request.send_reset(h2::Reason::CANCEL),
            _ => {}
        }
        self.finish();
    }

    fn finish(&mut self) {
        if !matches!(self.state, State::Ended) {
            self.state = State::Ended;
            let _ =
                self.pool.unbounded_send(PoolMsg::Finished { stream: self.id, reusable: None, broken: None });
        }
    }
}

impl<R: Runtime> Drop for H2Stream<R> {
    fn drop(&mut self) {
        self.cancel();
    }
}

fn failure_of(error: &h2::Error) -> BackendFailure {
    let kind = if error.is_reset() || error.is_io() || error.is_go_away() {
        FailureKind::Reset
    } else {
        FailureKind::Protocol
    };
    BackendFailure { kind, message: format!("HTTP/2: {error}") }
}
