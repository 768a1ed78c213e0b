//! What both binaries' `main` do, apart from building their runtime: parse and
//! validate the flags, set up logging, raise the fd limit, print the summary.

use std::process::ExitCode;

use crate::cli::Cli;
use clap::{CommandFactory, FromArgMatches};
use handoff_core::config::{Backend, Config, LogFormat, OpenAiConfig};
use handoff_core::limits::{self, Snapshot};
use tracing_subscriber::EnvFilter;

use std::future::Future;
use std::sync::Arc;

use futures_channel::oneshot;

use crate::daemon::{DaemonError, Listening, WorkerPlan};

/// Parses the command line (exiting with clap's message and status 2 on bad
/// flags), then runs `serve` with the validated configuration.
pub fn main(binary: &'static str, serve: impl FnOnce(Config) -> Result<Snapshot, DaemonError>) -> ExitCode {
    let about = format!(
        "{binary}: takes the client sockets Apache's mod_socket_handoff hands over a Unix socket \
         and streams LLM tokens to them as Server-Sent Events, from an OpenAI-compatible API \
         or the built-in mock"
    );
    let command = Cli::command().name(binary).about(about);
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = command.clone().get_matches_from(&argv);
    let (matches, file) = match crate::config_file::apply(&command, &argv, matches) {
        Ok(merged) => merged,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::from(2);
        }
    };
    let config = match Cli::from_arg_matches(&matches).map_err(|e| e.to_string()).and_then(|cli| {
        let mut settings = cli.into_settings();
        settings.backends = file.as_ref().map(|file| file.backends.clone()).unwrap_or_default();
        crate::records::read_secret(&mut settings.records)?;
        settings.validate().map_err(|e| crate::config_file::describe(file.as_ref(), &e))
    }) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::from(2);
        }
    };
    // From here on, upstream text that quotes our key has it redacted, whatever
    // the key looks like.
    let keys = std::iter::once(&config.backend)
        .chain(config.named_backends.iter().map(|named| &named.backend))
        .filter_map(|backend| match backend {
            Backend::OpenAi(OpenAiConfig { api_key: Some(key), .. }) => Some(key.as_str()),
            _ => None,
        });
    handoff_core::redact::register_secrets(keys);
    init_logging(config.benchmark, config.log_format);
    if let Some(file) = &file {
        tracing::info!(config = %file.path.display(), "read the config file");
    }
    // From here a SIGHUP reloads (read again as above) instead of ending the process.
    let reread_command = command.clone();
    let reread_argv = argv.clone();
    let reread = move || reread_config(&reread_command, &reread_argv);
    if let Err(error) = crate::reload::install(Box::new(reread)) {
        tracing::warn!(%error, "installing the SIGHUP handler failed; a SIGHUP ends the daemon");
    }
    if let Err(error) = crate::early_signal::install() {
        tracing::warn!(%error, "recording early stop signals failed; a SIGTERM before the workers start kills the daemon");
    }
    let fd_limit = crate::sys::raise_fd_limit();
    tracing::info!(binary, fd_limit, workers = thread_count(&config), "starting");
    warn_if_fds_short(&config);
    let benchmark = config.benchmark;
    match serve(config) {
        Ok(snapshot) => {
            if benchmark {
                println!("{}", limits::summary(&snapshot));
            }
            tracing::info!(?snapshot, "stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "daemon failed");
            eprintln!("{binary}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration as a SIGHUP reads it: the same command line, the
/// environment and config file as they are now, validated as at start; the
/// error names file, line and key when the file is at fault.
fn reread_config(command: &clap::Command, argv: &[std::ffi::OsString]) -> Result<Config, String> {
    let matches = command.clone().try_get_matches_from(argv).map_err(|e| e.to_string())?;
    let (matches, file) = crate::config_file::apply(command, argv, matches).map_err(|e| e.to_string())?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    let mut settings = cli.into_settings();
    settings.backends = file.as_ref().map(|file| file.backends.clone()).unwrap_or_default();
    crate::records::read_secret(&mut settings.records)?;
    settings.validate().map_err(|e| crate::config_file::describe(file.as_ref(), &e))
}

/// Warns when the hard fd limit cannot hold what the limits allow at once
/// (core's [`handoff_core::guard::FdGuard::fds_needed`]): past it, handoffs
/// meet a full fd table and get the reserve's 503, or none.
fn warn_if_fds_short(config: &Config) {
    let backend_connections = match config.backend {
        Backend::Mock => 0,
        Backend::OpenAi(_) => config.pool.max_connections as u64,
    };
    let workers = thread_count(config) as u64;
    let needed = config.fd_guard.fds_needed(config.max_streams, backend_connections, workers);
    let hard = crate::sys::hard_fd_limit();
    if config.fd_guard.hard_limit_short(hard, needed) {
        tracing::warn!(
            hard_fd_limit = hard,
            needed,
            max_connections = config.max_streams,
            backend_connections,
            "the hard fd limit is below --max-connections plus --backend-connections plus a margin; \
             raise LimitNOFILE (or ulimit -Hn) or lower --max-connections"
        );
    }
}

/// Logs to stderr; `RUST_LOG` overrides the filter. Text has colour only on a
/// terminal and never with `NO_COLOR` set, so files and pipes get plain text.
/// JSON is one object per line with the event's fields at the top level
/// (`timestamp`, `level`, `target`, `message`, then each field by its name), which
/// journald, Loki and `jq` take as they are.
fn init_logging(benchmark: bool, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(benchmark)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none();
            builder.with_ansi(colour).try_init()
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .try_init(),
    };
}

/// Our crates at info (warn under `--benchmark`), every dependency at warn: h2's
/// and rustls's debug output is per frame and record.
fn default_filter(benchmark: bool) -> String {
    let ours = if benchmark { "warn" } else { "info" };
    ["handoff_core", "handoff_io", "handoff_tokio", "handoff_smol"]
        .iter()
        .fold(String::from("warn"), |filter, krate| format!("{filter},{krate}={ours}"))
}

/// The worker count core chooses for this host (`--threads`, or from the CPUs).
pub fn thread_count(config: &Config) -> usize {
    config.workers(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// How a worker learns it must stop. Worker 0 waits for the OS signal and
/// passes it on to the others, so only one thread installs signal handlers.
pub struct Stop {
    receiver: Option<oneshot::Receiver<()>>,
    followers: Vec<oneshot::Sender<()>>,
}

impl Stop {
    /// True for worker 0: it must hand [`Stop::wait`] the signal future.
    pub fn is_leader(&self) -> bool {
        self.receiver.is_none()
    }

    /// The future a worker runs until: worker 0 installs the signal handlers
    /// with `install` (only it does) and waits for them; the others wait for it.
    pub fn shutdown<F: Future<Output = ()>>(
        self,
        install: impl FnOnce() -> std::io::Result<F>,
    ) -> Result<impl Future<Output = ()>, DaemonError> {
        let signal = if self.is_leader() {
            let signal = install().map_err(|e| DaemonError::Io("installing signal handlers", e))?;
            // Checked after the runtime's handlers exist: a signal from here on
            // reaches them, and one before was recorded by `early_signal`.
            let early = crate::early_signal::requested();
            Some(async move {
                if early {
                    tracing::info!("stop signal received while starting");
                } else {
                    signal.await
                }
            })
        } else {
            None
        };
        Ok(self.wait(signal))
    }

    /// Resolves when this worker must stop: for worker 0 when `signal` fires
    /// (or is `None`), for the others when worker 0 says so or is gone.
    pub async fn wait(self, signal: Option<impl Future<Output = ()>>) {
        match self.receiver {
            Some(receiver) => {
                let _ = receiver.await;
            }
            None => {
                if let Some(signal) = signal {
                    signal.await;
                }
                for follower in self.followers {
                    let _ = follower.send(());
                }
            }
        }
    }
}

/// Binds the socket and runs `threads` shared-nothing workers: worker 0 on the
/// calling thread, the others on threads named `{binary}-{index}`. Each runs
/// `worker` with its own plan (its own runtime, streams, timers and backend
/// pool); the counters come back once every worker has drained.
pub fn serve_workers<F>(
    binary: &str,
    config: Config,
    threads: usize,
    worker: F,
) -> Result<Snapshot, DaemonError>
where
    F: Fn(WorkerPlan, Stop) -> Result<(), DaemonError> + Send + Sync + 'static,
{
    let threads = threads.max(1);
    let initial = config.clone();
    let listening = Listening::bind(config)?;
    crate::reload::start(listening.global(), initial);
    let worker = Arc::new(worker);
    let mut followers = Vec::new();
    let mut handles = Vec::new();
    let mut first_error = None;
    // The metrics endpoint: a thread and runtime of its own (the worker function
    // runs its plan), told to stop only once every worker has drained.
    let mut metrics = None;
    match crate::metrics::plan(binary, &listening, threads) {
        Ok(None) => {}
        Ok(Some(plan)) => {
            let (sender, receiver) = oneshot::channel::<()>();
            let stop = Stop { receiver: Some(receiver), followers: Vec::new() };
            let worker = Arc::clone(&worker);
            match std::thread::Builder::new()
                .name(format!("{binary}-metrics"))
                .spawn(move || worker(plan, stop))
            {
                Ok(handle) => metrics = Some((sender, handle)),
                Err(error) => first_error = Some(DaemonError::Io("starting the metrics thread", error)),
            }
        }
        Err(error) => first_error = Some(error),
    }
    for index in (1..threads).take_while(|_| first_error.is_none()) {
        let plan = match listening.worker(index, threads) {
            Ok(plan) => plan,
            Err(error) => {
                first_error = Some(error);
                break;
            }
        };
        let (sender, receiver) = oneshot::channel();
        followers.push(sender);
        let stop = Stop { receiver: Some(receiver), followers: Vec::new() };
        let worker = Arc::clone(&worker);
        let spawned =
            std::thread::Builder::new().name(format!("{binary}-{index}")).spawn(move || worker(plan, stop));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                first_error = Some(DaemonError::Io("starting a worker thread", error));
                break;
            }
        }
    }
    let leader = if first_error.is_none() {
        listening.worker(0, threads).and_then(|plan| worker(plan, Stop { receiver: None, followers }))
    } else {
        // Dropping the senders stops the workers already started.
        drop(followers);
        Ok(())
    };
    for handle in handles {
        match handle.join() {
            Ok(Err(error)) if first_error.is_none() => first_error = Some(error),
            Ok(_) => {}
            Err(_) => tracing::error!("a worker thread panicked"),
        }
    }
    if let Some((sender, handle)) = metrics {
        drop(sender);
        match handle.join() {
            Ok(Err(error)) => tracing::warn!(%error, "the metrics endpoint failed"),
            Ok(Ok(())) => {}
            Err(_) => tracing::error!("the metrics thread panicked"),
        }
    }
    let result = match (leader, first_error) {
        (Err(error), _) | (Ok(()), Some(error)) => Err(error),
        (Ok(()), None) => Ok(()),
    };
    listening.finish(result)
}

#[cfg(test)]
mod early_stop_tests {
    use super::*;
    use std::task::{Context, Poll, Waker};

    #[test]
    fn a_stop_signal_before_the_runtime_handlers_stops_the_leader_at_once() {
        let leader = Stop { receiver: None, followers: Vec::new() };
        crate::early_signal::mark_requested();
        // The runtime's own signal future never fires here: only the early
        // record can end the wait.
        let shutdown = leader.shutdown(|| Ok(std::future::pending::<()>()));
        crate::early_signal::clear_request();
        let mut shutdown = std::pin::pin!(shutdown.expect("the install closure succeeds"));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(shutdown.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
