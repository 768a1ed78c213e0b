//! What a load run does.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The handoff data the module sends when none is given.
pub const DEFAULT_DATA: &str = r#"{"prompt":"benchmark test","user_id":1}"#;

/// One load run: how many handoffs, how fast, and how to judge them.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The daemon's Unix socket.
    pub socket: PathBuf,
    /// Handoffs in all.
    pub streams: u64,
    /// Arrivals are spread evenly over this span (zero: all at once).
    pub ramp: Duration,
    /// Per stream, from its start to the end of its response.
    pub timeout: Duration,
    /// Handoff data bytes (empty: a single NUL byte is sent, as the module does).
    pub data: Vec<u8>,
    /// What the handed-off client socket is.
    pub client: ClientKind,
    /// TCP only: listening sockets the client connections are spread over.
    pub listeners: u32,
    /// The type of the Unix socket to the daemon.
    pub socket_type: HandoffSocketType,
    /// Process to sample from /proc during the run (the daemon).
    pub daemon_pid: Option<u32>,
    /// How often the daemon is sampled.
    pub sample_interval: Duration,
    /// Budget of one connect attempt while the daemon's backlog is full (the module's
    /// connect timeout).
    pub connect_timeout: Duration,
    /// Connect attempts per handoff (ENOENT, ECONNREFUSED, full backlog).
    pub connect_attempts: u32,
    /// How long the daemon may take to accept the message (the module's send timeout).
    pub send_timeout: Duration,
    /// Runtime worker threads for [`run`](super::run) (1: a single-threaded runtime).
    pub threads: usize,
    /// Print a progress line to stderr while running.
    pub progress: bool,
}

impl LoadConfig {
    /// A run of `streams` handoffs to `socket` with every other setting at its default.
    pub fn new(socket: impl Into<PathBuf>, streams: u64) -> Self {
        Self {
            socket: socket.into(),
            streams,
            ramp: Duration::ZERO,
            timeout: Duration::from_secs(30),
            data: DEFAULT_DATA.as_bytes().to_vec(),
            client: ClientKind::Tcp,
            listeners: 8,
            socket_type: HandoffSocketType::SeqPacket,
            daemon_pid: None,
            sample_interval: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(100),
            connect_attempts: 3,
            send_timeout: Duration::from_millis(200),
            threads: 1,
            progress: false,
        }
    }
}

/// The client connection handed to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// A real loopback TCP connection, as under Apache.
    Tcp,
    /// One end of an AF_UNIX stream socketpair, as test harnesses use.
    Unix,
}

/// The Unix socket type used to reach the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HandoffSocketType {
    /// What mod_socket_handoff uses: one message, boundaries kept.
    #[value(name = "seqpacket")]
    SeqPacket,
    Stream,
}
