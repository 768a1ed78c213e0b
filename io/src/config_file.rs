//! `--config FILE`: a TOML file that sets any flag by its long name
//! (`max-connections = 20000`, `socket = "/run/handoff/handoff.sock"`; `_` may
//! stand for `-`).
//!
//! Precedence is flags > environment > file > defaults. The command line is
//! parsed once as usual; every file key whose flag came from neither the command
//! line nor the environment is then appended as `--key=value` and the whole line
//! parsed again, so clap's own parsers and the usual validation judge file values
//! exactly as they judge flags. Each value is first checked on its own (with the
//! environment ignored), so a bad one is reported with the file, line and key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

mod backends;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use handoff_core::backends::BackendTable;
use handoff_core::config::ConfigError;
use toml::Spanned;

/// The flag that names the file; it cannot be set inside it.
const CONFIG_ID: &str = "config";

/// A file that could not be used: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    /// 1-based; `None` when the whole file is at fault (unreadable).
    pub line: Option<usize>,
    /// The key as written in the file.
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

/// One key of the file, checked against its flag.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Setting {
    /// The key as written.
    key: String,
    /// The flag's clap id (the `Cli` field name).
    id: String,
    line: usize,
    /// What it adds to the command line (nothing for `benchmark = false`).
    args: Vec<OsString>,
}

/// The file values that were used, for naming their line when validation of the
/// merged configuration refuses one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub path: PathBuf,
    used: Vec<Setting>,
    /// The `[backends.NAME]` tables, keys read, in the file's order.
    pub backends: NamedTables,
}

impl Applied {
    /// The line and key of the file value behind `flag` (`--max-connections`),
    /// when the file set it.
    pub fn origin(&self, flag: &str) -> Option<(usize, &str)> {
        let long = flag.strip_prefix("--")?;
        self.used
            .iter()
            .find(|setting| setting.key.replace('_', "-") == long)
            .map(|setting| (setting.line, setting.key.as_str()))
    }

    /// `error` as the operator should read it: with the file, line and key when
    /// the refused value came from the file.
    pub fn describe(&self, error: &ConfigError) -> String {
        match self.origin(error.flag()) {
            Some((line, key)) => format!("{}:{line}: key `{key}`: {error}", self.path.display()),
            None => error.to_string(),
        }
    }
}

/// `error` with its origin in the file when there was one.
pub fn describe(applied: Option<&Applied>, error: &ConfigError) -> String {
    applied.map_or_else(|| error.to_string(), |applied| applied.describe(error))
}

/// When `matches` (parsed from `argv` by `command`) name a config file, reads it
/// and returns the matches with its values merged under flags and environment.
pub fn apply(
    command: &Command,
    argv: &[OsString],
    matches: ArgMatches,
) -> Result<(ArgMatches, Option<Applied>), FileError> {
    let Some(path) = matches.get_one::<PathBuf>(CONFIG_ID).cloned() else {
        return Ok((matches, None));
    };
    let text = std::fs::read_to_string(&path).map_err(|error| FileError {
        path: path.clone(),
        line: None,
        key: None,
        message: format!("reading the config file: {error}"),
    })?;
    let env = |name: &str| std::env::var(name).ok();
    let (settings, backends) = parse(command, &text, &env).map_err(|problem| problem.in_file(&path))?;
    let (merged, used) =
        merge(command, argv, &matches, settings).map_err(|problem| problem.in_file(&path))?;
    Ok((merged, Some(Applied { path, used, backends })))
}

/// A problem found in the text, before the file's path is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    line: Option<usize>,
    key: Option<String>,
    message: String,
}

impl Problem {
    fn in_file(self, path: &Path) -> FileError {
        FileError { path: path.to_owned(), line: self.line, key: self.key, message: self.message }
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&byte| byte == b'\n').count() + 1
}

/// The `[backends.NAME]` tables by name, in the file's order.
type NamedTables = Vec<(String, BackendTable)>;

/// Every key of `text`, each checked against its flag in `command`, in file order;
/// and the `[backends.NAME]` tables.
fn parse(
    command: &Command,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<Setting>, NamedTables), Problem> {
    let table: BTreeMap<Spanned<String>, Spanned<toml::Value>> =
        toml::from_str(text).map_err(|error| Problem {
            line: error.span().map(|span| line_of(text, span.start)),
            key: None,
            message: format!("not valid TOML: {}", error.message().trim_end()),
        })?;
    let mut entries: Vec<_> = table.into_iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    // Values are checked without the environment, which must not fail them.
    let checker = command.clone().mut_args(|arg| arg.env(None::<&'static str>));
    let mut settings: Vec<Setting> = Vec::with_capacity(entries.len());
    let mut tables = Vec::new();
    // `[records]` keys are the `records-*` flags (`file` is `--records-file`).
    let mut keys = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let line = line_of(text, key.span().start);
        let value_line = line_of(text, value.span().start);
        let key = key.into_inner();
        match (key.as_str(), value.into_inner()) {
            ("records", toml::Value::Table(records)) => {
                for (name, value) in records {
                    let long = format!("records-{}", name.replace('_', "-"));
                    keys.push((format!("records.{name}"), long, line, line, value));
                }
            }
            ("records", other) => {
                let message = format!("expected a [records] table, not {}", other.type_str());
                return Err(Problem { line: Some(line), key: Some(key), message });
            }
            (_, value) => keys.push((key.clone(), key.replace('_', "-"), line, value_line, value)),
        }
    }
    for (key, long, line, value_line, value) in keys {
        if key == "backends" {
            tables = backends::read(text, line, value, env)?;
            continue;
        }
        let problem = |message: String| Problem { line: Some(line), key: Some(key.clone()), message };
        let Some(arg) = command.get_arguments().find(|arg| arg.get_long() == Some(long.as_str())) else {
            return Err(problem("unknown key: it names no flag (see --help)".to_owned()));
        };
        let id = arg.get_id().as_str().to_owned();
        if id == CONFIG_ID {
            return Err(problem("cannot be set in the config file".to_owned()));
        }
        if let Some(earlier) = settings.iter().find(|setting| setting.id == id) {
            return Err(problem(format!("set twice (also on line {} as `{}`)", earlier.line, earlier.key)));
        }
        let args = match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(true)) => vec![OsString::from(format!("--{long}"))],
            (ArgAction::SetTrue, toml::Value::Boolean(false)) => Vec::new(),
            (ArgAction::SetTrue, _) => return Err(problem("expected true or false".to_owned())),
            (_, toml::Value::String(text)) => vec![OsString::from(format!("--{long}={text}"))],
            (_, toml::Value::Integer(number)) => vec![OsString::from(format!("--{long}={number}"))],
            (_, toml::Value::Boolean(flag)) => vec![OsString::from(format!("--{long}={flag}"))],
            (_, toml::Value::Float(number)) => vec![OsString::from(format!("--{long}={number}"))],
            // A repeatable flag takes a list: each item as if the flag were repeated.
            (ArgAction::Append, toml::Value::Array(items)) => {
                let mut args = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        toml::Value::String(text) => args.push(OsString::from(format!("--{long}={text}"))),
                        toml::Value::Integer(number) => {
                            args.push(OsString::from(format!("--{long}={number}")))
                        }
                        other => {
                            return Err(Problem {
                                line: Some(value_line),
                                key: Some(key.clone()),
                                message: format!(
                                    "expected a list of names or numbers, not of {}",
                                    other.type_str()
                                ),
                            })
                        }
                    }
                }
                args
            }
            (_, other) => {
                return Err(Problem {
                    line: Some(value_line),
                    key: Some(key.clone()),
                    message: format!("expected a string, number or boolean, not {}", other.type_str()),
                })
            }
        };
        let mut argv = vec![OsString::from(command.get_name())];
        argv.extend(args.iter().cloned());
        if let Err(error) = checker.clone().try_get_matches_from(argv) {
            return Err(problem(clap_message(&error)));
        }
        settings.push(Setting { key, id, line, args });
    }
    Ok((settings, tables))
}

/// clap's message without its `error: ` prefix and usage hint.
fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// `argv` with the file's settings added for every flag the command line and
/// environment left at its default, parsed again; and the settings used.
fn merge(
    command: &Command,
    argv: &[OsString],
    matches: &ArgMatches,
    settings: Vec<Setting>,
) -> Result<(ArgMatches, Vec<Setting>), Problem> {
    let mut merged = argv.to_vec();
    let mut used = Vec::new();
    for setting in settings {
        let overridden = matches!(
            matches.value_source(&setting.id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !overridden {
            merged.extend(setting.args.iter().cloned());
            used.push(setting);
        }
    }
    let matches = command.clone().try_get_matches_from(merged).map_err(|error| Problem {
        line: None,
        key: None,
        message: clap_message(&error),
    })?;
    Ok((matches, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::{CommandFactory, FromArgMatches};
    use handoff_core::config::LogFormat;

    fn command() -> Command {
        Cli::command().name("handoff")
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("handoff").chain(args.iter().copied()).map(OsString::from).collect()
    }

    /// Parses `args` with the file `text` merged in (environment as this process has it).
    fn merged(text: &str, args: &[&str]) -> Result<(Cli, Vec<Setting>), Problem> {
        let command = command();
        let argv = argv(args);
        let matches = command.clone().try_get_matches_from(&argv).expect("flags parse");
        let settings = parse(&command, text, &|_| None)?.0;
        let (matches, used) = merge(&command, &argv, &matches, settings)?;
        Ok((Cli::from_arg_matches(&matches).expect("merged flags parse"), used))
    }

    #[test]
    fn every_kind_of_value_sets_its_flag() {
        let text = "\
# the socket
socket = \"/run/handoff/handoff.sock\"
max-connections = 20000
openai_http2 = false
benchmark = true
log-format = \"json\"
socket-group = \"www-data\"
h2-connection-window = 1048576
";
        let (cli, used) = merged(text, &[]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/run/handoff/handoff.sock"));
        assert_eq!(cli.max_connections, 20_000);
        assert!(!cli.openai_http2);
        assert!(cli.benchmark);
        assert_eq!(cli.log_format, LogFormat::Json);
        assert_eq!(cli.socket_group.as_deref(), Some("www-data"));
        assert_eq!(cli.h2_connection_window, Some(1_048_576));
        let lines: Vec<_> = used.iter().map(|setting| (setting.key.as_str(), setting.line)).collect();
        assert_eq!(lines[0], ("socket", 2));
        assert_eq!(lines[2], ("openai_http2", 4), "an underscore key keeps its spelling");
        assert_eq!(used.len(), 7);
    }

    #[test]
    fn a_repeatable_flag_takes_a_list_or_one_value() {
        let (cli, used) = merged("allow-uid = [\"www-data\", 0]\nallow-gid = \"33\"\n", &[]).unwrap();
        assert_eq!(cli.allow_uid, ["www-data", "0"]);
        assert_eq!(cli.allow_gid, ["33"]);
        assert_eq!(used.len(), 2);
        let (cli, _) = merged("allow-uid = []\n", &[]).unwrap();
        assert!(cli.allow_uid.is_empty(), "an empty list allows nobody in particular");
        let (cli, _) = merged("allow-uid = [\"www-data\"]\n", &["--allow-uid", "7"]).unwrap();
        assert_eq!(cli.allow_uid, ["7"], "flags replace the file's list, not add to it");
        let error = merged("delay = 1\nallow-uid = [true]\n", &[]).unwrap_err();
        assert_eq!((error.line, error.key.as_deref()), (Some(2), Some("allow-uid")));
        assert!(error.message.contains("list of names or numbers"), "{error:?}");
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let (cli, used) =
            merged("max-connections = 20000\ndelay = 7\n", &["--max-connections", "5"]).unwrap();
        assert_eq!(cli.max_connections, 5, "the flag wins");
        assert_eq!(cli.delay, 7, "the file beats the default");
        assert_eq!(used.len(), 1, "only the file value used is reported");
        let (cli, _) = merged("benchmark = false\n", &["--benchmark"]).unwrap();
        assert!(cli.benchmark, "a false in the file does not clear a flag");
    }

    #[test]
    fn unknown_keys_are_refused_with_line_and_key() {
        let error = merged("delay = 1\n\nmax-conections = 5\n", &[]).unwrap_err();
        assert_eq!(error.line, Some(3));
        assert_eq!(error.key.as_deref(), Some("max-conections"));
        assert!(error.message.contains("unknown key"), "{error:?}");
        let error = merged("config = \"/etc/other.toml\"\n", &[]).unwrap_err();
        assert_eq!(error.line, Some(1));
        assert!(error.message.contains("cannot be set"), "{error:?}");
        for text in ["help = true\n", "version = true\n"] {
            let error = merged(text, &[]).unwrap_err();
            assert_eq!(error.line, Some(1), "{text}");
            assert!(error.message.contains("unknown key"), "{text}: {error:?}");
        }
    }

    #[test]
    fn bad_values_are_refused_with_line_and_key() {
        let cases = [
            ("delay = \"soon\"\n", 1, "delay", "soon"),
            ("\n\nbackend = \"gpt\"\n", 3, "backend", "gpt"),
            ("threads = -1\n", 1, "threads", "-1"),
            ("benchmark = \"yes\"\n", 1, "benchmark", "true or false"),
            ("socket-type = 3\n", 1, "socket-type", "3"),
            ("delay = 1.5\n", 1, "delay", "1.5"),
            ("openai-http2 = \"maybe\"\n", 1, "openai-http2", "maybe"),
        ];
        for (text, line, key, shown) in cases {
            let error = merged(text, &[]).unwrap_err();
            assert_eq!((error.line, error.key.as_deref()), (Some(line), Some(key)), "{text}");
            assert!(error.message.contains(shown), "{text}: {error:?}");
        }
        let error = merged("a = 1\n[section]\nb = 2\n", &[]).unwrap_err();
        assert_eq!((error.line, error.key.as_deref()), (Some(1), Some("a")), "keys are checked in order");
        let error = merged("delay = 1\nsocket = [\"x\"]\n", &[]).unwrap_err();
        assert_eq!((error.line, error.key.as_deref()), (Some(2), Some("socket")));
        assert!(error.message.contains("array"), "{error:?}");
    }

    #[test]
    fn a_table_a_duplicate_and_broken_toml_are_refused() {
        let error = merged("delay = 1\n\n[server]\nsocket = \"x\"\n", &[]).unwrap_err();
        assert_eq!((error.line, error.key.as_deref()), (Some(3), Some("server")), "{error:?}");
        let error = merged("max-connections = 1\nmax_connections = 2\n", &[]).unwrap_err();
        assert_eq!((error.line, error.key.as_deref()), (Some(2), Some("max_connections")));
        assert!(error.message.contains("line 1"), "{error:?}");
        let error = merged("delay = 1\nsocket = \"unterminated\n", &[]).unwrap_err();
        assert_eq!(error.line, Some(2), "{error:?}");
        assert!(error.message.starts_with("not valid TOML"), "{error:?}");
    }

    #[test]
    fn the_records_table_sets_the_records_flags_and_refuses_an_inline_secret() {
        let text = "delay = 1\n\n[records]\nfile = \"/var/log/handoff/records.jsonl\"\nfsync_ms = 250\n\
                    webhook = \"unix:/run/app.sock:/hook\"\nspool_dir = \"/var/spool/handoff\"\n";
        let (cli, _) = merged(text, &[]).unwrap();
        let records = cli.into_settings().records;
        assert_eq!(records.file.as_deref(), Some(Path::new("/var/log/handoff/records.jsonl")));
        assert_eq!((records.fsync_ms, records.webhook.as_deref()), (250, Some("unix:/run/app.sock:/hook")));
        let error = merged("[records]\nwebhook_secret = \"s3cret\"\n", &[]).unwrap_err();
        assert_eq!(
            (error.line, error.key.as_deref()),
            (Some(1), Some("records.webhook_secret")),
            "{error:?}"
        );
        let error = merged("[records]\nfsync_ms = \"soon\"\n", &[]).unwrap_err();
        assert_eq!(error.key.as_deref(), Some("records.fsync_ms"), "{error:?}");
        let error = merged("records = 3\n", &[]).unwrap_err();
        assert!(error.message.contains("[records] table"), "{error:?}");
    }

    #[test]
    fn a_refused_merged_value_names_its_line() {
        let (cli, used) = merged("delay = 1\nkeep-alive = 0\n", &[]).unwrap();
        let applied = Applied { path: PathBuf::from("/etc/handoff.toml"), used, backends: Vec::new() };
        let error = cli.into_config().unwrap_err();
        assert_eq!(
            applied.describe(&error),
            "/etc/handoff.toml:2: key `keep-alive`: --keep-alive must be greater than zero"
        );
        // Set by a flag, the file's line is not blamed.
        let (cli, used) = merged("delay = 1\nkeep-alive = 5\n", &["--keep-alive", "0"]).unwrap();
        let applied = Applied { path: PathBuf::from("/etc/handoff.toml"), used, backends: Vec::new() };
        let error = cli.into_config().unwrap_err();
        assert_eq!(applied.describe(&error), "--keep-alive must be greater than zero");
        assert_eq!(describe(None, &error), "--keep-alive must be greater than zero");
    }

    #[test]
    fn the_file_error_names_path_line_and_key() {
        let error = Problem { line: Some(4), key: Some("delay".into()), message: "bad".into() }
            .in_file(Path::new("/etc/h.toml"));
        assert_eq!(error.to_string(), "/etc/h.toml:4: key `delay`: bad");
        let error = Problem { line: None, key: None, message: "gone".into() }.in_file(Path::new("/x"));
        assert_eq!(error.to_string(), "/x: gone");
    }

    /// The example in packaging/ shows every key, commented out at its default.
    #[test]
    fn the_packaged_example_names_every_flag_at_its_default() {
        let example = include_str!("../../packaging/handoff.toml");
        let uncommented: String = example
            .lines()
            .filter_map(|line| line.strip_prefix("# "))
            .filter(|line| line.split_once(" = ").is_some_and(|(key, _)| !key.contains(' ')))
            .map(|line| format!("{line}\n"))
            .collect();
        let command = command();
        let settings =
            parse(&command, &uncommented, &|_| None).unwrap_or_else(|problem| panic!("{problem:?}")).0;
        let mut missing = Vec::new();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == CONFIG_ID {
                continue;
            }
            let Some(setting) = settings.iter().find(|setting| setting.id == id) else {
                missing.push(id.to_owned());
                continue;
            };
            let default = arg.get_default_values().first().and_then(|value| value.to_str());
            if let (Some(default), ArgAction::Set) = (default, arg.get_action()) {
                let long = arg.get_long().unwrap_or(id);
                assert_eq!(
                    setting.args,
                    [OsString::from(format!("--{long}={default}"))],
                    "{long}'s shown default"
                );
            }
        }
        assert!(missing.is_empty(), "keys missing from packaging/handoff.toml: {missing:?}");
        assert!(!uncommented.contains("[redacted]"));
    }

    #[test]
    fn apply_without_a_config_flag_changes_nothing() {
        let command = command();
        let argv = argv(&["--delay", "3"]);
        let matches = command.clone().try_get_matches_from(&argv).unwrap();
        let (matches, applied) = apply(&command, &argv, matches).unwrap();
        assert!(applied.is_none());
        assert_eq!(matches.get_one::<u64>("delay"), Some(&3));
    }

    #[test]
    fn apply_reads_the_named_file_and_reports_an_unreadable_one() {
        let dir = std::env::temp_dir().join(format!("handoff-config-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("handoff.toml");
        std::fs::write(&path, "delay = 9\n").unwrap();
        let command = command();
        let run = |args: &[&str]| {
            let argv = argv(args);
            let matches = command.clone().try_get_matches_from(&argv).unwrap();
            apply(&command, &argv, matches)
        };
        let path_text = path.to_str().unwrap();
        let (matches, applied) = run(&["--config", path_text]).unwrap();
        assert_eq!(matches.get_one::<u64>("delay"), Some(&9));
        assert_eq!(applied.unwrap().origin("--delay"), Some((1, "delay")));
        let missing = dir.join("missing.toml");
        let error = run(&["--config", missing.to_str().unwrap()]).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(error.path, missing);
        assert!(error.to_string().starts_with(&format!("{}: reading the config file", missing.display())));
    }

    /// The tables of `text`, with `env` as the environment.
    fn tables(text: &str, env: &[(&str, &str)]) -> Result<Vec<(String, BackendTable)>, Problem> {
        let lookup =
            |name: &str| env.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned());
        parse(&command(), text, &lookup).map(|(_, tables)| tables)
    }

    #[test]
    fn backend_tables_are_read_in_file_order_with_their_keys_from_env_or_file() {
        let key_file = std::env::temp_dir().join(format!("handoff-key-{}", std::process::id()));
        std::fs::write(&key_file, "sk-from-a-file-0123\n").unwrap();
        let text = format!(
            "\
max-connections = 10

[backends.zeta]
base_url = \"http://127.0.0.1:8000/v1\"
api_key_env = \"ZETA_KEY\"
model = \"llama\"
http2 = false
connections = 4
idle_timeout = 300
headers = {{ X-Tenant = \"a\", X-Team = \"b\" }}

[backends.alpha]
kind = \"mock\"

[backends.files]
base_url = \"https://api.example.com/v1\"
api_key_file = \"{}\"
insecure_tls = true
ca = \"/etc/ssl/extra.pem\"
",
            key_file.display()
        );
        let read = tables(&text, &[("ZETA_KEY", "sk-from-the-env-0123")]).unwrap();
        let _ = std::fs::remove_file(&key_file);
        let names: Vec<&str> = read.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "files"], "the file's order");
        let zeta = &read[0].1;
        assert_eq!(zeta.api_key.as_deref(), Some("sk-from-the-env-0123"));
        assert_eq!(
            (zeta.model.as_deref(), zeta.http2, zeta.connections, zeta.idle_timeout),
            (Some("llama"), Some(false), Some(4), Some(300))
        );
        assert_eq!(
            zeta.headers,
            [("X-Team".to_owned(), "b".to_owned()), ("X-Tenant".to_owned(), "a".to_owned())]
        );
        assert_eq!(read[1].1.kind, Some(handoff_core::config::BackendKind::Mock));
        let files = &read[2].1;
        assert_eq!(
            files.api_key.as_deref(),
            Some("sk-from-a-file-0123"),
            "the trailing newline is not part of the key"
        );
        assert!(files.insecure_tls);
        assert_eq!(files.ca.as_deref(), Some(std::path::Path::new("/etc/ssl/extra.pem")));
    }

    #[test]
    fn max_streams_per_user_is_a_top_level_key_and_a_backend_tables_key() {
        let text = "max_streams_per_user = 2\n\n[backends.slow]\nkind = \"mock\"\nmax_streams_per_user = 1\n";
        let (cli, _) = merged(text, &[]).unwrap();
        assert_eq!(cli.max_streams_per_user, 2);
        let (cli, _) = merged(text, &["--max-streams-per-user", "7"]).unwrap();
        assert_eq!(cli.max_streams_per_user, 7, "the flag wins");
        let read = tables(text, &[]).unwrap();
        assert_eq!(read[0].1.max_streams_per_user, Some(1));
        let negative = tables("[backends.a]\nkind = \"mock\"\nmax_streams_per_user = -1\n", &[]).unwrap_err();
        assert!(negative.message.contains("out of range"), "{negative:?}");
        let top = merged("max_streams_per_user = \"lots\"\n", &[]).unwrap_err();
        assert_eq!(top.key.as_deref(), Some("max_streams_per_user"));
    }

    #[test]
    fn backend_tables_with_an_inline_key_a_missing_key_or_an_unknown_key_are_refused() {
        let refused = |text: &str| tables(text, &[]).unwrap_err();
        let inline = refused("[backends.a]\nbase_url = \"http://a\"\napi_key = \"sk-x\"\n");
        assert_eq!((inline.line, inline.key.as_deref()), (Some(1), Some("backends.a.api_key")));
        assert!(inline.message.contains("api_key_env or api_key_file"), "{inline:?}");
        let unset = refused("delay = 1\n\n[backends.b]\napi_key_env = \"NOT_SET_ANYWHERE\"\n");
        assert_eq!(unset.line, Some(3), "the table's line: {unset:?}");
        assert!(unset.message.contains("NOT_SET_ANYWHERE is not set"), "{unset:?}");
        let typo = refused("[backends.c]\nbase_ur = \"http://c\"\n");
        assert!(typo.message.starts_with("unknown key"), "{typo:?}");
        let wrong = refused("[backends.d]\nconnections = \"four\"\n");
        assert!(wrong.message.contains("whole number"), "{wrong:?}");
        let missing = refused("[backends.e]\napi_key_file = \"/nonexistent/key\"\n");
        assert!(missing.message.contains("/nonexistent/key"), "{missing:?}");
        let flat = refused("backends = 3\n");
        assert!(flat.message.contains("[backends.NAME]"), "{flat:?}");
    }
}
