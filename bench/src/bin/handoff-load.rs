//! handoff-load: hands client connections to a handoff daemon the way mod_socket_handoff
//! does, many at once, and reports latencies, failures and what the daemon cost.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use handoff_bench::load::{self, ClientKind, HandoffSocketType, LoadConfig, DEFAULT_DATA};

#[derive(Debug, Parser)]
#[command(
    name = "handoff-load",
    version,
    about,
    after_help = "Exit status: 0 when every stream completed, 3 when the run finished but some \
                  streams failed (the report says which and why), 1 when the run itself could \
                  not be made, 2 for bad flags."
)]
struct Args {
    /// The daemon's Unix socket.
    #[arg(short, long, default_value = "/run/streaming-daemon.sock")]
    socket: PathBuf,
    /// Handoffs in all.
    #[arg(short = 'n', long, default_value_t = 100)]
    streams: u64,
    /// Spread arrivals evenly over this many seconds.
    #[arg(long, default_value_t = 0.0, value_parser = seconds)]
    ramp: f64,
    /// Per-stream limit in seconds, from start to the end of the response.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    timeout: f64,
    /// Handoff data sent with each fd (empty: a single NUL byte, as the module sends).
    #[arg(long, default_value = DEFAULT_DATA)]
    data: String,
    /// Client connections: loopback TCP or AF_UNIX socketpairs.
    #[arg(long, value_enum, default_value_t = ClientKind::Tcp)]
    client: ClientKind,
    /// TCP: listening sockets (127.0.0.1, 127.0.0.2, …) to spread client connections over,
    /// so many connections do not exhaust ephemeral ports.
    #[arg(long, default_value_t = 8)]
    listeners: u32,
    /// Sample this process (the daemon) from /proc: RSS, CPU, threads, fds.
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Unix socket type to the daemon.
    #[arg(long, value_enum, default_value_t = HandoffSocketType::SeqPacket)]
    socket_type: HandoffSocketType,
    /// Write the full report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Runtime worker threads (1: single-threaded).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// No progress line.
    #[arg(short, long)]
    quiet: bool,
}

fn seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?} is not a number of seconds: {e}"))?;
    if !value.is_finite() || !(0.0..=86_400.0).contains(&value) {
        return Err(format!("{text} seconds is out of range (0 to 86400)"));
    }
    Ok(value)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = LoadConfig {
        ramp: Duration::from_secs_f64(args.ramp),
        timeout: Duration::from_secs_f64(args.timeout),
        data: args.data.into_bytes(),
        client: args.client,
        listeners: args.listeners,
        socket_type: args.socket_type,
        daemon_pid: args.daemon_pid,
        threads: args.threads,
        progress: !args.quiet,
        ..LoadConfig::new(args.socket, args.streams)
    };
    let report = match load::run(config) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("handoff-load: {error}");
            return ExitCode::FAILURE;
        }
    };
    print!("{report}");
    if let Some(path) = args.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(&path, json).map_err(|e| e.to_string()));
        if let Err(error) = written {
            eprintln!("handoff-load: writing {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if report.failed > 0 {
        ExitCode::from(load::STREAMS_FAILED_EXIT)
    } else {
        ExitCode::SUCCESS
    }
}
