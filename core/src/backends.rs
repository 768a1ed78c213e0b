//! Named backends: the `[backends.NAME]` tables of the config file, and the
//! handoff's `backend` field that picks one.
//!
//! The flags configure the default backend (named [`DEFAULT_NAME`]); each table
//! adds another, with its own URL, key, default model, extra request headers,
//! pool and timeouts. A table's unset fields take the flags' values, except the
//! key: a table's key is its own (`api_key_env` / `api_key_file`), never the
//! default backend's, so a key configured for one URL is never sent to another.
//! A handoff names the backend it wants; a name no table gives is refused with a
//! 400, never served by another backend. A handoff can name only what the
//! operator configured: it supplies no URL of its own.

use std::path::PathBuf;

use crate::config::{Backend, BackendKind, ConfigError, OpenAiConfig, Settings};
use crate::handoff::{Handoff, HandoffError};
use crate::pool::PoolConfig;
use crate::stream::StreamConfig;

/// The name a handoff may use for the backend the flags configure (also what a
/// handoff without `backend` gets). No table may take it.
pub const DEFAULT_NAME: &str = "default";

/// Most named backends: each has a pool per worker, so the count is bounded.
pub const MAX_BACKENDS: usize = 64;

/// Most extra request headers per backend.
pub const MAX_HEADERS: usize = 32;

/// Longest backend name, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// Longest passthrough path (a handoff's or a configured prefix), in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// One `[backends.NAME]` table as the operator wrote it, before validation.
/// `None` fields take the flags' value (the key excepted: see the module docs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BackendTable {
    /// `kind`: `openai` (the default) or `mock`.
    pub kind: Option<BackendKind>,
    /// `base_url`: where an `openai` backend is; required for that kind.
    pub base_url: Option<String>,
    /// The key, as read from the table's `api_key_env` or `api_key_file`.
    pub api_key: Option<String>,
    /// `model`: used when the handoff names none.
    pub model: Option<String>,
    /// `headers`: sent with every request to this backend, in this order.
    pub headers: Vec<(String, String)>,
    /// `http2`: HTTP/2 (h2c for `http://`), or HTTP/1.1 with keep-alive.
    pub http2: Option<bool>,
    /// `include_usage`: ask for the final usage chunk (kind `openai`).
    pub include_usage: Option<bool>,
    /// `record_text`: keep the assistant's text in this backend's records.
    pub record_text: Option<bool>,
    /// `streams_per_connection` (HTTP/2), clamped like the flag.
    pub streams_per_connection: Option<u32>,
    /// `connections`: most connections open to this backend at once.
    pub connections: Option<usize>,
    /// `connect_timeout`, seconds.
    pub connect_timeout: Option<u64>,
    /// `first_byte_timeout`, seconds.
    pub first_byte_timeout: Option<u64>,
    /// `idle_timeout`, seconds between upstream bytes.
    pub idle_timeout: Option<u64>,
    /// `total_timeout`, seconds for a whole stream.
    pub total_timeout: Option<u64>,
    /// `insecure_tls`: skip certificate verification (testing only). Not
    /// inherited: a table turns it on for itself alone.
    pub insecure_tls: bool,
    /// `ca`: a PEM file with one more CA certificate to trust. Not inherited.
    pub ca: Option<PathBuf>,
    /// `paths` (kind `passthrough`): the prefixes a handoff's `path` may start with.
    pub paths: Vec<String>,
    /// `max_streams_per_user`: most streams one `user_id` may have on this
    /// backend at once (0 or unset: no limit of its own; the global
    /// `--max-streams-per-user` still counts them). Not inherited.
    pub max_streams_per_user: Option<u32>,
}

// Written out so the key never reaches a log.
impl std::fmt::Debug for BackendTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTable")
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[set]"))
            .field("model", &self.model)
            .field("headers", &self.headers)
            .field("http2", &self.http2)
            .field("include_usage", &self.include_usage)
            .field("record_text", &self.record_text)
            .field("streams_per_connection", &self.streams_per_connection)
            .field("connections", &self.connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("first_byte_timeout", &self.first_byte_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("insecure_tls", &self.insecure_tls)
            .field("ca", &self.ca)
            .field("paths", &self.paths)
            .field("max_streams_per_user", &self.max_streams_per_user)
            .finish()
    }
}

/// A validated named backend: what serves the handoffs that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedBackend {
    /// The table's name, as handoffs give it.
    pub name: String,
    /// Where its streams come from.
    pub backend: Backend,
    /// Its connection pool (one per worker, divided like the default's).
    pub pool: PoolConfig,
    /// Its streams' timeouts; the rest as the flags say.
    pub stream: StreamConfig,
    /// Most streams one `user_id` may have on this backend at once (0: no
    /// limit of its own).
    pub max_streams_per_user: u32,
}

/// Which backend serves a handoff: `None` for the default, or the index of the
/// named one in `names` (the named backends' names, in their order). An
/// unknown name is a bad handoff, naming the field.
pub fn select<'a>(
    names: impl IntoIterator<Item = &'a str>,
    requested: Option<&str>,
) -> Result<Option<usize>, HandoffError> {
    let Some(name) = requested.filter(|name| *name != DEFAULT_NAME) else {
        return Ok(None);
    };
    match names.into_iter().position(|named| named == name) {
        Some(index) => Ok(Some(index)),
        None => {
            // Cut so a long name does not fill the log line and the response.
            let shown: String = name.chars().take(MAX_NAME_BYTES).collect();
            Err(HandoffError::InvalidField {
                field: "backend",
                reason: format!("no backend is named {shown:?}"),
            })
        }
    }
}

/// Validates the tables into named backends, unset fields taken from
/// `settings` (the flags, environment and the file's top-level keys).
pub(crate) fn validate(settings: &Settings) -> Result<Vec<NamedBackend>, ConfigError> {
    if settings.backends.len() > MAX_BACKENDS {
        return Err(ConfigError::Backend {
            name: String::new(),
            reason: format!("{} backends, more than {MAX_BACKENDS}", settings.backends.len()),
        });
    }
    let mut named: Vec<NamedBackend> = Vec::with_capacity(settings.backends.len());
    for (name, table) in &settings.backends {
        let refuse = |reason: String| ConfigError::Backend { name: name.clone(), reason };
        check_name(name).map_err(|reason| refuse(reason.to_owned()))?;
        if named.iter().any(|other| other.name == *name) {
            return Err(refuse("given twice".to_owned()));
        }
        named.push(validate_table(name, table, settings).map_err(refuse)?);
    }
    Ok(named)
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err("a name is 1 to 64 bytes");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err("a name uses letters, digits, '-', '_' and '.' only");
    }
    if name == DEFAULT_NAME {
        return Err("\"default\" is the name of the backend the flags configure");
    }
    Ok(())
}

fn validate_table(name: &str, table: &BackendTable, settings: &Settings) -> Result<NamedBackend, String> {
    let kind = table.kind.unwrap_or(BackendKind::Openai);
    if kind != BackendKind::Mock && table.base_url.is_none() {
        return Err(format!("base_url is required for kind = \"{kind}\""));
    }
    if kind != BackendKind::Passthrough && !table.paths.is_empty() {
        return Err("paths is only for kind = \"passthrough\"".to_owned());
    }
    for prefix in &table.paths {
        if let Some(reason) = path_rejection(prefix) {
            return Err(format!("paths entry {prefix:?}: {reason}"));
        }
    }
    for (value, key) in [
        (table.connect_timeout, "connect_timeout"),
        (table.first_byte_timeout, "first_byte_timeout"),
        (table.idle_timeout, "idle_timeout"),
        (table.total_timeout, "total_timeout"),
        (table.connections.map(|n| n as u64), "connections"),
    ] {
        if value == Some(0) {
            return Err(format!("{key} must be greater than zero"));
        }
    }
    if table.headers.len() > MAX_HEADERS {
        return Err(format!("{} headers, more than {MAX_HEADERS}", table.headers.len()));
    }
    for (header, value) in &table.headers {
        if let Some(reason) = request_header_rejection(header, value) {
            return Err(format!("header {header:?}: {reason}"));
        }
    }
    // The flags' settings with the table's on top, built by the same code as the
    // default backend so both are validated alike.
    let mut merged = settings.clone();
    merged.backends.clear();
    merged.backend = kind;
    if let Some(url) = &table.base_url {
        merged.openai_base.clone_from(url);
    }
    merged.openai_api_key.clone_from(&table.api_key);
    if let Some(model) = &table.model {
        merged.openai_model.clone_from(model);
    }
    merged.openai_http2 = table.http2.unwrap_or(settings.openai_http2);
    merged.openai_include_usage = table.include_usage.unwrap_or(settings.openai_include_usage);
    merged.record_text = table.record_text.unwrap_or(settings.record_text);
    merged.openai_insecure_ssl = table.insecure_tls;
    merged.openai_ca.clone_from(&table.ca);
    merged.h2_streams_per_connection =
        table.streams_per_connection.unwrap_or(settings.h2_streams_per_connection);
    merged.backend_connections = table.connections.unwrap_or(settings.backend_connections);
    merged.connect_timeout = table.connect_timeout.unwrap_or(settings.connect_timeout);
    merged.first_byte_timeout = table.first_byte_timeout.unwrap_or(settings.first_byte_timeout);
    merged.idle_timeout = table.idle_timeout.unwrap_or(settings.idle_timeout);
    merged.total_timeout = table.total_timeout.unwrap_or(settings.total_timeout);
    let (mut backend, stream, pool) = merged.backend_parts().map_err(|error| match error {
        ConfigError::BadUrl { url, reason } => format!("base_url {url:?}: {reason}"),
        other => other.to_string(),
    })?;
    if let Backend::OpenAi(openai) = &mut backend {
        openai.headers.clone_from(&table.headers);
        if let Some(paths) = &mut openai.passthrough {
            paths.clone_from(&table.paths);
        }
    }
    Ok(NamedBackend {
        name: name.to_owned(),
        backend,
        pool,
        stream,
        max_streams_per_user: table.max_streams_per_user.unwrap_or(0),
    })
}

/// Whether `handoff` suits the backend chosen for it (`None`: the mock): a
/// passthrough backend needs its `body` and takes a `path` only under a
/// configured prefix; the other kinds take neither, so a handoff meant for a
/// passthrough backend is never sent as a chat request.
pub fn check_handoff(backend: Option<&OpenAiConfig>, handoff: &Handoff) -> Result<(), HandoffError> {
    let invalid = |field, reason: String| HandoffError::InvalidField { field, reason };
    let passthrough = backend.and_then(|config| config.passthrough.as_ref());
    let Some(prefixes) = passthrough else {
        if handoff.body.is_some() {
            return Err(invalid("body", "is only for a passthrough backend".into()));
        }
        if handoff.path.is_some() {
            return Err(invalid("path", "is only for a passthrough backend".into()));
        }
        return Ok(());
    };
    if handoff.body.is_none() {
        return Err(invalid("body", "is required by a passthrough backend".into()));
    }
    if let Some(path) = &handoff.path {
        if let Some(reason) = path_rejection(path) {
            return Err(invalid("path", reason.into()));
        }
        if !prefixes.iter().any(|prefix| path.starts_with(prefix.as_str())) {
            return Err(invalid("path", "is not under a path this backend allows".into()));
        }
    }
    Ok(())
}

/// The request path for `handoff` on this backend: the chat completions path,
/// or for a passthrough backend the base URL's path followed by the handoff's
/// `path` (checked by [`check_handoff`]).
pub fn request_path(config: &OpenAiConfig, handoff: &Handoff) -> String {
    match (&config.passthrough, &handoff.path) {
        (None, _) => config.base.completions_path(),
        (Some(_), None) => config.base.path.clone(),
        (Some(_), Some(path)) => format!("{}{path}", config.base.path),
    }
}

/// Why a passthrough path is refused: it must start with `/`, stay short, use
/// only unreserved characters, `/`, `:`, `@`, `=`, `&`, `?`, `,`, `+` and `%`,
/// and have no `.` or `..` segment (so it cannot climb out of a prefix).
fn path_rejection(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("must start with /");
    }
    if path.len() > MAX_PATH_BYTES {
        return Some("is longer than 512 bytes");
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~/:@=&?,+%".contains(&b);
    if !path.bytes().all(allowed) {
        return Some("has a character a path may not have");
    }
    let route = path.split('?').next().unwrap_or(path);
    if route.split('/').any(|segment| {
        segment == "." || segment == ".." || segment.contains("%2e") || segment.contains("%2E")
    }) {
        return Some("has a . or .. segment");
    }
    None
}

/// Why an extra request header is refused: any header a response could not
/// carry ([`crate::http1::header_rejection`]), and the ones every request sets
/// itself (the key's `Authorization`, `Accept`, `X-Request-Id`, `X-Test-Pattern`).
pub fn request_header_rejection(name: &str, value: &str) -> Option<&'static str> {
    const SET_PER_REQUEST: &[&str] = &["authorization", "accept", "x-request-id", "x-test-pattern"];
    if SET_PER_REQUEST.iter().any(|set| set.eq_ignore_ascii_case(name)) {
        return Some("set by the daemon for every request");
    }
    crate::http1::header_rejection(name, value)
}

#[cfg(test)]
mod tests;
