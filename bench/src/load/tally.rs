//! Folding finished streams into counts and latency histograms.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::report::{FailureClass, FailureCounts, LatencySummary};
use super::stream::StreamRecord;

/// Longest latency the histograms hold, in microseconds (one hour); longer ones saturate.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Distinct failure messages kept for the report.
const MAX_ERRORS: usize = 8;

/// Counts and histograms of the streams finished so far.
#[derive(Debug)]
pub struct Tally {
    pub ok: u64,
    pub failures: FailureCounts,
    pub status_codes: BTreeMap<u16, u64>,
    pub events: u64,
    pub bytes: u64,
    pub first_errors: Vec<String>,
    handoff: Histogram<u64>,
    first_byte: Histogram<u64>,
    first_event: Histogram<u64>,
    duration: Histogram<u64>,
}

/// The four latency summaries of a run.
#[derive(Debug, Clone, Copy)]
pub struct Latencies {
    pub handoff: LatencySummary,
    pub first_byte: LatencySummary,
    pub first_event: LatencySummary,
    pub duration: LatencySummary,
}

impl Tally {
    pub fn new() -> Result<Self, hdrhistogram::CreationError> {
        // Three significant digits: microsecond resolution below a second.
        let histogram = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3);
        Ok(Self {
            ok: 0,
            failures: FailureCounts::default(),
            status_codes: BTreeMap::new(),
            events: 0,
            bytes: 0,
            first_errors: Vec::new(),
            handoff: histogram()?,
            first_byte: histogram()?,
            first_event: histogram()?,
            duration: histogram()?,
        })
    }

    pub fn record(&mut self, stream: StreamRecord) {
        self.events += stream.events;
        self.bytes += stream.bytes;
        for (histogram, latency) in [
            (&mut self.handoff, stream.handoff),
            (&mut self.first_byte, stream.first_byte),
            (&mut self.first_event, stream.first_event),
            (&mut self.duration, stream.duration),
        ] {
            if let Some(latency) = latency {
                histogram.saturating_record(micros(latency));
            }
        }
        match stream.failure {
            None => self.ok += 1,
            Some((class, detail)) => self.record_failure(class, stream.status, detail),
        }
    }

    /// A stream that ended without a record (cut off at the run's deadline).
    pub fn record_failure(&mut self, class: FailureClass, status: Option<u16>, detail: String) {
        self.failures.add(class);
        if let (FailureClass::Status, Some(status)) = (class, status) {
            *self.status_codes.entry(status).or_default() += 1;
        }
        if self.first_errors.len() < MAX_ERRORS {
            let message = format!("{}: {detail}", class_name(class));
            if !self.first_errors.contains(&message) {
                self.first_errors.push(message);
            }
        }
    }

    pub fn failed(&self) -> u64 {
        self.failures.total()
    }

    pub fn latencies(&self) -> Latencies {
        Latencies {
            handoff: summarize(&self.handoff),
            first_byte: summarize(&self.first_byte),
            first_event: summarize(&self.first_event),
            duration: summarize(&self.duration),
        }
    }
}

fn micros(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn summarize(histogram: &Histogram<u64>) -> LatencySummary {
    if histogram.is_empty() {
        return LatencySummary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        count: histogram.len(),
        mean_ms: histogram.mean().round() / 1000.0,
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
    }
}

fn class_name(class: FailureClass) -> &'static str {
    match class {
        FailureClass::Client => "client",
        FailureClass::Connect => "connect",
        FailureClass::Send => "send",
        FailureClass::Read => "read",
        FailureClass::Timeout => "timeout",
        FailureClass::Incomplete => "incomplete",
        FailureClass::Status => "status",
        FailureClass::Malformed => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_stream(handoff_us: u64, events: u64) -> StreamRecord {
        StreamRecord {
            handoff: Some(Duration::from_micros(handoff_us)),
            first_byte: Some(Duration::from_micros(handoff_us * 2)),
            first_event: Some(Duration::from_micros(handoff_us + 1000)),
            duration: Some(Duration::from_millis(900)),
            status: Some(200),
            events,
            bytes: 100,
            failure: None,
        }
    }

    #[test]
    fn percentiles_are_in_milliseconds_with_microsecond_resolution() {
        let mut tally = Tally::new().expect("valid bounds");
        for us in 1..=1000 {
            tally.record(ok_stream(us, 18));
        }
        let latencies = tally.latencies();
        assert_eq!(latencies.handoff.count, 1000);
        assert_eq!(latencies.handoff.p50_ms, 0.5);
        assert_eq!(latencies.handoff.p99_ms, 0.99);
        assert_eq!(latencies.handoff.max_ms, 1.0);
        assert_eq!(latencies.first_byte.max_ms, 2.0);
        assert_eq!(latencies.first_event.p50_ms, 1.5);
        assert_eq!(tally.events, 18_000);
        assert_eq!(tally.ok, 1000);
    }

    #[test]
    fn failures_are_counted_by_class_and_status_code_with_distinct_messages() {
        let mut tally = Tally::new().expect("valid bounds");
        for _ in 0..3 {
            tally.record_failure(FailureClass::Status, Some(503), "status 503".to_owned());
        }
        tally.record_failure(FailureClass::Status, Some(400), "status 400".to_owned());
        tally.record_failure(FailureClass::Timeout, None, "timed out".to_owned());
        assert_eq!(tally.failures.status, 4);
        assert_eq!(tally.failures.timeout, 1);
        assert_eq!(tally.failed(), 5);
        assert_eq!(tally.status_codes, BTreeMap::from([(400, 1), (503, 3)]));
        assert_eq!(
            tally.first_errors,
            ["status: status 503", "status: status 400", "timeout: timed out"].map(String::from)
        );
        assert_eq!(tally.latencies().handoff, LatencySummary::default());
    }
}
