//! The front's I/O: accept, read one request (bounded in size and time), then either
//! answer it or hand the connection to the daemon and forget it.

use std::future::Future;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use handoff_core::http1::{parse_request_head, ParsedRequest, RequestHead};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{timeout, timeout_at, Instant};

use super::handoff_data::{user_from_cookie, HandoffFields, USER_COOKIE};
use super::respond::{error, response};
use super::route::{body_length, route, Refusal, Route};
use super::stats::{Count, Stats};
use super::{FrontConfig, DEMO_PAGE};
use crate::load::handoff;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;

/// A bound front, ready to [`serve`].
#[derive(Debug)]
pub struct Front {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: FrontConfig,
    stats: Arc<Stats>,
    /// Numbers request ids.
    requests: AtomicU64,
    /// Seeds the ids of new users (randomly keyed per process).
    user_ids: std::collections::hash_map::RandomState,
}

/// Binds the listening socket (port 0 picks a free one: see [`Front::local_addr`]).
pub async fn bind(config: FrontConfig) -> io::Result<Front> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| io::Error::new(e.kind(), format!("listening on {}: {e}", config.listen)))?;
    let local_addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        config,
        stats: Arc::new(Stats::default()),
        requests: AtomicU64::new(0),
        user_ids: std::collections::hash_map::RandomState::new(),
    });
    Ok(Front { listener, local_addr, shared })
}

impl Front {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.stats)
    }
}

/// Serves until `stop` completes. At most `max_connections` are read at once; the
/// rest wait in the backlog.
pub async fn serve(front: Front, stop: impl Future<Output = ()>) -> io::Result<()> {
    let Front { listener, shared, .. } = front;
    let slots = Arc::new(Semaphore::new(shared.config.max_connections.max(1)));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return Ok(()),
            permit = Arc::clone(&slots).acquire_owned() => permit.map_err(io::Error::other)?,
        };
        let accepted = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // EMFILE and friends pass; the next accept may succeed.
            Err(e) => {
                eprintln!("handoff-front: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.stats.add(Count::Connection);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(e) = connection(&shared, stream).await {
                eprintln!("handoff-front: {peer}: {e}");
            }
            drop(permit);
        });
    }
}

/// What reading a request came to.
enum Read {
    Request {
        head: RequestHead,
        body: Vec<u8>,
    },
    Refused(u16, String),
    /// The client closed or stayed silent before sending a head: nothing to answer.
    Gone,
}

async fn connection(shared: &Shared, mut stream: TcpStream) -> io::Result<()> {
    let config = &shared.config;
    let deadline = Instant::now() + config.read_timeout;
    let (head, body) = match read_request(&mut stream, config, deadline).await? {
        Read::Request { head, body } => (head, body),
        Read::Refused(status, message) => return refuse(shared, stream, Refusal { status, message }).await,
        Read::Gone => return Ok(()),
    };
    match route(&head, &body) {
        Route::Page => {
            shared.stats.add(Count::Page);
            let cookie = match user_from_cookie(head.header("cookie")) {
                Some(_) => None,
                None => {
                    Some(format!("{USER_COOKIE}={}; Path=/; SameSite=Strict; HttpOnly", new_user_id(shared)))
                }
            };
            let headers: Vec<(&str, &str)> = cookie.iter().map(|c| ("Set-Cookie", c.as_str())).collect();
            let page = response(200, "text/html; charset=utf-8", &headers, DEMO_PAGE.as_bytes());
            answer(config, stream, &page).await
        }
        Route::Stats => {
            let body = serde_json::to_vec(&shared.stats.snapshot()).map_err(io::Error::other)?;
            answer(config, stream, &response(200, "application/json", &[], &body)).await
        }
        Route::Stream(fields) => {
            shared.stats.add(Count::StreamRequest);
            hand_off(shared, stream, &head, &fields).await
        }
        Route::Refused(refusal) => refuse(shared, stream, refusal).await,
    }
}

async fn read_request(stream: &mut TcpStream, config: &FrontConfig, deadline: Instant) -> io::Result<Read> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let (head, head_len) = loop {
        match parse_request_head(&buf, config.max_head) {
            ParsedRequest::Complete { head, len } => break (head, len),
            ParsedRequest::Refused(status) => return Ok(Read::Refused(status, refused_head(status))),
            ParsedRequest::Incomplete => {}
            // A result a newer core added: refuse it like a malformed head rather
            // than read on, which could wait for a head that never parses.
            _ => return Ok(Read::Refused(400, refused_head(400))),
        }
        match timeout_at(deadline, read_some(stream, &mut buf)).await {
            Err(_elapsed) if buf.is_empty() => return Ok(Read::Gone),
            Err(_elapsed) => {
                return Ok(Read::Refused(408, "the request head did not arrive in time".to_owned()))
            }
            Ok(Ok(0)) => return Ok(Read::Gone),
            Ok(result) => result?,
        };
    };
    let length = match body_length(&head, config.max_body) {
        Ok(length) => length,
        Err(refusal) => return Ok(Read::Refused(refusal.status, refusal.message)),
    };
    let mut body = buf.split_off(head_len);
    if body.len() < length && head.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        timeout_at(deadline, stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n"))
            .await
            .map_err(|_| io::Error::other("writing 100 Continue timed out"))??;
    }
    while body.len() < length {
        match timeout_at(deadline, read_some(stream, &mut body)).await {
            Err(_elapsed) => {
                return Ok(Read::Refused(408, "the request body did not arrive in time".to_owned()))
            }
            Ok(Ok(0)) => return Ok(Read::Gone),
            Ok(result) => result?,
        };
    }
    // Bytes past the declared body (a pipelined request) are not served.
    body.truncate(length);
    Ok(Read::Request { head, body })
}

async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(READ_CHUNK);
    stream.read_buf(buf).await
}

fn refused_head(status: u16) -> String {
    match status {
        411 => "request bodies are taken with Content-Length only".to_owned(),
        431 => "the request head is too large".to_owned(),
        505 => "only HTTP/1.1 is served".to_owned(),
        _ => "malformed request head".to_owned(),
    }
}

async fn refuse(shared: &Shared, stream: TcpStream, refusal: Refusal) -> io::Result<()> {
    shared.stats.add(Count::Refused);
    let body = error(refusal.status, &refusal.message, "invalid_request_error", "front_refused", None);
    answer(&shared.config, stream, &body).await
}

/// Gives the connection to the daemon as mod_socket_handoff does: one message with
/// the handoff data and the socket attached. On success our descriptor closes when
/// `stream` drops; the daemon holds its own and writes the whole response.
async fn hand_off(
    shared: &Shared,
    stream: TcpStream,
    head: &RequestHead,
    fields: &HandoffFields,
) -> io::Result<()> {
    let config = &shared.config;
    let request_id =
        format!("front-{}-{}", std::process::id(), shared.requests.fetch_add(1, Ordering::Relaxed) + 1);
    let user = user_from_cookie(head.header("cookie"));
    let data = match fields.to_json(&request_id, user) {
        Ok(data) => data,
        Err(too_large) => {
            let message =
                format!("the handoff data would be {} bytes, over the daemon's limit", too_large.len);
            return refuse(shared, stream, Refusal::new(413, message)).await;
        }
    };
    let sent = async {
        let socket = handoff::connect(&config.socket, config.connect).await?;
        handoff::send(&socket, &data, stream.as_fd(), config.send_timeout, config.connect.socket_type).await
    }
    .await;
    match sent {
        Ok(()) => {
            shared.stats.add(Count::HandedOff);
            eprintln!("handoff-front: {} {} handed off as {request_id}", head.method, head.path());
            Ok(())
        }
        Err(e) => {
            shared.stats.add(Count::DaemonUnreachable);
            eprintln!("handoff-front: {request_id}: the daemon is unreachable: {e}");
            let message = "the streaming daemon is not reachable";
            let body = error(
                503,
                message,
                "service_unavailable",
                "daemon_unreachable",
                Some(config.retry_after_secs),
            );
            answer(config, stream, &body).await
        }
    }
}

/// Writes one of our own responses and closes gracefully: shut down writing, then
/// drain what the client still sends for the linger bound, so unread request bytes
/// never turn the close into a reset that destroys the response.
async fn answer(config: &FrontConfig, mut stream: TcpStream, bytes: &[u8]) -> io::Result<()> {
    timeout(config.write_timeout, async {
        stream.write_all(bytes).await?;
        stream.shutdown().await
    })
    .await
    .map_err(|_| io::Error::other(format!("writing the response took over {:?}", config.write_timeout)))??;
    let linger_end = Instant::now() + config.linger;
    let mut sink = [0u8; READ_CHUNK];
    while let Ok(Ok(n)) = timeout_at(linger_end, stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
    }
    Ok(())
}

fn new_user_id(shared: &Shared) -> String {
    let n = shared.requests.fetch_add(1, Ordering::Relaxed);
    format!("u{:016x}", shared.user_ids.hash_one((n, std::process::id())))
}
