//! The mock backend's script: 18 content events per stream, three dynamic lines
//! (connection number, user id, the prompt cut to 50 characters) and fifteen fixed
//! ones. [`crate::stream::Stream`] paces it, so mock streams obey every stream rule.
//!
//! SKELETON: the API below is the contract; bodies are being written.

use bytes::BytesMut;

/// Content events per mock stream.
pub const EVENT_COUNT: u32 = 18;

/// Longest prompt echo, in characters.
pub const PROMPT_PREVIEW_CHARS: usize = 50;

/// Where one mock stream is in its script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    _private: (),
}

impl Script {
    /// `connection` is the daemon's running handoff number.
    pub fn new(connection: u64, user_id: &str, prompt: &str) -> Script {
        let _ = (connection, user_id, prompt);
        todo!("Script::new")
    }

    /// Appends the next event (`data: {"content":..,"index":N}\n\n`) to `out` and
    /// returns true; false once all [`EVENT_COUNT`] have been written.
    pub fn write_next(&mut self, out: &mut BytesMut) -> bool {
        let _ = out;
        todo!("write_next")
    }
}
