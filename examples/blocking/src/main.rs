//! handoff-blocking: the handoff daemon on std threads and poll(2), serving the
//! mock backend only. It exists to show that handoff-core is a library: one
//! thread per module connection, blocking in poll(2) on the client socket and
//! the deadline core returns; admission, every byte written, every deadline and
//! the end of each stream come from core.
//!
//! Stopping (SIGTERM or SIGINT) follows io/'s order: the socket path goes, the
//! queued handoffs get core's 503, running streams finish until the drain
//! deadline; then they are ended with core's `Shutdown` input and given the
//! forced-stop grace.

mod client;
mod listener;
mod stream;

use std::fmt::Display;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Instant;

use handoff_core::config::{BackendKind, Config, Settings};
use handoff_core::limits::{self, Limits};
use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::SocketFlags;

use crate::client::wait;

/// What every connection's thread shares; touched once per handoff, never per event.
pub struct Shared {
    pub config: Config,
    pub limits: Arc<Limits>,
    /// Set once stopping began: core answers late handoffs 503.
    pub draining: AtomicBool,
    /// Hangs up once the drain deadline passed (its other end is dropped).
    pub stop: UnixStream,
    /// The running handoff number the mock script greets with.
    pub next_id: AtomicU64,
}

fn main() -> ExitCode {
    let config =
        match settings(std::env::args().skip(1)).and_then(|s| s.validate().map_err(|e| e.to_string())) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("handoff-blocking: {error}");
                return ExitCode::from(2);
            }
        };
    // Before the socket exists, so a stop signal is never death by the default action.
    let signals = match stop_signals() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("handoff-blocking: installing signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, raised);
    let listener = match listener::bind(&config) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("handoff-blocking: {error}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("handoff-blocking: listening on {} (mock backend)", config.socket_path.display());
    let (stop, stop_writer) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(error) => {
            eprintln!("handoff-blocking: creating the stop socket pair: {error}");
            return ExitCode::FAILURE;
        }
    };
    let limits = Limits::new(config.max_streams);
    let shared = Arc::new(Shared {
        config,
        limits,
        draining: AtomicBool::new(false),
        stop,
        next_id: AtomicU64::new(0),
    });
    // Every connection thread holds a sender: the channel disconnects once all end.
    let (live, all_ended) = mpsc::channel::<()>();
    accept_until(&shared, &listener, &signals, &live);

    let config = &shared.config;
    if config.socket_origin.unlinks_on_stop() {
        let _ = std::fs::remove_file(&config.socket_path);
    }
    shared.draining.store(true, Ordering::Release);
    let mut queued = 0;
    while config.socket_origin.answers_backlog_on_stop() {
        match rustix::net::accept_with(&listener, SocketFlags::CLOEXEC) {
            Ok(conn) => {
                queued += 1;
                spawn(&shared, conn, &live);
            }
            Err(Errno::INTR) => {}
            Err(_) => break,
        }
    }
    drop((listener, live));
    eprintln!("handoff-blocking: stopped accepting ({queued} queued handoffs answered); draining");
    if let Err(RecvTimeoutError::Timeout) = all_ended.recv_timeout(config.drain_timeout) {
        eprintln!("handoff-blocking: drain deadline passed; ending streams");
        drop(stop_writer);
        let _ = all_ended.recv_timeout(config.forced_stop_grace);
    }
    if config.benchmark {
        println!("{}", limits::summary(&shared.limits.snapshot()));
    }
    ExitCode::SUCCESS
}

/// The flags the scenarios give a mock daemon, onto core's `Settings`.
fn settings(mut args: impl Iterator<Item = String>) -> Result<Settings, String> {
    fn parse<T: FromStr<Err: Display>>(flag: &str, value: &str) -> Result<T, String> {
        value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))
    }
    let mut settings = Settings::default();
    while let Some(flag) = args.next() {
        if flag == "--benchmark" {
            settings.benchmark = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--socket" => settings.socket = value.into(),
            "--delay" => settings.delay = parse(&flag, &value)?,
            "--backend" => settings.backend = parse(&flag, &value)?,
            "--socket-type" => settings.socket_type = parse(&flag, &value)?,
            "--mode" => settings.mode = value,
            "--max-connections" => settings.max_connections = parse(&flag, &value)?,
            "--drain-timeout" => settings.drain_timeout = parse(&flag, &value)?,
            // Validated, but every stream has its own thread: there are no workers.
            "--threads" => settings.threads = parse(&flag, &value)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if settings.backend != BackendKind::Mock {
        return Err("this example serves the mock backend only".to_owned());
    }
    Ok(settings)
}

/// A socket pair whose read end turns readable on SIGINT or SIGTERM.
fn stop_signals() -> std::io::Result<UnixStream> {
    let (reader, writer) = UnixStream::pair()?;
    writer.set_nonblocking(true)?;
    let writer = Arc::new(writer);
    for signal in [rustix::process::Signal::INT, rustix::process::Signal::TERM] {
        let writer = Arc::clone(&writer);
        // SAFETY: the action only calls write(2) on a non-blocking socket, which is
        // async-signal-safe; signal-hook-registry keeps errno intact around it.
        unsafe {
            signal_hook_registry::register(signal.as_raw(), move || {
                let _ = rustix::io::write(&*writer, &[1]);
            })
        }?;
    }
    Ok(reader)
}

/// Accepts until a stop signal, each connection on a thread of its own.
fn accept_until(shared: &Arc<Shared>, listener: &OwnedFd, signals: &UnixStream, live: &Sender<()>) {
    loop {
        match wait(listener, PollFlags::IN, Some(signals.as_fd()), None) {
            Ok(ready) if ready.stop => return,
            Ok(_) => {}
            Err(error) => return eprintln!("handoff-blocking: waiting for handoffs failed: {error}"),
        }
        match rustix::net::accept_with(listener, SocketFlags::CLOEXEC) {
            Ok(conn) => spawn(shared, conn, live),
            Err(Errno::AGAIN | Errno::INTR | Errno::CONNABORTED) => {}
            Err(error) => {
                eprintln!("handoff-blocking: accept failed: {error}; backing off");
                let _ =
                    wait(signals, PollFlags::IN, None, Some(Instant::now() + shared.config.accept_backoff));
            }
        }
    }
}

fn spawn(shared: &Arc<Shared>, conn: OwnedFd, live: &Sender<()>) {
    let (shared, live) = (Arc::clone(shared), live.clone());
    let spawned = std::thread::Builder::new().name("handoff-stream".into()).spawn(move || {
        stream::serve(&shared, conn);
        drop(live);
    });
    if let Err(error) = spawned {
        eprintln!("handoff-blocking: starting a stream thread failed: {error}; connection closed");
    }
}
