//! The pool's owner: one task that holds [`handoff_core::pool::Pool`], carries out
//! its commands (open connections, hand out leases, fail streams) and feeds it
//! what the connections and streams report. Streams talk to it over a channel, so
//! the pool machine is never shared or locked. Whether a failed request is sent
//! again is the pool's rule (`Event::StreamRejected`); streams only report what
//! the transport saw. The task ends on [`PoolMsg::Shutdown`], dropping every
//! connection handle so the connections close.

use std::collections::HashMap;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use handoff_core::metrics::WorkerMetrics;
use handoff_core::pool::Rejection;

use bytes::Bytes;
use futures_channel::{mpsc, oneshot};
use futures_core::Stream as _;
use handoff_core::pool::{Command, ConnId, Event, Pool, StreamId};
use handoff_core::stream::BackendFailure;

use super::conn::{BackendIo, Endpoint};
use super::h1;
use crate::runtime::{with_deadline, Runtime, Timer};

/// What a stream gets to send its request on.
pub enum Lease<R: Runtime> {
    H2 { conn: ConnId, send: h2::client::SendRequest<Bytes> },
    H1 { conn: ConnId, io: BackendIo<R::Tcp> },
}

pub type LeaseReply<R> = oneshot::Sender<Result<Lease<R>, BackendFailure>>;

pub enum PoolMsg<R: Runtime> {
    /// A stream wants a lease.
    Acquire {
        stream: StreamId,
        reply: LeaseReply<R>,
    },
    /// The stream's request got no response head; the pool answers on `reply`
    /// with a new lease (a retry) or the failure. `retire`: a connection that
    /// must take no more streams (an HTTP/1.1 connection that broke).
    Rejected {
        stream: StreamId,
        retire: Option<ConnId>,
        rejection: Rejection,
        failure: BackendFailure,
        reply: LeaseReply<R>,
    },
    /// The daemon is done: fail what waits, drop every connection, end the task.
    Shutdown,
    /// The stream is over; an HTTP/1.1 connection comes back when it can be reused.
    Finished {
        stream: StreamId,
        reusable: Option<(ConnId, BackendIo<R::Tcp>)>,
        broken: Option<ConnId>,
    },
    /// A stream saw GOAWAY on this connection.
    GoAway(ConnId),
    /// An HTTP/1.1 stream is decided but its response body has not ended: read
    /// the rest, then reuse or close the connection.
    Drain(h1::Leftover<R>),
    Connection {
        conn: ConnId,
        event: ConnEvent<R>,
    },
}

pub enum ConnEvent<R: Runtime> {
    ReadyH2 {
        send: h2::client::SendRequest<Bytes>,
    },
    ReadyH1 {
        io: BackendIo<R::Tcp>,
    },
    PeerSettings(Option<u32>),
    /// The answer to the PING the pool asked for arrived.
    Pong,
    Failed(String),
    Closed(String),
}

/// What the pool asks of a running HTTP/2 connection's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnControl {
    /// Send a PING; report [`ConnEvent::Pong`] when answered.
    Ping,
    /// Drop the connection now (it did not answer a PING in time).
    Abort,
}

type ControlSender = mpsc::UnboundedSender<ConnControl>;

pub type PoolSender<R> = mpsc::UnboundedSender<PoolMsg<R>>;

/// How connections are opened.
#[derive(Clone)]
pub struct Connector {
    pub endpoint: Endpoint,
    pub http2: bool,
    /// Streams the configuration allows per connection (h2's limit until the
    /// server's SETTINGS arrive).
    pub max_streams: u32,
    /// HTTP/2 receive windows (core's `PoolConfig`).
    pub stream_window: u32,
    pub connection_window: u32,
    pub connect_timeout: Duration,
    pub h1_drain: h1::DrainBounds,
}

pub fn start<R: Runtime>(
    runtime: &R,
    pool: Pool,
    connector: Connector,
    metrics: std::sync::Arc<WorkerMetrics>,
) -> PoolSender<R> {
    let (tx, rx) = mpsc::unbounded();
    let owner = PoolOwner {
        runtime: runtime.clone(),
        pool,
        connector,
        tx: tx.clone(),
        waiting: HashMap::new(),
        opening: HashMap::new(),
        h2: HashMap::new(),
        h1_idle: HashMap::new(),
        controls: HashMap::new(),
        metrics,
    };
    runtime.spawn(owner.run(rx));
    tx
}

struct PoolOwner<R: Runtime> {
    runtime: R,
    pool: Pool,
    connector: Connector,
    tx: PoolSender<R>,
    waiting: HashMap<StreamId, LeaseReply<R>>,
    /// Connections being opened: dropping one's sender (the pool forgot the
    /// connection, or this owner ended) abandons the attempt.
    opening: HashMap<ConnId, oneshot::Sender<()>>,
    h2: HashMap<ConnId, h2::client::SendRequest<Bytes>>,
    h1_idle: HashMap<ConnId, BackendIo<R::Tcp>>,
    /// Each connection task's control channel. Dropping one leaves the task to
    /// end by itself (after its streams); only `ConnControl::Abort` ends it early.
    controls: HashMap<ConnId, ControlSender>,
    /// The worker's counters: the pool's gauges are copied in after each event.
    metrics: std::sync::Arc<WorkerMetrics>,
}

impl<R: Runtime> PoolOwner<R> {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PoolMsg<R>>) {
        let runtime = self.runtime.clone();
        let far = move || runtime.now() + Duration::from_secs(3600);
        let mut armed = far();
        let mut timer = self.runtime.timer(armed);
        loop {
            let next = std::future::poll_fn(|cx| {
                if let Poll::Ready(message) = Pin::new(&mut rx).poll_next(cx) {
                    return Poll::Ready(Some(message));
                }
                timer.poll_expired(cx).map(|()| None)
            })
            .await;
            let now = self.runtime.now();
            match next {
                // Every sender is gone, or the daemon said so.
                Some(None) | Some(Some(PoolMsg::Shutdown)) => return self.shut_down(),
                Some(Some(message)) => self.handle(now, message),
                None => self.pool.handle_timeout(now),
            }
            self.carry_out_commands();
            self.metrics.record_pool(&self.pool.stats());
            let deadline = self.pool.poll_timeout().unwrap_or_else(&far);
            if deadline != armed {
                armed = deadline;
                timer.reset(deadline);
            }
        }
    }

    fn handle(&mut self, now: Instant, message: PoolMsg<R>) {
        match message {
            PoolMsg::Acquire { stream, reply } => {
                self.waiting.insert(stream, reply);
                self.pool.handle_event(now, Event::StreamRequested(stream));
            }
            PoolMsg::Rejected { stream, retire, rejection, failure, reply } => {
                tracing::debug!(stream = stream.0, ?rejection, detail = %failure.message, "backend request rejected");
                self.waiting.insert(stream, reply);
                if let Some(conn) = retire {
                    // No new stream may go there; it closes once empty.
                    self.pool.handle_event(now, Event::GoAway(conn));
                }
                self.pool.handle_event(now, Event::StreamRejected { stream, rejection, failure });
            }
            PoolMsg::Shutdown => {}
            PoolMsg::Finished { stream, reusable, broken } => {
                self.waiting.remove(&stream);
                if let Some((conn, io)) = reusable {
                    self.h1_idle.insert(conn, io);
                }
                // The connection goes first: freeing the stream's slot would
                // otherwise hand that dead connection straight to a waiting stream.
                if let Some(conn) = broken {
                    self.pool.handle_event(
                        now,
                        Event::ConnectionClosed { conn, reason: "HTTP/1.1 connection not reusable".into() },
                    );
                }
                self.pool.handle_event(now, Event::StreamFinished(stream));
            }
            PoolMsg::Drain(leftover) => {
                let tx = self.tx.clone();
                let bounds = self.connector.h1_drain;
                self.runtime.spawn(h1::drain(self.runtime.clone(), leftover, bounds, tx));
            }
            PoolMsg::GoAway(conn) => self.pool.handle_event(now, Event::GoAway(conn)),
            PoolMsg::Connection { conn, event } => self.handle_connection(now, conn, event),
        }
    }

    fn handle_connection(&mut self, now: Instant, conn: ConnId, event: ConnEvent<R>) {
        if matches!(event, ConnEvent::ReadyH2 { .. } | ConnEvent::ReadyH1 { .. } | ConnEvent::Failed(_)) {
            self.opening.remove(&conn);
        }
        let event = match event {
            ConnEvent::ReadyH2 { send } => {
                self.h2.insert(conn, send);
                Event::ConnectionReady { conn, peer_max_streams: None }
            }
            ConnEvent::ReadyH1 { io } => {
                self.h1_idle.insert(conn, io);
                Event::ConnectionReady { conn, peer_max_streams: Some(1) }
            }
            ConnEvent::PeerSettings(peer_max_streams) => Event::PeerSettings { conn, peer_max_streams },
            ConnEvent::Pong => Event::Pong(conn),
            ConnEvent::Failed(reason) => {
                self.controls.remove(&conn);
                tracing::warn!(conn = conn.0, %reason, "backend connection failed");
                Event::ConnectionFailed { conn, reason }
            }
            ConnEvent::Closed(reason) => {
                tracing::debug!(conn = conn.0, %reason, "backend connection closed");
                self.controls.remove(&conn);
                self.h2.remove(&conn);
                self.h1_idle.remove(&conn);
                // Only HTTP/2 connections report this, and each of their streams
                // reports for itself (rejected before its head, finished after),
                // often after this message: a server's GOAWAY and its close are
                // read in one poll. Failing the streams here would turn a
                // retryable rejection into a failure, so the connection only
                // drains; the pool forgets it when its last stream has reported.
                Event::GoAway(conn)
            }
        };
        self.pool.handle_event(now, event);
    }

    fn carry_out_commands(&mut self) {
        while let Some(command) = self.pool.poll_command() {
            match command {
                Command::Open(conn) => {
                    let connector = self.connector.clone();
                    let runtime = self.runtime.clone();
                    let tx = self.tx.clone();
                    let (keep, abandoned) = oneshot::channel();
                    self.opening.insert(conn, keep);
                    let (control, controlled) = mpsc::unbounded();
                    self.controls.insert(conn, control);
                    let task = Connection { runtime, connector, conn, tx, abandoned, control: controlled };
                    self.runtime.spawn(task.run());
                }
                Command::Assign { stream, conn } => self.assign(stream, conn),
                Command::Fail { stream, failure } => {
                    if let Some(reply) = self.waiting.remove(&stream) {
                        let _ = reply.send(Err(failure));
                    }
                }
                Command::Close(conn) => {
                    // Dropping the last SendRequest lets h2 close the connection once
                    // its streams are done; an idle HTTP/1.1 connection just closes.
                    self.h2.remove(&conn);
                    self.h1_idle.remove(&conn);
                    self.opening.remove(&conn);
                    self.controls.remove(&conn);
                }
                Command::Ping(conn) => {
                    if let Some(control) = self.controls.get(&conn) {
                        let _ = control.unbounded_send(ConnControl::Ping);
                    }
                }
                Command::Abort(conn) => {
                    tracing::warn!(
                        conn = conn.0,
                        "backend connection did not answer a PING in time; dropped"
                    );
                    self.h2.remove(&conn);
                    self.h1_idle.remove(&conn);
                    self.opening.remove(&conn);
                    if let Some(control) = self.controls.remove(&conn) {
                        let _ = control.unbounded_send(ConnControl::Abort);
                    }
                }
            }
        }
    }

    fn assign(&mut self, stream: StreamId, conn: ConnId) {
        let lease = if let Some(send) = self.h2.get(&conn) {
            Some(Lease::H2 { conn, send: send.clone() })
        } else {
            // An idle HTTP/1.1 connection the server has closed (or that has sent
            // bytes nobody asked for) is found out before any byte is written.
            self.h1_idle
                .remove(&conn)
                .and_then(|mut io| h1::is_reusable(&mut io).then_some(io))
                .map(|io| Lease::H1 { conn, io })
        };
        let now = self.runtime.now();
        let Some(lease) = lease else {
            // The pool believed in a connection we no longer hold: nothing was sent,
            // the connection takes no more streams, and the pool decides the retry.
            let failure = super::unavailable("the backend connection closed before use");
            self.pool.handle_event(now, Event::GoAway(conn));
            self.pool
                .handle_event(now, Event::StreamRejected { stream, rejection: Rejection::NotSent, failure });
            return;
        };
        match self.waiting.remove(&stream) {
            Some(reply) => {
                if let Err(Ok(Lease::H1 { conn, io })) = reply.send(Ok(lease)) {
                    // The client left while waiting: keep the connection.
                    self.h1_idle.insert(conn, io);
                    self.pool.handle_event(now, Event::StreamFinished(stream));
                }
            }
            None => {
                if let Lease::H1 { conn, io } = lease {
                    self.h1_idle.insert(conn, io);
                }
                self.pool.handle_event(now, Event::StreamFinished(stream));
            }
        }
    }
}

impl<R: Runtime> PoolOwner<R> {
    /// Fails every stream still waiting and drops every connection handle: h2
    /// closes a connection once its last handle and stream are gone.
    fn shut_down(&mut self) {
        for (_, reply) in self.waiting.drain() {
            let _ = reply.send(Err(super::unavailable("the daemon is shutting down")));
        }
        self.h2.clear();
        self.h1_idle.clear();
        self.controls.clear();
        // The gauges read zero through the rest of the drain; the totals stay.
        let totals = self.pool.stats();
        self.metrics.record_pool(&handoff_core::pool::PoolStats {
            open: 0,
            connecting: 0,
            queued: 0,
            active_streams: 0,
            ..totals
        });
    }
}

/// One connection's task: opens it, then (HTTP/2) drives it until it closes,
/// sending the PINGs the pool asks for.
struct Connection<R: Runtime> {
    runtime: R,
    connector: Connector,
    conn: ConnId,
    tx: PoolSender<R>,
    /// An attempt the pool abandons (it shut down) ends at once rather than at
    /// its timeout.
    abandoned: oneshot::Receiver<()>,
    control: mpsc::UnboundedReceiver<ConnControl>,
}

impl<R: Runtime> Connection<R> {
    fn report(&self, event: ConnEvent<R>) {
        let _ = self.tx.unbounded_send(PoolMsg::Connection { conn: self.conn, event });
    }

    async fn run(mut self) {
        let connector = &self.connector;
        let deadline = self.runtime.now() + connector.connect_timeout;
        let connect = with_deadline(&self.runtime, deadline, connector.endpoint.connect(&self.runtime));
        let io = match unless_abandoned(&mut self.abandoned, connect).await {
            None => return,
            Some(Some(Ok(io))) => io,
            Some(Some(Err(error))) => {
                return self.report(ConnEvent::Failed(format!("connecting to the backend: {error}")))
            }
            Some(None) => {
                return self.report(ConnEvent::Failed("connecting to the backend timed out".into()))
            }
        };
        if !connector.http2 {
            return self.report(ConnEvent::ReadyH1 { io });
        }
        if let Some(alpn) = io.alpn() {
            if alpn != b"h2" {
                return self.report(ConnEvent::Failed(
                    "the backend did not negotiate HTTP/2 over TLS (set OPENAI_HTTP2_ENABLED=false)".into(),
                ));
            }
        }
        // Flow control that isolates streams: each may have `stream_window` bytes in
        // flight, and the connection window holds every stream's at once.
        let handshake = h2::client::Builder::new()
            .initial_max_send_streams(connector.max_streams as usize)
            .initial_window_size(connector.stream_window)
            .initial_connection_window_size(connector.connection_window)
            .handshake::<_, Bytes>(io);
        let handshake = with_deadline(&self.runtime, deadline, handshake);
        let (send, connection) = match unless_abandoned(&mut self.abandoned, handshake).await {
            None => return,
            Some(Some(Ok(parts))) => parts,
            Some(Some(Err(error))) => {
                return self.report(ConnEvent::Failed(format!("HTTP/2 handshake: {error}")))
            }
            Some(None) => return self.report(ConnEvent::Failed("HTTP/2 handshake timed out".into())),
        };
        self.report(ConnEvent::ReadyH2 { send });
        let reason = self.drive(connection).await;
        self.report(ConnEvent::Closed(reason));
    }

    /// Polls the connection until it ends or the pool aborts it, telling the pool
    /// when the server's stream limit changes (h2 applies SETTINGS while being
    /// polled) and when a PING is answered. Dropping the connection on abort fails
    /// its streams (h2 ends them with an error).
    async fn drive(&mut self, mut connection: h2::client::Connection<BackendIo<R::Tcp>, Bytes>) -> String {
        let mut announced = connection.max_concurrent_send_streams();
        let mut pings = connection.ping_pong();
        let mut ping_out = false;
        let mut controlled = true;
        std::future::poll_fn(|cx| {
            while controlled {
                match Pin::new(&mut self.control).poll_next(cx) {
                    Poll::Ready(Some(ConnControl::Ping)) => {
                        // At most one is out: the pool asks again only after an answer.
                        if let (false, Some(pings)) = (ping_out, pings.as_mut()) {
                            ping_out = pings.send_ping(h2::Ping::opaque()).is_ok();
                        }
                    }
                    Poll::Ready(Some(ConnControl::Abort)) => {
                        return Poll::Ready("dropped: no answer to a PING in time".to_owned())
                    }
                    // The pool let go of the connection: it ends with its streams.
                    Poll::Ready(None) => controlled = false,
                    Poll::Pending => break,
                }
            }
            let polled = Pin::new(&mut connection).poll(cx);
            let current = connection.max_concurrent_send_streams();
            if current != announced {
                announced = current;
                self.report(ConnEvent::PeerSettings(Some(u32::try_from(current).unwrap_or(u32::MAX))));
            }
            if let (true, Some(pings)) = (ping_out, pings.as_mut()) {
                match pings.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        ping_out = false;
                        self.report(ConnEvent::Pong);
                    }
                    // The connection failed; its own poll says how.
                    Poll::Ready(Err(_)) => ping_out = false,
                    Poll::Pending => {}
                }
            }
            polled.map(|result| match result {
                Ok(()) => "closed".to_owned(),
                Err(error) => error.to_string(),
            })
        })
        .await
    }
}

/// Runs `future` unless the pool drops its end of `abandoned` first (`None`).
async fn unless_abandoned<F: Future>(abandoned: &mut oneshot::Receiver<()>, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        Pin::new(&mut *abandoned).poll(cx).map(|_| None)
    })
    .await
}

use std::future::Future;
