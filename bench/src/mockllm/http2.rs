//! HTTP/2 (h2c or TLS) connections: one task per connection driving `h2`, one task per
//! stream playing its reply. Stream tasks live in the connection's `JoinSet`, so
//! dropping the connection task (server shutdown) ends them too.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{header, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::recorder::{ConnectionGuard, Protocol, RecordedRequest, StreamOutcome};
use super::request::{decide, MAX_REQUEST_BODY};
use super::server::Shared;
use super::stream::{play, ClientGone, ResponseSink};

/// Serves one HTTP/2 connection until the client closes it and its streams have ended.
pub(crate) async fn serve<T>(io: T, protocol: Protocol, shared: Arc<Shared>, connection: ConnectionGuard)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = h2::server::Builder::new().max_concurrent_streams(shared.max_streams).handshake(io);
    let Ok(mut h2) = handshake.await else {
        return;
    };
    let connection = Arc::new(connection);
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            accepted = poll_fn(|cx| h2.poll_accept(cx)) => match accepted {
                Some(Ok((request, respond))) => {
                    let stream = serve_stream(request, respond, protocol, Arc::clone(&shared), Arc::clone(&connection));
                    streams.spawn(stream);
                }
                // A connection error or the client's GOAWAY: no more streams.
                Some(Err(_)) | None => break,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
    // Streams already accepted still need the connection driven to finish (or to learn
    // that it died, which ends them as cancelled).
    loop {
        tokio::select! {
            _ = poll_fn(|cx| h2.poll_closed(cx)) => break,
            joined = streams.join_next() => if joined.is_none() { return },
        }
    }
    drop(h2);
    while streams.join_next().await.is_some() {}
}

async fn serve_stream(
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    protocol: Protocol,
    shared: Arc<Shared>,
    connection: Arc<ConnectionGuard>,
) {
    let guard = connection.open_stream();
    let recorder = connection.recorder();
    let (parts, mut body) = request.into_parts();
    let mut sink = H2Sink { respond: Some(respond), stream: None };
    let body = match read_body(&mut body, &mut sink).await {
        Ok(body) => body,
        Err(ClientGone) => return guard.finish(StreamOutcome::Cancelled),
    };
    let method = parts.method.as_str();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    if recorder.is_recording_requests() {
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect();
        let kept = body.len().min(recorder.body_capacity());
        recorder.record_request(RecordedRequest {
            protocol,
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
            body: body.slice(..kept),
            body_len: body.len(),
        });
    }
    let pattern = parts.headers.get("x-test-pattern").and_then(|v| v.to_str().ok());
    let reply = decide(shared.defaults, guard.number(), method, path, pattern, &body);
    guard.finish(play(reply, &mut sink).await);
}

/// Reads the whole request body, releasing flow-control capacity as it goes. A body over
/// the limit is cut there; `decide` answers `413` for it.
async fn read_body(body: &mut RecvStream, sink: &mut H2Sink) -> Result<Bytes, ClientGone> {
    let mut collected = BytesMut::new();
    loop {
        let data = tokio::select! {
            data = body.data() => data,
            _ = poll_fn(|cx| sink.poll_reset(cx)) => return Err(ClientGone),
        };
        match data {
            None => return Ok(collected.freeze()),
            Some(Ok(data)) => {
                let _ = body.flow_control().release_capacity(data.len());
                if collected.len() <= MAX_REQUEST_BODY {
                    collected.extend_from_slice(&data);
                }
            }
            Some(Err(_)) => return Err(ClientGone),
        }
    }
}

/// The response side of one HTTP/2 stream: before the head (`respond`) or after it
/// (`stream`).
struct H2Sink {
    respond: Option<SendResponse<Bytes>>,
    stream: Option<SendStream<Bytes>>,
}

impl H2Sink {
    /// Ready when the client reset the stream or the connection died.
    fn poll_reset(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let polled = match (&mut self.stream, &mut self.respond) {
            (Some(stream), _) => stream.poll_reset(cx),
            (None, Some(respond)) => respond.poll_reset(cx),
            (None, None) => return std::task::Poll::Ready(()),
        };
        polled.map(|_| ())
    }

    fn send_head(&mut self, response: Response<()>, end_of_stream: bool) -> Result<(), ClientGone> {
        let mut respond = self.respond.take().ok_or(ClientGone)?;
        self.stream = Some(respond.send_response(response, end_of_stream).map_err(|_| ClientGone)?);
        Ok(())
    }

    fn stream(&mut self) -> Result<&mut SendStream<Bytes>, ClientGone> {
        self.stream.as_mut().ok_or(ClientGone)
    }

    /// Reserves `wanted` bytes of send capacity and waits until some is assigned;
    /// returns how much. A reset (or a stream that can no longer send) is the client
    /// gone.
    async fn wait_for_capacity(&mut self, wanted: usize) -> Result<usize, ClientGone> {
        let stream = self.stream()?;
        stream.reserve_capacity(wanted);
        poll_fn(|cx| {
            let capacity = stream.capacity();
            if capacity > 0 {
                return Poll::Ready(Ok(capacity));
            }
            match stream.poll_capacity(cx) {
                Poll::Ready(Some(Ok(capacity))) if capacity > 0 => return Poll::Ready(Ok(capacity)),
                Poll::Ready(None | Some(Err(_))) => return Poll::Ready(Err(ClientGone)),
                Poll::Ready(Some(Ok(_))) | Poll::Pending => {}
            }
            stream.poll_reset(cx).map(|_| Err(ClientGone))
        })
        .await
    }
}

impl ResponseSink for H2Sink {
    async fn idle_until(&mut self, deadline: Instant) -> Result<(), ClientGone> {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => Ok(()),
            _ = poll_fn(|cx| self.poll_reset(cx)) => Err(ClientGone),
        }
    }

    async fn send_error(&mut self, status: u16, body: Bytes) -> Result<(), ClientGone> {
        let mut response = Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len());
        if status == 429 || status == 503 {
            response = response.header(header::RETRY_AFTER, "1");
        }
        let response = response.body(()).map_err(|_| ClientGone)?;
        self.send_head(response, false)?;
        self.stream()?.send_data(body, true).map_err(|_| ClientGone)
    }

    async fn send_stream_head(&mut self) -> Result<(), ClientGone> {
        let response = Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache")
            .body(())
            .map_err(|_| ClientGone)?;
        self.send_head(response, false)
    }

    /// Sends only as much as the client's flow-control windows admit, waiting for
    /// the rest, as a server with bounded buffers does. h2 would queue the excess
    /// without bound: the script would run to its end at once and a client that
    /// stopped reading would never be seen (nor counted as cancelled when it gives up).
    async fn send_event(&mut self, mut event: Bytes, is_last: bool) -> Result<(), ClientGone> {
        if event.is_empty() {
            return self.stream()?.send_data(event, is_last).map_err(|_| ClientGone);
        }
        while !event.is_empty() {
            let capacity = self.wait_for_capacity(event.len()).await?;
            let part = event.split_to(capacity.min(event.len()));
            self.stream()?.send_data(part, is_last && event.is_empty()).map_err(|_| ClientGone)?;
        }
        Ok(())
    }

    async fn end(&mut self) -> Result<(), ClientGone> {
        self.stream()?.send_data(Bytes::new(), true).map_err(|_| ClientGone)
    }

    fn reset(&mut self) {
        match (&mut self.stream, &mut self.respond) {
            (Some(stream), _) => stream.send_reset(Reason::INTERNAL_ERROR),
            (None, Some(respond)) => respond.send_reset(Reason::INTERNAL_ERROR),
            (None, None) => {}
        }
    }
}
