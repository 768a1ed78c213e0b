//! Churn at a fixed concurrency: each slot runs one stream after another until the
//! end time, so the daemon holds about `concurrency` streams the whole run.
//!
//! Regular slots draw each stream's kind from the mix. Over-capacity slots (their
//! share of the concurrency, see [`Mix::over_capacity_slots`]) hand off ordinary
//! streams while the regular slots hold the daemon at its `--max-connections`, so
//! they are answered 503. Any slot answered 503 waits the retry pause before its next
//! stream, as a client honouring `Retry-After` would, so a full daemon is not flooded;
//! over-capacity slots wait it after every stream.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, Instant};

use super::mix::{Kind, Mix, SplitMix};
use super::stream::{self, Outcome, StreamSettings};

/// Distinct failure details kept per slot and overall.
const MAX_DETAILS: usize = 16;

/// Counters the progress line reads.
#[derive(Debug, Default)]
pub struct Live {
    pub open: AtomicU64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

/// How the slots run.
#[derive(Debug, Clone)]
pub struct Churn {
    pub concurrency: u64,
    pub mix: Mix,
    /// Slot starts are spread over this span.
    pub ramp: Duration,
    /// No stream starts after this long.
    pub duration: Duration,
    /// Pause after a 503.
    pub retry_pause: Duration,
    pub seed: u64,
}

/// Streams by kind and outcome, and the first failure details.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub counts: BTreeMap<(Kind, Outcome), u64>,
    pub details: Vec<String>,
}

impl Tally {
    fn record(&mut self, kind: Kind, finished: stream::Finished) {
        *self.counts.entry((kind, finished.outcome)).or_default() += 1;
        if let (true, Some(detail)) = (finished.outcome.is_failure(), finished.detail) {
            let line = format!("{kind}: {}: {detail}", finished.outcome.label());
            if self.details.len() < MAX_DETAILS && !self.details.contains(&line) {
                self.details.push(line);
            }
        }
    }

    fn merge(&mut self, other: Tally) {
        for (key, count) in other.counts {
            *self.counts.entry(key).or_default() += count;
        }
        for line in other.details {
            if self.details.len() < MAX_DETAILS && !self.details.contains(&line) {
                self.details.push(line);
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Streams closed without a byte.
    pub fn no_answers(&self) -> u64 {
        self.counts.iter().filter(|((_, outcome), _)| *outcome == Outcome::NoAnswer).map(|(_, n)| n).sum()
    }

    pub fn failures(&self) -> u64 {
        self.counts.iter().filter(|((_, outcome), _)| outcome.is_failure()).map(|(_, n)| n).sum()
    }
}

/// Runs every slot to the end time and returns the tally; a panicked slot is an error.
pub async fn churn(churn: &Churn, settings: Arc<StreamSettings>, live: Arc<Live>) -> Result<Tally, String> {
    let start = Instant::now();
    let end = start + churn.duration;
    let over = churn.mix.over_capacity_slots(churn.concurrency);
    let mut slots = JoinSet::new();
    for slot in 0..churn.concurrency {
        let offset = churn.ramp.mul_f64(slot as f64 / churn.concurrency.max(1) as f64);
        let plan = SlotPlan {
            first: start + offset,
            end,
            // The last slots are the over-capacity ones, so they start once the daemon is full.
            over_capacity: slot >= churn.concurrency - over,
            mix: churn.mix.clone(),
            retry_pause: churn.retry_pause,
            rng: SplitMix::new(churn.seed ^ slot.wrapping_mul(0x2545_F491_4F6C_DD1D)),
            user_base: slot << 32,
        };
        slots.spawn(run_slot(plan, Arc::clone(&settings), Arc::clone(&live)));
    }
    let mut tally = Tally::default();
    while let Some(joined) = slots.join_next().await {
        tally.merge(joined.map_err(|e| format!("a soak slot panicked: {e}"))?);
    }
    Ok(tally)
}

struct SlotPlan {
    first: Instant,
    end: Instant,
    over_capacity: bool,
    mix: Mix,
    retry_pause: Duration,
    rng: SplitMix,
    user_base: u64,
}

async fn run_slot(mut plan: SlotPlan, settings: Arc<StreamSettings>, live: Arc<Live>) -> Tally {
    let mut tally = Tally::default();
    sleep_until(plan.first).await;
    let mut n: u64 = 0;
    while Instant::now() < plan.end {
        let kind =
            if plan.over_capacity { Kind::OverCapacity } else { plan.mix.pick_regular(plan.rng.next_u64()) };
        live.open.fetch_add(1, Ordering::Relaxed);
        let finished = stream::run(kind, plan.user_base | (n & 0xFFFF_FFFF), &settings).await;
        live.open.fetch_sub(1, Ordering::Relaxed);
        let counter = if finished.outcome.is_failure() { &live.failed } else { &live.done };
        counter.fetch_add(1, Ordering::Relaxed);
        // Over-capacity slots pause after every stream, let in or not, so they probe a
        // full daemon about once a pause each rather than spinning on its gaps.
        let refused = finished.outcome == Outcome::Status(503) || plan.over_capacity;
        tally.record(kind, finished);
        n += 1;
        if refused {
            sleep(plan.retry_pause.min(plan.end.saturating_duration_since(Instant::now()))).await;
        }
    }
    tally
}
