//! What both binaries' `main` do, apart from building their runtime: parse and
//! validate the flags, set up logging, raise the fd limit, print the summary.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use handoff_core::config::{Cli, Config};
use handoff_core::limits::{self, Snapshot};
use tracing_subscriber::EnvFilter;

use crate::daemon::DaemonError;

/// Parses the command line (exiting with clap's message and status 2 on bad
/// flags), then runs `serve` with the validated configuration.
pub fn main(binary: &'static str, serve: impl FnOnce(Config) -> Result<Snapshot, DaemonError>) -> ExitCode {
    let matches = Cli::command().name(binary).get_matches();
    let config = match Cli::from_arg_matches(&matches)
        .map_err(|e| e.to_string())
        .and_then(|cli| cli.into_config().map_err(|e| e.to_string()))
    {
        Ok(config) => config,
        Err(error) => {
            eprintln!("{binary}: {error}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.benchmark);
    let fd_limit = crate::sys::raise_fd_limit();
    tracing::info!(binary, fd_limit, threads = config.threads, "starting");
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

/// Logs to stderr; `RUST_LOG` overrides the level (warn under `--benchmark`).
fn init_logging(benchmark: bool) {
    let default = if benchmark { "warn" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// The executor thread count: `--threads`, or one per CPU when 0.
pub fn thread_count(config: &Config) -> usize {
    match config.threads {
        0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        n => n,
    }
}
