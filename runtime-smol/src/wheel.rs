//! A shared millisecond timer queue for smol. async-io wakes its reactor thread
//! (an eventfd write plus re-arming epoll) on every timer insertion, and every
//! reset of a paced stream's deadline is one: at tens of thousands of events a
//! second that is most of the daemon's CPU. Here streams' deadlines live in one
//! ordered map and a single task sleeps on one async-io timer until the earliest,
//! so async-io sees about one timer change per millisecond of activity instead of
//! one per event. Deadlines are rounded up to the millisecond: never early.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;

/// A deadline's position: (millisecond tick, unique id).
type Key = (u64, u64);

#[derive(Default)]
struct Queue {
    entries: BTreeMap<Key, Option<Waker>>,
    next_id: u64,
    /// The tick the driver task sleeps until, and its waker, so an earlier
    /// deadline can wake it.
    driver_tick: Option<u64>,
    driver_waker: Option<Waker>,
}

pub struct Wheel {
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
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// The ticks that have fully passed at `now`.
fn tick_now(now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

fn instant_of(tick: u64) -> Instant {
    epoch() + Duration::from_millis(tick)
}

impl Wheel {
    pub fn new() -> Arc<Wheel> {
        let _ = epoch();
        Arc::new(Wheel { queue: Mutex::new(Queue::default()) })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (every operation is a single insert or remove), so poisoning is ignored.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The driver: wakes the streams whose deadlines passed, then sleeps until
    /// the next one. Runs for the life of the process.
    pub async fn drive(self: Arc<Self>) {
        let mut timer = async_io::Timer::never();
        let mut armed: Option<u64> = None;
        loop {
            let (due, next) = {
                let now_tick = tick_now(Instant::now());
                let mut queue = self.lock();
                let mut due = Vec::new();
                while let Some(entry) = queue.entries.first_entry() {
                    if entry.key().0 > now_tick {
                        break;
                    }
                    if let Some(waker) = entry.remove() {
                        due.push(waker);
                    }
                }
                let next = queue.entries.keys().next().map(|key| key.0);
                queue.driver_tick = next;
                (due, next)
            };
            for waker in due {
                waker.wake();
            }
            if next != armed {
                armed = next;
                match next {
                    Some(tick) => timer.set_at(instant_of(tick)),
                    None => timer = async_io::Timer::never(),
                }
            }
            std::future::poll_fn(|cx| {
                // Checked and registered under one lock, so a deadline inserted
                // after `next` was computed either shows here or finds the waker.
                let mut queue = self.lock();
                if queue.driver_tick != armed {
                    return Poll::Ready(());
                }
                queue.driver_waker = Some(cx.waker().clone());
                drop(queue);
                timer.poll_next(cx).map(|_| ())
            })
            .await;
        }
    }

    fn insert(&self, tick: u64, waker: Option<Waker>) -> Key {
        let mut queue = self.lock();
        queue.next_id += 1;
        let key = (tick, queue.next_id);
        queue.entries.insert(key, waker);
        if queue.driver_tick.is_none_or(|driver| tick < driver) {
            queue.driver_tick = Some(tick);
            if let Some(driver) = queue.driver_waker.take() {
                drop(queue);
                driver.wake();
            }
        }
        key
    }

    fn remove(&self, key: Key) -> Option<Waker> {
        self.lock().entries.remove(&key).flatten()
    }

    fn set_waker(&self, key: Key, waker: &Waker) {
        if let Some(slot) = self.lock().entries.get_mut(&key) {
            *slot = Some(waker.clone());
        }
    }
}

/// One stream's timer on the shared queue.
pub struct WheelTimer {
    wheel: Arc<Wheel>,
    deadline: Instant,
    key: Option<Key>,
    waker_set: bool,
    fired: bool,
}

impl WheelTimer {
    pub fn new(wheel: Arc<Wheel>, deadline: Instant) -> WheelTimer {
        let mut timer = WheelTimer { wheel, deadline, key: None, waker_set: false, fired: false };
        timer.schedule(None);
        timer
    }

    fn schedule(&mut self, waker: Option<Waker>) {
        self.waker_set = waker.is_some();
        self.key = Some(self.wheel.insert(tick_at_or_after(self.deadline), waker));
    }

    pub fn reset(&mut self, deadline: Instant) {
        self.fired = false;
        self.deadline = deadline;
        // The task's waker moves to the new entry, so no poll is needed to re-register.
        let waker = self.key.take().and_then(|key| self.wheel.remove(key));
        self.schedule(waker);
    }

    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.fired {
            return Poll::Pending;
        }
        if Instant::now() >= self.deadline {
            if let Some(key) = self.key.take() {
                self.wheel.remove(key);
            }
            self.fired = true;
            return Poll::Ready(());
        }
        match self.key {
            Some(key) if !self.waker_set => {
                self.wheel.set_waker(key, cx.waker());
                self.waker_set = true;
            }
            // The driver already took the entry (its tick passed before the exact
            // deadline, within the same millisecond): wait on a fresh one.
            None => self.schedule(Some(cx.waker().clone())),
            Some(_) => {}
        }
        Poll::Pending
    }
}

impl Drop for WheelTimer {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.wheel.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: Send + 'static>(future: impl std::future::Future<Output = T> + Send + 'static) -> T {
        let executor = Arc::new(smol::Executor::new());
        async_io::block_on(executor.run(executor.spawn(future)))
    }

    #[test]
    fn a_timer_fires_at_its_deadline_not_before() {
        let elapsed = run(async {
            let wheel = Wheel::new();
            smol::spawn(wheel.clone().drive()).detach();
            let start = Instant::now();
            let mut timer = WheelTimer::new(wheel, start + Duration::from_millis(30));
            std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
            start.elapsed()
        });
        assert!(elapsed >= Duration::from_millis(30), "fired early: {elapsed:?}");
    }

    #[test]
    fn reset_moves_the_deadline_and_fires_once() {
        let (first, second) = run(async {
            let wheel = Wheel::new();
            smol::spawn(wheel.clone().drive()).detach();
            let start = Instant::now();
            let mut timer = WheelTimer::new(wheel, start);
            timer.reset(start + Duration::from_millis(20));
            std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
            let first = start.elapsed();
            timer.reset(Instant::now() + Duration::from_millis(20));
            std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
            (first, start.elapsed())
        });
        assert!(first >= Duration::from_millis(20));
        assert!(second >= first + Duration::from_millis(20));
    }

    #[test]
    fn many_timers_each_fire() {
        let fired = run(async {
            let wheel = Wheel::new();
            smol::spawn(wheel.clone().drive()).detach();
            let start = Instant::now();
            let tasks: Vec<_> = (0..200u64)
                .map(|i| {
                    let wheel = wheel.clone();
                    smol::spawn(async move {
                        let mut timer = WheelTimer::new(wheel, start + Duration::from_millis(i % 37));
                        std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
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
}
