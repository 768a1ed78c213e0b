//! The command lines of the processes a cell starts: the daemon under test, mock-llm
//! and the load generator. Built as plain data first, so they can be shown in the
//! results and checked in tests, then turned into a [`Command`].
//!
//! A daemon given as a template (another implementation of the same contract) runs
//! as `sh -c 'exec COMMAND'`, so the pid we sample is the daemon's own. `{socket}`
//! in it becomes the socket path; `{args}` becomes the contract's flags for the
//! cell (`-d DELAY -b mock|openai [--openai-base URL] --benchmark`), which are
//! appended when the template has no `{args}`. The OpenAI settings also go in the
//! environment the contract names (`OPENAI_API_BASE`, `OPENAI_HTTP2_ENABLED`), and
//! for TLS `SSL_CERT_FILE` names mock-llm's CA (`{ca}` names it in the template).
//! A daemon configured by environment variables instead of flags runs under
//! `bench/examples/env-daemon.sh`, which turns the flags into variables and execs it.

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::matrix::{BackendKind, DaemonCommand, DaemonSpec};
use super::Workload;
use crate::load::ClientKind;

/// Environment variables the daemons read: cleared for our own daemons so a
/// caller's shell cannot change a cell behind the command line's back.
pub(crate) const DAEMON_ENVIRONMENT: [&str; 9] = [
    "OPENAI_API_BASE",
    "OPENAI_API_KEY",
    "OPENAI_MODEL",
    "OPENAI_HTTP2_ENABLED",
    "OPENAI_INSECURE_SSL",
    "OPENAI_H2_STREAMS_PER_HANDLE",
    "MAX_CONNECTIONS",
    "RUST_LOG",
    "SSL_CERT_FILE",
];

/// A bearer token, so requests carry `Authorization` as real ones do.
const API_KEY: &str = "sk-handoff-bench";

/// Seconds our daemons may drain after SIGTERM; the load has ended by then, so
/// anything still open is stuck and should not hold up the matrix.
const DRAIN_SECS: u64 = 5;

/// A process to start: program, arguments, environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub env_remove: Vec<String>,
}

impl Launch {
    fn new(program: impl Into<PathBuf>) -> Launch {
        Launch { program: program.into(), args: Vec::new(), env: Vec::new(), env_remove: Vec::new() }
    }

    fn arg(&mut self, arg: impl Into<String>) -> &mut Launch {
        self.args.push(arg.into());
        self
    }

    fn flag(&mut self, name: &str, value: impl Into<String>) -> &mut Launch {
        self.arg(name).arg(value)
    }

    /// The command line as a shell would take it (for the results and error messages).
    pub fn display(&self) -> String {
        let env = self.env.iter().map(|(name, value)| format!("{name}={}", shell_quote(value)));
        let program = std::iter::once(shell_quote(&self.program.display().to_string()));
        env.chain(program).chain(self.args.iter().map(|arg| shell_quote(arg))).collect::<Vec<_>>().join(" ")
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for name in &self.env_remove {
            command.env_remove(name);
        }
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        command
    }
}

/// Where a cell's backend is, once mock-llm is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The API base the daemon gets, `http(s)://127.0.0.1:PORT/v1`.
    pub base_url: String,
    pub port: u16,
    /// mock-llm's CA certificate (TLS only).
    pub ca_file: Option<PathBuf>,
}

impl Endpoint {
    /// From mock-llm's first line, `listening on http(s)://HOST:PORT`.
    pub fn from_listening_line(line: &str, ca_file: Option<PathBuf>) -> Option<Endpoint> {
        let url = line.trim().strip_prefix("listening on ")?;
        let authority = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
        let port = authority.rsplit_once(':')?.1.parse().ok()?;
        Some(Endpoint { base_url: format!("{url}/v1"), port, ca_file })
    }
}

/// Per-daemon settings that are not the workload's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonOptions {
    /// `--threads` for our daemons (`None`: their default, one worker).
    pub threads: Option<usize>,
    /// `--backend-connections` for our daemons under HTTP/1.1 (one stream each).
    pub http1_backend_connections: usize,
}

/// The daemon of one cell. `endpoint` is `None` exactly for the mock backend.
pub fn daemon(
    spec: &DaemonSpec,
    socket: &Path,
    workload: &Workload,
    backend: BackendKind,
    endpoint: Option<&Endpoint>,
    options: DaemonOptions,
) -> Launch {
    let socket = socket.display().to_string();
    let mut contract = Launch::new("");
    contract.flag("-d", workload.delay_ms.to_string());
    match endpoint {
        None => contract.flag("-b", "mock"),
        Some(endpoint) => contract.flag("-b", "openai").flag("--openai-base", endpoint.base_url.clone()),
    };
    contract.arg("--benchmark");
    match &spec.command {
        DaemonCommand::Builtin { binary } => {
            let mut launch = Launch::new(binary);
            launch.flag("-s", socket);
            launch.args.append(&mut contract.args);
            launch.flag("--drain-timeout", DRAIN_SECS.to_string());
            if let Some(threads) = options.threads {
                launch.flag("--threads", threads.to_string());
            }
            if let Some(endpoint) = endpoint {
                launch.flag("--openai-http2", backend.is_http2().to_string());
                if let Some(ca) = &endpoint.ca_file {
                    launch.flag("--openai-ca", ca.display().to_string());
                }
                if backend == BackendKind::Http1 {
                    launch.flag("--backend-connections", options.http1_backend_connections.to_string());
                }
            }
            launch.env_remove = DAEMON_ENVIRONMENT.iter().map(|name| (*name).to_owned()).collect();
            launch.env.push(("OPENAI_API_KEY".to_owned(), API_KEY.to_owned()));
            launch
        }
        DaemonCommand::Template { command } => {
            let args = contract.args.iter().map(|arg| shell_quote(arg)).collect::<Vec<_>>().join(" ");
            let ca = endpoint.and_then(|e| e.ca_file.as_ref()).map(|ca| ca.display().to_string());
            let mut line = command
                .replace("{socket}", &shell_quote(&socket))
                .replace("{ca}", &shell_quote(ca.as_deref().unwrap_or_default()));
            if line.contains("{args}") {
                line = line.replace("{args}", &args);
            } else {
                line.push(' ');
                line.push_str(&args);
            }
            let mut launch = Launch::new("sh");
            launch.arg("-c").arg(format!("exec {line}"));
            launch.env_remove = DAEMON_ENVIRONMENT.iter().map(|name| (*name).to_owned()).collect();
            launch.env.push(("OPENAI_API_KEY".to_owned(), API_KEY.to_owned()));
            if let Some(endpoint) = endpoint {
                launch.env.push(("OPENAI_API_BASE".to_owned(), endpoint.base_url.clone()));
                launch.env.push(("OPENAI_HTTP2_ENABLED".to_owned(), backend.is_http2().to_string()));
            }
            if let Some(ca) = ca {
                launch.env.push(("SSL_CERT_FILE".to_owned(), ca));
            }
            launch
        }
    }
}

/// mock-llm for one cell: the workload's events and pacing, on a free loopback port.
pub fn mock_llm(
    binary: &Path,
    workload: &Workload,
    backend: BackendKind,
    ca_out: &Path,
    threads: Option<usize>,
) -> Launch {
    let mut launch = Launch::new(binary);
    launch
        .flag("--listen", "127.0.0.1:0")
        .flag("--token-delay-ms", workload.delay_ms.to_string())
        .flag("--tokens", workload.events.to_string());
    if backend.is_tls() {
        launch.arg("--tls").flag("--cert-out", ca_out.display().to_string());
    }
    if let Some(threads) = threads {
        launch.flag("--threads", threads.to_string());
    }
    launch
}

/// The load generator for one cell, sampling the daemon.
pub fn load_generator(
    binary: &Path,
    socket: &Path,
    streams: u64,
    workload: &Workload,
    daemon_pid: u32,
    json_out: &Path,
    threads: usize,
) -> Launch {
    let mut launch = Launch::new(binary);
    launch
        .flag("--socket", socket.display().to_string())
        .flag("--streams", streams.to_string())
        .flag("--ramp", workload.ramp_secs.to_string())
        .flag("--timeout", workload.timeout_secs.to_string())
        .flag("--data", workload.data.clone())
        .flag("--client", client_name(workload.client))
        .flag("--daemon-pid", daemon_pid.to_string())
        .flag("--json", json_out.display().to_string())
        .flag("--threads", threads.to_string())
        .arg("--quiet");
    launch
}

fn client_name(client: ClientKind) -> &'static str {
    match client {
        ClientKind::Tcp => "tcp",
        ClientKind::Unix => "unix",
    }
}

/// `text` as one shell word.
pub fn shell_quote(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':' | '=' | ','));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_endpoint() -> Endpoint {
        Endpoint::from_listening_line(
            "listening on https://127.0.0.1:8443\n",
            Some(PathBuf::from("/r/ca.pem")),
        )
        .expect("a listening line")
    }

    fn builtin(name: &str) -> DaemonSpec {
        DaemonSpec {
            name: name.to_owned(),
            command: DaemonCommand::Builtin { binary: PathBuf::from(format!("/bin/handoff-{name}")) },
        }
    }

    #[test]
    fn mock_llm_listening_line_gives_the_api_base_and_port() {
        let endpoint = tls_endpoint();
        assert_eq!(endpoint.base_url, "https://127.0.0.1:8443/v1");
        assert_eq!(endpoint.port, 8443);
        let plain =
            Endpoint::from_listening_line("listening on http://127.0.0.1:41000", None).expect("plain");
        assert_eq!((plain.base_url.as_str(), plain.port), ("http://127.0.0.1:41000/v1", 41000));
        assert_eq!(Endpoint::from_listening_line("mock-llm could not listen", None), None);
    }

    #[test]
    fn our_daemon_gets_the_backend_transport_and_ca_as_flags() {
        let workload = Workload::standard();
        let options = DaemonOptions { threads: Some(2), http1_backend_connections: 9000 };
        let socket = Path::new("/tmp/t.sock");
        let launch =
            daemon(&builtin("tokio"), socket, &workload, BackendKind::H2tls, Some(&tls_endpoint()), options);
        assert_eq!(
            launch.args.join(" "),
            "-s /tmp/t.sock -d 705 -b openai --openai-base https://127.0.0.1:8443/v1 --benchmark \
             --drain-timeout 5 --threads 2 --openai-http2 true --openai-ca /r/ca.pem"
        );
        assert!(launch.env_remove.iter().any(|name| name == "OPENAI_HTTP2_ENABLED"));

        let endpoint = Endpoint::from_listening_line("listening on http://127.0.0.1:80", None).expect("line");
        let http1 = daemon(&builtin("smol"), socket, &workload, BackendKind::Http1, Some(&endpoint), options);
        assert!(http1.args.join(" ").ends_with("--openai-http2 false --backend-connections 9000"));

        let mock = daemon(&builtin("smol"), socket, &workload, BackendKind::Mock, None, options);
        assert_eq!(
            mock.args.join(" "),
            "-s /tmp/t.sock -d 705 -b mock --benchmark --drain-timeout 5 --threads 2"
        );
    }

    #[test]
    fn a_template_daemon_gets_the_contract_flags_and_environment() {
        let spec = DaemonSpec {
            name: "other".to_owned(),
            command: DaemonCommand::Template { command: "/opt/d --listen {socket}".to_owned() },
        };
        let workload = Workload::standard();
        let options = DaemonOptions { threads: None, http1_backend_connections: 9000 };
        let socket = Path::new("/tmp/my dir/t.sock");
        let launch = daemon(&spec, socket, &workload, BackendKind::H2tls, Some(&tls_endpoint()), options);
        assert_eq!(launch.program, PathBuf::from("sh"));
        assert_eq!(
            launch.args,
            [
                "-c",
                "exec /opt/d --listen '/tmp/my dir/t.sock' -d 705 -b openai --openai-base \
                 https://127.0.0.1:8443/v1 --benchmark"
            ]
        );
        let env: Vec<String> = launch.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert!(env.contains(&"OPENAI_HTTP2_ENABLED=true".to_owned()), "{env:?}");
        assert!(env.contains(&"SSL_CERT_FILE=/r/ca.pem".to_owned()), "{env:?}");

        let placed = DaemonSpec {
            name: "other".to_owned(),
            command: DaemonCommand::Template { command: "env X=1 /opt/d {args} -s {socket}".to_owned() },
        };
        let mock = daemon(&placed, Path::new("/s"), &workload, BackendKind::Mock, None, options);
        assert_eq!(mock.args[1], "exec env X=1 /opt/d -d 705 -b mock --benchmark -s /s");
    }

    /// The example wrapper, run as compare runs a template daemon, with a "daemon"
    /// that prints its pid and environment: the contract flags arrive as variables,
    /// and the pid compare samples is the daemon's own.
    #[test]
    fn the_env_wrapper_example_turns_the_flags_into_variables_and_keeps_the_pid() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/env-daemon.sh");
        let spec = DaemonSpec {
            name: "peer".to_owned(),
            command: DaemonCommand::Template {
                command: format!(
                    "env DELAY_VAR=TOKEN_DELAY {} -s {{socket}} {{args}} -- sh -c 'echo pid=$$; env'",
                    shell_quote(script)
                ),
            },
        };
        let options = DaemonOptions { threads: None, http1_backend_connections: 9000 };
        let launch = daemon(
            &spec,
            Path::new("/tmp/my dir/t.sock"),
            &Workload::standard(),
            BackendKind::H2tls,
            Some(&tls_endpoint()),
            options,
        );
        let mut command = std::process::Command::new(&launch.program);
        command.args(&launch.args).stdin(std::process::Stdio::null());
        for name in &launch.env_remove {
            command.env_remove(name);
        }
        command.envs(launch.env.iter().map(|(name, value)| (name, value)));
        let child = command.stdout(std::process::Stdio::piped()).spawn().expect("spawn sh");
        let pid = child.id();
        let output = child.wait_with_output().expect("runs to the end");
        assert!(output.status.success(), "{output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first().copied(), Some(format!("pid={pid}").as_str()), "exec all the way: {text}");
        for wanted in [
            "DAEMON_SOCKET=/tmp/my dir/t.sock",
            "TOKEN_DELAY=705",
            "DAEMON_BACKEND=openai",
            "OPENAI_API_BASE=https://127.0.0.1:8443/v1",
            "OPENAI_HTTP2_ENABLED=true",
            "SSL_CERT_FILE=/r/ca.pem",
            "BENCHMARK=1",
        ] {
            assert!(lines.contains(&wanted), "{wanted} in {text}");
        }
        assert!(!lines.iter().any(|line| line.starts_with("MOCK_DELAY_MS=")), "renamed: {text}");
    }

    #[test]
    fn the_generator_samples_the_daemon_and_writes_json() {
        let workload = Workload::standard();
        let launch = load_generator(
            Path::new("/b/handoff-load"),
            Path::new("/s"),
            1000,
            &workload,
            42,
            Path::new("/r.json"),
            1,
        );
        let line = launch.display();
        assert!(line.contains("--streams 1000 --ramp 10 "), "{line}");
        assert!(line.contains(r#"--data '{"prompt":"benchmark test","user_id":1}'"#), "{line}");
        assert!(line.contains("--client tcp --daemon-pid 42 --json /r.json --threads 1 --quiet"), "{line}");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/tmp/x.sock"), "/tmp/x.sock");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
