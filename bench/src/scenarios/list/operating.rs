//! Running the daemon as an operator does: JSON logs, a config file under the
//! environment and flags, refusals that say where the mistake is, the socket's
//! owner and group, and an API key that never reaches a log line or an error.
//! (Names start with `operating_` so `cargo test --test scenarios operating` picks
//! them out: test names carry no module path.)

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::{expect_mock_stream, mock_daemon, start_mock, Transport};
use crate::scenarios::daemon::EXIT_PATIENCE;
use crate::scenarios::{Context, Daemon, DaemonCommand};

/// Every line of `log` as a JSON object; panics naming the first line that is not.
fn json_lines(log: &str) -> Vec<serde_json::Map<String, Value>> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            Ok(other) => panic!("a log line is JSON but not an object: {other}"),
            Err(error) => panic!("a log line is not JSON ({error}): {line:?}\nwhole log: {log}"),
        })
        .collect()
}

/// The first JSON log line whose message is `message`.
fn line_with_message<'a>(
    lines: &'a [serde_json::Map<String, Value>],
    message: &str,
) -> &'a serde_json::Map<String, Value> {
    lines
        .iter()
        .find(|line| line.get("message").and_then(Value::as_str) == Some(message))
        .unwrap_or_else(|| panic!("no {message:?} line in {lines:#?}"))
}

fn mode_of(path: &Path) -> u32 {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) => panic!("{}: {e}", path.display()),
    }
}

/// Stops the daemon cleanly and returns everything it wrote. (Scenarios serve a
/// handoff first: a daemon accepts before its signal handlers are installed, so
/// a SIGTERM at once could meet the default action.)
async fn stop_and_collect(mut daemon: Daemon) -> (String, String) {
    daemon.signal_terminate();
    daemon.expect_clean_exit().await;
    (daemon.stderr(), daemon.stdout())
}

pub async fn operating_json_log_lines_parse_with_level_message_and_fields(cx: Context) {
    let daemon = mock_daemon(&cx, 1).args(["--log-format", "json"]).start().await;
    expect_mock_stream(&daemon, r#"{"prompt":"log me as JSON"}"#).await;
    let socket = daemon.socket().display().to_string();
    let (log, _) = stop_and_collect(daemon).await;
    let lines = json_lines(&log);
    assert!(lines.len() >= 3, "starting, listening and stopping lines at least: {log}");
    for line in &lines {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line.get(field).and_then(Value::as_str).is_some(), "no string {field:?} in {line:?}");
        }
        assert!(!line.contains_key("fields"), "fields are flattened to the top level: {line:?}");
        let level = line.get("level").and_then(Value::as_str).unwrap_or_default();
        assert!(["INFO", "WARN", "ERROR"].contains(&level), "the default filter holds: {line:?}");
    }
    let listening = line_with_message(&lines, "listening");
    assert_eq!(listening.get("socket").and_then(Value::as_str), Some(socket.as_str()), "{listening:?}");
    assert_eq!(listening.get("backend").and_then(Value::as_str), Some("mock"), "{listening:?}");
    assert_eq!(listening.get("level").and_then(Value::as_str), Some("INFO"));
    assert!(listening
        .get("target")
        .and_then(Value::as_str)
        .is_some_and(|target| target.starts_with("handoff_")));
    let starting = line_with_message(&lines, "starting");
    assert!(starting.get("workers").and_then(Value::as_u64).is_some_and(|n| n >= 1), "{starting:?}");
    assert!(!log.contains('\u{1b}'), "no colour codes in JSON: {log:?}");
}

/// Whether `log` is JSON lines (every line parses) rather than text.
fn is_json_log(log: &str) -> bool {
    let mut lines = log.lines().filter(|line| !line.trim().is_empty()).peekable();
    lines.peek().is_some()
        && lines.all(|line| serde_json::from_str::<Value>(line).is_ok_and(|v| v.is_object()))
}

pub async fn operating_config_file_sits_under_environment_and_flags(cx: Context) {
    // `log_format` (with `_`) and `mode` have no flag or variable set here, so the
    // file's values are used; `log-format` has an environment variable to beat it.
    let file = cx.scratch().write_file(
        "handoff.toml",
        b"# written by the scenario\nmode = \"0640\"\nlog_format = \"json\"\ndelay = 1\n",
    );
    let from_file = mock_daemon(&cx, 1).arg("--config").arg(&file);
    // mock_daemon passes --delay: a flag beats the file, and the file's is valid too.
    let from_file = from_file.socket(cx.scratch().path("file.sock")).start().await;
    assert_eq!(mode_of(from_file.socket()), 0o640, "the file's mode is used");
    expect_mock_stream(&from_file, r#"{"prompt":"configured by file"}"#).await;
    let (log, _) = stop_and_collect(from_file).await;
    assert!(is_json_log(&log), "the file's log format is used: {log}");
    let lines = json_lines(&log);
    let read = line_with_message(&lines, "read the config file");
    assert_eq!(read.get("config").and_then(Value::as_str), file.to_str(), "{read:?}");

    // HANDOFF_CONFIG names the file as --config does; HANDOFF_LOG_FORMAT beats it.
    let env_wins = cx
        .daemon()
        .socket(cx.scratch().path("env.sock"))
        .env("HANDOFF_CONFIG", &file)
        .env("HANDOFF_LOG_FORMAT", "text")
        .start()
        .await;
    assert_eq!(mode_of(env_wins.socket()), 0o640, "the file named by HANDOFF_CONFIG is read");
    expect_mock_stream(&env_wins, r#"{"prompt":"file by environment"}"#).await;
    let (log, _) = stop_and_collect(env_wins).await;
    assert!(!is_json_log(&log) && log.contains("listening"), "the environment beats the file: {log}");

    let flag_wins = cx
        .daemon()
        .socket(cx.scratch().path("flag.sock"))
        .args(["--log-format", "json", "--mode", "0600", "--config"])
        .arg(&file)
        .env("HANDOFF_LOG_FORMAT", "text")
        .start()
        .await;
    assert_eq!(mode_of(flag_wins.socket()), 0o600, "the flag beats the file");
    expect_mock_stream(&flag_wins, r#"{"prompt":"flags first"}"#).await;
    let (log, _) = stop_and_collect(flag_wins).await;
    assert!(is_json_log(&log), "the flag beats the environment: {log}");
}

/// Spawns `command`, which must refuse to start: exit status 2, nothing bound.
async fn expect_refusal(command: DaemonCommand) -> String {
    let mut daemon = command.spawn();
    let status = daemon.wait_exit(EXIT_PATIENCE).await;
    assert_eq!(status.code(), Some(2), "a refused configuration exits 2, not {status}: {}", daemon.stderr());
    assert!(std::fs::symlink_metadata(daemon.socket()).is_err(), "nothing was bound");
    daemon.stderr()
}

pub async fn operating_config_file_mistakes_name_file_line_and_key(cx: Context) {
    let cases: [(&str, &[u8], &str, &[&str]); 4] = [
        (
            "unknown.toml",
            b"delay = 1\n\nmax-conections = 20000\n",
            ":3: key `max-conections`",
            &["unknown key"],
        ),
        ("bad-type.toml", b"# comment\nmax_connections = \"many\"\n", ":2: key `max_connections`", &["many"]),
        ("bad-enum.toml", b"backend = \"gpt\"\n", ":1: key `backend`", &["gpt"]),
        // Accepted by the flag's parser, refused by validation: still located.
        (
            "zero.toml",
            b"delay = 1\nlinger = 5\nkeep-alive = 0\n",
            ":3: key `keep-alive`",
            &["greater than zero"],
        ),
    ];
    for (name, text, location, words) in cases {
        let file = cx.scratch().write_file(name, text);
        let message = expect_refusal(cx.daemon().arg("--config").arg(&file)).await;
        let expected = format!("{}{location}", file.display());
        assert!(message.contains(&expected), "{name}: {expected:?} in {message:?}");
        for word in words {
            assert!(message.contains(word), "{name}: {word:?} in {message:?}");
        }
    }
    let missing = cx.scratch().path("missing.toml");
    let message = expect_refusal(cx.daemon().arg("--config").arg(&missing)).await;
    assert!(message.contains(&missing.display().to_string()), "the missing file is named: {message:?}");
}

/// `(name, id)` of each entry in a passwd- or group-format file.
fn accounts(path: &str) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            (!name.is_empty() && !name.starts_with('#')).then(|| (name.to_owned(), id))
        })
        .collect()
}

/// An account this process may give the socket to, by name where it has one:
/// as root any but root's (`daemon` when there is one), otherwise its own.
fn chown_target(database: &str, own: u32, is_root: bool) -> (String, u32) {
    let entries = accounts(database);
    if is_root {
        let pick = entries.iter().find(|(name, id)| name == "daemon" && *id != 0);
        let pick = pick.or_else(|| entries.iter().find(|(_, id)| *id != 0));
        pick.cloned().unwrap_or_else(|| panic!("{database} has no account but root's"))
    } else {
        let name = entries.iter().find(|(_, id)| *id == own).map(|(name, _)| name.clone());
        (name.unwrap_or_else(|| own.to_string()), own)
    }
}

pub async fn operating_socket_owner_and_group_are_applied_before_accepting(cx: Context) {
    let is_root = rustix::process::geteuid().is_root();
    let (group, gid) = chown_target("/etc/group", rustix::process::getegid().as_raw(), is_root);
    let (owner, uid) = chown_target("/etc/passwd", rustix::process::geteuid().as_raw(), is_root);
    let file = cx.scratch().write_file(
        "ownership.toml",
        format!("socket-group = \"{group}\"\nsocket_owner = \"{owner}\"\n").as_bytes(),
    );
    let daemon = mock_daemon(&cx, 1).arg("--config").arg(&file).start().await;
    let meta = std::fs::symlink_metadata(daemon.socket()).unwrap_or_else(|e| panic!("socket: {e}"));
    assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner {owner} and group {group} from the file");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660, "chown left the mode as configured");
    expect_mock_stream(&daemon, r#"{"prompt":"through a chowned socket"}"#).await;
    daemon.terminate().await;

    // By flag and by numeric id, the same.
    let numeric = mock_daemon(&cx, 1)
        .socket(cx.scratch().path("numeric.sock"))
        .args(["--socket-group", &gid.to_string(), "--mode", "0640"])
        .start()
        .await;
    let meta = std::fs::symlink_metadata(numeric.socket()).unwrap_or_else(|e| panic!("socket: {e}"));
    assert_eq!(meta.gid(), gid, "--socket-group {gid}");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    expect_mock_stream(&numeric, r#"{"prompt":"numeric group"}"#).await;
    numeric.terminate().await;

    for (flag, name, database) in [
        ("--socket-group", "no-such-group-h4nd0ff", "/etc/group"),
        ("--socket-owner", "no-such-user-h4nd0ff", "/etc/passwd"),
    ] {
        let mut refused =
            mock_daemon(&cx, 1).socket(cx.scratch().path("refused.sock")).args([flag, name]).spawn();
        let status = refused.wait_exit(EXIT_PATIENCE).await;
        assert!(!status.success(), "an unknown {flag} is refused, not {status}");
        let message = refused.stderr();
        for part in [flag, name, database] {
            assert!(message.contains(part), "{part:?} in {message:?}");
        }
        assert!(std::fs::symlink_metadata(refused.socket()).is_err(), "no socket file left for {flag}");
    }
}

/// Keys the leak check runs with: one shaped like OpenAI's (which the shape-based
/// redaction knows) and one a self-hosted backend might use (which only the
/// daemon's knowledge of its own key can catch).
const LEAK_KEYS: [&str; 2] =
    ["sk-proj-LeakCheck0123456789abcdefghijKLMN", "selfhosted-LeakCheck-7f3a9c2e1b5d4f60"];

/// A backend that fails in ways that quote the bearer token back, chosen by the
/// request's `X-Test-Pattern`: `unauthorized` (401 naming the key, as OpenAI's
/// does), `echo` (500 with the whole request head as plain text, as a
/// misconfigured proxy does), `echo-json` (500 with an OpenAI error quoting the
/// head), `stream-error` (200, then an error event naming the key).
struct LeakyBackend {
    address: std::net::SocketAddr,
    tokens: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LeakyBackend {
    async fn start() -> LeakyBackend {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap_or_else(|e| panic!("binding the leaky backend: {e}"));
        let address = listener.local_addr().unwrap_or_else(|e| panic!("leaky backend address: {e}"));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&tokens);
        // Runs until aborted when the backend is dropped.
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer_leakily(stream, Arc::clone(&seen)));
            }
        });
        LeakyBackend { address, tokens, task }
    }

    fn base_url(&self) -> String {
        format!("http://{}/v1", self.address)
    }

    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for LeakyBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head and `Content-Length` body, bounded in size and time)
/// and answers it as its pattern says, then closes.
async fn answer_leakily(mut stream: TcpStream, tokens: Arc<Mutex<Vec<String>>>) {
    const LIMIT: usize = 256 * 1024;
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        match timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && request.len() < LIMIT => request.extend_from_slice(&buf[..n]),
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines().find_map(|line| {
            let (field, value) = line.split_once(':')?;
            field.trim().eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    let length: usize = header("content-length").and_then(|value| value.parse().ok()).unwrap_or(0);
    while request.len() < head_end + length.min(LIMIT) {
        match timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => request.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let token = header("authorization").and_then(|value| value.strip_prefix("Bearer ").map(str::to_owned));
    let token = token.unwrap_or_default();
    tokens.lock().unwrap_or_else(PoisonError::into_inner).push(token.clone());
    let error = |message: String, kind: &str, code: &str| {
        serde_json::json!({ "error": { "message": message, "type": kind, "code": code } }).to_string()
    };
    let (status, content_type, body) = match header("x-test-pattern").as_deref() {
        Some("unauthorized") => (
            "401 Unauthorized",
            "application/json",
            error(format!("Incorrect API key provided: {token}. You can find your API key at https://platform.openai.com/account/api-keys."), "invalid_request_error", "invalid_api_key"),
        ),
        Some("echo") => ("500 Internal Server Error", "text/plain", format!("proxy error; your request was:\n{head}")),
        Some("echo-json") => (
            "500 Internal Server Error",
            "application/json",
            error(format!("upstream failed for request {head}"), &format!("key_{token}"), &token),
        ),
        _ => {
            let event = error(format!("quota exceeded for key {token}"), "insufficient_quota", &token);
            ("200 OK", "text/event-stream", format!("data: {event}\n\n"))
        }
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = timeout(Duration::from_secs(10), stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// Asserts `key`, or a telling part of it, is nowhere in `text`.
fn assert_no_key(key: &str, text: &str, what: &str) {
    let middle = &key[8..key.len() - 4];
    assert!(!text.contains(key), "the API key appears in {what}: {text}");
    assert!(!text.contains(middle), "part of the API key ({middle}) appears in {what}: {text}");
}

pub async fn operating_api_key_never_reaches_a_log_line_or_an_error(cx: Context) {
    let leaky = LeakyBackend::start().await;
    let mock = start_mock(Transport::H2c, 3, Duration::from_millis(1)).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"));
    let mut runs = 0;
    for format in ["text", "json"] {
        // Only some paths log below debug (h2 does, per frame), so this is
        // asked of a format's runs together.
        let mut traced = false;
        for key in LEAK_KEYS {
            runs += 1;
            // Each way in: the environment, a flag, and the config file.
            let key_file = cx
                .scratch()
                .write_file(&format!("key-{runs}.toml"), format!("openai-api-key = \"{key}\"\n").as_bytes());
            let daemons = [
                (
                    "an echoing HTTP/1.1 backend",
                    cx.daemon()
                        .args([
                            "--backend",
                            "openai",
                            "--openai-http2",
                            "false",
                            "--openai-base",
                            &leaky.base_url(),
                        ])
                        .env("OPENAI_API_KEY", key),
                    &["unauthorized", "echo", "echo-json", "stream-error"][..],
                ),
                (
                    "mock-llm over h2c",
                    cx.daemon().args([
                        "--backend",
                        "openai",
                        "--openai-base",
                        &mock.base_url(),
                        "--openai-api-key",
                        key,
                    ]),
                    &["status:401", "status:500", "text"][..],
                ),
                (
                    "a refused connection",
                    cx.daemon()
                        .args([
                            "--backend",
                            "openai",
                            "--openai-base",
                            &format!("http://{closed}/v1"),
                            "--config",
                        ])
                        .arg(&key_file),
                    &["text"][..],
                ),
            ];
            for (backend, command, patterns) in daemons {
                let what = format!("{backend} with --log-format {format}");
                let command = command
                    .socket(cx.scratch().path(&format!("leak-{runs}.sock")))
                    .args(["--log-format", format])
                    .env("RUST_LOG", "trace");
                let daemon = command.start().await;
                let mut responses = String::new();
                for pattern in patterns {
                    let data = serde_json::json!({ "prompt": "leak?", "test_pattern": pattern }).to_string();
                    let response = daemon.hand_off(data).await.read_to_end().await;
                    assert!(!response.bytes().is_empty(), "{what}, {pattern}: an answer");
                    responses.push_str(&response.text());
                }
                let (stderr, stdout) = stop_and_collect(daemon).await;
                let trace = if format == "json" { "\"level\":\"TRACE\"" } else { " TRACE " };
                traced |= stderr.contains(trace);
                if format == "json" {
                    json_lines(&stderr);
                }
                assert_no_key(key, &responses, &format!("the responses from {what}"));
                assert_no_key(key, &stderr, &format!("the log of {what}"));
                assert_no_key(key, &stdout, &format!("the output of {what}"));
            }
        }
        assert!(traced, "RUST_LOG=trace took effect in some --log-format {format} run");
    }
    // The key was really sent, so the checks above had something to find.
    let sent = leaky.tokens();
    for key in LEAK_KEYS {
        assert_eq!(
            sent.iter().filter(|token| *token == key).count(),
            8,
            "{key} sent 4 times per format: {sent:?}"
        );
    }
    let request = mock.recorder().last_request().unwrap_or_else(|| panic!("mock-llm saw no request"));
    assert!(request
        .header("authorization")
        .is_some_and(|value| LEAK_KEYS.iter().any(|key| value.ends_with(key))));
}
