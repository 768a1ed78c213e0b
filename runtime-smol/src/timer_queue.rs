//! A shared millisecond timer queue for smol. async-io wakes its reactor thread
//! (an eventfd write plus re-arming epoll) on every timer insertion, and every
//! reset of a paced stream's deadline is one: at tens of thousands of events a
//! second that is most of the daemon's CPU. Here streams' deadlines live in one
//! ordered map and a single driver task sleeps on one async-io timer until the
//! earliest, so async-io sees about one timer change per millisecond of activity
//! instead of one per event.
//!
//! The rule, on any number of threads: a [`QueueTimer`] whose deadline passes
//! wakes the task that last polled it (also across resets, as an async-io timer
//! keeps its waker), and never reports expiry before its deadline. What makes it
//! hold:
//! - Deadlines round up to the millisecond tick and the clock rounds down, so the
//!   driver takes an entry only once its deadline has passed. An entry that is gone
//!   from the queue therefore means "expired": a poll that finds it gone is ready,
//!   whatever its own (earlier) clock reading said.
//! - The timer keeps its own clone of the last poller's waker, so a reset carries
//!   it to the new entry even when the driver already took the old one.
//! - The queue's waker is replaced whenever the poller's waker would not wake the
//!   same task (`Waker::will_wake`); otherwise a poll takes no lock and allocates
//!   nothing.
//! - Wakers are woken and dropped outside the lock, so a waker that re-enters the
//!   queue (or drops a future holding a timer) cannot deadlock it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;

/// A deadline's position: (millisecond tick, unique id).
type Key = (u64, u64);

/// The tick of deadlines beyond the tick range: no clock reading reaches it, so
/// such a timer never fires (rather than wrapping to an early tick).
const NEVER: u64 = u64::MAX;

#[derive(Default)]
struct Queue {
    /// Each armed timer's entry, with the waker of the task that last polled it
    /// (`None` until its first poll).
    entries: BTreeMap<Key, Option<Waker>>,
    next_id: u64,
    /// The earliest tick as the driver last saw it, lowered by an insertion before
    /// it; the driver sleeps only while this still equals the tick it armed.
    driver_tick: Option<u64>,
    /// The sleeping driver's waker, taken by the insertion that lowers `driver_tick`.
    driver_waker: Option<Waker>,
}

pub struct TimerQueue {
    queue: Mutex<Queue>,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The tick at or after `at` (rounded up: a timer never fires early).
fn tick_at_or_after(at: Instant) -> u64 {
    let since = at.saturating_duration_since(epoch());
    let millis = since.as_nanos().div_ceil(1_000_000);
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

impl TimerQueue {
    pub fn new() -> Arc<TimerQueue> {
        let _ = epoch();
        Arc::new(TimerQueue { queue: Mutex::new(Queue::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing runs foreign code under this lock (wakers are woken and dropped
        // after it), and every operation leaves the map consistent, so poisoning
        // is ignored.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The driver: wakes the timers whose deadlines passed, then sleeps until the
    /// next one. One per queue; runs for the life of the executor.
    pub async fn drive(self: Arc<Self>) {
        let mut timer = async_io::Timer::never();
        let mut armed: Option<u64> = None;
        // Reused, so a tick allocates only when more timers expire at once than ever before.
        let mut due = Vec::new();
        loop {
            let next = self.expire(Instant::now(), &mut due);
            for waker in due.drain(..) {
                waker.wake();
            }
            if next != armed {
                armed = next;
                match next.and_then(instant_of) {
                    Some(at) => timer.set_at(at),
                    None => timer = async_io::Timer::never(),
                }
            }
            std::future::poll_fn(|cx| {
                if !self.register_driver(armed, cx.waker()) {
                    return Poll::Ready(());
                }
                timer.poll_next(cx).map(|_| ())
            })
            .await;
        }
    }

    /// Takes every entry whose tick has passed at `now`, pushing its waker onto
    /// `due`, and returns the earliest tick left (which the driver then arms).
    fn expire(&self, now: Instant, due: &mut Vec<Waker>) -> Option<u64> {
        let now_tick = tick_now(now);
        let mut queue = self.lock();
        while let Some(entry) = queue.entries.first_entry() {
            if entry.key().0 > now_tick {
                break;
            }
            if let Some(waker) = entry.remove() {
                due.push(waker);
            }
        }
        let next = queue.entries.first_key_value().map(|(key, _)| key.0);
        queue.driver_tick = next;
        next
    }

    /// The driver's half of the handshake with `insert`: checked and registered
    /// under one lock, so a deadline earlier than `armed` either shows here (false:
    /// loop again) or finds the waker and wakes the driver.
    fn register_driver(&self, armed: Option<u64>, waker: &Waker) -> bool {
        let mut queue = self.lock();
        if queue.driver_tick != armed {
            return false;
        }
        let stale = match &queue.driver_waker {
            Some(current) if current.will_wake(waker) => None,
            _ => queue.driver_waker.replace(waker.clone()),
        };
        drop(queue);
        drop(stale);
        true
    }

    /// Moves a timer's entry from `old` (if any) to `tick`, holding `waker`. An
    /// entry already at `tick` stays: the map is not touched.
    fn schedule(&self, old: Option<Key>, tick: u64, waker: Option<&Waker>) -> Key {
        let waker = waker.cloned();
        let mut queue = self.lock();
        let mut replaced = None;
        if let Some(old) = old {
            if old.0 == tick && queue.entries.contains_key(&old) {
                // Its waker is already `waker`: the timer updates both together.
                drop(queue);
                return old;
            }
            replaced = queue.entries.remove(&old).flatten();
        }
        queue.next_id += 1;
        let key = (tick, queue.next_id);
        queue.entries.insert(key, waker);
        let mut driver = None;
        if queue.driver_tick.is_none_or(|driver_tick| tick < driver_tick) {
            queue.driver_tick = Some(tick);
            driver = queue.driver_waker.take();
        }
        drop(queue);
        drop(replaced);
        if let Some(driver) = driver {
            driver.wake();
        }
        key
    }

    fn remove(&self, key: Key) {
        // The guard is a temporary: the waker drops after the lock is released.
        let waker = self.lock().entries.remove(&key);
        drop(waker);
    }

    /// Gives `key`'s entry a new waker; false when the driver already took the
    /// entry, which it does only once the deadline passed.
    fn set_waker(&self, key: Key, waker: Waker) -> bool {
        let mut queue = self.lock();
        let Some(slot) = queue.entries.get_mut(&key) else {
            return false;
        };
        let old = slot.replace(waker);
        drop(queue);
        drop(old);
        true
    }
}

/// One stream's timer on the shared queue. It fires once per deadline: after
/// reporting expiry it is pending until the next reset.
pub struct QueueTimer {
    queue: Arc<TimerQueue>,
    deadline: Instant,
    /// The entry in the queue; `None` once expiry was reported.
    key: Option<Key>,
    /// The waker of the task that last polled: the entry holds a clone, and a
    /// reset carries it to the new entry.
    waker: Option<Waker>,
}

impl QueueTimer {
    pub fn new(queue: Arc<TimerQueue>, deadline: Instant) -> QueueTimer {
        let key = queue.schedule(None, tick_at_or_after(deadline), None);
        QueueTimer { queue, deadline, key: Some(key), waker: None }
    }

    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        let key = self.queue.schedule(self.key, tick_at_or_after(deadline), self.waker.as_ref());
        self.key = Some(key);
    }

    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.poll_expired_at(cx, Instant::now())
    }

    /// `now` is read before any lock is taken; the driver may take the entry at
    /// any moment after it, which the tests reproduce by passing an earlier `now`.
    fn poll_expired_at(&mut self, cx: &mut Context<'_>, now: Instant) -> Poll<()> {
        // A clone only when the poller changed: the common poll takes no lock and
        // allocates nothing.
        let changed = !self.waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker()));
        if changed {
            self.waker = Some(cx.waker().clone());
        }
        let Some(key) = self.key else {
            // Expired already: only a reset arms it again, and that wakes this poller.
            return Poll::Pending;
        };
        if now >= self.deadline {
            self.key = None;
            self.queue.remove(key);
            return Poll::Ready(());
        }
        // Unchanged, the entry holds this waker: if the driver takes the entry, it wakes it.
        if !changed || self.queue.set_waker(key, cx.waker().clone()) {
            return Poll::Pending;
        }
        // The driver took the entry (its tick passed) after `now` was read: the
        // deadline has passed, and nobody else would ever wake this task for it.
        self.key = None;
        Poll::Ready(())
    }
}

impl Drop for QueueTimer {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.queue.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::task::Wake;

    /// Runs `body` on its own thread and fails, instead of hanging, when it has not
    /// finished within `limit` (a lost wakeup shows as a hang).
    fn bounded<T: Send + 'static>(
        what: &str,
        limit: Duration,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)));
        });
        match finished.recv_timeout(limit) {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("{what}: not finished within {limit:?}: a timer never woke its task"),
        }
    }

    /// Runs `make(queue)` on an executor with the queue's driver, bounded by 10 s.
    fn run<T, F>(make: impl FnOnce(Arc<TimerQueue>) -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: Future<Output = T> + 'static,
    {
        bounded("run", Duration::from_secs(10), move || {
            let executor = smol::LocalExecutor::new();
            let queue = TimerQueue::new();
            executor.spawn(queue.clone().drive()).detach();
            async_io::block_on(executor.run(make(queue)))
        })
    }

    async fn expired(timer: &mut QueueTimer) {
        std::future::poll_fn(|cx| timer.poll_expired(cx)).await
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

    /// One pass of the driver, by hand, with the clock at `now`.
    fn driver_pass(queue: &TimerQueue, now: Instant) {
        let mut due = Vec::new();
        queue.expire(now, &mut due);
        for waker in due {
            waker.wake();
        }
    }

    fn entries(queue: &TimerQueue) -> usize {
        queue.lock().entries.len()
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_poll_racing_the_driver_for_a_fresh_entry_is_ready() {
        // The known bug: the task reads the clock just before its deadline, the
        // driver thread then takes the entry (still without a waker), then the task
        // registers its waker on an entry that is gone and waits for ever.
        let queue = TimerQueue::new();
        let (woken, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let deadline = Instant::now() + 5 * MS;
        let mut timer = QueueTimer::new(queue.clone(), deadline);
        let clock_read_by_the_task = deadline - Duration::from_nanos(1);
        driver_pass(&queue, deadline + MS);
        let poll = timer.poll_expired_at(&mut cx, clock_read_by_the_task);
        driver_pass(&queue, deadline + 10 * MS);
        assert!(
            poll.is_ready() || woken.get() > 0,
            "the driver took the entry after the task's clock read: nothing will ever wake the task"
        );
        assert!(timer.poll_expired_at(&mut cx, deadline + 10 * MS).is_pending(), "fires once");
    }

    #[test]
    fn a_poll_racing_the_driver_after_a_reset_is_ready() {
        // The same race on a reset entry, which the task has not polled since.
        let queue = TimerQueue::new();
        let (woken, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let start = Instant::now();
        let mut timer = QueueTimer::new(queue.clone(), start + 5 * MS);
        assert!(timer.poll_expired_at(&mut cx, start + 5 * MS).is_ready());
        let deadline = start + 10 * MS;
        timer.reset(deadline);
        driver_pass(&queue, deadline + MS);
        let poll = timer.poll_expired_at(&mut cx, deadline - Duration::from_nanos(1));
        driver_pass(&queue, deadline + 10 * MS);
        assert!(poll.is_ready() || woken.get() > 0, "a reset timer's entry taken before its poll");
    }

    #[test]
    fn a_reset_keeps_the_waker_when_the_driver_fired_the_old_entry() {
        // The task polled, then (woken by something else) moves its deadline while
        // the driver, on another thread, fires the old entry: the new deadline must
        // wake the task without another poll, as async-io's `set_at` does.
        let queue = TimerQueue::new();
        let (woken, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let start = Instant::now();
        let mut timer = QueueTimer::new(queue.clone(), start + 5 * MS);
        assert!(timer.poll_expired_at(&mut cx, start).is_pending());
        // The driver takes the old entry and its waker...
        let mut due = Vec::new();
        queue.expire(start + 6 * MS, &mut due);
        assert_eq!(due.len(), 1);
        // ...the task resets...
        timer.reset(start + 20 * MS);
        // ...and the driver wakes the old entry's waker.
        due.drain(..).for_each(Waker::wake);
        assert_eq!(woken.get(), 1);
        driver_pass(&queue, start + 19 * MS);
        assert_eq!(woken.get(), 1, "woken before the new deadline");
        driver_pass(&queue, start + 21 * MS);
        assert_eq!(woken.get(), 2, "the new deadline must wake the task that last polled");
    }

    #[test]
    fn the_latest_poller_is_woken_when_the_waker_changes() {
        // A timer polled by one task and then another (moved, or polled under a
        // different combinator) must wake the latest one.
        let queue = TimerQueue::new();
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        let start = Instant::now();
        let mut timer = QueueTimer::new(queue.clone(), start + 5 * MS);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&first_waker), start).is_pending());
        assert!(timer.poll_expired_at(&mut Context::from_waker(&second_waker), start).is_pending());
        driver_pass(&queue, start + 6 * MS);
        assert_eq!(second.get(), 1, "the task that last polled was not woken");
        assert_eq!(first.get(), 0, "the earlier poller's waker was left in the queue");
    }

    #[test]
    fn a_reset_carries_the_latest_waker() {
        let queue = TimerQueue::new();
        let (first, first_waker) = counting_waker();
        let (second, second_waker) = counting_waker();
        let start = Instant::now();
        let mut timer = QueueTimer::new(queue.clone(), start + 5 * MS);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&first_waker), start).is_pending());
        assert!(timer.poll_expired_at(&mut Context::from_waker(&second_waker), start).is_pending());
        timer.reset(start + 10 * MS);
        driver_pass(&queue, start + 11 * MS);
        assert_eq!((first.get(), second.get()), (0, 1));
    }

    #[test]
    fn an_expired_timer_reset_wakes_its_last_poller() {
        let queue = TimerQueue::new();
        let (woken, waker) = counting_waker();
        let mut cx = Context::from_waker(&waker);
        let start = Instant::now();
        let mut timer = QueueTimer::new(queue.clone(), start + 5 * MS);
        assert!(timer.poll_expired_at(&mut cx, start + 5 * MS).is_ready());
        assert!(timer.poll_expired_at(&mut cx, start + 6 * MS).is_pending(), "fires once per deadline");
        timer.reset(start + 10 * MS);
        driver_pass(&queue, start + 11 * MS);
        assert_eq!(woken.get(), 1);
        assert!(timer.poll_expired_at(&mut cx, start + 11 * MS).is_ready());
    }

    #[test]
    fn the_driver_never_takes_an_entry_before_its_deadline() {
        let queue = TimerQueue::new();
        let start = Instant::now();
        // Sub-millisecond offsets, and exact tick boundaries.
        let boundary = instant_of(tick_at_or_after(start) + 3).expect("a near tick");
        let deadlines = [0, 1, 999_999, 1_000_000, 1_000_001, 2_345_678]
            .map(|nanos| start + Duration::from_nanos(nanos))
            .into_iter()
            .chain([boundary, boundary + Duration::from_nanos(1), boundary - Duration::from_nanos(1)]);
        for deadline in deadlines {
            let (woken, waker) = counting_waker();
            let mut timer = QueueTimer::new(queue.clone(), deadline);
            let mut cx = Context::from_waker(&waker);
            assert!(timer.poll_expired_at(&mut cx, deadline - Duration::from_nanos(1)).is_pending());
            driver_pass(&queue, deadline - Duration::from_nanos(1));
            assert_eq!(woken.get(), 0, "woken before {deadline:?}");
            assert!(timer.poll_expired_at(&mut cx, deadline - Duration::from_nanos(1)).is_pending());
            driver_pass(&queue, instant_of(tick_at_or_after(deadline)).expect("a near tick"));
            assert_eq!(woken.get(), 1, "not woken at the tick after {deadline:?}");
            assert!(timer.poll_expired_at(&mut cx, deadline).is_ready());
        }
        assert_eq!(entries(&queue), 0);
    }

    #[test]
    fn deadlines_beyond_the_tick_range_are_never_due() {
        let queue = TimerQueue::new();
        let (woken, waker) = counting_waker();
        let beyond = u64::MAX / 1000 + 1_000;
        let (Some(deadline), Some(later)) = (
            epoch().checked_add(Duration::from_secs(beyond)),
            epoch().checked_add(Duration::from_secs(beyond - 10)),
        ) else {
            // This platform's Instant cannot hold such deadlines at all.
            return;
        };
        let mut timer = QueueTimer::new(queue.clone(), deadline);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&waker), Instant::now()).is_pending());
        // A clock past the last tick, still before the deadline.
        let mut due = Vec::new();
        let next = queue.expire(later, &mut due);
        assert!(due.is_empty() && woken.get() == 0, "fired early");
        assert_eq!(next.and_then(instant_of), None, "the driver arms no timer for it");
    }

    #[test]
    fn an_earlier_deadline_inserted_before_the_driver_sleeps_makes_it_loop() {
        let queue = TimerQueue::new();
        let armed = queue.expire(Instant::now(), &mut Vec::new());
        let _timer = QueueTimer::new(queue.clone(), Instant::now() + 5 * MS);
        assert!(!queue.register_driver(armed, Waker::noop()), "the driver would sleep past the new deadline");
    }

    #[test]
    fn an_earlier_deadline_inserted_while_the_driver_sleeps_wakes_it() {
        let queue = TimerQueue::new();
        let (driver_woken, driver_waker) = counting_waker();
        let start = Instant::now();
        let _late = QueueTimer::new(queue.clone(), start + 50 * MS);
        let armed = queue.expire(start, &mut Vec::new());
        assert!(queue.register_driver(armed, &driver_waker));
        // A later deadline costs the driver nothing...
        let mut later = QueueTimer::new(queue.clone(), start + 60 * MS);
        later.reset(start + 70 * MS);
        assert_eq!(driver_woken.get(), 0);
        // ...an earlier one wakes it, once.
        let _early = QueueTimer::new(queue.clone(), start + 5 * MS);
        let _earlier = QueueTimer::new(queue.clone(), start + 4 * MS);
        assert_eq!(driver_woken.get(), 1);
        assert!(!queue.register_driver(armed, &driver_waker), "the driver must re-arm for the earlier tick");
    }

    #[test]
    fn a_reset_within_the_same_tick_leaves_the_map_alone() {
        let queue = TimerQueue::new();
        let base = instant_of(tick_at_or_after(Instant::now()) + 10).expect("a near tick");
        let mut timer = QueueTimer::new(queue.clone(), base - Duration::from_micros(300));
        let key = timer.key;
        timer.reset(base - Duration::from_micros(100));
        assert_eq!(timer.key, key);
        timer.reset(base + Duration::from_micros(100));
        assert_ne!(timer.key, key);
        assert_eq!(entries(&queue), 1);
    }

    #[test]
    fn a_dropped_timer_leaves_the_queue_and_a_late_wake_is_harmless() {
        let queue = TimerQueue::new();
        let (woken, waker) = counting_waker();
        let start = Instant::now();
        let mut timer = QueueTimer::new(queue.clone(), start + 5 * MS);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&waker), start).is_pending());
        drop(timer);
        assert_eq!(entries(&queue), 0);
        // Dropped while the driver holds its waker: the wake is spurious, no more.
        let mut timer = QueueTimer::new(queue.clone(), start + 5 * MS);
        assert!(timer.poll_expired_at(&mut Context::from_waker(&waker), start).is_pending());
        let mut due = Vec::new();
        queue.expire(start + 6 * MS, &mut due);
        drop(timer);
        due.drain(..).for_each(Waker::wake);
        assert_eq!((woken.get(), entries(&queue)), (1, 0));
    }

    #[test]
    fn a_timer_fires_at_its_deadline_not_before() {
        let (start, woke) = run(|queue| async move {
            let start = Instant::now();
            let mut timer = QueueTimer::new(queue, start + 30 * MS);
            expired(&mut timer).await;
            (start, Instant::now())
        });
        assert!(woke >= start + 30 * MS, "fired early: {:?}", woke - start);
    }

    #[test]
    fn reset_moves_the_deadline_and_fires_once_per_deadline() {
        let (start, first, second) = run(|queue| async move {
            let start = Instant::now();
            let mut timer = QueueTimer::new(queue, start);
            timer.reset(start + 20 * MS);
            expired(&mut timer).await;
            let first = Instant::now();
            timer.reset(first + 20 * MS);
            expired(&mut timer).await;
            (start, first, Instant::now())
        });
        assert!(first >= start + 20 * MS);
        assert!(second >= first + 20 * MS);
    }

    #[test]
    fn an_earlier_deadline_wakes_the_sleeping_driver() {
        let (late_deadline, early_woke) = run(|queue| async move {
            let late_deadline = Instant::now() + Duration::from_secs(5);
            let mut late = QueueTimer::new(queue.clone(), late_deadline);
            // The driver is now asleep until the late deadline.
            let poll = std::future::poll_fn(|cx| Poll::Ready(late.poll_expired(cx))).await;
            assert!(poll.is_pending());
            async_io::Timer::after(10 * MS).await;
            let mut early = QueueTimer::new(queue, Instant::now() + 10 * MS);
            expired(&mut early).await;
            (late_deadline, Instant::now())
        });
        assert!(early_woke < late_deadline, "the earlier deadline waited for the later one");
    }

    #[test]
    fn many_timers_each_fire() {
        let fired = run(|queue| async move {
            let start = Instant::now();
            let tasks: Vec<_> = (0..200u32)
                .map(|i| {
                    let queue = queue.clone();
                    smol::spawn(async move {
                        let mut timer = QueueTimer::new(queue, start + (i % 37) * MS);
                        expired(&mut timer).await;
                    })
                })
                .collect();
            let mut fired = 0;
            for task in tasks {
                task.await;
                fired += 1;
            }
            fired
        });
        assert_eq!(fired, 200);
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

        /// 0 to 3 ms, with a bias to the sub-millisecond and to the past.
        fn short(&mut self) -> Duration {
            match self.below(4) {
                0 => Duration::from_nanos(self.below(1_000_000)),
                _ => Duration::from_micros(self.below(3_000)),
            }
        }
    }

    #[derive(Default)]
    struct Record {
        finished: AtomicUsize,
        early: Mutex<Vec<String>>,
    }

    impl Record {
        fn check(&self, what: &str, deadline: Instant) {
            let now = Instant::now();
            if now < deadline {
                let mut early = self.early.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                early.push(format!("{what}: woke {:?} before its deadline", deadline - now));
            }
        }
    }

    /// One stress task: `rounds` timers, each in one of the ways a stream uses them.
    async fn stress_task(
        executor: Arc<smol::Executor<'static>>,
        queue: Arc<TimerQueue>,
        seed: u64,
        rounds: u32,
        record: Arc<Record>,
    ) {
        let mut rng = Rng(seed | 1);
        for _ in 0..rounds {
            let deadline = Instant::now() + rng.short();
            let mut timer = QueueTimer::new(queue.clone(), deadline);
            match rng.below(5) {
                // Plain.
                0 => {
                    expired(&mut timer).await;
                    record.check("plain", deadline);
                }
                // Reset before the first poll, earlier or later, maybe into the past.
                1 => {
                    let deadline = (Instant::now() + rng.short()).checked_sub(Duration::from_micros(500));
                    let deadline = deadline.unwrap_or_else(Instant::now);
                    timer.reset(deadline);
                    expired(&mut timer).await;
                    record.check("reset before polling", deadline);
                }
                // Reset while waiting, when another queue timer interrupts.
                2 => {
                    let mut interrupt = QueueTimer::new(queue.clone(), Instant::now() + rng.short());
                    let mut deadline = deadline;
                    let mut interrupted = false;
                    let next = Instant::now() + rng.short();
                    std::future::poll_fn(|cx| loop {
                        if timer.poll_expired(cx).is_ready() {
                            return Poll::Ready(());
                        }
                        if interrupted || interrupt.poll_expired(cx).is_pending() {
                            return Poll::Pending;
                        }
                        interrupted = true;
                        deadline = next;
                        timer.reset(deadline);
                    })
                    .await;
                    record.check("reset while waiting", deadline);
                }
                // Polled here, then awaited by another task: the waker changes.
                3 => {
                    let poll = std::future::poll_fn(|cx| Poll::Ready(timer.poll_expired(cx))).await;
                    if poll.is_pending() {
                        let record = record.clone();
                        executor
                            .spawn(async move {
                                expired(&mut timer).await;
                                record.check("moved to another task", deadline);
                            })
                            .await;
                    } else {
                        record.check("moved to another task", deadline);
                    }
                }
                // Polled from different threads, reset after each expiry.
                _ => {
                    for _ in 0..3 {
                        futures_lite::future::yield_now().await;
                        expired(&mut timer).await;
                        record.check("reset after expiry", timer.deadline);
                        timer.reset(Instant::now() + rng.short());
                    }
                    expired(&mut timer).await;
                    record.check("reset after expiry", timer.deadline);
                }
            }
        }
        record.finished.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn stress_many_threads_many_timers() {
        const THREADS: usize = 4;
        const TASKS: u64 = 400;
        const ROUNDS: u32 = 50;
        let record = Arc::new(Record::default());
        let watched = record.clone();
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let executor = Arc::new(smol::Executor::new());
            let queue = TimerQueue::new();
            executor.spawn(queue.clone().drive()).detach();
            let (stop, stopped) = smol::channel::bounded::<()>(1);
            let workers: Vec<_> = (1..THREADS)
                .map(|_| {
                    let (executor, stopped) = (executor.clone(), stopped.clone());
                    std::thread::spawn(move || async_io::block_on(executor.run(stopped.recv())))
                })
                .collect();
            let tasks: Vec<_> = (0..TASKS)
                .map(|i| {
                    let seed = 0x9e37_79b9_7f4a_7c15 ^ i;
                    executor.spawn(stress_task(executor.clone(), queue.clone(), seed, ROUNDS, record.clone()))
                })
                .collect();
            async_io::block_on(executor.run(async {
                for task in tasks {
                    task.await;
                }
            }));
            drop(stop);
            for worker in workers {
                let _ = worker.join();
            }
            let _ = done.send(());
        });
        let outcome = finished.recv_timeout(Duration::from_secs(30));
        let finished_tasks = watched.finished.load(Ordering::SeqCst);
        assert!(
            outcome.is_ok(),
            "{finished_tasks} of {TASKS} tasks finished within 30 s: a timer never woke its task"
        );
        let early = watched.early.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        assert!(
            early.is_empty(),
            "{} timers fired early, e.g. {:?}",
            early.len(),
            &early[..early.len().min(5)]
        );
    }
}
