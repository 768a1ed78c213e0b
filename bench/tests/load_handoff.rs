//! handoff-load against a fake daemon: the handoff it sends is the module's, and each kind
//! of response is judged as a browser would judge it, for TCP and socketpair clients.

mod load_support;

use std::time::Duration;

use handoff_bench::load::{run, ClientKind, FailureCounts, HandoffSocketType, LoadConfig, LoadReport};
use load_support::{FakeDaemon, Reply, CONTENT_EVENTS};
use rustix::net::{AddressFamily, SocketType};

const CLIENTS: [ClientKind; 2] = [ClientKind::Tcp, ClientKind::Unix];

fn config(daemon: &FakeDaemon, client: ClientKind, streams: u64) -> LoadConfig {
    LoadConfig {
        client,
        listeners: 2,
        timeout: Duration::from_secs(10),
        ..LoadConfig::new(&daemon.path, streams)
    }
}

/// Runs `streams` handoffs answered by `reply` and returns the report and what arrived.
fn run_against(
    client: ClientKind,
    streams: usize,
    reply: impl Fn(usize) -> Reply + Send + 'static,
    adjust: impl FnOnce(&mut LoadConfig),
) -> (LoadReport, Vec<load_support::Received>) {
    let daemon = FakeDaemon::start(SocketType::SEQPACKET, streams, reply);
    let mut config = config(&daemon, client, streams as u64);
    adjust(&mut config);
    let report = run(config).expect("the load run completes");
    (report, daemon.finish())
}

fn only(class: &str, count: u64) -> FailureCounts {
    let mut counts = FailureCounts::default();
    let slot = match class {
        "read" => &mut counts.read,
        "timeout" => &mut counts.timeout,
        "incomplete" => &mut counts.incomplete,
        "status" => &mut counts.status,
        "malformed" => &mut counts.malformed,
        "connect" => &mut counts.connect,
        other => panic!("no failure class {other}"),
    };
    *slot = count;
    counts
}

#[test]
fn complete_streams_are_ok_and_each_handoff_is_one_message_with_one_connected_socket() {
    for client in CLIENTS {
        let (report, received) = run_against(client, 6, |_| Reply::Complete, |_| {});
        assert_eq!((report.started, report.ok, report.failed), (6, 6, 0), "{client:?}: {report}");
        assert_eq!(report.events, 6 * CONTENT_EVENTS.len() as u64, "{client:?}");
        assert!(report.bytes > 6 * 200, "{client:?}: {} bytes", report.bytes);
        for latency in
            [&report.handoff_latency, &report.first_byte, &report.first_event, &report.stream_duration]
        {
            assert_eq!(latency.count, 6, "{client:?}");
            assert!(latency.p50_ms <= latency.max_ms, "{client:?}: {latency:?}");
        }
        assert_eq!(received.len(), 6);
        let family = match client {
            ClientKind::Tcp => AddressFamily::INET,
            ClientKind::Unix => AddressFamily::UNIX,
        };
        for handoff in &received {
            assert_eq!(handoff.data, br#"{"prompt":"benchmark test","user_id":1}"#, "{client:?}");
            assert_eq!(handoff.fds, 1, "{client:?}");
            assert!(!handoff.truncated, "{client:?}");
            assert!(handoff.fd_is_connected_stream, "{client:?}");
            assert_eq!(handoff.fd_family, Some(family), "{client:?}");
            assert!(handoff.closed_after_message, "{client:?}: the Unix socket stayed open");
        }
    }
}

#[test]
fn empty_data_is_sent_as_a_single_nul_byte() {
    let (report, received) = run_against(ClientKind::Unix, 1, |_| Reply::Complete, |c| c.data.clear());
    assert_eq!(report.ok, 1, "{report}");
    assert_eq!(received[0].data, [0]);
    assert_eq!(received[0].fds, 1);
}

#[test]
fn custom_data_arrives_byte_for_byte() {
    let data = br#"{"messages":[{"role":"user","content":"caf\u00e9"}],"test_pattern":"slow"}"#.to_vec();
    let expected = data.clone();
    let (report, received) = run_against(ClientKind::Tcp, 2, |_| Reply::Complete, move |c| c.data = data);
    assert_eq!(report.ok, 2, "{report}");
    assert!(received.iter().all(|handoff| handoff.data == expected));
}

#[test]
fn stream_cut_short_or_ending_in_an_error_event_is_incomplete() {
    for client in CLIENTS {
        for (reply, events) in [(Reply::Truncated, 2), (Reply::ErrorEvent, 1)] {
            let (report, _) = run_against(client, 3, move |_| reply, |_| {});
            assert_eq!(report.ok, 0, "{client:?} {reply:?}: {report}");
            assert_eq!(report.failures, only("incomplete", 3), "{client:?} {reply:?}");
            assert_eq!(report.events, 3 * events, "{client:?} {reply:?}");
            assert_eq!(report.first_event.count, 3, "{client:?} {reply:?}");
            assert_eq!(report.stream_duration.count, 0, "only successful streams have a duration");
        }
    }
}

#[test]
fn error_statuses_are_counted_by_code_apart_from_successes() {
    for client in CLIENTS {
        let reply = |i: usize| if i % 2 == 0 { Reply::Unavailable } else { Reply::Complete };
        let (report, _) = run_against(client, 6, reply, |_| {});
        assert_eq!((report.ok, report.failed), (3, 3), "{client:?}: {report}");
        assert_eq!(report.failures, only("status", 3), "{client:?}");
        assert_eq!(report.status_codes.get(&503), Some(&3), "{client:?}");
        assert_eq!(report.status_codes.len(), 1, "{client:?}");
        assert_eq!(report.first_byte.count, 6, "{client:?}");
    }
}

#[test]
fn a_daemon_that_never_answers_times_out_with_every_stream_open() {
    for client in CLIENTS {
        let (report, received) = run_against(
            client,
            4,
            |_| Reply::Silent,
            |c| {
                c.timeout = Duration::from_millis(300);
            },
        );
        assert_eq!(received.len(), 4, "{client:?}: the handoffs themselves went through");
        assert_eq!(report.failures, only("timeout", 4), "{client:?}: {report}");
        assert_eq!(report.handoff_latency.count, 4, "{client:?}");
        assert_eq!(report.first_byte.count, 0, "{client:?}");
        assert_eq!(report.peak_open_streams, 4, "{client:?}");
    }
}

#[test]
fn a_close_without_a_response_is_a_read_failure_and_garbage_is_malformed() {
    for client in CLIENTS {
        let (report, _) = run_against(client, 2, |_| Reply::Close, |_| {});
        assert_eq!(report.failures, only("read", 2), "{client:?}: {report}");
        assert!(report.first_errors.iter().any(|e| e.contains("without a response")), "{report}");

        let (report, _) = run_against(client, 2, |_| Reply::NotHttp, |_| {});
        assert_eq!(report.failures, only("malformed", 2), "{client:?}: {report}");
    }
}

#[test]
fn a_missing_socket_is_a_connect_failure_after_bounded_retries() {
    let path = load_support::unique_socket_path("missing");
    let config = LoadConfig { client: ClientKind::Unix, ..LoadConfig::new(&path, 3) };
    let report = run(config).expect("the load run completes");
    assert_eq!(report.failures, only("connect", 3), "{report}");
    assert!(report.first_errors.iter().any(|e| e.contains("after 3 attempt(s)")), "{report}");
    assert_eq!(report.handoff_latency.count, 0);
}

#[test]
fn a_stream_socket_to_the_daemon_carries_the_same_handoff() {
    let daemon = FakeDaemon::start(SocketType::STREAM, 3, |_| Reply::Complete);
    let config = LoadConfig { socket_type: HandoffSocketType::Stream, ..config(&daemon, ClientKind::Tcp, 3) };
    let report = run(config).expect("the load run completes");
    let received = daemon.finish();
    assert_eq!(report.ok, 3, "{report}");
    assert!(received.iter().all(|h| h.fds == 1 && h.fd_is_connected_stream && h.closed_after_message));
}

#[test]
fn ramped_arrivals_all_complete() {
    let (report, _) = run_against(
        ClientKind::Tcp,
        10,
        |_| Reply::Complete,
        |c| {
            c.ramp = Duration::from_millis(200);
            c.threads = 2;
        },
    );
    assert_eq!((report.started, report.ok), (10, 10), "{report}");
}

#[test]
fn sampling_a_process_reports_its_memory_cpu_and_fds() {
    // This test process stands in for the daemon: any live pid can be sampled.
    let pid = std::process::id();
    let (report, _) = run_against(
        ClientKind::Unix,
        4,
        |_| Reply::Complete,
        |c| {
            c.daemon_pid = Some(pid);
            c.sample_interval = Duration::from_millis(10);
        },
    );
    let daemon = report.daemon.as_ref().expect("daemon usage is reported");
    assert_eq!(daemon.pid, pid);
    assert!(daemon.rss_before_bytes > 0);
    assert!(daemon.rss_peak_bytes >= daemon.rss_before_bytes);
    assert!(daemon.hwm_bytes >= daemon.rss_before_bytes);
    assert!(daemon.threads_before >= 1 && daemon.peak_threads >= daemon.threads_before);
    assert!(daemon.fds_before >= 3 && daemon.peak_fds >= daemon.fds_before);
    assert!(daemon.samples >= 2, "before and after at least: {}", daemon.samples);
    assert!(!daemon.vanished);
    assert!(daemon.cpu_us_per_event.is_some(), "events were delivered: {report}");
    assert_eq!(daemon.rss_per_peak_stream_bytes.is_some(), report.peak_open_streams > 0);
    assert!(report.generator.fd_limit > 0);
}

#[test]
fn a_daemon_pid_that_cannot_be_read_stops_the_run_before_any_handoff() {
    let daemon = FakeDaemon::start(SocketType::SEQPACKET, 0, |_| Reply::Complete);
    // Above the kernel's pid_max, so never a live process.
    let config = LoadConfig { daemon_pid: Some(u32::MAX), ..config(&daemon, ClientKind::Unix, 1) };
    let error = run(config).expect_err("no process to sample");
    assert!(error.to_string().contains(&format!("/proc/{}", u32::MAX)), "{error}");
    assert!(daemon.finish().is_empty());
}

#[test]
fn report_survives_a_json_round_trip() {
    let (report, _) =
        run_against(ClientKind::Unix, 2, |i| [Reply::Complete, Reply::Unavailable][i % 2], |_| {});
    let json = serde_json::to_string(&report).expect("serialize");
    let back: LoadReport = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, report);
    let value: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(value["settings"]["socket_type"], "seqpacket");
    assert_eq!(value["settings"]["client"], "unix");
    assert_eq!(value["status_codes"]["503"], 1);
}
