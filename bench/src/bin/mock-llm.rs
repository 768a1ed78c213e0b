//! mock-llm: an OpenAI-compatible streaming backend for tests and benchmarks.
//! Prints `listening on URL` as its first stdout line, then serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use handoff_bench::mockllm::stats::serve_stats;
use handoff_bench::mockllm::{MockLlm, MockLlmConfig};
use tokio::signal::unix::{signal, Signal, SignalKind};

#[derive(Debug, Parser)]
#[command(name = "mock-llm", about = "OpenAI-compatible streaming mock backend")]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve HTTP/2 and HTTP/1.1 over TLS (ALPN) with a certificate from a generated CA.
    #[arg(long)]
    tls: bool,
    /// Write the generated CA certificate (PEM) to this file (with --tls).
    #[arg(long, value_name = "FILE", requires = "tls")]
    cert_out: Option<PathBuf>,
    /// Milliseconds before each content chunk.
    #[arg(long, default_value_t = 20)]
    token_delay_ms: u64,
    /// Content chunks per stream (a request's max_tokens may lower it).
    #[arg(long, default_value_t = 20)]
    tokens: u32,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS.
    #[arg(long, default_value_t = 100)]
    max_streams: u32,
    /// Runtime worker threads (default: one per CPU).
    #[arg(long)]
    threads: Option<usize>,
    /// Keep the most recent N requests in memory (only a library user can read them).
    #[arg(long, default_value_t = 0)]
    recorded_requests: usize,
    /// Serve the counters as JSON at http://ADDR/stats (plain HTTP/1.1); printed on the
    /// second line as `stats on URL`.
    #[arg(long, value_name = "ADDR")]
    stats_listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mock-llm: could not start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> ExitCode {
    let config = MockLlmConfig {
        listen: args.listen,
        tls: args.tls,
        token_delay: Duration::from_millis(args.token_delay_ms),
        tokens: args.tokens,
        max_streams: args.max_streams,
        recorded_requests: args.recorded_requests,
        ..MockLlmConfig::default()
    };
    let mock = match MockLlm::start(config).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let (Some(path), Some(pem)) = (&args.cert_out, mock.ca_cert_pem()) {
        if let Err(e) = std::fs::write(path, pem) {
            eprintln!("mock-llm: could not write the CA certificate to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    // Handlers go in before the first line, so a caller may signal as soon as it reads it.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("mock-llm: could not listen for signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats = match args.stats_listen {
        None => None,
        Some(addr) => {
            match tokio::net::TcpListener::bind(addr).await.and_then(|l| Ok((l.local_addr()?, l))) {
                Ok((local, listener)) => {
                    Some((local, tokio::spawn(serve_stats(listener, mock.recorder().clone()))))
                }
                Err(e) => {
                    eprintln!("mock-llm: could not listen for stats on {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    // The first line is the contract with scripts that start us on port 0.
    println!("listening on {}", mock.url());
    if let Some((addr, _)) = &stats {
        println!("stats on http://{addr}/stats");
    }
    signals.wait().await;
    if let Some((_, task)) = stats {
        task.abort();
    }
    let recorder = mock.recorder().clone();
    mock.shutdown().await;
    eprintln!(
        "mock-llm: connections {}, requests {}, completed {}, cancelled {}, reset {}, peak streams {} \
         (per connection {})",
        recorder.connections_accepted(),
        recorder.requests(),
        recorder.streams_completed(),
        recorder.streams_cancelled(),
        recorder.streams_reset(),
        recorder.max_streams_overall(),
        recorder.max_streams_per_connection(),
    );
    ExitCode::SUCCESS
}

/// SIGINT and SIGTERM, both meaning "stop".
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}
