//! handoff-bench compare: the daemons side by side over a matrix of backends and
//! concurrency levels, each cell in fresh processes.
//!
//! Per cell: mock-llm (for the OpenAI backends) and the daemon start as separate
//! processes; the load generator (`handoff-load`, a third process) hands off the
//! cell's streams and samples the daemon from /proc; we sample mock-llm's CPU time,
//! the machine's CPU time and the connections mock-llm holds open; then every
//! process is stopped by pid and its summary read back. A cell where more than
//! [`CompareConfig::failure_limit`] of the streams did not complete is failed: its
//! latency and per-event figures (taken over the few that did) are withheld from
//! the tables and charts. Results go to a folder: `results.json` (everything),
//! `results.md` (tables), and three SVG charts.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use handoff_bench::compare::{run, CompareConfig, Interrupt};
//! let config = CompareConfig::standard(std::path::Path::new("target/release"), "bench/results/x".into());
//! let comparison = run(&config, Interrupt::on_signals()?).await?;
//! println!("{}", handoff_bench::compare::markdown(&comparison));
//! # Ok(()) }
//! ```

mod cell;
mod charts;
mod flags;
pub(crate) mod launch;
mod matrix;
pub(crate) mod process;
mod procstat;
mod report;
mod results;
mod summaries;
mod svg;
#[cfg(test)]
mod testdata;
mod timestamp;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::load::{ClientKind, DEFAULT_DATA};

pub use flags::Bottleneck;
pub use launch::{shell_quote, DaemonOptions};
pub use matrix::{matches_pattern, BackendKind, Cell, DaemonCommand, DaemonSpec};
pub use report::markdown;
pub use results::{CellResult, Comparison, Host, MockLlmUsage, Verdict, DEFAULT_FAILURE_LIMIT};
pub use timestamp::{folder_timestamp, utc_timestamp};

/// The daemons of this workspace, by the name their columns carry.
pub const BUILTIN_DAEMONS: [&str; 2] = ["tokio", "smol"];

/// Content events per stream: the daemon's mock script has exactly this many, and
/// mock-llm is told to send as many.
pub const EVENTS_PER_STREAM: u32 = handoff_core::mock::EVENT_COUNT;

/// What every stream of every cell does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Spacing of the backend's events (mock script `-d`, mock-llm `--token-delay-ms`).
    pub delay_ms: u64,
    /// Content events per stream (fixed: [`EVENTS_PER_STREAM`]).
    pub events: u32,
    /// Arrivals are spread evenly over this many seconds.
    pub ramp_secs: f64,
    /// Per-stream limit in the load generator, from handoff to the response's end.
    pub timeout_secs: f64,
    /// Handoff data every stream sends.
    pub data: String,
    /// What the handed-off client socket is.
    pub client: ClientKind,
}

impl Workload {
    /// 18 events spaced 705 ms, arrivals over 10 s, the standard handoff data, TCP.
    pub fn standard() -> Workload {
        Workload::with_delay(705, 10.0)
    }

    /// The standard workload with another pacing and ramp; the timeout follows.
    pub fn with_delay(delay_ms: u64, ramp_secs: f64) -> Workload {
        let mut workload = Workload {
            delay_ms,
            events: EVENTS_PER_STREAM,
            ramp_secs,
            timeout_secs: 0.0,
            data: DEFAULT_DATA.to_owned(),
            client: ClientKind::Tcp,
        };
        workload.timeout_secs = workload.default_timeout_secs();
        workload
    }

    /// How long the backend itself takes per stream: events × delay.
    pub fn backend_secs(&self) -> f64 {
        f64::from(self.events) * self.delay_ms as f64 / 1000.0
    }

    /// Twice the backend's own time plus 10 s: room for streams that queued for an
    /// HTTP/1.1 connection (a whole backend duration) and for a loaded machine.
    pub fn default_timeout_secs(&self) -> f64 {
        // Whole milliseconds, so the command lines show 35.38, not 35.379999999999995.
        ((2.0 * self.backend_secs() + 10.0) * 1000.0).round() / 1000.0
    }
}

/// Everything a comparison run needs.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// The daemons, in column order.
    pub daemons: Vec<DaemonSpec>,
    pub backends: Vec<BackendKind>,
    /// Concurrency levels: streams per cell.
    pub streams: Vec<u64>,
    /// Cell patterns (`daemon/backend/streams`, `*` per segment); empty selects all.
    pub filters: Vec<String>,
    pub workload: Workload,
    /// Where `mock-llm` and `handoff-load` (and our daemons) are.
    pub bin_dir: PathBuf,
    /// The results folder.
    pub out_dir: PathBuf,
    pub daemon_options: DaemonOptions,
    /// mock-llm `--threads` (`None`: one per CPU).
    pub mock_threads: Option<usize>,
    /// Load generator runtime threads.
    pub load_threads: usize,
    /// SIGTERM to SIGKILL.
    pub stop_timeout: Duration,
    /// Quiet time between cells.
    pub pause: Duration,
    /// Share of one core (mock-llm, generator) or of the machine at which a cell is
    /// flagged as limited by something other than the daemon.
    pub saturation: f64,
    /// Share of a cell's streams that may fail before the cell is marked failed and
    /// its latency and per-event figures are withheld.
    pub failure_limit: f64,
    /// How the run was asked for, for the results.
    pub command_line: Vec<String>,
}

impl CompareConfig {
    /// tokio and smol from `bin_dir`, every backend, 1,000 and 10,000 streams, the
    /// standard workload.
    pub fn standard(bin_dir: &Path, out_dir: PathBuf) -> CompareConfig {
        CompareConfig {
            daemons: BUILTIN_DAEMONS
                .iter()
                .map(|name| DaemonSpec {
                    name: (*name).to_owned(),
                    command: DaemonCommand::Builtin { binary: bin_dir.join(format!("handoff-{name}")) },
                })
                .collect(),
            backends: BackendKind::ALL.to_vec(),
            streams: vec![1_000, 10_000],
            filters: Vec::new(),
            workload: Workload::standard(),
            bin_dir: bin_dir.to_owned(),
            out_dir,
            daemon_options: DaemonOptions { threads: None, http1_backend_connections: 9_000 },
            mock_threads: None,
            load_threads: 1,
            stop_timeout: Duration::from_secs(15),
            pause: Duration::from_secs(1),
            saturation: 0.9,
            failure_limit: DEFAULT_FAILURE_LIMIT,
            command_line: Vec::new(),
        }
    }
}

/// A comparison that could not run at all (a failed cell is a result, not an error).
#[derive(Debug)]
#[non_exhaustive]
pub enum CompareError {
    /// Settings that make no comparison.
    Config(String),
    /// A binary we need is not where we looked.
    MissingBinary { path: PathBuf, hint: &'static str },
    /// Writing the results or setting up folders.
    Io { what: String, error: io::Error },
}

impl std::fmt::Display for CompareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompareError::Config(reason) => write!(f, "invalid comparison settings: {reason}"),
            CompareError::MissingBinary { path, hint } => write!(f, "{} not found; {hint}", path.display()),
            CompareError::Io { what, error } => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for CompareError {}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> CompareError {
    let what = what.into();
    move |error| CompareError::Io { what, error }
}

/// Ctrl-c or SIGTERM, seen by every wait of the run.
#[derive(Debug, Clone)]
pub struct Interrupt {
    receiver: watch::Receiver<bool>,
    /// Held by [`Interrupt::never`], so the receiver never sees the channel closed.
    _sender: Option<std::sync::Arc<watch::Sender<bool>>>,
}

impl Interrupt {
    /// Watches SIGINT and SIGTERM from a task on the current tokio runtime.
    pub fn on_signals() -> io::Result<Interrupt> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            let _ = sender.send(true);
        });
        Ok(Interrupt { receiver, _sender: None })
    }

    /// An interrupt that never comes (tests, embedding).
    pub fn never() -> Interrupt {
        let (sender, receiver) = watch::channel(false);
        Interrupt { receiver, _sender: Some(std::sync::Arc::new(sender)) }
    }

    pub fn is_set(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Completes once the interrupt came.
    pub async fn wait(&mut self) {
        if self.receiver.wait_for(|set| *set).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The binaries a comparison starts, found in one folder.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub mock_llm: PathBuf,
    pub load: PathBuf,
}

const BUILD_HINT: &str =
    "build them with `cargo build --release -p handoff-tokio -p handoff-smol -p handoff-bench` (or pass --bin-dir)";

impl Binaries {
    /// `mock-llm` and `handoff-load` in `dir`, and every builtin daemon's binary.
    pub fn find(dir: &Path, daemons: &[DaemonSpec]) -> Result<Binaries, CompareError> {
        let binaries = Binaries { mock_llm: dir.join("mock-llm"), load: dir.join("handoff-load") };
        let builtins = daemons.iter().filter_map(|spec| match &spec.command {
            DaemonCommand::Builtin { binary } => Some(binary.clone()),
            DaemonCommand::Template { .. } => None,
        });
        for path in [binaries.mock_llm.clone(), binaries.load.clone()].into_iter().chain(builtins) {
            if !path.is_file() {
                return Err(CompareError::MissingBinary { path, hint: BUILD_HINT });
            }
        }
        Ok(binaries)
    }
}

fn validate(config: &CompareConfig) -> Result<(), CompareError> {
    let bad = |reason: String| Err(CompareError::Config(reason));
    if config.daemons.is_empty() || config.backends.is_empty() || config.streams.is_empty() {
        return bad("at least one daemon, one backend and one streams level are needed".to_owned());
    }
    for (i, spec) in config.daemons.iter().enumerate() {
        if let Some(problem) = matrix::daemon_name_problem(&spec.name) {
            return bad(format!("daemon name {:?} {problem}", spec.name));
        }
        if config.daemons[..i].iter().any(|other| other.name == spec.name) {
            return bad(format!("two daemons are named {:?}", spec.name));
        }
        if let DaemonCommand::Template { command } = &spec.command {
            if !command.contains("{socket}") {
                return bad(format!(
                    "daemon command {command:?} has no {{socket}} to put the socket path in"
                ));
            }
        }
    }
    if config.streams.contains(&0) {
        return bad("a streams level of 0".to_owned());
    }
    let w = &config.workload;
    let ramp_ok = w.ramp_secs >= 0.0 && w.ramp_secs.is_finite();
    let timeout_ok = w.timeout_secs > 0.0 && w.timeout_secs.is_finite();
    if w.delay_ms == 0 || !ramp_ok || !timeout_ok {
        return bad("the delay and timeout must be more than zero and the ramp not negative".to_owned());
    }
    if !(config.saturation > 0.0 && config.saturation <= 1.0) {
        return bad(format!("saturation {} is not a share between 0 and 1", config.saturation));
    }
    if !(0.0..1.0).contains(&config.failure_limit) {
        return bad(format!(
            "failure limit {} is not a share from 0 up to (not including) 1",
            config.failure_limit
        ));
    }
    if config.daemon_options.http1_backend_connections == 0 || config.load_threads == 0 {
        return bad("backend connections and load threads must be at least 1".to_owned());
    }
    Ok(())
}

/// Runs every selected cell in order, writing the results folder after each, and
/// returns what was measured. An interrupt stops the cell in progress (its
/// processes are stopped) and ends the run with `interrupted` set.
pub async fn run(config: &CompareConfig, mut interrupt: Interrupt) -> Result<Comparison, CompareError> {
    validate(config)?;
    let binaries = Binaries::find(&config.bin_dir, &config.daemons)?;
    let cells = matrix::cells(&config.daemons, &config.backends, &config.streams, &config.filters);
    if cells.is_empty() {
        return Err(CompareError::Config(format!("no cell matches the filters {:?}", config.filters)));
    }
    let logs = config.out_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io_error(format!("creating {}", logs.display())))?;
    let sockets = std::env::temp_dir().join(format!("handoff-bench-{}", std::process::id()));
    std::fs::create_dir_all(&sockets).map_err(io_error(format!("creating {}", sockets.display())))?;

    let mut comparison = Comparison::new(config);
    let context = cell::CellContext { config, binaries: &binaries, logs: &logs, sockets: &sockets };
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            tokio::select! {
                () = tokio::time::sleep(config.pause) => {}
                () = interrupt.wait() => {}
            }
        }
        if interrupt.is_set() {
            comparison.interrupted = true;
            break;
        }
        let Some(spec) = config.daemons.iter().find(|spec| spec.name == cell.daemon) else {
            continue;
        };
        eprintln!("[{}/{}] {} ...", i + 1, cells.len(), cell.name());
        let (result, interrupted) = cell::run_cell(&context, cell, spec, &mut interrupt).await;
        eprintln!("        {}", report::one_line(&result, &config.workload));
        comparison.cells.push(result);
        comparison.interrupted = interrupted;
        write_outputs(&comparison, &config.out_dir)?;
        if interrupted {
            break;
        }
    }
    comparison.finished = utc_timestamp(std::time::SystemTime::now());
    write_outputs(&comparison, &config.out_dir)?;
    let _ = std::fs::remove_dir_all(&sockets);
    Ok(comparison)
}

/// `results.json`, `results.md` and the charts.
pub fn write_outputs(comparison: &Comparison, out_dir: &Path) -> Result<(), CompareError> {
    let write = |name: &str, contents: &[u8]| {
        let path = out_dir.join(name);
        std::fs::write(&path, contents).map_err(io_error(format!("writing {}", path.display())))
    };
    let json = serde_json::to_vec_pretty(comparison)
        .map_err(|e| CompareError::Io { what: "encoding results.json".to_owned(), error: e.into() })?;
    write("results.json", &json)?;
    write("results.md", markdown(comparison).as_bytes())?;
    write("ttfb.svg", charts::ttfb(comparison).as_bytes())?;
    write("rss_per_stream.svg", charts::rss_per_stream(comparison).as_bytes())?;
    write("cpu_per_event.svg", charts::cpu_per_event(comparison).as_bytes())?;
    Ok(())
}
