//! handoff-demo: starts the daemon, handoff-front (a development stand-in for Apache +
//! mod_socket_handoff) and, with `--backend mock-llm`, mock-llm over HTTP/2 + TLS, then
//! prints the URL to open. Ctrl-C stops everything it started.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use handoff_bench::demo::{run, Backend, DemoConfig, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// The daemon's built-in mock backend (needs nothing else).
    Mock,
    /// A real OpenAI-compatible API: --openai-base (or OPENAI_API_BASE) and OPENAI_API_KEY.
    Openai,
    /// mock-llm over HTTP/2 + TLS, the daemon trusting its generated CA.
    MockLlm,
}

#[derive(Debug, Parser)]
#[command(
    name = "handoff-demo",
    about = "Watch the handoff daemon stream into a browser: starts the daemon, handoff-front (a development \
             front, not for production) and optionally mock-llm, and prints the URL to open"
)]
struct Args {
    /// Where the demo page is served (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Which daemon binary streams.
    #[arg(long, value_enum, default_value = "tokio")]
    runtime: Runtime,
    /// Where the tokens come from.
    #[arg(long, value_enum, default_value = "mock")]
    backend: BackendArg,
    /// Milliseconds between the built-in mock's events.
    #[arg(long, default_value_t = 50)]
    delay: u64,
    /// The API base for --backend openai, e.g. https://api.openai.com/v1.
    #[arg(long, env = "OPENAI_API_BASE")]
    openai_base: Option<String>,
    /// Content chunks per mock-llm stream.
    #[arg(long, default_value_t = 20)]
    tokens: u32,
    /// Milliseconds before each mock-llm chunk.
    #[arg(long, default_value_t = 30)]
    token_delay_ms: u64,
    /// Where handoff-tokio/handoff-smol, handoff-front and mock-llm are (default: next to this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Fail instead of running cargo build when a binary is missing.
    #[arg(long)]
    no_build: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let backend = match args.backend {
        BackendArg::Mock => Backend::Mock { delay_ms: args.delay },
        BackendArg::MockLlm => Backend::MockLlm { tokens: args.tokens, token_delay_ms: args.token_delay_ms },
        BackendArg::Openai => {
            let Some(base) = args.openai_base.filter(|b| !b.is_empty()) else {
                eprintln!("handoff-demo: --backend openai needs --openai-base URL or OPENAI_API_BASE");
                return ExitCode::FAILURE;
            };
            if std::env::var_os("OPENAI_API_KEY").is_none_or(|key| key.is_empty()) {
                eprintln!("handoff-demo: --backend openai needs OPENAI_API_KEY in the environment");
                return ExitCode::FAILURE;
            }
            Backend::OpenAi { base }
        }
    };
    let bin_dir = match args.bin_dir.map(Ok).unwrap_or_else(own_dir) {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("handoff-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config =
        DemoConfig { runtime: args.runtime, backend, listen: args.listen, bin_dir, build: !args.no_build };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("handoff-demo: could not start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("handoff-demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn own_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    exe.parent().map(PathBuf::from).ok_or_else(|| format!("{} has no directory", exe.display()))
}
