//! mock-llm: an OpenAI-compatible streaming backend for tests and benchmarks.
//!
//! `POST …/chat/completions` with `"stream": true` answers `200 text/event-stream` with
//! `chat.completion.chunk` events: a role chunk, one chunk per token, a chunk with
//! `finish_reason`, then `data: [DONE]`. The `X-Test-Pattern` request header selects
//! other behaviours (see [`script`]). HTTP/1.1 and h2c share one plain port (told apart
//! by the HTTP/2 preface); with TLS, ALPN picks `h2` or `http/1.1`.
//!
//! From a test (inside a tokio runtime):
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use handoff_bench::mockllm::{Counter, MockLlm, MockLlmConfig};
//! use std::time::Duration;
//! let mock = MockLlm::start(MockLlmConfig { tls: true, ..MockLlmConfig::default() }).await?;
//! let base = mock.base_url(); // "https://127.0.0.1:PORT/v1"
//! let ca_pem = mock.ca_cert_pem(); // Some(PEM) with TLS
//! // ... point the client at `base`, trusting `ca_pem` ...
//! mock.recorder().wait_for(Counter::StreamsCompleted, 1, Duration::from_secs(10)).await?;
//! let request = mock.recorder().last_request();
//! mock.shutdown().await;
//! # Ok(()) }
//! ```

mod http1;
mod http2;
mod recorder;
mod render;
mod request;
pub mod script;
mod server;
pub mod stats;
mod stream;
mod tls;
mod tokens;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use recorder::{Counter, Protocol, RecordedRequest, Recorder, WaitTimeout};
pub use render::{CACHED_TOKENS, DONE_EVENT, ERROR_EVENT, PROMPT_TOKENS};
pub use request::MAX_REQUEST_BODY;
pub use script::{Ending, Script};
pub use tls::TlsSetupError;
pub use tokens::{ContentKind, Token, LONG_TOKEN_BYTES};

/// How a mock server runs.
#[derive(Debug, Clone)]
pub struct MockLlmConfig {
    /// Where to listen; port 0 picks a free one (see [`MockLlm::local_addr`]).
    pub listen: SocketAddr,
    /// Serve HTTP/2 and HTTP/1.1 over TLS (ALPN) with a generated CA.
    pub tls: bool,
    /// Pause before each content chunk.
    pub token_delay: Duration,
    /// Content chunks per stream (a request's `max_tokens` may lower it).
    pub tokens: u32,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_streams: u32,
    /// How many recent requests the recorder keeps (0: none, for benchmarks).
    pub recorded_requests: usize,
    /// How much of each recorded request body is kept.
    pub recorded_body_bytes: usize,
    /// The listen backlog.
    pub backlog: u32,
}

impl Default for MockLlmConfig {
    fn default() -> Self {
        MockLlmConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: false,
            token_delay: Duration::from_millis(20),
            tokens: 20,
            max_streams: 100,
            recorded_requests: 1024,
            recorded_body_bytes: 64 * 1024,
            backlog: 4096,
        }
    }
}

/// Why the server did not start.
#[derive(Debug)]
pub enum StartError {
    /// The listen address could not be bound.
    Bind {
        addr: SocketAddr,
        source: io::Error,
    },
    Tls(TlsSetupError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Bind { addr, source } => write!(f, "mock-llm could not listen on {addr}: {source}"),
            StartError::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind { source, .. } => Some(source),
            StartError::Tls(e) => Some(e),
        }
    }
}

/// A running mock server. Dropping it (or [`MockLlm::shutdown`]) stops accepting and
/// closes every connection.
#[derive(Debug)]
pub struct MockLlm {
    local_addr: SocketAddr,
    is_tls: bool,
    ca_pem: Option<String>,
    recorder: Arc<Recorder>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MockLlm {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(config: MockLlmConfig) -> Result<MockLlm, StartError> {
        let addr = config.listen;
        let bind_error = |source| StartError::Bind { addr, source };
        let socket =
            if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(bind_error)?;
        socket.set_reuseaddr(true).map_err(bind_error)?;
        socket.bind(addr).map_err(bind_error)?;
        let listener = socket.listen(config.backlog).map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;

        let (tls, ca_pem) = if config.tls {
            let generated = tls::generate().map_err(StartError::Tls)?;
            (Some(TlsAcceptor::from(generated.config)), Some(generated.ca_pem))
        } else {
            (None, None)
        };
        let recorder = Arc::new(Recorder::new(config.recorded_requests, config.recorded_body_bytes));
        let shared = Arc::new(server::Shared {
            defaults: request::StreamDefaults { tokens: config.tokens, token_delay: config.token_delay },
            max_streams: config.max_streams,
            recorder: Arc::clone(&recorder),
            tls,
        });
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = tokio::spawn(server::run(listener, shared, shutdown_rx));
        Ok(MockLlm {
            local_addr,
            is_tls: config.tls,
            ca_pem,
            recorder,
            shutdown: Some(shutdown),
            task: Some(task),
        })
    }

    /// The bound address (the real port when the config asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The OpenAI-style API base, `url()` + `/v1`; requests go to `{base}/chat/completions`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The generated CA certificate (PEM) when serving TLS.
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Counters and recorded requests.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Stops accepting, closes every connection and waits until the server task ended.
    pub async fn shutdown(mut self) {
        self.shutdown.take();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        // Dropping the sender is the shutdown signal; the task then closes everything.
        self.shutdown.take();
    }
}
