//! The browser's side: loopback TCP connections whose server end is handed to the
//! daemon, and reading what the daemon writes on them.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::time::{timeout_at, Instant};

use super::response::Response;

/// The longest a scenario waits for a response to end (or for the part it wants).
pub const READ_PATIENCE: Duration = Duration::from_secs(30);

/// Connections from other processes a pairing accept skips before giving up.
const MAX_STRANGERS: usize = 16;

/// A loopback listener that makes client connection pairs.
#[derive(Debug)]
pub struct Clients {
    address: SocketAddr,
    /// Held from connect to accept, so each accepted socket is paired with its client.
    listener: Mutex<TcpListener>,
}

impl Clients {
    pub async fn bind() -> Arc<Clients> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("binding a loopback client listener: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("client listener address: {e}"));
        Arc::new(Clients { address, listener: Mutex::new(listener) })
    }

    /// A connected pair: the client end (ours) and the server end (for the daemon).
    pub async fn open(&self) -> (Client, OwnedFd) {
        let listener = self.listener.lock().await;
        let stream = TcpStream::connect(self.address)
            .await
            .unwrap_or_else(|e| panic!("connecting a client to {}: {e}", self.address));
        let ours = stream.local_addr().unwrap_or_else(|e| panic!("client address: {e}"));
        for _ in 0..MAX_STRANGERS {
            let (server, peer) =
                listener.accept().await.unwrap_or_else(|e| panic!("accepting on {}: {e}", self.address));
            if peer != ours {
                continue;
            }
            // Apache sets TCP_NODELAY on client connections; the daemon inherits it.
            server.set_nodelay(true).unwrap_or_else(|e| panic!("TCP_NODELAY: {e}"));
            let server = server.into_std().unwrap_or_else(|e| panic!("detaching the server end: {e}"));
            let client = Client { stream, received: Vec::new(), handed_off: Instant::now(), eof: false };
            return (client, server.into());
        }
        panic!("the client listener {} kept accepting connections that are not ours", self.address);
    }
}

/// The browser's end of one handed-off connection.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    received: Vec<u8>,
    handed_off: Instant,
    eof: bool,
}

impl Client {
    /// Starts the response clock (for lower bounds on how long a response took).
    pub fn mark_handed_off(&mut self) {
        self.handed_off = Instant::now();
    }

    /// Everything read so far.
    pub fn received(&self) -> &[u8] {
        &self.received
    }

    /// Sends bytes to the daemon, as a browser that pipelines a request body might
    /// (the daemon never reads requests; it must not let such bytes break the response).
    pub async fn write_all(&mut self, bytes: &[u8]) {
        match timeout_at(Instant::now() + READ_PATIENCE, self.stream.write_all(bytes)).await {
            Err(_elapsed) => panic!("the daemon took none of {} bytes within {READ_PATIENCE:?}", bytes.len()),
            Ok(Err(error)) => panic!("writing {} bytes to the daemon: {error}", bytes.len()),
            Ok(Ok(())) => {}
        }
    }

    /// Reads until EOF (or a reset, which is reported as a failure with what came
    /// before it), at most [`READ_PATIENCE`].
    pub async fn read_to_end(mut self) -> Response {
        let deadline = Instant::now() + READ_PATIENCE;
        while !self.eof {
            self.read_some(deadline, "the end of the response").await;
        }
        Response::new(self.received, self.handed_off.elapsed())
    }

    /// Reads until `is_enough` says the bytes so far suffice; panics at EOF or after
    /// [`READ_PATIENCE`]. `what` names the wait in the failure message.
    pub async fn read_until(&mut self, what: &str, mut is_enough: impl FnMut(&[u8]) -> bool) {
        let deadline = Instant::now() + READ_PATIENCE;
        while !is_enough(&self.received) {
            assert!(!self.eof, "EOF while waiting for {what}; received {:?}", self.text());
            self.read_some(deadline, what).await;
        }
    }

    /// Reads until the body holds `count` complete `data:` events.
    pub async fn read_events(&mut self, count: usize) {
        let what = format!("{count} events");
        self.read_until(&what, |bytes| {
            let body = match find_subslice(bytes, b"\r\n\r\n") {
                Some(end) => bytes.get(end + 4..).unwrap_or_default(),
                None => return false,
            };
            body.split(|b| *b == b'\n').filter(|line| line.starts_with(b"data: ")).count() >= count
                && body.ends_with(b"\n\n")
        })
        .await;
    }

    async fn read_some(&mut self, deadline: Instant, what: &str) {
        let mut buf = [0u8; 16 * 1024];
        match timeout_at(deadline, self.stream.read(&mut buf)).await {
            Err(_elapsed) => {
                panic!("no {what} within {READ_PATIENCE:?}; received so far: {:?}", self.text())
            }
            Ok(Err(error)) => {
                panic!("reading the response failed ({error}) before {what}; received: {:?}", self.text())
            }
            Ok(Ok(0)) => self.eof = true,
            Ok(Ok(n)) => self.received.extend_from_slice(buf.get(..n).unwrap_or_default()),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

pub(super) fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
