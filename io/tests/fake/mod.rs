//! A socket-free [`Runtime`] for driving io/ in tests: a manual clock the test
//! moves, timers that fire when it passes them, a run-until-stalled executor
//! that counts live tasks, and an in-memory client whose reading the test
//! controls.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use handoff_io::client::ClientIo;
use handoff_io::runtime::{ReadyFd, Runtime, Timer};

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

#[derive(Clone)]
pub struct FakeRuntime {
    clock: Arc<Mutex<Clock>>,
    queue: Arc<Mutex<VecDeque<Arc<Task>>>>,
    tasks: Arc<Mutex<Vec<Arc<Task>>>>,
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        let clock = Clock { now: Some(Instant::now()), timers: Vec::new() };
        FakeRuntime { clock: Arc::new(Mutex::new(clock)), queue: Arc::default(), tasks: Arc::default() }
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
    type Tcp = tokio::io::DuplexStream;

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

    fn connect_tcp(&self, _host: &str, _port: u16) -> impl Future<Output = io::Result<Self::Tcp>> + Send {
        std::future::ready(Err(io::Error::new(io::ErrorKind::Unsupported, "the fake runtime has no network")))
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
