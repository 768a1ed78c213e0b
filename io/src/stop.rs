//! The drain deadline's signal to every running stream: a flag, plus the wakers
//! of the streams so they notice at once instead of at their next timer.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::task::Waker;

#[derive(Default)]
pub struct StopSignal {
    forced: AtomicBool,
    wakers: Mutex<HashMap<u64, Waker>>,
}

impl StopSignal {
    pub fn is_forced(&self) -> bool {
        self.forced.load(Ordering::Acquire)
    }

    /// Registers a stream's waker (once per stream; task wakers are stable).
    pub fn register(&self, id: u64, waker: &Waker) {
        if let Ok(mut wakers) = self.wakers.lock() {
            wakers.insert(id, waker.clone());
        }
    }

    pub fn unregister(&self, id: u64) {
        if let Ok(mut wakers) = self.wakers.lock() {
            wakers.remove(&id);
        }
    }

    /// Tells every running stream to end now.
    pub fn force(&self) {
        self.forced.store(true, Ordering::Release);
        let wakers: Vec<Waker> = match self.wakers.lock() {
            Ok(wakers) => wakers.values().cloned().collect(),
            Err(_) => return,
        };
        for waker in wakers {
            waker.wake();
        }
    }
}
