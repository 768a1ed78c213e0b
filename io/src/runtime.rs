//! The four things a runtime must provide. Everything else in the daemon is written
//! once, against these traits, and runs unchanged on tokio and on smol.

pub use handoff_core::pool::TcpKeepalive;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite};

/// A runtime: spawning, timers, fd readiness and TCP connect.
pub trait Runtime: Clone + Send + Sync + 'static {
    type Timer: Timer;
    type Fd: ReadyFd;
    /// A connected TCP stream speaking tokio's I/O traits (h2 and tokio-rustls need
    /// only the traits; smol bridges with `tokio_util::compat`).
    type Tcp: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static;

    /// A timer that fires at `deadline`.
    fn timer(&self, deadline: Instant) -> Self::Timer;

    /// The time every decision is made at. Real runtimes read the clock; tests
    /// move a manual one.
    fn now(&self) -> Instant {
        Instant::now()
    }

    /// Registers a non-blocking fd for readiness events.
    fn register(&self, fd: OwnedFd) -> io::Result<Self::Fd>;

    /// Resolves `host` (skipped for IP literals) and connects.
    /// A connected TCP socket with TCP_NODELAY and, when given, the keepalive
    /// probing core chose.
    fn connect_tcp(
        &self,
        host: &str,
        port: u16,
        keepalive: Option<TcpKeepalive>,
    ) -> impl Future<Output = io::Result<Self::Tcp>> + Send;

    /// Connects to a server's Unix stream socket at `path` (a `unix:` base URL:
    /// a local model server), as the same stream type as TCP.
    fn connect_unix(&self, path: &std::path::Path) -> impl Future<Output = io::Result<Self::Tcp>> + Send {
        let error = io::Error::new(
            io::ErrorKind::Unsupported,
            format!("this runtime cannot connect to {}", path.display()),
        );
        std::future::ready(Err(error))
    }
}

/// A resettable one-shot timer.
pub trait Timer: Send + Unpin + 'static {
    /// Moves the deadline (earlier or later); the timer fires once at it.
    fn reset(&mut self, deadline: Instant);
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()>;
}

/// A registered fd. `poll_*_with` wait for readiness, run the non-blocking
/// operation, and go back to waiting when it says `WouldBlock`.
pub trait ReadyFd: AsFd + Send + Sync + Unpin + 'static {
    fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>>;

    fn poll_write_with<T>(
        &self,
        cx: &mut Context<'_>,
        op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>>;
}

/// Waits for `timer`, as a future.
pub async fn sleep_until<R: Runtime>(runtime: &R, deadline: Instant) {
    let mut timer = runtime.timer(deadline);
    std::future::poll_fn(|cx| timer.poll_expired(cx)).await
}

/// Runs `future` until `deadline`; `None` when the deadline came first.
pub async fn with_deadline<R: Runtime, F: Future>(
    runtime: &R,
    deadline: Instant,
    future: F,
) -> Option<F::Output> {
    let mut timer = runtime.timer(deadline);
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        timer.poll_expired(cx).map(|()| None)
    })
    .await
}
