//! Per-user concurrent stream limits (`--max-streams-per-user`, and a backend
//! table's `max_streams_per_user`), keyed by the handoff's `user_id`.
//!
//! The global limit counts every stream of a user, whatever its backend; a named
//! backend's limit counts only that user's streams on that backend. A handoff
//! without `user_id` is not limited, and 0 means no limit. A stream holds a
//! [`UserSlot`] for its whole life (it rides in the stream's
//! [`crate::limits::Admission`]); dropping the slot gives the user's count back.
//!
//! The counts are a `Mutex`-protected map shared by every worker. That is a lock
//! taken across threads, but only twice per stream, once when it is admitted and
//! once when it ends, never per event, so contention stays negligible next to a
//! stream's own work. An entry is removed when its count reaches zero, so the map
//! holds at most one entry per running stream (per key).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// The user counts and the global per-user limit, shared by all workers.
#[derive(Debug, Default)]
pub struct UserLimits {
    /// The most streams one user may have at once (0: no limit); changed only
    /// by a reload ([`UserLimits::set_max_per_user`]).
    max_per_user: AtomicU32,
    counts: Mutex<Counts>,
    /// The per-user token budget, judged at admission with the stream counts.
    budget: crate::token_budget::TokenBudget,
}

#[derive(Debug, Default)]
struct Counts {
    /// Streams per user, all backends together (only while a global limit is on).
    users: HashMap<String, u32>,
    /// Streams per (backend name, user), for backends that have a limit.
    backend_users: HashMap<(String, String), u32>,
}

/// A named backend's own per-user limit, for [`UserLimits::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendLimit<'a> {
    /// The backend's name (what its counts are keyed by).
    pub name: &'a str,
    /// Its `max_streams_per_user` (0: no limit of its own).
    pub max_per_user: u32,
}

/// Which limit refused a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserLimitExceeded {
    /// The user already has `--max-streams-per-user` streams.
    Global,
    /// The user already has the backend's `max_streams_per_user` streams on it.
    Backend,
}

/// One stream's place in its user's counts; dropping it frees the place.
#[derive(Debug)]
pub struct UserSlot {
    limits: Arc<UserLimits>,
    user: String,
    /// Counted in the global per-user count.
    global: bool,
    /// Counted in this backend's per-user count.
    backend: Option<String>,
}

impl UserLimits {
    /// Empty counts with a global limit of `max_per_user` streams per user (0: none).
    pub fn new(max_per_user: u32) -> Arc<UserLimits> {
        Arc::new(UserLimits { max_per_user: AtomicU32::new(max_per_user), ..Default::default() })
    }

    /// The per-user token budget (off until configured).
    pub fn budget(&self) -> &crate::token_budget::TokenBudget {
        &self.budget
    }

    /// The global per-user limit (0: none).
    pub fn max_per_user(&self) -> u32 {
        self.max_per_user.load(Relaxed)
    }

    /// A reloaded `--max-streams-per-user`: later streams are judged by it;
    /// running streams keep their slots. Streams started while the global limit
    /// was off are not in the global count, so right after turning it on a user
    /// may briefly run more than it allows (until those streams end).
    pub fn set_max_per_user(&self, max_per_user: u32) {
        self.max_per_user.store(max_per_user, Relaxed);
    }

    /// Takes a slot for a stream of `user` on `backend` (`None`: a backend
    /// without a limit of its own). `Ok(None)` when nothing limits this stream
    /// (no user, or no limit applies): nothing is counted and no lock is taken.
    /// A refusal counts nothing.
    pub fn take(
        self: &Arc<Self>,
        user: Option<&str>,
        backend: Option<BackendLimit<'_>>,
    ) -> Result<Option<UserSlot>, UserLimitExceeded> {
        let Some(user) = user else { return Ok(None) };
        let global_max = self.max_per_user();
        let backend = backend.filter(|backend| backend.max_per_user > 0);
        if global_max == 0 && backend.is_none() {
            return Ok(None);
        }
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        // Both checks before either count changes, so a refusal leaves nothing behind.
        if global_max > 0 && counts.users.get(user).copied().unwrap_or(0) >= global_max {
            return Err(UserLimitExceeded::Global);
        }
        let backend_key = backend.map(|backend| (backend.name.to_owned(), user.to_owned()));
        if let (Some(key), Some(backend)) = (&backend_key, backend) {
            if counts.backend_users.get(key).copied().unwrap_or(0) >= backend.max_per_user {
                return Err(UserLimitExceeded::Backend);
            }
        }
        if global_max > 0 {
            *counts.users.entry(user.to_owned()).or_insert(0) += 1;
        }
        let backend = backend_key.map(|key| {
            let name = key.0.clone();
            *counts.backend_users.entry(key).or_insert(0) += 1;
            name
        });
        drop(counts);
        Ok(Some(UserSlot {
            limits: Arc::clone(self),
            user: user.to_owned(),
            global: global_max > 0,
            backend,
        }))
    }

    /// The streams `user` has now, all backends together, as the global limit
    /// counts them (0 while the global limit is off).
    pub fn streams_of(&self, user: &str) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.users.get(user).copied().unwrap_or(0)
    }

    /// The streams `user` has now on `backend` (0 when it has no limit).
    pub fn streams_on(&self, backend: &str, user: &str) -> u32 {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.backend_users.get(&(backend.to_owned(), user.to_owned())).copied().unwrap_or(0)
    }

    /// Keys (users, and backend-user pairs) with a stream counted now.
    pub fn tracked(&self) -> usize {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.users.len() + counts.backend_users.len()
    }
}

/// Takes one from `key`'s count, removing the entry at zero.
fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: &K) {
    if let Some(count) = map.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            map.remove(key);
        }
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if self.global {
            release(&mut counts.users, &self.user);
        }
        if let Some(backend) = self.backend.take() {
            let key = (backend, std::mem::take(&mut self.user));
            release(&mut counts.backend_users, &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str, max_per_user: u32) -> Option<BackendLimit<'_>> {
        Some(BackendLimit { name, max_per_user })
    }

    #[test]
    fn a_third_stream_of_one_user_is_refused_and_another_user_is_served() {
        let limits = UserLimits::new(2);
        let first = limits.take(Some("u1"), None).expect("first").expect("counted");
        let second = limits.take(Some("u1"), None).expect("second").expect("counted");
        assert_eq!(limits.take(Some("u1"), None).unwrap_err(), UserLimitExceeded::Global);
        assert_eq!(limits.streams_of("u1"), 2, "a refusal counts nothing");
        let other = limits.take(Some("u2"), None).expect("another user").expect("counted");
        assert_eq!(limits.streams_of("u2"), 1);
        drop((first, second, other));
        assert_eq!(limits.tracked(), 0, "entries go when their count reaches zero");
    }

    #[test]
    fn releasing_a_slot_frees_it_for_the_same_user() {
        let limits = UserLimits::new(1);
        let held = limits.take(Some("u1"), None).expect("first");
        assert!(limits.take(Some("u1"), None).is_err());
        drop(held);
        assert_eq!(limits.streams_of("u1"), 0);
        let again = limits.take(Some("u1"), None).expect("the freed slot is usable");
        assert!(again.is_some());
    }

    #[test]
    fn no_user_or_no_limit_is_not_limited_or_counted() {
        let limits = UserLimits::new(1);
        for _ in 0..5 {
            assert!(limits.take(None, None).expect("no user is not limited").is_none());
        }
        let unlimited = UserLimits::new(0);
        let slots: Vec<_> = (0..5).map(|_| unlimited.take(Some("u1"), None).expect("no limit")).collect();
        assert!(slots.iter().all(Option::is_none));
        assert!(unlimited.take(Some("u1"), backend("b", 0)).expect("0 is no limit").is_none());
        assert_eq!(unlimited.tracked(), 0);
    }

    #[test]
    fn a_backend_limit_counts_only_that_backends_streams() {
        let limits = UserLimits::new(0);
        let on_a = limits.take(Some("u1"), backend("a", 1)).expect("first on a").expect("counted");
        assert_eq!(limits.take(Some("u1"), backend("a", 1)).unwrap_err(), UserLimitExceeded::Backend);
        let on_b = limits.take(Some("u1"), backend("b", 1)).expect("b has its own count");
        assert!(on_b.is_some());
        assert!(limits.take(Some("u1"), None).expect("the default backend has no limit").is_none());
        assert!(limits.take(Some("u2"), backend("a", 1)).expect("another user on a").is_some());
        assert_eq!((limits.streams_on("a", "u1"), limits.streams_on("b", "u1")), (1, 1));
        drop(on_a);
        assert_eq!(limits.streams_on("a", "u1"), 0);
        assert!(limits.take(Some("u1"), backend("a", 1)).expect("freed").is_some());
    }

    #[test]
    fn global_and_backend_limits_apply_together() {
        let limits = UserLimits::new(3);
        let on_a: Vec<_> = (0..2).map(|_| limits.take(Some("u1"), backend("a", 2)).expect("on a")).collect();
        assert_eq!(limits.take(Some("u1"), backend("a", 2)).unwrap_err(), UserLimitExceeded::Backend);
        assert_eq!(limits.streams_of("u1"), 2, "the backend refusal took no global slot");
        let elsewhere = limits.take(Some("u1"), None).expect("one more elsewhere");
        assert_eq!(limits.take(Some("u1"), backend("b", 5)).unwrap_err(), UserLimitExceeded::Global);
        assert_eq!(limits.streams_on("b", "u1"), 0, "the global refusal took no backend slot");
        drop((on_a, elsewhere));
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn a_reloaded_limit_judges_later_streams() {
        let limits = UserLimits::new(1);
        let held = limits.take(Some("u1"), None).expect("first");
        limits.set_max_per_user(2);
        let second = limits.take(Some("u1"), None).expect("the raised limit");
        assert!(second.is_some());
        limits.set_max_per_user(0);
        assert!(limits.take(Some("u1"), None).expect("off").is_none());
        drop((held, second));
        assert_eq!(limits.tracked(), 0);
    }

    #[test]
    fn concurrent_takes_never_exceed_a_users_limit() {
        const THREADS: usize = 8;
        const MAX: u32 = 5;
        let limits = UserLimits::new(MAX);
        let barrier = Arc::new(std::sync::Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let limits = Arc::clone(&limits);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let held: Vec<_> = (0..10).filter_map(|_| limits.take(Some("u1"), None).ok()).collect();
                    barrier.wait();
                    held.len()
                })
            })
            .collect();
        let taken: usize = handles.into_iter().map(|h| h.join().expect("taking thread panicked")).sum();
        assert_eq!(taken, MAX as usize);
        assert_eq!(limits.tracked(), 0);
    }
}
