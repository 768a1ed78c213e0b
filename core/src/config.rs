//! The one command-line and environment definition both daemons use, and its
//! validation into a [`Config`]. `handoff-tokio` and `handoff-smol` parse the same
//! [`Cli`], so their flags cannot drift apart.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Parser, ValueEnum};

use crate::pool::PoolConfig;
use crate::stream::StreamConfig;

/// Streams per HTTP/2 connection are clamped to this range.
pub const STREAMS_PER_CONNECTION_RANGE: std::ops::RangeInclusive<u32> = 10..=1000;

/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1: 2^31-1).
pub const MAX_H2_WINDOW: u32 = (1 << 31) - 1;

/// The smallest `--client-buffer`: below it a single ordinary event would not fit
/// and the stream would stop reading its backend after every chunk.
pub const MIN_CLIENT_BUFFER: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendKind {
    /// The built-in 18-event script; needs nothing else running.
    Mock,
    /// An OpenAI-compatible chat completions API.
    Openai,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SocketType {
    /// One message per connection (mod_socket_handoff's current protocol).
    Seqpacket,
    /// Byte stream, for module versions older than the switch to SOCK_SEQPACKET.
    Stream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal, never with NO_COLOR).
    Text,
    /// One JSON object per line: timestamp, level, target, message and every field.
    Json,
}

/// Streaming daemon for mod_socket_handoff: takes client sockets handed off by
/// Apache and streams LLM responses to them as Server-Sent Events.
#[derive(Clone, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Unix socket path the Apache module connects to.
    #[arg(short = 's', long, default_value = "/run/streaming-daemon.sock")]
    pub socket: PathBuf,

    /// Socket file permissions, octal.
    #[arg(short = 'm', long, default_value = "0660")]
    pub mode: String,

    /// User that owns the socket file (name or numeric id; default: the daemon's).
    #[arg(long, value_name = "USER")]
    pub socket_owner: Option<String>,

    /// Group of the socket file (name or numeric id), e.g. Apache's `www-data`, so
    /// that with --mode 0660 Apache may connect and nobody else may.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Unix socket type the module speaks.
    #[arg(long, value_enum, default_value_t = SocketType::Seqpacket)]
    pub socket_type: SocketType,

    /// Delay between mock backend events, in milliseconds.
    #[arg(short = 'd', long, default_value_t = 50)]
    pub delay: u64,

    /// Where responses come from.
    #[arg(short = 'b', long, value_enum, default_value_t = BackendKind::Mock)]
    pub backend: BackendKind,

    /// Backend base URL (http:// for h2c or plain HTTP/1.1, https:// for TLS).
    #[arg(long, env = "OPENAI_API_BASE", default_value = "https://api.openai.com/v1")]
    pub openai_base: String,

    /// Bearer token for the backend.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,

    /// Model used when the handoff names none.
    #[arg(long, env = "OPENAI_MODEL", default_value = "gpt-4o-mini")]
    pub openai_model: String,

    /// Speak HTTP/2 to the backend (false: HTTP/1.1 with keep-alive).
    #[arg(long, env = "OPENAI_HTTP2_ENABLED", default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub openai_http2: bool,

    /// Skip TLS certificate verification (testing only).
    #[arg(long, env = "OPENAI_INSECURE_SSL", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub openai_insecure_ssl: bool,

    /// PEM file with one more CA certificate to trust for the backend.
    #[arg(long)]
    pub openai_ca: Option<PathBuf>,

    /// Streams per HTTP/2 connection (clamped 10-1000; the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS may lower it).
    #[arg(long, env = "OPENAI_H2_STREAMS_PER_HANDLE", default_value_t = 100)]
    pub h2_streams_per_connection: u32,

    /// Most backend connections open at once.
    #[arg(long, default_value_t = 1024)]
    pub backend_connections: usize,

    /// Quiet; print a summary on exit.
    #[arg(long)]
    pub benchmark: bool,

    /// Concurrent streams before new handoffs get 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: u64,

    /// Shared-nothing workers, one thread each (0 = one per two CPUs, at least one).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Seconds running streams may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub drain_timeout: u64,

    /// Seconds of silence before a `: keep-alive` comment is sent.
    #[arg(long, default_value_t = 15)]
    pub keep_alive: u64,

    /// Seconds the backend may take to send its first byte.
    #[arg(long, default_value_t = 60)]
    pub first_byte_timeout: u64,

    /// Seconds the backend may stay silent mid-stream.
    #[arg(long, default_value_t = 120)]
    pub idle_timeout: u64,

    /// Seconds a stream may last in all.
    #[arg(long, default_value_t = 1800)]
    pub total_timeout: u64,

    /// Seconds a client may take no bytes while bytes wait for it; then its own
    /// stream ends (counted as client stalled) and its upstream is cancelled. Also
    /// bounds the last flush.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub write_timeout: u64,

    /// Bytes of client output one stream may hold unwritten before it stops reading
    /// its backend (at least 1024), so a slow reader fills only its own buffers.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub client_buffer: usize,

    /// SO_SNDBUF of each client socket, in bytes (0: leave the kernel's
    /// autotuning, which lets a client that reads nothing hold up to tcp_wmem's
    /// maximum, 4 MiB by default, before a write blocks). Bounded, a stalled
    /// client is noticed promptly and pins little kernel memory; token streams
    /// need far less than it allows per round trip.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub client_send_buffer: usize,

    /// Seconds a finished response's socket drains what the client still sends
    /// before it is closed (so unread bytes cannot turn the close into a reset).
    #[arg(long, value_name = "SECONDS", default_value_t = 2)]
    pub linger: u64,

    /// Seconds an accepted module connection may take to deliver its handoff.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub receive_timeout: u64,

    /// Seconds a 503 (at capacity, or shutting down) tells the client to wait,
    /// sent as Retry-After.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    pub retry_after: u32,

    /// Seconds opening one backend connection (TCP, TLS, HTTP/2 preface) may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub connect_timeout: u64,

    /// HTTP/2 flow-control window of each backend stream, in bytes (1 to
    /// 2147483647): the most one stream has in flight, so the most a stalled
    /// client pins in its connection.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub h2_stream_window: u64,

    /// TOML file setting any of these flags by its long name (`max-connections =
    /// 20000`); flags and environment variables override it.
    #[arg(long, value_name = "FILE", env = "HANDOFF_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr.
    #[arg(long, value_enum, env = "HANDOFF_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// HTTP/2 flow-control window of each backend connection, in bytes (at least
    /// --h2-stream-window, at most 2147483647). Default: streams per connection ×
    /// --h2-stream-window, so every stream can have its whole window in flight and
    /// none waits on a neighbour's unread bytes; smaller values save memory but let
    /// stalled streams slow the others. Memory cost: at worst each stalled stream
    /// pins one stream window in its connection plus --client-buffer of unwritten
    /// client bytes: with the defaults 128 KiB per stalled stream, 12.5 MiB for a
    /// connection of 100 stalled streams.
    #[arg(long, value_name = "BYTES")]
    pub h2_connection_window: Option<u64>,

    /// Serve Prometheus metrics (GET /metrics) and a health check (GET /healthz)
    /// on HOST:PORT, or on a Unix socket when the value is a path (has a `/`).
    /// Off unless given.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<String>,

    // ---- what a request to the backend carries (issue 14) ----
    /// Send the handoff's `user_id` as the request's `user` (for the provider's
    /// abuse monitoring) when the handoff sets no `user` itself.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub openai_user_from_user_id: bool,
}

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The API key as `Debug` may show it: whether there is one, never what it is.
fn redacted_key(key: &Option<String>) -> Option<Redacted> {
    key.as_ref().map(|_| Redacted)
}

// Written out rather than derived so the API key never reaches a log. The
// destructuring makes a new field a compile error here until it is listed.
impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Cli {
            socket,
            mode,
            socket_owner,
            socket_group,
            socket_type,
            delay,
            backend,
            openai_base,
            openai_api_key,
            openai_model,
            openai_http2,
            openai_insecure_ssl,
            openai_ca,
            h2_streams_per_connection,
            backend_connections,
            benchmark,
            max_connections,
            threads,
            drain_timeout,
            keep_alive,
            first_byte_timeout,
            idle_timeout,
            total_timeout,
            write_timeout,
            client_buffer,
            client_send_buffer,
            linger,
            receive_timeout,
            retry_after,
            connect_timeout,
            h2_stream_window,
            h2_connection_window,
            config,
            log_format,
            metrics_addr,
            openai_user_from_user_id,
        } = self;
        f.debug_struct("Cli")
            .field("socket", socket)
            .field("mode", mode)
            .field("socket_owner", socket_owner)
            .field("socket_group", socket_group)
            .field("socket_type", socket_type)
            .field("delay", delay)
            .field("backend", backend)
            .field("openai_base", openai_base)
            .field("openai_api_key", &redacted_key(openai_api_key))
            .field("openai_model", openai_model)
            .field("openai_http2", openai_http2)
            .field("openai_insecure_ssl", openai_insecure_ssl)
            .field("openai_ca", openai_ca)
            .field("h2_streams_per_connection", h2_streams_per_connection)
            .field("backend_connections", backend_connections)
            .field("benchmark", benchmark)
            .field("max_connections", max_connections)
            .field("threads", threads)
            .field("drain_timeout", drain_timeout)
            .field("keep_alive", keep_alive)
            .field("first_byte_timeout", first_byte_timeout)
            .field("idle_timeout", idle_timeout)
            .field("total_timeout", total_timeout)
            .field("write_timeout", write_timeout)
            .field("client_buffer", client_buffer)
            .field("client_send_buffer", client_send_buffer)
            .field("linger", linger)
            .field("receive_timeout", receive_timeout)
            .field("retry_after", retry_after)
            .field("connect_timeout", connect_timeout)
            .field("h2_stream_window", h2_stream_window)
            .field("h2_connection_window", h2_connection_window)
            .field("config", config)
            .field("log_format", log_format)
            .field("metrics_addr", metrics_addr)
            .field("openai_user_from_user_id", openai_user_from_user_id)
            .finish()
    }
}

/// A backend base URL, split into what the connection and the request need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. `/v1` (empty for none).
    pub path: String,
}

impl BaseUrl {
    /// `host[:port]` as it goes in Host / `:authority` (port omitted when default).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The chat completions path under this base.
    pub fn completions_path(&self) -> String {
        format!("{}/chat/completions", self.path)
    }
}

/// `Debug` shows whether there is an API key, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    pub base: BaseUrl,
    pub api_key: Option<String>,
    pub default_model: String,
    pub http2: bool,
    pub insecure_tls: bool,
    pub extra_ca: Option<PathBuf>,
    /// Send the handoff's `user_id` as `user` when it sets no `user`.
    pub user_from_user_id: bool,
}

impl OpenAiConfig {
    /// What this backend adds to every request body.
    pub fn request_defaults(&self) -> crate::openai::RequestDefaults<'_> {
        crate::openai::RequestDefaults {
            default_model: &self.default_model,
            user_from_user_id: self.user_from_user_id,
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let OpenAiConfig { base, api_key, default_model, http2, insecure_tls, extra_ca, user_from_user_id } =
            self;
        f.debug_struct("OpenAiConfig")
            .field("base", base)
            .field("api_key", &redacted_key(api_key))
            .field("default_model", default_model)
            .field("http2", http2)
            .field("insecure_tls", insecure_tls)
            .field("extra_ca", extra_ca)
            .field("user_from_user_id", user_from_user_id)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Mock,
    OpenAi(OpenAiConfig),
}

/// Where the listening socket came from. A daemon that bound it owns it; an
/// inherited one (systemd's socket activation, or a supervisor handing the same
/// fd to the next daemon) outlives this process, and whoever runs next accepts
/// what is queued on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketOrigin {
    /// Bound from `--socket` by this process.
    #[default]
    Bound,
    /// Taken from the service manager (`LISTEN_FDS`), never bound or unlinked here.
    Inherited,
}

impl SocketOrigin {
    /// Whether stopping removes the socket file. An inherited socket is not ours
    /// to remove: the next daemon (or systemd) keeps accepting on it.
    pub fn unlinks_on_stop(self) -> bool {
        self == SocketOrigin::Bound
    }

    /// Whether stopping accepts the queued handoffs to answer them 503. Nobody
    /// else will take a bound socket's queue; an inherited socket's queue is
    /// left to the next daemon, which serves it.
    pub fn answers_backlog_on_stop(self) -> bool {
        self == SocketOrigin::Bound
    }

    /// Whether a handoff accepted before shutdown but received after it is
    /// refused 503 as draining. On an inherited socket it is served: no other
    /// daemon can take a connection this one already accepted, and refusing it
    /// would lose it in a restart that must lose nothing.
    pub fn refuses_late_handoffs(self) -> bool {
        self == SocketOrigin::Bound
    }
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket_path: PathBuf,
    pub socket_mode: u32,
    /// `--socket-owner` / `--socket-group` as given (a name or a numeric id);
    /// resolved when the socket is bound.
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    pub socket_type: SocketType,
    pub log_format: LogFormat,
    /// Whether the daemon bound the socket or inherited it (socket activation):
    /// what stopping does with it follows from this.
    pub socket_origin: SocketOrigin,
    pub threads: usize,
    pub benchmark: bool,
    pub max_streams: u64,
    pub drain_timeout: Duration,
    /// How long an accepted module connection may take to deliver its handoff.
    pub receive_timeout: Duration,
    /// Pause after an accept error such as EMFILE, instead of spinning on it.
    pub accept_backoff: Duration,
    /// How workers share the accepting (its `workers` is set per worker).
    pub accept_balance: crate::balance::AcceptBalance,
    /// How often accept loops stamp a heartbeat and when one counts as hung.
    pub liveness: crate::liveness::Liveness,
    /// After the drain deadline, how long ended streams get to write their error
    /// event and close.
    pub forced_stop_grace: Duration,
    /// What a 503 tells the client to wait, in seconds.
    pub retry_after_secs: u32,
    pub backend: Backend,
    pub stream: StreamConfig,
    pub pool: PoolConfig,
    /// The metrics endpoint (`--metrics-addr`), when on.
    pub metrics: Option<crate::metrics::endpoint::MetricsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    BadMode(String),
    BadUrl {
        url: String,
        reason: &'static str,
    },
    /// The flag named must be greater than zero.
    ZeroValue(&'static str),
    /// An HTTP/2 window flag outside 1..=[`MAX_H2_WINDOW`].
    WindowOutOfRange {
        flag: &'static str,
        value: u64,
    },
    /// `--h2-connection-window` below `--h2-stream-window`: a single stream could
    /// then exhaust the connection's window by itself.
    ConnectionWindowBelowStreamWindow {
        connection: u32,
        stream: u32,
    },
    /// `--client-buffer` below [`MIN_CLIENT_BUFFER`].
    ClientBufferTooSmall(usize),
    /// `--metrics-addr` is neither `HOST:PORT` nor a path.
    BadMetricsAddr(String),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::BadMode(mode) => write!(f, "--mode {mode:?} is not an octal permission like 0660"),
            ConfigError::BadUrl { url, reason } => write!(f, "backend URL {url:?}: {reason}"),
            ConfigError::ZeroValue(flag) => write!(f, "{flag} must be greater than zero"),
            ConfigError::WindowOutOfRange { flag, value } => {
                write!(f, "{flag} {value} is outside HTTP/2's window range 1..={MAX_H2_WINDOW}")
            }
            ConfigError::ConnectionWindowBelowStreamWindow { connection, stream } => write!(
                f,
                "--h2-connection-window {connection} is below --h2-stream-window {stream}; \
                 it must hold at least one stream's window"
            ),
            ConfigError::ClientBufferTooSmall(bytes) => {
                write!(f, "--client-buffer {bytes} is below the minimum of {MIN_CLIENT_BUFFER} bytes")
            }
            ConfigError::BadMetricsAddr(why) => write!(f, "--metrics-addr {why}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The flag whose value was refused, so a caller can say where it was set.
    pub fn flag(&self) -> &'static str {
        match self {
            ConfigError::BadMode(_) => "--mode",
            ConfigError::BadUrl { .. } => "--openai-base",
            ConfigError::ZeroValue(flag) | ConfigError::WindowOutOfRange { flag, .. } => flag,
            ConfigError::ConnectionWindowBelowStreamWindow { .. } => "--h2-connection-window",
            ConfigError::ClientBufferTooSmall(_) => "--client-buffer",
            ConfigError::BadMetricsAddr(_) => "--metrics-addr",
        }
    }
}

impl Config {
    /// How many workers to start on a host with `cpus` CPUs: `--threads` (default 1),
    /// or for 0 one per two CPUs, at least one. Each worker has its own wake-ups (a
    /// sleep and wake in `epoll_wait` is the largest fixed cost here), so a second
    /// worker on a 2-CPU host shared with Apache and PHP costs more CPU per event and
    /// lengthens the tail instead of adding capacity one worker lacks (README, Workers).
    pub fn workers(&self, cpus: usize) -> usize {
        match self.threads {
            0 => (cpus / 2).max(1),
            n => n,
        }
    }
}

impl Cli {
    /// Validates the flags into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let socket_mode = parse_mode(&self.mode)?;
        for (value, flag) in [
            (self.keep_alive, "--keep-alive"),
            (self.first_byte_timeout, "--first-byte-timeout"),
            (self.idle_timeout, "--idle-timeout"),
            (self.total_timeout, "--total-timeout"),
            (self.write_timeout, "--write-timeout"),
            (self.linger, "--linger"),
            (self.receive_timeout, "--receive-timeout"),
            (self.connect_timeout, "--connect-timeout"),
            (u64::from(self.retry_after), "--retry-after"),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroValue(flag));
            }
        }
        if self.max_connections == 0 {
            return Err(ConfigError::ZeroValue("--max-connections"));
        }
        if self.backend_connections == 0 {
            return Err(ConfigError::ZeroValue("--backend-connections"));
        }
        if self.client_buffer < MIN_CLIENT_BUFFER {
            return Err(ConfigError::ClientBufferTooSmall(self.client_buffer));
        }
        let metrics = self
            .metrics_addr
            .as_deref()
            .map(|addr| {
                crate::metrics::endpoint::MetricsAddr::parse(addr).map_err(ConfigError::BadMetricsAddr)
            })
            .transpose()?
            .map(|addr| crate::metrics::endpoint::MetricsConfig { addr, limits: Default::default() });
        let h2_stream_window = h2_window("--h2-stream-window", self.h2_stream_window)?;
        let h2_connection_window = self
            .h2_connection_window
            .map(|window| h2_window("--h2-connection-window", window))
            .transpose()?;
        let backend = match self.backend {
            BackendKind::Mock => Backend::Mock,
            BackendKind::Openai => Backend::OpenAi(OpenAiConfig {
                base: parse_base_url(&self.openai_base)?,
                api_key: self.openai_api_key.filter(|key| !key.is_empty()),
                default_model: self.openai_model,
                http2: self.openai_http2,
                insecure_tls: self.openai_insecure_ssl,
                extra_ca: self.openai_ca,
                user_from_user_id: self.openai_user_from_user_id,
            }),
        };
        let http2 = matches!(&backend, Backend::OpenAi(openai) if openai.http2);
        let streams_per_connection = if http2 {
            self.h2_streams_per_connection
                .clamp(*STREAMS_PER_CONNECTION_RANGE.start(), *STREAMS_PER_CONNECTION_RANGE.end())
        } else {
            1
        };
        let stream = StreamConfig {
            keep_alive_interval: Duration::from_secs(self.keep_alive),
            first_byte_timeout: Duration::from_secs(self.first_byte_timeout),
            idle_timeout: Duration::from_secs(self.idle_timeout),
            total_timeout: Duration::from_secs(self.total_timeout),
            mock_delay: Duration::from_millis(self.delay),
            write_timeout: Duration::from_secs(self.write_timeout),
            client_buffer: self.client_buffer,
            client_send_buffer: self.client_send_buffer,
            linger: Duration::from_secs(self.linger),
            ..StreamConfig::default()
        };
        let h2_connection_window = match h2_connection_window {
            Some(connection) if connection < h2_stream_window => {
                return Err(ConfigError::ConnectionWindowBelowStreamWindow {
                    connection,
                    stream: h2_stream_window,
                })
            }
            Some(connection) => connection,
            None => PoolConfig::connection_window_for(streams_per_connection, h2_stream_window),
        };
        let pool = PoolConfig {
            max_streams_per_connection: streams_per_connection,
            max_connections: self.backend_connections,
            connect_timeout: Duration::from_secs(self.connect_timeout),
            h2_stream_window,
            h2_connection_window,
            ..PoolConfig::default()
        };
        Ok(Config {
            socket_path: self.socket,
            socket_mode,
            socket_owner: self.socket_owner,
            socket_group: self.socket_group,
            socket_type: self.socket_type,
            log_format: self.log_format,
            socket_origin: SocketOrigin::Bound,
            threads: self.threads,
            benchmark: self.benchmark,
            max_streams: self.max_connections,
            drain_timeout: Duration::from_secs(self.drain_timeout),
            receive_timeout: Duration::from_secs(self.receive_timeout),
            accept_backoff: Duration::from_millis(100),
            accept_balance: crate::balance::AcceptBalance::default(),
            liveness: crate::liveness::Liveness::default(),
            forced_stop_grace: Duration::from_secs(5),
            retry_after_secs: self.retry_after,
            backend,
            stream,
            pool,
            metrics,
        })
    }
}

/// An HTTP/2 window flag's value, when it is within 1..=[`MAX_H2_WINDOW`].
fn h2_window(flag: &'static str, value: u64) -> Result<u32, ConfigError> {
    u32::try_from(value)
        .ok()
        .filter(|window| (1..=MAX_H2_WINDOW).contains(window))
        .ok_or(ConfigError::WindowOutOfRange { flag, value })
}

/// Parses an octal permission (`0660`, `660`, `0o660`), at most `0o7777`.
pub fn parse_mode(mode: &str) -> Result<u32, ConfigError> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    match u32::from_str_radix(digits, 8) {
        Ok(value) if !digits.is_empty() && value <= 0o7777 => Ok(value),
        _ => Err(ConfigError::BadMode(mode.to_owned())),
    }
}

/// Parses `http[s]://host[:port][/path]`.
pub fn parse_base_url(url: &str) -> Result<BaseUrl, ConfigError> {
    let bad = |reason| ConfigError::BadUrl { url: url.to_owned(), reason };
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad("scheme must be http:// or https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported; use OPENAI_API_KEY"));
    }
    if path.contains(['?', '#']) {
        return Err(bad("query strings and fragments are not supported"));
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(|| bad("unclosed [ in IPv6 host"))?;
        let port = match after {
            "" => default_port,
            _ => after.strip_prefix(':').and_then(|port| port.parse().ok()).ok_or_else(|| bad("bad port"))?,
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad("bad port"))?),
            None => (authority, default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    if port == 0 {
        return Err(bad("port 0"));
    }
    let path = path.trim_end_matches('/').to_owned();
    Ok(BaseUrl { tls, host: host.to_owned(), port, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["handoff"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).expect("flags parse")
    }

    #[test]
    fn defaults_match_the_design() {
        let config = cli(&[]).into_config().unwrap();
        assert_eq!(config.socket_path, PathBuf::from("/run/streaming-daemon.sock"));
        assert_eq!(config.socket_mode, 0o660);
        assert_eq!(config.socket_type, SocketType::Seqpacket);
        assert_eq!(config.max_streams, 50_000);
        assert_eq!(config.backend, Backend::Mock);
        assert_eq!(config.stream.mock_delay, Duration::from_millis(50));
        assert_eq!(config.stream.keep_alive_interval, Duration::from_secs(15));
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
    }

    #[test]
    fn one_worker_by_default_and_zero_means_one_per_two_cpus() {
        let default = cli(&[]).into_config().unwrap();
        assert_eq!([1, 2, 16].map(|cpus| default.workers(cpus)), [1, 1, 1]);
        let auto = cli(&["--threads", "0"]).into_config().unwrap();
        assert_eq!([1, 2, 3, 4, 16].map(|cpus| auto.workers(cpus)), [1, 1, 1, 2, 8]);
        assert_eq!(auto.workers(0), 1, "an unknown CPU count still starts a worker");
        let pinned = cli(&["--threads", "3"]).into_config().unwrap();
        assert_eq!(pinned.workers(2), 3);
    }

    #[test]
    fn short_flags_work() {
        let config =
            cli(&["-s", "/tmp/x.sock", "-m", "600", "-d", "705", "-b", "mock"]).into_config().unwrap();
        assert_eq!(config.socket_path, PathBuf::from("/tmp/x.sock"));
        assert_eq!(config.socket_mode, 0o600);
        assert_eq!(config.stream.mock_delay, Duration::from_millis(705));
    }

    #[test]
    fn mode_must_be_octal() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert_eq!(parse_mode("0o755").unwrap(), 0o755);
        assert!(matches!(parse_mode("0980"), Err(ConfigError::BadMode(_))));
        assert!(matches!(parse_mode("rw"), Err(ConfigError::BadMode(_))));
        assert!(matches!(parse_mode(""), Err(ConfigError::BadMode(_))));
        assert!(matches!(parse_mode("77777"), Err(ConfigError::BadMode(_))));
        assert!(cli(&["--mode", "9"]).into_config().is_err());
    }

    #[test]
    fn streams_per_connection_are_clamped() {
        let per_conn = |n: &str| {
            cli(&["-b", "openai", "--h2-streams-per-connection", n])
                .into_config()
                .unwrap()
                .pool
                .max_streams_per_connection
        };
        assert_eq!(per_conn("1"), 10);
        assert_eq!(per_conn("250"), 250);
        assert_eq!(per_conn("5000"), 1000);
    }

    #[test]
    fn http1_backend_carries_one_stream_per_connection() {
        let config = cli(&["-b", "openai", "--openai-http2", "false"]).into_config().unwrap();
        assert_eq!(config.pool.max_streams_per_connection, 1);
        let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
        assert!(!openai.http2);
    }

    #[test]
    fn base_url_scheme_host_port_and_path() {
        let url = parse_base_url("https://api.openai.com/v1/").unwrap();
        assert_eq!(url, BaseUrl { tls: true, host: "api.openai.com".into(), port: 443, path: "/v1".into() });
        assert_eq!(url.authority(), "api.openai.com");
        assert_eq!(url.completions_path(), "/v1/chat/completions");

        let url = parse_base_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((url.tls, url.port, url.path.as_str()), (false, 8080, ""));
        assert_eq!(url.authority(), "127.0.0.1:8080");
        assert_eq!(url.completions_path(), "/chat/completions");

        let url = parse_base_url("https://[::1]:8443/api").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.authority(), "[::1]:8443");
    }

    #[test]
    fn base_url_rejects_what_we_cannot_serve() {
        for url in [
            "ftp://x",
            "api.openai.com",
            "https://",
            "https://:443",
            "https://h:notaport",
            "https://h:0",
            "https://u:p@h",
            "https://h/v1?x=1",
            "https://[::1",
        ] {
            assert!(parse_base_url(url).is_err(), "{url} should be rejected");
        }
    }

    #[test]
    fn zero_timeouts_are_rejected() {
        assert_eq!(cli(&["--keep-alive", "0"]).into_config(), Err(ConfigError::ZeroValue("--keep-alive")));
        assert_eq!(
            cli(&["--max-connections", "0"]).into_config(),
            Err(ConfigError::ZeroValue("--max-connections"))
        );
    }

    #[test]
    fn the_flag_definitions_are_consistent() {
        use clap::CommandFactory;
        let mut command = Cli::command();
        command.clone().debug_assert();
        let help = command.render_long_help().to_string();
        for flag in [
            "--write-timeout",
            "--client-buffer",
            "--linger",
            "--receive-timeout",
            "--retry-after",
            "--connect-timeout",
            "--h2-stream-window",
            "--h2-connection-window",
        ] {
            assert!(help.contains(flag), "{flag} missing from --help");
        }
    }

    #[test]
    fn flow_control_and_timeout_defaults() {
        let config = cli(&[]).into_config().unwrap();
        assert_eq!(config.stream.write_timeout, Duration::from_secs(30));
        assert_eq!(config.stream.client_buffer, 64 * 1024);
        assert_eq!(config.stream.linger, Duration::from_secs(2));
        assert_eq!(config.receive_timeout, Duration::from_secs(5));
        assert_eq!(config.retry_after_secs, 1);
        assert_eq!(config.pool.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.pool.h2_stream_window, 65_536);
        // The mock backend carries one stream per "connection".
        assert_eq!(config.pool.h2_connection_window, 65_536);

        let config = cli(&["-b", "openai"]).into_config().unwrap();
        assert_eq!(config.pool.max_streams_per_connection, 100);
        assert_eq!(config.pool.h2_connection_window, 100 * 65_536);
        // The flags' defaults are the machines' own defaults.
        assert_eq!(config.stream, StreamConfig::default());
        assert_eq!(config.pool, PoolConfig::default());
    }

    #[test]
    fn each_new_flag_sets_its_field() {
        let config = cli(&[
            "-b",
            "openai",
            "--write-timeout",
            "7",
            "--client-buffer",
            "4096",
            "--linger",
            "3",
            "--receive-timeout",
            "9",
            "--retry-after",
            "4",
            "--connect-timeout",
            "11",
            "--h2-stream-window",
            "131072",
            "--h2-connection-window",
            "1048576",
        ])
        .into_config()
        .unwrap();
        assert_eq!(config.stream.write_timeout, Duration::from_secs(7));
        assert_eq!(config.stream.client_buffer, 4096);
        assert_eq!(config.stream.linger, Duration::from_secs(3));
        assert_eq!(config.receive_timeout, Duration::from_secs(9));
        assert_eq!(config.retry_after_secs, 4);
        assert_eq!(config.pool.connect_timeout, Duration::from_secs(11));
        assert_eq!(config.pool.h2_stream_window, 131_072);
        assert_eq!(config.pool.h2_connection_window, 1_048_576);
    }

    #[test]
    fn the_default_connection_window_follows_streams_and_stream_window() {
        let window = |args: &[&str]| {
            let mut argv = vec!["-b", "openai"];
            argv.extend_from_slice(args);
            cli(&argv).into_config().unwrap().pool.h2_connection_window
        };
        assert_eq!(
            window(&["--h2-streams-per-connection", "200", "--h2-stream-window", "131072"]),
            200 * 131_072
        );
        // Clamped streams count, not the number given.
        assert_eq!(window(&["--h2-streams-per-connection", "1", "--h2-stream-window", "1000"]), 10 * 1000);
        // Capped at HTTP/2's largest window, which still holds one stream window.
        assert_eq!(window(&["--h2-stream-window", "2147483647"]), MAX_H2_WINDOW);
        // Over HTTP/1.1 there is one stream per connection.
        let config = cli(&["-b", "openai", "--openai-http2", "false", "--h2-stream-window", "5000"])
            .into_config()
            .unwrap();
        assert_eq!(config.pool.h2_connection_window, 5000);
    }

    #[test]
    fn every_zero_timeout_is_rejected_by_name() {
        for flag in [
            "--write-timeout",
            "--linger",
            "--receive-timeout",
            "--connect-timeout",
            "--retry-after",
            "--first-byte-timeout",
            "--idle-timeout",
            "--total-timeout",
        ] {
            let error = cli(&[flag, "0"]).into_config().unwrap_err();
            assert_eq!(error, ConfigError::ZeroValue(flag));
            assert_eq!(error.to_string(), format!("{flag} must be greater than zero"));
        }
    }

    #[test]
    fn windows_must_be_within_http2_range() {
        for flag in ["--h2-stream-window", "--h2-connection-window"] {
            for value in [0u64, 1 << 31, u64::from(u32::MAX) + 1] {
                let text = value.to_string();
                let error = cli(&[flag, &text]).into_config().unwrap_err();
                assert_eq!(error, ConfigError::WindowOutOfRange { flag, value });
                let message = error.to_string();
                assert!(message.starts_with(&format!("{flag} {value} ")), "{message}");
                assert!(message.contains("1..=2147483647"), "{message}");
            }
        }
        let config =
            cli(&["--h2-stream-window", "1", "--h2-connection-window", "2147483647"]).into_config().unwrap();
        assert_eq!((config.pool.h2_stream_window, config.pool.h2_connection_window), (1, MAX_H2_WINDOW));
    }

    #[test]
    fn the_connection_window_holds_at_least_one_stream_window() {
        let error = cli(&["--h2-stream-window", "100000", "--h2-connection-window", "99999"])
            .into_config()
            .unwrap_err();
        assert_eq!(
            error,
            ConfigError::ConnectionWindowBelowStreamWindow { connection: 99_999, stream: 100_000 }
        );
        let message = error.to_string();
        assert!(
            message.contains("--h2-connection-window 99999") && message.contains("--h2-stream-window 100000")
        );
        // Equal is enough; below the default stream window is checked too.
        let config =
            cli(&["--h2-stream-window", "100000", "--h2-connection-window", "100000"]).into_config().unwrap();
        assert_eq!(config.pool.h2_connection_window, 100_000);
        assert!(matches!(
            cli(&["--h2-connection-window", "65535"]).into_config(),
            Err(ConfigError::ConnectionWindowBelowStreamWindow { connection: 65_535, stream: 65_536 })
        ));
    }

    #[test]
    fn the_client_buffer_has_a_floor() {
        let error = cli(&["--client-buffer", "1023"]).into_config().unwrap_err();
        assert_eq!(error, ConfigError::ClientBufferTooSmall(1023));
        assert!(error.to_string().starts_with("--client-buffer 1023 "));
        assert_eq!(cli(&["--client-buffer", "0"]).into_config(), Err(ConfigError::ClientBufferTooSmall(0)));
        let config = cli(&["--client-buffer", "1024"]).into_config().unwrap();
        assert_eq!(config.stream.client_buffer, MIN_CLIENT_BUFFER);
    }

    #[test]
    fn debug_never_shows_the_api_key() {
        const KEY: &str = "sk-proj-Zx9TESTKEYabcdefghijklmnopqrstuvwxyz0123456789";
        let cli = cli(&["-b", "openai", "--openai-api-key", KEY]);
        let config = cli.clone().into_config().unwrap();
        let Backend::OpenAi(openai) = &config.backend else { panic!("openai backend expected") };
        assert_eq!(openai.api_key.as_deref(), Some(KEY), "the key itself is kept");
        let printed = [
            format!("{cli:?}"),
            format!("{cli:#?}"),
            format!("{openai:?}"),
            format!("{:?}", config.backend),
            format!("{config:?}"),
            format!("{config:#?}"),
        ];
        for text in &printed {
            assert!(!text.contains(KEY), "key printed: {text}");
            assert!(!text.contains("Zx9TESTKEY"), "part of the key printed: {text}");
            assert!(text.contains("<redacted>"), "no sign of a key in {text}");
        }
        assert!(printed[0].contains("openai_api_key: Some(<redacted>)"));
        // Without a key, Debug says so.
        let mut no_key = cli;
        no_key.openai_api_key = None;
        assert!(format!("{no_key:?}").contains("openai_api_key: None"));
    }

    #[test]
    fn log_format_and_socket_ownership_reach_the_config() {
        let config = cli(&[]).into_config().unwrap();
        assert_eq!(config.log_format, LogFormat::Text);
        assert_eq!((config.socket_owner, config.socket_group), (None, None));
        let config = cli(&["--log-format", "json", "--socket-owner", "handoff", "--socket-group", "33"])
            .into_config()
            .unwrap();
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.socket_owner.as_deref(), Some("handoff"));
        assert_eq!(config.socket_group.as_deref(), Some("33"));
        assert!(Cli::try_parse_from(["handoff", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn each_config_error_names_the_flag_it_refuses() {
        let refused = |args: &[&str]| cli(args).into_config().unwrap_err().flag();
        assert_eq!(refused(&["--mode", "9"]), "--mode");
        assert_eq!(refused(&["-b", "openai", "--openai-base", "ftp://x"]), "--openai-base");
        assert_eq!(refused(&["--linger", "0"]), "--linger");
        assert_eq!(refused(&["--h2-stream-window", "0"]), "--h2-stream-window");
        assert_eq!(refused(&["--h2-connection-window", "1"]), "--h2-connection-window");
        assert_eq!(refused(&["--client-buffer", "1"]), "--client-buffer");
        // Every name given is a real flag, so a caller can look it up.
        use clap::CommandFactory;
        let command = Cli::command();
        for flag in ["--mode", "--openai-base", "--h2-connection-window", "--client-buffer"] {
            let long = flag.trim_start_matches('-');
            assert!(command.get_arguments().any(|arg| arg.get_long() == Some(long)), "{flag}");
        }
    }

    #[test]
    fn empty_api_key_counts_as_none() {
        let config = cli(&["-b", "openai", "--openai-api-key", ""]).into_config().unwrap();
        let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
        assert_eq!(openai.api_key, None);
    }

    #[test]
    fn user_id_as_user_is_off_unless_asked_and_reaches_the_request_defaults() {
        let config = cli(&["-b", "openai", "--openai-model", "m-1"]).into_config().unwrap();
        let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
        let defaults = openai.request_defaults();
        assert_eq!((defaults.default_model, defaults.user_from_user_id), ("m-1", false));
        let config = cli(&["-b", "openai", "--openai-user-from-user-id", "true"]).into_config().unwrap();
        let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
        assert!(openai.request_defaults().user_from_user_id);
    }

    #[test]
    fn flags_mean_a_bound_socket_and_only_a_bound_socket_is_cleaned_up_on_stop() {
        let config = cli(&[]).into_config().unwrap();
        assert_eq!(config.socket_origin, SocketOrigin::Bound);
        let bound = SocketOrigin::Bound;
        assert!(bound.unlinks_on_stop() && bound.answers_backlog_on_stop() && bound.refuses_late_handoffs());
        let inherited = SocketOrigin::Inherited;
        assert!(!inherited.unlinks_on_stop(), "the next daemon accepts on the same path");
        assert!(!inherited.answers_backlog_on_stop(), "the queue is the next daemon's");
        assert!(!inherited.refuses_late_handoffs(), "an accepted handoff has nowhere else to go");
    }
}
