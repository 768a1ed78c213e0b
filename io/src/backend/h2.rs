//! One backend stream over a shared HTTP/2 connection.
//!
//! Flow control: the connection is opened with a bounded per-stream window and a
//! connection window that lets every stream have its window in flight (core's
//! `PoolConfig`), and the driver calls [`H2Stream::consumed`] as soon as the
//! stream machine has taken a DATA frame's bytes, so credit follows what the
//! daemon consumed, never what a client flushed. A stalled client stops its
//! driver from reading (the machine's bounded client buffer is full), which fills
//! only this stream's window.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_channel::oneshot;
use h2::client::{ResponseFuture, SendRequest};
use h2::{RecvStream, SendStream};
use handoff_core::pool::{ConnId, Rejection, StreamId};
use handoff_core::stream::{BackendFailure, FailureKind};

use super::pool::{Lease, PoolMsg, PoolSender};
use super::{unavailable, BackendEvent, Request, Step};
use crate::runtime::Runtime;

enum State<R: Runtime> {
    Acquiring(oneshot::Receiver<Result<Lease<R>, BackendFailure>>),
    Sending { conn: ConnId, send: SendRequest<Bytes> },
    Responding { conn: ConnId, response: ResponseFuture, request: SendStream<Bytes> },
    Receiving { body: RecvStream, request: SendStream<Bytes>, chunk: Bytes },
    Ended,
}

pub struct H2Stream<R: Runtime> {
    id: StreamId,
    state: State<R>,
    pool: PoolSender<R>,
    request: Request,
}

impl<R: Runtime> H2Stream<R> {
    pub fn new(
        id: StreamId,
        pool: PoolSender<R>,
        request: Request,
        lease: oneshot::Receiver<Result<Lease<R>, BackendFailure>>,
    ) -> Self {
        H2Stream { id, state: State::Acquiring(lease), pool, request }
    }

    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<BackendEvent<'_>> {
        let step = ready!(self.poll_step(cx));
        Poll::Ready(match step {
            Step::Head(status) => BackendEvent::Head(status),
            Step::Data => match &self.state {
                State::Receiving { chunk, .. } => BackendEvent::Data(chunk),
                _ => BackendEvent::Data(&[]),
            },
            Step::End => BackendEvent::End,
            Step::Failed(failure) => BackendEvent::Failed(failure),
        })
    }

    /// Makes progress until one event is ready.
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        // Bytes the machine did not report as consumed are released before any more
        // arrive, so the window can never be lost.
        self.consumed();
        loop {
            match &mut self.state {
                State::Acquiring(lease) => match ready!(Pin::new(lease).poll(cx)) {
                    Ok(Ok(Lease::H2 { conn, send })) => self.state = State::Sending { conn, send },
                    Ok(Ok(Lease::H1 { .. })) => {
                        return self.fail(unavailable("pool handed an HTTP/1.1 lease to an HTTP/2 stream"));
                    }
                    // The pool has already forgotten the stream.
                    Ok(Err(failure)) => {
                        self.state = State::Ended;
                        return Poll::Ready(Step::Failed(failure));
                    }
                    Err(oneshot::Canceled) => {
                        self.state = State::Ended;
                        return Poll::Ready(Step::Failed(unavailable("the backend pool stopped")));
                    }
                },
                State::Sending { conn, send } => {
                    let conn = *conn;
                    if let Err(error) = ready!(send.poll_ready(cx)) {
                        // Nothing of this request was written.
                        if let Err(done) = self.reject(conn, Rejection::NotSent, &error) {
                            return done;
                        }
                        continue;
                    }
                    match send.send_request(self.request.h2_head(), false) {
                        Err(error) => {
                            if let Err(done) = self.reject(conn, Rejection::NotSent, &error) {
                                return done;
                            }
                        }
                        Ok((response, mut request)) => {
                            // Capacity for the body is reserved by h2 as the window allows.
                            match request.send_data(self.request.body.clone(), true) {
                                Ok(()) => self.state = State::Responding { conn, response, request },
                                Err(error) => {
                                    request.send_reset(h2::Reason::CANCEL);
                                    if let Err(done) = self.reject(conn, Rejection::MaybeProcessed, &error) {
                                        return done;
                                    }
                                }
                            }
                        }
                    }
                }
                State::Responding { conn, response, .. } => {
                    let conn = *conn;
                    match ready!(Pin::new(response).poll(cx)) {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let body = response.into_body();
                            let State::Responding { request, .. } =
                                std::mem::replace(&mut self.state, State::Ended)
                            else {
                                unreachable!("state checked by the enclosing match");
                            };
                            self.state = State::Receiving { body, request, chunk: Bytes::new() };
                            // Past the point of retrying: the request need not be kept.
                            self.request.release();
                            return Poll::Ready(Step::Head(status));
                        }
                        Err(error) => {
                            if let Err(done) = self.reject(conn, rejection_of_response_error(&error), &error)
                            {
                                return done;
                            }
                        }
                    }
                }
                State::Receiving { body, chunk, .. } => {
                    return match ready!(body.poll_data(cx)) {
                        Some(Ok(data)) => {
                            *chunk = data;
                            Poll::Ready(Step::Data)
                        }
                        Some(Err(error)) => self.fail(failure_of(&error)),
                        None => {
                            self.finish();
                            Poll::Ready(Step::End)
                        }
                    };
                }
                State::Ended => return Poll::Pending,
            }
        }
    }

    /// Gives the last chunk's bytes back to the flow-control window.
    pub fn consumed(&mut self) {
        if let State::Receiving { body, chunk, .. } = &mut self.state {
            if !chunk.is_empty() {
                let _ = body.flow_control().release_capacity(chunk.len());
                *chunk = Bytes::new();
            }
        }
    }

    /// The request got no response head: the pool decides (core's retry rule)
    /// whether it goes out again, and answers on a new lease. `Err` carries the
    /// failure when the pool is gone.
    fn reject(&mut self, conn: ConnId, rejection: Rejection, error: &h2::Error) -> Result<(), Poll<Step>> {
        if error.is_go_away() {
            let _ = self.pool.unbounded_send(PoolMsg::GoAway(conn));
        }
        let (reply, lease) = oneshot::channel();
        let message =
            PoolMsg::Rejected { stream: self.id, retire: None, rejection, failure: failure_of(error), reply };
        if self.pool.unbounded_send(message).is_err() {
            self.state = State::Ended;
            return Err(Poll::Ready(Step::Failed(unavailable("the backend pool stopped"))));
        }
        self.state = State::Acquiring(lease);
        Ok(())
    }

    fn fail(&mut self, failure: BackendFailure) -> Poll<Step> {
        self.finish();
        Poll::Ready(Step::Failed(failure))
    }

    /// Stops the request: RST_STREAM(CANCEL) when it is on the wire.
    pub fn cancel(&mut self) {
        match &mut self.state {
            State::Responding { request, .. } | State::Receiving { request, .. } => {
                request.send_reset(h2::Reason::CANCEL)
            }
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

/// What an error before the response head says about the request. Only a
/// refusal, or a graceful GOAWAY (h2 fails with it exactly the streams above the
/// GOAWAY's last stream id), proves the server did not process it; a GOAWAY with
/// an error code fails every stream, processed or not, so it proves nothing.
fn rejection_of_response_error(error: &h2::Error) -> Rejection {
    if error.is_reset() && error.reason() == Some(h2::Reason::REFUSED_STREAM) {
        Rejection::RefusedStream
    } else if error.is_go_away() && error.is_remote() && error.reason() == Some(h2::Reason::NO_ERROR) {
        Rejection::GoAway
    } else {
        Rejection::MaybeProcessed
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
