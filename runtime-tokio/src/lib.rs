//! handoff-tokio: the handoff daemon on the tokio runtime. The binary is
//! `src/main.rs`; the runtime adapter is a library so tests can run the daemon
//! in-process.

pub mod runtime;
