//! A small comparison for the rendering tests: tokio, smol and a foreign daemon
//! (`peer`) over mock and HTTP/1.1 at 100 streams; one smol cell ended in an error,
//! and peer failed 98 of its 100 mock streams while its 2 completed ones look fast.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::flags::Bottleneck;
use super::matrix::{BackendKind, Cell, DaemonCommand, DaemonSpec};
use super::results::{CellResult, Comparison, MockLlmUsage, Verdict};
use super::CompareConfig;
use crate::load::{
    ClientKind, DaemonUsage, FailureCounts, GeneratorUsage, HandoffSocketType, LatencySummary, LoadReport,
    RunSettings,
};

fn latency(p50_ms: f64, p99_ms: f64) -> LatencySummary {
    LatencySummary {
        count: 100,
        mean_ms: p50_ms,
        p50_ms,
        p90_ms: (p50_ms + p99_ms) / 2.0,
        p99_ms,
        p999_ms: p99_ms * 1.5,
        max_ms: p99_ms * 2.0,
    }
}

/// A run of 100 streams with one timeout (within the 1% allowed), RSS growth
/// `rss_per_stream` bytes and `cpu_us` per event.
pub fn load_report(ttfb_p99_ms: f64, rss_per_stream: f64, cpu_us: f64) -> LoadReport {
    LoadReport {
        settings: RunSettings {
            socket: "/tmp/x.sock".to_owned(),
            socket_type: HandoffSocketType::SeqPacket,
            client: ClientKind::Tcp,
            listeners: 8,
            streams: 100,
            ramp_secs: 1.0,
            timeout_secs: 11.8,
            data_bytes: 39,
            threads: 1,
        },
        elapsed_secs: 2.0,
        started: 100,
        ok: 99,
        failed: 1,
        failures: FailureCounts { timeout: 1, ..FailureCounts::default() },
        status_codes: BTreeMap::new(),
        events: 1764,
        bytes: 200_000,
        peak_open_streams: 90,
        handoff_latency: latency(0.05, 0.2),
        first_byte: latency(0.1, ttfb_p99_ms),
        first_event: latency(50.0, 55.0),
        stream_duration: latency(900.0, 990.0),
        daemon: Some(DaemonUsage {
            pid: 42,
            rss_before_bytes: 4 << 20,
            rss_peak_bytes: (4 << 20) + (rss_per_stream * 90.0) as u64,
            rss_after_bytes: 4 << 20,
            hwm_bytes: 6 << 20,
            rss_per_peak_stream_bytes: Some(rss_per_stream),
            cpu_seconds: cpu_us * 1764.0 / 1e6,
            user_cpu_seconds: 0.0,
            system_cpu_seconds: 0.0,
            cpu_us_per_event: Some(cpu_us),
            threads_before: 3,
            peak_threads: 3,
            fds_before: 8,
            peak_fds: 200,
            samples: 10,
            missed_samples: 0,
            vanished: false,
        }),
        generator: GeneratorUsage { cpu_seconds: 0.1, peak_rss_bytes: 10 << 20, fd_limit: 20_000 },
        first_errors: vec!["stream timed out".to_owned()],
    }
}

fn result(daemon: &str, backend: BackendKind, load: Option<LoadReport>) -> CellResult {
    let mut result = CellResult::new(Cell { daemon: daemon.to_owned(), backend, streams: 100 });
    result.verdict = load.as_ref().map(|load| Verdict::judge(load, super::DEFAULT_FAILURE_LIMIT));
    result.load = load;
    result
}

/// 98 of 100 streams answered 503 at once; the 2 that completed were quick and
/// cheap.
fn mostly_failed_report() -> LoadReport {
    let mut load = load_report(0.2, 512.0, 1.0);
    (load.ok, load.failed) = (2, 98);
    load.failures = FailureCounts { status: 98, ..FailureCounts::default() };
    load.status_codes = BTreeMap::from([(503, 98)]);
    load.events = 36;
    load.peak_open_streams = 10;
    load.stream_duration.count = 2;
    load.first_errors = vec!["HTTP 503".to_owned()];
    load
}

/// mock-llm over a 2 s load that served 100 requests: `cpu_seconds`, the most
/// connections held at once, and those it accepted.
fn mock_llm(cpu_seconds: f64, peak_connections: u64, accepted: u64) -> MockLlmUsage {
    MockLlmUsage {
        pid: 7,
        cpu_seconds,
        core_share: cpu_seconds / 2.0,
        peak_connections: Some(peak_connections),
        summary: BTreeMap::from([("connections".to_owned(), accepted), ("requests".to_owned(), 100)]),
        stop: "stopped by SIGTERM".to_owned(),
    }
}

pub fn comparison() -> Comparison {
    let mut config = CompareConfig::standard(Path::new("/bin"), PathBuf::from("/tmp/out"));
    config.backends = vec![BackendKind::Mock, BackendKind::Http1];
    config.streams = vec![100];
    config.daemons.push(DaemonSpec {
        name: "peer".to_owned(),
        command: DaemonCommand::Template { command: "/opt/peer -s {socket} {args}".to_owned() },
    });
    let mut comparison = Comparison::new(&config);

    let mut tokio_mock = result("tokio", BackendKind::Mock, Some(load_report(0.5, 1536.0, 2.0)));
    tokio_mock.daemon_summary.insert("peak concurrent streams".to_owned(), 90);
    let mut smol_mock = result("smol", BackendKind::Mock, Some(load_report(1.0, 3072.0, 4.0)));
    smol_mock.flags.push(Bottleneck::HostCpu { busy_share: 0.95 });
    let mut tokio_http1 = result("tokio", BackendKind::Http1, Some(load_report(0.7, 2048.0, 5.0)));
    tokio_http1.mock_llm = Some(mock_llm(0.4, 88, 100));
    tokio_http1.notes.push("first error: stream timed out".to_owned());
    let mut smol_http1 = result("smol", BackendKind::Http1, None);
    smol_http1.error = Some("the daemon exited at start (exit status: 1)".to_owned());
    let mut peer_mock = result("peer", BackendKind::Mock, Some(mostly_failed_report()));
    peer_mock.daemon_summary.insert("Peak concurrent streams".to_owned(), 100);
    let mut peer_http1 = result("peer", BackendKind::Http1, Some(load_report(0.9, 2048.0, 6.0)));
    // 100 requests over 355 connections: it reopened them.
    peer_http1.mock_llm = Some(mock_llm(0.5, 100, 355));
    comparison.cells = vec![tokio_mock, smol_mock, peer_mock, tokio_http1, smol_http1, peer_http1];
    comparison
}
