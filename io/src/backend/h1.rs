//! One backend stream over its own HTTP/1.1 connection (kept alive between
//! streams when the response allows).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_channel::oneshot;
use handoff_core::http1::{BodyDecoder, BodyEvent, ResponseHeadParser};
use handoff_core::pool::{ConnId, Rejection, StreamId};
use handoff_core::stream::{BackendFailure, FailureKind};
use tokio::io::{AsyncRead, AsyncWrite};

use super::conn::BackendIo;
use super::pool::{Lease, PoolMsg, PoolSender};
use super::{unavailable, BackendEvent, Request, Step};
use crate::runtime::Runtime;

/// Read granularity; also the most body bytes handed to the machine at once.
const READ_CHUNK: usize = 4096;

enum State<R: Runtime> {
    Acquiring(oneshot::Receiver<Result<Lease<R>, BackendFailure>>),
    Writing { conn: ConnId, io: BackendIo<R::Tcp>, out: Bytes, written_any: bool },
    Head { conn: ConnId, io: BackendIo<R::Tcp>, buf: BytesMut, parser: ResponseHeadParser },
    Body { conn: ConnId, io: BackendIo<R::Tcp>, buf: BytesMut, decoder: BodyDecoder, keep_alive: bool },
    Ended,
}

pub struct H1Stream<R: Runtime> {
    id: StreamId,
    state: State<R>,
    pool: PoolSender<R>,
    request: Request,
    /// The last `Data` event: its place in the body buffer, and how far the
    /// buffer moves on once the machine has taken it.
    data: std::ops::Range<usize>,
    advance: usize,
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
        H1Stream {
            id,
            state: State::Acquiring(lease),
            pool,
            request,
            data: 0..0,
            advance: 0,
            cancelled: false,
        }
    }

    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<BackendEvent<'_>> {
        let step = ready!(self.poll_step(cx));
        Poll::Ready(match step {
            Step::Head(status) => BackendEvent::Head(status),
            Step::Data => match &self.state {
                State::Body { buf, .. } => BackendEvent::Data(buf.get(self.data.clone()).unwrap_or_default()),
                _ => BackendEvent::Data(&[]),
            },
            Step::End => BackendEvent::End,
            Step::Failed(failure) => BackendEvent::Failed(failure),
        })
    }

    /// The machine took the last `Data`: the read buffer moves past it.
    pub fn consumed(&mut self) {
        if self.advance > 0 {
            if let State::Body { buf, .. } = &mut self.state {
                buf.advance(self.advance.min(buf.len()));
            }
            self.advance = 0;
            self.data = 0..0;
        }
    }

    /// Makes progress until one event is ready (at most one read's worth of data).
    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<Step> {
        self.consumed();
        loop {
            match &mut self.state {
                State::Acquiring(lease) => match ready!(Pin::new(lease).poll(cx)) {
                    Ok(Ok(Lease::H1 { conn, io })) => {
                        let out = self.request.h1_bytes();
                        self.state = State::Writing { conn, io, out, written_any: false };
                    }
                    Ok(Ok(Lease::H2 { .. })) => {
                        return self
                            .fail(unavailable("pool handed an HTTP/2 lease to an HTTP/1.1 stream"), None)
                    }
                    Ok(Err(failure)) => {
                        self.state = State::Ended;
                        return Poll::Ready(Step::Failed(failure));
                    }
                    Err(oneshot::Canceled) => {
                        self.state = State::Ended;
                        return Poll::Ready(Step::Failed(unavailable("the backend pool stopped")));
                    }
                },
                State::Writing { conn, io, out, written_any } => {
                    let conn = *conn;
                    while !out.is_empty() {
                        let failed = match ready!(Pin::new(&mut *io).poll_write(cx, out)) {
                            Ok(0) => "the backend closed the connection".to_owned(),
                            Ok(written) => {
                                out.advance(written);
                                *written_any = true;
                                continue;
                            }
                            Err(error) => format!("writing the request: {error}"),
                        };
                        // Only a request of which nothing was written is known unprocessed.
                        let rejection =
                            if *written_any { Rejection::MaybeProcessed } else { Rejection::NotSent };
                        return self.reject(cx, conn, rejection, failed);
                    }
                    if let Err(error) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                        let message = format!("writing the request: {error}");
                        return self.reject(cx, conn, Rejection::MaybeProcessed, message);
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
                            return Poll::Ready(Step::Head(head.status));
                        }
                        Ok(None) => {}
                        Err(error) => {
                            return self.fail(failure(FailureKind::Protocol, error.to_string()), Some(conn));
                        }
                    }
                    match ready!(read_more(io, buf, cx)) {
                        Ok(0) if buf.is_empty() => {
                            // The request was written: the server may have acted on it.
                            let message = "the backend closed the connection before responding".to_owned();
                            return self.reject(cx, conn, Rejection::MaybeProcessed, message);
                        }
                        Ok(0) => {
                            let failure =
                                failure(FailureKind::Protocol, "backend closed the connection mid-head");
                            return self.fail(failure, Some(conn));
                        }
                        Ok(_) => {}
                        Err(error) => {
                            let failure = failure(FailureKind::Reset, format!("reading: {error}"));
                            return self.fail(failure, Some(conn));
                        }
                    }
                }
                State::Body { conn, io, buf, decoder, keep_alive } => {
                    let conn = *conn;
                    if !buf.is_empty() {
                        match decoder.decode(buf) {
                            Ok((consumed, BodyEvent::Data(data))) => {
                                let start = (data.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
                                self.data = start..start + data.len();
                                self.advance = consumed;
                                return Poll::Ready(Step::Data);
                            }
                            Ok((consumed, BodyEvent::NeedData)) => buf.advance(consumed),
                            Ok((consumed, BodyEvent::End)) => {
                                buf.advance(consumed);
                                let reusable = *keep_alive && buf.is_empty();
                                return self.end(reusable);
                            }
                            Err(error) => {
                                return self
                                    .fail(failure(FailureKind::Protocol, error.to_string()), Some(conn));
                            }
                            // An event a newer core added: this reader cannot tell where the
                            // body stands, so fail the stream as unreadable and drop the
                            // connection rather than guess.
                            Ok(_) => {
                                let failure = failure(FailureKind::Protocol, "unknown body decoder event");
                                return self.fail(failure, Some(conn));
                            }
                        }
                    } else if let Ok((_, BodyEvent::End)) = decoder.decode(&[]) {
                        let keep_alive = *keep_alive;
                        return self.end(keep_alive);
                    }
                    match ready!(read_more(io, buf, cx)) {
                        Ok(0) => {
                            return match decoder.finish() {
                                Ok(()) => self.end(false),
                                Err(error) => {
                                    self.fail(failure(FailureKind::Reset, error.to_string()), Some(conn))
                                }
                            };
                        }
                        Ok(_) => {}
                        Err(error) => {
                            return self
                                .fail(failure(FailureKind::Reset, format!("reading: {error}")), Some(conn));
                        }
                    }
                }
                State::Ended => return Poll::Pending,
            }
        }
    }

    /// The body ended: the connection goes back to the pool when reusable.
    fn end(&mut self, reusable: bool) -> Poll<Step> {
        if let State::Body { conn, io, .. } = std::mem::replace(&mut self.state, State::Ended) {
            let (reusable, broken) = if reusable { (Some((conn, io)), None) } else { (None, Some(conn)) };
            let _ = self.pool.unbounded_send(PoolMsg::Finished { stream: self.id, reusable, broken });
        }
        Poll::Ready(Step::End)
    }

    /// The request got no response head and its connection is unusable: the
    /// pool decides (core's retry rule) whether it goes out again on another.
    fn reject(
        &mut self,
        cx: &mut Context<'_>,
        conn: ConnId,
        rejection: Rejection,
        message: String,
    ) -> Poll<Step> {
        let (reply, lease) = oneshot::channel();
        let failure = BackendFailure { kind: FailureKind::Unavailable, message };
        let sent = self.pool.unbounded_send(PoolMsg::Rejected {
            stream: self.id,
            retire: Some(conn),
            rejection,
            failure,
            reply,
        });
        if sent.is_err() {
            self.state = State::Ended;
            return Poll::Ready(Step::Failed(unavailable("the backend pool stopped")));
        }
        // Dropping the old state closes the dead connection.
        self.state = State::Acquiring(lease);
        // Poll again soon so the new lease registers this task's waker.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn fail(&mut self, failure: BackendFailure, broken: Option<ConnId>) -> Poll<Step> {
        if !matches!(std::mem::replace(&mut self.state, State::Ended), State::Ended) {
            let _ = self.pool.unbounded_send(PoolMsg::Finished { stream: self.id, reusable: None, broken });
        }
        Poll::Ready(Step::Failed(failure))
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
        self.consumed();
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
/// closed instead of kept (core's `PoolConfig`).
#[derive(Debug, Clone, Copy)]
pub struct DrainBounds {
    pub timeout: std::time::Duration,
    pub max_bytes: usize,
}

/// Reads a leftover body to its end; the connection comes back to the pool when
/// it ended cleanly with nothing after it, and is closed otherwise.
pub async fn drain<R: Runtime>(runtime: R, leftover: Leftover<R>, bounds: DrainBounds, pool: PoolSender<R>) {
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
                // Err, or an event a newer core added: the body's end is not known, so
                // the connection is not reused.
                Err(_) | Ok(_) => return Poll::Ready(false),
            }
        }
        match ready!(read_more(&mut io, &mut buf, cx)) {
            Ok(0) | Err(_) => return Poll::Ready(false),
            Ok(read) => {
                read_total += read;
                if read_total > bounds.max_bytes {
                    return Poll::Ready(false);
                }
            }
        }
    });
    let deadline = runtime.now() + bounds.timeout;
    let clean = crate::runtime::with_deadline(&runtime, deadline, body_end).await == Some(true);
    let message = if clean {
        PoolMsg::Finished { stream, reusable: Some((conn, io)), broken: None }
    } else {
        PoolMsg::Finished { stream, reusable: None, broken: Some(conn) }
    };
    let _ = pool.unbounded_send(message);
}

/// True when an idle kept-alive connection can take a request: the server has
/// neither closed it nor sent anything. Checked without waiting, before the
/// request's first byte, so a dead connection costs no retry of a request the
/// server may have seen.
pub fn is_reusable<T: AsyncRead + AsyncWrite + Unpin>(io: &mut BackendIo<T>) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut byte = [0u8; 1];
    let mut probe = tokio::io::ReadBuf::new(&mut byte);
    Pin::new(io).poll_read(&mut cx, &mut probe).is_pending()
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
