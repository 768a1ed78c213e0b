//! The command line both daemons share: one clap definition, mapped one flag to
//! one field onto core's [`Settings`], which holds the defaults and validates. The
//! config file (`--config`) fills the same flags by their long names.

use std::path::PathBuf;

use clap::builder::{BoolishValueParser, PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Parser;
use handoff_core::config::{
    defaults, BackendKind, Config, ConfigError, LogFormat, Settings, SocketType, UnknownName,
};

/// A flag whose value is one of a core enum's `choices` (name, meaning).
fn named<T>(choices: &'static [(&'static str, &'static str)]) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = UnknownName> + Clone + Send + Sync + 'static,
{
    let values = choices.iter().map(|&(name, meaning)| PossibleValue::new(name).help(meaning));
    PossibleValuesParser::new(values).try_map(|name| name.parse::<T>())
}

/// Streaming daemon for mod_socket_handoff: takes client sockets handed off by
/// Apache and streams LLM responses to them as Server-Sent Events.
#[derive(Clone, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Unix socket path the Apache module connects to.
    #[arg(short = 's', long, default_value = defaults::SOCKET)]
    pub socket: PathBuf,

    /// Socket file permissions, octal.
    #[arg(short = 'm', long, default_value = defaults::MODE)]
    pub mode: String,

    /// User that owns the socket file (name or numeric id; default: the daemon's).
    #[arg(long, value_name = "USER")]
    pub socket_owner: Option<String>,

    /// Group of the socket file (name or numeric id), e.g. Apache's `www-data`, so
    /// that with --mode 0660 Apache may connect and nobody else may.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Unix socket type the module speaks.
    #[arg(long, value_parser = named::<SocketType>(SocketType::CHOICES), default_value_t = SocketType::Seqpacket)]
    pub socket_type: SocketType,

    /// Delay between mock backend events, in milliseconds.
    #[arg(short = 'd', long, default_value_t = defaults::MOCK_DELAY_MS)]
    pub delay: u64,

    /// Where responses come from.
    #[arg(short = 'b', long, value_parser = named::<BackendKind>(BackendKind::CHOICES), default_value_t = BackendKind::Mock)]
    pub backend: BackendKind,

    /// Backend base URL (http:// for h2c or plain HTTP/1.1, https:// for TLS).
    #[arg(long, env = "OPENAI_API_BASE", default_value = defaults::OPENAI_BASE)]
    pub openai_base: String,

    /// Bearer token for the backend.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<String>,

    /// Model used when the handoff names none.
    #[arg(long, env = "OPENAI_MODEL", default_value = defaults::OPENAI_MODEL)]
    pub openai_model: String,

    /// Speak HTTP/2 to the backend (false: HTTP/1.1 with keep-alive).
    #[arg(long, env = "OPENAI_HTTP2_ENABLED", default_value_t = defaults::OPENAI_HTTP2, value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub openai_http2: bool,

    /// Skip TLS certificate verification (testing only).
    #[arg(long, env = "OPENAI_INSECURE_SSL", default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub openai_insecure_ssl: bool,

    /// PEM file with one more CA certificate to trust for the backend.
    #[arg(long)]
    pub openai_ca: Option<PathBuf>,

    /// Streams per HTTP/2 connection (clamped 10-1000; the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS may lower it).
    #[arg(long, env = "OPENAI_H2_STREAMS_PER_HANDLE", default_value_t = defaults::H2_STREAMS_PER_CONNECTION)]
    pub h2_streams_per_connection: u32,

    /// Most backend connections open at once.
    #[arg(long, default_value_t = defaults::BACKEND_CONNECTIONS)]
    pub backend_connections: usize,

    /// Quiet; print a summary on exit.
    #[arg(long)]
    pub benchmark: bool,

    /// Concurrent streams before new handoffs get 503.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS)]
    pub max_connections: u64,

    /// Concurrent streams one handoff `user_id` may have before its next handoff
    /// gets 429 Too Many Requests with Retry-After: 1 (0: no limit; a handoff
    /// without `user_id` is never limited). A backend table's
    /// `max_streams_per_user` limits that backend's streams on top.
    #[arg(long, value_name = "COUNT", default_value_t = 0)]
    pub max_streams_per_user: u32,

    /// Tokens (the backend's usage: total, else prompt + completion) one handoff
    /// `user_id` may spend per --user-token-window before its next handoff gets
    /// 429 with Retry-After until the next window (0: no budget). Kept in
    /// memory; a restart starts every window afresh.
    #[arg(long, value_name = "TOKENS", default_value_t = 0)]
    pub user_token_budget: u64,

    /// The token budget's window in seconds, aligned to the Unix epoch.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub user_token_window: u64,

    /// Shared-nothing workers, one thread each (0 = one per two CPUs, at least one).
    #[arg(long, default_value_t = defaults::THREADS)]
    pub threads: usize,

    /// Seconds running streams may take to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = defaults::DRAIN_TIMEOUT_SECS)]
    pub drain_timeout: u64,

    /// Seconds of silence before a `: keep-alive` comment is sent.
    #[arg(long, default_value_t = defaults::KEEP_ALIVE_SECS)]
    pub keep_alive: u64,

    /// Seconds the backend may take to send its first byte.
    #[arg(long, default_value_t = defaults::FIRST_BYTE_TIMEOUT_SECS)]
    pub first_byte_timeout: u64,

    /// Seconds the backend may stay silent mid-stream.
    #[arg(long, default_value_t = defaults::IDLE_TIMEOUT_SECS)]
    pub idle_timeout: u64,

    /// Seconds a stream may last in all.
    #[arg(long, default_value_t = defaults::TOTAL_TIMEOUT_SECS)]
    pub total_timeout: u64,

    /// Seconds a client may take no bytes while bytes wait for it; then its own
    /// stream ends (counted as client stalled) and its upstream is cancelled. Also
    /// bounds the last flush.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::WRITE_TIMEOUT_SECS)]
    pub write_timeout: u64,

    /// Bytes of client output one stream may hold unwritten before it stops reading
    /// its backend (at least 1024), so a slow reader fills only its own buffers.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::CLIENT_BUFFER)]
    pub client_buffer: usize,

    /// SO_SNDBUF of each client socket, in bytes (0: leave the kernel's
    /// autotuning, which lets a client that reads nothing hold up to tcp_wmem's
    /// maximum, 4 MiB by default, before a write blocks). Bounded, a stalled
    /// client is noticed promptly and pins little kernel memory; token streams
    /// need far less than it allows per round trip.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::CLIENT_SEND_BUFFER)]
    pub client_send_buffer: usize,

    /// Seconds a finished response's socket drains what the client still sends
    /// before it is closed (so unread bytes cannot turn the close into a reset).
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::LINGER_SECS)]
    pub linger: u64,

    /// Seconds an accepted module connection may take to deliver its handoff.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::RECEIVE_TIMEOUT_SECS)]
    pub receive_timeout: u64,

    /// Seconds a 503 (at capacity, or shutting down) tells the client to wait,
    /// sent as Retry-After.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::RETRY_AFTER_SECS)]
    pub retry_after: u32,

    /// Seconds opening one backend connection (TCP, TLS, HTTP/2 preface) may take.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::CONNECT_TIMEOUT_SECS)]
    pub connect_timeout: u64,

    /// Seconds a backend connection carrying no stream stays open before it is
    /// closed.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::BACKEND_IDLE_TIMEOUT_SECS)]
    pub backend_idle_timeout: u64,

    /// Seconds of silence before TCP keepalive probes a backend socket (three
    /// probes a third of this apart, at least a second; 0: off), so a backend
    /// host that vanished is noticed even on an idle connection.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::BACKEND_TCP_KEEPALIVE_SECS)]
    pub backend_tcp_keepalive: u64,

    /// Seconds between HTTP/2 PINGs on an idle backend connection (0: off), so
    /// a connection that died silently is found before a stream is put on it.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::BACKEND_PING_INTERVAL_SECS)]
    pub backend_ping_interval: u64,

    /// Seconds a PING's answer may take; a connection that does not answer in
    /// time is dropped and its streams fail.
    #[arg(long, value_name = "SECONDS", default_value_t = defaults::BACKEND_PING_TIMEOUT_SECS)]
    pub backend_ping_timeout: u64,

    /// HTTP/2 flow-control window of each backend stream, in bytes (1 to
    /// 2147483647): the most one stream has in flight, so the most a stalled
    /// client pins in its connection.
    #[arg(long, value_name = "BYTES", default_value_t = defaults::H2_STREAM_WINDOW)]
    pub h2_stream_window: u64,

    /// TOML file setting any of these flags by its long name (`max-connections =
    /// 20000`); flags and environment variables override it.
    #[arg(long, value_name = "FILE", env = "HANDOFF_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log line format on stderr.
    #[arg(long, value_parser = named::<LogFormat>(LogFormat::CHOICES), env = "HANDOFF_LOG_FORMAT", default_value_t = LogFormat::Text)]
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

    /// A user that may hand off (name or numeric id; repeat for more). With
    /// this or --allow-gid set, every module connection's SO_PEERCRED is checked
    /// and any other peer is closed before its message is read. Unset: anyone
    /// who can open the socket.
    #[arg(long, value_name = "USER", action = clap::ArgAction::Append)]
    pub allow_uid: Vec<String>,

    /// A group whose members may hand off: the connecting process's effective
    /// (primary) group, as SO_PEERCRED reports it (name or numeric id; repeat
    /// for more).
    #[arg(long, value_name = "GROUP", action = clap::ArgAction::Append)]
    pub allow_gid: Vec<String>,

    /// Send the handoff's `user_id` as the request's `user` (for the provider's
    /// abuse monitoring) when the handoff sets no `user` itself.
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub openai_user_from_user_id: bool,

    /// Ask OpenAI-kind backends for the final usage chunk
    /// (`stream_options.include_usage`), for completion records; `false` for a
    /// compatible server that refuses the option.
    #[arg(long, default_value = "true", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub openai_include_usage: bool,

    /// Directory (absolute) that a handoff's `image_paths` and `attachments` are
    /// relative to; files are opened beneath it only, never through a symlink.
    /// Without it, handoffs that name files get a 400.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,

    /// Largest image or attachment file read, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = handoff_core::attachments::defaults::MAX_FILE_BYTES)]
    pub max_attachment_bytes: u64,

    /// Most bytes of images and attachments one handoff may bring.
    #[arg(long, value_name = "BYTES", default_value_t = handoff_core::attachments::defaults::MAX_TOTAL_BYTES)]
    pub max_attachments_total_bytes: u64,

    /// Most files (image_paths and attachments) one handoff may name.
    #[arg(long, value_name = "COUNT", default_value_t = handoff_core::attachments::defaults::MAX_FILES)]
    pub max_attachments: usize,

    /// Delete a handoff's files once a backend has answered its request with a
    /// success status (never when it failed, so a retry still finds them).
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub delete_attachments: bool,

    /// Keep the assistant's full text in every completion record (a handoff's
    /// `"record_text": true`, or a backend table's `record_text`, asks per stream).
    #[arg(long, default_value = "false", value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub record_text: bool,

    /// Most bytes of assistant text one record keeps; beyond it the record says
    /// `"text_truncated": true`.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024)]
    pub record_text_max_bytes: usize,

    /// Append every stream's completion record to this file as JSON Lines
    /// (absolute path; reopened on SIGHUP, for logrotate). Also `[records] file`.
    #[arg(long, value_name = "PATH")]
    pub records_file: Option<std::path::PathBuf>,

    /// Sync the records file at most this often, in milliseconds (0: after every write).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub records_fsync_ms: u64,

    /// Bytes of records the file writer buffers before it must write.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub records_buffer_bytes: usize,

    /// Records waiting for the file or webhook thread, at most; beyond it a
    /// record is dropped (counted), never waited for.
    #[arg(long, value_name = "COUNT", default_value_t = 65_536)]
    pub records_queue: usize,

    /// POST every completion record to this URL (`http://`, `https://` or
    /// `unix:/path.sock[:/http/path]`), spooled on disk until it answers 2xx.
    #[arg(long, value_name = "URL")]
    pub records_webhook: Option<String>,

    /// File holding the webhook's shared secret (signs each POST with
    /// `X-Handoff-Signature: sha256=<HMAC>`); else $HANDOFF_RECORDS_WEBHOOK_SECRET.
    #[arg(long, value_name = "PATH")]
    pub records_webhook_secret_file: Option<std::path::PathBuf>,

    /// Milliseconds a webhook POST may take, connect included.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub records_webhook_timeout_ms: u64,

    /// Delay before the first webhook retry, in milliseconds; each failure doubles it.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub records_retry_initial_ms: u64,

    /// The longest delay between webhook retries, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 60_000)]
    pub records_retry_max_ms: u64,

    /// Records per webhook POST (1: one JSON object each; more: a JSON array).
    #[arg(long, value_name = "COUNT", default_value_t = 100)]
    pub records_batch_max: usize,

    /// Directory where records wait for the webhook (required with one; absolute).
    #[arg(long, value_name = "DIR")]
    pub records_spool_dir: Option<std::path::PathBuf>,

    /// Bytes the spool may hold; beyond it records are dropped (counted, logged).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub records_spool_max_bytes: u64,

    /// At shutdown, milliseconds to write out queued records.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub records_flush_timeout_ms: u64,
}

impl Cli {
    /// The settings these flags give (the config file's path is not a setting).
    pub fn into_settings(self) -> Settings {
        let mut settings = Settings::default();
        settings.socket = self.socket;
        settings.mode = self.mode;
        settings.socket_owner = self.socket_owner;
        settings.socket_group = self.socket_group;
        settings.socket_type = self.socket_type;
        settings.delay = self.delay;
        settings.backend = self.backend;
        settings.openai_base = self.openai_base;
        settings.openai_api_key = self.openai_api_key;
        settings.openai_model = self.openai_model;
        settings.openai_http2 = self.openai_http2;
        settings.openai_insecure_ssl = self.openai_insecure_ssl;
        settings.openai_ca = self.openai_ca;
        settings.h2_streams_per_connection = self.h2_streams_per_connection;
        settings.backend_connections = self.backend_connections;
        settings.benchmark = self.benchmark;
        settings.max_connections = self.max_connections;
        settings.max_streams_per_user = self.max_streams_per_user;
        settings.user_token_budget = self.user_token_budget;
        settings.user_token_window = self.user_token_window;
        settings.threads = self.threads;
        settings.drain_timeout = self.drain_timeout;
        settings.keep_alive = self.keep_alive;
        settings.first_byte_timeout = self.first_byte_timeout;
        settings.idle_timeout = self.idle_timeout;
        settings.total_timeout = self.total_timeout;
        settings.write_timeout = self.write_timeout;
        settings.client_buffer = self.client_buffer;
        settings.client_send_buffer = self.client_send_buffer;
        settings.linger = self.linger;
        settings.receive_timeout = self.receive_timeout;
        settings.retry_after = self.retry_after;
        settings.connect_timeout = self.connect_timeout;
        settings.backend_idle_timeout = self.backend_idle_timeout;
        settings.backend_tcp_keepalive = self.backend_tcp_keepalive;
        settings.backend_ping_interval = self.backend_ping_interval;
        settings.backend_ping_timeout = self.backend_ping_timeout;
        settings.h2_stream_window = self.h2_stream_window;
        settings.log_format = self.log_format;
        settings.h2_connection_window = self.h2_connection_window;
        settings.metrics_addr = self.metrics_addr;
        settings.allow_uid = self.allow_uid;
        settings.allow_gid = self.allow_gid;
        settings.openai_user_from_user_id = self.openai_user_from_user_id;
        settings.openai_include_usage = self.openai_include_usage;
        settings.data_dir = self.data_dir;
        settings.max_attachment_bytes = self.max_attachment_bytes;
        settings.max_attachments_total_bytes = self.max_attachments_total_bytes;
        settings.max_attachments = self.max_attachments;
        settings.delete_attachments = self.delete_attachments;
        settings.record_text = self.record_text;
        settings.record_text_max_bytes = self.record_text_max_bytes;
        settings.records = handoff_core::delivery::RecordsSettings {
            file: self.records_file,
            fsync_ms: self.records_fsync_ms,
            buffer_bytes: self.records_buffer_bytes,
            queue: self.records_queue,
            webhook: self.records_webhook,
            webhook_secret: None,
            webhook_secret_file: self.records_webhook_secret_file,
            webhook_timeout_ms: self.records_webhook_timeout_ms,
            retry_initial_ms: self.records_retry_initial_ms,
            retry_max_ms: self.records_retry_max_ms,
            batch_max: self.records_batch_max,
            spool_dir: self.records_spool_dir,
            spool_max_bytes: self.records_spool_max_bytes,
            flush_timeout_ms: self.records_flush_timeout_ms,
        };
        settings
    }

    /// The validated configuration these flags give.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        self.into_settings().validate()
    }
}

// Through the settings' own `Debug`, so the API key shows as redacted here too.
impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings = self.clone().into_settings();
        f.debug_struct("Cli").field("config", &self.config).field("settings", &settings).finish()
    }
}

#[cfg(test)]
mod tests;
