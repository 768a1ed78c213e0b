//! The mock backend's script: 18 content events per stream, three dynamic lines
//! (connection number, user id, the prompt cut to 50 characters) and fifteen fixed
//! ones. [`crate::stream::Stream`] paces it, so mock streams obey every stream rule.
//!
//! In [`Format::OpenAi`] the same lines go out as `chat.completion.chunk` objects
//! (the role in the first delta, `finish_reason: "stop"` on the last), so a front
//! end can develop against an OpenAI SDK's parser with no backend at all. The
//! mock has no reasoning to offer, so the handoff's `reasoning` changes nothing.
//!
//! A script is small: its position, its format, the connection number (rendered when its line
//! is written) and one boxed string holding the two lines that echo the handoff.
//! The stream drops it as soon as the script is over.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};

use crate::handoff::{Format, Handoff};
use crate::json;
use crate::sse;

/// Content events per mock stream.
pub const EVENT_COUNT: u32 = 18;

/// Longest prompt echo, in characters.
pub const PROMPT_PREVIEW_CHARS: usize = 50;

/// Longest user id echo, in characters. The id comes from the handoff and is not
/// otherwise bounded; a mock stream should not hold kilobytes for a greeting.
pub const USER_ID_PREVIEW_CHARS: usize = 64;

/// Said in the greeting when the handoff named no user.
const ANONYMOUS: &str = "anonymous";

/// The model a mock stream's chunks (and records) name.
pub const MODEL: &str = "mock";

/// The lines after the three dynamic ones.
const FIXED_LINES: [&str; EVENT_COUNT as usize - 3] = [
    "This reply is streamed by the handoff daemon, not by Apache.",
    "Apache freed its worker as soon as PHP handed the socket over.",
    "From here on the daemon owns the connection and writes the whole response.",
    "Each line you see arrives as one Server-Sent Event on that socket.",
    "A real deployment forwards tokens from a language model at this point.",
    "This mock backend paces its lines with a fixed delay instead.",
    "Every stream is a small state machine that its runtime drives.",
    "A quiet stream holds no buffers, only its place in this script.",
    "Tens of thousands of such streams can share one process.",
    "Long silences are filled with keep-alive comments so proxies stay patient.",
    "Closing the page ends the stream and stops its backend at once.",
    "Errors after the first byte arrive as an error event, not as a status.",
    "A successful stream always ends with a done marker.",
    "That marker tells a client a complete answer from a cut one.",
    "That is the whole script. Thank you for listening.",
];

/// Where one mock stream is in its script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// The daemon's running handoff number, rendered into the first line.
    connection: u64,
    /// "Hello user …!" immediately followed by "You asked: …".
    greeting_and_echo: Box<str>,
    /// Where "You asked: …" starts in `greeting_and_echo`.
    echo_start: u32,
    /// Index of the next event; [`EVENT_COUNT`] once all are written.
    next: u8,
    format: Format,
}

impl Script {
    /// `connection` is the daemon's running handoff number.
    pub fn new(connection: u64, user_id: &str, prompt: &str) -> Script {
        let user_id = cut_to_chars(user_id, USER_ID_PREVIEW_CHARS);
        let user_id = if user_id.is_empty() { ANONYMOUS } else { user_id };
        let prompt = cut_to_chars(prompt, PROMPT_PREVIEW_CHARS);
        let mut text = String::with_capacity(24 + user_id.len() + prompt.len());
        text.push_str("Hello user ");
        text.push_str(user_id);
        text.push('!');
        // Both parts are bounded by the cuts above (well under 4 GiB).
        let echo_start = u32::try_from(text.len()).unwrap_or(u32::MAX);
        text.push_str("You asked: ");
        text.push_str(prompt);
        Script {
            connection,
            greeting_and_echo: text.into_boxed_str(),
            echo_start,
            next: 0,
            format: Format::Content,
        }
    }

    /// The script for a decoded handoff: it greets the handoff's user (anonymous
    /// without one), echoes the text of its last user message, and writes its
    /// events in the format the handoff asked for.
    pub fn for_handoff(connection: u64, handoff: &Handoff) -> Script {
        Script::new(connection, handoff.user_id.as_deref().unwrap_or(""), &handoff.last_user_text())
            .in_format(handoff.delivery.format)
    }

    /// This script, its events written in `format`.
    pub fn in_format(self, format: Format) -> Script {
        Script { format, ..self }
    }

    /// Appends the next event (`data: {"content":..,"index":N}\n\n`, or a chunk
    /// object in [`Format::OpenAi`]) to `out` and returns true; false once all
    /// [`EVENT_COUNT`] have been written.
    pub fn write_next(&mut self, out: &mut BytesMut) -> bool {
        self.write_next_noting(out, &mut |_| {})
    }

    /// [`Script::write_next`], also handing the event's text to `note` (a
    /// stream's record keeps it).
    pub fn write_next_noting(&mut self, out: &mut BytesMut, note: &mut dyn FnMut(&str)) -> bool {
        let index = u32::from(self.next);
        if index >= EVENT_COUNT {
            return false;
        }
        let split = usize::try_from(self.echo_start).unwrap_or(usize::MAX);
        let (greeting, echo) = match self.greeting_and_echo.split_at_checked(split) {
            Some(parts) => parts,
            None => (&*self.greeting_and_echo, ""),
        };
        match index {
            0 => {
                let mut line = StackLine::new();
                // Cannot overflow: the longest rendering is 46 bytes.
                let _ = write!(line, "Connection #{} established.", self.connection);
                note(line.as_str());
                self.encode(out, line.as_str(), index);
            }
            1 => {
                note(greeting);
                self.encode(out, greeting, index)
            }
            2 => {
                note(echo);
                self.encode(out, echo, index)
            }
            _ => {
                let line = usize::try_from(index - 3).ok().and_then(|i| FIXED_LINES.get(i)).copied();
                note(line.unwrap_or_default());
                self.encode(out, line.unwrap_or_default(), index);
            }
        }
        self.next += 1;
        true
    }

    fn encode(&self, out: &mut BytesMut, text: &str, index: u32) {
        match self.format {
            Format::Content => sse::encode_indexed_content(out, text, index),
            Format::OpenAi => {
                out.reserve(text.len() + 160);
                out.put_slice(b"data: {\"id\":\"chatcmpl-mock-");
                // Writing to a BytesMut cannot fail.
                let _ = write!(out, "{}", self.connection);
                out.put_slice(b"\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"mock\",");
                out.put_slice(b"\"choices\":[{\"index\":0,\"delta\":{");
                if index == 0 {
                    out.put_slice(b"\"role\":\"assistant\",");
                }
                out.put_slice(b"\"content\":");
                json::write_str(out, text);
                out.put_slice(if index + 1 == EVENT_COUNT {
                    &b"},\"finish_reason\":\"stop\"}]}\n\n"[..]
                } else {
                    &b"},\"finish_reason\":null}]}\n\n"[..]
                });
            }
        }
    }

    /// The `id` of this script's chunks in [`Format::OpenAi`], as a record reports it.
    pub fn response_id(&self) -> String {
        format!("chatcmpl-mock-{}", self.connection)
    }

    /// How many events have been written so far (the index of the next one).
    pub fn events_written(&self) -> u32 {
        u32::from(self.next)
    }

    /// True once all [`EVENT_COUNT`] events have been written.
    pub fn is_finished(&self) -> bool {
        self.events_written() >= EVENT_COUNT
    }

    /// Bytes of heap this script holds (its echo of the handoff).
    pub fn buffered_capacity(&self) -> usize {
        self.greeting_and_echo.len()
    }
}

/// The first `max_chars` characters of `s` (cut on a char boundary, never inside one).
fn cut_to_chars(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((end, _)) => s.get(..end).unwrap_or(s),
        None => s,
    }
}

/// A line rendered on the stack, so numbering a connection allocates nothing.
struct StackLine {
    buf: [u8; 64],
    len: usize,
}

impl StackLine {
    fn new() -> Self {
        StackLine { buf: [0; 64], len: 0 }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so this is always valid UTF-8.
        self.buf.get(..self.len).and_then(|bytes| std::str::from_utf8(bytes).ok()).unwrap_or_default()
    }
}

impl std::fmt::Write for StackLine {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every event of a script, parsed back: (content, index).
    fn events(script: &mut Script) -> Vec<(String, u64)> {
        let mut out = BytesMut::new();
        while script.write_next(&mut out) {}
        let text = std::str::from_utf8(&out).expect("events are UTF-8");
        let mut events = Vec::new();
        for event in text.split_terminator("\n\n") {
            let json = event.strip_prefix("data: ").expect("every event is one data line");
            let value: serde_json::Value = serde_json::from_str(json).expect("event data is JSON");
            let content = value["content"].as_str().expect("content is a string").to_owned();
            let index = value["index"].as_u64().expect("index is a number");
            events.push((content, index));
        }
        events
    }

    #[test]
    fn script_has_eighteen_indexed_events_then_stops() {
        let mut script = Script::new(7, "42", "What is the weather?");
        let events = events(&mut script);
        assert_eq!(events.len(), EVENT_COUNT as usize);
        for (i, (_, index)) in events.iter().enumerate() {
            assert_eq!(*index, i as u64);
        }
        assert!(script.is_finished());
        let mut out = BytesMut::new();
        assert!(!script.write_next(&mut out), "no event after the last");
        assert!(out.is_empty());
    }

    #[test]
    fn first_three_lines_echo_the_connection_user_and_prompt() {
        let events = events(&mut Script::new(18_446_744_073_709_551_615, "user-9", "Tell me a joke"));
        assert_eq!(events[0].0, "Connection #18446744073709551615 established.");
        assert_eq!(events[1].0, "Hello user user-9!");
        assert_eq!(events[2].0, "You asked: Tell me a joke");
        for (content, _) in &events[3..] {
            assert!(!content.is_empty());
        }
    }

    #[test]
    fn prompt_is_cut_to_fifty_characters_on_a_char_boundary() {
        let prompt = "é".repeat(80);
        let cut = events(&mut Script::new(1, "u", &prompt));
        let echoed = cut[2].0.strip_prefix("You asked: ").expect("echo line");
        assert_eq!(echoed.chars().count(), PROMPT_PREVIEW_CHARS);
        assert_eq!(echoed, "é".repeat(PROMPT_PREVIEW_CHARS));

        let emoji = format!("a{}", "😀".repeat(60));
        let cut = events(&mut Script::new(1, "u", &emoji));
        let echoed = cut[2].0.strip_prefix("You asked: ").expect("echo line");
        assert_eq!(echoed.chars().count(), PROMPT_PREVIEW_CHARS);
        assert!(echoed.ends_with('😀'));
    }

    #[test]
    fn user_id_is_bounded_and_an_empty_one_is_anonymous() {
        let events_long = events(&mut Script::new(1, &"x".repeat(10_000), "p"));
        assert_eq!(events_long[1].0, format!("Hello user {}!", "x".repeat(USER_ID_PREVIEW_CHARS)));
        let events_empty = events(&mut Script::new(1, "", ""));
        assert_eq!(events_empty[1].0, "Hello user anonymous!");
        assert_eq!(events_empty[2].0, "You asked: ");
    }

    #[test]
    fn a_handoff_script_greets_its_user_or_anonymous_and_echoes_its_last_user_message() {
        let decoded = |data: &str| crate::handoff::decode(data.as_bytes()).expect("a valid handoff");
        let named = decoded(
            r#"{"user_id":7,"messages":[{"role":"user","content":"first"},{"role":"assistant","content":"a"},{"role":"user","content":"caf\u00e9"}]}"#,
        );
        let events_named = events(&mut Script::for_handoff(5, &named));
        assert_eq!(events_named[0].0, "Connection #5 established.");
        assert_eq!(events_named[1].0, "Hello user 7!");
        assert_eq!(events_named[2].0, "You asked: café");
        let events_anonymous = events(&mut Script::for_handoff(6, &decoded(r#"{"prompt":"hi"}"#)));
        assert_eq!(events_anonymous[1].0, "Hello user anonymous!");
        assert_eq!(events_anonymous[2].0, "You asked: hi");
    }

    #[test]
    fn quotes_and_control_characters_in_the_prompt_stay_valid_json() {
        let events = events(&mut Script::new(3, "a\"b", "line\nbreak \"quoted\" \\ \u{1}"));
        assert_eq!(events[1].0, "Hello user a\"b!");
        assert_eq!(events[2].0, "You asked: line\nbreak \"quoted\" \\ \u{1}");
    }

    #[test]
    fn openai_format_writes_the_same_lines_as_chat_completion_chunks() {
        let mut script = Script::new(5, "u", "hi").in_format(Format::OpenAi);
        let mut out = BytesMut::new();
        while script.write_next(&mut out) {}
        let text = std::str::from_utf8(&out).expect("events are UTF-8");
        let chunks: Vec<serde_json::Value> = text
            .split_terminator("\n\n")
            .map(|event| {
                serde_json::from_str(event.strip_prefix("data: ").expect("one data line")).expect("JSON")
            })
            .collect();
        assert_eq!(chunks.len(), EVENT_COUNT as usize);
        let plain = events(&mut Script::new(5, "u", "hi"));
        for (i, (chunk, (content, _))) in chunks.iter().zip(&plain).enumerate() {
            assert_eq!(chunk["object"], "chat.completion.chunk");
            assert_eq!(chunk["id"], "chatcmpl-mock-5");
            assert_eq!(chunk["choices"][0]["delta"]["content"], content.as_str(), "chunk {i}");
            let role = &chunk["choices"][0]["delta"]["role"];
            assert_eq!(role.as_str(), (i == 0).then_some("assistant"), "chunk {i}");
            let finish = &chunk["choices"][0]["finish_reason"];
            assert_eq!(finish.as_str(), (i + 1 == EVENT_COUNT as usize).then_some("stop"), "chunk {i}");
        }
    }

    #[test]
    fn script_state_is_small() {
        assert!(std::mem::size_of::<Script>() <= 32, "Script is {} bytes", std::mem::size_of::<Script>());
    }
}
