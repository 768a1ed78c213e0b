//! [`handoff_io::runtime::Runtime`] on smol: async-io for readiness and timers,
//! async-executor for tasks, `tokio_util::compat` to give h2 and tokio-rustls the
//! tokio I/O traits they need (a pure trait bridge: no tokio runtime starts).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use async_io::Async;
use futures_lite::StreamExt;
use handoff_io::runtime::{ReadyFd, Runtime, Timer};
use tokio_util::compat::{Compat, FuturesAsyncReadCompatExt};

use crate::timer_queue::{QueueTimer, TimerQueue};

#[derive(Clone)]
pub struct SmolRuntime {
    executor: Arc<smol::Executor<'static>>,
    timers: Arc<TimerQueue>,
}

impl SmolRuntime {
    /// Also starts the timer queue's driver task on `executor`.
    pub fn new(executor: Arc<smol::Executor<'static>>) -> Self {
        let timers = TimerQueue::new();
        executor.spawn(timers.clone().drive()).detach();
        SmolRuntime { executor, timers }
    }
}

impl Runtime for SmolRuntime {
    type Timer = SmolTimer;
    type Fd = SmolFd;
    type Tcp = Compat<Async<TcpStream>>;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.executor.spawn(future).detach();
    }

    fn timer(&self, deadline: Instant) -> SmolTimer {
        SmolTimer(QueueTimer::new(self.timers.clone(), deadline))
    }

    fn register(&self, fd: OwnedFd) -> io::Result<SmolFd> {
        Async::new_nonblocking(fd).map(SmolFd)
    }

    fn connect_tcp(&self, host: &str, port: u16) -> impl Future<Output = io::Result<Self::Tcp>> + Send {
        let host = host.to_owned();
        async move {
            let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![SocketAddr::new(ip, port)],
                // DNS blocks: it runs on smol's blocking pool, only for host names.
                Err(_) => {
                    smol::unblock(move || (host.as_str(), port).to_socket_addrs().map(Vec::from_iter)).await?
                }
            };
            let mut last_error =
                io::Error::new(io::ErrorKind::NotFound, "the host name resolved to no address");
            for address in addresses {
                match Async::<TcpStream>::connect(address).await {
                    Ok(stream) => {
                        stream.get_ref().set_nodelay(true)?;
                        return Ok(stream.compat());
                    }
                    Err(error) => last_error = error,
                }
            }
            Err(last_error)
        }
    }
}

pub struct SmolTimer(QueueTimer);

impl Timer for SmolTimer {
    fn reset(&mut self, deadline: Instant) {
        self.0.reset(deadline);
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.0.poll_expired(cx)
    }
}

pub struct SmolFd(Async<OwnedFd>);

impl AsFd for SmolFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.get_ref().as_fd()
    }
}

impl ReadyFd for SmolFd {
    fn poll_read_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            ready!(self.0.poll_readable(cx))?;
            match op() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    fn poll_write_with<T>(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        // Sockets are nearly always writable: try first, wait only when full.
        loop {
            match op() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => ready!(self.0.poll_writable(cx))?,
                result => return Poll::Ready(result),
            }
        }
    }
}

/// Completes on the first SIGINT or SIGTERM.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    let mut signals = async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])?;
    Ok(async move {
        let _ = signals.next().await;
        tracing::info!("shutdown signal received");
    })
}
