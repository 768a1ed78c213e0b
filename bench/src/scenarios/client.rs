//! The browser's side: loopback TCP connections whose server end is handed to the
//! daemon, and reading what the daemon writes on them.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
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
        self.open_with_receive_buffer(None).await
    }

    /// [`Clients::open`] with the client's `SO_RCVBUF` set to `receive_buffer` bytes
    /// before it connects, so the TCP window it offers stays that small: a phone on a
    /// bad link, or a browser tab that stopped reading.
    pub async fn open_with_receive_buffer(&self, receive_buffer: Option<u32>) -> (Client, OwnedFd) {
        let listener = self.listener.lock().await;
        let socket = TcpSocket::new_v4().unwrap_or_else(|e| panic!("creating a client socket: {e}"));
        if let Some(bytes) = receive_buffer {
            socket.set_recv_buffer_size(bytes).unwrap_or_else(|e| panic!("SO_RCVBUF {bytes}: {e}"));
        }
        let stream = socket
            .connect(self.address)
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

/// How a browser closes its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// An orderly close: FIN; the daemon's first write still succeeds.
    Fin,
    /// An abortive close (`SO_LINGER` 0, or a close with unread bytes): RST; the
    /// daemon's next write fails.
    Reset,
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

    /// Closes the connection the way `how` says.
    pub fn close(self, how: Close) {
        if how == Close::Reset {
            if let Err(error) = self.stream.set_zero_linger() {
                panic!("SO_LINGER 0 on a client socket: {error}");
            }
        }
        drop(self);
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
    pub async fn read_to_end(self) -> Response {
        self.try_read_to_end(READ_PATIENCE).await.unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// Reads until EOF within `patience`; a timeout or a reset is an error that says
    /// what came before it.
    pub async fn try_read_to_end(mut self, patience: Duration) -> Result<Response, String> {
        let deadline = Instant::now() + patience;
        while !self.eof {
            self.try_read_some(deadline, patience, "the end of the response").await?;
        }
        Ok(Response::new(self.received, self.handed_off.elapsed()))
    }

    /// How long since the handoff.
    pub fn since_handoff(&self) -> Duration {
        self.handed_off.elapsed()
    }

    /// Reads until `is_enough` says the bytes so far suffice; panics at EOF or after
    /// [`READ_PATIENCE`]. `what` names the wait in the failure message.
    pub async fn read_until(&mut self, what: &str, is_enough: impl FnMut(&[u8]) -> bool) {
        if let Err(failure) = self.try_read_until(what, READ_PATIENCE, is_enough).await {
            panic!("{failure}");
        }
    }

    /// [`Client::read_until`] within `patience`, failing with an error instead.
    pub async fn try_read_until(
        &mut self,
        what: &str,
        patience: Duration,
        mut is_enough: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        while !is_enough(&self.received) {
            if self.eof {
                return Err(format!("EOF while waiting for {what}; received {:?}", self.text()));
            }
            self.try_read_some(deadline, patience, what).await?;
        }
        Ok(())
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

    async fn try_read_some(
        &mut self,
        deadline: Instant,
        patience: Duration,
        what: &str,
    ) -> Result<(), String> {
        let mut buf = [0u8; 16 * 1024];
        match timeout_at(deadline, self.stream.read(&mut buf)).await {
            Err(_elapsed) => {
                Err(format!("no {what} within {patience:?}; received so far: {:?}", self.text()))
            }
            Ok(Err(error)) => Err(format!(
                "reading the response failed ({error}) before {what}; received: {:?}",
                self.text()
            )),
            Ok(Ok(0)) => {
                self.eof = true;
                Ok(())
            }
            Ok(Ok(n)) => {
                self.received.extend_from_slice(buf.get(..n).unwrap_or_default());
                Ok(())
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.received).into_owned()
    }
}

pub(super) fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}
