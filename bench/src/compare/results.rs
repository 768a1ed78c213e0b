//! What a comparison measured: `results.json` is exactly a [`Comparison`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::flags::Bottleneck;
use super::matrix::{BackendKind, Cell, DaemonSpec};
use super::summaries::{self, MOCK_LLM_CONNECTIONS, MOCK_LLM_REQUESTS};
use super::{utc_timestamp, CompareConfig, Workload};
use crate::load::{DaemonUsage, LoadReport};

/// A whole comparison run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
    pub finished: String,
    pub command_line: Vec<String>,
    pub workload: Workload,
    pub host: Host,
    /// Column order.
    pub daemons: Vec<DaemonSpec>,
    pub backends: Vec<BackendKind>,
    pub streams: Vec<u64>,
    /// The share at which bottleneck flags are raised.
    pub saturation: f64,
    /// The share of a cell's streams that may fail before the cell is failed.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: f64,
    pub cells: Vec<CellResult>,
    /// Ctrl-c or SIGTERM ended the run early.
    pub interrupted: bool,
}

impl Comparison {
    pub fn new(config: &CompareConfig) -> Comparison {
        let now = utc_timestamp(std::time::SystemTime::now());
        Comparison {
            started: now.clone(),
            finished: now,
            command_line: config.command_line.clone(),
            workload: config.workload.clone(),
            host: Host::current(),
            daemons: config.daemons.clone(),
            backends: config.backends.clone(),
            streams: config.streams.clone(),
            saturation: config.saturation,
            failure_limit: config.failure_limit,
            cells: Vec::new(),
            interrupted: false,
        }
    }

    /// The result of one cell, if it ran.
    pub fn cell(&self, daemon: &str, backend: BackendKind, streams: u64) -> Option<&CellResult> {
        self.cells.iter().find(|result| {
            result.cell.daemon == daemon && result.cell.backend == backend && result.cell.streams == streams
        })
    }
}

/// Streams that may fail (not complete) before a cell is failed: 1%.
pub const DEFAULT_FAILURE_LIMIT: f64 = 0.01;

fn default_failure_limit() -> f64 {
    DEFAULT_FAILURE_LIMIT
}

/// Whether a cell's streams completed, so its latency and per-event figures mean
/// what they say: those are taken over the streams that completed (or got a byte),
/// and a daemon that failed nearly all of them would otherwise look fast and cheap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// More than `limit` of the streams did not complete.
    pub failed: bool,
    /// Streams asked for that did not complete: failed, or never started.
    pub incomplete: u64,
    /// Streams asked for.
    pub streams: u64,
    /// `incomplete` ÷ `streams`.
    pub incomplete_share: f64,
    /// The share above which the cell is failed.
    pub limit: f64,
}

impl Verdict {
    pub fn judge(load: &LoadReport, limit: f64) -> Verdict {
        let streams = load.settings.streams;
        let incomplete = streams.saturating_sub(load.ok);
        // A run of no streams has nothing to stand on.
        let incomplete_share = if streams == 0 { 1.0 } else { incomplete as f64 / streams as f64 };
        Verdict { failed: incomplete_share > limit, incomplete, streams, incomplete_share, limit }
    }
}

/// The machine the run was on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub cpus: usize,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// Our hard fd limit: the most any process we start may raise its own to.
    pub fd_limit: Option<u64>,
}

impl Host {
    pub fn current() -> Host {
        Host {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| text.trim().to_owned())
                .unwrap_or_default(),
            fd_limit: rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum,
        }
    }
}

/// One cell: the load generator's report and what we measured around it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub cell: Cell,
    /// The command line of each process started (`daemon`, `mock-llm`, `load`).
    pub commands: BTreeMap<String, String>,
    /// `None` when the cell failed before the load generator reported.
    pub load: Option<LoadReport>,
    /// The daemon's `--benchmark` summary (`peak concurrent streams`, `completed`, …).
    pub daemon_summary: BTreeMap<String, u64>,
    /// How the daemon stopped.
    pub daemon_stop: Option<String>,
    /// Whether the streams completed; `None` when there is no load report.
    #[serde(default)]
    pub verdict: Option<Verdict>,
    /// The backend process (OpenAI backends only).
    pub mock_llm: Option<MockLlmUsage>,
    /// Share of all the machine's cores busy during the load (everyone's work).
    pub host_cpu_busy: Option<f64>,
    /// Seconds from the load generator's start to its exit.
    pub load_wall_secs: f64,
    pub flags: Vec<Bottleneck>,
    pub notes: Vec<String>,
    /// Why the cell has no (or partial) results.
    pub error: Option<String>,
}

impl CellResult {
    pub fn new(cell: Cell) -> CellResult {
        CellResult {
            cell,
            commands: BTreeMap::new(),
            load: None,
            daemon_summary: BTreeMap::new(),
            daemon_stop: None,
            verdict: None,
            mock_llm: None,
            host_cpu_busy: None,
            load_wall_secs: 0.0,
            flags: Vec::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    pub fn daemon(&self) -> Option<&DaemonUsage> {
        self.load.as_ref().and_then(|load| load.daemon.as_ref())
    }

    /// More than the failure limit of its streams did not complete: its latency and
    /// per-event figures describe only the few that did.
    pub fn is_failed(&self) -> bool {
        self.verdict.is_some_and(|verdict| verdict.failed)
    }

    /// The daemon's own count of the most streams it had open at once, whatever its
    /// summary calls it.
    pub fn daemon_peak_streams(&self) -> Option<u64> {
        summaries::daemon_peak_streams(&self.daemon_summary)
    }

    /// Backend connections mock-llm accepted over the cell (its own count).
    pub fn backend_connections_accepted(&self) -> Option<u64> {
        self.mock_llm.as_ref().and_then(|mock| mock.summary.get(MOCK_LLM_CONNECTIONS).copied())
    }

    /// Requests mock-llm received per connection it accepted: how well the daemon
    /// reused its backend connections.
    pub fn backend_requests_per_connection(&self) -> Option<f64> {
        let requests = self.mock_llm.as_ref()?.summary.get(MOCK_LLM_REQUESTS).copied()?;
        let connections = self.backend_connections_accepted().filter(|n| *n > 0)?;
        Some(requests as f64 / connections as f64)
    }
}

/// mock-llm's cost and counts over one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MockLlmUsage {
    pub pid: u32,
    /// User + system CPU seconds while the load ran.
    pub cpu_seconds: f64,
    /// `cpu_seconds` over the load's wall time: 1.0 is one core busy throughout.
    pub core_share: f64,
    /// Most connections mock-llm held open at once, sampled from its descriptors
    /// (see `procstat::OpenConnections`): the daemon's open backend connections.
    pub peak_connections: Option<u64>,
    /// Its summary on exit (`connections`, `requests`, `completed`, `cancelled`, …):
    /// `connections` is its exact count of those it accepted.
    pub summary: BTreeMap<String, u64>,
    /// How it stopped.
    pub stop: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_json_reads_back_as_written() {
        let comparison = super::super::testdata::comparison();
        let json = serde_json::to_string_pretty(&comparison).expect("serializes");
        let back: Comparison = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, comparison);
        assert!(json.contains("\"kind\": \"host_cpu\""), "flags are tagged: {json}");
        assert!(json.contains("\"failure_limit\": 0.01"), "{json}");
        assert!(json.contains("\"failed\": true"), "the failed cell says so: {json}");
    }

    #[test]
    fn results_json_from_before_verdicts_still_reads() {
        let comparison = super::super::testdata::comparison();
        let mut json = serde_json::to_value(&comparison).expect("serializes");
        json.as_object_mut().expect("an object").remove("failure_limit");
        for cell in json["cells"].as_array_mut().expect("cells") {
            cell.as_object_mut().expect("an object").remove("verdict");
        }
        let back: Comparison = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back.failure_limit, DEFAULT_FAILURE_LIMIT);
        assert!(back.cells.iter().all(|cell| cell.verdict.is_none()));
    }

    #[test]
    fn a_cell_fails_when_more_than_the_limit_of_its_streams_did_not_complete() {
        let mut load = super::super::testdata::load_report(1.0, 1536.0, 2.0);
        (load.ok, load.failed) = (99, 1);
        let verdict = Verdict::judge(&load, 0.01);
        assert!(!verdict.failed, "1 of 100 is at the limit, not above: {verdict:?}");
        assert_eq!((verdict.incomplete, verdict.streams), (1, 100));
        (load.ok, load.failed) = (98, 2);
        assert!(Verdict::judge(&load, 0.01).failed);
        // Streams that never started (a run cut off) did not complete either.
        (load.ok, load.failed, load.started) = (90, 0, 90);
        let cut = Verdict::judge(&load, 0.05);
        assert!(cut.failed && cut.incomplete == 10 && (cut.incomplete_share - 0.1).abs() < 1e-12);
        assert!(!Verdict::judge(&load, 0.5).failed, "the limit is the caller's");
        load.settings.streams = 0;
        assert!(Verdict::judge(&load, 0.5).failed, "no streams, nothing measured");
    }

    #[test]
    fn cells_are_found_by_daemon_backend_and_streams() {
        let comparison = super::super::testdata::comparison();
        let cell = comparison.cell("tokio", BackendKind::Http1, 100).expect("ran");
        assert_eq!(cell.backend_connections_accepted(), Some(100));
        assert_eq!(cell.backend_requests_per_connection(), Some(1.0));
        assert!(comparison.cell("tokio", BackendKind::H2c, 100).is_none());
        assert_eq!(
            comparison.cell("tokio", BackendKind::Mock, 100).and_then(CellResult::daemon_peak_streams),
            Some(90)
        );
    }
}
