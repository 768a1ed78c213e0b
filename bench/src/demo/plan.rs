//! What the demo starts, as plain data: which binaries, with which flags and
//! environment (checked by unit tests before anything runs).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Which daemon binary serves the streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    Tokio,
    Smol,
}

impl Runtime {
    pub fn binary(self) -> &'static str {
        match self {
            Runtime::Tokio => "handoff-tokio",
            Runtime::Smol => "handoff-smol",
        }
    }
}

/// Where the daemon's tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The daemon's built-in mock (`-b mock -d DELAY`).
    Mock { delay_ms: u64 },
    /// A real OpenAI-compatible API; the key comes from OPENAI_API_KEY.
    OpenAi { base: String },
    /// mock-llm over HTTP/2 + TLS, the daemon trusting its generated CA.
    MockLlm { tokens: u32, token_delay_ms: u64 },
}

/// Environment the daemon does not inherit when it talks to mock-llm, so a user's
/// real API settings cannot redirect or weaken the local run.
pub const OPENAI_ENVIRONMENT: [&str; 5] =
    ["OPENAI_API_BASE", "OPENAI_API_KEY", "OPENAI_HTTP2_ENABLED", "OPENAI_INSECURE_SSL", "SSL_CERT_FILE"];

/// A command line to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
    pub env_remove: Vec<String>,
}

impl Launch {
    fn new(program: PathBuf) -> Launch {
        Launch { program, args: Vec::new(), env: Vec::new(), env_remove: Vec::new() }
    }

    fn arg(&mut self, arg: impl Into<OsString>) -> &mut Launch {
        self.args.push(arg.into());
        self
    }

    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args);
        for name in &self.env_remove {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }
}

/// How long the daemon lets running streams finish when the demo stops it: a
/// browser mid-stream should not hold Ctrl-C up for the default 30 s.
pub const DAEMON_DRAIN_SECS: u32 = 2;

/// mock-llm on free loopback ports, TLS with its CA written to `ca`, counters served.
pub fn mock_llm(bin_dir: &Path, ca: &Path, tokens: u32, token_delay_ms: u64) -> Launch {
    let mut launch = Launch::new(bin_dir.join("mock-llm"));
    launch.arg("--listen").arg("127.0.0.1:0").arg("--tls").arg("--cert-out").arg(ca);
    launch.arg("--tokens").arg(tokens.to_string()).arg("--token-delay-ms").arg(token_delay_ms.to_string());
    launch.arg("--stats-listen").arg("127.0.0.1:0").arg("--threads").arg("1");
    launch
}

/// The daemon's backend once everything it needs is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonBackend<'a> {
    Mock {
        delay_ms: u64,
    },
    OpenAi {
        base: &'a str,
    },
    /// mock-llm's API base and the CA file it wrote.
    MockLlm {
        base: &'a str,
        ca: &'a Path,
    },
}

/// The daemon on `socket`.
pub fn daemon(bin_dir: &Path, runtime: Runtime, socket: &Path, backend: DaemonBackend<'_>) -> Launch {
    let mut launch = Launch::new(bin_dir.join(runtime.binary()));
    launch.arg("--socket").arg(socket).arg("--drain-timeout").arg(DAEMON_DRAIN_SECS.to_string());
    match backend {
        DaemonBackend::Mock { delay_ms } => {
            launch.arg("--backend").arg("mock").arg("--delay").arg(delay_ms.to_string());
        }
        DaemonBackend::OpenAi { base } => {
            launch.arg("--backend").arg("openai").arg("--openai-base").arg(base);
        }
        DaemonBackend::MockLlm { base, ca } => {
            launch.arg("--backend").arg("openai").arg("--openai-base").arg(base).arg("--openai-ca").arg(ca);
            launch.env_remove = OPENAI_ENVIRONMENT.iter().map(|name| (*name).to_owned()).collect();
            // mock-llm takes any key; the daemon sends one as a real API needs.
            launch.env.push(("OPENAI_API_KEY".to_owned(), "sk-handoff-demo".to_owned()));
        }
    }
    launch
}

/// The front on `listen`, handing off to `socket`.
pub fn front(bin_dir: &Path, listen: &str, socket: &Path) -> Launch {
    let mut launch = Launch::new(bin_dir.join("handoff-front"));
    launch.arg("--listen").arg(listen).arg("--socket").arg(socket);
    launch
}

/// The binaries a run needs.
pub fn binaries(runtime: Runtime, backend: &Backend) -> Vec<&'static str> {
    let mut names = vec![runtime.binary(), "handoff-front"];
    if matches!(backend, Backend::MockLlm { .. }) {
        names.push("mock-llm");
    }
    names
}

/// The URL in a `listening on URL` line (mock-llm's and handoff-front's first line).
pub fn listening_url(line: &str) -> Option<&str> {
    line.trim().strip_prefix("listening on ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(launch: &Launch) -> Vec<String> {
        launch.args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn the_daemon_gets_each_backend_s_flags() {
        let bin = Path::new("/b");
        let socket = Path::new("/t/d.sock");
        let mock = daemon(bin, Runtime::Smol, socket, DaemonBackend::Mock { delay_ms: 40 });
        assert_eq!(mock.program, Path::new("/b/handoff-smol"));
        assert_eq!(
            args(&mock),
            ["--socket", "/t/d.sock", "--drain-timeout", "2", "--backend", "mock", "--delay", "40"]
        );
        assert!(mock.env_remove.is_empty(), "the built-in mock keeps the environment");

        let real = daemon(bin, Runtime::Tokio, socket, DaemonBackend::OpenAi { base: "https://api.x/v1" });
        assert_eq!(&args(&real)[4..], ["--backend", "openai", "--openai-base", "https://api.x/v1"]);
        assert!(real.env.is_empty() && real.env_remove.is_empty(), "a real API uses the user's key");

        let backend = DaemonBackend::MockLlm { base: "https://127.0.0.1:9/v1", ca: Path::new("/t/ca.pem") };
        let tls = daemon(bin, Runtime::Tokio, socket, backend);
        assert_eq!(
            &args(&tls)[4..],
            ["--backend", "openai", "--openai-base", "https://127.0.0.1:9/v1", "--openai-ca", "/t/ca.pem"]
        );
        assert!(tls.env_remove.iter().any(|n| n == "OPENAI_INSECURE_SSL"), "{:?}", tls.env_remove);
        assert_eq!(tls.env, [("OPENAI_API_KEY".to_owned(), "sk-handoff-demo".to_owned())]);
    }

    #[test]
    fn mock_llm_serves_tls_and_its_counters() {
        let launch = mock_llm(Path::new("/b"), Path::new("/t/ca.pem"), 20, 15);
        let args = args(&launch);
        for pair in [
            ["--tls", "--cert-out"],
            ["--tokens", "20"],
            ["--token-delay-ms", "15"],
            ["--stats-listen", "127.0.0.1:0"],
        ] {
            assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
        }
    }

    #[test]
    fn binaries_and_listening_lines() {
        assert_eq!(
            binaries(Runtime::Tokio, &Backend::Mock { delay_ms: 1 }),
            ["handoff-tokio", "handoff-front"]
        );
        let backend = Backend::MockLlm { tokens: 1, token_delay_ms: 1 };
        assert_eq!(binaries(Runtime::Smol, &backend), ["handoff-smol", "handoff-front", "mock-llm"]);
        assert_eq!(listening_url("listening on http://127.0.0.1:80/\n"), Some("http://127.0.0.1:80/"));
        assert_eq!(listening_url("something else"), None);
    }
}
