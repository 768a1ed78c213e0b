use super::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::task::Wake;

const MS: Duration = Duration::from_millis(1);

/// Runs `body` on its own thread and fails, instead of hanging, when it has not
/// finished within `limit` (a lost wakeup shows as a hang).
fn bounded<T: Send + 'static>(what: &str, limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)));
    });
    match finished.recv_timeout(limit) {
        Ok(Ok(value)) => value,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("{what}: not finished within {limit:?}: a task was never woken"),
    }
}

/// Runs `make()` on a smol executor driven by this module's `block_on`, on its own
/// thread, bounded by 10 s.
fn run<T, F>(make: impl FnOnce(Arc<smol::Executor<'static>>) -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + 'static,
{
    bounded("run", Duration::from_secs(10), move || {
        let executor = Arc::new(smol::Executor::new());
        let future = make(executor.clone());
        block_on(executor.run(future)).expect("the reactor runs")
    })
}

/// Runs `body` synchronously with a reactor installed on this thread.
fn with_reactor<T>(body: impl FnOnce() -> T) -> T {
    let mut body = Some(body);
    block_on(std::future::poll_fn(|_| Poll::Ready(body.take().map(|body| body()))))
        .expect("the reactor runs")
        .expect("polled once")
}

#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Count {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn counting_waker() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count::default());
    (count.clone(), Waker::from(count))
}

/// One timer pass of the reactor, by hand, with the clock at `now`.
fn expire_at(now: Instant) {
    let mut due = Vec::new();
    with_core(None, |core| core.expire(now, &mut due)).expect("a reactor");
    due.into_iter().for_each(Waker::wake);
}

fn timer_entries() -> usize {
    with_core(None, |core| core.timers.len()).expect("a reactor")
}

fn pair() -> (Source, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    ours.set_nonblocking(true).expect("non-blocking");
    (Source::new(OwnedFd::from(ours), true).expect("registered"), theirs)
}

fn read_some(source: &Source, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
    source.poll_with(Dir::Read, cx, || rustix::io::read(source, &mut *buf).map_err(io::Error::from))
}

async fn read_async(source: &Source, buf: &mut [u8]) -> io::Result<usize> {
    std::future::poll_fn(|cx| read_some(source, cx, buf)).await
}

#[test]
fn an_edge_after_would_block_wakes_the_reader_and_leftover_data_needs_no_edge() {
    let (got, left) = run(|_| async {
        let (source, mut peer) = pair();
        let mut buf = [0u8; 4];
        // Nothing yet: pending, the waker registered.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(20 * MS);
            peer.write_all(b"abcdefgh").expect("written");
            peer
        });
        let first = read_async(&source, &mut buf).await.expect("read");
        let mut got = buf[..first].to_vec();
        // The rest of the 8 bytes is still there: the bit stays set without a new edge.
        while got.len() < 8 {
            let n = read_async(&source, &mut buf).await.expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        // Drained: the next read waits for the next edge, which must not be lost.
        let mut peer = writer.join().expect("the writer");
        let later = std::thread::spawn(move || {
            std::thread::sleep(20 * MS);
            peer.write_all(b"xy").expect("written");
            peer
        });
        let n = read_async(&source, &mut buf).await.expect("read");
        let _peer = later.join().expect("the writer");
        (got, buf[..n].to_vec())
    });
    assert_eq!(got, b"abcdefgh");
    assert_eq!(left, b"xy");
}

#[test]
fn a_wait_with_no_ready_bit_registers_the_latest_waker() {
    with_reactor(|| {
        let (source, mut peer) = pair();
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        let mut buf = [0u8; 4];
        assert!(read_some(&source, &mut Context::from_waker(&first_waker), &mut buf).is_pending());
        assert!(read_some(&source, &mut Context::from_waker(&second_waker), &mut buf).is_pending());
        peer.write_all(b"a").expect("written");
        let mut due = Vec::new();
        let shared = with_core(None, |core| core.shared.clone()).expect("a reactor");
        let mut events = Vec::with_capacity(8);
        epoll::wait(
            &shared.epoll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&Timespec { tv_sec: 5, tv_nsec: 0 }),
        )
        .expect("waited");
        with_core(None, |core| events.iter().for_each(|e| core.dispatch(e.data.u64(), e.flags, &mut due)));
        due.into_iter().for_each(Waker::wake);
        assert_eq!((first.get(), second.get()), (0, 1));
        assert!(matches!(
            read_some(&source, &mut Context::from_waker(&second_waker), &mut buf),
            Poll::Ready(Ok(1))
        ));
    });
}

#[test]
fn a_dropped_source_leaves_the_epoll_and_its_slot_is_reused() {
    with_reactor(|| {
        let (ours, mut peer) = UnixStream::pair().expect("a socket pair");
        ours.set_nonblocking(true).expect("non-blocking");
        // A duplicate keeps the file open: epoll would go on reporting it had the
        // drop not deleted the registration.
        let duplicate = ours.try_clone().expect("dup");
        let source = Source::new(OwnedFd::from(ours), true).expect("registered");
        let (index, generation) = (source.index, source.generation);
        let shared = source.shared.clone();
        drop(source);
        peer.write_all(b"after the drop").expect("written");
        let mut events = Vec::with_capacity(8);
        let spec = Timespec { tv_sec: 0, tv_nsec: 20_000_000 };
        epoll::wait(&shared.epoll, rustix::buffer::spare_capacity(&mut events), Some(&spec)).expect("waited");
        assert!(
            events.iter().all(|event| event.data.u64() == NOTIFY_KEY),
            "the dropped fd still reports events"
        );
        let (again, _peer) = pair();
        assert_eq!(again.index, index, "the freed slot is reused");
        assert_ne!(again.generation, generation, "with a new generation, so stale events miss it");
        drop(duplicate);
    });
}

#[test]
fn a_source_used_off_its_worker_thread_errors_and_drops_safely() {
    let source = with_reactor(pair);
    // This thread's reactor is gone (block_on returned): as off-thread.
    let (_, waker) = counting_waker();
    assert!(matches!(source.0.poll_ready(Dir::Read, &mut Context::from_waker(&waker)), Poll::Ready(Err(_))));
    let moved = std::thread::spawn(move || {
        let (_, waker) = counting_waker();
        let poll = with_reactor(|| source.0.poll_ready(Dir::Write, &mut Context::from_waker(&waker)));
        drop(source);
        matches!(poll, Poll::Ready(Err(_)))
    });
    assert!(moved.join().expect("the other thread"), "another worker's reactor served the source");
}

#[test]
fn registering_without_a_reactor_is_an_error() {
    let (ours, _theirs) = UnixStream::pair().expect("a socket pair");
    assert!(Source::new(OwnedFd::from(ours), true).is_err());
}

#[test]
fn block_on_does_not_nest() {
    with_reactor(|| assert!(block_on(async {}).is_err()));
}

#[test]
fn a_cross_thread_wake_reaches_a_sleeping_worker() {
    // No fds, no timers: the worker sleeps in epoll_wait without a timeout, and
    // only the eventfd written by the other thread's wake can end it.
    bounded("cross-thread wake", Duration::from_secs(10), || {
        let (sender, receiver) = smol::channel::bounded::<u32>(1);
        let other = std::thread::spawn(move || {
            std::thread::sleep(50 * MS);
            sender.send_blocking(7).expect("sent");
        });
        let executor = smol::Executor::new();
        let got = block_on(executor.run(receiver.recv())).expect("the reactor runs");
        other.join().expect("the sender");
        assert_eq!(got, Ok(7));
    });
}

#[test]
fn a_wake_on_its_own_thread_while_running_writes_no_eventfd() {
    with_reactor(|| {
        let shared = with_core(None, |core| core.shared.clone()).expect("a reactor");
        for _ in 0..100 {
            shared.wake();
        }
        let mut count = [0u8; 8];
        assert_eq!(rustix::io::read(&shared.eventfd, &mut count), Err(rustix::io::Errno::AGAIN));
    });
}

#[test]
fn connect_reads_and_writes_through_the_reactor_and_refusal_is_an_error() {
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let address = listener.local_addr().expect("an address");
    let echo = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepted");
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).expect("read");
        stream.write_all(&buf).expect("written");
        assert!(stream.set_nodelay(true).is_ok());
    });
    let (echoed, refused, nodelay) = run(move |_| async move {
        let runtime = crate::runtime::SmolRuntime::new(Arc::new(smol::Executor::new()));
        let mut tcp = handoff_io::runtime::Runtime::connect_tcp(&runtime, "127.0.0.1", address.port(), None)
            .await
            .expect("connected");
        let nodelay = rustix::net::sockopt::tcp_nodelay(&tcp).expect("TCP_NODELAY");
        let mut written = 0;
        while written < 5 {
            written += std::future::poll_fn(|cx| Pin::new(&mut tcp).poll_write(cx, &b"hello"[written..]))
                .await
                .expect("written");
        }
        let mut out = [0u8; 5];
        let mut filled = 0;
        while filled < 5 {
            let mut buf = ReadBuf::new(&mut out[filled..]);
            std::future::poll_fn(|cx| Pin::new(&mut tcp).poll_read(cx, &mut buf)).await.expect("read");
            assert!(!buf.filled().is_empty(), "EOF before the echo");
            filled += buf.filled().len();
        }
        // Nothing listens on the listener's port once it is closed after the accept.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let port = closed.local_addr().expect("an address").port();
        drop(closed);
        let refused =
            handoff_io::runtime::Runtime::connect_tcp(&runtime, "127.0.0.1", port, None).await.is_err();
        (out, refused, nodelay)
    });
    echo.join().expect("the echo thread");
    assert_eq!(&echoed, b"hello");
    assert!(refused, "a refused connect must fail");
    assert!(nodelay, "backend streams keep TCP_NODELAY");
}

/// What a peer does after its last bytes.
#[derive(Clone, Copy, Debug)]
enum PeerEnd {
    Close,
    Reset,
}

/// The peer's last bytes and its hang-up can be reported in one turn, or in two
/// before the reader runs: the short read that takes the bytes must not clear the
/// bit, or the EOF (or reset) is never read and the stream waits forever. This is
/// how a backend's 200 head then reset left HTTP/1.1 streams hanging under load.
#[test]
fn a_hang_up_reported_with_the_last_bytes_is_still_read_after_a_short_read() {
    use tokio::io::{AsyncRead, ReadBuf};
    for end in [PeerEnd::Close, PeerEnd::Reset] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
        let address = listener.local_addr().expect("an address");
        // The peer answers only once the connect has completed: a reset before
        // that would fail the connect itself (SO_ERROR), which is not under test.
        let (connected, wait_connected) = std::sync::mpsc::channel::<()>();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accepted");
            wait_connected.recv().expect("the client connected");
            stream.write_all(b"HTTP/1.1 200 OK\r\n\r\n").expect("written");
            if let PeerEnd::Reset = end {
                rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO)).expect("SO_LINGER");
            }
        });
        let (first, second) = run(move |_| async move {
            let runtime = crate::runtime::SmolRuntime::new(Arc::new(smol::Executor::new()));
            let mut tcp =
                handoff_io::runtime::Runtime::connect_tcp(&runtime, "127.0.0.1", address.port(), None)
                    .await
                    .expect("connected");
            connected.send(()).expect("the peer waits");
            // Not reading while the reactor turns, so it reports both edges first.
            let mut pause = Timer::new(Instant::now() + 50 * MS);
            std::future::poll_fn(|cx| pause.poll_expired(cx)).await;
            let mut out = [0u8; 4096];
            let mut buf = ReadBuf::new(&mut out);
            std::future::poll_fn(|cx| Pin::new(&mut tcp).poll_read(cx, &mut buf)).await.expect("the bytes");
            let first = buf.filled().len();
            let mut buf = ReadBuf::new(&mut out);
            let second = std::future::poll_fn(|cx| Pin::new(&mut tcp).poll_read(cx, &mut buf))
                .await
                .map(|()| buf.filled().len());
            (first, second)
        });
        peer.join().expect("the peer thread");
        assert_eq!(first, 19, "{end:?}: the bytes before the hang-up");
        match (end, second) {
            (PeerEnd::Close, Ok(0)) => {}
            (PeerEnd::Reset, Err(error)) => assert_eq!(error.kind(), io::ErrorKind::ConnectionReset),
            (end, other) => panic!("{end:?}: then {other:?}"),
        }
    }
}

#[test]
fn the_reactor_never_takes_a_timer_before_its_deadline() {
    with_reactor(|| {
        let start = Instant::now();
        let boundary = instant_of(tick_at_or_after(start) + 3).expect("a near tick");
        let deadlines = [0, 1, 999_999, 1_000_000, 1_000_001, 2_345_678]
            .map(|nanos| start + Duration::from_nanos(nanos))
            .into_iter()
            .chain([boundary, boundary + Duration::from_nanos(1), boundary - Duration::from_nanos(1)]);
        for deadline in deadlines {
            let (woken, waker) = counting_waker();
            let mut timer = Timer::new(deadline);
            let mut cx = Context::from_waker(&waker);
            let before = deadline - Duration::from_nanos(1);
            assert!(timer.poll_expired_at(&mut cx, before).is_pending());
            expire_at(before);
            assert_eq!(woken.get(), 0, "woken before {deadline:?}");
            assert!(timer.poll_expired_at(&mut cx, before).is_pending());
            expire_at(instant_of(tick_at_or_after(deadline)).expect("a near tick"));
            assert_eq!(woken.get(), 1, "not woken at the tick after {deadline:?}");
            assert!(timer.poll_expired_at(&mut cx, deadline).is_ready());
        }
        assert_eq!(timer_entries(), 0);
    });
}

#[test]
fn a_reset_keeps_the_waker_when_the_reactor_fired_the_old_entry() {
    with_reactor(|| {
        let (woken, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let start = Instant::now();
        let mut timer = Timer::new(start + 5 * MS);
        assert!(timer.poll_expired_at(&mut cx, start).is_pending());
        expire_at(start + 6 * MS);
        assert_eq!(woken.get(), 1);
        // Reset before polling again: the new deadline must still wake the task.
        timer.reset(start + 20 * MS);
        expire_at(start + 19 * MS);
        assert_eq!(woken.get(), 1, "woken before the new deadline");
        expire_at(start + 21 * MS);
        assert_eq!(woken.get(), 2, "the new deadline must wake the task that last polled");
        assert!(timer.poll_expired_at(&mut cx, start + 21 * MS).is_ready());
        assert!(timer.poll_expired_at(&mut cx, start + 22 * MS).is_pending(), "fires once per deadline");
        timer.reset(start + 30 * MS);
        expire_at(start + 31 * MS);
        assert_eq!(woken.get(), 3, "an expired timer's reset wakes its last poller");
    });
}

#[test]
fn the_latest_poller_is_woken_and_a_reset_carries_it() {
    with_reactor(|| {
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        let start = Instant::now();
        let mut timer = Timer::new(start + 5 * MS);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&first_waker), start).is_pending());
        assert!(timer.poll_expired_at(&mut Context::from_waker(&second_waker), start).is_pending());
        timer.reset(start + 10 * MS);
        expire_at(start + 11 * MS);
        assert_eq!((first.get(), second.get()), (0, 1));
    });
}

#[test]
fn deadlines_beyond_the_tick_range_are_never_due() {
    with_reactor(|| {
        let (woken, waker) = counting_waker();
        let beyond = u64::MAX / 1000 + 1_000;
        let (Some(deadline), Some(later)) = (
            epoch().checked_add(Duration::from_secs(beyond)),
            epoch().checked_add(Duration::from_secs(beyond - 10)),
        ) else {
            // This platform's Instant cannot hold such deadlines at all.
            return;
        };
        let mut timer = Timer::new(deadline);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&waker), Instant::now()).is_pending());
        expire_at(later);
        assert_eq!(woken.get(), 0, "fired early");
        assert_eq!(with_core(None, |core| core.timeout(later)).flatten(), None, "no wait timeout for it");
    });
}

#[test]
fn a_reset_within_the_same_tick_leaves_the_map_alone() {
    with_reactor(|| {
        let base = instant_of(tick_at_or_after(Instant::now()) + 10).expect("a near tick");
        let mut timer = Timer::new(base - Duration::from_micros(300));
        let key = timer.key;
        timer.reset(base - Duration::from_micros(100));
        assert_eq!(timer.key, key);
        timer.reset(base + Duration::from_micros(100));
        assert_ne!(timer.key, key);
        assert_eq!(timer_entries(), 1);
    });
}

#[test]
fn a_dropped_timer_leaves_the_map() {
    with_reactor(|| {
        let (_, waker) = counting_waker();
        let start = Instant::now();
        let mut timer = Timer::new(start + 5 * MS);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&waker), start).is_pending());
        drop(timer);
        assert_eq!(timer_entries(), 0);
    });
}

/// A waker that, when woken, drops a timer and makes a new one: it runs while
/// the reactor dispatches, so the reactor must not be borrowed then.
struct Reentrant(std::sync::Mutex<Option<Timer>>, AtomicUsize);

impl Wake for Reentrant {
    fn wake(self: Arc<Self>) {
        let old = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        drop(old);
        let _fresh = Timer::new(Instant::now() + Duration::from_secs(60));
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn wakers_run_outside_the_reactor_so_reentrant_ones_are_safe() {
    with_reactor(|| {
        let start = Instant::now();
        let reentrant = Arc::new(Reentrant(
            std::sync::Mutex::new(Some(Timer::new(start + 50 * MS))),
            AtomicUsize::new(0),
        ));
        let waker = Waker::from(reentrant.clone());
        let mut timer = Timer::new(start + 5 * MS);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&waker), start).is_pending());
        expire_at(start + 6 * MS);
        assert_eq!(reentrant.1.load(Ordering::SeqCst), 1);
        assert_eq!(timer_entries(), 0, "the dropped timer left and the fresh one too");
    });
}

#[test]
fn a_timer_fires_at_its_deadline_not_before() {
    let (start, woke) = run(|_| async move {
        let start = Instant::now();
        let mut timer = Timer::new(start + 30 * MS);
        std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
        (start, Instant::now())
    });
    assert!(woke >= start + 30 * MS, "fired early: {:?}", woke - start);
}

#[test]
fn reset_moves_the_deadline_and_fires_once_per_deadline() {
    let (start, first, second) = run(|_| async move {
        let start = Instant::now();
        let mut timer = Timer::new(start);
        timer.reset(start + 20 * MS);
        std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
        let first = Instant::now();
        timer.reset(first + 20 * MS);
        std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
        (start, first, Instant::now())
    });
    assert!(first >= start + 20 * MS);
    assert!(second >= first + 20 * MS);
}

#[test]
fn an_earlier_deadline_shortens_the_sleep() {
    let (late_deadline, early_woke) = run(|_| async move {
        let late_deadline = Instant::now() + Duration::from_secs(5);
        let mut late = Timer::new(late_deadline);
        let poll = std::future::poll_fn(|cx| Poll::Ready(late.poll_expired(cx))).await;
        assert!(poll.is_pending());
        let mut early = Timer::new(Instant::now() + 10 * MS);
        std::future::poll_fn(|cx| early.poll_expired(cx)).await;
        (late_deadline, Instant::now())
    });
    assert!(early_woke < late_deadline, "the earlier deadline waited for the later one");
}

/// A small xorshift: reproducible per task, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }

    /// 0 to 3 ms, with a bias to the sub-millisecond.
    fn short(&mut self) -> Duration {
        match self.below(4) {
            0 => Duration::from_nanos(self.below(1_000_000)),
            _ => Duration::from_micros(self.below(3_000)),
        }
    }
}

#[test]
fn stress_many_tasks_many_timers_none_early_none_lost() {
    const TASKS: u64 = 300;
    const ROUNDS: u32 = 40;
    let early = run(|executor| async move {
        let tasks: Vec<_> = (0..TASKS)
            .map(|i| {
                let executor2 = executor.clone();
                executor.spawn(async move {
                    let mut rng = Rng((0x9e37_79b9_7f4a_7c15 ^ i) | 1);
                    let mut early = 0;
                    for _ in 0..ROUNDS {
                        let mut deadline = Instant::now() + rng.short();
                        let mut timer = Timer::new(deadline);
                        match rng.below(3) {
                            0 => {}
                            // Reset before the first poll, maybe into the past.
                            1 => {
                                deadline = (Instant::now() + rng.short())
                                    .checked_sub(Duration::from_micros(500))
                                    .unwrap_or_else(Instant::now);
                                timer.reset(deadline);
                            }
                            // Polled here, awaited by another task: the waker changes.
                            _ => {
                                let poll =
                                    std::future::poll_fn(|cx| Poll::Ready(timer.poll_expired(cx))).await;
                                if poll.is_ready() {
                                    early += usize::from(Instant::now() < deadline);
                                    continue;
                                }
                                let woke = executor2
                                    .spawn(async move {
                                        std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
                                        Instant::now()
                                    })
                                    .await;
                                early += usize::from(woke < deadline);
                                continue;
                            }
                        }
                        std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
                        early += usize::from(Instant::now() < deadline);
                    }
                    early
                })
            })
            .collect();
        let mut early = 0;
        for task in tasks {
            early += task.await;
        }
        early
    });
    assert_eq!(early, 0, "timers fired early");
}

#[test]
fn backend_sockets_carry_the_keepalive_core_chose_and_none_when_it_is_off() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let port = listener.local_addr().expect("an address").port();
    let chosen = handoff_io::runtime::TcpKeepalive {
        idle: Duration::from_secs(42),
        interval: Duration::from_secs(7),
        probes: 5,
    };
    let (on, off) = run(move |_| async move {
        let runtime = crate::runtime::SmolRuntime::new(Arc::new(smol::Executor::new()));
        let with = handoff_io::runtime::Runtime::connect_tcp(&runtime, "127.0.0.1", port, Some(chosen))
            .await
            .expect("connected");
        let without = handoff_io::runtime::Runtime::connect_tcp(&runtime, "127.0.0.1", port, None)
            .await
            .expect("connected");
        use rustix::net::sockopt;
        let on = (
            sockopt::socket_keepalive(&with).expect("SO_KEEPALIVE"),
            sockopt::tcp_keepidle(&with).expect("TCP_KEEPIDLE"),
            sockopt::tcp_keepintvl(&with).expect("TCP_KEEPINTVL"),
            sockopt::tcp_keepcnt(&with).expect("TCP_KEEPCNT"),
        );
        (on, sockopt::socket_keepalive(&without).expect("SO_KEEPALIVE"))
    });
    assert_eq!(on, (true, Duration::from_secs(42), Duration::from_secs(7), 5));
    assert!(!off, "no keepalive unless core asks for it");
    drop(listener);
}
