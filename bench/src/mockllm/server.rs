//! The listener: accepts connections and picks the protocol for each. Without TLS the
//! first bytes tell (the HTTP/2 prior-knowledge preface or not); with TLS, ALPN does.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::recorder::{ConnectionGuard, Protocol, Recorder};
use super::request::StreamDefaults;
use super::{http1, http2};

/// What every connection of one server shares.
pub(crate) struct Shared {
    pub defaults: StreamDefaults,
    pub max_streams: u32,
    pub recorder: Arc<Recorder>,
    pub tls: Option<TlsAcceptor>,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// A TLS handshake that takes longer than this is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Accepts until `shutdown` fires (or its sender is dropped), then ends every connection.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>, mut shutdown: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => {
                    let _ = tcp.set_nodelay(true);
                    let connection = shared.recorder.open_connection();
                    connections.spawn(serve_connection(tcp, Arc::clone(&shared), connection));
                }
                Err(_) => tokio::time::sleep(ACCEPT_BACKOFF).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, shared: Arc<Shared>, connection: ConnectionGuard) {
    if let Some(acceptor) = shared.tls.clone() {
        let Ok(Ok(tls)) = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else {
            return;
        };
        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
            http2::serve(tls, Protocol::H2Tls, shared, connection).await;
        } else {
            http1::serve(tls, BytesMut::new(), Protocol::Http1Tls, shared, connection).await;
        }
        return;
    }
    let mut tcp = tcp;
    let mut first = BytesMut::with_capacity(H2_PREFACE.len());
    // Read only as far as the preface goes, so an h2 client's next frames stay unread.
    while first.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&first) {
        let mut byte_budget = (&mut tcp).take((H2_PREFACE.len() - first.len()) as u64);
        match byte_budget.read_buf(&mut first).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    if first.as_ref() == H2_PREFACE {
        let io = Rewind { prefix: first, inner: tcp };
        http2::serve(io, Protocol::H2c, shared, connection).await;
    } else {
        http1::serve(tcp, first, Protocol::Http1, shared, connection).await;
    }
}

/// A stream that first yields bytes already read from it.
struct Rewind<T> {
    prefix: BytesMut,
    inner: T,
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
