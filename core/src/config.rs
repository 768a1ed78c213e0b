//! The daemon's settings ([`Settings`], plain values with their defaults) and their
//! validation into a [`Config`]. The command line that fills [`Settings`] lives with
//! the binaries (handoff-io's `cli`), so this crate parses no arguments.

use std::path::PathBuf;
use std::time::Duration;

use crate::pool::PoolConfig;
use crate::stream::StreamConfig;

/// Streams per HTTP/2 connection are clamped to this range.
pub const STREAMS_PER_CONNECTION_RANGE: std::ops::RangeInclusive<u32> = 10..=1000;

/// The largest HTTP/2 flow-control window (RFC 9113 §6.9.1: 2^31-1).
pub const MAX_H2_WINDOW: u32 = (1 << 31) - 1;

/// The smallest `--client-buffer`: below it a single ordinary event would not fit
/// and the stream would stop reading its backend after every chunk.
pub const MIN_CLIENT_BUFFER: usize = 1024;

/// Which backend serves the streams (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendKind {
    /// The built-in 18-event script; needs nothing else running.
    Mock,
    /// An OpenAI-compatible chat completions API.
    Openai,
    /// An SSE endpoint (an agent framework's, say) whose events reach the client
    /// unchanged; the handoff gives the request body and path.
    Passthrough,
}

/// The module socket's type (`--socket-type`); must match mod_socket_handoff's.
///
/// Exhaustive on purpose: a runtime must carry out every variant, so a new
/// one should fail its build rather than fall into a catch-all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketType {
    /// One message per connection (mod_socket_handoff's current protocol).
    Seqpacket,
    /// Byte stream, for module versions older than the switch to SOCK_SEQPACKET.
    Stream,
}

/// How log lines are written (`--log-format`).
///
/// Exhaustive on purpose: a runtime must carry out every variant, so a new
/// one should fail its build rather than fall into a catch-all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal, never with NO_COLOR).
    Text,
    /// One JSON object per line: timestamp, level, target, message and every field.
    Json,
}

/// The names an enum setting is spelled with on the command line and in the
/// config file, and the parse back from them.
macro_rules! named_values {
    ($type:ident, $what:literal, $($variant:ident = $name:literal: $meaning:literal),+ $(,)?) => {
        impl $type {
            /// Every accepted spelling, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($name),+];

            /// Each spelling with what it means, for help texts.
            pub const CHOICES: &'static [(&'static str, &'static str)] = &[$(($name, $meaning)),+];

            /// How the value is spelled.
            pub fn name(self) -> &'static str {
                match self {
                    $($type::$variant => $name),+
                }
            }
        }

        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $type {
            type Err = UnknownName;

            fn from_str(value: &str) -> Result<Self, UnknownName> {
                match value {
                    $($name => Ok($type::$variant),)+
                    _ => Err(UnknownName { what: $what, value: value.to_owned(), expected: $type::NAMES }),
                }
            }
        }
    };
}

named_values!(BackendKind, "backend",
    Mock = "mock": "The built-in 18-event script; needs nothing else running",
    Openai = "openai": "An OpenAI-compatible chat completions API",
    Passthrough = "passthrough": "An SSE endpoint whose events reach the client unchanged (body and path from the handoff)",
);
named_values!(SocketType, "socket type",
    Seqpacket = "seqpacket": "One message per connection (mod_socket_handoff's current protocol)",
    Stream = "stream": "Byte stream, for module versions older than the switch to SOCK_SEQPACKET",
);
named_values!(LogFormat, "log format",
    Text = "text": "Human-readable lines (coloured only on a terminal, never with NO_COLOR)",
    Json = "json": "One JSON object per line: timestamp, level, target, message and every field",
);

/// An enum setting spelled with a name it does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName {
    what: &'static str,
    value: String,
    expected: &'static [&'static str],
}

impl std::fmt::Display for UnknownName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown {} {:?} (expected one of: {})", self.what, self.value, self.expected.join(", "))
    }
}

impl std::error::Error for UnknownName {}

/// The defaults of [`Settings`], one place for the flags' defaults and for
/// embedders that build [`Settings`] themselves.
pub mod defaults {
    /// `--socket`.
    pub const SOCKET: &str = "/run/streaming-daemon.sock";
    /// `--mode`.
    pub const MODE: &str = "0660";
    /// `--delay`, milliseconds.
    pub const MOCK_DELAY_MS: u64 = 50;
    /// `--openai-base`.
    pub const OPENAI_BASE: &str = "https://api.openai.com/v1";
    /// `--openai-model`.
    pub const OPENAI_MODEL: &str = "gpt-4o-mini";
    /// `--openai-http2`.
    pub const OPENAI_HTTP2: bool = true;
    /// `--h2-streams-per-connection`.
    pub const H2_STREAMS_PER_CONNECTION: u32 = 100;
    /// `--backend-connections`.
    pub const BACKEND_CONNECTIONS: usize = 1024;
    /// `--max-connections`.
    pub const MAX_CONNECTIONS: u64 = 50_000;
    /// `--threads`.
    pub const THREADS: usize = 1;
    /// `--drain-timeout`, seconds.
    pub const DRAIN_TIMEOUT_SECS: u64 = 30;
    /// `--keep-alive`, seconds.
    pub const KEEP_ALIVE_SECS: u64 = 15;
    /// `--first-byte-timeout`, seconds.
    pub const FIRST_BYTE_TIMEOUT_SECS: u64 = 60;
    /// `--idle-timeout`, seconds.
    pub const IDLE_TIMEOUT_SECS: u64 = 120;
    /// `--total-timeout`, seconds.
    pub const TOTAL_TIMEOUT_SECS: u64 = 1800;
    /// `--write-timeout`, seconds.
    pub const WRITE_TIMEOUT_SECS: u64 = 30;
    /// `--client-buffer`, bytes.
    pub const CLIENT_BUFFER: usize = 64 * 1024;
    /// `--client-send-buffer`, bytes.
    pub const CLIENT_SEND_BUFFER: usize = 64 * 1024;
    /// `--linger`, seconds.
    pub const LINGER_SECS: u64 = 2;
    /// `--receive-timeout`, seconds.
    pub const RECEIVE_TIMEOUT_SECS: u64 = 5;
    /// `--retry-after`, seconds.
    pub const RETRY_AFTER_SECS: u32 = 1;
    /// `--connect-timeout`, seconds.
    pub const CONNECT_TIMEOUT_SECS: u64 = 10;
    /// `--h2-stream-window`, bytes.
    pub const H2_STREAM_WINDOW: u64 = 64 * 1024;
    /// `--backend-idle-timeout`, seconds.
    pub const BACKEND_IDLE_TIMEOUT_SECS: u64 = 90;
    /// `--backend-tcp-keepalive`, seconds (0: off).
    pub const BACKEND_TCP_KEEPALIVE_SECS: u64 = 30;
    /// `--backend-ping-interval`, seconds (0: off).
    pub const BACKEND_PING_INTERVAL_SECS: u64 = 30;
    /// `--backend-ping-timeout`, seconds.
    pub const BACKEND_PING_TIMEOUT_SECS: u64 = 10;
}

/// The daemon's settings as an operator gives them (flags, environment, config
/// file), before validation. Every field is public and [`Default`] holds the
/// documented defaults, so an embedder fills in what it needs and calls
/// [`Settings::validate`]; the daemons' command line maps onto it one flag to one
/// field (the field names are the long flags with `_` for `-`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Unix socket path the Apache module connects to.
    pub socket: PathBuf,
    /// Socket file permissions, octal (`0660`, `660` or `0o660`).
    pub mode: String,
    /// User that owns the socket file (name or numeric id; `None`: the daemon's).
    pub socket_owner: Option<String>,
    /// Group of the socket file (name or numeric id).
    pub socket_group: Option<String>,
    /// Unix socket type the module speaks.
    pub socket_type: SocketType,
    /// Delay between mock backend events, in milliseconds.
    pub delay: u64,
    /// Where responses come from.
    pub backend: BackendKind,
    /// Backend base URL (`http://` for h2c or HTTP/1.1, `https://` for TLS).
    pub openai_base: String,
    /// Bearer token for the backend (empty counts as none).
    pub openai_api_key: Option<String>,
    /// Model used when the handoff names none.
    pub openai_model: String,
    /// Speak HTTP/2 to the backend (false: HTTP/1.1 with keep-alive).
    pub openai_http2: bool,
    /// Skip TLS certificate verification (testing only).
    pub openai_insecure_ssl: bool,
    /// PEM file with one more CA certificate to trust for the backend.
    pub openai_ca: Option<PathBuf>,
    /// Streams per HTTP/2 connection (clamped to [`STREAMS_PER_CONNECTION_RANGE`]).
    pub h2_streams_per_connection: u32,
    /// Most backend connections open at once.
    pub backend_connections: usize,
    /// Quiet; print a summary on exit.
    pub benchmark: bool,
    /// Concurrent streams before new handoffs get 503.
    pub max_connections: u64,
    /// Concurrent streams one `user_id` may have, all backends together, before
    /// its next handoff gets 429 (0: no limit).
    pub max_streams_per_user: u32,
    /// Tokens one `user_id` may spend per `user_token_window` seconds before
    /// its next handoff gets 429 (0: no budget).
    pub user_token_budget: u64,
    /// The budget's window, seconds.
    pub user_token_window: u64,
    /// Shared-nothing workers (0: one per two CPUs, at least one).
    pub threads: usize,
    /// Seconds running streams may take to finish after SIGINT/SIGTERM.
    pub drain_timeout: u64,
    /// Seconds of silence before a `: keep-alive` comment is sent.
    pub keep_alive: u64,
    /// Seconds the backend may take to send its first byte.
    pub first_byte_timeout: u64,
    /// Seconds the backend may stay silent mid-stream.
    pub idle_timeout: u64,
    /// Seconds a stream may last in all.
    pub total_timeout: u64,
    /// Seconds a client may take no bytes while bytes wait for it.
    pub write_timeout: u64,
    /// Bytes of client output one stream may hold unwritten (at least
    /// [`MIN_CLIENT_BUFFER`]).
    pub client_buffer: usize,
    /// SO_SNDBUF of each client socket, in bytes (0: the kernel's autotuning).
    pub client_send_buffer: usize,
    /// Seconds a finished response's socket drains what the client still sends.
    pub linger: u64,
    /// Seconds an accepted module connection may take to deliver its handoff.
    pub receive_timeout: u64,
    /// Seconds a 503 tells the client to wait (Retry-After).
    pub retry_after: u32,
    /// Seconds opening one backend connection may take.
    pub connect_timeout: u64,
    /// HTTP/2 flow-control window of each backend stream, in bytes.
    pub h2_stream_window: u64,
    /// Log line format on stderr.
    pub log_format: LogFormat,
    /// HTTP/2 flow-control window of each backend connection, in bytes (`None`:
    /// streams per connection × the stream window).
    pub h2_connection_window: Option<u64>,
    /// Metrics endpoint address: `HOST:PORT`, or a Unix socket path (has a `/`).
    pub metrics_addr: Option<String>,
    /// Users that may hand off (names or numeric ids). With these or
    /// `allow_gid` set, every module connection's SO_PEERCRED is checked; both
    /// empty: anyone who can open the socket.
    pub allow_uid: Vec<String>,
    /// Groups whose members may hand off: the peer's effective (primary) group.
    pub allow_gid: Vec<String>,
    /// Send the handoff's `user_id` as the request's `user` (for the provider's
    /// abuse monitoring) when the handoff sets no `user` itself.
    pub openai_user_from_user_id: bool,
    /// Ask OpenAI-kind backends for a final usage chunk
    /// (`stream_options.include_usage`), read into the stream's record.
    pub openai_include_usage: bool,
    /// The directory a handoff's `image_paths` and `attachments` are relative to
    /// (`None`: handoffs naming files are refused).
    pub data_dir: Option<PathBuf>,
    /// Largest attachment or image file read, in bytes.
    pub max_attachment_bytes: u64,
    /// Most bytes of images and attachments one handoff may bring.
    pub max_attachments_total_bytes: u64,
    /// Most files one handoff may name.
    pub max_attachments: usize,
    /// Delete a handoff's files once a backend has taken its request (2xx).
    pub delete_attachments: bool,
    /// Keep the assistant's text in every stream's completion record (a
    /// handoff's `record_text` or a backend's turns it on for its streams).
    pub record_text: bool,
    /// Most bytes of text one record keeps; beyond it the text is marked truncated.
    pub record_text_max_bytes: usize,
    /// Where completion records go (the `records-*` flags, or `[records]`).
    pub records: crate::delivery::RecordsSettings,
    /// Seconds a backend connection carrying no stream stays open.
    pub backend_idle_timeout: u64,
    /// Seconds of silence before TCP keepalive probes a backend socket (0: off).
    pub backend_tcp_keepalive: u64,
    /// Seconds between HTTP/2 PINGs on an idle backend connection (0: off).
    pub backend_ping_interval: u64,
    /// Seconds a PING's answer may take before the connection counts as dead.
    pub backend_ping_timeout: u64,
    /// The config file's `[backends.NAME]` tables, in the file's order.
    pub backends: Vec<(String, crate::backends::BackendTable)>,
}

impl Default for Settings {
    fn default() -> Settings {
        use defaults::*;
        Settings {
            socket: PathBuf::from(SOCKET),
            mode: MODE.to_owned(),
            socket_owner: None,
            socket_group: None,
            socket_type: SocketType::Seqpacket,
            delay: MOCK_DELAY_MS,
            backend: BackendKind::Mock,
            openai_base: OPENAI_BASE.to_owned(),
            openai_api_key: None,
            openai_model: OPENAI_MODEL.to_owned(),
            openai_http2: OPENAI_HTTP2,
            openai_insecure_ssl: false,
            openai_ca: None,
            h2_streams_per_connection: H2_STREAMS_PER_CONNECTION,
            backend_connections: BACKEND_CONNECTIONS,
            benchmark: false,
            max_connections: MAX_CONNECTIONS,
            max_streams_per_user: 0,
            user_token_budget: 0,
            user_token_window: 3600,
            threads: THREADS,
            drain_timeout: DRAIN_TIMEOUT_SECS,
            keep_alive: KEEP_ALIVE_SECS,
            first_byte_timeout: FIRST_BYTE_TIMEOUT_SECS,
            idle_timeout: IDLE_TIMEOUT_SECS,
            total_timeout: TOTAL_TIMEOUT_SECS,
            write_timeout: WRITE_TIMEOUT_SECS,
            client_buffer: CLIENT_BUFFER,
            client_send_buffer: CLIENT_SEND_BUFFER,
            linger: LINGER_SECS,
            receive_timeout: RECEIVE_TIMEOUT_SECS,
            retry_after: RETRY_AFTER_SECS,
            connect_timeout: CONNECT_TIMEOUT_SECS,
            h2_stream_window: H2_STREAM_WINDOW,
            log_format: LogFormat::Text,
            h2_connection_window: None,
            metrics_addr: None,
            allow_uid: Vec::new(),
            allow_gid: Vec::new(),
            openai_user_from_user_id: false,
            openai_include_usage: true,
            data_dir: None,
            max_attachment_bytes: crate::attachments::defaults::MAX_FILE_BYTES,
            max_attachments_total_bytes: crate::attachments::defaults::MAX_TOTAL_BYTES,
            max_attachments: crate::attachments::defaults::MAX_FILES,
            delete_attachments: false,
            record_text: false,
            record_text_max_bytes: 64 * 1024,
            records: crate::delivery::RecordsSettings::default(),
            backend_idle_timeout: BACKEND_IDLE_TIMEOUT_SECS,
            backend_tcp_keepalive: BACKEND_TCP_KEEPALIVE_SECS,
            backend_ping_interval: BACKEND_PING_INTERVAL_SECS,
            backend_ping_timeout: BACKEND_PING_TIMEOUT_SECS,
            backends: Vec::new(),
        }
    }
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
impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Settings {
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
            max_streams_per_user,
            user_token_budget,
            user_token_window,
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
            log_format,
            metrics_addr,
            allow_uid,
            allow_gid,
            openai_user_from_user_id,
            openai_include_usage,
            data_dir,
            max_attachment_bytes,
            max_attachments_total_bytes,
            max_attachments,
            delete_attachments,
            record_text,
            record_text_max_bytes,
            records,
            backend_idle_timeout,
            backend_tcp_keepalive,
            backend_ping_interval,
            backend_ping_timeout,
            backends,
        } = self;
        f.debug_struct("Settings")
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
            .field("max_streams_per_user", max_streams_per_user)
            .field("user_token_budget", user_token_budget)
            .field("user_token_window", user_token_window)
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
            .field("log_format", log_format)
            .field("metrics_addr", metrics_addr)
            .field("allow_uid", allow_uid)
            .field("allow_gid", allow_gid)
            .field("openai_user_from_user_id", openai_user_from_user_id)
            .field("openai_include_usage", openai_include_usage)
            .field("data_dir", data_dir)
            .field("max_attachment_bytes", max_attachment_bytes)
            .field("max_attachments_total_bytes", max_attachments_total_bytes)
            .field("max_attachments", max_attachments)
            .field("delete_attachments", delete_attachments)
            .field("record_text", record_text)
            .field("record_text_max_bytes", record_text_max_bytes)
            .field("records", records)
            .field("backend_idle_timeout", backend_idle_timeout)
            .field("backend_tcp_keepalive", backend_tcp_keepalive)
            .field("backend_ping_interval", backend_ping_interval)
            .field("backend_ping_timeout", backend_ping_timeout)
            .field("backends", backends)
            .finish()
    }
}

/// A backend base URL, split into what the connection and the request need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// Whether the connection uses TLS (`https://`).
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// TCP port (the scheme's default when the URL gives none).
    pub port: u16,
    /// Path prefix without a trailing slash, e.g. `/v1` (empty for none).
    pub path: String,
    /// `unix:SOCKET[:/PATH]`: the server listens on this Unix socket (plain
    /// HTTP/1.1 or h2c; `host` is then `localhost`, for the Host header).
    pub unix: Option<PathBuf>,
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
    /// Where the backend is and the path its endpoints sit under.
    pub base: BaseUrl,
    /// Bearer token sent as `Authorization`, if any.
    pub api_key: Option<String>,
    /// Model used when the handoff names none.
    pub default_model: String,
    /// Speak HTTP/2 to the backend (false: HTTP/1.1 with keep-alive).
    pub http2: bool,
    /// Skip TLS certificate verification (testing only).
    pub insecure_tls: bool,
    /// PEM file with one more CA certificate to trust for the backend.
    pub extra_ca: Option<PathBuf>,
    /// Send the handoff's `user_id` as `user` when it sets no `user`.
    pub user_from_user_id: bool,
    /// Ask for the final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
    /// Sent with every request, in order (a named backend's `headers`;
    /// validated by [`crate::backends::request_header_rejection`]).
    pub headers: Vec<(String, String)>,
    /// `Some` for a passthrough backend: the path prefixes a handoff's `path`
    /// may start with (none: the handoff gives no path, the base URL's is used).
    pub passthrough: Option<Vec<String>>,
}

impl OpenAiConfig {
    /// What this backend adds to every request body.
    pub fn request_defaults(&self) -> crate::openai::RequestDefaults<'_> {
        crate::openai::RequestDefaults {
            default_model: &self.default_model,
            user_from_user_id: self.user_from_user_id,
            include_usage: self.include_usage,
        }
    }
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let OpenAiConfig {
            base,
            api_key,
            default_model,
            http2,
            insecure_tls,
            extra_ca,
            user_from_user_id,
            include_usage,
            headers,
            passthrough,
        } = self;
        f.debug_struct("OpenAiConfig")
            .field("base", base)
            .field("api_key", &redacted_key(api_key))
            .field("default_model", default_model)
            .field("http2", http2)
            .field("insecure_tls", insecure_tls)
            .field("extra_ca", extra_ca)
            .field("user_from_user_id", user_from_user_id)
            .field("include_usage", include_usage)
            .field("headers", headers)
            .field("passthrough", passthrough)
            .finish()
    }
}

/// The backend streams are served from.
///
/// Exhaustive on purpose: a runtime must carry out every variant, so a new
/// one should fail its build rather than fall into a catch-all.
#[derive(Debug, Clone, PartialEq, Eq)]
// Built once per start or reload and never moved per stream: its size costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    /// The built-in scripted stream; needs nothing else running.
    Mock,
    /// An OpenAI-compatible chat completions API.
    OpenAi(OpenAiConfig),
}

/// Where the listening socket came from. A daemon that bound it owns it; an
/// inherited one (systemd's socket activation, or a supervisor handing the same
/// fd to the next daemon) outlives this process, and whoever runs next accepts
/// what is queued on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
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
    /// Path of the module socket to bind (`--socket`).
    pub socket_path: PathBuf,
    /// Permission bits the bound socket file gets (`--mode`, octal).
    pub socket_mode: u32,
    /// `--socket-owner` / `--socket-group` as given (a name or a numeric id);
    /// resolved when the socket is bound.
    pub socket_owner: Option<String>,
    /// Group to give the socket file, as given (a name or a numeric id).
    pub socket_group: Option<String>,
    /// Socket type to bind or expect (`--socket-type`).
    pub socket_type: SocketType,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Whether the daemon bound the socket or inherited it (socket activation):
    /// what stopping does with it follows from this.
    pub socket_origin: SocketOrigin,
    /// Shared-nothing workers (0: one per two CPUs, at least one).
    pub threads: usize,
    /// Quiet mode: no per-stream logs, a summary printed on exit.
    pub benchmark: bool,
    /// Concurrent streams before new handoffs are refused 503.
    pub max_streams: u64,
    /// Concurrent streams one `user_id` may have, all backends together, before
    /// its next handoff is refused 429 (0: no limit; see [`crate::user_limits`]).
    pub max_streams_per_user: u32,
    /// Tokens per user per window (0: none; see [`crate::token_budget`]).
    pub user_token_budget: u64,
    /// The token budget's window.
    pub user_token_window: Duration,
    /// How long running streams may take to finish after SIGINT/SIGTERM.
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
    /// The backend streams are served from.
    pub backend: Backend,
    /// Per-stream timeouts and buffers.
    pub stream: StreamConfig,
    /// The backend connection pool.
    pub pool: PoolConfig,
    /// The config file's named backends, picked by a handoff's `backend`
    /// ([`crate::backends::select`]); `backend`, `stream` and `pool` above are
    /// the default one's.
    pub named_backends: Vec<crate::backends::NamedBackend>,
    /// Where completion records go (`None`: records are off).
    pub records: Option<crate::delivery::RecordsConfig>,
    /// The metrics endpoint (`--metrics-addr`), when on.
    pub metrics: Option<crate::metrics::endpoint::MetricsConfig>,
    /// `--allow-uid` / `--allow-gid` as given (names or numeric ids), resolved
    /// into a [`crate::guard::PeerPolicy`] at start.
    pub allow_uids: Vec<String>,
    /// `--allow-gid` as given (names or numeric ids); see `allow_uids`.
    pub allow_gids: Vec<String>,
    /// The fd reserve and the rate of guard log lines.
    pub fd_guard: crate::guard::FdGuard,
    /// Where a handoff's files are read from and their limits.
    pub attachments: crate::attachments::AttachmentConfig,
}

/// Why a set of flags is not a valid [`Config`]; `Display` names the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--mode` is not an octal permission of at most `0o7777`.
    BadMode(String),
    /// The backend base URL could not be used.
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The flag named must be greater than zero.
    ZeroValue(&'static str),
    /// An HTTP/2 window flag outside 1..=[`MAX_H2_WINDOW`].
    WindowOutOfRange {
        /// The flag that was out of range.
        flag: &'static str,
        /// The value it was given.
        value: u64,
    },
    /// `--h2-connection-window` below `--h2-stream-window`: a single stream could
    /// then exhaust the connection's window by itself.
    ConnectionWindowBelowStreamWindow {
        /// The `--h2-connection-window` given.
        connection: u32,
        /// The `--h2-stream-window` it is below.
        stream: u32,
    },
    /// `--client-buffer` below [`MIN_CLIENT_BUFFER`].
    ClientBufferTooSmall(usize),
    /// `--metrics-addr` is neither `HOST:PORT` nor a path.
    BadMetricsAddr(String),
    /// `--data-dir` must be absolute: a relative one would follow the daemon's
    /// working directory, which a service manager sets.
    RelativeDataDir,
    /// The records delivery settings are refused (the reason names the key).
    Records(String),
    /// A `[backends.NAME]` table is refused.
    Backend {
        /// The table's name (empty when the refusal is about all of them).
        name: String,
        /// What is wrong, naming the table's key.
        reason: String,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Records(reason) => f.write_str(reason),
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
            ConfigError::RelativeDataDir => write!(f, "--data-dir must be an absolute path"),
            ConfigError::Backend { name, reason } if name.is_empty() => write!(f, "[backends]: {reason}"),
            ConfigError::Backend { name, reason } => write!(f, "[backends.{name}]: {reason}"),
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
            ConfigError::RelativeDataDir => "--data-dir",
            ConfigError::Backend { .. } => "backends",
            ConfigError::Records(_) => "records",
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

impl Settings {
    /// Validates the settings into a [`Config`]; the error names the flag whose
    /// value is refused.
    pub fn validate(self) -> Result<Config, ConfigError> {
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
            (self.backend_idle_timeout, "--backend-idle-timeout"),
            (self.backend_ping_timeout, "--backend-ping-timeout"),
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
        if self.data_dir.as_ref().is_some_and(|dir| !dir.is_absolute()) {
            return Err(ConfigError::RelativeDataDir);
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
        let (backend, stream, pool) = self.backend_parts()?;
        let named_backends = crate::backends::validate(&self)?;
        let records = self.records.validate()?;
        Ok(Config {
            records,
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
            max_streams_per_user: self.max_streams_per_user,
            user_token_budget: self.user_token_budget,
            user_token_window: Duration::from_secs(self.user_token_window),
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
            named_backends,
            metrics,
            allow_uids: self.allow_uid,
            allow_gids: self.allow_gid,
            fd_guard: crate::guard::FdGuard::default(),
            attachments: crate::attachments::AttachmentConfig {
                data_dir: self.data_dir,
                max_file_bytes: self.max_attachment_bytes,
                max_total_bytes: self.max_attachments_total_bytes,
                max_files: self.max_attachments,
                delete_after_use: self.delete_attachments,
            },
        })
    }

    /// The backend the flags configure, with its streams' and pool's settings;
    /// named backends are built by the same code over their merged settings.
    pub(crate) fn backend_parts(&self) -> Result<(Backend, StreamConfig, PoolConfig), ConfigError> {
        let h2_stream_window = h2_window("--h2-stream-window", self.h2_stream_window)?;
        let h2_connection_window = self
            .h2_connection_window
            .map(|window| h2_window("--h2-connection-window", window))
            .transpose()?;
        let backend = match self.backend {
            BackendKind::Mock => Backend::Mock,
            kind @ (BackendKind::Openai | BackendKind::Passthrough) => Backend::OpenAi(OpenAiConfig {
                base: parse_base_url(&self.openai_base)?,
                api_key: self.openai_api_key.clone().filter(|key| !key.is_empty()),
                default_model: self.openai_model.clone(),
                http2: self.openai_http2,
                insecure_tls: self.openai_insecure_ssl,
                extra_ca: self.openai_ca.clone(),
                headers: Vec::new(),
                passthrough: (kind == BackendKind::Passthrough).then(Vec::new),
                user_from_user_id: self.openai_user_from_user_id,
                include_usage: self.openai_include_usage,
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
            record_text: self.record_text,
            record_text_max_bytes: self.record_text_max_bytes,
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
            idle_timeout: Duration::from_secs(self.backend_idle_timeout),
            tcp_keepalive: (self.backend_tcp_keepalive > 0)
                .then(|| crate::pool::TcpKeepalive::after(Duration::from_secs(self.backend_tcp_keepalive))),
            // HTTP/1.1 has no PING; TCP keepalive is all it gets.
            ping: (http2 && self.backend_ping_interval > 0).then(|| crate::pool::PingConfig {
                interval: Duration::from_secs(self.backend_ping_interval),
                timeout: Duration::from_secs(self.backend_ping_timeout),
            }),
            ..PoolConfig::default()
        };
        Ok((backend, stream, pool))
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
    if let Some(rest) = url.strip_prefix("unix:") {
        // `unix:/run/llm.sock` or `unix:/run/llm.sock:/v1`: the socket, then the
        // HTTP path its endpoints sit under.
        let (socket, path) = match rest.split_once(":/") {
            Some((socket, path)) => (socket, format!("/{path}")),
            None => (rest, String::new()),
        };
        if !socket.starts_with('/') {
            return Err(bad("a unix: socket path must be absolute"));
        }
        if path.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not supported"));
        }
        let path = path.trim_end_matches('/').to_owned();
        return Ok(BaseUrl {
            tls: false,
            host: "localhost".to_owned(),
            port: 80,
            path,
            unix: Some(socket.into()),
        });
    }
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad("scheme must be http://, https:// or unix:"));
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
    Ok(BaseUrl { tls, host: host.to_owned(), port, path, unix: None })
}

#[cfg(test)]
mod tests;
