//! What one response will do, decided from the `X-Test-Pattern` header, the request's
//! `max_tokens` and the server defaults.
//!
//! Patterns (comma-separated items combine, applied left to right; unknown items are
//! ignored, so an unknown pattern is the default text stream):
//!
//! | item | effect |
//! |---|---|
//! | (none), `text` | lorem-ish words |
//! | `unicode`, `short`, `long` | other token tables, see [`ContentKind`] |
//! | `abort:N` | N content chunks, then a clean end: no `finish_reason`, no `[DONE]` |
//! | `finish:REASON` | the final chunk's `finish_reason` is REASON (`[A-Za-z0-9_-]`, ≤ 32) |
//! | `status:CODE` | HTTP status CODE (400–599) with an OpenAI-style JSON error body |
//! | `stall:MS` | MS of silence after the response head, before the first body byte |
//! | `stall-head:MS` | MS of silence before the response head |
//! | `slow:MS` | MS between chunks instead of the token delay |
//! | `empty:N` | N content-less chunks (role-only, `reasoning_content`, `tool_calls`, usage with empty `choices`, in turn) right after the role chunk, before the content |
//! | `error-event`, `error-event:N` | an `{"error":..}` event after N (default half) content chunks, then a clean end |
//! | `reset:N` | after N content chunks: HTTP/2 RST_STREAM(INTERNAL_ERROR), HTTP/1.1 abrupt close |

use std::borrow::Cow;
use std::time::Duration;

use super::tokens::ContentKind;

/// Upper bound for any `MS` argument (10 minutes), so a typo cannot park a stream forever.
pub const MAX_PATTERN_DELAY: Duration = Duration::from_secs(600);
/// Upper bound for any chunk count.
pub const MAX_PATTERN_CHUNKS: u32 = 1_000_000;

/// How the response ends after its content chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// A chunk with this `finish_reason` and an empty delta, then `data: [DONE]`.
    Finish(Cow<'static, str>),
    /// The body ends cleanly with neither.
    Abort,
    /// An `{"error":{...}}` data event, then a clean end.
    ErrorEvent,
    /// The stream is cut: RST_STREAM(INTERNAL_ERROR) or an abrupt connection close.
    Reset,
    /// No event stream: this HTTP status with a JSON error body.
    Status(u16),
}

/// The plan for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub content: ContentKind,
    /// Chunks without content sent, without pauses, after the role chunk and before
    /// the first content chunk.
    pub empty_chunks: u32,
    /// Content chunks sent before the ending.
    pub content_chunks: u32,
    /// Pause before each content chunk.
    pub token_delay: Duration,
    /// Silence before the response head.
    pub head_delay: Duration,
    /// Silence between the response head and the first body byte.
    pub body_delay: Duration,
    pub ending: Ending,
}

impl Script {
    /// The plan for a request: `tokens` and `token_delay` are the server defaults,
    /// `max_tokens` the request's limit (which, when lower, cuts the stream short with
    /// `finish_reason: "length"` as OpenAI does), `pattern` the `X-Test-Pattern` value.
    pub fn new(tokens: u32, token_delay: Duration, max_tokens: Option<u64>, pattern: Option<&str>) -> Script {
        let (content_chunks, reason) = match max_tokens {
            Some(max) if max < u64::from(tokens) => (max as u32, "length"),
            _ => (tokens, "stop"),
        };
        let mut script = Script {
            content: ContentKind::Text,
            empty_chunks: 0,
            content_chunks,
            token_delay,
            head_delay: Duration::ZERO,
            body_delay: Duration::ZERO,
            ending: Ending::Finish(Cow::Borrowed(reason)),
        };
        for item in pattern.unwrap_or("").split(',') {
            script.apply(item.trim());
        }
        script
    }

    fn apply(&mut self, item: &str) {
        let (name, argument) = match item.split_once(':') {
            Some((name, argument)) => (name.trim(), Some(argument.trim())),
            None => (item, None),
        };
        let chunks = || argument.and_then(|a| a.parse::<u32>().ok()).filter(|n| *n <= MAX_PATTERN_CHUNKS);
        let delay = || {
            argument
                .and_then(|a| a.parse::<u64>().ok())
                .map(Duration::from_millis)
                .filter(|d| *d <= MAX_PATTERN_DELAY)
        };
        match (name, argument) {
            ("text", None) => self.content = ContentKind::Text,
            ("unicode", None) => self.content = ContentKind::Unicode,
            ("short", None) => self.content = ContentKind::Short,
            ("long", None) => self.content = ContentKind::Long,
            ("abort", Some(_)) => {
                if let Some(n) = chunks() {
                    self.content_chunks = n;
                    self.ending = Ending::Abort;
                }
            }
            ("reset", Some(_)) => {
                if let Some(n) = chunks() {
                    self.content_chunks = n;
                    self.ending = Ending::Reset;
                }
            }
            ("error-event", None) => {
                self.content_chunks /= 2;
                self.ending = Ending::ErrorEvent;
            }
            ("error-event", Some(_)) => {
                if let Some(n) = chunks() {
                    self.content_chunks = n;
                    self.ending = Ending::ErrorEvent;
                }
            }
            ("finish", Some(reason)) if is_finish_reason(reason) => {
                self.ending = Ending::Finish(Cow::Owned(reason.to_owned()));
            }
            ("status", Some(code)) => {
                if let Some(code) = code.parse::<u16>().ok().filter(|c| (400..=599).contains(c)) {
                    self.ending = Ending::Status(code);
                }
            }
            ("empty", Some(_)) => self.empty_chunks = chunks().unwrap_or(self.empty_chunks),
            ("stall", Some(_)) => self.body_delay = delay().unwrap_or(self.body_delay),
            ("stall-head", Some(_)) => self.head_delay = delay().unwrap_or(self.head_delay),
            ("slow", Some(_)) => self.token_delay = delay().unwrap_or(self.token_delay),
            _ => {}
        }
    }

    /// The text a client reassembles from this script's content chunks.
    pub fn expected_content(&self) -> String {
        if matches!(self.ending, Ending::Status(_)) {
            return String::new();
        }
        (0..self.content_chunks).map(|i| self.content.token(i).text).collect()
    }
}

/// Finish reasons are echoed into JSON unescaped, so only plain names pass.
fn is_finish_reason(reason: &str) -> bool {
    (1..=32).contains(&reason.len())
        && reason.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_millis(20);

    fn script(pattern: &str) -> Script {
        Script::new(20, DELAY, None, Some(pattern))
    }

    #[test]
    fn no_pattern_is_twenty_text_tokens_ending_in_stop() {
        let s = Script::new(20, DELAY, None, None);
        assert_eq!(s.content, ContentKind::Text);
        assert_eq!(s.content_chunks, 20);
        assert_eq!(s.ending, Ending::Finish(Cow::Borrowed("stop")));
        assert_eq!((s.head_delay, s.body_delay, s.token_delay), (Duration::ZERO, Duration::ZERO, DELAY));
    }

    #[test]
    fn lower_max_tokens_cuts_the_stream_with_length() {
        let s = Script::new(20, DELAY, Some(5), None);
        assert_eq!(s.content_chunks, 5);
        assert_eq!(s.ending, Ending::Finish(Cow::Borrowed("length")));
        assert_eq!(Script::new(20, DELAY, Some(500), None).content_chunks, 20);
    }

    #[test]
    fn unknown_patterns_fall_back_to_the_default() {
        let default = Script::new(20, DELAY, None, None);
        for pattern in [
            "bogus",
            "abort",
            "abort:x",
            "empty",
            "empty:-1",
            "status:200",
            "status:abc",
            "finish:a\"b",
            "slow:-1",
            "",
        ] {
            assert_eq!(script(pattern), default, "{pattern}");
        }
    }

    #[test]
    fn each_pattern_sets_its_part_of_the_plan() {
        assert_eq!(script("unicode").content, ContentKind::Unicode);
        assert_eq!(script("short").content, ContentKind::Short);
        assert_eq!(script("long").content, ContentKind::Long);
        let abort = script("abort:3");
        assert_eq!((abort.content_chunks, abort.ending), (3, Ending::Abort));
        let reset = script("reset:4");
        assert_eq!((reset.content_chunks, reset.ending), (4, Ending::Reset));
        let error = script("error-event");
        assert_eq!((error.content_chunks, error.ending), (10, Ending::ErrorEvent));
        assert_eq!(script("error-event:1").content_chunks, 1);
        assert_eq!(script("finish:length").ending, Ending::Finish(Cow::Borrowed("length")));
        assert_eq!(script("status:429").ending, Ending::Status(429));
        assert_eq!(script("stall:150").body_delay, Duration::from_millis(150));
        assert_eq!(script("stall-head:70").head_delay, Duration::from_millis(70));
        assert_eq!(script("slow:5").token_delay, Duration::from_millis(5));
        let empty = script("empty:2000");
        assert_eq!((empty.empty_chunks, empty.content_chunks), (2000, 20));
        assert_eq!(
            empty.expected_content(),
            script("").expected_content(),
            "content-less chunks add no text"
        );
    }

    #[test]
    fn items_combine() {
        let s = script("unicode, slow:1 ,abort:2");
        assert_eq!(
            (s.content, s.token_delay, s.content_chunks, s.ending),
            (ContentKind::Unicode, Duration::from_millis(1), 2, Ending::Abort)
        );
    }

    #[test]
    fn expected_content_concatenates_the_sent_tokens() {
        let s = script("abort:3");
        assert_eq!(s.expected_content(), "Lorem ipsum dolor");
        assert_eq!(script("status:500").expected_content(), "");
    }
}
