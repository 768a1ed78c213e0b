//! The Prometheus text the endpoint serves: core's counters, summed over the
//! workers at scrape time, encoded by `prometheus-client` through a collector
//! (its own metric types would put a lock on every observation).

use std::sync::Arc;

use handoff_core::metrics::HistogramSnapshot;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::BuildInfo;
use crate::daemon::Global;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry (built once) whose collector reads the counters at each scrape.
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    pub fn new(global: Arc<Global>, build: BuildInfo) -> Exposition {
        let mut registry = Registry::with_prefix("handoff");
        registry.register_collector(Box::new(Families { global, build }));
        Exposition { registry }
    }

    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(8 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

struct Families {
    global: Arc<Global>,
    build: BuildInfo,
}

impl std::fmt::Debug for Families {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Families").field("build", &self.build).finish_non_exhaustive()
    }
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    encoder.encode_descriptor(name, help, None, MetricType::Gauge)?.encode_gauge(&value)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, unit, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    encoder
        .encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(
            histogram.sum_seconds(),
            histogram.count(),
            &histogram.buckets(),
            None,
        )
}

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let totals = self.global.metrics.totals();
        let limits = self.global.limits.snapshot();
        let threads = self.build.threads.to_string();
        let build = [
            ("version", self.build.version),
            ("runtime", self.build.runtime.as_str()),
            ("threads", &threads),
        ];
        encoder
            .encode_descriptor(
                "build",
                "The daemon's version, runtime and worker threads.",
                None,
                MetricType::Info,
            )?
            .encode_info(&build)?;
        gauge(&mut encoder, "streams_active", "Client streams running now.", limits.active)?;
        gauge(
            &mut encoder,
            "streams_limit",
            "Client streams allowed at once (--max-connections); more are answered 503.",
            self.global.limits.max_streams(),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "handoffs",
                "Handoffs by what became of them: a stream's outcome, or why it was rejected.",
                None,
                MetricType::Counter,
            )?;
            for (outcome, count) in totals.handoffs() {
                let labels = [("outcome", outcome.outcome()), ("type", outcome.error_type())];
                family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "fd_exhaustion",
                "What the fd reserve met: accepts that failed for lack of fds, accepted \
                 handoffs with no room for their client, reserves used, accept pauses, \
                 reserves not re-opened at once.",
                None,
                MetricType::Counter,
            )?;
            for (event, count) in totals.fd_events() {
                let labels = [("event", event.label())];
                family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        histogram(
            &mut encoder,
            "ttfb",
            "From the handoff until the client took the response's first bytes.",
            &totals.ttfb,
        )?;
        histogram(
            &mut encoder,
            "first_event",
            "From the handoff until the first content event was written.",
            &totals.first_event,
        )?;
        histogram(
            &mut encoder,
            "stream_duration",
            "From the handoff to the stream's outcome.",
            &totals.duration,
        )?;
        counter(
            &mut encoder,
            "client_sent",
            "Bytes written to clients.",
            Some(&Unit::Bytes),
            totals.bytes_sent,
        )?;
        counter(
            &mut encoder,
            "client_events",
            "Content events written to clients.",
            None,
            totals.events_sent,
        )?;
        gauge(
            &mut encoder,
            "backend_connections_open",
            "Backend connections open.",
            totals.backend_connections_open,
        )?;
        gauge(
            &mut encoder,
            "backend_connections_connecting",
            "Backend connections being opened.",
            totals.backend_connections_connecting,
        )?;
        counter(
            &mut encoder,
            "backend_connections_opened",
            "Backend connections opened since start.",
            None,
            totals.backend_connections_opened,
        )?;
        gauge(
            &mut encoder,
            "backend_streams_active",
            "Backend requests on a connection now (divide by connections open for streams per connection).",
            totals.backend_streams_active,
        )?;
        gauge(
            &mut encoder,
            "backend_streams_queued",
            "Backend requests waiting for a connection.",
            totals.backend_streams_queued,
        )?;
        counter(
            &mut encoder,
            "backend_retries",
            "Backend requests sent again after a rejection the server cannot have processed.",
            None,
            totals.backend_retries,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "records",
                "Completion records by result: written to the file, delivered to or rejected by the webhook, spooled, dropped, attempts retried.",
                None,
                MetricType::Counter,
            )?;
            for (event, count) in handoff_core::metrics::RecordEvent::ALL.iter().zip(totals.records) {
                family
                    .encode_family(&[("result", event.label())])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        gauge(
            &mut encoder,
            "records_spool_bytes",
            "Bytes of completion records waiting in the webhook spool.",
            totals.records_spool_bytes,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "config_reloads",
                "Configuration reloads (SIGHUP) by result: applied, or failed (the old configuration stayed).",
                None,
                MetricType::Counter,
            )?;
            for (result, count) in
                [("applied", totals.config_reloads_applied), ("failed", totals.config_reloads_failed)]
            {
                family
                    .encode_family(&[("result", result)])?
                    .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
            }
        }
        counter(
            &mut encoder,
            "backend_ping_timeouts",
            "Backend connections dropped because they did not answer an HTTP/2 PING in time.",
            None,
            totals.backend_ping_timeouts,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "backend_responses",
                "Backend response heads by HTTP status.",
                None,
                MetricType::Counter,
            )?;
            for (status, count) in &totals.backend_statuses {
                let status = status.map_or_else(|| "other".to_owned(), |s| s.to_string());
                family
                    .encode_family(&[("status", status.as_str())])?
                    .encode_counter::<NoLabelSet, _, u64>(count, None)?;
            }
        }
        Ok(())
    }
}
