//! The config file's `[backends.NAME]` tables, read into core's
//! [`BackendTable`]s (core validates them with the rest of the settings).
//!
//! A key is never written in the file itself: `api_key_env` names an
//! environment variable and `api_key_file` a file holding it, read here at
//! start, so the config file can stay readable by more than the daemon.

use std::path::PathBuf;

use handoff_core::backends::BackendTable;
use handoff_core::config::BackendKind;
use toml::Value;

use super::{line_of, Problem};

/// Keys a table may have; anything else is refused, so a typo is not ignored.
const KEYS: &[&str] = &[
    "kind",
    "base_url",
    "api_key_env",
    "api_key_file",
    "model",
    "headers",
    "http2",
    "include_usage",
    "record_text",
    "streams_per_connection",
    "connections",
    "connect_timeout",
    "first_byte_timeout",
    "idle_timeout",
    "total_timeout",
    "insecure_tls",
    "ca",
    "paths",
    "max_streams_per_user",
];

/// Reads the `backends` value (a table of tables) found at `line`, in the file's
/// order of table headers. `env` looks up environment variables (the process's,
/// or a test's).
pub(super) fn read(
    text: &str,
    line: usize,
    value: Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, BackendTable)>, Problem> {
    let at = |line: usize, key: Option<String>, message: String| Problem { line: Some(line), key, message };
    let Value::Table(tables) = value else {
        return Err(at(line, Some("backends".into()), "expected tables: [backends.NAME]".into()));
    };
    let mut read = Vec::with_capacity(tables.len());
    for (name, table) in tables {
        let line = table_line(text, &name).unwrap_or(line);
        let key_of = |key: &str| Some(format!("backends.{name}.{key}"));
        let Value::Table(table) = table else {
            return Err(at(line, Some(format!("backends.{name}")), "expected a table".into()));
        };
        let mut out = BackendTable::default();
        for (key, value) in table {
            let problem = |message: String| at(line, key_of(&key), message);
            if !KEYS.contains(&key.as_str()) {
                let message = if key == "api_key" {
                    "a key is not written in the config file: use api_key_env or api_key_file".to_owned()
                } else {
                    format!("unknown key (expected one of: {})", KEYS.join(", "))
                };
                return Err(problem(message));
            }
            match key.as_str() {
                "kind" => {
                    let kind = string(&value).map_err(problem)?;
                    out.kind = Some(kind.parse::<BackendKind>().map_err(|error| problem(error.to_string()))?);
                }
                "base_url" => out.base_url = Some(string(&value).map_err(problem)?),
                "model" => out.model = Some(string(&value).map_err(problem)?),
                "ca" => out.ca = Some(PathBuf::from(string(&value).map_err(problem)?)),
                "api_key_env" | "api_key_file" if out.api_key.is_some() => {
                    return Err(problem("give api_key_env or api_key_file, not both".into()));
                }
                "api_key_env" => {
                    let variable = string(&value).map_err(problem)?;
                    let key = env(&variable).filter(|key| !key.is_empty());
                    out.api_key =
                        Some(key.ok_or_else(|| problem(format!("{variable} is not set or empty")))?);
                }
                "api_key_file" => {
                    let path = string(&value).map_err(problem)?;
                    let text = std::fs::read_to_string(&path)
                        .map_err(|error| problem(format!("{path}: {error}")))?;
                    // A file written by `echo` ends with a newline that is no part of the key.
                    let key = text.trim_end_matches(['\n', '\r']).to_owned();
                    if key.is_empty() {
                        return Err(problem(format!("{path} is empty")));
                    }
                    out.api_key = Some(key);
                }
                "headers" => {
                    let Value::Table(headers) = value else {
                        return Err(problem("expected a table of header names to values".into()));
                    };
                    for (header, value) in headers {
                        let value = string(&value).map_err(|message| at(line, key_of("headers"), message))?;
                        out.headers.push((header, value));
                    }
                }
                "paths" => {
                    let Value::Array(items) = value else {
                        return Err(problem("expected a list of path prefixes".into()));
                    };
                    for item in items {
                        out.paths.push(string(&item).map_err(|message| at(line, key_of("paths"), message))?);
                    }
                }
                "http2" => out.http2 = Some(boolean(&value).map_err(problem)?),
                "include_usage" => out.include_usage = Some(boolean(&value).map_err(problem)?),
                "record_text" => out.record_text = Some(boolean(&value).map_err(problem)?),
                "insecure_tls" => out.insecure_tls = boolean(&value).map_err(problem)?,
                "streams_per_connection" => {
                    out.streams_per_connection = Some(number(&value).map_err(problem)?)
                }
                "connections" => out.connections = Some(number(&value).map_err(problem)?),
                "connect_timeout" => out.connect_timeout = Some(number(&value).map_err(problem)?),
                "first_byte_timeout" => out.first_byte_timeout = Some(number(&value).map_err(problem)?),
                "idle_timeout" => out.idle_timeout = Some(number(&value).map_err(problem)?),
                "total_timeout" => out.total_timeout = Some(number(&value).map_err(problem)?),
                "max_streams_per_user" => out.max_streams_per_user = Some(number(&value).map_err(problem)?),
                _ => return Err(problem("unknown key".into())),
            }
        }
        read.push((line, name, out));
    }
    // The file's order, not the parser's (alphabetical).
    read.sort_by_key(|(line, _, _)| *line);
    Ok(read.into_iter().map(|(_, name, table)| (name, table)).collect())
}

/// The line of `[backends.NAME]` (quoted or not), when it can be found.
fn table_line(text: &str, name: &str) -> Option<usize> {
    let headers = [format!("[backends.{name}]"), format!("[backends.\"{name}\"]")];
    let offset = text
        .lines()
        .scan(0, |offset, line| {
            let start = *offset;
            *offset += line.len() + 1;
            Some((start, line.trim()))
        })
        .find(|(_, line)| headers.iter().any(|header| line.starts_with(header.as_str())))
        .map(|(start, _)| start)?;
    Some(line_of(text, offset))
}

fn string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        other => Err(format!("expected a string, not {}", other.type_str())),
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(flag) => Ok(*flag),
        other => Err(format!("expected true or false, not {}", other.type_str())),
    }
}

fn number<T: TryFrom<i64>>(value: &Value) -> Result<T, String> {
    match value {
        Value::Integer(number) => T::try_from(*number).map_err(|_| format!("{number} is out of range")),
        other => Err(format!("expected a whole number, not {}", other.type_str())),
    }
}
