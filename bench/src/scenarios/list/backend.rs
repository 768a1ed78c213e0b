//! How the daemon reaches its backend: TLS verification, configuration from the
//! environment, and a backend that is not there.

use std::time::Duration;

use super::{start_mock, Transport, API_KEY};
use crate::mockllm::{Protocol, Script};
use crate::scenarios::{content, Context};

const TOKEN_DELAY: Duration = Duration::from_millis(2);

pub async fn unreachable_backend_gets_error_event(cx: Context) {
    // A port that was just free: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"));
    let daemon = cx
        .daemon()
        .args(["--backend", "openai", "--openai-base"])
        .arg(format!("http://{closed}/v1"))
        .env("OPENAI_API_KEY", API_KEY)
        .start()
        .await;
    let response = daemon.hand_off(r#"{"prompt":"anyone?"}"#).await.read_to_end().await;
    let (events, error) = response.expect_failed_stream();
    assert_eq!(content(&events), "");
    assert!(!error.message.is_empty(), "the error says the backend is unreachable: {:?}", response.text());
    assert_eq!(error.error_type, "backend_unavailable", "{:?}", response.text());
    daemon.terminate().await;
}

pub async fn tls_is_verified_unless_insecure(cx: Context) {
    let mock = start_mock(Transport::Tls, 3, TOKEN_DELAY).await;
    let base = mock.base_url();
    // mock-llm's CA is in no system store: without --openai-ca the handshake must fail.
    let verifying = cx
        .daemon()
        .args(["--backend", "openai", "--openai-base", &base])
        .env("OPENAI_API_KEY", API_KEY)
        .start()
        .await;
    let response = verifying.hand_off(r#"{"prompt":"untrusted"}"#).await.read_to_end().await;
    let (_, error) = response.expect_failed_stream();
    assert_eq!(error.error_type, "backend_unavailable", "an unverifiable certificate: {:?}", response.text());
    assert_eq!(mock.recorder().requests(), 0, "no request went over an unverified connection");
    verifying.terminate().await;

    let insecure = cx
        .daemon()
        .args(["--backend", "openai", "--openai-base", &base, "--openai-insecure-ssl", "true"])
        .env("OPENAI_API_KEY", API_KEY)
        .start()
        .await;
    let response = insecure.hand_off(r#"{"prompt":"trust anything"}"#).await.read_to_end().await;
    let expected = Script::new(3, TOKEN_DELAY, None, None).expected_content();
    assert_eq!(content(&response.expect_completed_stream()), expected);
    insecure.terminate().await;
}

pub async fn environment_configures_the_backend(cx: Context) {
    let mock = start_mock(Transport::Http1, 3, TOKEN_DELAY).await;
    let daemon = cx
        .daemon()
        .args(["--backend", "openai"])
        .env("OPENAI_API_BASE", mock.base_url())
        .env("OPENAI_HTTP2_ENABLED", "false")
        .env("OPENAI_API_KEY", API_KEY)
        .start()
        .await;
    let response = daemon.hand_off(r#"{"prompt":"configured by environment"}"#).await.read_to_end().await;
    let expected = Script::new(3, TOKEN_DELAY, None, None).expected_content();
    assert_eq!(content(&response.expect_completed_stream()), expected);
    let request = mock.recorder().last_request().unwrap_or_else(|| panic!("mock-llm saw no request"));
    assert_eq!(request.protocol, Protocol::Http1, "OPENAI_HTTP2_ENABLED=false means HTTP/1.1");
    assert_eq!(request.header("authorization"), Some(format!("Bearer {}", API_KEY).as_str()));
    daemon.terminate().await;
}
