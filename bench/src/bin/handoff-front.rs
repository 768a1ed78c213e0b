//! handoff-front: a DEVELOPMENT stand-in for Apache + mod_socket_handoff + PHP, so a
//! browser can watch the daemon stream. Prints `listening on http://ADDR/` as its first
//! stdout line, then serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use handoff_bench::front::{bind, serve, FrontConfig};
use handoff_bench::load::HandoffSocketType;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(
    name = "handoff-front",
    about = "Development front for the handoff daemon (NOT for production): serves a demo page and hands \
             /api/stream requests to the daemon the way Apache + mod_socket_handoff do",
    long_about = "A development tool, not a production front: no TLS, no authentication, one request per \
                  connection. It serves the demo page at /, and for GET /api/stream?prompt=.. or POST \
                  /api/stream (JSON or form body: prompt, model, test_pattern, max_tokens) builds the \
                  handoff data and passes the accepted TCP socket to the daemon's Unix socket (one \
                  SOCK_SEQPACKET message, SCM_RIGHTS), as mod_socket_handoff does; the daemon writes the \
                  response. When the daemon is unreachable it answers 503 itself. GET /stats shows its \
                  counters as JSON."
)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed on the first line).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The daemon's Unix socket.
    #[arg(short, long, default_value = "/run/streaming-daemon.sock")]
    socket: PathBuf,
    /// `stream` for a daemon started with --socket-type stream.
    #[arg(long, value_enum, default_value = "seqpacket")]
    socket_type: HandoffSocketType,
    /// Largest POST body in bytes (larger ones get 413).
    #[arg(long, default_value_t = FrontConfig::new(([127, 0, 0, 1], 0).into(), PathBuf::new()).max_body)]
    max_body: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("handoff-front: could not start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    let mut config = FrontConfig::new(args.listen, args.socket);
    config.connect.socket_type = args.socket_type;
    config.max_body = args.max_body;
    let (mut interrupt, mut terminate) =
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("handoff-front: could not listen for signals: {e}");
                return ExitCode::FAILURE;
            }
        };
    let front = match bind(config).await {
        Ok(front) => front,
        Err(e) => {
            eprintln!("handoff-front: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The first line is the contract with scripts that start us on port 0.
    println!("listening on http://{}/", front.local_addr());
    let stop = async {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    match serve(front, stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handoff-front: {e}");
            ExitCode::FAILURE
        }
    }
}
