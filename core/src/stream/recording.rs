//! What a stream keeps for its completion record: the answering model, the
//! upstream's response id, the finish reason, the usage, the client's error
//! type, and (when asked) the assistant's text up to a cap.
//!
//! Boxed behind an `Option` in the stream, so a daemon without records pays one
//! pointer per stream and nothing per event; with records, text is appended to
//! one growing buffer, and the other fields are set once.

use crate::openai::Usage;

/// The record's view of one stream, filled as events pass.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recording {
    text: Option<String>,
    max_text: usize,
    text_truncated: bool,
    model: Option<Box<str>>,
    upstream_id: Option<Box<str>>,
    finish_reason: Option<Box<str>>,
    usage: Option<Usage>,
    error_type: Option<Box<str>>,
    error_code: Option<Box<str>>,
    /// Milliseconds from the stream's start to the backend's response head.
    first_byte_ms: Option<u32>,
}

impl Recording {
    /// A recording that keeps the text (up to `max_text` bytes) when `keep_text`.
    pub fn new(keep_text: bool, max_text: usize) -> Recording {
        Recording { text: keep_text.then(String::new), max_text, ..Recording::default() }
    }

    /// The assistant's text so far (`None` when it is not kept).
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref()
    }

    /// True when text beyond the cap was left out.
    pub fn text_truncated(&self) -> bool {
        self.text_truncated
    }

    /// The model that answered (the chunks' `model`).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The upstream's response id (the chunks' `id`).
    pub fn upstream_id(&self) -> Option<&str> {
        self.upstream_id.as_deref()
    }

    /// The last `finish_reason` the upstream gave.
    pub fn finish_reason(&self) -> Option<&str> {
        self.finish_reason.as_deref()
    }

    /// The usage the upstream reported.
    pub fn usage(&self) -> Option<&Usage> {
        self.usage.as_ref()
    }

    /// The `type` (and `code`) of the error event the client got, if any.
    pub fn error(&self) -> Option<(&str, Option<&str>)> {
        self.error_type.as_deref().map(|error_type| (error_type, self.error_code.as_deref()))
    }

    /// When the backend's response head came, from the stream's start.
    pub fn first_byte_ms(&self) -> Option<u32> {
        self.first_byte_ms
    }

    pub(super) fn note_text(&mut self, piece: &str) {
        let Some(text) = self.text.as_mut().filter(|_| !self.text_truncated) else { return };
        let room = self.max_text.saturating_sub(text.len());
        if piece.len() <= room {
            text.push_str(piece);
            return;
        }
        // Cut on a char boundary at or below the cap.
        let mut end = room;
        while !piece.is_char_boundary(end) {
            end -= 1;
        }
        text.push_str(piece.get(..end).unwrap_or_default());
        self.text_truncated = true;
    }

    pub(super) fn note_chunk(&mut self, id: Option<&str>, model: Option<&str>, finish_reason: Option<&str>) {
        // The first id and model stand for the response (they repeat on every chunk).
        if self.upstream_id.is_none() {
            self.upstream_id = id.map(bounded);
        }
        if self.model.is_none() {
            self.model = model.map(bounded);
        }
        if let Some(reason) = finish_reason {
            self.finish_reason = Some(bounded(reason));
        }
    }

    pub(super) fn note_usage(&mut self, usage: Usage) {
        self.usage = Some(usage);
    }

    pub(super) fn note_error(&mut self, error_type: &str, code: Option<&str>) {
        // The first error event is the one the client saw; nothing follows it.
        if self.error_type.is_none() {
            self.error_type = Some(bounded(error_type));
            self.error_code = code.map(bounded);
        }
    }

    pub(super) fn note_first_byte(&mut self, at: u32) {
        self.first_byte_ms.get_or_insert(at);
    }

    /// Heap bytes held (for the per-stream memory figures).
    pub fn buffered_capacity(&self) -> usize {
        self.text.as_ref().map_or(0, String::capacity)
    }
}

/// Upstream strings are kept to this many bytes (an id or model name is short;
/// a hostile backend's is cut).
const MAX_FIELD: usize = 256;

fn bounded(text: &str) -> Box<str> {
    let mut end = text.len().min(MAX_FIELD);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().into()
}
