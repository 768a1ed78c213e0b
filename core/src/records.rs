//! The completion record: one JSON object per stream, built when its socket
//! has closed, saying what the application cannot see once it handed the
//! socket off (who asked, what answered, how it ended, the usage, and the
//! assistant's text when asked).
//!
//! The schema (README "Completion records" documents each field) is versioned by
//! `"v"`; fields are only ever added. Absent values are `null`, never left out,
//! so a receiver can rely on every key.

use std::time::Duration;

use serde::Serialize;

use crate::handoff::Handoff;
use crate::metrics::{HandoffOutcome, StreamSummary, TimeoutKind};
use crate::stream::recording::Recording;
use crate::stream::Outcome;

/// The record schema's version.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest `request_id` / `user_id` a record carries (they come from the handoff).
pub const MAX_ID_BYTES: usize = 256;

/// What a stream's record says about the request, known when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// The handoff's `request_id`, or one the daemon made ([`generated_request_id`]).
    pub request_id: String,
    /// True when the daemon made the `request_id`.
    pub request_id_generated: bool,
    /// The handoff's `user_id`.
    pub user_id: Option<String>,
    /// The backend's table name, or `default`.
    pub backend: String,
    /// The model asked for: the handoff's, or the backend's default.
    pub model_requested: Option<String>,
    /// Wall-clock time of the handoff, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

impl RecordMeta {
    /// The meta of `handoff`'s stream, served by `backend` (`None`: the
    /// default one) whose default model is `default_model`. `stream` and
    /// `boot_ms` (the daemon's start, Unix milliseconds) make a request id
    /// when the handoff has none; `now_ms` is the handoff's wall-clock time.
    pub fn for_handoff(
        handoff: &Handoff,
        backend: Option<&str>,
        default_model: Option<&str>,
        stream: u64,
        boot_ms: u64,
        now_ms: u64,
    ) -> RecordMeta {
        let given = handoff.request_id.as_deref().map(|id| bounded(id, MAX_ID_BYTES));
        RecordMeta {
            request_id_generated: given.is_none(),
            request_id: given.map_or_else(|| generated_request_id(boot_ms, stream), str::to_owned),
            user_id: handoff.user_id.as_deref().map(|id| bounded(id, MAX_ID_BYTES).to_owned()),
            backend: backend.unwrap_or("default").to_owned(),
            model_requested: handoff.model.as_deref().or(default_model).map(str::to_owned),
            started_at_ms: now_ms,
        }
    }
}

/// A request id unique across restarts: the daemon's start time and the stream's
/// running number (`hd-<boot ms, hex>-<n>`), so a record without the
/// application's own id still has a stable idempotency key.
pub fn generated_request_id(boot_ms: u64, stream: u64) -> String {
    format!("hd-{boot_ms:x}-{stream}")
}

/// The JSON object (no trailing newline) for one finished stream. `summary`
/// carries the bytes the client took; `recording` is the stream machine's.
pub fn completion_record(
    meta: &RecordMeta,
    summary: &StreamSummary,
    outcome: &Outcome,
    recording: Option<&Recording>,
) -> Vec<u8> {
    let usage = recording.and_then(Recording::usage).map(|usage| Usage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
        cached_tokens: usage.cached_tokens,
        reasoning_tokens: usage.reasoning_tokens,
    });
    let error = recording.and_then(Recording::error);
    let record = Record {
        v: SCHEMA_VERSION,
        request_id: &meta.request_id,
        request_id_generated: meta.request_id_generated,
        user_id: meta.user_id.as_deref(),
        backend: &meta.backend,
        model_requested: meta.model_requested.as_deref(),
        model: recording.and_then(Recording::model),
        upstream_id: recording.and_then(Recording::upstream_id),
        outcome: outcome_name(outcome),
        reason: reason(summary.outcome),
        error_type: error.map(|(error_type, _)| error_type),
        error_code: error.and_then(|(_, code)| code),
        finish_reason: recording.and_then(Recording::finish_reason),
        backend_status: summary.backend_status,
        started_at_ms: meta.started_at_ms,
        timings_ms: Timings {
            first_byte: recording.and_then(Recording::first_byte_ms).map(u64::from),
            first_token: summary.first_event.map(millis),
            first_client_byte: summary.ttfb.map(millis),
            total: millis(summary.duration),
        },
        bytes_to_client: summary.bytes,
        events_to_client: summary.events,
        usage,
        text: recording.and_then(Recording::text),
        text_truncated: recording.is_some_and(Recording::text_truncated),
    };
    // Serializing borrowed strings and numbers into a Vec cannot fail.
    serde_json::to_vec(&record).unwrap_or_default()
}

/// How the stream ended, coarsely: what an application branches on.
fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed => "completed",
        Outcome::Failed(_) => "failed",
        Outcome::ClientGone => "client_gone",
        Outcome::ClientStalled => "client_stalled",
    }
}

/// The metrics' `type` label (`upstream_status`, `idle_timeout`, ...), `null`
/// when the outcome needs none.
fn reason(outcome: HandoffOutcome) -> Option<&'static str> {
    match outcome {
        HandoffOutcome::Shutdown => Some("shutdown"),
        HandoffOutcome::Timeout(TimeoutKind::FirstByte) => Some("first_byte_timeout"),
        HandoffOutcome::Timeout(TimeoutKind::Idle) => Some("idle_timeout"),
        HandoffOutcome::Timeout(TimeoutKind::Total) => Some("total_timeout"),
        other => Some(other.error_type()).filter(|label| !label.is_empty()),
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn bounded(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[derive(Serialize)]
struct Record<'a> {
    v: u32,
    request_id: &'a str,
    request_id_generated: bool,
    user_id: Option<&'a str>,
    backend: &'a str,
    model_requested: Option<&'a str>,
    model: Option<&'a str>,
    upstream_id: Option<&'a str>,
    outcome: &'static str,
    reason: Option<&'static str>,
    error_type: Option<&'a str>,
    error_code: Option<&'a str>,
    finish_reason: Option<&'a str>,
    backend_status: Option<u16>,
    started_at_ms: u64,
    timings_ms: Timings,
    bytes_to_client: u64,
    events_to_client: u32,
    usage: Option<Usage>,
    text: Option<&'a str>,
    text_truncated: bool,
}

#[derive(Serialize)]
struct Timings {
    first_byte: Option<u64>,
    first_token: Option<u64>,
    first_client_byte: Option<u64>,
    total: u64,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    total_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
}

#[cfg(test)]
mod tests;
