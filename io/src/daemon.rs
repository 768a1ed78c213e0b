//! The daemon: the accept loop, turning handoffs into streams (or 400/503
//! answers), and the drain on shutdown.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use handoff_core::config::{Backend, Config, SocketType};
use handoff_core::handoff;
use handoff_core::http1::{self, ErrorStatus};
use handoff_core::limits::{Limits, Snapshot};
use handoff_core::mock;
use handoff_core::pool::StreamId;
use handoff_core::stream::{Source, Stream, StreamConfig};

use crate::backend::{BackendSetupError, BackendStream, OpenAiBackend};
use crate::client::respond_and_close;
use crate::listener::{self, BindError, Received};
use crate::runtime::{with_deadline, ReadyFd, Runtime, Timer};
use crate::stop::StopSignal;
use crate::{driver, sys};

/// How long an accepted connection may take to deliver its handoff message.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after an accept error such as EMFILE, instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// After the drain deadline, how long ended streams get to write their error event.
const FORCED_STOP_GRACE: Duration = Duration::from_secs(5);
/// What a 503 tells the client to wait.
const RETRY_AFTER_SECS: u32 = 1;

/// What every stream task shares.
pub struct Shared<R: Runtime> {
    pub runtime: R,
    pub limits: Arc<Limits>,
    pub stream_config: StreamConfig,
    pub stop: StopSignal,
    socket_type: SocketType,
    backend: Option<OpenAiBackend<R>>,
    handoffs: AtomicU64,
}

#[derive(Debug)]
pub enum DaemonError {
    Bind(BindError),
    Backend(BackendSetupError),
    Io(&'static str, io::Error),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Bind(error) => write!(f, "{error}"),
            DaemonError::Backend(error) => write!(f, "{error}"),
            DaemonError::Io(what, error) => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Serves handoffs until `shutdown` completes, then drains and returns the counters.
pub async fn run<R: Runtime>(
    runtime: R,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Snapshot, DaemonError> {
    let listener_fd = listener::bind(&config.socket_path, config.socket_type, config.socket_mode)
        .map_err(DaemonError::Bind)?;
    let listener =
        runtime.register(listener_fd).map_err(|e| DaemonError::Io("registering the listener", e))?;
    let backend = match &config.backend {
        Backend::Mock => None,
        Backend::OpenAi(openai) => {
            Some(OpenAiBackend::start(&runtime, openai, config.pool.clone()).map_err(DaemonError::Backend)?)
        }
    };
    let shared = Arc::new(Shared {
        runtime: runtime.clone(),
        limits: Limits::new(config.max_streams),
        stream_config: config.stream.clone(),
        stop: StopSignal::default(),
        socket_type: config.socket_type,
        backend,
        handoffs: AtomicU64::new(0),
    });
    tracing::info!(
        socket = %config.socket_path.display(),
        backend = if shared.backend.is_some() { "openai" } else { "mock" },
        max_streams = config.max_streams,
        "listening"
    );

    accept_until(&shared, &listener, shutdown).await;
    drop(listener);
    listener::remove_socket_file(&config.socket_path);
    tracing::info!(active = shared.limits.snapshot().active, "stopped accepting; draining");

    let drained = wait_for_streams(&shared, Instant::now() + config.drain_timeout).await;
    if !drained {
        tracing::warn!(active = shared.limits.snapshot().active, "drain deadline passed; ending streams");
        shared.stop.force();
        wait_for_streams(&shared, Instant::now() + FORCED_STOP_GRACE).await;
    }
    Ok(shared.limits.snapshot())
}

async fn accept_until<R: Runtime>(
    shared: &Arc<Shared<R>>,
    listener: &R::Fd,
    shutdown: impl Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut backoff: Option<R::Timer> = None;
    loop {
        let accepted = std::future::poll_fn(|cx| {
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            if let Some(timer) = &mut backoff {
                if timer.poll_expired(cx).is_pending() {
                    return Poll::Pending;
                }
                backoff = None;
            }
            listener.poll_read_with(cx, || listener::accept(listener.as_fd())).map(Some)
        })
        .await;
        match accepted {
            None => return,
            Some(Ok(conn)) => accept_handoff(shared, conn),
            Some(Err(error)) if is_resource_exhaustion(&error) => {
                tracing::warn!(%error, "accept failed; backing off");
                backoff = Some(shared.runtime.timer(Instant::now() + ACCEPT_BACKOFF));
            }
            Some(Err(error)) => tracing::debug!(%error, "accept failed"),
        }
    }
}

fn is_resource_exhaustion(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if [rustix::io::Errno::MFILE, rustix::io::Errno::NFILE, rustix::io::Errno::NOBUFS, rustix::io::Errno::NOMEM]
            .iter()
            .any(|errno| errno.raw_os_error() == code)
    )
}

/// Receives at once when the message is already there (the usual case: the module
/// sends right after connecting); otherwise waits in a task of its own, so
/// accepting never waits on any one connection.
fn accept_handoff<R: Runtime>(shared: &Arc<Shared<R>>, conn: OwnedFd) {
    let mut partial = Received::default();
    match listener::receive(conn.as_fd(), shared.socket_type, &mut partial) {
        Ok(received) => start_stream(shared, received),
        Err(error) if sys::would_block(&error) => {
            let shared_for_task = shared.clone();
            shared.runtime.spawn(receive_later(shared_for_task, conn, partial));
        }
        Err(error) => tracing::warn!(%error, "receiving a handoff failed"),
    }
}

async fn receive_later<R: Runtime>(shared: Arc<Shared<R>>, conn: OwnedFd, mut partial: Received) {
    let conn = match shared.runtime.register(conn) {
        Ok(conn) => conn,
        Err(error) => return tracing::warn!(%error, "registering a handoff connection failed"),
    };
    let socket_type = shared.socket_type;
    let receive = std::future::poll_fn(|cx| {
        conn.poll_read_with(cx, || listener::receive(conn.as_fd(), socket_type, &mut partial))
    });
    match with_deadline(&shared.runtime, Instant::now() + RECEIVE_TIMEOUT, receive).await {
        Some(Ok(received)) => start_stream(&shared, received),
        Some(Err(error)) => tracing::warn!(%error, "receiving a handoff failed"),
        None => tracing::warn!("a handoff connection sent nothing for {RECEIVE_TIMEOUT:?}; dropped"),
    }
}

/// Turns a received handoff into a running stream, or answers it with an error.
fn start_stream<R: Runtime>(shared: &Arc<Shared<R>>, received: Received) {
    if received.control_truncated {
        tracing::warn!(fds = received.fds_received, "handoff control data was truncated; closed every fd");
        return;
    }
    if received.fds_received > 1 {
        tracing::warn!(extra = received.fds_received - 1, "handoff carried extra fds; closed them");
    }
    let Some(client) = received.client else {
        tracing::warn!(bytes = received.data.len(), "handoff message carried no fd; dropped");
        return;
    };
    if let Err(error) = sys::set_nonblocking(client.as_fd()) {
        return tracing::warn!(%error, "handed-off fd cannot be made non-blocking; closed");
    }
    sys::set_nodelay_best_effort(client.as_fd());

    let decoded = if received.truncated {
        Err(handoff::HandoffError::Truncated)
    } else {
        handoff::decode(&received.data)
    };
    let handoff = match decoded {
        Ok(handoff) => handoff,
        Err(error) => {
            tracing::info!(%error, "bad handoff; answering 400");
            shared.limits.record_bad_handoff();
            let response = http1::error_response(
                ErrorStatus::BadRequest,
                &error.to_string(),
                "invalid_request_error",
                Some("bad_handoff"),
                None,
            );
            return respond(shared, client, response);
        }
    };
    for rejected in &handoff.rejected_headers {
        tracing::info!(header = %rejected.name, reason = rejected.reason, "response header dropped");
    }
    let Some(admission) = shared.limits.try_admit() else {
        tracing::info!("at the stream limit; answering 503");
        let response = http1::error_response(
            ErrorStatus::ServiceUnavailable,
            "the streaming daemon is at capacity",
            "server_overloaded",
            Some("over_capacity"),
            Some(RETRY_AFTER_SECS),
        );
        return respond(shared, client, response);
    };
    let fd = match shared.runtime.register(client) {
        Ok(fd) => fd,
        Err(error) => return tracing::warn!(%error, "registering a client fd failed; closed"),
    };
    let id = shared.handoffs.fetch_add(1, Ordering::Relaxed) + 1;
    let head = http1::client_head(&handoff.response_headers);
    let (source, backend) = match &shared.backend {
        None => {
            let user = handoff.user_id.as_deref().unwrap_or("anonymous");
            (Source::Mock(mock::Script::new(id, user, &handoff.last_user_text())), BackendStream::None)
        }
        Some(backend) => (Source::Backend, backend.open_stream(StreamId(id), &handoff)),
    };
    drop(handoff);
    let machine = Stream::new(Instant::now(), &shared.stream_config, head, source);
    shared.runtime.spawn(driver::StreamTask::new(shared.clone(), id, fd, machine, backend, admission));
}

fn respond<R: Runtime>(shared: &Arc<Shared<R>>, client: OwnedFd, response: bytes::Bytes) {
    match shared.runtime.register(client) {
        Ok(fd) => shared.runtime.spawn(respond_and_close(shared.runtime.clone(), fd, response)),
        Err(error) => tracing::warn!(%error, "registering a client fd failed; closed"),
    }
}

/// Waits until no stream is active or `deadline` passes; true when none is left.
async fn wait_for_streams<R: Runtime>(shared: &Arc<Shared<R>>, deadline: Instant) -> bool {
    const CHECK_EVERY: Duration = Duration::from_millis(50);
    loop {
        if shared.limits.snapshot().active == 0 {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        crate::runtime::sleep_until(&shared.runtime, (now + CHECK_EVERY).min(deadline)).await;
    }
}
