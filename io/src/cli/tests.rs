//! The flags as an operator types them: parsing, environment variables, and what
//! each becomes in the validated configuration.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use handoff_core::config::*;
use handoff_core::pool::PoolConfig;
use handoff_core::stream::StreamConfig;

use super::Cli;

fn cli(args: &[&str]) -> Cli {
    let mut argv = vec!["handoff"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("flags parse")
}

#[test]
fn defaults_match_the_design() {
    let config = cli(&[]).into_config().unwrap();
    assert_eq!(config.socket_path, PathBuf::from("/run/streaming-daemon.sock"));
    assert_eq!(config.socket_mode, 0o660);
    assert_eq!(config.socket_type, SocketType::Seqpacket);
    assert_eq!(config.max_streams, 50_000);
    assert_eq!(config.backend, Backend::Mock);
    assert_eq!(config.stream.mock_delay, Duration::from_millis(50));
    assert_eq!(config.stream.keep_alive_interval, Duration::from_secs(15));
    assert_eq!(config.drain_timeout, Duration::from_secs(30));
}

#[test]
fn one_worker_by_default_and_zero_means_one_per_two_cpus() {
    let default = cli(&[]).into_config().unwrap();
    assert_eq!([1, 2, 16].map(|cpus| default.workers(cpus)), [1, 1, 1]);
    let auto = cli(&["--threads", "0"]).into_config().unwrap();
    assert_eq!([1, 2, 3, 4, 16].map(|cpus| auto.workers(cpus)), [1, 1, 1, 2, 8]);
    assert_eq!(auto.workers(0), 1, "an unknown CPU count still starts a worker");
    let pinned = cli(&["--threads", "3"]).into_config().unwrap();
    assert_eq!(pinned.workers(2), 3);
}

#[test]
fn short_flags_work() {
    let config = cli(&["-s", "/tmp/x.sock", "-m", "600", "-d", "705", "-b", "mock"]).into_config().unwrap();
    assert_eq!(config.socket_path, PathBuf::from("/tmp/x.sock"));
    assert_eq!(config.socket_mode, 0o600);
    assert_eq!(config.stream.mock_delay, Duration::from_millis(705));
}

#[test]
fn mode_must_be_octal() {
    assert_eq!(parse_mode("0660").unwrap(), 0o660);
    assert_eq!(parse_mode("0o755").unwrap(), 0o755);
    assert!(matches!(parse_mode("0980"), Err(ConfigError::BadMode(_))));
    assert!(matches!(parse_mode("rw"), Err(ConfigError::BadMode(_))));
    assert!(matches!(parse_mode(""), Err(ConfigError::BadMode(_))));
    assert!(matches!(parse_mode("77777"), Err(ConfigError::BadMode(_))));
    assert!(cli(&["--mode", "9"]).into_config().is_err());
}

#[test]
fn streams_per_connection_are_clamped() {
    let per_conn = |n: &str| {
        cli(&["-b", "openai", "--h2-streams-per-connection", n])
            .into_config()
            .unwrap()
            .pool
            .max_streams_per_connection
    };
    assert_eq!(per_conn("1"), 10);
    assert_eq!(per_conn("250"), 250);
    assert_eq!(per_conn("5000"), 1000);
}

#[test]
fn http1_backend_carries_one_stream_per_connection() {
    let config = cli(&["-b", "openai", "--openai-http2", "false"]).into_config().unwrap();
    assert_eq!(config.pool.max_streams_per_connection, 1);
    let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
    assert!(!openai.http2);
}

#[test]
fn base_url_scheme_host_port_and_path() {
    let url = parse_base_url("https://api.openai.com/v1/").unwrap();
    assert_eq!(
        url,
        BaseUrl { tls: true, host: "api.openai.com".into(), port: 443, path: "/v1".into(), unix: None }
    );
    assert_eq!(url.authority(), "api.openai.com");
    assert_eq!(url.completions_path(), "/v1/chat/completions");

    let url = parse_base_url("http://127.0.0.1:8080").unwrap();
    assert_eq!((url.tls, url.port, url.path.as_str()), (false, 8080, ""));
    assert_eq!(url.authority(), "127.0.0.1:8080");
    assert_eq!(url.completions_path(), "/chat/completions");

    let url = parse_base_url("https://[::1]:8443/api").unwrap();
    assert_eq!(url.host, "::1");
    assert_eq!(url.authority(), "[::1]:8443");
}

#[test]
fn base_url_rejects_what_we_cannot_serve() {
    for url in [
        "ftp://x",
        "api.openai.com",
        "https://",
        "https://:443",
        "https://h:notaport",
        "https://h:0",
        "https://u:p@h",
        "https://h/v1?x=1",
        "https://[::1",
    ] {
        assert!(parse_base_url(url).is_err(), "{url} should be rejected");
    }
}

#[test]
fn zero_timeouts_are_rejected() {
    assert_eq!(cli(&["--keep-alive", "0"]).into_config(), Err(ConfigError::ZeroValue("--keep-alive")));
    assert_eq!(
        cli(&["--max-connections", "0"]).into_config(),
        Err(ConfigError::ZeroValue("--max-connections"))
    );
}

#[test]
fn the_flag_definitions_are_consistent() {
    use clap::CommandFactory;
    let mut command = Cli::command();
    command.clone().debug_assert();
    let help = command.render_long_help().to_string();
    for flag in [
        "--write-timeout",
        "--client-buffer",
        "--linger",
        "--receive-timeout",
        "--retry-after",
        "--connect-timeout",
        "--h2-stream-window",
        "--h2-connection-window",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn flow_control_and_timeout_defaults() {
    let config = cli(&[]).into_config().unwrap();
    assert_eq!(config.stream.write_timeout, Duration::from_secs(30));
    assert_eq!(config.stream.client_buffer, 64 * 1024);
    assert_eq!(config.stream.linger, Duration::from_secs(2));
    assert_eq!(config.receive_timeout, Duration::from_secs(5));
    assert_eq!(config.retry_after_secs, 1);
    assert_eq!(config.pool.connect_timeout, Duration::from_secs(10));
    assert_eq!(config.pool.h2_stream_window, 65_536);
    // The mock backend carries one stream per "connection".
    assert_eq!(config.pool.h2_connection_window, 65_536);

    let config = cli(&["-b", "openai"]).into_config().unwrap();
    assert_eq!(config.pool.max_streams_per_connection, 100);
    assert_eq!(config.pool.h2_connection_window, 100 * 65_536);
    // The flags' defaults are the machines' own defaults.
    assert_eq!(config.stream, StreamConfig::default());
    assert_eq!(config.pool, PoolConfig::default());
}

#[test]
fn each_new_flag_sets_its_field() {
    let config = cli(&[
        "-b",
        "openai",
        "--write-timeout",
        "7",
        "--client-buffer",
        "4096",
        "--linger",
        "3",
        "--receive-timeout",
        "9",
        "--retry-after",
        "4",
        "--connect-timeout",
        "11",
        "--h2-stream-window",
        "131072",
        "--h2-connection-window",
        "1048576",
    ])
    .into_config()
    .unwrap();
    assert_eq!(config.stream.write_timeout, Duration::from_secs(7));
    assert_eq!(config.stream.client_buffer, 4096);
    assert_eq!(config.stream.linger, Duration::from_secs(3));
    assert_eq!(config.receive_timeout, Duration::from_secs(9));
    assert_eq!(config.retry_after_secs, 4);
    assert_eq!(config.pool.connect_timeout, Duration::from_secs(11));
    assert_eq!(config.pool.h2_stream_window, 131_072);
    assert_eq!(config.pool.h2_connection_window, 1_048_576);
}

#[test]
fn the_default_connection_window_follows_streams_and_stream_window() {
    let window = |args: &[&str]| {
        let mut argv = vec!["-b", "openai"];
        argv.extend_from_slice(args);
        cli(&argv).into_config().unwrap().pool.h2_connection_window
    };
    assert_eq!(
        window(&["--h2-streams-per-connection", "200", "--h2-stream-window", "131072"]),
        200 * 131_072
    );
    // Clamped streams count, not the number given.
    assert_eq!(window(&["--h2-streams-per-connection", "1", "--h2-stream-window", "1000"]), 10 * 1000);
    // Capped at HTTP/2's largest window, which still holds one stream window.
    assert_eq!(window(&["--h2-stream-window", "2147483647"]), MAX_H2_WINDOW);
    // Over HTTP/1.1 there is one stream per connection.
    let config = cli(&["-b", "openai", "--openai-http2", "false", "--h2-stream-window", "5000"])
        .into_config()
        .unwrap();
    assert_eq!(config.pool.h2_connection_window, 5000);
}

#[test]
fn every_zero_timeout_is_rejected_by_name() {
    for flag in [
        "--write-timeout",
        "--linger",
        "--receive-timeout",
        "--connect-timeout",
        "--retry-after",
        "--first-byte-timeout",
        "--idle-timeout",
        "--total-timeout",
    ] {
        let error = cli(&[flag, "0"]).into_config().unwrap_err();
        assert_eq!(error, ConfigError::ZeroValue(flag));
        assert_eq!(error.to_string(), format!("{flag} must be greater than zero"));
    }
}

#[test]
fn windows_must_be_within_http2_range() {
    for flag in ["--h2-stream-window", "--h2-connection-window"] {
        for value in [0u64, 1 << 31, u64::from(u32::MAX) + 1] {
            let text = value.to_string();
            let error = cli(&[flag, &text]).into_config().unwrap_err();
            assert_eq!(error, ConfigError::WindowOutOfRange { flag, value });
            let message = error.to_string();
            assert!(message.starts_with(&format!("{flag} {value} ")), "{message}");
            assert!(message.contains("1..=2147483647"), "{message}");
        }
    }
    let config =
        cli(&["--h2-stream-window", "1", "--h2-connection-window", "2147483647"]).into_config().unwrap();
    assert_eq!((config.pool.h2_stream_window, config.pool.h2_connection_window), (1, MAX_H2_WINDOW));
}

#[test]
fn the_connection_window_holds_at_least_one_stream_window() {
    let error =
        cli(&["--h2-stream-window", "100000", "--h2-connection-window", "99999"]).into_config().unwrap_err();
    assert_eq!(error, ConfigError::ConnectionWindowBelowStreamWindow { connection: 99_999, stream: 100_000 });
    let message = error.to_string();
    assert!(
        message.contains("--h2-connection-window 99999") && message.contains("--h2-stream-window 100000")
    );
    // Equal is enough; below the default stream window is checked too.
    let config =
        cli(&["--h2-stream-window", "100000", "--h2-connection-window", "100000"]).into_config().unwrap();
    assert_eq!(config.pool.h2_connection_window, 100_000);
    assert!(matches!(
        cli(&["--h2-connection-window", "65535"]).into_config(),
        Err(ConfigError::ConnectionWindowBelowStreamWindow { connection: 65_535, stream: 65_536 })
    ));
}

#[test]
fn the_client_buffer_has_a_floor() {
    let error = cli(&["--client-buffer", "1023"]).into_config().unwrap_err();
    assert_eq!(error, ConfigError::ClientBufferTooSmall(1023));
    assert!(error.to_string().starts_with("--client-buffer 1023 "));
    assert_eq!(cli(&["--client-buffer", "0"]).into_config(), Err(ConfigError::ClientBufferTooSmall(0)));
    let config = cli(&["--client-buffer", "1024"]).into_config().unwrap();
    assert_eq!(config.stream.client_buffer, MIN_CLIENT_BUFFER);
}

#[test]
fn debug_never_shows_the_api_key() {
    const KEY: &str = "sk-proj-Zx9TESTKEYabcdefghijklmnopqrstuvwxyz0123456789";
    let cli = cli(&["-b", "openai", "--openai-api-key", KEY]);
    let config = cli.clone().into_config().unwrap();
    let Backend::OpenAi(openai) = &config.backend else { panic!("openai backend expected") };
    assert_eq!(openai.api_key.as_deref(), Some(KEY), "the key itself is kept");
    let printed = [
        format!("{cli:?}"),
        format!("{cli:#?}"),
        format!("{openai:?}"),
        format!("{:?}", config.backend),
        format!("{config:?}"),
        format!("{config:#?}"),
    ];
    for text in &printed {
        assert!(!text.contains(KEY), "key printed: {text}");
        assert!(!text.contains("Zx9TESTKEY"), "part of the key printed: {text}");
        assert!(text.contains("<redacted>"), "no sign of a key in {text}");
    }
    assert!(printed[0].contains("openai_api_key: Some(<redacted>)"));
    // Without a key, Debug says so.
    let mut no_key = cli;
    no_key.openai_api_key = None;
    assert!(format!("{no_key:?}").contains("openai_api_key: None"));
}

#[test]
fn log_format_and_socket_ownership_reach_the_config() {
    let config = cli(&[]).into_config().unwrap();
    assert_eq!(config.log_format, LogFormat::Text);
    assert_eq!((config.socket_owner, config.socket_group), (None, None));
    let config = cli(&["--log-format", "json", "--socket-owner", "handoff", "--socket-group", "33"])
        .into_config()
        .unwrap();
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.socket_owner.as_deref(), Some("handoff"));
    assert_eq!(config.socket_group.as_deref(), Some("33"));
    assert!(Cli::try_parse_from(["handoff", "--log-format", "xml"]).is_err());
}

#[test]
fn each_config_error_names_the_flag_it_refuses() {
    let refused = |args: &[&str]| cli(args).into_config().unwrap_err().flag();
    assert_eq!(refused(&["--mode", "9"]), "--mode");
    assert_eq!(refused(&["-b", "openai", "--openai-base", "ftp://x"]), "--openai-base");
    assert_eq!(refused(&["--linger", "0"]), "--linger");
    assert_eq!(refused(&["--h2-stream-window", "0"]), "--h2-stream-window");
    assert_eq!(refused(&["--h2-connection-window", "1"]), "--h2-connection-window");
    assert_eq!(refused(&["--client-buffer", "1"]), "--client-buffer");
    // Every name given is a real flag, so a caller can look it up.
    use clap::CommandFactory;
    let command = Cli::command();
    for flag in ["--mode", "--openai-base", "--h2-connection-window", "--client-buffer"] {
        let long = flag.trim_start_matches('-');
        assert!(command.get_arguments().any(|arg| arg.get_long() == Some(long)), "{flag}");
    }
}

#[test]
fn empty_api_key_counts_as_none() {
    let config = cli(&["-b", "openai", "--openai-api-key", ""]).into_config().unwrap();
    let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
    assert_eq!(openai.api_key, None);
}

#[test]
fn flags_mean_a_bound_socket_and_only_a_bound_socket_is_cleaned_up_on_stop() {
    let config = cli(&[]).into_config().unwrap();
    assert_eq!(config.socket_origin, SocketOrigin::Bound);
    let bound = SocketOrigin::Bound;
    assert!(bound.unlinks_on_stop() && bound.answers_backlog_on_stop() && bound.refuses_late_handoffs());
    let inherited = SocketOrigin::Inherited;
    assert!(!inherited.unlinks_on_stop(), "the next daemon accepts on the same path");
    assert!(!inherited.answers_backlog_on_stop(), "the queue is the next daemon's");
    assert!(!inherited.refuses_late_handoffs(), "an accepted handoff has nowhere else to go");
}

#[test]
fn allow_uid_and_gid_repeat_and_default_to_anyone() {
    let config =
        cli(&["--allow-uid", "www-data", "--allow-uid", "0", "--allow-gid", "33"]).into_config().unwrap();
    assert_eq!(config.allow_uids, ["www-data", "0"]);
    assert_eq!(config.allow_gids, ["33"]);
    let config = cli(&[]).into_config().unwrap();
    assert!(config.allow_uids.is_empty() && config.allow_gids.is_empty());
}

#[test]
fn user_id_as_user_is_off_unless_asked_and_reaches_the_request_defaults() {
    let config = cli(&["-b", "openai", "--openai-model", "m-1"]).into_config().unwrap();
    let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
    let defaults = openai.request_defaults();
    assert_eq!((defaults.default_model, defaults.user_from_user_id), ("m-1", false));
    let config = cli(&["-b", "openai", "--openai-user-from-user-id", "true"]).into_config().unwrap();
    let Backend::OpenAi(openai) = config.backend else { panic!("openai backend expected") };
    assert!(openai.request_defaults().user_from_user_id);
}
