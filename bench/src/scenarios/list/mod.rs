//! The scenarios, grouped by the part of the contract they check, and what they share.

pub mod activation;
pub mod attachments;
pub mod backend;
pub mod cancel;
pub mod flow;
pub mod formats;
pub mod guard;
pub mod handoffs;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod mock;
pub mod named;
pub mod operating;
pub mod pacing;
pub mod patterns;
pub mod records;
pub mod request;
pub mod sharing;

use std::time::Duration;

use super::{content_events, Context, Daemon, DaemonCommand, Event};
use crate::mockllm::{MockLlm, MockLlmConfig};

/// The bearer token the daemon is given (and must forward).
pub const API_KEY: &str = "sk-scenario-0123456789";

/// How the daemon reaches mock-llm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `http://` with `--openai-http2 false`.
    Http1,
    /// `http://`: HTTP/2 with prior knowledge.
    H2c,
    /// `https://` with ALPN `h2`, trusting mock-llm's CA through `--openai-ca`.
    Tls,
}

/// Starts mock-llm for `transport` with the given stream shape.
pub async fn start_mock(transport: Transport, tokens: u32, token_delay: Duration) -> MockLlm {
    start_mock_with(transport, MockLlmConfig { tokens, token_delay, ..MockLlmConfig::default() }).await
}

pub async fn start_mock_with(transport: Transport, config: MockLlmConfig) -> MockLlm {
    let config = MockLlmConfig { tls: transport == Transport::Tls, ..config };
    MockLlm::start(config).await.unwrap_or_else(|e| panic!("starting mock-llm: {e}"))
}

/// A daemon with `-b openai` pointed at `mock` over `transport`.
pub fn openai_daemon(cx: &Context, mock: &MockLlm, transport: Transport) -> DaemonCommand {
    with_openai_backend(cx, cx.daemon(), mock, transport)
}

/// One worker, whatever the list runs with: for scenarios that count one backend
/// pool's connections (each worker owns a pool of its own).
pub fn one_worker(command: DaemonCommand) -> DaemonCommand {
    command.args(["--threads", "1"])
}

/// `command` with `-b openai` pointed at `mock` over `transport`.
pub fn with_openai_backend(
    cx: &Context,
    command: DaemonCommand,
    mock: &MockLlm,
    transport: Transport,
) -> DaemonCommand {
    let mut command = command.args(["--backend", "openai", "--openai-base"]).arg(mock.base_url());
    command = command.env("OPENAI_API_KEY", API_KEY);
    match transport {
        Transport::Http1 => command.args(["--openai-http2", "false"]),
        Transport::H2c => command,
        Transport::Tls => {
            let pem = mock.ca_cert_pem().unwrap_or_else(|| panic!("mock-llm with TLS has a CA"));
            let ca = cx.scratch().write_file("mock-ca.pem", pem.as_bytes());
            command.arg("--openai-ca").arg(ca)
        }
    }
}

/// A daemon with the built-in mock backend and `delay_ms` between events.
pub fn mock_daemon(cx: &Context, delay_ms: u64) -> DaemonCommand {
    cx.daemon().args(["--backend", "mock", "--delay"]).arg(delay_ms.to_string())
}

/// Hands off a good request to a mock-backend daemon and checks the whole stream
/// arrives: the daemon is still serving.
pub async fn expect_mock_stream(daemon: &Daemon, data: &str) -> Vec<Event> {
    let response = daemon.hand_off(data).await.read_to_end().await;
    let events = response.expect_completed_stream();
    let indexes: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            Event::Indexed { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(indexes, (0..18).collect::<Vec<u64>>(), "mock events in {:?}", response.text());
    assert_eq!(content_events(&events), 18, "only indexed content events: {:?}", response.text());
    events
}

/// One case of a scenario that checks many things at once.
pub type Case = (String, std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>);

/// Runs every case concurrently (each on its own task) and fails with the list of
/// every case that failed, not only the first.
pub async fn run_cases(cases: Vec<Case>) {
    let total = cases.len();
    let running: Vec<_> = cases.into_iter().map(|(name, case)| (name, tokio::spawn(case))).collect();
    let mut failures = Vec::new();
    for (name, task) in running {
        if let Err(error) = task.await {
            let reason = match error.try_into_panic() {
                Ok(panic) => panic_message(&*panic),
                Err(error) => error.to_string(),
            };
            failures.push(format!("- {name}: {reason}"));
        }
    }
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Takes a shared daemon back once every case has finished with it.
pub fn sole_owner(daemon: std::sync::Arc<Daemon>) -> Daemon {
    std::sync::Arc::into_inner(daemon).unwrap_or_else(|| panic!("a case still holds the daemon"))
}
