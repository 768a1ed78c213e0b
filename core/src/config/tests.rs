//! Validation of [`Settings`] as an embedder builds them, without a command line
//! (the flags themselves are tested where they are defined, in handoff-io's `cli`).

use super::*;

fn with(change: impl FnOnce(&mut Settings)) -> Result<Config, ConfigError> {
    let mut settings = Settings::default();
    change(&mut settings);
    settings.validate()
}

#[test]
fn the_defaults_validate_into_the_documented_config() {
    let config = Settings::default().validate().unwrap();
    assert_eq!(config.socket_path, PathBuf::from(defaults::SOCKET));
    assert_eq!(config.socket_mode, 0o660);
    assert_eq!(config.socket_type, SocketType::Seqpacket);
    assert_eq!(config.socket_origin, SocketOrigin::Bound);
    assert_eq!(config.max_streams, defaults::MAX_CONNECTIONS);
    assert_eq!(config.backend, Backend::Mock);
    assert_eq!(config.stream.mock_delay, Duration::from_millis(defaults::MOCK_DELAY_MS));
    assert_eq!(config.stream.write_timeout, Duration::from_secs(defaults::WRITE_TIMEOUT_SECS));
    assert_eq!(config.pool.max_connections, defaults::BACKEND_CONNECTIONS);
    assert_eq!(config.metrics, None);
}

#[test]
fn every_refused_value_names_its_flag() {
    type Change = fn(&mut Settings);
    let cases: [(Change, &str); 8] = [
        (|s| s.mode = "rw".into(), "--mode"),
        (|s| s.idle_timeout = 0, "--idle-timeout"),
        (|s| s.retry_after = 0, "--retry-after"),
        (|s| s.max_connections = 0, "--max-connections"),
        (|s| s.client_buffer = MIN_CLIENT_BUFFER - 1, "--client-buffer"),
        (|s| s.h2_stream_window = u64::from(MAX_H2_WINDOW) + 1, "--h2-stream-window"),
        (|s| s.h2_connection_window = Some(1), "--h2-connection-window"),
        (|s| s.metrics_addr = Some("nope".into()), "--metrics-addr"),
    ];
    for (change, flag) in cases {
        let error = with(change).expect_err(flag);
        assert_eq!(error.flag(), flag, "{error}");
    }
}

#[test]
fn an_openai_backend_takes_its_url_key_and_model() {
    let config = with(|s| {
        s.backend = BackendKind::Openai;
        s.openai_base = "http://127.0.0.1:8080/v1".into();
        s.openai_api_key = Some(String::new());
        s.openai_model = "m".into();
        s.openai_http2 = false;
    })
    .unwrap();
    let Backend::OpenAi(openai) = config.backend else { panic!("an openai backend") };
    assert_eq!(
        (openai.base.host.as_str(), openai.base.port, openai.base.path.as_str()),
        ("127.0.0.1", 8080, "/v1")
    );
    assert_eq!(openai.api_key, None, "an empty key counts as none");
    assert_eq!(openai.default_model, "m");
    assert_eq!(config.pool.max_streams_per_connection, 1, "HTTP/1.1 carries one stream per connection");
    let bad = with(|s| {
        s.backend = BackendKind::Openai;
        s.openai_base = "ftp://x".into();
    });
    assert!(matches!(bad, Err(ConfigError::BadUrl { .. })));
}

#[test]
fn debug_shows_that_there_is_a_key_never_the_key() {
    let settings = Settings { openai_api_key: Some("sk-secret-value".into()), ..Settings::default() };
    let shown = format!("{settings:?}");
    assert!(!shown.contains("sk-secret-value"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

#[test]
fn enum_names_parse_back_and_unknown_names_say_what_is_accepted() {
    for name in BackendKind::NAMES {
        assert_eq!(name.parse::<BackendKind>().map(BackendKind::name), Ok(*name));
    }
    for name in SocketType::NAMES {
        assert_eq!(name.parse::<SocketType>().map(SocketType::name), Ok(*name));
    }
    for name in LogFormat::NAMES {
        assert_eq!(name.parse::<LogFormat>().map(LogFormat::name), Ok(*name));
    }
    let error = "xml".parse::<LogFormat>().unwrap_err().to_string();
    assert_eq!(error, r#"unknown log format "xml" (expected one of: text, json)"#);
}

#[test]
fn backend_connections_idle_out_and_probe_as_the_flags_say() {
    let config = Settings::default().validate().unwrap();
    assert_eq!(config.pool.idle_timeout, Duration::from_secs(defaults::BACKEND_IDLE_TIMEOUT_SECS));
    let keepalive = crate::pool::TcpKeepalive {
        idle: Duration::from_secs(30),
        interval: Duration::from_secs(10),
        probes: 3,
    };
    assert_eq!(config.pool.tcp_keepalive, Some(keepalive));

    let changed = with(|s| {
        s.backend_idle_timeout = 5;
        s.backend_tcp_keepalive = 2;
    })
    .unwrap();
    assert_eq!(changed.pool.idle_timeout, Duration::from_secs(5));
    let short = changed.pool.tcp_keepalive.unwrap();
    assert_eq!(
        (short.idle, short.interval),
        (Duration::from_secs(2), Duration::from_secs(1)),
        "probes at least a second apart"
    );
    assert_eq!(
        with(|s| s.backend_tcp_keepalive = 0).unwrap().pool.tcp_keepalive,
        None,
        "0 turns keepalive off"
    );
    assert_eq!(with(|s| s.backend_idle_timeout = 0).unwrap_err().flag(), "--backend-idle-timeout");
}

#[test]
fn idle_http2_backend_connections_are_pinged_as_the_flags_say_and_http1_ones_never() {
    let openai = |change: fn(&mut Settings)| {
        with(|s| {
            s.backend = BackendKind::Openai;
            change(s);
        })
    };
    let default = crate::pool::PingConfig {
        interval: Duration::from_secs(defaults::BACKEND_PING_INTERVAL_SECS),
        timeout: Duration::from_secs(defaults::BACKEND_PING_TIMEOUT_SECS),
    };
    assert_eq!(openai(|s| s.openai_http2 = true).unwrap().pool.ping, Some(default));
    let changed = openai(|s| {
        s.openai_http2 = true;
        s.backend_ping_interval = 5;
        s.backend_ping_timeout = 2;
    })
    .unwrap();
    let ping = changed.pool.ping.map(|p| (p.interval, p.timeout));
    assert_eq!(ping, Some((Duration::from_secs(5), Duration::from_secs(2))));
    assert_eq!(openai(|s| s.openai_http2 = false).unwrap().pool.ping, None, "HTTP/1.1 has no PING");
    let off = openai(|s| {
        s.openai_http2 = true;
        s.backend_ping_interval = 0;
    });
    assert_eq!(off.unwrap().pool.ping, None, "0 turns pings off");
    assert_eq!(with(|s| s.backend_ping_timeout = 0).unwrap_err().flag(), "--backend-ping-timeout");
}

#[test]
fn a_unix_base_url_names_the_socket_and_the_http_path_after_it() {
    let url = parse_base_url("unix:/run/llm/llm.sock:/v1/").unwrap();
    assert_eq!(url.unix.as_deref(), Some(std::path::Path::new("/run/llm/llm.sock")));
    assert_eq!((url.host.as_str(), url.tls, url.path.as_str()), ("localhost", false, "/v1"));
    assert_eq!(url.completions_path(), "/v1/chat/completions");
    assert_eq!(url.authority(), "localhost", "the Host header");
    let bare = parse_base_url("unix:/run/llm.sock").unwrap();
    assert_eq!((bare.unix.as_deref(), bare.path.as_str()), (Some(std::path::Path::new("/run/llm.sock")), ""));
    assert!(matches!(parse_base_url("unix:run/llm.sock"), Err(ConfigError::BadUrl { .. })), "relative");
    assert!(matches!(parse_base_url("unix:/s.sock:/v1?x=1"), Err(ConfigError::BadUrl { .. })));
    assert_eq!(parse_base_url("https://api.example.com/v1").unwrap().unix, None);
}
