//! handoff-io: the daemon's I/O, written once.
//!
//! Both daemons (`handoff-tokio`, `handoff-smol`) are this crate plus a
//! [`runtime::Runtime`] implementation of about a hundred lines: spawning, a
//! timer, fd readiness and TCP connect. Everything here is generic over that
//! trait and never spawns, sleeps or connects except through it. h2 and
//! tokio-rustls need only tokio's I/O *traits*, so the TLS + HTTP/2 path is the
//! same code on both runtimes.
//!
//! Behaviour decisions (status codes, `[DONE]` rules, cancel on disconnect, pool
//! choice, limits) live in `handoff-core`; this crate moves bytes.

pub mod accounts;
pub mod activation;
pub mod attachments;
pub mod backend;
pub mod cli;
pub mod client;
pub mod config_file;
pub mod daemon;
pub mod driver;
pub mod early_signal;
pub mod entry;
pub mod guard;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod records;
pub mod reload;
pub mod runtime;
pub mod stop;
pub mod sys;
