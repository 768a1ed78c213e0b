//! A per-user token budget per time window (`--user-token-budget`,
//! `--user-token-window`), fed by the usage each stream's backend reported.
//!
//! Windows are fixed and aligned to the Unix epoch (an hour's window runs from
//! one full hour to the next), so every worker and every restart agree on
//! which window `now` is in, and a refused client is told exactly when the
//! next one starts. A stream is admitted while its user has spent less than
//! the budget in the current window; its usage is only known at its end, so
//! the stream that crosses the budget finishes, and the next one is refused.
//! Spending is kept in memory: a restart starts every user's window afresh.
//!
//! The spent amounts are one `Mutex`-protected map shared by every worker,
//! touched once when a stream is admitted and once when it ends, never per
//! event. It holds only the current window's users: a new window clears it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::openai::Usage;

/// The default window: one hour.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);

/// Every user's spending in the current window.
#[derive(Debug)]
pub struct TokenBudget {
    /// Tokens per user per window (0: no budget); changed only by a reload.
    budget: AtomicU64,
    window_ms: AtomicU64,
    spent: Mutex<Spent>,
}

#[derive(Debug, Default)]
struct Spent {
    /// The window `users` counts: `now_ms / window_ms`.
    window: u64,
    users: HashMap<String, u64>,
}

/// The user has spent its budget; the next window starts in this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSpent {
    /// Seconds until the next window (at least 1), for `Retry-After`.
    pub retry_after_secs: u32,
}

impl Default for TokenBudget {
    fn default() -> Self {
        TokenBudget::new(0, DEFAULT_WINDOW)
    }
}

impl TokenBudget {
    /// `budget` tokens per user per `window` (0: no budget).
    pub fn new(budget: u64, window: Duration) -> TokenBudget {
        let budget_state =
            TokenBudget { budget: AtomicU64::new(0), window_ms: AtomicU64::new(0), spent: Mutex::default() };
        budget_state.configure(budget, window);
        budget_state
    }

    /// A reloaded budget and window. Spending so far is kept while the window
    /// stays the same; a new window length starts every user afresh.
    pub fn configure(&self, budget: u64, window: Duration) {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        if self.window_ms.swap(window_ms, Relaxed) != window_ms {
            let mut spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
            spent.users.clear();
        }
        self.budget.store(budget, Relaxed);
    }

    /// Whether a budget is set (without it nothing is counted or locked).
    pub fn is_on(&self) -> bool {
        self.budget.load(Relaxed) > 0
    }

    /// Whether `user` may start a stream at `now_ms` (Unix milliseconds). A
    /// handoff without a user, or no budget, always may.
    pub fn check(&self, user: Option<&str>, now_ms: u64) -> Result<(), BudgetSpent> {
        let budget = self.budget.load(Relaxed);
        let Some(user) = user.filter(|_| budget > 0) else { return Ok(()) };
        let window_ms = self.window_ms.load(Relaxed).max(1);
        let mut spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        spent.roll(now_ms / window_ms);
        if spent.users.get(user).copied().unwrap_or(0) < budget {
            return Ok(());
        }
        let next_window_ms = (now_ms / window_ms).saturating_add(1).saturating_mul(window_ms);
        let wait_ms = next_window_ms.saturating_sub(now_ms);
        let retry_after_secs = u32::try_from(wait_ms.div_ceil(1000)).unwrap_or(u32::MAX).max(1);
        Err(BudgetSpent { retry_after_secs })
    }

    /// Adds a finished stream's `usage` to `user`'s spending in the window of
    /// `now_ms`: its `total_tokens`, else prompt plus completion.
    pub fn spend(&self, user: Option<&str>, usage: &Usage, now_ms: u64) {
        let Some(user) = user.filter(|_| self.is_on()) else { return };
        let tokens = usage.total_tokens.unwrap_or_else(|| {
            usage.prompt_tokens.unwrap_or(0).saturating_add(usage.completion_tokens.unwrap_or(0))
        });
        if tokens == 0 {
            return;
        }
        let window_ms = self.window_ms.load(Relaxed).max(1);
        let mut spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        spent.roll(now_ms / window_ms);
        let entry = spent.users.entry(user.to_owned()).or_insert(0);
        *entry = entry.saturating_add(tokens);
    }

    /// Tokens `user` has spent in the window of `now_ms`.
    pub fn spent_by(&self, user: &str, now_ms: u64) -> u64 {
        let window_ms = self.window_ms.load(Relaxed).max(1);
        let spent = self.spent.lock().unwrap_or_else(PoisonError::into_inner);
        if spent.window != now_ms / window_ms {
            return 0;
        }
        spent.users.get(user).copied().unwrap_or(0)
    }
}

impl Spent {
    /// Starts `window` afresh if it is not the one counted.
    fn roll(&mut self, window: u64) {
        if self.window != window {
            self.window = window;
            self.users.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: u64 = 3_600_000;

    fn usage(total: u64) -> Usage {
        Usage { total_tokens: Some(total), ..Usage::default() }
    }

    #[test]
    fn a_user_is_refused_once_its_budget_is_spent_until_the_next_window() {
        let budget = TokenBudget::new(100, DEFAULT_WINDOW);
        let now = 10 * HOUR_MS + 1_000;
        assert_eq!(budget.check(Some("u1"), now), Ok(()));
        budget.spend(Some("u1"), &usage(60), now);
        assert_eq!(budget.check(Some("u1"), now), Ok(()), "60 of 100 spent");
        budget.spend(Some("u1"), &usage(60), now);
        assert_eq!(budget.spent_by("u1", now), 120, "the stream that crosses the budget is counted whole");
        let refused = budget.check(Some("u1"), now).expect_err("over the budget");
        assert_eq!(refused.retry_after_secs, 3599, "the next window starts at the next full hour");
        assert_eq!(budget.check(Some("u2"), now), Ok(()), "another user has its own budget");
        assert_eq!(budget.check(None, now), Ok(()), "no user, no budget");
        assert_eq!(budget.check(Some("u1"), 11 * HOUR_MS), Ok(()), "a new window starts afresh");
        assert_eq!(budget.spent_by("u1", 11 * HOUR_MS), 0);
    }

    #[test]
    fn without_a_total_the_prompt_and_completion_are_spent() {
        let budget = TokenBudget::new(10, Duration::from_secs(60));
        let parts = Usage { prompt_tokens: Some(4), completion_tokens: Some(6), ..Usage::default() };
        budget.spend(Some("u1"), &parts, 0);
        assert_eq!(budget.spent_by("u1", 0), 10);
        assert_eq!(budget.check(Some("u1"), 59_999).expect_err("spent").retry_after_secs, 1);
    }

    #[test]
    fn no_budget_counts_nothing() {
        let budget = TokenBudget::default();
        budget.spend(Some("u1"), &usage(1_000_000), 0);
        assert_eq!(budget.spent_by("u1", 0), 0);
        assert_eq!(budget.check(Some("u1"), 0), Ok(()));
    }

    #[test]
    fn a_reload_keeps_spending_unless_the_window_changes() {
        let budget = TokenBudget::new(100, DEFAULT_WINDOW);
        budget.spend(Some("u1"), &usage(80), 0);
        budget.configure(50, DEFAULT_WINDOW);
        assert!(budget.check(Some("u1"), 0).is_err(), "a lower budget applies to what was spent");
        budget.configure(50, Duration::from_secs(60));
        assert_eq!(budget.check(Some("u1"), 0), Ok(()), "a new window length starts afresh");
    }
}
