//! The soak's other processes: mock-llm and the daemon, each started by path,
//! logged to a file, and stopped by pid.

use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::config::{SoakBackend, SoakConfig};
use crate::compare::launch::{shell_quote, Endpoint, DAEMON_ENVIRONMENT};
use crate::compare::process::Child;

/// How long mock-llm may take to print its URL and the daemon to make its socket.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const STARTUP_POLL: Duration = Duration::from_millis(20);

/// A bearer token, so requests carry `Authorization` as real ones do.
const API_KEY: &str = "sk-handoff-soak";

/// Backend connections beyond one per stream for HTTP/1.1 (streams being replaced).
const HTTP1_SPARE_CONNECTIONS: u64 = 256;

/// The daemon drains this long on SIGTERM: the load has ended by then.
const DRAIN_SECS: u64 = 5;

fn log_file(path: &Path) -> Result<File, String> {
    File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))
}

/// The arguments and their display form (for the summary).
pub struct Started {
    pub child: Child,
    pub command_line: String,
}

fn display(program: &Path, args: &[String]) -> String {
    std::iter::once(shell_quote(&program.display().to_string()))
        .chain(args.iter().map(|a| shell_quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts mock-llm and waits for its `listening on URL` line.
pub async fn start_mock_llm(config: &SoakConfig) -> Result<(Started, Endpoint), String> {
    let ca = config.out_dir.join("mock-ca.pem");
    let mut args = vec![
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--token-delay-ms".to_owned(),
        config.delay_ms.to_string(),
        "--tokens".to_owned(),
        config.tokens.to_string(),
    ];
    if config.backend == SoakBackend::H2tls {
        args.extend(["--tls".to_owned(), "--cert-out".to_owned(), ca.display().to_string()]);
    }
    if let Some(threads) = config.mock_threads {
        args.extend(["--threads".to_owned(), threads.to_string()]);
    }
    let log = config.out_dir.join("mock-llm.log");
    let mut command = Command::new(&config.mock_llm);
    command.args(&args).stdout(Stdio::piped()).stderr(log_file(&log)?);
    let mut child = Child::spawn("mock-llm", command).map_err(|e| e.to_string())?;
    let stdout = child.take_stdout().ok_or("mock-llm's stdout was not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = match tokio::time::timeout(STARTUP_TIMEOUT, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) | Ok(Err(_)) => {
            return Err(format!("mock-llm exited before it listened (see {})", log.display()))
        }
        Err(_) => return Err(format!("mock-llm did not listen within {STARTUP_TIMEOUT:?}")),
    };
    // Later stdout lines (none are expected) must not block mock-llm on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ca = (config.backend == SoakBackend::H2tls).then_some(ca);
    let endpoint = Endpoint::from_listening_line(&line, ca)
        .ok_or_else(|| format!("mock-llm's first line {line:?} names no URL"))?;
    let command_line = display(&config.mock_llm, &args);
    Ok((Started { child, command_line }, endpoint))
}

/// The daemon's flags for this soak.
pub fn daemon_args(config: &SoakConfig, socket: &Path, endpoint: &Endpoint) -> Vec<String> {
    let mut args: Vec<String> = [
        "-s",
        &socket.display().to_string(),
        "-b",
        "openai",
        "--openai-base",
        &endpoint.base_url,
        "--openai-http2",
        if config.backend == SoakBackend::H2tls { "true" } else { "false" },
        "--max-connections",
        &config.max_connections().to_string(),
        "--first-byte-timeout",
        &config.first_byte_timeout.as_secs().to_string(),
        "--retry-after",
        &config.retry_pause.as_secs().max(1).to_string(),
        "--drain-timeout",
        &DRAIN_SECS.to_string(),
        "--benchmark",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(ca) = &endpoint.ca_file {
        args.extend(["--openai-ca".to_owned(), ca.display().to_string()]);
    }
    if config.backend == SoakBackend::Http1 {
        let connections = config.concurrency + HTTP1_SPARE_CONNECTIONS;
        args.extend(["--backend-connections".to_owned(), connections.to_string()]);
    }
    if let Some(threads) = config.daemon_threads {
        args.extend(["--threads".to_owned(), threads.to_string()]);
    }
    args
}

/// Starts the daemon and waits for its socket.
pub async fn start_daemon(
    config: &SoakConfig,
    socket: &Path,
    endpoint: &Endpoint,
) -> Result<Started, String> {
    let args = daemon_args(config, socket, endpoint);
    let log = config.out_dir.join("daemon.log");
    let mut command = Command::new(&config.daemon);
    command.args(&args).stdout(log_file(&log)?).stderr(log_file(&config.out_dir.join("daemon.err"))?);
    for name in DAEMON_ENVIRONMENT {
        command.env_remove(name);
    }
    command.env("OPENAI_API_KEY", API_KEY);
    let mut child = Child::spawn("daemon", command).map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + STARTUP_TIMEOUT;
    while !socket.exists() {
        if let Some(status) = child.exited() {
            return Err(format!("the daemon exited at start ({status}); see {}", log.display()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "the daemon made no socket at {} within {STARTUP_TIMEOUT:?}",
                socket.display()
            ));
        }
        tokio::time::sleep(STARTUP_POLL).await;
    }
    Ok(Started { child, command_line: display(&config.daemon, &args) })
}
