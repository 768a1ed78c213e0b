//! The OpenAI-compatible backend: connections (TLS, HTTP/2 or HTTP/1.1), the pool
//! that shares them, and the per-stream request/response state.

mod conn;
mod h1;
mod h2;
mod pool;
pub mod tls;

use std::task::{Context, Poll};

use bytes::Bytes;
use futures_channel::oneshot;
use handoff_core::config::OpenAiConfig;
use handoff_core::handoff::Handoff;
use handoff_core::http1::{self, BackendRequest};
use handoff_core::metrics::WorkerMetrics;
use handoff_core::openai;
use handoff_core::pool::{Pool, PoolConfig, StreamId};
use handoff_core::stream::{BackendFailure, FailureKind};
use http::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};

use crate::runtime::Runtime;
use pool::{Connector, PoolMsg, PoolSender};

pub use conn::Endpoint;

pub(crate) fn unavailable(message: &str) -> BackendFailure {
    BackendFailure { kind: FailureKind::Unavailable, message: message.to_owned() }
}

/// An adapter's event before its data is borrowed back out (see `poll_event`).
pub(crate) enum Step {
    Head(u16),
    Data,
    End,
    Failed(BackendFailure),
}

/// What a backend stream did next, for the driver to feed to the stream machine.
#[derive(Debug)]
pub enum BackendEvent<'a> {
    /// The response status (1xx heads filtered out).
    Head(u16),
    /// Body bytes; [`BackendStream::consumed`] once the machine has taken them.
    Data(&'a [u8]),
    /// The body ended cleanly.
    End,
    Failed(BackendFailure),
}

/// What every request to the backend shares, built once.
struct Target {
    uri: http::Uri,
    authority: String,
    path: String,
    authorization: Option<HeaderValue>,
    api_key: Option<String>,
    default_model: String,
    user_from_user_id: bool,
    include_usage: bool,
    /// The backend's configured headers, as given (HTTP/1.1) and parsed (HTTP/2).
    extra_headers: Vec<(String, String)>,
    extra_h2: Vec<(http::HeaderName, HeaderValue)>,
    /// What the backend was configured with (its kind and paths decide each
    /// request's body and path).
    config: OpenAiConfig,
    scheme: &'static str,
}

impl Target {
    fn request_defaults(&self) -> openai::RequestDefaults<'_> {
        openai::RequestDefaults {
            default_model: &self.default_model,
            user_from_user_id: self.user_from_user_id,
            include_usage: self.include_usage,
        }
    }
}

/// One stream's request: its body and the per-request headers.
pub struct Request {
    target: std::sync::Arc<Target>,
    /// A passthrough request's own path and URI; `None`: the target's.
    path: Option<(String, http::Uri)>,
    body: Bytes,
    test_pattern: Option<HeaderValue>,
    /// The handoff's `request_id`, sent as `X-Request-Id`.
    request_id: Option<HeaderValue>,
}

impl Request {
    fn h2_head(&self) -> http::Request<()> {
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() =
            self.path.as_ref().map_or_else(|| self.target.uri.clone(), |(_, uri)| uri.clone());
        let headers = request.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(authorization) = &self.target.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        if let Some(pattern) = &self.test_pattern {
            headers.insert("x-test-pattern", pattern.clone());
        }
        if let Some(id) = &self.request_id {
            headers.insert("x-request-id", id.clone());
        }
        for (name, value) in &self.target.extra_h2 {
            headers.append(name.clone(), value.clone());
        }
        request
    }

    /// Frees the body and per-request header once the request can no longer be
    /// retried; a long stream holds only what it still needs.
    fn release(&mut self) {
        self.body = Bytes::new();
        self.test_pattern = None;
        self.request_id = None;
    }

    fn h1_bytes(&self) -> Bytes {
        let head = http1::request_head(&BackendRequest {
            authority: &self.target.authority,
            path: self.path.as_ref().map_or(self.target.path.as_str(), |(path, _)| path.as_str()),
            api_key: self.target.api_key.as_deref(),
            test_pattern: self.test_pattern.as_ref().and_then(|v| v.to_str().ok()),
            request_id: self.request_id.as_ref().and_then(|v| v.to_str().ok()),
            content_length: self.body.len(),
            extra_headers: &self.target.extra_headers,
        });
        let mut out = bytes::BytesMut::with_capacity(head.len() + self.body.len());
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.body);
        out.freeze()
    }
}

/// The shared backend client: cheap to clone into every stream.
pub struct OpenAiBackend<R: Runtime> {
    pool: PoolSender<R>,
    target: std::sync::Arc<Target>,
    http2: bool,
}

impl<R: Runtime> Clone for OpenAiBackend<R> {
    fn clone(&self) -> Self {
        OpenAiBackend { pool: self.pool.clone(), target: self.target.clone(), http2: self.http2 }
    }
}

#[derive(Debug)]
pub struct BackendSetupError(pub String);

impl std::fmt::Display for BackendSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendSetupError {}

impl<R: Runtime> OpenAiBackend<R> {
    /// Builds the TLS config and starts the pool's task (its counters kept apart).
    pub fn start(runtime: &R, config: &OpenAiConfig, pool: PoolConfig) -> Result<Self, BackendSetupError> {
        Self::start_counted(runtime, config, pool, std::sync::Arc::default())
    }

    /// [`OpenAiBackend::start`], the pool reporting to the worker's `metrics`
    /// after every pool event.
    pub fn start_counted(
        runtime: &R,
        config: &OpenAiConfig,
        pool: PoolConfig,
        metrics: std::sync::Arc<WorkerMetrics>,
    ) -> Result<Self, BackendSetupError> {
        let base = &config.base;
        let tls = if base.tls {
            let alpn: &[&[u8]] = if config.http2 { &[b"h2"] } else { &[b"http/1.1"] };
            let tls = tls::client_config(config.extra_ca.as_deref(), config.insecure_tls, alpn)
                .map_err(|e| BackendSetupError(format!("backend TLS: {e}")))?;
            Some(tls)
        } else {
            None
        };
        let endpoint = Endpoint::new(&base.host, base.port, tls, pool.tcp_keepalive)
            .map_err(|e| BackendSetupError(format!("backend endpoint: {e}")))?
            .over_unix(base.unix.clone());
        let scheme = if base.tls { "https" } else { "http" };
        let path = base.completions_path();
        let uri: http::Uri = format!("{scheme}://{}{path}", base.authority())
            .parse()
            .map_err(|e| BackendSetupError(format!("backend URL: {e}")))?;
        let authorization = match &config.api_key {
            Some(key) => {
                let mut value = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                    BackendSetupError("OPENAI_API_KEY has characters not allowed in a header".into())
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        // Validated by core (RFC 9110 tokens, clean values); refused here only if
        // the http crate disagrees, which stops the start rather than dropping one.
        let extra_h2 = config
            .headers
            .iter()
            .map(|(name, value)| {
                let parsed =
                    (http::HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str()));
                match parsed {
                    (Ok(name), Ok(value)) => Ok((name, value)),
                    _ => Err(BackendSetupError(format!(
                        "backend header {name:?} is not a valid HTTP/2 header"
                    ))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let target = Target {
            uri,
            authority: base.authority(),
            path,
            authorization,
            api_key: config.api_key.clone(),
            default_model: config.default_model.clone(),
            user_from_user_id: config.user_from_user_id,
            include_usage: config.include_usage,
            extra_headers: config.headers.clone(),
            extra_h2,
            config: config.clone(),
            scheme,
        };
        let connector = Connector {
            endpoint,
            http2: config.http2,
            max_streams: pool.max_streams_per_connection,
            stream_window: pool.h2_stream_window,
            connection_window: pool.h2_connection_window,
            connect_timeout: pool.connect_timeout,
            h1_drain: h1::DrainBounds { timeout: pool.h1_drain_timeout, max_bytes: pool.h1_drain_max_bytes },
        };
        let sender = pool::start(runtime, Pool::new(pool), connector, metrics);
        Ok(OpenAiBackend { pool: sender, target: std::sync::Arc::new(target), http2: config.http2 })
    }

    /// Ends the pool's task: waiting streams fail, connections close.
    pub fn shutdown(&self) {
        let _ = self.pool.unbounded_send(PoolMsg::Shutdown);
    }

    /// What this backend was configured with.
    pub fn config(&self) -> &OpenAiConfig {
        &self.target.config
    }

    /// Whether its events go to the client unchanged (core's
    /// `Source::Passthrough`) rather than decoded as chat chunks.
    pub fn is_passthrough(&self) -> bool {
        self.target.config.passthrough.is_some()
    }

    /// Asks the pool for a backend stream for this handoff; the request goes out
    /// as soon as a connection has room.
    pub fn open_stream(&self, id: StreamId, handoff: &Handoff) -> BackendStream<R> {
        let (path, body) = match (&self.target.config.passthrough, &handoff.body) {
            (Some(_), Some(body)) => {
                let path = handoff_core::backends::request_path(&self.target.config, handoff);
                let uri = format!("{}://{}{path}", self.target.scheme, self.target.authority);
                // Core checked the path's characters; a URI the http crate still
                // refuses fails the stream rather than going elsewhere.
                let Ok(uri) = http::Uri::try_from(uri) else {
                    let failure = BackendFailure {
                        kind: FailureKind::Protocol,
                        message: format!("passthrough path {path:?} is not a valid URI"),
                    };
                    return BackendStream::Failed(Box::new(failure));
                };
                (Some((path, uri)), Bytes::copy_from_slice(body.get().as_bytes()))
            }
            _ => (None, openai::request_body(handoff, &self.target.request_defaults())),
        };
        let request = Request {
            target: self.target.clone(),
            path,
            body,
            // Validated by handoff decoding; a value h2 still rejects is dropped.
            test_pattern: handoff.test_pattern.as_deref().and_then(|p| HeaderValue::from_str(p).ok()),
            request_id: handoff.request_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok()),
        };
        let (reply, lease) = oneshot::channel();
        if self.pool.unbounded_send(PoolMsg::Acquire { stream: id, reply }).is_err() {
            return BackendStream::Failed(Box::new(unavailable("the backend pool stopped")));
        }
        if self.http2 {
            BackendStream::H2(Box::new(h2::H2Stream::new(id, self.pool.clone(), request, lease)))
        } else {
            BackendStream::H1(Box::new(h1::H1Stream::new(id, self.pool.clone(), request, lease)))
        }
    }
}

/// A stream's backend side.
pub enum BackendStream<R: Runtime> {
    /// The mock script (paced by the stream machine itself), or nothing left.
    None,
    /// Could not even be queued; reported to the machine on the first poll.
    Failed(Box<BackendFailure>),
    H2(Box<h2::H2Stream<R>>),
    H1(Box<h1::H1Stream<R>>),
}

impl<R: Runtime> BackendStream<R> {
    /// What the backend did next. Each `Ready` is one event; body bytes stay
    /// borrowed until [`BackendStream::consumed`].
    pub fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<BackendEvent<'_>> {
        if let BackendStream::Failed(_) = self {
            if let BackendStream::Failed(failure) = std::mem::replace(self, BackendStream::None) {
                return Poll::Ready(BackendEvent::Failed(*failure));
            }
        }
        match self {
            BackendStream::None | BackendStream::Failed(_) => Poll::Pending,
            BackendStream::H2(stream) => stream.poll_event(cx),
            BackendStream::H1(stream) => stream.poll_event(cx),
        }
    }

    /// The machine has taken the last `Data`: the HTTP/2 flow-control credit goes
    /// back to the server, an HTTP/1.1 read buffer moves on.
    pub fn consumed(&mut self) {
        match self {
            BackendStream::H2(stream) => stream.consumed(),
            BackendStream::H1(stream) => stream.consumed(),
            BackendStream::None | BackendStream::Failed(_) => {}
        }
    }

    pub fn cancel(&mut self) {
        match self {
            BackendStream::H2(stream) => stream.cancel(),
            BackendStream::H1(stream) => stream.cancel(),
            BackendStream::None | BackendStream::Failed(_) => {}
        }
    }
}
