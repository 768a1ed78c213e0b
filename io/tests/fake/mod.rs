//! A socket-free [`Runtime`] for driving io/ in tests: a manual clock the test
//! moves, timers that fire when it passes them, a run-until-stalled executor
//! that counts live tasks, an in-memory client whose reading the test
//! controls, and an in-memory network: `connect_tcp` hands one half of a
//! `tokio::io::duplex` pipe to the daemon and the other to a test's server
//! (see [`server`]), counting connections opened and still open.

#![allow(dead_code)]

pub mod server;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use handoff_io::client::ClientIo;
use handoff_io::runtime::{ReadyFd, Runtime, Timer};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Task {
    future: Mutex<Option<BoxedTask>>,
    queue: Arc<Mutex<VecDeque<Arc<Task>>>>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        let queue = Arc::clone(&self.queue);
        lock(&queue).push_back(self);
    }
}

#[derive(Default)]
struct Clock {
    now: Option<Instant>,
    timers: Vec<(Instant, Waker)>,
}

/// The server side of one connection the daemon opened.
pub struct ServerConn {
    pub io: DuplexStream,
    /// Connections opened before this one.
    pub index: usize,
    /// To spawn the server's tasks on (the same executor as the daemon's).
    pub runtime: FakeRuntime,
}

type Accept = Arc<dyn Fn(ServerConn) + Send + Sync>;

/// What `connect_tcp` does.
#[derive(Clone, Default)]
enum Network {
    /// Every connect fails (no server).
    #[default]
    Refused,
    /// Connects never complete (a peer that never answers the SYN).
    Hang,
    /// Connects succeed at once: a pipe of `buffer` bytes each way, whose other
    /// half goes to `accept`.
    Serve { buffer: usize, accept: Accept },
}

#[derive(Default)]
struct Net {
    network: Network,
    opened: usize,
    /// Server halves kept unread (a peer that never reads nor closes).
    parked: Vec<DuplexStream>,
}

#[derive(Clone)]
pub struct FakeRuntime {
    clock: Arc<Mutex<Clock>>,
    queue: Arc<Mutex<VecDeque<Arc<Task>>>>,
    tasks: Arc<Mutex<Vec<Arc<Task>>>>,
    net: Arc<Mutex<Net>>,
    /// Daemon-side connection halves not yet dropped.
    open: Arc<AtomicUsize>,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        let clock = Clock { now: Some(Instant::now()), timers: Vec::new() };
        FakeRuntime {
            clock: Arc::new(Mutex::new(clock)),
            queue: Arc::default(),
            tasks: Arc::default(),
            net: Arc::default(),
            open: Arc::default(),
        }
    }

    /// From now on every connect succeeds and `accept` gets the server's half of
    /// a pipe holding at most `buffer` bytes each way.
    pub fn serve(&self, buffer: usize, accept: impl Fn(ServerConn) + Send + Sync + 'static) {
        lock(&self.net).network = Network::Serve { buffer, accept: Arc::new(accept) };
    }

    /// From now on connects never complete.
    pub fn hang_connects(&self) {
        lock(&self.net).network = Network::Hang;
    }

    /// Keeps a server half alive without ever reading it.
    pub fn park(&self, io: DuplexStream) {
        lock(&self.net).parked.push(io);
    }

    /// Connections the daemon has opened (connects that succeeded).
    pub fn connections_opened(&self) -> usize {
        lock(&self.net).opened
    }

    /// Connections the daemon still holds.
    pub fn connections_open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Polls every woken task until none is left to poll (bounded).
    pub fn run_until_stalled(&self) {
        for _ in 0..100_000 {
            let Some(task) = lock(&self.queue).pop_front() else { return };
            let waker = Waker::from(Arc::clone(&task));
            let mut cx = Context::from_waker(&waker);
            let mut slot = lock(&task.future);
            if let Some(future) = slot.as_mut() {
                if future.as_mut().poll(&mut cx).is_ready() {
                    *slot = None;
                }
            }
        }
        panic!("tasks kept waking each other: livelock");
    }

    /// Moves the clock, fires the timers it passed, and runs what they woke.
    pub fn advance(&self, by: Duration) {
        let due = {
            let mut clock = lock(&self.clock);
            let now = clock.now.unwrap_or_else(Instant::now) + by;
            clock.now = Some(now);
            let (due, later): (Vec<_>, Vec<_>) = clock.timers.drain(..).partition(|(at, _)| *at <= now);
            clock.timers = later;
            due
        };
        for (_, waker) in due {
            waker.wake();
        }
        self.run_until_stalled();
    }

    /// Tasks spawned and not yet finished.
    pub fn live_tasks(&self) -> usize {
        lock(&self.tasks).iter().filter(|task| lock(&task.future).is_some()).count()
    }
}

impl Runtime for FakeRuntime {
    type Timer = FakeTimer;
    type Fd = NoFd;
    type Tcp = FakeTcp;

    fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task =
            Arc::new(Task { future: Mutex::new(Some(Box::pin(future))), queue: Arc::clone(&self.queue) });
        lock(&self.tasks).push(Arc::clone(&task));
        lock(&self.queue).push_back(task);
    }

    fn timer(&self, deadline: Instant) -> FakeTimer {
        FakeTimer { runtime: self.clone(), deadline, fired: false }
    }

    fn now(&self) -> Instant {
        lock(&self.clock).now.unwrap_or_else(Instant::now)
    }

    fn register(&self, _fd: OwnedFd) -> io::Result<NoFd> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "the fake runtime has no fds"))
    }

    fn connect_tcp(
        &self,
        _host: &str,
        _port: u16,
        _keepalive: Option<handoff_core::pool::TcpKeepalive>,
    ) -> impl Future<Output = io::Result<Self::Tcp>> + Send {
        let network = lock(&self.net).network.clone();
        let connect: Pin<Box<dyn Future<Output = io::Result<FakeTcp>> + Send>> = match network {
            Network::Refused => {
                Box::pin(std::future::ready(Err(io::Error::from(io::ErrorKind::ConnectionRefused))))
            }
            Network::Hang => Box::pin(std::future::pending()),
            Network::Serve { buffer, accept } => {
                let (ours, theirs) = tokio::io::duplex(buffer);
                let index = {
                    let mut net = lock(&self.net);
                    net.opened += 1;
                    net.opened - 1
                };
                self.open.fetch_add(1, Ordering::SeqCst);
                let tcp = FakeTcp { io: ours, open: Arc::clone(&self.open) };
                accept(ServerConn { io: theirs, index, runtime: self.clone() });
                Box::pin(std::future::ready(Ok(tcp)))
            }
        };
        connect
    }
}

/// The daemon's half of a fake connection; counted while it lives.
pub struct FakeTcp {
    io: DuplexStream,
    open: Arc<AtomicUsize>,
}

impl Drop for FakeTcp {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AsyncRead for FakeTcp {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for FakeTcp {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A latch a test opens to let a server go on.
#[derive(Clone, Default)]
pub struct Gate(Arc<Mutex<(bool, Vec<Waker>)>>);

impl Gate {
    pub fn open(&self) {
        let wakers = {
            let mut state = lock(&self.0);
            state.0 = true;
            std::mem::take(&mut state.1)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    pub fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = lock(&self.0);
        if state.0 {
            return Poll::Ready(());
        }
        state.1.push(cx.waker().clone());
        Poll::Pending
    }

    pub async fn wait(&self) {
        std::future::poll_fn(|cx| self.poll_open(cx)).await
    }
}

pub struct FakeTimer {
    runtime: FakeRuntime,
    deadline: Instant,
    fired: bool,
}

impl Timer for FakeTimer {
    fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        self.fired = false;
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired {
            return Poll::Pending;
        }
        if self.runtime.now() >= self.deadline {
            self.fired = true;
            return Poll::Ready(());
        }
        lock(&self.runtime.clock).timers.push((self.deadline, cx.waker().clone()));
        Poll::Pending
    }
}

/// Never constructed: the fake runtime registers no fds.
pub struct NoFd(OwnedFd);

impl AsFd for NoFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl ReadyFd for NoFd {
    fn poll_read_with<T>(
        &self,
        _: &mut Context<'_>,
        _: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        Poll::Ready(Err(io::Error::from(io::ErrorKind::Unsupported)))
    }

    fn poll_write_with<T>(
        &self,
        _: &mut Context<'_>,
        _: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        Poll::Ready(Err(io::Error::from(io::ErrorKind::Unsupported)))
    }
}

/// What the in-memory client has seen, and how much it will still take.
#[derive(Default)]
pub struct ClientState {
    pub received: Vec<u8>,
    /// Bytes the client accepts before writes block.
    pub room: usize,
    /// The client has gone away (EOF and broken pipe from now on).
    pub gone: bool,
    pub shut_down: bool,
    writer: Option<Waker>,
    reader: Option<Waker>,
}

#[derive(Clone, Default)]
pub struct FakeClient(pub Arc<Mutex<ClientState>>);

impl FakeClient {
    /// A client that takes up to `room` bytes before it stops reading.
    pub fn with_room(room: usize) -> FakeClient {
        FakeClient(Arc::new(Mutex::new(ClientState { room, ..ClientState::default() })))
    }

    pub fn state(&self) -> MutexGuard<'_, ClientState> {
        lock(&self.0)
    }

    /// The client reads `bytes` more.
    pub fn read(&self, bytes: usize) {
        let waker = {
            let mut state = self.state();
            state.room += bytes;
            state.writer.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The client closes its socket.
    pub fn leave(&self) {
        let wakers = {
            let mut state = self.state();
            state.gone = true;
            [state.writer.take(), state.reader.take()]
        };
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    pub fn received_text(&self) -> String {
        String::from_utf8_lossy(&self.state().received).into_owned()
    }

    fn take(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut state = self.state();
        if state.gone {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe));
        }
        let taken = bytes.len().min(state.room);
        state.room -= taken;
        state.received.extend_from_slice(&bytes[..taken]);
        Ok(taken)
    }
}

impl ClientIo for FakeClient {
    fn poll_write(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        match self.take(bytes) {
            Ok(0) if !bytes.is_empty() => {
                self.state().writer = Some(cx.waker().clone());
                Poll::Pending
            }
            result => Poll::Ready(result),
        }
    }

    fn write_now(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.take(bytes)
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state();
        if state.gone {
            return Poll::Ready(());
        }
        state.reader = Some(cx.waker().clone());
        Poll::Pending
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.state().shut_down = true;
        Ok(())
    }
}
