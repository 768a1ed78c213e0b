//! What a comparison measured: `results.json` is exactly a [`Comparison`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::flags::Bottleneck;
use super::matrix::{BackendKind, Cell, DaemonSpec};
use super::summaries::{DAEMON_PEAK_STREAMS, MOCK_LLM_CONNECTIONS};
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

    /// The daemon's own count of the most streams it had open at once.
    pub fn daemon_peak_streams(&self) -> Option<u64> {
        self.daemon_summary.get(DAEMON_PEAK_STREAMS).copied()
    }

    /// Backend connections mock-llm accepted over the cell.
    pub fn backend_connections_accepted(&self) -> Option<u64> {
        self.mock_llm.as_ref().and_then(|mock| mock.summary.get(MOCK_LLM_CONNECTIONS).copied())
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
    /// Most established TCP connections to mock-llm's port seen at once (sampled):
    /// the daemon's open backend connections.
    pub peak_connections: Option<u64>,
    /// Its summary on exit (`connections`, `requests`, `completed`, `cancelled`, …).
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
    }

    #[test]
    fn cells_are_found_by_daemon_backend_and_streams() {
        let comparison = super::super::testdata::comparison();
        let cell = comparison.cell("tokio", BackendKind::Http1, 100).expect("ran");
        assert_eq!(cell.backend_connections_accepted(), Some(100));
        assert!(comparison.cell("tokio", BackendKind::H2c, 100).is_none());
        assert_eq!(
            comparison.cell("tokio", BackendKind::Mock, 100).and_then(CellResult::daemon_peak_streams),
            Some(90)
        );
    }
}
