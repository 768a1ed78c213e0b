use std::time::Duration;

use super::*;
use crate::config::OpenAiConfig;

fn settings(tables: Vec<(&str, BackendTable)>) -> Settings {
    Settings {
        backend: BackendKind::Openai,
        openai_base: "https://api.example.com/v1".to_owned(),
        openai_api_key: Some("sk-the-default-backends-key".to_owned()),
        openai_model: "default-model".to_owned(),
        first_byte_timeout: 7,
        backend_connections: 12,
        backends: tables.into_iter().map(|(name, table)| (name.to_owned(), table)).collect(),
        ..Settings::default()
    }
}

fn local(url: &str) -> BackendTable {
    BackendTable { base_url: Some(url.to_owned()), ..BackendTable::default() }
}

fn openai(named: &NamedBackend) -> &OpenAiConfig {
    match &named.backend {
        Backend::OpenAi(openai) => openai,
        Backend::Mock => panic!("{} is the mock", named.name),
    }
}

fn refusal(tables: Vec<(&str, BackendTable)>) -> String {
    let error = settings(tables).validate().expect_err("refused");
    assert_eq!(error.flag(), "backends");
    error.to_string()
}

#[test]
fn a_table_takes_the_flags_for_what_it_leaves_unset_but_never_the_default_backends_key() {
    let table = BackendTable {
        api_key: Some("sk-local-key-for-this-one".to_owned()),
        model: Some("llama".to_owned()),
        headers: vec![("X-Tenant".to_owned(), "a".to_owned())],
        idle_timeout: Some(300),
        ..local("http://127.0.0.1:8000/v1")
    };
    let config = settings(vec![("local", table), ("bare", local("http://10.0.0.2/v1"))]).validate().unwrap();
    assert_eq!(config.named_backends.len(), 2);
    let named = &config.named_backends[0];
    assert_eq!(named.name, "local");
    let local = openai(named);
    assert_eq!((local.base.host.as_str(), local.base.port), ("127.0.0.1", 8000));
    assert_eq!(local.api_key.as_deref(), Some("sk-local-key-for-this-one"));
    assert_eq!(local.default_model, "llama");
    assert_eq!(local.headers, [("X-Tenant".to_owned(), "a".to_owned())]);
    assert_eq!(named.stream.idle_timeout, Duration::from_secs(300), "its own");
    assert_eq!(named.stream.first_byte_timeout, Duration::from_secs(7), "the flag's");
    assert_eq!(named.pool.max_connections, 12, "the flag's");

    let bare = openai(&config.named_backends[1]);
    assert_eq!(bare.api_key, None, "the default backend's key is not sent to another URL");
    assert_eq!(bare.default_model, "default-model");
    assert!(bare.headers.is_empty());
    let default = match &config.backend {
        Backend::OpenAi(openai) => openai,
        Backend::Mock => panic!("the default is openai"),
    };
    assert!(default.headers.is_empty() && default.api_key.is_some(), "the default is as the flags say");
}

#[test]
fn a_table_sets_its_own_transport_and_pool() {
    let table = BackendTable {
        http2: Some(false),
        connections: Some(3),
        connect_timeout: Some(2),
        insecure_tls: true,
        ..local("https://10.0.0.3")
    };
    let config = settings(vec![("h1", table)]).validate().unwrap();
    let named = &config.named_backends[0];
    let h1 = openai(named);
    assert!(!h1.http2 && h1.insecure_tls && h1.base.tls);
    assert_eq!(named.pool.max_streams_per_connection, 1, "HTTP/1.1: one stream per connection");
    assert_eq!(named.pool.ping, None, "HTTP/1.1 has no PING");
    assert_eq!((named.pool.max_connections, named.pool.connect_timeout), (3, Duration::from_secs(2)));
    assert!(
        !openai(&settings(vec![("x", local("https://h"))]).validate().unwrap().named_backends[0])
            .insecure_tls
    );
}

#[test]
fn a_mock_table_needs_no_url() {
    let table = BackendTable { kind: Some(BackendKind::Mock), ..BackendTable::default() };
    let config = settings(vec![("demo", table)]).validate().unwrap();
    assert_eq!(config.named_backends[0].backend, Backend::Mock);
}

#[test]
fn a_handoff_picks_a_backend_by_name_and_an_unknown_name_is_refused() {
    let config = settings(vec![("a", local("http://a")), ("b", local("http://b"))]).validate().unwrap();
    let named = || config.named_backends.iter().map(|named| named.name.as_str());
    assert_eq!(select(named(), None), Ok(None));
    assert_eq!(select(named(), Some(DEFAULT_NAME)), Ok(None), "the flags' backend by its name");
    assert_eq!(select(named(), Some("b")), Ok(Some(1)));
    let error = select(named(), Some("c")).unwrap_err();
    assert_eq!(
        error,
        HandoffError::InvalidField { field: "backend", reason: "no backend is named \"c\"".to_owned() }
    );
    assert!(select([], Some("a")).is_err(), "with no tables, every name but default is unknown");
    let long = "x".repeat(10_000);
    assert!(select(named(), Some(&long)).unwrap_err().to_string().len() < 200, "a long name is cut");
}

#[test]
fn names_that_are_reserved_malformed_or_repeated_are_refused() {
    assert!(refusal(vec![("default", local("http://a"))]).contains("\"default\" is the name"));
    for name in ["", "a b", "naïve", "a/b", &"n".repeat(65)] {
        assert!(refusal(vec![(name, local("http://a"))]).contains("a name"), "{name:?}");
    }
    assert!(refusal(vec![("a", local("http://a")), ("a", local("http://b"))]).contains("given twice"));
    let many =
        (0..=MAX_BACKENDS).map(|i| (Box::leak(format!("b{i}").into_boxed_str()) as &str, local("http://a")));
    assert!(refusal(many.collect()).contains("more than 64"));
}

#[test]
fn tables_with_bad_values_are_refused_naming_table_and_key() {
    let refused = refusal(vec![("nourl", BackendTable::default())]);
    assert_eq!(refused, "[backends.nourl]: base_url is required for kind = \"openai\"");
    assert!(refusal(vec![("u", local("ftp://x"))]).starts_with("[backends.u]: base_url \"ftp://x\""));
    for (key, table) in [
        ("connect_timeout", BackendTable { connect_timeout: Some(0), ..local("http://a") }),
        ("idle_timeout", BackendTable { idle_timeout: Some(0), ..local("http://a") }),
        ("connections", BackendTable { connections: Some(0), ..local("http://a") }),
    ] {
        assert_eq!(refusal(vec![("t", table)]), format!("[backends.t]: {key} must be greater than zero"));
    }
}

#[test]
fn extra_headers_that_would_break_or_override_the_request_are_refused() {
    let with_header = |name: &str, value: &str| BackendTable {
        headers: vec![(name.to_owned(), value.to_owned())],
        ..local("http://a")
    };
    for (name, value) in [
        ("Authorization", "Bearer x"),
        ("x-request-id", "1"),
        ("Content-Length", "5"),
        ("Host", "elsewhere"),
        ("X-Ok", "line\r\nInjected: 1"),
        ("Bad Name", "v"),
    ] {
        assert!(refusal(vec![("h", with_header(name, value))]).starts_with("[backends.h]: header"), "{name}");
    }
    let headers = (0..=MAX_HEADERS).map(|i| (format!("X-H{i}"), "v".to_owned())).collect();
    assert!(refusal(vec![("h", BackendTable { headers, ..local("http://a") })]).contains("more than 32"));
    assert!(settings(vec![("h", with_header("api-key", "azure-style"))]).validate().is_ok());
}

#[test]
fn the_key_never_shows_in_debug() {
    let table = BackendTable { api_key: Some("sk-secret-in-a-table".to_owned()), ..local("http://a") };
    assert!(!format!("{table:?}").contains("sk-secret"));
    let config = settings(vec![("a", table)]).validate().unwrap();
    assert!(!format!("{:?}", config.named_backends).contains("sk-secret"));
}

fn passthrough_table(paths: &[&str]) -> BackendTable {
    BackendTable {
        kind: Some(BackendKind::Passthrough),
        paths: paths.iter().map(|path| (*path).to_owned()).collect(),
        ..local("http://127.0.0.1:2024")
    }
}

fn handoff(json: &str) -> Handoff {
    crate::handoff::decode(json.as_bytes()).unwrap()
}

#[test]
fn a_passthrough_backend_takes_the_handoffs_body_and_a_path_under_its_prefixes() {
    let config = settings(vec![("agent", passthrough_table(&["/runs/", "/threads/"]))]).validate().unwrap();
    let agent = openai(&config.named_backends[0]);
    assert_eq!(agent.passthrough.as_deref(), Some(&["/runs/".to_owned(), "/threads/".to_owned()][..]));
    let ok = handoff(r#"{"body":{"assistant_id":"a","input":{}},"path":"/runs/stream"}"#);
    assert_eq!(check_handoff(Some(agent), &ok), Ok(()));
    assert_eq!(request_path(agent, &ok), "/runs/stream");
    let no_path = handoff(r#"{"body":{}}"#);
    assert_eq!(check_handoff(Some(agent), &no_path), Ok(()));
    assert_eq!(request_path(agent, &no_path), "", "the base URL's own path");
    for (json, field, reason) in [
        (r#"{"path":"/runs/stream"}"#, "body", "required"),
        (r#"{"body":{},"path":"/assistants"}"#, "path", "not under"),
        (r#"{"body":{},"path":"/runs/../assistants"}"#, "path", ".."),
        (r#"{"body":{},"path":"/runs/%2e%2e/x"}"#, "path", ".."),
        (r#"{"body":{},"path":"runs/stream"}"#, "path", "start with /"),
        (r#"{"body":{},"path":"/runs/a b"}"#, "path", "character"),
    ] {
        match check_handoff(Some(agent), &handoff(json)) {
            Err(HandoffError::InvalidField { field: got, reason: why }) => {
                assert_eq!(got, field, "{json}");
                assert!(why.contains(reason), "{json}: {why}");
            }
            other => panic!("{json}: {other:?}"),
        }
    }
    let body_not_object = crate::handoff::decode(br#"{"body":[1]}"#).unwrap_err();
    assert!(matches!(body_not_object, HandoffError::InvalidField { field: "body", .. }));

    // A chat backend (or the mock) takes neither field.
    let chat = settings(vec![]).validate().unwrap();
    let Backend::OpenAi(chat) = &chat.backend else { panic!("openai") };
    assert!(check_handoff(Some(chat), &ok).is_err());
    assert!(check_handoff(None, &handoff(r#"{"path":"/x"}"#)).is_err());
    assert_eq!(request_path(chat, &ok), "/v1/chat/completions", "a chat backend's path is its own");
}

#[test]
fn paths_are_for_passthrough_tables_only_and_are_checked() {
    let wrong_kind = BackendTable { paths: vec!["/runs/".into()], ..local("http://a") };
    assert!(refusal(vec![("p", wrong_kind)]).contains("only for kind = \"passthrough\""));
    assert!(refusal(vec![("p", passthrough_table(&["runs"]))]).contains("must start with /"));
    let no_url = BackendTable { kind: Some(BackendKind::Passthrough), ..BackendTable::default() };
    assert!(refusal(vec![("p", no_url)]).contains("base_url is required for kind = \"passthrough\""));
}

#[test]
fn a_handoff_names_its_backend_with_a_string() {
    let decoded = crate::handoff::decode(br#"{"backend":"local"}"#).unwrap();
    assert_eq!(decoded.backend.as_deref(), Some("local"));
    assert_eq!(crate::handoff::decode(br#"{"backend":""}"#).unwrap().backend, None);
    let error = crate::handoff::decode(br#"{"backend":7}"#).unwrap_err();
    assert!(matches!(error, HandoffError::InvalidField { field: "backend", .. }), "{error:?}");
}

#[test]
fn a_tables_per_user_limit_is_its_own_and_the_global_one_is_the_settings() {
    let limited = BackendTable { max_streams_per_user: Some(3), ..local("http://127.0.0.1:8000/v1") };
    let mut settings = settings(vec![("limited", limited), ("bare", local("http://10.0.0.2/v1"))]);
    settings.max_streams_per_user = 5;
    let config = settings.validate().unwrap();
    assert_eq!(config.max_streams_per_user, 5);
    assert_eq!(config.named_backends[0].max_streams_per_user, 3);
    assert_eq!(config.named_backends[1].max_streams_per_user, 0, "not inherited from the global limit");
    assert_eq!(Settings::default().validate().unwrap().max_streams_per_user, 0, "off by default");
}
