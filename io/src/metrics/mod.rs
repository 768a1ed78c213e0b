//! `--metrics-addr`: `GET /metrics` (Prometheus text) and `GET /healthz`, on a
//! thread and runtime of their own so a hung worker is reported (503) rather
//! than hanging the scrape; and the info line each finished stream logs.
//!
//! What is counted, and the HTTP/1.1 of the endpoint, are core's
//! (`handoff_core::metrics`); this module binds, accepts, reads one request
//! head within core's bounds, writes the answer and closes.

mod exposition;
mod log;

use std::future::Future;
use std::io;
use std::net::ToSocketAddrs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use handoff_core::config::Config;
use handoff_core::liveness::Liveness;
use handoff_core::metrics::endpoint::{
    self, EndpointLimits, Health, MetricsAddr, MetricsConfig, Parsed, Route,
};

use crate::daemon::{DaemonError, Global, Listening, WorkerPlan};
use crate::runtime::{with_deadline, ReadyFd, Runtime};
use crate::sys;

pub use log::{log_stream, Identity};

/// What `handoff_build_info` reports.
#[derive(Debug, Clone)]
pub struct BuildInfo {
    pub version: &'static str,
    /// `tokio` or `smol`.
    pub runtime: String,
    pub threads: usize,
}

/// The endpoint's part of a [`WorkerPlan`]: what its thread serves.
#[derive(Debug)]
pub struct Serving {
    build: BuildInfo,
    /// A Unix socket path we bound, removed when the endpoint stops.
    unix_path: Option<PathBuf>,
}

/// Binds `--metrics-addr` when given, and returns the plan its thread runs
/// (through the same worker function as the handoff workers, so it gets its
/// own runtime). `binary` is `handoff-tokio` or `handoff-smol`.
pub fn plan(binary: &str, listening: &Listening, threads: usize) -> Result<Option<WorkerPlan>, DaemonError> {
    let config = listening.config();
    let Some(metrics) = &config.metrics else { return Ok(None) };
    let (listener, bound) = bind(metrics)?;
    tracing::info!(addr = %bound, "metrics listening");
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        runtime: binary.strip_prefix("handoff-").unwrap_or(binary).to_owned(),
        threads,
    };
    let unix_path = match &metrics.addr {
        MetricsAddr::Unix(path) => Some(path.clone()),
        MetricsAddr::Tcp { .. } => None,
        // An address kind a newer core added is no path on disk: nothing to remove later.
        _ => None,
    };
    Ok(Some(listening.metrics_plan(listener, Serving { build, unix_path })))
}

fn bind_error(what: &'static str) -> impl FnOnce(io::Error) -> DaemonError {
    move |error| DaemonError::Io(what, error)
}

/// A non-blocking listener on the address, and the address as bound (the real
/// port when 0 was asked for).
fn bind(config: &MetricsConfig) -> Result<(OwnedFd, String), DaemonError> {
    match &config.addr {
        MetricsAddr::Tcp { host, port } => {
            let addrs: Vec<_> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(bind_error("resolving the --metrics-addr host"))?
                .collect();
            let listener =
                std::net::TcpListener::bind(&addrs[..]).map_err(bind_error("binding --metrics-addr"))?;
            listener.set_nonblocking(true).map_err(bind_error("making the metrics listener non-blocking"))?;
            let bound = listener.local_addr().map_err(bind_error("reading the metrics address"))?;
            Ok((OwnedFd::from(listener), bound.to_string()))
        }
        MetricsAddr::Unix(path) => {
            remove_stale_socket(path)?;
            let listener = std::os::unix::net::UnixListener::bind(path).map_err(|error| {
                DaemonError::Io(
                    "binding --metrics-addr",
                    io::Error::new(error.kind(), format!("{}: {error}", path.display())),
                )
            })?;
            listener.set_nonblocking(true).map_err(bind_error("making the metrics listener non-blocking"))?;
            Ok((OwnedFd::from(listener), path.display().to_string()))
        }
        // An address kind a newer core parses that this runtime cannot bind: refuse
        // at start rather than run without the endpoint asked for.
        _ => Err(DaemonError::Io(
            "binding --metrics-addr",
            io::Error::new(io::ErrorKind::Unsupported, "this kind of address is not supported"),
        )),
    }
}

/// A socket file nobody accepts on (a previous run's) is removed; a live one,
/// or anything that is not a socket, is refused.
fn remove_stale_socket(path: &std::path::Path) -> Result<(), DaemonError> {
    let refuse = |why: &str| {
        DaemonError::Io(
            "binding --metrics-addr",
            io::Error::new(io::ErrorKind::AddrInUse, format!("{}: {why}", path.display())),
        )
    };
    match std::fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(DaemonError::Io("checking the --metrics-addr path", error)),
        Ok(meta) if !meta.file_type().is_socket() => Err(refuse("exists and is not a socket")),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => Err(refuse("another process is listening on it")),
            Err(_) => std::fs::remove_file(path).map_err(bind_error("removing a stale metrics socket")),
        },
    }
}

/// What every connection of the endpoint shares.
struct State {
    global: Arc<Global>,
    liveness: Liveness,
    limits: EndpointLimits,
    exposition: exposition::Exposition,
    open: AtomicUsize,
}

/// Serves the endpoint until `shutdown` (after every worker has stopped, so
/// `/healthz` says 503 through the whole drain).
pub async fn serve<R: Runtime>(
    runtime: R,
    listener: OwnedFd,
    global: Arc<Global>,
    config: Config,
    serving: Serving,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let listener = runtime.register(listener).map_err(bind_error("registering the metrics listener"))?;
    let limits = config.metrics.map(|metrics| metrics.limits).unwrap_or_default();
    let state = Arc::new(State {
        exposition: exposition::Exposition::new(Arc::clone(&global), serving.build),
        global,
        liveness: config.liveness,
        limits,
        open: AtomicUsize::new(0),
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = std::future::poll_fn(|cx| {
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_read_with(cx, || accept(&listener)).map(Some)
        })
        .await;
        match accepted {
            None => break,
            Some(Ok(conn)) => {
                if state.open.load(Ordering::Relaxed) >= state.limits.max_connections {
                    tracing::debug!("metrics connection over the limit; closed");
                    continue;
                }
                state.open.fetch_add(1, Ordering::Relaxed);
                let open = Open(Arc::clone(&state));
                let task_runtime = runtime.clone();
                runtime.spawn(async move {
                    if let Err(error) = answer(&task_runtime, &open.0, conn).await {
                        tracing::debug!(%error, "metrics connection failed");
                    }
                    drop(open);
                });
            }
            Some(Err(error)) => {
                // EMFILE and the like: pause rather than spin on the same error.
                tracing::debug!(%error, "accepting a metrics connection failed");
                crate::runtime::sleep_until(&runtime, runtime.now() + Duration::from_millis(100)).await;
            }
        }
    }
    if let Some(path) = serving.unix_path {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Counts a connection being answered until dropped.
struct Open(Arc<State>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn accept(listener: &impl AsFd) -> io::Result<OwnedFd> {
    rustix::net::accept_with(listener, rustix::net::SocketFlags::NONBLOCK | rustix::net::SocketFlags::CLOEXEC)
        .map_err(io::Error::from)
}

/// Reads one request head (bounded in size and time), writes the answer
/// (bounded in time), shuts down writing and closes.
async fn answer<R: Runtime>(runtime: &R, state: &State, conn: OwnedFd) -> io::Result<()> {
    let fd = runtime.register(conn)?;
    let limits = &state.limits;
    let mut head = Vec::with_capacity(512);
    let read = std::future::poll_fn(|cx| loop {
        match endpoint::parse_request(&head, limits) {
            Parsed::Incomplete => {}
            parsed => return Poll::Ready(Ok(parsed)),
        }
        let mut chunk = [0u8; 1024];
        let room = limits.max_request_head.saturating_sub(head.len()).clamp(1, chunk.len());
        match fd
            .poll_read_with(cx, || rustix::io::read(fd.as_fd(), &mut chunk[..room]).map_err(io::Error::from))
        {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before a request",
                )))
            }
            Poll::Ready(Ok(n)) => head.extend_from_slice(&chunk[..n]),
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
        }
    });
    let response = match with_deadline(runtime, runtime.now() + limits.read_timeout, read).await {
        None => endpoint::error_response(408),
        Some(Err(error)) => return Err(error),
        Some(Ok(Parsed::Refused(status))) => endpoint::error_response(status),
        Some(Ok(Parsed::Incomplete)) => endpoint::error_response(400),
        Some(Ok(Parsed::Request { route: None, .. })) => endpoint::error_response(404),
        Some(Ok(Parsed::Request { route: Some(Route::Healthz), head_only })) => {
            let alive = state.global.alive(runtime.now(), &state.liveness);
            Health::of(state.global.is_draining(), alive).response(head_only)
        }
        Some(Ok(Parsed::Request { route: Some(Route::Metrics), head_only })) => {
            match state.exposition.encode() {
                Ok(text) => endpoint::response(200, exposition::CONTENT_TYPE, text.as_bytes(), head_only),
                Err(error) => {
                    tracing::warn!(%error, "encoding the metrics failed");
                    endpoint::response(500, "text/plain; charset=utf-8", b"encoding failed\n", head_only)
                }
            }
        }
        // A page a newer core routes that this runtime does not serve: as for any other path.
        Some(Ok(Parsed::Request { .. })) => endpoint::error_response(404),
        // A parse result a newer core added: answer as for a malformed head.
        Some(Ok(_)) => endpoint::error_response(400),
    };
    let mut written = 0;
    let write = std::future::poll_fn(|cx| {
        while written < response.len() {
            let rest = &response[written..];
            let send = || {
                rustix::net::send(fd.as_fd(), rest, rustix::net::SendFlags::NOSIGNAL).map_err(io::Error::from)
            };
            match fd.poll_write_with(cx, send) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero))),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            }
        }
        Poll::Ready(Ok(()))
    });
    match with_deadline(runtime, runtime.now() + limits.write_timeout, write).await {
        None => return Err(io::Error::new(io::ErrorKind::TimedOut, "writing the response timed out")),
        Some(result) => result?,
    }
    sys::shutdown_write(fd.as_fd())?;
    // Until the client closes (briefly): closing with its bytes unread would
    // reset the connection and could destroy the response's tail.
    let eof = std::future::poll_fn(|cx| {
        fd.poll_read_with(cx, || {
            sys::discard_input(fd.as_fd()).and_then(|eof| {
                if eof {
                    Ok(())
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                }
            })
        })
    });
    let _ = with_deadline(runtime, runtime.now() + limits.close_linger, eof).await;
    Ok(())
}
