//! One backend stream over its own HTTP/1.1 connection (kept alive between
//! streams when the response allows).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_channel::oneshot;
use handoff_core::http1::{BodyDecoder, BodyEvent, ResponseHeadParser};
use handoff_core::pool::{ConnId, StreamId};
use handoff_core::stream::{BackendFailure, FailureKind, Input, Stream};
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::BackendIo;
use super::pool::{Lease, PoolMsg, PoolSender};
use super::{unavailable, Request};
use crate::runtime::Runtime;

/// Read granularity; also the most body bytes handed to the machine at once.
const READ_CHUNK: usize = 4096;

enum State<R: Runtime> {
    Acquiring(oneshot::Receiver<Result<Lease<R>, BackendFailure>>),
    Writing { conn: ConnId, io: BackendIo<R::Tcp>, out: Bytes },
    Head { conn: ConnId, io: BackendIo<R::Tcp>, buf: BytesMut, parser: ResponseHeadParser },
    Body { conn: ConnId, io: BackendIo<R::Tcp>, buf: BytesMut, decoder: BodyDecoder, keep_alive: bool },
    Ended,
}

pub struct H1Stream<R: Runtime> {
    id: StreamId,
    state: State<R>,
    pool: PoolSender<R>,
    request: Request,
    refused_once: bool,
    /// Cancelled (client gone, error): the connection is closed, never drained.
    cancelled: bool,
}

impl<R: Runtime> H1Stream<R> {
    pub fn new(
        id: StreamId,
        pool: PoolSender<R>,
        request: Request,
        lease: oneshot::Receiver<Result<Lease<R>, BackendFailure>>,
    ) -> Self {
        H1Stream { id, state: State::Acquiring(lease), pool, request, refused_once: false, cancelled: false }
    }

    pub fn is_active(&self) -> bool {
        !matches!(self.state, State::Ended)
    }

    /// Makes progress; feeds at most one read's worth of input to `machine`.
    pub fn poll_into(&mut self, cx: &mut Context<'_>, machine: &mut Stream) -> Poll<()> {
        loop {
            match &mut self.state {
                State::Acquiring(lease) => match ready!(Pin::new(lease).poll(cx)) {
                    Ok(Ok(Lease::H1 { conn, io })) => {
                        let out = self.request.h1_bytes();
                        self.state = State::Writing { conn, io, out };
                    }
                    Ok(Ok(Lease::H2 { .. })) => {
                        return self.fail(
                            machine,
                            unavailable("pool handed an HTTP/2 lease to an HTTP/1.1 stream"),
                            None,
                        )
                    }
                    Ok(Err(failure)) => {
                        self.state = State::Ended;
                        machine.handle_input(Instant::now(), Input::BackendFailed(failure));
                        return Poll::Ready(());
                    }
                    Err(oneshot::Canceled) => {
                        self.state = State::Ended;
                        machine.handle_input(
                            Instant::now(),
                            Input::BackendFailed(unavailable("the backend pool stopped")),
                        );
                        return Poll::Ready(());
                    }
                },
                State::Writing { conn, io, out } => {
                    let conn = *conn;
                    while !out.is_empty() {
                        match ready!(Pin::new(&mut *io).poll_write(cx, out)) {
                            Ok(0) => return self.retry(cx, conn, "backend closed the connection", machine),
                            Ok(written) => out.advance(written),
                            Err(error) => {
                                return self.retry(
                                    cx,
                                    conn,
                                    &format!("writing the request: {error}"),
                                    machine,
                                )
                            }
                        }
                    }
                    if let Err(error) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                        return self.retry(cx, conn, &format!("writing the request: {error}"), machine);
                    }
                    let State::Writing { conn, io, .. } = std::mem::replace(&mut self.state, State::Ended)
                    else {
                        unreachable!("state checked by the enclosing match");
                    };
                    let buf = BytesMut::with_capacity(READ_CHUNK);
                    self.state = State::Head { conn, io, buf, parser: ResponseHeadParser::new() };
                }
                State::Head { conn, io, buf, parser } => {
                    let conn = *conn;
                    match parser.parse(buf) {
                        Ok(Some((head, len))) => {
                            buf.advance(len);
                            let State::Head { io, buf, .. } =
                                std::mem::replace(&mut self.state, State::Ended)
                            else {
                                unreachable!("state checked by the enclosing match");
                            };
                            self.state = State::Body {
                                conn,
                                io,
                                buf,
                                decoder: BodyDecoder::new(head.framing),
                                keep_alive: head.keep_alive,
                            };
                            self.request.release();
                            machine.handle_input(Instant::now(), Input::BackendHead { status: head.status });
                            return Poll::Ready(());
                        }
                        Ok(None) => {}
                        Err(error) => {
                            let failure = failure(FailureKind::Protocol, error.to_string());
                            return self.fail(machine, failure, Some(conn));
                        }
                    }
                    match ready!(read_more(io, buf, cx)) {
                        Ok(0) if buf.is_empty() => {
                            // A kept-alive connection the server had already closed.
                            return self.retry(
                                cx,
                                conn,
                                "backend closed the connection before responding",
                                machine,
                            );
                        }
                        Ok(0) => {
                            let failure =
                                failure(FailureKind::Protocol, "backend closed the connection mid-head");
                            return self.fail(machine, failure, Some(conn));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            let failure = failure(FailureKind::Reset, format!("reading: {error}"));
                            return self.fail(machine, failure, Some(conn));
                        }
                    }
                }
                State::Body { conn, io, buf, decoder, keep_alive } => {
                    let conn = *conn;
                    if !buf.is_empty() {
                        match decoder.decode(buf) {
                            Ok((consumed, BodyEvent::Data(data))) => {
                                machine.handle_input(Instant::now(), Input::BackendData(data));
                                buf.advance(consumed);
                                return Poll::Ready(());
                            }
                            Ok((consumed, BodyEvent::NeedData)) => buf.advance(consumed),
                            Ok((consumed, BodyEvent::End)) => {
                                buf.advance(consumed);
                                let reusable = *keep_alive && buf.is_empty();
                                return self.end(machine, reusable);
                            }
                            Err(error) => {
                                let failure = failure(FailureKind::Protocol, error.to_string());
                                return self.fail(machine, failure, Some(conn));
                            }
                        }
                    } else if let Ok((_, BodyEvent::End)) = decoder.decode(&[]) {
                        let keep_alive = *keep_alive;
                        return self.end(machine, keep_alive);
                    }
                    match ready!(read_more(io, buf, cx)) {
                        Ok(0) => {
                            return match decoder.finish() {
                                Ok(()) => self.end(machine, false),
                                Err(error) => {
                                    let failure = failure(FailureKind::Reset, error.to_string());
                                    self.fail(machine, failure, Some(conn))
                                }
                            };
                        }
                        Ok(_) => {}
                        Err(error) => {
                            let failure = failure(FailureKind::Reset, format!("reading: {error}"));
                            return self.fail(machine, failure, Some(conn));
                        }
                    }
                }
                State::Ended => return Poll::Pending,
            }
        }
    }

    /// The body ended: the connection goes back to the pool when reusable.
    fn end(&mut self, machine: &mut Stream, reusable: bool) -> Poll<()> {
        if let State::Body { conn, io, .. } = std::mem::replace(&mut self.state, State::Ended) {
            let (reusable, broken) = if reusable { (Some((conn, io)), None) } else { (None, Some(conn)) };
            let _ = self.pool.unbounded_send(PoolMsg::Finished { stream: self.id, reusable, broken });
        }
        machine.handle_input(Instant::now(), Input::BackendEnd);
        Poll::Ready(())
    }

    /// A request that failed before any response byte goes back to the pool once.
    fn retry(&mut self, cx: &mut Context<'_>, conn: ConnId, why: &str, machine: &mut Stream) -> Poll<()> {
        if !self.refused_once {
            self.refused_once = true;
            let _ = self.pool.unbounded_send(PoolMsg::Finished {
                stream: self.id,
                reusable: None,
                broken: Some(conn),
            });
            let (reply, lease) = oneshot::channel();
            if self.pool.unbounded_send(PoolMsg::Acquire { stream: self.id, refused: false, reply }).is_ok() {
                self.state = State::Acquiring(lease);
                // Poll again soon so the new lease registers this task's waker.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        self.fail(machine, unavailable(why), Some(conn))
    }

    fn fail(&mut self, machine: &mut Stream, failure: BackendFailure, broken: Option<ConnId>) -> Poll<()> {
        if !matches!(std::mem::replace(&mut self.state, State::Ended), State::Ended) {
            let _ = self.pool.unbounded_send(PoolMsg::Finished { stream: self.id, reusable: None, broken });
        }
        machine.handle_input(Instant::now(), Input::BackendFailed(failure));
        Poll::Ready(())
    }

    /// Stops the request by dropping its connection.
    pub fn cancel(&mut self) {
        self.cancelled = true;
        let broken = match &self.state {
            State::Writing { conn, .. } | State::Head { conn, .. } | State::Body { conn, .. } => Some(*conn),
            _ => None,
        };
        if !matches!(std::mem::replace(&mut self.state, State::Ended), State::Ended) {
            let _ = self.pool.unbounded_send(PoolMsg::Finished { stream: self.id, reusable: None, broken });
        }
    }
}

impl<R: Runtime> Drop for H1Stream<R> {
    /// A stream decided before its body ended (the upstream's `[DONE]` comes before
    /// the chunked terminator) leaves the rest to be read, so the connection can be
    /// kept alive; anything else closes it.
    fn drop(&mut self) {
        if !self.cancelled {
            if let State::Body { keep_alive: true, .. } = self.state {
                if let State::Body { conn, io, buf, decoder, .. } =
                    std::mem::replace(&mut self.state, State::Ended)
                {
                    let leftover = Leftover { stream: self.id, conn, io, buf, decoder };
                    if self.pool.unbounded_send(PoolMsg::Drain(leftover)).is_ok() {
                        return;
                    }
                }
            }
        }
        self.cancel();
    }
}

/// The unread rest of a response whose stream is already decided.
pub struct Leftover<R: Runtime> {
    stream: StreamId,
    conn: ConnId,
    io: BackendIo<R::Tcp>,
    buf: BytesMut,
    decoder: BodyDecoder,
}

/// How long, and how much, a leftover body may take before its connection is
/// closed instead of kept.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const DRAIN_MAX_BYTES: usize = 1 << 20;

/// Reads a leftover body to its end; the connection comes back to the pool when
/// it ended cleanly with nothing after it, and is closed otherwise.
pub async fn drain<R: Runtime>(runtime: R, leftover: Leftover<R>, pool: PoolSender<R>) {
    let Leftover { stream, conn, mut io, mut buf, mut decoder } = leftover;
    let mut read_total = 0usize;
    let body_end = std::future::poll_fn(|cx| loop {
        loop {
            match decoder.decode(&buf) {
                Ok((consumed, BodyEvent::Data(_))) => buf.advance(consumed),
                Ok((consumed, BodyEvent::NeedData)) => {
                    buf.advance(consumed);
                    break;
                }
                Ok((consumed, BodyEvent::End)) => {
                    buf.advance(consumed);
                    return Poll::Ready(buf.is_empty());
                }
                Err(_) => return Poll::Ready(false),
            }
        }
        match ready!(read_more(&mut io, &mut buf, cx)) {
            Ok(0) | Err(_) => return Poll::Ready(false),
            Ok(read) => {
                read_total += read;
                if read_total > DRAIN_MAX_BYTES {
                    return Poll::Ready(false);
                }
            }
        }
    });
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let clean = crate::runtime::with_deadline(&runtime, deadline, body_end).await == Some(true);
    let message = if clean {
        PoolMsg::Finished { stream, reusable: Some((conn, io)), broken: None }
    } else {
        PoolMsg::Finished { stream, reusable: None, broken: Some(conn) }
    };
    let _ = pool.unbounded_send(message);
}

fn failure(kind: FailureKind, message: impl Into<String>) -> BackendFailure {
    BackendFailure { kind, message: message.into() }
}

fn read_more<T: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BackendIo<T>,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    buf.reserve(READ_CHUNK);
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}
