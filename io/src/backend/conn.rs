//! Opening a backend connection: TCP, then TLS when the base URL is https.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::runtime::Runtime;

/// A backend byte stream, plain or TLS.
pub enum BackendIo<T> {
    Plain(T),
    Tls(Box<TlsStream<T>>),
}

impl<T> BackendIo<T> {
    /// The ALPN protocol the server chose (TLS only).
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            BackendIo::Plain(_) => None,
            BackendIo::Tls(tls) => tls.get_ref().1.alpn_protocol(),
        }
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Set on every socket opened to it.
    pub keepalive: Option<handoff_core::pool::TcpKeepalive>,
    /// A Unix socket to connect to instead of `host:port` (a `unix:` base URL).
    pub unix: Option<std::path::PathBuf>,
}

impl Endpoint {
    pub fn new(
        host: &str,
        port: u16,
        tls: Option<Arc<rustls::ClientConfig>>,
        keepalive: Option<handoff_core::pool::TcpKeepalive>,
    ) -> io::Result<Endpoint> {
        let tls = match tls {
            Some(config) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("TLS name {host:?}: {e}"))
                })?;
                Some((TlsConnector::from(config), name))
            }
            None => None,
        };
        Ok(Endpoint { host: host.to_owned(), port, tls, keepalive, unix: None })
    }

    /// The same endpoint reached through the Unix socket at `path`.
    pub fn over_unix(self, path: Option<std::path::PathBuf>) -> Endpoint {
        Endpoint { unix: path, ..self }
    }

    pub async fn connect<R: Runtime>(&self, runtime: &R) -> io::Result<BackendIo<R::Tcp>> {
        let tcp = match &self.unix {
            Some(path) => runtime
                .connect_unix(path)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
            None => runtime.connect_tcp(&self.host, self.port, self.keepalive).await?,
        };
        match &self.tls {
            None => Ok(BackendIo::Plain(tcp)),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                Ok(BackendIo::Tls(Box::new(tls)))
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for BackendIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(io) => Pin::new(io).poll_read(cx, buf),
            BackendIo::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for BackendIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendIo::Plain(io) => Pin::new(io).poll_write(cx, buf),
            BackendIo::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(io) => Pin::new(io).poll_flush(cx),
            BackendIo::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(io) => Pin::new(io).poll_shutdown(cx),
            BackendIo::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendIo::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            BackendIo::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendIo::Plain(io) => io.is_write_vectored(),
            BackendIo::Tls(io) => io.is_write_vectored(),
        }
    }
}
