//! handoff-bench: benchmark tools for the handoff daemons.
//!
//! `handoff-bench compare` runs the daemons side by side over a matrix of backends
//! and concurrency levels and writes a results folder (see bench/README.md).
//! `handoff-bench soak` churns one daemon at a fixed concurrency with a mix of faults
//! for a bounded time and fails if RSS or fds keep growing or a stream goes unanswered.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use handoff_bench::compare::{
    self, folder_timestamp, BackendKind, CompareConfig, DaemonCommand, DaemonSpec, Interrupt, Workload,
};
use handoff_bench::load::{ClientKind, DEFAULT_DATA};
use handoff_bench::soak::{self, GrowthLimit, Mix, SoakBackend, SoakConfig, DEFAULT_MIX};

#[derive(Debug, Parser)]
#[command(name = "handoff-bench", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run daemons × backends × concurrency levels, each cell in fresh processes,
    /// and write results.md, results.json and SVG charts.
    #[command(after_long_help = FOREIGN_DAEMONS)]
    Compare(CompareArgs),
    /// Churn one daemon at a fixed concurrency with a mix of normal streams and faults
    /// for a bounded time; fail if its RSS or fds keep growing after warm-up or any
    /// stream goes unanswered. Writes summary.txt/json, samples.csv and rss-fds.svg.
    #[command(after_long_help = SOAK_HELP)]
    Soak(SoakArgs),
}

/// `soak --help`: the kinds and the judgement.
const SOAK_HELP: &str = "\
Kinds (--mix kind=weight,...; kinds left out weigh zero):
  normal               a full stream read to its end
  backend-abort        mock-llm ends the body after 3 chunks (test_pattern abort:3)
  backend-500          mock-llm answers HTTP 500 (status:500)
  backend-stall        mock-llm is silent before its head for --stall-ms, longer than the
                       daemon's --first-byte-timeout (stall-head:MS)
  client-close         the client closes (FIN) after the first event
  client-rst           the client resets (SO_LINGER 0) after the first event
  client-stop-reading  a 4 KiB receive buffer, a long response (4 KiB tokens), nothing
                       read for --stop-reading-ms after the head, then the rest
  bad-handoff          truncated JSON as handoff data: 400 expected
  over-capacity        its weight is its share of the concurrency: those slots hand off
                       while the others hold the daemon at --max-connections (set to the
                       concurrency less these slots), so they are answered 503; one let
                       in after all hangs up once the head arrives
  Any stream answered 503 waits --retry-pause-ms before its slot's next one.

The run fails when
  - RSS or fds grew after warm-up: a least-squares line through the samples from the
    end of warm-up to the end of --duration, its growth over that span above
    max(--max-rss-growth x level, 8 MiB) or max(--max-fd-growth x level, 64 fds);
  - any stream got no answer (not one byte), a malformed one, never ended within
    --stream-timeout, or could not be made by the generator;
  - the daemon exited during the run or did not stop cleanly on SIGTERM.";

/// `compare --help`: how another implementation of the contract is run.
const FOREIGN_DAEMONS: &str = "\
Other daemons (--daemon COMMAND):
  COMMAND runs as `sh -c 'exec COMMAND'`, so the pid sampled is the daemon's own: the
  command must end by exec'ing the daemon, not start it in the background.
  {socket}  the cell's Unix socket path (required)
  {args}    the cell's contract flags: -d DELAY -b mock|openai [--openai-base URL]
            --benchmark (appended at the end when COMMAND has no {args})
  {ca}      mock-llm's CA certificate (h2tls; empty otherwise)
  The environment has OPENAI_API_KEY, and for the OpenAI backends OPENAI_API_BASE,
  OPENAI_HTTP2_ENABLED and (h2tls) SSL_CERT_FILE.

  A daemon with other flags: place them around {socket}, drop {args} into them, e.g.
    --daemon '/opt/go-peer/daemon --listen {socket} {args}' --daemon-name go
  A daemon configured by environment variables: the example wrapper
  bench/examples/env-daemon.sh turns the flags into variables and execs it:
    --daemon 'bench/examples/env-daemon.sh -s {socket} {args} -- php /opt/peer/daemon.php'
  (its header says how to rename the variables).

  The daemon's summary is read from its stdout when it stops (SIGTERM), or from its
  stderr if stdout has none: `name: count` or `name=count`, any capitalisation; the
  peak is the count whose name says peak and streams or concurrency (`Peak concurrent
  streams: 1000`, `peak_streams=1000`).

Failed cells:
  A cell where more than --failure-limit of the streams did not complete is marked
  failed in results.md and results.json (`verdict`); its TTFB, stream, RSS-per-stream
  and per-event figures, taken over the few streams that did complete, are shown as —
  and left out of the charts and the ratio column.

Backend connections (OpenAI backends):
  accepted: mock-llm's own count of the connections it accepted (its exit summary);
  peak open: the most it held at once, from its open descriptors every 200 ms.";

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// Daemons to run, by name (default: tokio, smol and every --daemon).
    #[arg(long, value_delimiter = ',')]
    runtimes: Vec<String>,
    /// Another daemon of the same contract: a command with `{socket}` (and
    /// optionally `{args}`, `{ca}`), run as `sh -c 'exec COMMAND'`. Repeatable;
    /// see the end of --help, and bench/examples/env-daemon.sh for a daemon
    /// configured by environment variables.
    #[arg(long, value_name = "COMMAND")]
    daemon: Vec<String>,
    /// Names of the --daemon commands, in the same order (default: daemon1, daemon2, …).
    #[arg(long, value_name = "NAME")]
    daemon_name: Vec<String>,
    /// Backends to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = BackendKind::ALL)]
    backends: Vec<BackendKind>,
    /// Concurrency levels: streams per cell.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000])]
    streams: Vec<u64>,
    /// Only cells matching one of these `daemon/backend/streams` patterns (`*` for
    /// any segment; `smol/http1` means every smol HTTP/1.1 cell). Repeatable.
    #[arg(long, value_name = "PATTERN")]
    filter: Vec<String>,
    /// Milliseconds between a stream's events (daemon `-d`, mock-llm `--token-delay-ms`).
    #[arg(long, default_value_t = 705)]
    delay_ms: u64,
    /// Seconds over which each cell's arrivals are spread.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    /// Per-stream timeout in seconds (default: twice the backend's duration + 10 s).
    #[arg(long)]
    timeout: Option<f64>,
    /// Handoff data of every stream.
    #[arg(long, default_value = DEFAULT_DATA)]
    data: String,
    /// Handed-off client sockets: loopback TCP (as under Apache) or socketpairs.
    #[arg(long, value_enum, default_value_t = ClientKind::Tcp)]
    client: ClientKind,
    /// Results folder (default: bench/results/<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where mock-llm, handoff-load and the daemons are (default: this binary's folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// `--backend-connections` for our daemons under HTTP/1.1 (one stream per
    /// connection; 9000 keeps 10,000 streams inside a 20,000 fd budget).
    #[arg(long, default_value_t = 9_000)]
    http1_backend_connections: usize,
    /// `--threads` for our daemons (default: theirs, one worker).
    #[arg(long)]
    daemon_threads: Option<usize>,
    /// mock-llm worker threads (default: one per CPU).
    #[arg(long)]
    mock_threads: Option<usize>,
    /// Load generator runtime threads.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    /// Seconds between SIGTERM and SIGKILL when stopping a process.
    #[arg(long, default_value_t = 15)]
    stop_timeout: u64,
    /// Seconds of quiet between cells.
    #[arg(long, default_value_t = 1.0)]
    pause: f64,
    /// Share at which a cell is flagged: of one core (mock-llm, generator), of all
    /// cores (host).
    #[arg(long, default_value_t = 0.9)]
    saturation: f64,
    /// Share of a cell's streams that may fail (not complete) before the cell is
    /// marked failed and its per-stream figures withheld.
    #[arg(long, default_value_t = compare::DEFAULT_FAILURE_LIMIT)]
    failure_limit: f64,
}

#[derive(Debug, clap::Args)]
struct SoakArgs {
    /// The daemon binary (handoff-tokio or handoff-smol; default: handoff-tokio beside
    /// this binary).
    #[arg(long, value_name = "PATH")]
    daemon: Option<PathBuf>,
    /// mock-llm (default: beside this binary).
    #[arg(long, value_name = "PATH")]
    mock_llm: Option<PathBuf>,
    /// The daemon's backend: mock-llm over HTTP/2+TLS or HTTP/1.1.
    #[arg(long, value_enum, default_value_t = SoakBackend::H2tls)]
    backend: SoakBackend,
    /// Streams open at once.
    #[arg(long, default_value_t = 5_000)]
    concurrency: u64,
    /// Seconds during which streams start.
    #[arg(long, default_value_t = 600.0)]
    duration: f64,
    /// Seconds at the start that are not judged for growth.
    #[arg(long, default_value_t = 60.0)]
    warmup: f64,
    /// Seconds over which the first streams start.
    #[arg(long, default_value_t = 10.0)]
    ramp: f64,
    /// Weights of the stream kinds (see below).
    #[arg(long, default_value = DEFAULT_MIX)]
    mix: Mix,
    /// Milliseconds between the backend's chunks.
    #[arg(long, default_value_t = 705)]
    delay_ms: u64,
    /// Backend silence of a backend-stall stream, in milliseconds.
    #[arg(long, default_value_t = 8_000)]
    stall_ms: u64,
    /// The daemon's --first-byte-timeout, in seconds (below the stall).
    #[arg(long, default_value_t = 5)]
    first_byte_timeout: u64,
    /// How long a client-stop-reading client reads nothing, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    stop_reading_ms: u64,
    /// Seconds a stream may take from start to the end of its response.
    #[arg(long, default_value_t = 180.0)]
    stream_timeout: f64,
    /// Pause after a 503, in milliseconds (the daemon's Retry-After, rounded up to seconds).
    #[arg(long, default_value_t = 1_000)]
    retry_pause_ms: u64,
    /// RSS growth after warm-up allowed, as a share of its level.
    #[arg(long, default_value_t = 0.10)]
    max_rss_growth: f64,
    /// fd growth after warm-up allowed, as a share of its level.
    #[arg(long, default_value_t = 0.10)]
    max_fd_growth: f64,
    /// The daemon's --threads (default: its own, one worker).
    #[arg(long)]
    daemon_threads: Option<usize>,
    /// mock-llm worker threads (default: one per CPU).
    #[arg(long)]
    mock_threads: Option<usize>,
    /// Generator runtime threads.
    #[arg(long, default_value_t = 1)]
    generator_threads: usize,
    /// Seed of the kind draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Streams closed without a byte that still pass the run (0: any fails it). The
    /// known handoff loss (about one in a million, README "Known defect") would
    /// otherwise fail a short CI soak by chance; the count is always reported.
    #[arg(long, default_value_t = 0)]
    tolerate_no_answer: u64,
    /// Output folder (default: bench/results/soak-<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    match Args::parse().command {
        Command::Compare(args) => compare_main(args),
        Command::Soak(args) => soak_main(args),
    }
}

fn soak_main(args: SoakArgs) -> ExitCode {
    let config = match soak_config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("handoff-bench soak: {error}");
            return ExitCode::from(2);
        }
    };
    match soak::run(&config, std::env::args().collect()) {
        Ok(summary) => {
            print!("{}", summary.text());
            eprintln!("handoff-bench soak: results in {}", config.out_dir.display());
            if summary.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("handoff-bench soak: {error}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("{flag} {value}: not a number of seconds ({e})"))
}

fn share(flag: &str, value: f64) -> Result<f64, String> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("{flag} {value}: must be a share above zero (0.10 is 10%)"))
    }
}

fn soak_config(args: SoakArgs) -> Result<SoakConfig, String> {
    let bin_dir = this_binary_folder()?;
    let out_dir = args.out.unwrap_or_else(|| {
        PathBuf::from("bench/results").join(format!("soak-{}", folder_timestamp(SystemTime::now())))
    });
    let mut config = SoakConfig::new(
        args.daemon.unwrap_or_else(|| bin_dir.join("handoff-tokio")),
        args.mock_llm.unwrap_or_else(|| bin_dir.join("mock-llm")),
        out_dir,
    );
    config.backend = args.backend;
    config.concurrency = args.concurrency;
    config.duration = seconds("--duration", args.duration)?;
    config.warmup = seconds("--warmup", args.warmup)?;
    config.ramp = seconds("--ramp", args.ramp)?;
    config.mix = args.mix;
    config.delay_ms = args.delay_ms;
    config.stall = Duration::from_millis(args.stall_ms);
    config.first_byte_timeout = Duration::from_secs(args.first_byte_timeout);
    config.stop_reading = Duration::from_millis(args.stop_reading_ms);
    config.stream_timeout = seconds("--stream-timeout", args.stream_timeout)?;
    config.retry_pause = Duration::from_millis(args.retry_pause_ms);
    config.rss_limit =
        GrowthLimit { relative: share("--max-rss-growth", args.max_rss_growth)?, ..config.rss_limit };
    config.fd_limit =
        GrowthLimit { relative: share("--max-fd-growth", args.max_fd_growth)?, ..config.fd_limit };
    config.daemon_threads = args.daemon_threads;
    config.mock_threads = args.mock_threads;
    config.generator_threads = args.generator_threads;
    config.seed = args.seed;
    config.tolerated_no_answer = args.tolerate_no_answer;
    config.validate()?;
    Ok(config)
}

fn this_binary_folder() -> Result<PathBuf, String> {
    std::env::current_exe()
        .map_err(|e| format!("finding this binary's folder: {e}"))?
        .parent()
        .map(PathBuf::from)
        .ok_or_else(|| "this binary has no folder".to_owned())
}

fn compare_main(args: CompareArgs) -> ExitCode {
    let config = match compare_config(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("handoff-bench: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("handoff-bench: starting the tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let interrupt = match Interrupt::on_signals() {
            Ok(interrupt) => interrupt,
            Err(error) => {
                eprintln!("handoff-bench: listening for signals: {error}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!("handoff-bench: results in {}", config.out_dir.display());
        match compare::run(&config, interrupt).await {
            Ok(comparison) => {
                println!("{}", compare::markdown(&comparison));
                eprintln!("handoff-bench: results in {}", config.out_dir.display());
                if comparison.interrupted {
                    ExitCode::from(130)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(error) => {
                eprintln!("handoff-bench: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

fn compare_config(args: CompareArgs) -> Result<CompareConfig, String> {
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => this_binary_folder()?,
    };
    let out_dir =
        args.out.unwrap_or_else(|| PathBuf::from("bench/results").join(folder_timestamp(SystemTime::now())));
    let mut config = CompareConfig::standard(&bin_dir, out_dir);

    if args.daemon_name.len() > args.daemon.len() {
        return Err(format!("{} --daemon-name for {} --daemon", args.daemon_name.len(), args.daemon.len()));
    }
    for (i, command) in args.daemon.into_iter().enumerate() {
        let name = args.daemon_name.get(i).cloned().unwrap_or_else(|| format!("daemon{}", i + 1));
        config.daemons.push(DaemonSpec { name, command: DaemonCommand::Template { command } });
    }
    if !args.runtimes.is_empty() {
        for name in &args.runtimes {
            if !config.daemons.iter().any(|spec| &spec.name == name) {
                let known: Vec<&str> = config.daemons.iter().map(|spec| spec.name.as_str()).collect();
                return Err(format!("--runtimes {name:?}: no such daemon (known: {})", known.join(", ")));
            }
        }
        config.daemons.retain(|spec| args.runtimes.contains(&spec.name));
    }

    let pause = Duration::try_from_secs_f64(args.pause)
        .map_err(|e| format!("--pause {}: not a number of seconds ({e})", args.pause))?;
    let mut workload = Workload::with_delay(args.delay_ms, args.ramp);
    if let Some(timeout) = args.timeout {
        workload.timeout_secs = timeout;
    }
    workload.data = args.data;
    workload.client = args.client;
    config.workload = workload;
    config.backends = args.backends;
    config.streams = args.streams;
    config.filters = args.filter;
    config.daemon_options.http1_backend_connections = args.http1_backend_connections;
    config.daemon_options.threads = args.daemon_threads;
    config.mock_threads = args.mock_threads;
    config.load_threads = args.load_threads;
    config.stop_timeout = Duration::from_secs(args.stop_timeout);
    config.pause = pause;
    config.saturation = args.saturation;
    config.failure_limit = args.failure_limit;
    config.command_line = std::env::args().collect();
    Ok(config)
}
