//! Property checks over arbitrary bytes: one function per fuzz target in `fuzz/`.
//!
//! Each function takes the fuzzer's input and returns `Err` naming the first
//! property the code under test broke; a panic inside the code under test is a
//! failure too. The fuzz targets are one-line calls into these functions, and
//! `core/tests/fuzz_corpus.rs` replays the committed corpora and regression inputs
//! through them on stable, so the same code runs in CI without nightly.
//!
//! Inputs that need decisions besides the bytes under test (where to split a
//! read, which limits apply) take them from their first bytes; each function says
//! how. `fuzz/seeds.py` writes the seed corpora in these layouts.

use std::sync::OnceLock;
use std::time::Instant;

mod chunk;
mod event_stream;
mod framing;
mod payload;
mod raw_events;
mod script;
mod stream_ops;

/// What every check returns: `Err` says which property broke.
pub type Check = fn(&[u8]) -> Result<(), String>;

/// Every target by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("handoff", handoff),
    ("sse", sse),
    ("openai_chunk", openai_chunk),
    ("http1", http1),
    ("stream", stream),
    ("pool", pool),
    ("sse_raw", sse_raw),
];

/// [`crate::handoff::decode`] on arbitrary bytes. On success: the client head
/// built from the kept `response_headers` parses with httparse as exactly the fixed
/// SSE head fields followed by those headers (nothing injected, nothing lost, no
/// name twice); the backend request head carries the test pattern intact; and the
/// request body is JSON that says what the handoff says (see [`openai_chunk`]).
pub fn handoff(data: &[u8]) -> Result<(), String> {
    payload::check(data)
}

/// The SSE decoder, differential. Layout: `[limits, cut count, cuts as u16 BE...,
/// stream...]`. The stream decoded whole, cut at the given points, and one byte at
/// a time must give identical events, identical errors, the same `retry` and
/// `finish()` answer; the decoder's heap stays within a bound derived from its
/// limits after every call, and drops to the last event id once it finished.
pub fn sse(data: &[u8]) -> Result<(), String> {
    event_stream::check(data)
}

/// The passthrough splitter ([`crate::sse::RawEvents`]), differential. Layout:
/// `[limit, cut count, cuts as u16 BE..., stream...]`. Whole, cut and one byte at
/// a time it releases the same bytes: exactly the input up to its last event
/// boundary (unless an event passed the limit), and holds no more than its limit.
pub fn sse_raw(data: &[u8]) -> Result<(), String> {
    raw_events::check(data)
}

/// [`crate::openai::parse_chunk`] and [`crate::openai::error_from_status`] on the
/// input as (lossy) UTF-8 never panic; then the input, read as a script, builds a
/// [`crate::handoff::Handoff`] (any strings, any raw JSON content, any `f64`
/// temperature) whose [`crate::openai::request_body`] must parse as a JSON object
/// with `"stream":true`, the model, every message role and content as given,
/// `max_tokens`, and a finite temperature.
pub fn openai_chunk(data: &[u8]) -> Result<(), String> {
    chunk::check(data)
}

/// Backend response heads and bodies, differential. Layout: `[cut count, cuts as
/// u16 BE..., responses...]`. The bytes read whole, cut at the given points, and
/// one byte at a time (as a connection reader would: keep what is unconsumed) must
/// give the same heads, the same body bytes, the same error and the same end of
/// stream, following keep-alive responses up to a small count.
pub fn http1(data: &[u8]) -> Result<(), String> {
    framing::check(data)
}

/// The stream machine ([`crate::stream::Stream`]) for the mock script and a
/// backend, driven by a script of inputs (heads with any status, arbitrary and
/// realistic body bytes, ends, failures, the client leaving, shutdown, timeouts
/// with clock moves). Layout: `[source, (mock: connection u64, user id, prompt),
/// steps...]`; see `stream_ops`. Every step is checked by
/// [`crate::stream::testing::Harness`]; here besides: the memory a running stream
/// holds stays within a bound from its limits and is zero once it finished, and a
/// stream that ends early while its backend is still sending cancels it.
pub fn stream(data: &[u8]) -> Result<(), String> {
    stream_ops::check(data)
}

/// The pool simulation ([`crate::pool::simulation::simulate`]): arbitrary runtime and
/// backend events, with the pool's invariants checked after every step.
pub fn pool(data: &[u8]) -> Result<(), String> {
    crate::pool::simulation::simulate(start(), data)
}

/// The one clock reading the checks use: the simulations only add offsets to it.
#[allow(clippy::disallowed_methods)]
fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}
