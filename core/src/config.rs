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

/// Streaming daemon for mod_socket_handoff: takes client sockets handed off by
/// Apache and streams LLM responses to them as Server-Sent Events.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Unix socket path the Apache module connects to.
    #[arg(short = 's', long, default_value = "/run/streaming-daemon.sock")]
    pub socket: PathBuf,

    /// Socket file permissions, octal.
    #[arg(short = 'm', long, default_value = "0660")]
    pub mode: String,

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

    /// Executor threads (1 = single-threaded; 0 = one per CPU).
    #[arg(long, default_value_t = 0)]
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAiConfig {
    pub base: BaseUrl,
    pub api_key: Option<String>,
    pub default_model: String,
    pub http2: bool,
    pub insecure_tls: bool,
    pub extra_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Mock,
    OpenAi(OpenAiConfig),
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket_path: PathBuf,
    pub socket_mode: u32,
    pub socket_type: SocketType,
    pub threads: usize,
    pub benchmark: bool,
    pub max_streams: u64,
    pub drain_timeout: Duration,
    /// How long an accepted module connection may take to deliver its handoff.
    pub receive_timeout: Duration,
    /// Pause after an accept error such as EMFILE, instead of spinning on it.
    pub accept_backoff: Duration,
    /// After the drain deadline, how long ended streams get to write their error
    /// event and close.
    pub forced_stop_grace: Duration,
    /// What a 503 tells the client to wait, in seconds.
    pub retry_after_secs: u32,
    pub backend: Backend,
    pub stream: StreamConfig,
    pub pool: PoolConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    BadMode(String),
    BadUrl { url: String, reason: &'static str },
    ZeroValue(&'static str),
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::BadMode(mode) => write!(f, "--mode {mode:?} is not an octal permission like 0660"),
            ConfigError::BadUrl { url, reason } => write!(f, "backend URL {url:?}: {reason}"),
            ConfigError::ZeroValue(flag) => write!(f, "{flag} must be greater than zero"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Cli {
    /// Validates the flags into a [`Config`].
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let socket_mode = parse_mode(&self.mode)?;
        for (value, flag) in [
            (self.keep_alive, "--keep-alive"),
            (self.first_byte_timeout, "--first-byte-timeout"),
            (self.idle_timeout, "--idle-timeout"),
            (self.total_timeout, "--total-timeout"),
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
        let backend = match self.backend {
            BackendKind::Mock => Backend::Mock,
            BackendKind::Openai => Backend::OpenAi(OpenAiConfig {
                base: parse_base_url(&self.openai_base)?,
                api_key: self.openai_api_key.filter(|key| !key.is_empty()),
                default_model: self.openai_model,
                http2: self.openai_http2,
                insecure_tls: self.openai_insecure_ssl,
                extra_ca: self.openai_ca,
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
            ..StreamConfig::default()
        };
        let defaults = PoolConfig::default();
        let pool = PoolConfig {
            max_streams_per_connection: streams_per_connection,
            max_connections: self.backend_connections,
            h2_connection_window: PoolConfig::connection_window_for(
                streams_per_connection,
                defaults.h2_stream_window,
            ),
            ..defaults
        };
        Ok(Config {
            socket_path: self.socket,
            socket_mode,
            socket_type: self.socket_type,
            threads: self.threads,
            benchmark: self.benchmark,
            max_streams: self.max_connections,
            drain_timeout: Duration::from_secs(self.drain_timeout),
            receive_timeout: Duration::from_secs(5),
            accept_backoff: Duration::from_millis(100),
            forced_stop_grace: Duration::from_secs(5),
            retry_after_secs: 1,
            backend,
            stream,
            pool,
        })
    }
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
    fn empty_api_key_counts_as_none() {
        let config = cli(&["-b", "openai", "--openai-api-key", ""]).into_config().unwrap();
        let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
        assert_eq!(openai.api_key, None);
    }
}
