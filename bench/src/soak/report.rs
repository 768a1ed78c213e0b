//! The soak's summary: streams by kind and outcome, the daemon's levels and their
//! judged growth, CPU, and the verdict; as JSON and as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::generator::Tally;
use super::mix::Kind;
use super::samples::{Sample, MIB};
use super::stream::Outcome;
use super::trend::Growth;

/// A level over the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Levels {
    pub start: f64,
    /// The first sample at or after the end of warm-up.
    pub after_warmup: f64,
    /// The last sample before streams stopped starting.
    pub end: f64,
    pub max: f64,
}

impl Levels {
    pub fn of(samples: &[Sample], warmup: f64, end: f64, value: impl Fn(&Sample) -> f64) -> Levels {
        let at_warmup = samples.iter().find(|s| s.t_secs >= warmup).or(samples.last());
        let at_end = samples.iter().rev().find(|s| s.t_secs <= end).or(samples.last());
        Levels {
            start: samples.first().map_or(0.0, &value),
            after_warmup: at_warmup.map_or(0.0, &value),
            end: at_end.map_or(0.0, &value),
            max: samples.iter().map(&value).fold(0.0, f64::max),
        }
    }
}

/// Everything a soak found.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub passed: bool,
    /// Why it failed (empty when it passed).
    pub failures: Vec<String>,
    /// What passed only by a tolerance the command line gave.
    pub notes: Vec<String>,
    pub command_line: Vec<String>,
    pub daemon_command: String,
    pub mock_llm_command: String,
    pub backend: String,
    pub concurrency: u64,
    pub max_connections: u64,
    pub over_capacity_slots: u64,
    pub mix: String,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub elapsed_secs: f64,
    pub streams: u64,
    pub failed_streams: u64,
    /// kind → outcome → streams.
    pub by_kind: BTreeMap<String, BTreeMap<String, u64>>,
    pub failure_details: Vec<String>,
    /// Answered streams whose outcome is not the one their kind is designed to meet
    /// (kind → outcome → streams); they do not fail the run.
    pub unexpected: BTreeMap<String, BTreeMap<String, u64>>,
    pub rss_bytes: Levels,
    pub fds: Levels,
    pub threads: Levels,
    pub rss_growth: Growth,
    pub fd_growth: Growth,
    pub samples: usize,
    pub missed_samples: u64,
    pub daemon_cpu_secs: f64,
    /// Daemon CPU over the sampled time, as a share of one core.
    pub daemon_cpu_share: f64,
    pub generator_cpu_secs: f64,
    pub daemon_exit: String,
    /// The daemon's own `--benchmark` summary (its stdout).
    pub daemon_summary: String,
}

/// kind → outcome label → count, of the streams `keep` selects.
pub fn by_kind(
    tally: &Tally,
    keep: impl Fn(Kind, Outcome) -> bool,
) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut table: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((kind, outcome), count) in tally.counts.iter().filter(|((k, o), _)| keep(*k, *o)) {
        *table.entry(kind.name().to_owned()).or_default().entry(outcome.label()).or_default() += count;
    }
    table
}

impl Summary {
    /// The text form, for the terminal and summary.txt.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "PASS" } else { "FAIL" };
        let _ = writeln!(out, "handoff-bench soak: {verdict}");
        for failure in &self.failures {
            let _ = writeln!(out, "  failed: {failure}");
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        let _ = writeln!(out, "command: {}", self.command_line.join(" "));
        let _ = writeln!(out, "daemon: {}", self.daemon_command);
        let _ = writeln!(out, "mock-llm: {}", self.mock_llm_command);
        let _ = writeln!(
            out,
            "backend {}, concurrency {} ({} over-capacity slots, daemon --max-connections {}), \
             {:.0} s with {:.0} s warm-up (ran {:.0} s)",
            self.backend,
            self.concurrency,
            self.over_capacity_slots,
            self.max_connections,
            self.duration_secs,
            self.warmup_secs,
            self.elapsed_secs
        );
        let _ = writeln!(out, "mix: {}", self.mix);
        let _ = writeln!(out, "\nstreams: {} ({} failed)", self.streams, self.failed_streams);
        for kind in Kind::ALL {
            let Some(outcomes) = self.by_kind.get(kind.name()) else { continue };
            let total: u64 = outcomes.values().sum();
            let parts: Vec<String> = outcomes.iter().map(|(label, n)| format!("{label} {n}")).collect();
            let _ = writeln!(out, "  {:<20} {:>9}  {}", kind.name(), total, parts.join(", "));
        }
        for (kind, outcomes) in &self.unexpected {
            let parts: Vec<String> = outcomes.iter().map(|(label, n)| format!("{label} {n}")).collect();
            let _ = writeln!(out, "  unexpected (answered, not failing): {kind}: {}", parts.join(", "));
        }
        for detail in &self.failure_details {
            let _ = writeln!(out, "  first failures: {detail}");
        }
        let _ = writeln!(out, "\ndaemon            start  after-warm-up        end        max");
        let mib = |v: f64| v / MIB;
        let r = self.rss_bytes;
        let _ = writeln!(
            out,
            "  RSS (MiB)  {:>9.1}  {:>13.1}  {:>9.1}  {:>9.1}",
            mib(r.start),
            mib(r.after_warmup),
            mib(r.end),
            mib(r.max)
        );
        for (name, l) in [("fds", self.fds), ("threads", self.threads)] {
            let _ = writeln!(
                out,
                "  {name:<9}  {:>9.0}  {:>13.0}  {:>9.0}  {:>9.0}",
                l.start, l.after_warmup, l.end, l.max
            );
        }
        let g = &self.rss_growth;
        let _ = writeln!(
            out,
            "  RSS slope after warm-up: {:+.3} MiB/h over {:.0} s ({} samples): projected {:+.2} MiB, \
             threshold {:.2} MiB ({:.0}% of {:.1} MiB, at least {:.0} MiB)",
            g.slope_per_hour / MIB,
            g.span_secs,
            g.samples,
            g.projected_growth / MIB,
            g.threshold / MIB,
            g.limit.relative * 100.0,
            g.level / MIB,
            g.limit.floor / MIB
        );
        let g = &self.fd_growth;
        let _ = writeln!(
            out,
            "  fd slope after warm-up: {:+.2} fds/h over {:.0} s ({} samples): projected {:+.1} fds, \
             threshold {:.1} fds ({:.0}% of {:.0}, at least {:.0})",
            g.slope_per_hour,
            g.span_secs,
            g.samples,
            g.projected_growth,
            g.threshold,
            g.limit.relative * 100.0,
            g.level,
            g.limit.floor
        );
        let _ = writeln!(
            out,
            "  CPU: daemon {:.1} s ({:.1}% of one core), generator {:.1} s; samples {} ({} missed)",
            self.daemon_cpu_secs,
            self.daemon_cpu_share * 100.0,
            self.generator_cpu_secs,
            self.samples,
            self.missed_samples
        );
        let _ = writeln!(out, "  daemon exit: {}", self.daemon_exit);
        if !self.daemon_summary.trim().is_empty() {
            let _ = writeln!(out, "  daemon summary: {}", self.daemon_summary.trim().replace('\n', "; "));
        }
        out
    }
}
