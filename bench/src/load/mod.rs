//! handoff-load: drives a handoff daemon exactly as mod_socket_handoff does, and measures it.
//!
//! Each stream makes a client connection (loopback TCP or an AF_UNIX socketpair), connects
//! to the daemon's Unix socket, sends one message (the handoff data with the connection's
//! server side attached by SCM_RIGHTS), closes both of its own descriptors, then reads the
//! response from the client side to EOF and judges it as a browser would. Arrivals are
//! spread evenly over the ramp; every wait is bounded, and the run as a whole ends by
//! ramp + timeout + [`RUN_MARGIN`].
//!
//! ```no_run
//! use handoff_bench::load::{run, LoadConfig};
//! let report = run(LoadConfig::new("/run/streaming-daemon.sock", 1000))?;
//! println!("{report}");
//! # Ok::<(), handoff_bench::load::LoadError>(())
//! ```

pub(crate) mod client;
mod config;
pub mod handoff;
pub(crate) mod procfs;
mod progress;
mod report;
pub mod response;
mod stream;
mod tally;

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

pub use config::{ClientKind, HandoffSocketType, LoadConfig, DEFAULT_DATA};
pub use report::{
    DaemonUsage, FailureClass, FailureCounts, GeneratorUsage, LatencySummary, LoadReport, RunSettings,
};

use client::ClientPairs;
use handoff::ConnectPolicy;
use procfs::{Process, Sampler, UsageTrace};
use progress::ProgressLine;
use stream::{LiveCounters, StreamContext};
use tally::Tally;

/// handoff-load's exit status when the run finished but some streams failed: the
/// report is complete, so callers that read it (compare) take it as a result.
pub const STREAMS_FAILED_EXIT: u8 = 3;

/// Slack after ramp + timeout before streams still running are cut off as timeouts.
pub const RUN_MARGIN: Duration = Duration::from_secs(5);

/// A run that could not be carried out (failed streams are results, not errors).
#[derive(Debug)]
#[non_exhaustive]
pub enum LoadError {
    /// A setting that makes no run (zero streams, zero timeout).
    Config(String),
    /// The tokio runtime could not be built.
    Runtime(io::Error),
    /// The client listeners could not be bound.
    Client(String),
    /// The daemon's /proc entry could not be read at the start.
    DaemonProcess { pid: u32, error: io::Error },
    /// This process's /proc entry could not be read.
    OwnProcess(io::Error),
    /// A stream task panicked: a bug in the load generator.
    StreamPanicked(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(reason) => write!(f, "invalid load settings: {reason}"),
            Self::Runtime(error) => write!(f, "building the tokio runtime: {error}"),
            Self::Client(reason) => write!(f, "setting up client connections: {reason}"),
            Self::DaemonProcess { pid, error } => write!(f, "reading /proc/{pid} (the daemon): {error}"),
            Self::OwnProcess(error) => write!(f, "reading /proc/self: {error}"),
            Self::StreamPanicked(reason) => write!(f, "a stream task panicked: {reason}"),
        }
    }
}

impl std::error::Error for LoadError {}

/// Runs the load on a runtime of its own (`config.threads` workers).
pub fn run(config: LoadConfig) -> Result<LoadReport, LoadError> {
    let runtime = if config.threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(config.threads).enable_all().build()
    }
    .map_err(LoadError::Runtime)?;
    runtime.block_on(run_async(config))
}

/// Runs the load on the caller's tokio runtime (it needs the time and I/O drivers).
/// `config.threads` is only recorded.
pub async fn run_async(config: LoadConfig) -> Result<LoadReport, LoadError> {
    validate(&config)?;
    let fd_limit = raise_fd_limit();
    let clients = ClientPairs::bind(config.client, config.listeners)
        .await
        .map_err(|e| LoadError::Client(e.to_string()))?;
    let listeners = clients.addresses().len() as u32;
    let generator_before = Process::Current.sample(false).map_err(LoadError::OwnProcess)?;
    let sampler = match config.daemon_pid {
        Some(pid) => Some(
            Sampler::start(Process::Pid(pid), config.sample_interval)
                .map_err(|error| LoadError::DaemonProcess { pid, error })?,
        ),
        None => None,
    };

    let context = Arc::new(StreamContext {
        socket: config.socket.clone(),
        data: config.data.clone(),
        policy: ConnectPolicy {
            socket_type: config.socket_type,
            attempt_timeout: config.connect_timeout,
            attempts: config.connect_attempts,
        },
        send_timeout: config.send_timeout,
        timeout: config.timeout,
        clients,
        live: LiveCounters::default(),
    });
    let mut tally = Tally::new().map_err(|e| LoadError::Config(format!("latency histogram: {e}")))?;
    let start = Instant::now();
    let outcome = drive(&config, &context, &mut tally, start).await;
    let elapsed = start.elapsed();
    if config.progress {
        ProgressLine::finish(&context.live, elapsed);
    }
    let daemon_trace = sampler.and_then(Sampler::finish);
    outcome?;

    let generator_after = Process::Current.sample(false).map_err(LoadError::OwnProcess)?;
    let (user, system) = procfs::cpu_seconds(&generator_before, &generator_after);
    let peak_open_streams = context.live.peak_open.load(Ordering::Relaxed);
    let latencies = tally.latencies();
    Ok(LoadReport {
        settings: RunSettings {
            socket: config.socket.display().to_string(),
            socket_type: config.socket_type,
            client: config.client,
            listeners,
            streams: config.streams,
            ramp_secs: config.ramp.as_secs_f64(),
            timeout_secs: config.timeout.as_secs_f64(),
            data_bytes: config.data.len() as u64,
            threads: config.threads as u64,
        },
        elapsed_secs: elapsed.as_secs_f64(),
        started: context.live.started.load(Ordering::Relaxed),
        ok: tally.ok,
        failed: tally.failed(),
        failures: tally.failures,
        status_codes: tally.status_codes.clone(),
        events: tally.events,
        bytes: tally.bytes,
        peak_open_streams,
        handoff_latency: latencies.handoff,
        first_byte: latencies.first_byte,
        first_event: latencies.first_event,
        stream_duration: latencies.duration,
        daemon: match (config.daemon_pid, daemon_trace) {
            (Some(pid), Some(trace)) => Some(daemon_usage(pid, &trace, peak_open_streams, tally.events)),
            _ => None,
        },
        generator: GeneratorUsage {
            cpu_seconds: user + system,
            peak_rss_bytes: generator_after.hwm_bytes,
            fd_limit,
        },
        first_errors: tally.first_errors,
    })
}

fn validate(config: &LoadConfig) -> Result<(), LoadError> {
    if config.streams == 0 {
        return Err(LoadError::Config("--streams must be at least 1".to_owned()));
    }
    if config.timeout.is_zero() {
        return Err(LoadError::Config("--timeout must be more than zero".to_owned()));
    }
    if config.sample_interval.is_zero() {
        return Err(LoadError::Config("the sample interval must be more than zero".to_owned()));
    }
    Ok(())
}

/// Starts streams on schedule and collects them as they end, until all have ended or the
/// run's deadline passes (then the rest are cut off and count as timeouts).
async fn drive(
    config: &LoadConfig,
    context: &Arc<StreamContext>,
    tally: &mut Tally,
    start: Instant,
) -> Result<(), LoadError> {
    let run_deadline = start + config.ramp + config.timeout + RUN_MARGIN;
    let mut progress = config.progress.then(|| ProgressLine::new(start));
    let mut tasks = JoinSet::new();
    let mut next: u64 = 0;
    loop {
        let next_arrival = (next < config.streams).then(|| start + arrival_offset(config, next));
        if next_arrival.is_none() && tasks.is_empty() {
            return Ok(());
        }
        let progress_due = progress.as_ref().map(ProgressLine::next_due);
        tokio::select! {
            () = sleep_until(next_arrival.unwrap_or(run_deadline)), if next_arrival.is_some() => {
                let now = Instant::now();
                while next < config.streams && start + arrival_offset(config, next) <= now {
                    let task_context = Arc::clone(context);
                    tasks.spawn(async move { stream::run(&task_context).await });
                    context.live.started.fetch_add(1, Ordering::Relaxed);
                    next += 1;
                }
            }
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                let record = joined.map_err(|e| LoadError::StreamPanicked(e.to_string()))?;
                let counter = if record.failure.is_some() { &context.live.failed } else { &context.live.done };
                counter.fetch_add(1, Ordering::Relaxed);
                tally.record(record);
            }
            () = sleep_until(progress_due.unwrap_or(run_deadline)), if progress_due.is_some() => {
                if let Some(line) = progress.as_mut() {
                    line.print(&context.live);
                }
            }
            () = sleep_until(run_deadline) => {
                let cut_off = tasks.len() as u64;
                tasks.shutdown().await;
                for _ in 0..cut_off {
                    tally.record_failure(
                        FailureClass::Timeout,
                        None,
                        format!("still running at the run deadline ({:?} after start)", run_deadline - start),
                    );
                }
                context.live.failed.fetch_add(cut_off, Ordering::Relaxed);
                return Ok(());
            }
        }
    }
}

/// When stream `i` of the run starts, relative to the first.
fn arrival_offset(config: &LoadConfig, i: u64) -> Duration {
    let nanos = config.ramp.as_nanos().saturating_mul(u128::from(i)) / u128::from(config.streams.max(1));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

fn daemon_usage(pid: u32, trace: &UsageTrace, peak_open_streams: u64, events: u64) -> DaemonUsage {
    let (user, system) = procfs::cpu_seconds(&trace.before, &trace.last);
    let cpu_seconds = user + system;
    let growth = trace.peak_rss_bytes.saturating_sub(trace.before.rss_bytes);
    DaemonUsage {
        pid,
        rss_before_bytes: trace.before.rss_bytes,
        rss_peak_bytes: trace.peak_rss_bytes,
        rss_after_bytes: trace.last.rss_bytes,
        hwm_bytes: trace.last.hwm_bytes,
        rss_per_peak_stream_bytes: (peak_open_streams > 0).then(|| growth as f64 / peak_open_streams as f64),
        cpu_seconds,
        user_cpu_seconds: user,
        system_cpu_seconds: system,
        cpu_us_per_event: (events > 0).then(|| cpu_seconds * 1e6 / events as f64),
        threads_before: trace.before.threads,
        peak_threads: trace.peak_threads,
        fds_before: trace.before.fds,
        peak_fds: trace.peak_fds,
        samples: trace.samples,
        missed_samples: trace.missed_samples,
        vanished: trace.vanished,
    }
}

/// Raises the soft fd limit to the hard limit (each open stream holds a client fd, a
/// TCP handoff briefly three); returns the soft limit in force afterwards.
pub(crate) fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return limit.maximum.unwrap_or(u64::MAX);
        }
    }
    limit.current.unwrap_or(u64::MAX)
}
