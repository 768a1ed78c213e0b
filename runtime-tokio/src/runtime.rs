//! [`handoff_io::runtime::Runtime`] on tokio.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use handoff_io::runtime::{ReadyFd, Runtime, TcpKeepalive, Timer};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Sleep;

#[derive(Clone)]
pub struct TokioRuntime {
    handle: tokio::runtime::Handle,
}

impl TokioRuntime {
    /// The runtime this is called from.
    pub fn current() -> Self {
        TokioRuntime { handle: tokio::runtime::Handle::current() }
    }
}

impl Runtime for TokioRuntime {
    type Timer = TokioTimer;
    type Fd = TokioFd;
    type Tcp = BackendStream;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(future));
    }

    fn timer(&self, deadline: Instant) -> TokioTimer {
        TokioTimer { sleep: Box::pin(tokio::time::sleep_until(deadline.into())), fired: false }
    }

    fn register(&self, fd: OwnedFd) -> io::Result<TokioFd> {
        let _guard = self.handle.enter();
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and refers to
        // the same file description until the AsyncFd is dropped.
        unsafe { AsyncFd::register(fd) }.map(TokioFd).map_err(io::Error::from)
    }

    fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        keepalive: Option<TcpKeepalive>,
    ) -> impl Future<Output = io::Result<BackendStream>> + Send {
        let host = host.to_owned();
        async move {
            let stream = match host.parse::<IpAddr>() {
                Ok(ip) => TcpStream::connect((ip, port)).await?,
                Err(_) => TcpStream::connect((host.as_str(), port)).await?,
            };
            stream.set_nodelay(true)?;
            handoff_io::sys::set_tcp_keepalive(stream.as_fd(), keepalive)?;
            Ok(BackendStream::Tcp(stream))
        }
    }

    fn connect_unix(&self, path: &std::path::Path) -> impl Future<Output = io::Result<BackendStream>> + Send {
        let path = path.to_owned();
        async move { UnixStream::connect(path).await.map(BackendStream::Unix) }
    }
}

pub struct TokioTimer {
    sleep: Pin<Box<Sleep>>,
    fired: bool,
}

impl Timer for TokioTimer {
    fn reset(&mut self, deadline: Instant) {
        self.fired = false;
        self.sleep.as_mut().reset(deadline.into());
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired {
            return Poll::Pending;
        }
        ready!(self.sleep.as_mut().poll(cx));
        self.fired = true;
        Poll::Ready(())
    }
}

pub struct TokioFd(AsyncFd<OwnedFd>);

impl AsFd for TokioFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

impl ReadyFd for TokioFd {
    fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            if let Ok(result) = guard.try_io(|_| op()) {
                return Poll::Ready(result);
            }
        }
    }

    fn poll_write_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        // Sockets are nearly always writable: try first, so the first byte does not
        // wait for the reactor to report a readiness it has not seen yet.
        match op() {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            result => return Poll::Ready(result),
        }
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            if let Ok(result) = guard.try_io(|_| op()) {
                return Poll::Ready(result);
            }
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        std::future::poll_fn(|cx| {
            if interrupt.poll_recv(cx).is_ready() || terminate.poll_recv(cx).is_ready() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
        tracing::info!("shutdown signal received");
    })
}

/// A backend connection: TCP, or a Unix socket for a `unix:` base URL (a local
/// model server).
pub enum BackendStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsFd for BackendStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            BackendStream::Tcp(stream) => stream.as_fd(),
            BackendStream::Unix(stream) => stream.as_fd(),
        }
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            BackendStream::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            BackendStream::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            BackendStream::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Tcp(stream) => stream.is_write_vectored(),
            BackendStream::Unix(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            BackendStream::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            BackendStream::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}
