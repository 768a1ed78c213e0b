//! handoff-core: the handoff protocol as pure state machines.
//!
//! Nothing in this crate opens a socket, reads a clock or spawns a task. Bytes and
//! time go in as arguments; bytes to write, deadlines and decisions come out.
//! `handoff-io` carries the decisions out against real file descriptors over a
//! small `Runtime` trait, and the runtime crates (`handoff-tokio`, `handoff-smol`)
//! only implement that trait; `examples/blocking` drives the same machines on std
//! threads and `poll(2)`.
//!
//! # Modules
//! - [`handoff`]: decoding the message mod_socket_handoff sends with the client fd.
//! - [`attachments`]: a handoff's images and text files: which to read, the size
//!   limits, how they enter the request, when they may be deleted.
//! - [`sse`]: the WHATWG event-stream decoder (backend side) and our encoder (client side).
//! - [`openai`]: the chat-completions request body and the streamed chunk format.
//! - [`http1`]: HTTP/1.1 framing: backend request head, response head and body
//!   decoding, the client response head and error responses.
//! - [`stream`]: the per-client-stream machine that decides everything a stream does.
//! - [`mock`]: the mock backend's 18-event script, driven through [`stream`].
//! - [`pool`]: backend connection bookkeeping (which connection gets the next stream).
//! - [`limits`]: the concurrent-stream limit, counters and the benchmark summary.
//! - [`user_limits`]: per-user concurrent stream counts (`--max-streams-per-user`
//!   and a backend's `max_streams_per_user`), keyed by the handoff's `user_id`.
//! - [`admission`]: whether a received handoff becomes a stream, and the complete
//!   HTTP error response when it does not (400 bad handoff, 429 a user over its
//!   limit, 503 at capacity or shutting down).
//! - [`guard`]: who may hand off (`SO_PEERCRED`), which handed-off fds are
//!   served (stream sockets only), and the fd reserve for a full fd table.
//! - [`balance`]: whether a worker accepts the next handoff now or leaves it to a
//!   less loaded worker for a moment.
//! - [`redact`]: removing key-like text (API keys, bearer tokens) from anything
//!   forwarded to a browser.
//! - [`metrics`]: per-worker counters and histograms, the outcome labels, the
//!   per-stream summary, and the metrics endpoint's HTTP/1.1.
//! - [`config`]: the one command-line and environment definition both daemons use.
//!
//! # The contract of every machine
//! Machines take `&mut self`, hold no locks and never block. Inputs arrive through
//! `handle_*` methods that carry `now`; outputs leave through `poll_*` methods.
//!
//! **The drain rule:** after every input, call `poll_output` (or `poll_command`)
//! until it returns the drained sentinel (`Output::Timeout(t)` for a stream, `None`
//! for the pool), then sleep until the returned deadline or the next input,
//! whichever comes first. Anything queued for output shows up as due at once, so a
//! caller that follows the rule never leaves output waiting for an unrelated timer.
//!
//! # The drive loop
//! Decode the handoff, build a [`stream::Stream`], then alternate: drain
//! `poll_output` until `Timeout`, wait, feed what happened back. Here the client
//! takes every write at once and the mock backend's pacing deadlines are met by
//! jumping the clock to them.
//!
//! ```
//! use std::time::Instant;
//! use handoff_core::stream::{Input, Outcome, Output, Source, Stream, StreamConfig};
//! use handoff_core::{handoff, http1, mock};
//!
//! let handoff = handoff::decode(br#"{"prompt":"hi"}"#).expect("a valid handoff");
//! let config = StreamConfig::default();
//! let head = http1::client_head(&handoff.response_headers);
//! let mut now = Instant::now();
//! let script = mock::Script::for_handoff(1, &handoff);
//! let mut stream = Stream::new(now, &config, head, Source::Mock(script));
//!
//! let mut client = Vec::new();
//! let outcome = 'run: loop {
//!     // The drain rule: take outputs until the machine names its next deadline.
//!     let mut took = 0;
//!     let deadline = loop {
//!         match stream.poll_output() {
//!             Output::Write(bytes) => {
//!                 took += bytes.len();
//!                 client.extend_from_slice(&bytes);
//!             }
//!             Output::CancelBackend | Output::CloseClient => {}
//!             Output::Done(outcome) => break 'run outcome,
//!             Output::Timeout(deadline) => break deadline,
//!         }
//!     };
//!     if took > 0 {
//!         // A real runtime writes to the socket and reports what it took.
//!         stream.handle_input(now, Input::ClientTook(took));
//!     } else {
//!         // Nothing else will happen: sleep until the deadline.
//!         now = now.max(deadline);
//!         stream.handle_input(now, Input::Timeout);
//!     }
//! };
//! assert_eq!(outcome, Outcome::Completed);
//! assert!(client.starts_with(b"HTTP/1.1 200"));
//! assert!(client.ends_with(b"data: [DONE]\n\n"));
//! ```
//!
//! # Errors and panics
//! Every decoder returns a typed error for bad input and never panics on any byte
//! sequence; the fuzz targets in `fuzz/` hold it to that. `NeedData` is a value, not
//! an error.

// A library others embed: every public item says what it is for (clippy -D
// warnings in CI turns a missing doc into a failure).
#![warn(missing_docs)]

pub mod admission;
pub mod attachments;
pub mod backends;
pub mod balance;
pub mod config;
pub mod delivery;
pub mod guard;
pub mod handoff;
pub mod http1;
mod json;
pub mod limits;
pub mod liveness;
pub mod metrics;
pub mod mock;
pub mod openai;
pub mod pool;
pub mod records;
pub mod redact;
pub mod reload;
pub mod sse;
pub mod stream;
#[cfg(any(test, feature = "__testing"))]
#[doc(hidden)]
pub mod testing;
pub mod token_budget;
pub mod user_limits;
