//! The progress line on stderr, rewritten in place at most twice a second.

use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::stream::LiveCounters;

const EVERY: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct ProgressLine {
    start: Instant,
    next: Instant,
}

impl ProgressLine {
    pub fn new(start: Instant) -> Self {
        Self { start, next: start + EVERY }
    }

    pub fn next_due(&self) -> Instant {
        self.next
    }

    pub fn print(&mut self, live: &LiveCounters) {
        let now = Instant::now();
        self.next = now + EVERY;
        write_line(live, now - self.start, "\r");
    }

    /// The last state, ending the line.
    pub fn finish(live: &LiveCounters, elapsed: Duration) {
        write_line(live, elapsed, "\n");
    }
}

fn write_line(live: &LiveCounters, elapsed: Duration, end: &str) {
    let line = format!(
        "\rstarted {}  open {}  done {}  failed {}  elapsed {:.1}s   {end}",
        live.started.load(Ordering::Relaxed),
        live.open.load(Ordering::Relaxed),
        live.done.load(Ordering::Relaxed),
        live.failed.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
    );
    // Progress is a courtesy: a closed stderr must not end the run.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}
