//! Scripted backends for the fake network: an HTTP/2 server (h2's own) and a
//! tiny HTTP/1.1 responder, run as tasks on the fake executor. Each records the
//! requests it saw and how much of each answer it got onto the wire, so a test
//! can tell a retried request from one sent once, and a stalled stream from a
//! flowing one.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use handoff_io::runtime::Runtime;
use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};

use super::{lock, FakeRuntime, Gate, ServerConn};

/// One request a server saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The connection it came on (0 = the first the daemon opened).
    pub conn: usize,
    /// Its body (HTTP/2) or its bytes, head and body (HTTP/1.1).
    pub request: Vec<u8>,
    /// Body bytes of the answer written so far.
    pub sent: usize,
    /// The whole answer was written.
    pub done: bool,
}

/// What a server saw, in arrival order.
#[derive(Clone, Default)]
pub struct ServerLog(Arc<Mutex<Vec<Seen>>>);

impl ServerLog {
    pub fn requests(&self) -> usize {
        lock(&self.0).len()
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.0).clone()
    }

    pub fn get(&self, nth: usize) -> Seen {
        lock(&self.0).get(nth).cloned().unwrap_or_default()
    }

    fn record(&self, conn: usize) -> usize {
        let mut seen = lock(&self.0);
        seen.push(Seen { conn, ..Seen::default() });
        seen.len() - 1
    }

    fn update(&self, nth: usize, change: impl FnOnce(&mut Seen)) {
        if let Some(seen) = lock(&self.0).get_mut(nth) {
            change(seen);
        }
    }
}

/// How an HTTP/2 server treats one connection.
pub enum H2Conn {
    /// Answers each request as the script says.
    Serve,
    /// Once the gate opens: the handshake, then at once GOAWAY(last stream id 0,
    /// NO_ERROR) and close. Nothing sent on the connection is processed.
    GoAwayWhen(Gate),
    /// Serves as `Serve` until `freeze` opens, then goes silent without closing
    /// (a vanished host): nothing more is read or answered, PINGs included, until
    /// `release` opens and the connection is dropped.
    FreezeWhen { freeze: Gate, release: Gate },
    /// Serves as `Serve`; once the gate opens, shuts down gracefully: GOAWAY
    /// (h2's two-step one, with a PING between), the streams it holds run to
    /// their end, then it closes.
    DrainWhen(Gate),
}

/// How an HTTP/2 server answers one request (numbered across connections).
pub enum H2Reply {
    /// 200, this body as the flow-control windows allow, then the end.
    Body(Bytes),
    /// 200 and this body, then the stream stays open until the client resets it.
    Hold(Bytes),
    /// RST_STREAM before any head.
    Reset(Reason),
    /// The whole connection dropped without a word once the request was read.
    DropConnection,
    /// 200 and `first`; once the gate opens, `rest` and the end.
    Then { first: Bytes, gate: Gate, rest: Bytes },
}

type Script<T> = Arc<dyn Fn(usize) -> T + Send + Sync>;

/// Serves every connection the daemon opens from now on with h2's server.
pub fn h2(
    runtime: &FakeRuntime,
    conn: impl Fn(usize) -> H2Conn + Send + Sync + 'static,
    reply: impl Fn(usize) -> H2Reply + Send + Sync + 'static,
) -> ServerLog {
    let log = ServerLog::default();
    let reply: Script<H2Reply> = Arc::new(reply);
    let server_log = log.clone();
    runtime.serve(64 * 1024, move |accepted| match conn(accepted.index) {
        H2Conn::Serve => {
            let runtime = accepted.runtime.clone();
            runtime.spawn(serve_h2(accepted, server_log.clone(), Arc::clone(&reply)))
        }
        H2Conn::GoAwayWhen(gate) => {
            let runtime = accepted.runtime.clone();
            runtime.spawn(go_away_h2(accepted.io, gate))
        }
        H2Conn::DrainWhen(gate) => {
            let runtime = accepted.runtime.clone();
            runtime.spawn(drain_h2(accepted, server_log.clone(), Arc::clone(&reply), gate))
        }
        H2Conn::FreezeWhen { freeze, release } => {
            let runtime = accepted.runtime.clone();
            let serving = serve_h2_until(accepted, server_log.clone(), Arc::clone(&reply), freeze, release);
            runtime.spawn(serving)
        }
    });
    log
}

/// A peer that accepts every connection and never reads or writes, through
/// pipes of `buffer` bytes: smaller than the HTTP/2 preface, the daemon's
/// handshake can never complete.
pub fn silent(runtime: &FakeRuntime, buffer: usize) {
    runtime.serve(buffer, |accepted| accepted.runtime.clone().park(accepted.io));
}

async fn serve_h2(accepted: ServerConn, log: ServerLog, reply: Script<H2Reply>) {
    let ServerConn { io, index, runtime } = accepted;
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((request, respond))) = connection.accept().await {
        if !answer(&runtime, &log, &reply, index, request, respond) {
            return;
        }
    }
}

/// Starts the answer `reply` scripts for one request; false: drop the connection.
fn answer(
    runtime: &FakeRuntime,
    log: &ServerLog,
    reply: &Script<H2Reply>,
    index: usize,
    request: http::Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> bool {
    let nth = log.record(index);
    match reply(nth) {
        H2Reply::Body(body) => {
            runtime.spawn(answer_h2(log.clone(), nth, request.into_body(), respond, body, Rest::End))
        }
        H2Reply::Hold(body) => {
            runtime.spawn(answer_h2(log.clone(), nth, request.into_body(), respond, body, Rest::Hold))
        }
        H2Reply::Then { first, gate, rest } => {
            let rest = Rest::When(gate, rest);
            runtime.spawn(answer_h2(log.clone(), nth, request.into_body(), respond, first, rest))
        }
        H2Reply::Reset(reason) => respond.send_reset(reason),
        // Dropping the connection drops the pipe: the daemon reads EOF.
        H2Reply::DropConnection => return false,
    }
    true
}

async fn serve_h2_until(
    accepted: ServerConn,
    log: ServerLog,
    reply: Script<H2Reply>,
    freeze: Gate,
    release: Gate,
) {
    let ServerConn { io, index, runtime } = accepted;
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    loop {
        let next = std::future::poll_fn(|cx| {
            if freeze.poll_open(cx).is_ready() {
                return Poll::Ready(None);
            }
            connection.poll_accept(cx).map(Some)
        })
        .await;
        match next {
            Some(Some(Ok((request, respond)))) => {
                if !answer(&runtime, &log, &reply, index, request, respond) {
                    return;
                }
            }
            Some(_) => return,
            // Frozen: the connection is held, never polled, until released.
            None => break,
        }
    }
    release.wait().await;
    drop(connection);
}

async fn drain_h2(accepted: ServerConn, log: ServerLog, reply: Script<H2Reply>, gate: Gate) {
    let ServerConn { io, index, runtime } = accepted;
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    let mut draining = false;
    loop {
        let next = std::future::poll_fn(|cx| {
            if !draining && gate.poll_open(cx).is_ready() {
                connection.graceful_shutdown();
                draining = true;
            }
            connection.poll_accept(cx)
        })
        .await;
        match next {
            Some(Ok((request, respond))) => {
                if !answer(&runtime, &log, &reply, index, request, respond) {
                    return;
                }
            }
            // Drained (or failed): every stream it took has ended.
            _ => return,
        }
    }
}

async fn go_away_h2(io: DuplexStream, gate: Gate) {
    gate.wait().await;
    let Ok(mut connection) = h2::server::handshake(io).await else {
        return;
    };
    connection.abrupt_shutdown(Reason::NO_ERROR);
    while let Some(Ok(_)) = connection.accept().await {}
}

async fn answer_h2(
    log: ServerLog,
    nth: usize,
    mut request: RecvStream,
    mut respond: SendResponse<Bytes>,
    body: Bytes,
    rest: Rest,
) {
    // The request body, bounded by what a test sends (a few hundred bytes).
    let mut received = Vec::new();
    while let Some(Ok(chunk)) = request.data().await {
        let _ = request.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    log.update(nth, |seen| seen.request = received);
    let response = http::Response::builder()
        .status(200)
        .header("content-type", "text/event-stream")
        .body(())
        .unwrap_or_default();
    let Ok(mut stream) = respond.send_response(response, false) else {
        return;
    };
    if send_within_windows(&log, nth, &mut stream, body).await.is_err() {
        return;
    }
    match rest {
        Rest::End => {}
        Rest::Hold => {
            // Open until the daemon cancels.
            let _ = std::future::poll_fn(|cx| stream.poll_reset(cx)).await;
            return;
        }
        Rest::When(gate, rest) => {
            gate.wait().await;
            if send_within_windows(&log, nth, &mut stream, rest).await.is_err() {
                return;
            }
        }
    }
    if stream.send_data(Bytes::new(), true).is_ok() {
        log.update(nth, |seen| seen.done = true);
    }
}

/// What follows the first part of an answer.
enum Rest {
    End,
    /// Nothing: the stream stays open until the client resets it.
    Hold,
    /// This, once the gate opens, then the end.
    When(Gate, Bytes),
}

/// Writes `body` only as fast as the client's windows let it, as a real server
/// does, counting what went out.
async fn send_within_windows(
    log: &ServerLog,
    nth: usize,
    stream: &mut SendStream<Bytes>,
    mut body: Bytes,
) -> Result<(), h2::Error> {
    while !body.is_empty() {
        stream.reserve_capacity(body.len());
        let capacity = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(capacity) => capacity?,
            None => return Err(h2::Error::from(Reason::CANCEL)),
        };
        if capacity == 0 {
            continue;
        }
        let part = body.split_to(capacity.min(body.len()));
        let len = part.len();
        stream.send_data(part, false)?;
        log.update(nth, |seen| seen.sent += len);
    }
    Ok(())
}

/// How an HTTP/1.1 responder answers one request (numbered across connections).
pub enum H1Reply {
    /// 200 with this body (Content-Length), keeping the connection alive.
    Respond(Bytes),
    /// The connection closed once the request was read, with no answer.
    Close,
}

/// Serves every connection the daemon opens from now on with a scripted
/// HTTP/1.1 responder. A connection closes when the daemon closes it, when the
/// script says, or (idle between requests) when `close_idle(conn)` names a gate
/// that opens: then as a TCP peer's close looks (see [`close_like_tcp`]).
pub fn h1(
    runtime: &FakeRuntime,
    close_idle: impl Fn(usize) -> Option<Gate> + Send + Sync + 'static,
    reply: impl Fn(usize) -> H1Reply + Send + Sync + 'static,
) -> ServerLog {
    let log = ServerLog::default();
    let reply: Script<H1Reply> = Arc::new(reply);
    let server_log = log.clone();
    runtime.serve(64 * 1024, move |accepted| {
        let gate = close_idle(accepted.index);
        let runtime = accepted.runtime.clone();
        runtime.spawn(serve_h1(accepted, gate, server_log.clone(), Arc::clone(&reply)));
    });
    log
}

async fn serve_h1(accepted: ServerConn, close_idle: Option<Gate>, log: ServerLog, reply: Script<H1Reply>) {
    let ServerConn { mut io, index, .. } = accepted;
    let mut buf = Vec::new();
    loop {
        let len = loop {
            if let Some(len) = complete_request(&buf) {
                break len;
            }
            let idle = buf.is_empty();
            let read = std::future::poll_fn(|cx| {
                if let Some(gate) = close_idle.as_ref().filter(|_| idle) {
                    if gate.poll_open(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                }
                let mut chunk = [0u8; 4096];
                let mut chunk_buf = ReadBuf::new(&mut chunk);
                match Pin::new(&mut io).poll_read(cx, &mut chunk_buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Some(chunk_buf.filled().to_vec())),
                    Poll::Ready(Err(_)) => Poll::Ready(Some(Vec::new())),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
            match read {
                None => return close_like_tcp(io).await,
                // The daemon closed the connection.
                Some(bytes) if bytes.is_empty() => return,
                Some(bytes) => buf.extend_from_slice(&bytes),
            }
        };
        let request: Vec<u8> = buf.drain(..len).collect();
        let nth = log.record(index);
        log.update(nth, |seen| seen.request = request);
        match reply(nth) {
            H1Reply::Respond(body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if io.write_all(head.as_bytes()).await.is_err() || io.write_all(&body).await.is_err() {
                    return;
                }
                log.update(nth, |seen| {
                    seen.sent = body.len();
                    seen.done = true;
                });
            }
            H1Reply::Close => return,
        }
    }
}

/// What a peer's `close()` looks like from the other end of a TCP connection:
/// reads see EOF, but writes still succeed for a while (the bytes are
/// discarded, never answered) until the reset comes back. A daemon that writes
/// a request on such a connection has lost it.
async fn close_like_tcp(mut io: DuplexStream) {
    if io.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    while let Ok(read) = tokio::io::AsyncReadExt::read(&mut io, &mut sink).await {
        if read == 0 {
            return;
        }
    }
}

/// The length of the first whole request in `buf` (head and Content-Length body).
fn complete_request(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let body_len = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    (buf.len() >= head_end + body_len).then_some(head_end + body_len)
}
