//! handoff-front: a development stand-in for Apache + mod_socket_handoff + a PHP
//! endpoint, so a browser can watch a daemon stream without an Apache install.
//! Not a production front: no TLS, no authentication, one request per connection.
//!
//! It serves the demo page at `/`. `GET /api/stream?prompt=..` and `POST /api/stream`
//! (form or JSON body) become handoff data (prompt, model, request_id, user_id from the
//! `handoff_user` cookie, test_pattern, max_tokens), which goes to the daemon's Unix
//! socket with the accepted TCP socket attached, exactly as the module sends it; the
//! front then forgets the connection and the daemon writes the whole response. When
//! the daemon cannot be reached the front answers 503 itself, as the module does.
//! `GET /stats` counts what the front did (tests read it).

mod handoff_data;
mod respond;
mod route;
mod server;
mod stats;
mod urlencoded;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::load::handoff::ConnectPolicy;
use crate::load::HandoffSocketType;

pub use handoff_data::{HandoffFields, USER_COOKIE};
pub use route::{route, Route};
pub use server::{bind, serve, Front};
pub use stats::{Stats, StatsSnapshot};

/// The demo page, served at `/`.
pub const DEMO_PAGE: &str = include_str!("../../demo/index.html");

/// How the front runs; the defaults are what `handoff-front` uses.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    pub listen: SocketAddr,
    /// The daemon's Unix socket.
    pub socket: PathBuf,
    /// Largest request head; a longer one gets 431.
    pub max_head: usize,
    /// Largest POST body; a longer one gets 413 before it is read.
    pub max_body: usize,
    /// How long a client may take to send its request head and body.
    pub read_timeout: Duration,
    /// How long writing one of the front's own responses may take.
    pub write_timeout: Duration,
    /// After its own response, how long the front drains what the client still sends
    /// before closing (closing on unread bytes would reset the response's tail).
    pub linger: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How the handoff reaches the daemon (socket type, the module's 100 ms connect
    /// budget per attempt, retries on ENOENT/ECONNREFUSED).
    pub connect: ConnectPolicy,
    /// How long the daemon may take to take the message (the module's send timeout).
    pub send_timeout: Duration,
    /// `Retry-After` of the front's own 503.
    pub retry_after_secs: u32,
}

impl FrontConfig {
    pub fn new(listen: SocketAddr, socket: PathBuf) -> FrontConfig {
        FrontConfig {
            listen,
            socket,
            max_head: 8 * 1024,
            max_body: 32 * 1024,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(500),
            max_connections: 256,
            connect: ConnectPolicy {
                socket_type: HandoffSocketType::SeqPacket,
                attempt_timeout: Duration::from_millis(100),
                attempts: 3,
            },
            send_timeout: Duration::from_millis(200),
            retry_after_secs: 1,
        }
    }
}
