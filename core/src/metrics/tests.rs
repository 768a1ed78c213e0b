use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::endpoint::{self, EndpointLimits, Health, MetricsAddr, Parsed, Route};
use super::*;
use crate::handoff::HandoffError;
use crate::stream::{Input, Source, Stream, StreamConfig};

/// The one real instant these tests read; the rest is offsets from it.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn every_stream_outcome_maps_to_its_label() {
    let cases = [
        (Outcome::Completed, "completed", ""),
        (Outcome::ClientGone, "client_gone", ""),
        (Outcome::ClientStalled, "client_stalled", ""),
        (Outcome::Failed(FailureReason::UpstreamStatus(429)), "backend_error", "upstream_status"),
        (Outcome::Failed(FailureReason::UpstreamError), "backend_error", "upstream_error"),
        (Outcome::Failed(FailureReason::UpstreamTruncated), "backend_error", "upstream_truncated"),
        (Outcome::Failed(FailureReason::UpstreamProtocol), "backend_error", "upstream_protocol"),
        (
            Outcome::Failed(FailureReason::Backend(FailureKind::Protocol)),
            "backend_error",
            "upstream_protocol",
        ),
        (
            Outcome::Failed(FailureReason::Backend(FailureKind::Unavailable)),
            "backend_error",
            "backend_unavailable",
        ),
        (Outcome::Failed(FailureReason::Backend(FailureKind::Reset)), "backend_error", "upstream_reset"),
        (Outcome::Failed(FailureReason::Backend(FailureKind::Overloaded)), "backend_error", "overloaded"),
        (Outcome::Failed(FailureReason::FirstByteTimeout), "timeout", "first_byte"),
        (Outcome::Failed(FailureReason::IdleTimeout), "timeout", "idle"),
        (Outcome::Failed(FailureReason::TotalTimeout), "timeout", "total"),
        (Outcome::Failed(FailureReason::Shutdown), "shutdown", ""),
    ];
    for (outcome, label, error_type) in cases {
        let mapped = HandoffOutcome::of_stream(&outcome);
        assert_eq!((mapped.outcome(), mapped.error_type()), (label, error_type), "{outcome:?}");
    }
}

#[test]
fn every_refusal_maps_to_a_rejection() {
    let cases = [
        (Refusal::AtCapacity, "capacity"),
        (Refusal::Draining, "draining"),
        (Refusal::UserLimit, "user_limit"),
        (Refusal::BadHandoff(HandoffError::Truncated), "bad_handoff"),
    ];
    for (refusal, reason) in cases {
        let mapped = HandoffOutcome::of_refusal(&refusal);
        assert_eq!((mapped.outcome(), mapped.error_type()), ("rejected", reason), "{refusal:?}");
    }
}

#[test]
fn label_pairs_are_unique_and_each_has_its_own_slot() {
    let pairs: HashSet<_> = HandoffOutcome::ALL.iter().map(|o| (o.outcome(), o.error_type())).collect();
    assert_eq!(pairs.len(), HandoffOutcome::ALL.len());
    let slots: HashSet<_> = HandoffOutcome::ALL.iter().map(|o| o.index()).collect();
    assert_eq!(slots.len(), HandoffOutcome::ALL.len());
}

#[test]
fn fd_event_labels_are_unique() {
    let labels: HashSet<_> = FdEvent::ALL.iter().map(|event| event.label()).collect();
    assert_eq!(labels.len(), FdEvent::ALL.len());
}

#[test]
fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
    let histogram = Histogram::default();
    histogram.observe(Duration::ZERO); // 0.001
    histogram.observe(ms(1)); // exactly 0.001
    histogram.observe(Duration::from_micros(1001)); // 0.005
    histogram.observe(ms(700)); // 1.0
    histogram.observe(Duration::from_secs(3600)); // +Inf
    let snapshot = histogram.snapshot();
    assert_eq!(snapshot.count(), 5);
    let buckets = snapshot.buckets();
    assert_eq!(buckets.len(), BUCKET_BOUNDS.len() + 1);
    assert_eq!(buckets[0], (0.001, 2));
    assert_eq!(buckets[1], (0.005, 1));
    let one_second = BUCKET_BOUNDS.iter().position(|&b| b == 1.0).unwrap();
    assert_eq!(buckets[one_second], (1.0, 1));
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
    assert_eq!(snapshot.sum_micros, 1000 + 1001 + 700_000 + 3_600_000_000);
    assert!((snapshot.sum_seconds() - 3600.702001).abs() < 1e-9);
}

fn summary(outcome: HandoffOutcome, duration: Duration, status: Option<u16>) -> StreamSummary {
    StreamSummary {
        outcome,
        duration,
        ttfb: Some(ms(1)),
        first_event: status.map(|_| ms(20)),
        events: 3,
        backend_status: status,
        bytes: 0,
    }
}

#[test]
fn totals_sum_every_worker() {
    let metrics = Metrics::new();
    let first = metrics.register();
    let second = metrics.register();
    first.record_stream(&summary(HandoffOutcome::Completed, ms(900), Some(200)));
    second.record_stream(&summary(HandoffOutcome::Completed, ms(100), None));
    second.record_stream(&summary(HandoffOutcome::ClientGone, ms(5), None));
    first.record_rejected(Rejection::Capacity);
    second.record_rejected(Rejection::PeerRefused);
    first.record_bytes_sent(1000);
    second.record_bytes_sent(24);
    first.record_backend_status(200);
    second.record_backend_status(200);
    second.record_backend_status(503);
    second.record_backend_status(42);
    first.record_pool(&PoolStats {
        open: 2,
        active_streams: 7,
        opened_total: 3,
        retries_total: 1,
        ping_timeouts_total: 2,
        ..Default::default()
    });
    let second_pool = PoolStats {
        open: 1,
        active_streams: 1,
        opened_total: 1,
        ping_timeouts_total: 1,
        ..Default::default()
    };
    second.record_pool(&second_pool);

    first.record_rejected(Rejection::NotStreamSocket);
    second.record_rejected(Rejection::NotStreamSocket);
    first.record_fd_event(FdEvent::ReserveUsed);
    second.record_fd_event(FdEvent::ReserveUsed);
    second.record_fd_event(FdEvent::Paused);

    let totals = metrics.totals();
    let count = |outcome| totals.handoffs().find(|&(o, _)| o == outcome).map(|(_, n)| n);
    let fd_event = |event| totals.fd_events().find(|&(e, _)| e == event).map(|(_, n)| n);
    assert_eq!(count(HandoffOutcome::Rejected(Rejection::NotStreamSocket)), Some(2));
    assert_eq!(count(HandoffOutcome::Rejected(Rejection::PeerNotAllowed)), Some(0));
    assert_eq!(fd_event(FdEvent::ReserveUsed), Some(2));
    assert_eq!(fd_event(FdEvent::Paused), Some(1));
    assert_eq!(fd_event(FdEvent::AcceptFailed), Some(0), "zeros are listed too");
    assert_eq!(totals.fd_events().count(), FdEvent::ALL.len());
    assert_eq!(count(HandoffOutcome::Completed), Some(2));
    assert_eq!(count(HandoffOutcome::ClientGone), Some(1));
    assert_eq!(count(HandoffOutcome::Rejected(Rejection::Capacity)), Some(1));
    assert_eq!(count(HandoffOutcome::Rejected(Rejection::PeerRefused)), Some(1));
    assert_eq!(count(HandoffOutcome::Timeout(TimeoutKind::Idle)), Some(0), "zeros are listed too");
    assert_eq!(totals.handoffs().count(), HandoffOutcome::ALL.len());
    assert_eq!(totals.duration.count(), 3);
    assert_eq!(totals.duration.sum_micros, 1_005_000);
    assert_eq!(totals.ttfb.count(), 3);
    assert_eq!(totals.first_event.count(), 1, "only the stream with a first event");
    assert_eq!(totals.events_sent, 9);
    assert_eq!(totals.bytes_sent, 1024);
    assert_eq!(totals.backend_statuses, [(Some(200), 2), (Some(503), 1), (None, 1)]);
    assert_eq!((totals.backend_connections_open, totals.backend_streams_active), (3, 8));
    assert_eq!((totals.backend_connections_opened, totals.backend_retries), (4, 1));
    assert_eq!(totals.backend_ping_timeouts, 3, "summed over workers");
}

#[test]
fn worker_counters_do_not_share_cache_lines() {
    assert!(std::mem::align_of::<WorkerMetrics>() >= 128);
    assert_eq!(std::mem::size_of::<WorkerMetrics>() % 128, 0);
}

// ---- the stream's summary ----

fn mock_stream(now: Instant, delay: Duration) -> Stream {
    let config = StreamConfig { mock_delay: delay, ..StreamConfig::default() };
    let script = crate::mock::Script::new(1, "u1", "hello");
    Stream::new(now, &config, Bytes::from_static(b"HEAD"), Source::Mock(script))
}

/// Drains the machine's outputs; the outcome when it finished.
fn drain(stream: &mut Stream) -> Option<Outcome> {
    loop {
        match stream.poll_output() {
            crate::stream::Output::Done(outcome) => return Some(outcome),
            crate::stream::Output::Timeout(_) => return None,
            _ => {}
        }
    }
}

#[test]
fn a_completed_mock_stream_reports_its_first_byte_first_event_and_events() {
    let start = origin();
    let mut stream = mock_stream(start, ms(10));
    assert_eq!(drain(&mut stream), None);
    stream.handle_input(start + ms(2), Input::ClientTook(4));
    let mut outcome = None;
    for step in 1..=40u64 {
        stream.handle_input(start + ms(10 * step), Input::Timeout);
        stream.handle_input(start + ms(10 * step), Input::ClientTook(usize::MAX / 2));
        outcome = drain(&mut stream);
        if outcome.is_some() {
            break;
        }
    }
    let outcome = outcome.expect("the script finishes within 40 steps");
    let summary = stream.summary(start + ms(200), &outcome);
    assert_eq!(summary.outcome, HandoffOutcome::Completed);
    assert_eq!(summary.ttfb, Some(ms(2)));
    assert_eq!(summary.first_event, Some(ms(10)));
    assert_eq!(summary.events, crate::mock::EVENT_COUNT);
    assert_eq!(summary.duration, ms(200));
    assert_eq!(summary.backend_status, None, "the mock has no backend");
}

#[test]
fn a_backend_stream_reports_its_status_and_counts_only_content_events() {
    let start = origin();
    let config = StreamConfig::default();
    let mut stream = Stream::new(start, &config, Bytes::from_static(b"HEAD"), Source::Backend);
    drain(&mut stream);
    stream.handle_input(start + ms(1), Input::ClientTook(4));
    stream.handle_input(start + ms(30), Input::BackendHead { status: 200 });
    let chunk = |content: &str| {
        format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n")
    };
    stream.handle_input(
        start + ms(40),
        Input::BackendData(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"),
    );
    assert_eq!(drain(&mut stream), None);
    stream.handle_input(start + ms(50), Input::BackendData(chunk("a").as_bytes()));
    stream.handle_input(start + ms(60), Input::BackendData(chunk("b").as_bytes()));
    stream.handle_input(start + ms(70), Input::BackendData(b"data: [DONE]\n\n"));
    let outcome = drain(&mut stream).expect("[DONE] completes it");
    let summary = stream.summary(start + ms(70), &outcome);
    assert_eq!(summary.backend_status, Some(200));
    assert_eq!(summary.events, 2, "the role-only chunk and [DONE] are not content");
    assert_eq!(summary.first_event, Some(ms(50)));
    assert_eq!(summary.ttfb, Some(ms(1)));
}

#[test]
fn a_client_that_never_took_a_byte_has_no_ttfb() {
    let start = origin();
    let mut stream = mock_stream(start, ms(10));
    drain(&mut stream);
    stream.handle_input(start + ms(3), Input::ClientGone);
    let outcome = drain(&mut stream).expect("client gone ends it");
    let summary = stream.summary(start + ms(3), &outcome);
    assert_eq!(summary.outcome, HandoffOutcome::ClientGone);
    assert_eq!((summary.ttfb, summary.first_event, summary.events), (None, None, 0));
}

// ---- the endpoint ----

fn limits() -> EndpointLimits {
    EndpointLimits::default()
}

#[test]
fn routes_get_and_head_requests() {
    let parse = |request: &[u8]| endpoint::parse_request(request, &limits());
    assert_eq!(
        parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        Parsed::Request { route: Some(Route::Metrics), head_only: false }
    );
    assert_eq!(
        parse(b"HEAD /healthz?probe=1 HTTP/1.0\r\n\r\n"),
        Parsed::Request { route: Some(Route::Healthz), head_only: true }
    );
    assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Parsed::Request { route: None, head_only: false });
    assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Parsed::Refused(405));
    assert_eq!(parse(b"GET /metrics HTTP/1.1\r\nHost"), Parsed::Incomplete);
    assert_eq!(parse(b"\x16\x03\x01 garbage\r\n\r\n"), Parsed::Refused(400));
}

#[test]
fn a_head_that_reaches_the_size_bound_is_refused() {
    let small = EndpointLimits { max_request_head: 64, ..limits() };
    let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
    request.extend(std::iter::repeat_n(b'a', 64));
    assert_eq!(endpoint::parse_request(&request, &small), Parsed::Refused(431));
    let many: String = (0..40).map(|i| format!("X-{i}: v\r\n")).collect();
    let request = format!("GET /metrics HTTP/1.1\r\n{many}\r\n");
    assert_eq!(endpoint::parse_request(request.as_bytes(), &limits()), Parsed::Refused(431));
}

#[test]
fn responses_are_complete_and_close_the_connection() {
    let text = String::from_utf8(Health::Ok.response(false)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("\r\nContent-Length: 3\r\n") && text.contains("\r\nConnection: close\r\n"));
    assert!(text.ends_with("\r\n\r\nok\n"));
    let draining = String::from_utf8(Health::of(true, true).response(false)).unwrap();
    assert!(draining.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && draining.ends_with("draining\n"));
    assert_eq!(Health::of(false, false), Health::Hung);
    let head = String::from_utf8(Health::Hung.response(true)).unwrap();
    assert!(head.starts_with("HTTP/1.1 503 ") && head.ends_with("\r\n\r\n"), "HEAD has no body");
    let not_allowed = String::from_utf8(endpoint::error_response(405)).unwrap();
    assert!(not_allowed.contains("\r\nAllow: GET, HEAD\r\n"));
    let not_found = String::from_utf8(endpoint::error_response(404)).unwrap();
    assert!(not_found.starts_with("HTTP/1.1 404 Not Found\r\n") && not_found.ends_with("not found\n"));
}

#[test]
fn metrics_addresses_are_tcp_or_a_path() {
    assert_eq!(
        MetricsAddr::parse("127.0.0.1:9100"),
        Ok(MetricsAddr::Tcp { host: "127.0.0.1".into(), port: 9100 })
    );
    assert_eq!(MetricsAddr::parse("[::1]:0"), Ok(MetricsAddr::Tcp { host: "::1".into(), port: 0 }));
    assert_eq!(MetricsAddr::parse("[::1]:0").unwrap().to_string(), "[::1]:0");
    assert_eq!(
        MetricsAddr::parse("localhost:9100"),
        Ok(MetricsAddr::Tcp { host: "localhost".into(), port: 9100 })
    );
    assert_eq!(
        MetricsAddr::parse("/run/handoff-metrics.sock"),
        Ok(MetricsAddr::Unix("/run/handoff-metrics.sock".into()))
    );
    assert_eq!(MetricsAddr::parse("./m.sock"), Ok(MetricsAddr::Unix("./m.sock".into())));
    assert!(MetricsAddr::parse("9100").is_err());
    assert!(MetricsAddr::parse(":9100").is_err());
    assert!(MetricsAddr::parse("host:99999").is_err());
}

#[test]
fn the_setting_turns_the_endpoint_on() {
    use crate::config::Settings;
    let off = Settings::default().validate().unwrap();
    assert_eq!(off.metrics, None);
    let on = Settings { metrics_addr: Some("127.0.0.1:0".into()), ..Settings::default() };
    let metrics = on.validate().unwrap().metrics.expect("on");
    assert_eq!(metrics.addr, MetricsAddr::Tcp { host: "127.0.0.1".into(), port: 0 });
    assert_eq!(metrics.limits, EndpointLimits::default());
    let bad = Settings { metrics_addr: Some("nope".into()), ..Settings::default() };
    assert!(matches!(bad.validate(), Err(crate::config::ConfigError::BadMetricsAddr(_))));
}
