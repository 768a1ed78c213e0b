//! [`handoff_io::runtime::Runtime`] on smol's executor and a reactor per worker
//! thread ([`crate::reactor`]): async-io's reactor is process-global (one epoll and
//! one lock for every worker), so shared-nothing workers need their own. Tasks run
//! on `smol::Executor`, each run by one worker thread only; fds, the backend TCP
//! streams and timers live on that worker's reactor. The backend stream speaks
//! tokio's I/O traits itself (the traits only: no tokio runtime starts), readiness
//! first, with no compat layer.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use handoff_io::runtime::{ReadyFd, Runtime, TcpKeepalive, Timer};
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::reactor::{self, Dir, Source};

/// One worker's runtime. Its handles belong to the worker thread that made them
/// (see [`crate::reactor`]): `register`, `timer` and `connect_tcp` must be called
/// from a task of this worker, which is the only place the daemon calls them.
#[derive(Clone)]
pub struct SmolRuntime {
    executor: Arc<smol::Executor<'static>>,
}

impl SmolRuntime {
    pub fn new(executor: Arc<smol::Executor<'static>>) -> Self {
        SmolRuntime { executor }
    }
}

impl Runtime for SmolRuntime {
    type Timer = SmolTimer;
    type Fd = SmolFd;
    type Tcp = SmolTcp;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.executor.spawn(future).detach();
    }

    fn timer(&self, deadline: Instant) -> SmolTimer {
        SmolTimer(reactor::Timer::new(deadline))
    }

    fn register(&self, fd: OwnedFd) -> io::Result<SmolFd> {
        Source::new(fd, true).map(SmolFd)
    }

    fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        keepalive: Option<TcpKeepalive>,
    ) -> impl Future<Output = io::Result<Self::Tcp>> + Send {
        let host = host.to_owned();
        async move {
            let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                // DNS blocks: it runs on smol's blocking pool, only for host names;
                // its completion wakes the worker through the executor's waker.
                Err(_) => {
                    smol::unblock(move || (host.as_str(), port).to_socket_addrs().map(Vec::from_iter)).await?
                }
            };
            let mut last_error =
                io::Error::new(io::ErrorKind::NotFound, "the host name resolved to no address");
            for address in addresses {
                match connect(address, keepalive).await {
                    Ok(stream) => return Ok(stream),
                    Err(error) => {
                        last_error = io::Error::new(error.kind(), format!("connecting to {address}: {error}"))
                    }
                }
            }
            Err(last_error)
        }
    }

    fn connect_unix(&self, path: &std::path::Path) -> impl Future<Output = io::Result<Self::Tcp>> + Send {
        connect_unix(path.to_owned())
    }
}

/// A Unix stream socket connect: it completes at once, or says EAGAIN while the
/// server's backlog is full (then writability means room).
async fn connect_unix(path: std::path::PathBuf) -> io::Result<SmolTcp> {
    let address = rustix::net::SocketAddrUnix::new(path.as_path())?;
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    let pending = match rustix::net::connect(&socket, &address) {
        Ok(()) => false,
        Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INPROGRESS) => true,
        Err(error) => return Err(error.into()),
    };
    let source = Source::new(socket, false)?;
    if pending {
        std::future::poll_fn(|cx| source.poll_ready(Dir::Write, cx)).await?;
        if let Err(error) = rustix::net::sockopt::socket_error(&source)? {
            return Err(error.into());
        }
    }
    Ok(SmolTcp(source))
}

/// A non-blocking connect: wait writable, then read `SO_ERROR`.
async fn connect(address: SocketAddr, keepalive: Option<TcpKeepalive>) -> io::Result<SmolTcp> {
    let family = if address.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let socket = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::sockopt::set_tcp_nodelay(&socket, true)?;
    handoff_io::sys::set_tcp_keepalive(socket.as_fd(), keepalive)?;
    match rustix::net::connect(&socket, &address) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(error) => return Err(error.into()),
    }
    let source = Source::new(socket, false)?;
    std::future::poll_fn(|cx| source.poll_ready(Dir::Write, cx)).await?;
    match rustix::net::sockopt::socket_error(&source)? {
        Ok(()) => Ok(SmolTcp(source)),
        Err(error) => Err(error.into()),
    }
}

pub struct SmolTimer(reactor::Timer);

impl Timer for SmolTimer {
    fn reset(&mut self, deadline: Instant) {
        self.0.reset(deadline);
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_expired(cx)
    }
}

pub struct SmolFd(Source);

impl AsFd for SmolFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl ReadyFd for SmolFd {
    fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        self.0.poll_with(Dir::Read, cx, op)
    }

    fn poll_write_with<T>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        self.0.poll_with(Dir::Write, cx, op)
    }
}

/// A connected backend TCP stream on the worker's reactor, with tokio's I/O
/// traits: it reads only when the reactor said readable.
pub struct SmolTcp(Source);

impl AsFd for SmolTcp {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsyncRead for SmolTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let source = &self.0;
        let wanted = buf.remaining();
        let read = ready!(source.poll_with(Dir::Read, cx, || {
            rustix::io::read(source, buf.initialize_unfilled()).map_err(io::Error::from)
        }))?;
        buf.advance(read);
        // A short read drained the socket: wait for the next edge instead of
        // paying a failed read to learn it (data since then brings a new edge;
        // a hang-up already reported keeps the bit, see `drained`).
        if read > 0 && read < wanted {
            source.drained(Dir::Read);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SmolTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        let source = &self.0;
        // NOSIGNAL: a backend that went away is an error, not a SIGPIPE.
        let sent = ready!(source.poll_with(Dir::Write, cx, || {
            rustix::net::send(source, bytes, SendFlags::NOSIGNAL).map_err(io::Error::from)
        }))?;
        // A short write filled the send buffer: the next one waits for an edge.
        if sent < bytes.len() {
            source.drained(Dir::Write);
        }
        Poll::Ready(Ok(sent))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let source = &self.0;
        // writev has no MSG_NOSIGNAL; Rust's runtime ignores SIGPIPE in the binary.
        let sent =
            ready!(source
                .poll_with(Dir::Write, cx, || rustix::io::writev(source, slices).map_err(io::Error::from)))?;
        if sent < slices.iter().map(|slice| slice.len()).sum::<usize>() {
            source.drained(Dir::Write);
        }
        Poll::Ready(Ok(sent))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match rustix::net::shutdown(&self.0, rustix::net::Shutdown::Write) {
            // Already gone: there is nothing left to shut.
            Ok(()) | Err(rustix::io::Errno::NOTCONN) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(error.into())),
        }
    }
}

/// Completes on the first SIGINT or SIGTERM. The handlers write a byte to a
/// non-blocking socket pair whose read end is on this worker's reactor (async-io's
/// `async-signal` would need async-io's reactor); they stay installed after the
/// first signal, so a second one does not kill the daemon mid-drain.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    let writer = Arc::new(writer);
    for signal in [rustix::process::Signal::INT, rustix::process::Signal::TERM] {
        let writer = writer.clone();
        // SAFETY: the action only calls write(2) on a non-blocking socket (a full
        // buffer just drops the byte: one is enough), which is async-signal-safe;
        // signal-hook-registry keeps errno intact around it.
        unsafe {
            signal_hook_registry::register(signal.as_raw(), move || {
                let _ = rustix::io::write(&*writer, &[1]);
            })
        }?;
    }
    let reader = Source::new(OwnedFd::from(reader), false)?;
    Ok(async move {
        let mut byte = [0u8; 16];
        let _ = std::future::poll_fn(|cx| {
            reader.poll_with(Dir::Read, cx, || rustix::io::read(&reader, &mut byte).map_err(io::Error::from))
        })
        .await;
        tracing::info!("shutdown signal received");
    })
}
