//! The metrics endpoint's HTTP/1.1: where it listens, its bounds, reading one
//! request head (httparse) and the complete response for it. One request per
//! connection, answered with `Connection: close`.

use std::path::PathBuf;
use std::time::Duration;

/// Where `--metrics-addr` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricsAddr {
    /// `HOST:PORT` (an IP literal, `[v6]:port`, or a name resolved at start).
    Tcp {
        /// The host without brackets (an IPv6 literal is bare); [`MetricsAddr::parse`]
        /// never leaves it empty.
        host: String,
        /// The TCP port; 0 lets the kernel choose one.
        port: u16,
    },
    /// A path (anything with a `/`): a Unix stream socket.
    Unix(PathBuf),
}

impl MetricsAddr {
    /// `HOST:PORT`, or a path when the value contains `/`.
    pub fn parse(value: &str) -> Result<MetricsAddr, String> {
        if value.contains('/') {
            return Ok(MetricsAddr::Unix(PathBuf::from(value)));
        }
        let (host, port) = value
            .rsplit_once(':')
            .ok_or_else(|| format!("{value:?} is neither HOST:PORT nor a socket path"))?;
        let port: u16 =
            port.parse().map_err(|_| format!("{value:?}: the port {port:?} is not a number 0-65535"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() {
            return Err(format!("{value:?} has no host (say 127.0.0.1:{port} or 0.0.0.0:{port})"));
        }
        Ok(MetricsAddr::Tcp { host: host.to_owned(), port })
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsAddr::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            MetricsAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            MetricsAddr::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// What keeps the endpoint from ever costing the streams anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointLimits {
    /// Connections served at once; one more is closed at once.
    pub max_connections: usize,
    /// Largest request head read; a longer one gets 431.
    pub max_request_head: usize,
    /// How long a connection may take to send its request head.
    pub read_timeout: Duration,
    /// How long the response may take to be written.
    pub write_timeout: Duration,
    /// After the response, how long the client gets to close first (closing on
    /// its unread bytes would reset the response's tail); short, so an idle
    /// client holds a connection slot no longer than it must.
    pub close_linger: Duration,
}

impl Default for EndpointLimits {
    fn default() -> Self {
        EndpointLimits {
            max_connections: 8,
            max_request_head: 4096,
            read_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            close_linger: Duration::from_millis(100),
        }
    }
}

/// `--metrics-addr` and its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Where the endpoint listens.
    pub addr: MetricsAddr,
    /// The endpoint's bounds.
    pub limits: EndpointLimits,
}

/// Which page a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// `/metrics`: the Prometheus text exposition.
    Metrics,
    /// `/healthz`: the [`Health`] check.
    Healthz,
}

/// What the bytes read so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Parsed {
    /// The head is not complete yet (and within the size bound).
    Incomplete,
    /// A complete head: answer it.
    Request {
        /// The page asked for (the query ignored); `None` for any other path (404).
        route: Option<Route>,
        /// `HEAD` rather than `GET`: answer without the body.
        head_only: bool,
    },
    /// Answer with this error status and close.
    Refused(u16),
}

/// Reads the request head in `buf` (everything received so far).
pub fn parse_request(buf: &[u8], limits: &EndpointLimits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) if buf.len() >= limits.max_request_head => return Parsed::Refused(431),
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Refused(431),
        Err(_) => return Parsed::Refused(400),
    }
    let head_only = match request.method {
        Some("GET") => false,
        Some("HEAD") => true,
        _ => return Parsed::Refused(405),
    };
    let path = request.path.unwrap_or("");
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let route = match path {
        "/metrics" => Some(Route::Metrics),
        "/healthz" => Some(Route::Healthz),
        _ => None,
    };
    Parsed::Request { route, head_only }
}

/// What `/healthz` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Accepting handoffs: 200.
    Ok,
    /// Shutting down: 503.
    Draining,
    /// An accept loop has not turned recently: 503.
    Hung,
}

impl Health {
    /// The health of a daemon that is `draining` (or not) and whose accept loops
    /// are all `alive` (or not); draining wins over hung.
    pub fn of(draining: bool, alive: bool) -> Health {
        match (draining, alive) {
            (true, _) => Health::Draining,
            (false, false) => Health::Hung,
            (false, true) => Health::Ok,
        }
    }

    /// The complete `/healthz` response: 200 or 503 with a one-line text body
    /// (left out when `head_only`).
    pub fn response(self, head_only: bool) -> Vec<u8> {
        let (status, body): (u16, &[u8]) = match self {
            Health::Ok => (200, b"ok\n"),
            Health::Draining => (503, b"draining\n"),
            Health::Hung => (503, b"an accept loop is not turning\n"),
        };
        response(status, TEXT, body, head_only)
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete response: status line, `Content-Type`, `Content-Length`,
/// `Cache-Control: no-store`, `Connection: close`, then `body` unless `head_only`.
pub fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reason(status),
        body.len(),
    );
    let mut out = Vec::with_capacity(head.len() + if head_only { 0 } else { body.len() });
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The response to an error status from [`Parsed::Refused`], a missing route
/// (404) or a request that never completed (408).
pub fn error_response(status: u16) -> Vec<u8> {
    let body = format!("{}\n", reason(status).to_ascii_lowercase());
    response(status, TEXT, body.as_bytes(), false)
}
