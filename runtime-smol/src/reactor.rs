//! One reactor per worker thread: an epoll instance, the worker's fds and its
//! timers, driven by [`block_on`] on that thread only.
//!
//! async-io has one process-global reactor (one epoll, one lock, registrations in
//! oneshot mode re-armed by an `epoll_ctl` per wait, an eventfd write to wake it).
//! With N workers whichever thread holds it gets every worker's events and wakes
//! the owner through a futex: the workers are not shared-nothing. Here each worker
//! owns everything and nothing on the per-event path takes a lock or a syscall
//! beyond the I/O itself and one `epoll_wait` per turn:
//! - fds are registered once, edge-triggered, for read and write; the reactor keeps
//!   a ready bit and a waker per direction. An operation runs only while its bit is
//!   set; `WouldBlock` clears it, and the next edge sets it again.
//! - timers are one ordered map keyed by millisecond tick (rounded up, so a timer
//!   never fires early, and the timers of one millisecond share one wake-up); the
//!   earliest is the wait's timeout.
//! - the executor's waker sets a flag, and writes the eventfd only when the worker
//!   is in (or about to enter) `epoll_wait`: a wake from the worker's own tasks
//!   costs no syscall.
//!
//! epoll is used through rustix directly, not through `polling`: polling 3.11
//! arms a timerfd (`timerfd_settime` plus an `epoll_ctl`) and re-arms its notifier
//! (another `epoll_ctl`) on every wait, which is the per-event cost this removes.
//!
//! The invariant: a handle ([`Source`], [`Timer`]) is used and dropped on the
//! thread whose reactor made it. The `Runtime` trait needs `Send` handles, and in
//! practice they never leave their worker (each worker's executor is run by that
//! thread only). If it were broken the outcome is safe and visible, never UB: I/O
//! fails with an error naming the invariant, a timer falls back to reading the
//! clock on each poll (waking itself until its deadline), and a dropped handle
//! leaves its slot to the owning reactor (a timer's entry is dropped when it
//! expires; an fd's slot stays, without its fd, until the worker ends).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};

/// Events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// The eventfd's epoll data; sources use `generation << 32 | index`, and a
/// generation is never `u32::MAX`.
const NOTIFY_KEY: u64 = u64::MAX;

/// What a worker thread's reactor shares with other threads: only what a
/// cross-thread wake needs.
struct Shared {
    epoll: OwnedFd,
    eventfd: OwnedFd,
    /// True while the worker is in, or about to enter, a blocking `epoll_wait`.
    sleeping: AtomicBool,
    /// Set by the executor's waker; the worker polls its future when it is set.
    woken: AtomicBool,
}

impl Shared {
    fn wake(&self) {
        // SeqCst against the worker's `sleeping` store then `woken` load: either
        // the worker sees `woken` before it sleeps or this sees `sleeping`.
        if !self.woken.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            // A full counter (EAGAIN) still has the worker readable: nothing lost.
            let _ = rustix::io::write(&self.eventfd, &1u64.to_ne_bytes());
        }
    }
}

/// The executor's waker for one worker: cheap on its own thread, an eventfd write
/// from another thread only when the worker sleeps.
struct Notify(Arc<Shared>);

impl Wake for Notify {
    fn wake(self: Arc<Self>) {
        self.0.wake();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.wake();
    }
}

/// A ready bit and the waker of the task waiting for it, per direction.
#[derive(Default)]
struct Direction {
    ready: bool,
    /// An error or hang-up was reported: it stays until an operation returns it,
    /// and no later edge would announce it again.
    hung_up: bool,
    waker: Option<Waker>,
}

impl Direction {
    /// Marks ready and hands back the waiter.
    fn set_ready(&mut self, due: &mut Vec<Waker>) {
        self.ready = true;
        if let Some(waker) = self.waker.take() {
            due.push(waker);
        }
    }
}

#[derive(Default)]
struct SourceState {
    read: Direction,
    write: Direction,
}

struct Slot {
    generation: u32,
    state: Option<SourceState>,
}

/// A deadline's position: (millisecond tick, unique id).
type TimerKey = (u64, u64);

/// The tick of deadlines beyond the tick range: no clock reading reaches it.
const NEVER: u64 = u64::MAX;

struct Core {
    id: u64,
    shared: Arc<Shared>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Each armed timer's entry, with the waker of the task that last polled it.
    timers: BTreeMap<TimerKey, Option<Waker>>,
    next_timer: u64,
}

thread_local! {
    static CORE: RefCell<Option<Core>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's reactor if it is the one `home` names. `None` when
/// there is none, it is another, or it is borrowed (nothing here calls out while
/// borrowing it, so that means a thread-local teardown).
fn with_core<T>(home: Option<u64>, f: impl FnOnce(&mut Core) -> T) -> Option<T> {
    CORE.try_with(|cell| {
        let mut borrowed = cell.try_borrow_mut().ok()?;
        let core = borrowed.as_mut()?;
        if home.is_some_and(|home| home != core.id) {
            return None;
        }
        Some(f(core))
    })
    .ok()
    .flatten()
}

fn off_thread() -> io::Error {
    io::Error::other("a reactor handle was used off its worker thread (each worker's handles stay on it)")
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The tick at or after `at` (rounded up: a timer never fires early).
fn tick_at_or_after(at: Instant) -> u64 {
    let millis = at.saturating_duration_since(epoch()).as_nanos().div_ceil(1_000_000);
    u64::try_from(millis).unwrap_or(NEVER)
}

/// The ticks that have fully passed at `now` (rounded down), short of `NEVER`.
fn tick_now(now: Instant) -> u64 {
    let millis = now.saturating_duration_since(epoch()).as_millis();
    u64::try_from(millis).unwrap_or(NEVER).min(NEVER - 1)
}

/// When `tick` begins; `None` for a tick no clock reaches.
fn instant_of(tick: u64) -> Option<Instant> {
    if tick == NEVER {
        return None;
    }
    epoch().checked_add(Duration::from_millis(tick))
}

impl Core {
    fn new(shared: Arc<Shared>) -> Core {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Core {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            shared,
            slots: Vec::new(),
            free: Vec::new(),
            timers: BTreeMap::new(),
            next_timer: 0,
        }
    }

    fn source(&mut self, index: u32, generation: u32) -> Option<&mut SourceState> {
        let slot = self.slots.get_mut(usize::try_from(index).ok()?)?;
        if slot.generation != generation {
            return None;
        }
        slot.state.as_mut()
    }

    /// Sets the ready bits an event reports, collecting the waiters.
    fn dispatch(&mut self, data: u64, flags: EventFlags, due: &mut Vec<Waker>) {
        let (index, generation) = ((data & 0xffff_ffff) as u32, (data >> 32) as u32);
        let Some(state) = self.source(index, generation) else {
            return;
        };
        // Errors and hang-ups make both directions ready: the operation reports them.
        let broken = flags.intersects(EventFlags::ERR | EventFlags::HUP);
        if broken || flags.contains(EventFlags::RDHUP) {
            state.read.hung_up = true;
        }
        if broken {
            state.write.hung_up = true;
        }
        if broken || flags.intersects(EventFlags::IN | EventFlags::RDHUP | EventFlags::PRI) {
            state.read.set_ready(due);
        }
        if broken || flags.contains(EventFlags::OUT) {
            state.write.set_ready(due);
        }
    }

    /// Takes every timer whose tick has passed at `now`, collecting its waker.
    fn expire(&mut self, now: Instant, due: &mut Vec<Waker>) {
        let now_tick = tick_now(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now_tick {
                break;
            }
            if let Some(waker) = entry.remove() {
                due.push(waker);
            }
        }
    }

    /// How long `epoll_wait` may sleep: until the earliest timer's tick.
    fn timeout(&self, now: Instant) -> Option<Duration> {
        let (tick, _) = self.timers.first_key_value()?.0.to_owned();
        instant_of(tick).map(|at| at.saturating_duration_since(now))
    }

    /// Moves a timer's entry from `old` (if any) to `tick`, holding `waker`; an
    /// entry already at `tick` stays. Returns the key and the replaced waker
    /// (dropped by the caller, outside the borrow).
    fn schedule(
        &mut self,
        old: Option<TimerKey>,
        tick: u64,
        waker: Option<&Waker>,
    ) -> (TimerKey, Option<Waker>) {
        let mut replaced = None;
        if let Some(old) = old {
            if old.0 == tick && self.timers.contains_key(&old) {
                return (old, None);
            }
            replaced = self.timers.remove(&old).flatten();
        }
        self.next_timer += 1;
        let key = (tick, self.next_timer);
        self.timers.insert(key, waker.cloned());
        (key, replaced)
    }
}

/// Runs `future` to completion on this thread, with this thread's reactor
/// serving every [`Source`] and [`Timer`] made while it runs. One per thread at
/// a time. The future is polled when its waker was woken; between polls the
/// reactor waits for I/O and timers (without sleeping while the future has work:
/// smol's executor runs at most 200 tasks per poll, then yields, which wakes it
/// again, so I/O and timers are served between batches).
pub fn block_on<T>(future: impl Future<Output = T>) -> io::Result<T> {
    let epoll_fd = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| context("creating an epoll", e))?;
    let notify_fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
        .map_err(|e| context("creating the worker's eventfd", e))?;
    epoll::add(&epoll_fd, &notify_fd, EventData::new_u64(NOTIFY_KEY), EventFlags::IN)
        .map_err(|e| context("registering the worker's eventfd", e))?;
    let shared = Arc::new(Shared {
        epoll: epoll_fd,
        eventfd: notify_fd,
        sleeping: AtomicBool::new(false),
        woken: AtomicBool::new(true),
    });
    let installed = CORE.with(|cell| {
        let mut core = cell.borrow_mut();
        if core.is_some() {
            return false;
        }
        *core = Some(Core::new(shared.clone()));
        true
    });
    if !installed {
        return Err(io::Error::other("block_on: this thread already runs a reactor"));
    }
    // Uninstalls on every way out, so the thread's handles fail instead of
    // reaching a dead reactor, and the slots' wakers drop outside the borrow.
    struct Uninstall;
    impl Drop for Uninstall {
        fn drop(&mut self) {
            let core = CORE.try_with(|cell| cell.try_borrow_mut().ok().and_then(|mut core| core.take()));
            drop(core);
        }
    }
    let _uninstall = Uninstall;

    let waker = Waker::from(Arc::new(Notify(shared.clone())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut events = Vec::with_capacity(EVENTS);
    // Reused, so a turn allocates only when more wakers are due than ever before.
    let mut due: Vec<Waker> = Vec::new();
    loop {
        if shared.woken.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Ok(output);
            }
        }
        let now = Instant::now();
        let mut timeout = with_core(None, |core| core.timeout(now)).flatten();
        if timeout != Some(Duration::ZERO) {
            shared.sleeping.store(true, Ordering::SeqCst);
            if shared.woken.load(Ordering::SeqCst) {
                timeout = Some(Duration::ZERO);
            }
        }
        let spec = timeout.map(|timeout| Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        });
        events.clear();
        let waited = epoll::wait(&shared.epoll, rustix::buffer::spare_capacity(&mut events), spec.as_ref());
        shared.sleeping.store(false, Ordering::SeqCst);
        match waited {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(error) => return Err(context("waiting on the worker's epoll", error)),
        }
        let mut notified = false;
        let now = Instant::now();
        with_core(None, |core| {
            for event in &events {
                let data = event.data.u64();
                if data == NOTIFY_KEY {
                    notified = true;
                } else {
                    core.dispatch(data, event.flags, &mut due);
                }
            }
            core.expire(now, &mut due);
        });
        if notified {
            // Level-triggered: drain it, or every wait returns at once.
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&shared.eventfd, &mut count);
        }
        // Outside any borrow: a waker may re-enter the reactor.
        for waker in due.drain(..) {
            waker.wake();
        }
    }
}

fn context(what: &str, error: rustix::io::Errno) -> io::Error {
    let error = io::Error::from(error);
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

/// An fd registered with its worker's reactor (edge-triggered, read and write)
/// until it is dropped. See the module docs for the thread invariant.
pub struct Source {
    fd: OwnedFd,
    home: u64,
    index: u32,
    generation: u32,
    /// For the deregistration, which must happen even off the worker's thread.
    shared: Arc<Shared>,
}

#[derive(Clone, Copy)]
pub enum Dir {
    Read,
    Write,
}

impl Source {
    /// Registers `fd` (already non-blocking) with this thread's reactor.
    /// `writable` is the initial write bit: true for a connected socket (its
    /// first write is tried at once), false for one still connecting. The read
    /// bit starts clear: the registration reports data already there.
    pub fn new(fd: OwnedFd, writable: bool) -> io::Result<Source> {
        let registered = with_core(None, |core| {
            let index = match core.free.pop() {
                Some(index) => index,
                None => {
                    let index =
                        u32::try_from(core.slots.len()).map_err(|_| io::Error::other("too many sources"))?;
                    core.slots.push(Slot { generation: 0, state: None });
                    index
                }
            };
            let slot = &mut core.slots[index as usize];
            // `u32::MAX` is never a generation, so no key is the eventfd's.
            slot.generation = (slot.generation + 1) % u32::MAX;
            let mut state = SourceState::default();
            state.write.ready = writable;
            slot.state = Some(state);
            let generation = slot.generation;
            let data = EventData::new_u64(u64::from(generation) << 32 | u64::from(index));
            let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
            if let Err(error) = epoll::add(&core.shared.epoll, &fd, data, flags) {
                core.slots[index as usize].state = None;
                core.free.push(index);
                return Err(context("registering an fd with the worker's epoll", error));
            }
            Ok((core.id, index, generation, core.shared.clone()))
        });
        let (home, index, generation, shared) = registered.ok_or_else(|| {
            io::Error::other("registering an fd: this thread runs no reactor (only worker threads do)")
        })??;
        Ok(Source { fd, home, index, generation, shared })
    }

    /// Ready when `dir`'s bit is set; otherwise registers the waker and waits.
    /// The bit is only set by this thread's reactor turn, so checking it and
    /// registering the waker under one borrow loses no edge.
    pub fn poll_ready(&self, dir: Dir, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let outcome = with_core(Some(self.home), |core| {
            let state = core.source(self.index, self.generation)?;
            let direction = match dir {
                Dir::Read => &mut state.read,
                Dir::Write => &mut state.write,
            };
            if direction.ready {
                return Some((true, None));
            }
            let stale = match &direction.waker {
                Some(waker) if waker.will_wake(cx.waker()) => None,
                _ => direction.waker.replace(cx.waker().clone()),
            };
            Some((false, stale))
        });
        match outcome.flatten() {
            None => Poll::Ready(Err(off_thread())),
            Some((ready, stale)) => {
                drop(stale);
                if ready {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    /// Clears `dir`'s bit after the operation said `WouldBlock`; the next edge
    /// sets it again (an edge that came since is queued in epoll).
    pub fn clear_ready(&self, dir: Dir) {
        with_core(Some(self.home), |core| {
            if let Some(state) = core.source(self.index, self.generation) {
                match dir {
                    Dir::Read => state.read.ready = false,
                    Dir::Write => state.write.ready = false,
                }
            }
        });
    }

    /// Clears `dir`'s bit after a short read or write, which says the socket has
    /// no more to give without the cost of a `WouldBlock` to learn it, unless a
    /// hang-up or error was reported: that edge is spent, and only a further
    /// operation returns the EOF or error it announced.
    pub fn drained(&self, dir: Dir) {
        with_core(Some(self.home), |core| {
            if let Some(state) = core.source(self.index, self.generation) {
                let direction = match dir {
                    Dir::Read => &mut state.read,
                    Dir::Write => &mut state.write,
                };
                if !direction.hung_up {
                    direction.ready = false;
                }
            }
        });
    }

    /// Readiness first: runs `op` only while `dir`'s bit is set, waits when it
    /// is not, and clears it on `WouldBlock`.
    pub fn poll_with<T>(
        &self,
        dir: Dir,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        loop {
            if let Err(error) = std::task::ready!(self.poll_ready(dir, cx)) {
                return Poll::Ready(Err(error));
            }
            match op() {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.clear_ready(dir),
                result => return Poll::Ready(result),
            }
        }
    }
}

impl AsFd for Source {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let _ = epoll::delete(&self.shared.epoll, &self.fd);
        let freed = with_core(Some(self.home), |core| {
            let slot = core.slots.get_mut(self.index as usize)?;
            if slot.generation != self.generation {
                return None;
            }
            let state = slot.state.take();
            core.free.push(self.index);
            state
        });
        // The wakers drop here, outside the borrow.
        drop(freed);
    }
}

/// A resettable one-shot timer on its worker's reactor. It fires once per
/// deadline: after reporting expiry it is pending until the next reset.
pub struct Timer {
    /// The reactor holding the entry; `None` when made off any worker.
    home: Option<u64>,
    deadline: Instant,
    /// The entry; `None` once expiry was reported.
    key: Option<TimerKey>,
    /// The waker of the task that last polled: the entry holds a clone, and a
    /// reset carries it to the new entry even when the reactor took the old one.
    waker: Option<Waker>,
}

impl Timer {
    pub fn new(deadline: Instant) -> Timer {
        let tick = tick_at_or_after(deadline);
        match with_core(None, |core| (core.id, core.schedule(None, tick, None).0)) {
            Some((home, key)) => Timer { home: Some(home), deadline, key: Some(key), waker: None },
            None => Timer { home: None, deadline, key: Some((tick, 0)), waker: None },
        }
    }

    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        let tick = tick_at_or_after(deadline);
        let old = self.key;
        let waker = self.waker.as_ref();
        let scheduled =
            self.home.and_then(|home| with_core(Some(home), |core| core.schedule(old, tick, waker)));
        match scheduled {
            Some((key, replaced)) => {
                self.key = Some(key);
                drop(replaced);
            }
            // Off its reactor: armed, and read from the clock when polled.
            None => self.key = Some((tick, 0)),
        }
    }

    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_expired_at(cx, Instant::now())
    }

    fn poll_expired_at(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        let changed = !self.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker()));
        if changed {
            self.waker = Some(cx.waker().clone());
        }
        let Some(key) = self.key else {
            // Expired already: only a reset arms it again, and that keeps this waker.
            return Poll::Pending;
        };
        if now >= self.deadline {
            self.key = None;
            let removed = self.home.and_then(|home| with_core(Some(home), |core| core.timers.remove(&key)));
            drop(removed);
            return Poll::Ready(());
        }
        let waker = self.waker.as_ref();
        let deadline = self.deadline;
        let on_home = self.home.and_then(|home| {
            with_core(Some(home), |core| match core.timers.get_mut(&key) {
                // Unchanged, the entry holds this waker already: nothing to do.
                Some(slot) => (None, changed.then(|| std::mem::replace(slot, waker.cloned())).flatten()),
                // Gone while the deadline is ahead: only after an off-thread reset
                // (the reactor takes an entry only once its deadline passed). Armed again.
                None => (Some(core.schedule(None, tick_at_or_after(deadline), waker).0), None),
            })
        });
        match on_home {
            Some((rescheduled, stale)) => {
                if rescheduled.is_some() {
                    self.key = rescheduled;
                }
                drop(stale);
            }
            // Off its reactor (see the module docs): nothing would wake this task,
            // so it asks to be polled again and reads the clock then.
            None => cx.waker().wake_by_ref(),
        }
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        if let (Some(key), Some(home)) = (self.key.take(), self.home) {
            let removed = with_core(Some(home), |core| core.timers.remove(&key));
            drop(removed);
        }
    }
}

#[cfg(test)]
mod tests;
