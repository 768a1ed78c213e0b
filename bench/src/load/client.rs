//! The browser's connection: a client socket we read the response from, and its server
//! side, which is what the module hands to the daemon.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::Mutex;

use super::config::ClientKind;

/// Connections from strangers a pairing accept drops before giving up.
const MAX_STRANGERS: usize = 16;

/// Makes client connection pairs of one kind.
#[derive(Debug)]
pub enum ClientPairs {
    Unix,
    Tcp(TcpListeners),
}

/// Listening sockets on 127.0.0.1, 127.0.0.2, … (each on its own port).
///
/// Every listener is a distinct destination, so each gets the whole ephemeral port range
/// and 100k connections do not run out of ports. A listener is locked from connect to
/// accept, which pairs each client socket with its own server side.
#[derive(Debug)]
pub struct TcpListeners {
    listeners: Vec<(SocketAddr, Mutex<TcpListener>)>,
    next: AtomicUsize,
}

/// A connected pair: `client` stays with us, `server` goes to the daemon.
#[derive(Debug)]
pub struct ClientPair {
    pub client: ClientSocket,
    pub server: OwnedFd,
}

/// Our end of a client connection.
#[derive(Debug)]
pub enum ClientSocket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Setting up the client side failed.
#[derive(Debug)]
pub enum ClientError {
    Bind {
        address: SocketAddr,
        error: io::Error,
    },
    Connect {
        address: SocketAddr,
        error: io::Error,
    },
    Accept {
        address: SocketAddr,
        error: io::Error,
    },
    /// Only other processes' connections arrived on our listener.
    Strangers {
        address: SocketAddr,
    },
    SocketPair(io::Error),
    Detach(io::Error),
    NoListeners,
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Bind { address, error } => write!(f, "binding client listener {address}: {error}"),
            Self::Connect { address, error } => write!(f, "connecting a client to {address}: {error}"),
            Self::Accept { address, error } => write!(f, "accepting a client on {address}: {error}"),
            Self::Strangers { address } => {
                write!(f, "listener {address} kept accepting connections that are not ours")
            }
            Self::SocketPair(error) => write!(f, "creating an AF_UNIX socketpair: {error}"),
            Self::Detach(error) => write!(f, "detaching the server-side socket from the poller: {error}"),
            Self::NoListeners => write!(f, "no client listener to connect to"),
        }
    }
}

impl std::error::Error for ClientError {}

impl ClientPairs {
    /// Binds the listeners a TCP run needs (`listeners` of them, at least one).
    pub async fn bind(kind: ClientKind, listeners: u32) -> Result<Self, ClientError> {
        match kind {
            ClientKind::Unix => Ok(Self::Unix),
            ClientKind::Tcp => TcpListeners::bind(listeners.max(1)).await.map(Self::Tcp),
        }
    }

    pub async fn open(&self) -> Result<ClientPair, ClientError> {
        match self {
            Self::Unix => {
                let (client, server) = UnixStream::pair().map_err(ClientError::SocketPair)?;
                let server = server.into_std().map_err(ClientError::Detach)?;
                Ok(ClientPair { client: ClientSocket::Unix(client), server: server.into() })
            }
            Self::Tcp(listeners) => listeners.open().await,
        }
    }

    /// The listening addresses (empty for socketpairs).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        match self {
            Self::Unix => Vec::new(),
            Self::Tcp(listeners) => listeners.listeners.iter().map(|(address, _)| *address).collect(),
        }
    }
}

impl TcpListeners {
    async fn bind(count: u32) -> Result<Self, ClientError> {
        let mut listeners = Vec::new();
        for i in 0..count {
            // 127.0.0.1 ..= 127.0.0.254, then around again on new ports.
            let host = u8::try_from(i % 254 + 1).unwrap_or(1);
            let address = SocketAddr::from((Ipv4Addr::new(127, 0, 0, host), 0));
            let listener =
                TcpListener::bind(address).await.map_err(|error| ClientError::Bind { address, error })?;
            let address = listener.local_addr().map_err(|error| ClientError::Bind { address, error })?;
            listeners.push((address, Mutex::new(listener)));
        }
        Ok(Self { listeners, next: AtomicUsize::new(0) })
    }

    async fn open(&self) -> Result<ClientPair, ClientError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.listeners.len().max(1);
        let Some((address, listener)) = self.listeners.get(i) else {
            return Err(ClientError::NoListeners);
        };
        let address = *address;
        let listener = listener.lock().await;
        let client =
            TcpStream::connect(address).await.map_err(|error| ClientError::Connect { address, error })?;
        let ours = client.local_addr().map_err(|error| ClientError::Connect { address, error })?;
        for _ in 0..MAX_STRANGERS {
            let (server, peer) =
                listener.accept().await.map_err(|error| ClientError::Accept { address, error })?;
            if peer != ours {
                // Someone else's connection, or one left behind by a stream that timed out.
                continue;
            }
            // Apache sets TCP_NODELAY on client connections; the daemon inherits it.
            server.set_nodelay(true).map_err(|error| ClientError::Accept { address, error })?;
            let server = server.into_std().map_err(ClientError::Detach)?;
            return Ok(ClientPair { client: ClientSocket::Tcp(client), server: server.into() });
        }
        Err(ClientError::Strangers { address })
    }
}

impl ClientSocket {
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.readable().await,
            Self::Unix(stream) => stream.readable().await,
        }
    }

    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(stream) => stream.try_read(buf),
            Self::Unix(stream) => stream.try_read(buf),
        }
    }
}

/// For socket options on our end (the soak's receive buffer and SO_LINGER).
impl AsFd for ClientSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(stream) => stream.as_fd(),
            Self::Unix(stream) => stream.as_fd(),
        }
    }
}
