//! One cell: start mock-llm (OpenAI backends) and the daemon, run the load
//! generator against them while sampling, stop everything, collect the figures.
//!
//! Every wait is bounded and gives way to an interrupt; whatever path the cell
//! takes, every process it started is stopped before it returns.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

use super::launch::{self, Endpoint, Launch};
use super::matrix::{BackendKind, Cell, DaemonSpec};
use super::process::{Child, Stopped};
use super::procstat::{self, ConnectionSampler, HostCpu, OpenConnections};
use super::results::{CellResult, MockLlmUsage, Verdict};
use super::summaries::{parse_daemon_summary, parse_mock_llm_summary};
use super::{flags, Binaries, CompareConfig, Interrupt};
use crate::load::{LoadReport, RUN_MARGIN};

/// How long a daemon or mock-llm may take to come up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often we look for the daemon's socket while it starts.
const STARTUP_POLL: Duration = Duration::from_millis(20);
/// After the socket appears: let the daemon finish starting, so "RSS before" is an
/// idle daemon's.
const SETTLE: Duration = Duration::from_millis(300);
/// The generator ends itself by ramp + timeout + RUN_MARGIN; past this much more
/// it is stuck.
const GENERATOR_SLACK: Duration = Duration::from_secs(30);
/// How often mock-llm's open connections are counted (a listing of its fds, well
/// under a millisecond for ten thousand): a connection shorter than this may be
/// missed by the peak, never by the accepted count, which is mock-llm's own.
const CONNECTION_SAMPLE_INTERVAL: Duration = Duration::from_millis(200);
/// A daemon that opened more than this many times the backend connections it ever
/// held at once closed and reopened them during the run: worth a note.
const CHURN_FACTOR: u64 = 2;
/// Lines of a process's log quoted in an error.
const LOG_TAIL_LINES: usize = 6;

/// What every cell of a run shares.
pub struct CellContext<'a> {
    pub config: &'a CompareConfig,
    pub binaries: &'a Binaries,
    /// Per-cell logs, generator JSON and CA files.
    pub logs: &'a Path,
    /// Where the daemons' Unix sockets go.
    pub sockets: &'a Path,
}

/// Why a cell stopped early.
enum CellError {
    Interrupted,
    Failed(String),
}

impl From<String> for CellError {
    fn from(message: String) -> Self {
        CellError::Failed(message)
    }
}

/// The processes of a cell still running.
#[derive(Default)]
struct Running {
    generator: Option<Child>,
    daemon: Option<Child>,
    mock_llm: Option<Child>,
    /// mock-llm's stdout, kept open so it never writes into a closed pipe.
    mock_llm_stdout: Option<Lines<BufReader<ChildStdout>>>,
}

impl Running {
    /// Stops what is left: the generator first (nothing new arrives), then the
    /// daemon, then its backend.
    async fn stop_all(&mut self, bound: Duration) {
        for child in [self.generator.take(), self.daemon.take(), self.mock_llm.take()].into_iter().flatten() {
            let role = child.role().to_owned();
            let pid = child.pid();
            let stopped = child.stop(bound).await;
            if !matches!(stopped, Stopped::Exited(_) | Stopped::Terminated(_)) {
                eprintln!("        {role} (pid {pid}) {stopped}");
            }
        }
        self.mock_llm_stdout = None;
    }
}

/// The files one cell writes under the logs folder.
struct CellFiles {
    stem: PathBuf,
}

impl CellFiles {
    fn path(&self, suffix: &str) -> PathBuf {
        let mut name = self.stem.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    }
}

/// Runs `cell`; returns its result and whether an interrupt cut it short.
pub async fn run_cell(
    context: &CellContext<'_>,
    cell: &Cell,
    spec: &DaemonSpec,
    interrupt: &mut Interrupt,
) -> (CellResult, bool) {
    let mut result = CellResult::new(cell.clone());
    let mut running = Running::default();
    let outcome = drive(context, cell, spec, interrupt, &mut running, &mut result).await;
    running.stop_all(context.config.stop_timeout).await;
    match outcome {
        Ok(()) => (result, false),
        Err(CellError::Interrupted) => {
            result.error = Some("interrupted".to_owned());
            (result, true)
        }
        Err(CellError::Failed(message)) => {
            result.error = Some(message);
            (result, false)
        }
    }
}

async fn drive(
    context: &CellContext<'_>,
    cell: &Cell,
    spec: &DaemonSpec,
    interrupt: &mut Interrupt,
    running: &mut Running,
    result: &mut CellResult,
) -> Result<(), CellError> {
    let config = context.config;
    let files = CellFiles { stem: context.logs.join(cell.file_stem()) };

    let endpoint = if cell.backend.is_mock_llm() {
        Some(start_mock_llm(context, cell.backend, &files, interrupt, running, result).await?)
    } else {
        None
    };

    // The baseline is mock-llm listening with nothing connected, so a daemon that
    // connects while it starts is counted too.
    let mock_pid = running.mock_llm.as_ref().map(Child::pid);
    let sampler = mock_pid
        .and_then(|pid| OpenConnections::new(pid).ok())
        .and_then(|connections| ConnectionSampler::start(connections, CONNECTION_SAMPLE_INTERVAL).ok());

    let socket = context.sockets.join(format!("{}.sock", cell.file_stem()));
    let _ = std::fs::remove_file(&socket);
    let daemon_launch = launch::daemon(
        spec,
        &socket,
        &config.workload,
        cell.backend,
        endpoint.as_ref(),
        config.daemon_options,
    );
    result.commands.insert("daemon".to_owned(), daemon_launch.display());
    let daemon_out = files.path(".daemon.out");
    let daemon_log = files.path(".daemon.log");
    let daemon = spawn_logged(&format!("daemon {}", spec.name), &daemon_launch, &daemon_out, &daemon_log)?;
    let daemon_pid = daemon.pid();
    running.daemon = Some(daemon);
    wait_for_socket(&socket, running, &daemon_log, interrupt).await?;
    sleep_or_interrupt(SETTLE, interrupt).await?;

    // The load, with mock-llm and the machine sampled around it.
    let mock_cpu_before = mock_pid.and_then(|pid| procstat::process_cpu_seconds(pid).ok());
    let host_before = HostCpu::read().ok();
    let load_started = Instant::now();
    let load_report =
        run_generator(context, cell, &socket, daemon_pid, &files, interrupt, running, result).await;
    let load_wall = load_started.elapsed();
    let mock_cpu_after = mock_pid.and_then(|pid| procstat::process_cpu_seconds(pid).ok());
    let host_after = HostCpu::read().ok();
    let peak_connections = sampler.and_then(ConnectionSampler::finish);
    let load_report = load_report?;
    result.load_wall_secs = load_wall.as_secs_f64();
    result.host_cpu_busy = host_before.zip(host_after).and_then(|(before, after)| after.busy_since(&before));

    // Stop the daemon and read its summary.
    if let Some(daemon) = running.daemon.take() {
        let stopped = daemon.stop(config.stop_timeout).await;
        if matches!(stopped, Stopped::Exited(_)) {
            result.notes.push(format!("the daemon exited during the run: {stopped}"));
        }
        result.daemon_stop = Some(stopped.to_string());
        result.daemon_summary = daemon_summary(&daemon_out, &daemon_log);
    }
    if let (Some(mock), Some(pid)) = (running.mock_llm.take(), mock_pid) {
        let stop = mock.stop(config.stop_timeout).await.to_string();
        running.mock_llm_stdout = None;
        let cpu_seconds = match (mock_cpu_before, mock_cpu_after) {
            (Some(before), Some(after)) => (after - before).max(0.0),
            _ => 0.0,
        };
        let stderr = std::fs::read_to_string(files.path(".mock-llm.log")).unwrap_or_default();
        result.mock_llm = Some(MockLlmUsage {
            pid,
            cpu_seconds,
            core_share: cpu_seconds / load_wall.as_secs_f64().max(1e-9),
            peak_connections,
            summary: parse_mock_llm_summary(&stderr),
            stop,
        });
    }

    result.verdict = Some(Verdict::judge(&load_report, config.failure_limit));
    result.flags =
        flags::detect(&load_report, result.mock_llm.as_ref(), result.host_cpu_busy, config.saturation);
    add_notes(config, cell, &load_report, result);
    result.load = Some(load_report);
    Ok(())
}

async fn start_mock_llm(
    context: &CellContext<'_>,
    backend: BackendKind,
    files: &CellFiles,
    interrupt: &mut Interrupt,
    running: &mut Running,
    result: &mut CellResult,
) -> Result<Endpoint, CellError> {
    let config = context.config;
    let ca_file = files.path(".ca.pem");
    let _ = std::fs::remove_file(&ca_file);
    let launch = launch::mock_llm(
        &context.binaries.mock_llm,
        &config.workload,
        backend,
        &ca_file,
        config.mock_threads,
    );
    result.commands.insert("mock-llm".to_owned(), launch.display());
    let log = files.path(".mock-llm.log");
    let mut command = launch.command();
    command.stdout(Stdio::piped()).stderr(log_file(&log)?);
    let mut mock = Child::spawn("mock-llm", command).map_err(|e| e.to_string())?;
    let stdout = mock.take_stdout();
    running.mock_llm = Some(mock);
    let mut lines = BufReader::new(
        stdout.ok_or_else(|| CellError::Failed("mock-llm's stdout was not piped".to_owned()))?,
    )
    .lines();
    let first = tokio::select! {
        line = tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line()) => line,
        () = interrupt.wait() => return Err(CellError::Interrupted),
    };
    running.mock_llm_stdout = Some(lines);
    let line = match first {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) | Ok(Err(_)) => {
            return Err(format!("mock-llm exited before it listened{}", log_tail(&log)).into());
        }
        Err(_) => {
            return Err(format!("mock-llm did not listen within {STARTUP_TIMEOUT:?}{}", log_tail(&log)).into())
        }
    };
    let ca = backend.is_tls().then_some(ca_file);
    Endpoint::from_listening_line(&line, ca).ok_or_else(|| {
        CellError::Failed(format!("mock-llm's first line {line:?} names no URL{}", log_tail(&log)))
    })
}

#[allow(clippy::too_many_arguments)] // One call site; a struct would only rename them.
async fn run_generator(
    context: &CellContext<'_>,
    cell: &Cell,
    socket: &Path,
    daemon_pid: u32,
    files: &CellFiles,
    interrupt: &mut Interrupt,
    running: &mut Running,
    result: &mut CellResult,
) -> Result<LoadReport, CellError> {
    let config = context.config;
    let json = files.path(".load.json");
    let _ = std::fs::remove_file(&json);
    let launch = launch::load_generator(
        &context.binaries.load,
        socket,
        cell.streams,
        &config.workload,
        daemon_pid,
        &json,
        config.load_threads,
    );
    result.commands.insert("load".to_owned(), launch.display());
    let log = files.path(".load.log");
    let generator = spawn_logged("load generator", &launch, &files.path(".load.txt"), &log)?;
    running.generator = Some(generator);
    let bound = Duration::try_from_secs_f64(config.workload.ramp_secs + config.workload.timeout_secs)
        .unwrap_or(Duration::MAX)
        .saturating_add(RUN_MARGIN + GENERATOR_SLACK);
    let Some(generator) = running.generator.as_mut() else {
        return Err("the load generator is gone".to_owned().into());
    };
    let waited = tokio::select! {
        waited = generator.wait_for(bound) => waited,
        () = interrupt.wait() => return Err(CellError::Interrupted),
    };
    running.generator = None;
    match waited {
        None => return Err(format!("the load generator was still running after {bound:?}").into()),
        Some(Err(error)) => return Err(format!("waiting for the load generator: {error}").into()),
        // Failed streams are a result the report holds, not a broken run.
        Some(Ok(status))
            if !status.success() && status.code() != Some(i32::from(crate::load::STREAMS_FAILED_EXIT)) =>
        {
            return Err(format!("the load generator failed ({status}){}", log_tail(&log)).into());
        }
        Some(Ok(_)) => {}
    }
    let bytes = std::fs::read(&json).map_err(|e| format!("reading {}: {e}", json.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| CellError::Failed(format!("parsing {}: {e}", json.display())))
}

/// The daemon's summary from its stdout, where the contract puts it; a daemon that
/// printed none there (Go's `log` writes to stderr) has its stderr read instead.
fn daemon_summary(stdout: &Path, stderr: &Path) -> std::collections::BTreeMap<String, u64> {
    let read = |path: &Path| parse_daemon_summary(&std::fs::read_to_string(path).unwrap_or_default());
    let summary = read(stdout);
    if summary.is_empty() {
        read(stderr)
    } else {
        summary
    }
}

/// What a reader of the table should know about this cell beyond its figures.
fn add_notes(config: &CompareConfig, cell: &Cell, load: &LoadReport, result: &mut CellResult) {
    if let Some(verdict) = result.verdict.filter(|verdict| verdict.failed) {
        result.notes.push(format!(
            "**failed**: {} of {} streams did not complete ({:.1}%, more than the {}% allowed), so its TTFB, \
             stream, RSS-per-stream and per-event figures (taken over the {} that did) are not shown; \
             results.json keeps them",
            verdict.incomplete,
            verdict.streams,
            verdict.incomplete_share * 100.0,
            verdict.limit * 100.0,
            load.ok
        ));
    }
    if let Some(peak) = result.daemon_peak_streams().filter(|peak| *peak > load.started) {
        result.notes.push(format!(
            "the daemon's summary says {peak} streams at its peak, more than the {} handed off: its count is \
             of something else",
            load.started
        ));
    }
    if let Some(mock) = &result.mock_llm {
        match (result.backend_connections_accepted(), mock.peak_connections) {
            (None, _) => result.notes.push(format!(
                "mock-llm printed no summary ({}), so the backend connections it accepted are unknown",
                mock.stop
            )),
            (Some(accepted), Some(peak)) if accepted > peak.saturating_mul(CHURN_FACTOR) => {
                result.notes.push(format!(
                    "the daemon opened {accepted} backend connections but held at most {peak} at once: it closed \
                     and reopened them during the run"
                ))
            }
            _ => {}
        }
    }
    let cap = config.daemon_options.http1_backend_connections as u64;
    let builtin = matches!(
        config.daemons.iter().find(|spec| spec.name == cell.daemon).map(|spec| &spec.command),
        Some(super::DaemonCommand::Builtin { .. })
    );
    if cell.backend == BackendKind::Http1 && builtin && load.peak_open_streams > cap {
        result.notes.push(format!(
            "HTTP/1.1 needs one backend connection per stream; capped at {cap} (--backend-connections, \
             for the fd budget), so up to {} streams queued for a connection",
            load.peak_open_streams - cap
        ));
    }
    if let Some(daemon) = &load.daemon {
        if daemon.vanished {
            result.notes.push("the daemon vanished during the run".to_owned());
        }
        if daemon.missed_samples > 0 {
            result
                .notes
                .push(format!("{} daemon samples missed (generator fd limit)", daemon.missed_samples));
        }
    }
    if let Some(error) = load.first_errors.first() {
        result.notes.push(format!("first error: {error}"));
    }
}

fn spawn_logged(role: &str, launch: &Launch, stdout: &Path, stderr: &Path) -> Result<Child, CellError> {
    let mut command = launch.command();
    command.stdout(log_file(stdout)?).stderr(log_file(stderr)?);
    Child::spawn(role, command).map_err(|e| CellError::Failed(e.to_string()))
}

fn log_file(path: &Path) -> Result<File, CellError> {
    File::create(path).map_err(|e| CellError::Failed(format!("creating {}: {e}", path.display())))
}

/// Waits until the daemon's socket exists; fails if the daemon exits first.
async fn wait_for_socket(
    socket: &Path,
    running: &mut Running,
    log: &Path,
    interrupt: &mut Interrupt,
) -> Result<(), CellError> {
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if socket.exists() {
            return Ok(());
        }
        if let Some(status) = running.daemon.as_mut().and_then(Child::exited) {
            return Err(format!("the daemon exited at start ({status}){}", log_tail(log)).into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the daemon made no socket at {} within {STARTUP_TIMEOUT:?}{}",
                socket.display(),
                log_tail(log)
            )
            .into());
        }
        sleep_or_interrupt(STARTUP_POLL, interrupt).await?;
    }
}

async fn sleep_or_interrupt(duration: Duration, interrupt: &mut Interrupt) -> Result<(), CellError> {
    tokio::select! {
        () = tokio::time::sleep(duration) => Ok(()),
        () = interrupt.wait() => Err(CellError::Interrupted),
    }
}

/// `; its log ends: …` with the last lines of a log file, or nothing if it is empty.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    let tail = lines.get(lines.len().saturating_sub(LOG_TAIL_LINES)..).unwrap_or_default();
    if tail.is_empty() {
        String::new()
    } else {
        format!("; {} ends: {}", path.display(), tail.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::matrix::BackendKind;

    fn notes_of(daemon: &str, backend: BackendKind) -> Vec<String> {
        let comparison = super::super::testdata::comparison();
        let mut result = comparison.cell(daemon, backend, 100).expect("ran").clone();
        let load = result.load.clone().expect("a load report");
        result.notes.clear();
        let config = CompareConfig::standard(Path::new("/bin"), PathBuf::from("/tmp/out"));
        add_notes(&config, &result.cell.clone(), &load, &mut result);
        result.notes
    }

    #[test]
    fn a_failed_cell_says_why_its_figures_are_missing() {
        let notes = notes_of("peer", BackendKind::Mock);
        assert!(
            notes[0].starts_with(
                "**failed**: 98 of 100 streams did not complete (98.0%, more than the 1% allowed), so its TTFB"
            ),
            "{notes:?}"
        );
        assert!(notes[0].contains("(taken over the 2 that did)"), "{notes:?}");
        assert!(!notes_of("tokio", BackendKind::Mock).iter().any(|n| n.contains("failed")), "1% is allowed");
    }

    #[test]
    fn connections_opened_far_beyond_those_held_at_once_are_noted() {
        let notes = notes_of("peer", BackendKind::Http1);
        assert!(
            notes.iter().any(|n| n
                == "the daemon opened 355 backend connections but held at most 100 at once: \
                                       it closed and reopened them during the run"),
            "{notes:?}"
        );
        let tokio = notes_of("tokio", BackendKind::Http1);
        assert!(!tokio.iter().any(|n| n.contains("reopened")), "100 accepted, 88 at once: {tokio:?}");
    }

    #[test]
    fn a_missing_mock_llm_summary_or_an_impossible_daemon_peak_is_noted() {
        let comparison = super::super::testdata::comparison();
        let mut result = comparison.cell("tokio", BackendKind::Http1, 100).expect("ran").clone();
        let load = result.load.clone().expect("a load report");
        if let Some(mock) = result.mock_llm.as_mut() {
            mock.summary.clear();
            mock.stop = "killed: still running after SIGTERM".to_owned();
        }
        result.daemon_summary.insert("Peak concurrent streams".to_owned(), 5000);
        let config = CompareConfig::standard(Path::new("/bin"), PathBuf::from("/tmp/out"));
        add_notes(&config, &result.cell.clone(), &load, &mut result);
        assert!(result.notes.iter().any(|n| n
            == "mock-llm printed no summary (killed: still running after SIGTERM), so the backend connections it \
                accepted are unknown"));
        assert!(
            result.notes.iter().any(|n| n.starts_with("the daemon's summary says 5000 streams at its peak")),
            "{:?}",
            result.notes
        );
    }

    #[test]
    fn the_daemon_summary_comes_from_stdout_or_else_stderr() {
        let dir = std::env::temp_dir().join(format!("handoff-bench-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (out, log) = (dir.join("d.out"), dir.join("d.log"));
        std::fs::write(&out, "").expect("write");
        std::fs::write(&log, "2025/01/07 10:31:02 Peak concurrent streams: 355\n").expect("write");
        assert_eq!(super::super::summaries::daemon_peak_streams(&daemon_summary(&out, &log)), Some(355));
        std::fs::write(&out, "peak concurrent streams: 90\n").expect("write");
        assert_eq!(daemon_summary(&out, &log).get("peak concurrent streams"), Some(&90));
        assert_eq!(daemon_summary(&out, &log).len(), 1, "stderr is not read when stdout has a summary");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
