//! The `usage` object of a streamed response (`stream_options.include_usage`).

use serde::de::IgnoredAny;
use serde::Deserialize;

/// Token counts the backend reported for one response. Each is `None` when the
/// backend left it out (or sent something other than a non-negative integer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// `prompt_tokens`.
    pub prompt_tokens: Option<u64>,
    /// `completion_tokens`.
    pub completion_tokens: Option<u64>,
    /// `total_tokens`.
    pub total_tokens: Option<u64>,
    /// `prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u64>,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: Option<u64>,
}

/// A usage object, or `None` for anything of another shape: usage is a report,
/// and a server that shapes it oddly must not fail an answer that is fine.
pub(super) struct Lenient(pub(super) Option<Usage>);

#[derive(Deserialize)]
#[serde(untagged)]
enum Shape {
    Object(Wire),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct Wire {
    prompt_tokens: Option<Count>,
    completion_tokens: Option<Count>,
    total_tokens: Option<Count>,
    prompt_tokens_details: Option<Details>,
    completion_tokens_details: Option<Details>,
}

/// The `*_details` objects: only the two counts we report are read.
#[derive(Deserialize)]
#[serde(untagged)]
enum Details {
    Object { cached_tokens: Option<Count>, reasoning_tokens: Option<Count> },
    Other(IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Count {
    Integer(u64),
    Other(IgnoredAny),
}

impl Count {
    fn get(count: Option<Count>) -> Option<u64> {
        match count {
            Some(Count::Integer(count)) => Some(count),
            _ => None,
        }
    }
}

impl Details {
    fn counts(details: Option<Details>) -> (Option<u64>, Option<u64>) {
        match details {
            Some(Details::Object { cached_tokens, reasoning_tokens }) => {
                (Count::get(cached_tokens), Count::get(reasoning_tokens))
            }
            _ => (None, None),
        }
    }
}

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Lenient(match Shape::deserialize(deserializer)? {
            Shape::Object(wire) => Some(Usage {
                prompt_tokens: Count::get(wire.prompt_tokens),
                completion_tokens: Count::get(wire.completion_tokens),
                total_tokens: Count::get(wire.total_tokens),
                cached_tokens: Details::counts(wire.prompt_tokens_details).0,
                reasoning_tokens: Details::counts(wire.completion_tokens_details).1,
            }),
            Shape::Other(_) => None,
        }))
    }
}

impl Usage {
    /// Appends the usage as a JSON object (`{"prompt_tokens":9,...}`, counts
    /// the backend left out omitted): the `event: usage` data and the record's
    /// `usage` field.
    pub fn write_json(&self, out: &mut impl std::fmt::Write) -> std::fmt::Result {
        out.write_char('{')?;
        let mut first = true;
        for (name, count) in [
            ("prompt_tokens", self.prompt_tokens),
            ("completion_tokens", self.completion_tokens),
            ("total_tokens", self.total_tokens),
            ("cached_tokens", self.cached_tokens),
            ("reasoning_tokens", self.reasoning_tokens),
        ] {
            let Some(count) = count else { continue };
            if !first {
                out.write_char(',')?;
            }
            first = false;
            write!(out, "\"{name}\":{count}")?;
        }
        out.write_char('}')
    }
}
