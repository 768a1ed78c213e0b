//! The daemon: the accept loop, turning handoffs into streams (or 400/503
//! answers), and the drain on shutdown: the socket path goes first, every
//! handoff already queued is answered 503, then running streams finish until
//! the drain deadline. A socket inherited from the service manager keeps its
//! path and its queue for the next daemon (core's `SocketOrigin`).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use handoff_core::config::{Backend, Config, SocketOrigin, SocketType};
use handoff_core::http1;
use handoff_core::limits::{Limits, Snapshot};
use handoff_core::liveness::Liveness;
use handoff_core::metrics::{Metrics, Rejection, WorkerMetrics};
use handoff_core::mock;
use handoff_core::pool::StreamId;
use handoff_core::stream::close::Closing;
use handoff_core::stream::{Source, Stream, StreamConfig};
use handoff_core::{admission, handoff};

use crate::activation::ActivationError;
use crate::backend::{BackendSetupError, BackendStream, OpenAiBackend};
use crate::client::{ClientIo, ClientSocket, FdClient};
use crate::listener::{self, BindError, Received};
use crate::notify::{self, Notifier};
use crate::runtime::{with_deadline, ReadyFd, Runtime, Timer};
use crate::stop::StopSignal;
use crate::{driver, sys};

/// What every worker shares: admission, counters and the drain flag. Touched
/// once per handoff or per stream (an atomic each), never per event.
pub struct Global {
    pub limits: Arc<Limits>,
    /// Set once shutdown began: queued handoffs are answered 503.
    draining: AtomicBool,
    /// The socket path is removed once, by the first worker to stop.
    unlinked: AtomicBool,
    handoffs: AtomicU64,
    /// Every worker's open client sockets: what a worker's own count is weighed
    /// against when it decides whether to accept (two atomic adds per stream).
    open_sockets: AtomicU64,
    /// The clock heartbeats are stamped on (time since this).
    started: Instant,
    /// Each worker's heartbeat, registered once as it starts; read (under the
    /// lock) only by whoever asks whether the daemon is alive, never per event.
    beats: Mutex<Vec<Arc<AtomicU64>>>,
    /// Every worker's counters, summed only when scraped.
    pub metrics: Arc<Metrics>,
}

impl Global {
    pub fn new(limits: Arc<Limits>) -> Arc<Global> {
        Arc::new(Global {
            limits,
            draining: AtomicBool::new(false),
            unlinked: AtomicBool::new(false),
            handoffs: AtomicU64::new(0),
            open_sockets: AtomicU64::new(0),
            started: Instant::now(),
            beats: Mutex::new(Vec::new()),
            metrics: Metrics::new(),
        })
    }

    /// True once shutdown began (the health endpoint answers 503 then).
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// A new worker's heartbeat, stamped now.
    fn heartbeat(&self, now: Instant) -> Heartbeat {
        let heartbeat = Heartbeat { started: self.started, stamp: Arc::new(AtomicU64::new(0)) };
        heartbeat.beat(now);
        if let Ok(mut beats) = self.beats.lock() {
            beats.push(Arc::clone(&heartbeat.stamp));
        }
        heartbeat
    }

    /// How many workers' accept loops have started (each registers its heartbeat
    /// as it begins to accept).
    pub fn accepting_workers(&self) -> usize {
        self.beats.lock().map(|beats| beats.len()).unwrap_or(0)
    }

    /// Whether every worker's accept loop turned recently, as core's
    /// [`Liveness`] judges it.
    pub fn alive(&self, now: Instant, liveness: &Liveness) -> bool {
        let Ok(beats) = self.beats.lock() else { return false };
        let millis = |stamp: &Arc<AtomicU64>| Duration::from_millis(stamp.load(Ordering::Relaxed));
        liveness.alive(now.saturating_duration_since(self.started), beats.iter().map(millis))
    }
}

/// One worker's stamp: milliseconds since [`Global`]'s start when its accept
/// loop last turned.
struct Heartbeat {
    started: Instant,
    stamp: Arc<AtomicU64>,
}

impl Heartbeat {
    fn beat(&self, now: Instant) {
        let millis = now.saturating_duration_since(self.started).as_millis();
        self.stamp.store(u64::try_from(millis).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// What every stream task of one worker shares. A worker's streams, timers and
/// backend connections stay on its thread; only `global` is seen by the others.
pub struct Shared<R: Runtime> {
    pub runtime: R,
    pub limits: Arc<Limits>,
    pub stream_config: StreamConfig,
    pub stop: StopSignal,
    /// This worker's counters (only it writes them).
    pub metrics: Arc<WorkerMetrics>,
    /// One info line per finished stream (not under `--benchmark`).
    pub(crate) log_streams: bool,
    global: Arc<Global>,
    socket_type: SocketType,
    socket_origin: SocketOrigin,
    receive_timeout: Duration,
    retry_after_secs: u32,
    backend: Option<OpenAiBackend<R>>,
    /// Client sockets still open (streams closing after their outcome, error
    /// responses being written) and handoffs still being received: the worker
    /// exits only once these are done, so no answer is cut off.
    open_sockets: AtomicU64,
}

impl<R: Runtime> Shared<R> {
    /// Counts a socket (or a pending receive) until the guard drops.
    pub fn hold_socket(self: &Arc<Self>) -> SocketHold<R> {
        self.open_sockets.fetch_add(1, Ordering::Relaxed);
        self.global.open_sockets.fetch_add(1, Ordering::Relaxed);
        SocketHold(Arc::clone(self))
    }
}

/// Keeps the worker from exiting while a client socket is still being answered.
pub struct SocketHold<R: Runtime>(Arc<Shared<R>>);

impl<R: Runtime> Drop for SocketHold<R> {
    fn drop(&mut self) {
        self.0.open_sockets.fetch_sub(1, Ordering::Relaxed);
        self.0.global.open_sockets.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<R: Runtime> Shared<R> {
    /// What the mock backend's streams need (tests drive stream tasks with it).
    pub fn for_mock(runtime: R, limits: Arc<Limits>, stream_config: StreamConfig) -> Arc<Shared<R>> {
        let global = Global::new(Arc::clone(&limits));
        Arc::new(Shared {
            runtime,
            metrics: global.metrics.register(),
            log_streams: true,
            global,
            limits,
            stream_config,
            stop: StopSignal::default(),
            socket_type: SocketType::Seqpacket,
            socket_origin: SocketOrigin::Bound,
            receive_timeout: Duration::from_secs(5),
            retry_after_secs: 1,
            backend: None,
            open_sockets: AtomicU64::new(0),
        })
    }
}

/// The bound socket and what the workers share; made once, before any worker.
pub struct Listening {
    config: Config,
    listener: OwnedFd,
    global: Arc<Global>,
    /// The service manager's socket, when there is one (worker 0 talks to it).
    notifier: Option<Arc<Notifier>>,
}

/// One worker's part: its own registration of the listening socket and its
/// share of the backend pool's limits.
pub struct WorkerPlan {
    index: usize,
    config: Config,
    listener: OwnedFd,
    global: Arc<Global>,
    role: Role,
    notifier: Option<Arc<Notifier>>,
}

/// What a plan's thread serves: handoffs, or the metrics endpoint (on
/// `listener`, its own socket).
enum Role {
    Handoffs,
    Metrics(crate::metrics::Serving),
}

impl Listening {
    /// Takes the socket from the service manager when socket-activated, or
    /// binds it (a live daemon's is refused, a stale one replaced).
    pub fn bind(mut config: Config) -> Result<Listening, DaemonError> {
        let notifier = Notifier::from_env();
        let listener = match crate::activation::take_listener(config.socket_type)
            .map_err(DaemonError::Activation)?
        {
            Some((listener, path)) => {
                config.socket_origin = SocketOrigin::Inherited;
                // The path systemd bound is the one clients use; logs name it.
                if let Some(path) = &path {
                    config.socket_path = path.into();
                }
                tracing::info!(
                    inherited = path.as_deref().unwrap_or("(unnamed)"),
                    "socket activated: listening on fd 3"
                );
                listener
            }
            None => listener::bind(&config.socket_path, config.socket_type, listener::Access::of(&config))
                .map_err(DaemonError::Bind)?,
        };
        let global = Global::new(Limits::new(config.max_streams));
        tracing::info!(
            socket = %config.socket_path.display(),
            backend = if matches!(config.backend, Backend::Mock) { "mock" } else { "openai" },
            max_streams = config.max_streams,
            "listening"
        );
        Ok(Listening { config, listener, global, notifier })
    }

    /// What the workers share: admission, the drain flag and their heartbeats
    /// (for whatever reports on the daemon from outside the workers).
    pub fn global(&self) -> Arc<Global> {
        Arc::clone(&self.global)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics endpoint's plan: its thread serves `listener` (see
    /// [`crate::metrics::plan`]).
    pub(crate) fn metrics_plan(&self, listener: OwnedFd, serving: crate::metrics::Serving) -> WorkerPlan {
        let (config, global) = (self.config.clone(), Arc::clone(&self.global));
        WorkerPlan {
            index: usize::MAX,
            config,
            listener,
            global,
            role: Role::Metrics(serving),
            notifier: None,
        }
    }

    /// Worker `index` of `count`. Every worker accepts from the same socket
    /// through its own descriptor; the backend pool's limits are divided among
    /// workers (each owns its connections), rounded up so each has at least one.
    pub fn worker(&self, index: usize, count: usize) -> Result<WorkerPlan, DaemonError> {
        let listener =
            self.listener.try_clone().map_err(|e| DaemonError::Io("duplicating the listening socket", e))?;
        let mut config = self.config.clone();
        let count = count.max(1);
        let pool = &mut config.pool;
        pool.max_connections = pool.max_connections.div_ceil(count);
        pool.max_connecting = pool.max_connecting.div_ceil(count);
        pool.max_queued = pool.max_queued.div_ceil(count);
        config.accept_balance.workers = count as u64;
        let notifier = if index == 0 { self.notifier.clone() } else { None };
        Ok(WorkerPlan {
            index,
            config,
            listener,
            global: Arc::clone(&self.global),
            role: Role::Handoffs,
            notifier,
        })
    }

    /// After every worker returned: the counters, or the first error (the
    /// socket file we bound is removed then, so no client waits on it).
    pub fn finish(&self, result: Result<(), DaemonError>) -> Result<Snapshot, DaemonError> {
        match result {
            Ok(()) => Ok(self.global.limits.snapshot()),
            Err(error) => {
                if self.config.socket_origin.unlinks_on_stop()
                    && !self.global.unlinked.swap(true, Ordering::AcqRel)
                {
                    listener::remove_socket_file(&self.config.socket_path);
                }
                Err(error)
            }
        }
    }
}

#[derive(Debug)]
pub enum DaemonError {
    Bind(BindError),
    Activation(ActivationError),
    Backend(BackendSetupError),
    Io(&'static str, io::Error),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Bind(error) => write!(f, "{error}"),
            DaemonError::Activation(error) => write!(f, "{error}"),
            DaemonError::Backend(error) => write!(f, "{error}"),
            DaemonError::Io(what, error) => write!(f, "{what}: {error}"),
        }
    }
}

impl std::error::Error for DaemonError {}

/// Serves handoffs on one worker until `shutdown` completes, then drains and
/// returns the counters.
pub async fn run<R: Runtime>(
    runtime: R,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<Snapshot, DaemonError> {
    let listening = Listening::bind(config)?;
    let plan = listening.worker(0, 1)?;
    let result = run_worker(runtime, plan, shutdown).await;
    listening.finish(result)
}

/// One worker: accepts handoffs from its registration of the socket and drives
/// them to the end on this runtime, with its own backend pool; after
/// `shutdown`, answers what is queued with 503 and drains its own streams.
pub async fn run_worker<R: Runtime>(
    runtime: R,
    plan: WorkerPlan,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let WorkerPlan { index, config, listener, global, role, notifier } = plan;
    if let Role::Metrics(serving) = role {
        return crate::metrics::serve(runtime, listener, global, config, serving, shutdown).await;
    }
    let listener = runtime.register(listener).map_err(|e| DaemonError::Io("registering the listener", e))?;
    let metrics = global.metrics.register();
    let backend = match &config.backend {
        Backend::Mock => None,
        Backend::OpenAi(openai) => Some(
            OpenAiBackend::start_counted(&runtime, openai, config.pool.clone(), Arc::clone(&metrics))
                .map_err(DaemonError::Backend)?,
        ),
    };
    let shared = Arc::new(Shared {
        runtime: runtime.clone(),
        limits: Arc::clone(&global.limits),
        stream_config: config.stream.clone(),
        stop: StopSignal::default(),
        metrics,
        log_streams: !config.benchmark,
        global,
        socket_type: config.socket_type,
        socket_origin: config.socket_origin,
        receive_timeout: config.receive_timeout,
        retry_after_secs: config.retry_after_secs,
        backend,
        open_sockets: AtomicU64::new(0),
    });

    if let Some(notifier) = &notifier {
        let workers = config.accept_balance.workers as usize;
        runtime.spawn(notify::serve(
            runtime.clone(),
            Arc::clone(notifier),
            Arc::clone(&shared.global),
            workers,
            config.liveness,
        ));
    }
    let accepted = accept_until(&shared, &listener, &config, shutdown).await;
    if let Some(notifier) = &notifier {
        notifier.stopping();
    }
    // A bound socket: no new module connection can reach us once the path is
    // gone, and what is already in the backlog gets a 503 rather than a reset.
    // An inherited one stays, queue and all, for the next daemon.
    let origin = config.socket_origin;
    if origin.unlinks_on_stop() && !shared.global.unlinked.swap(true, Ordering::AcqRel) {
        listener::remove_socket_file(&config.socket_path);
    }
    shared.global.draining.store(true, Ordering::Release);
    let answered = if origin.answers_backlog_on_stop() { answer_backlog(&shared, &listener) } else { 0 };
    drop(listener);
    tracing::info!(
        worker = index,
        accepted,
        open = shared.open_sockets.load(Ordering::Relaxed),
        queued_answered_503 = answered,
        "stopped accepting; draining"
    );

    let drained = wait_for_streams(&shared, runtime.now() + config.drain_timeout).await;
    if !drained {
        tracing::warn!(
            worker = index,
            open = shared.open_sockets.load(Ordering::Relaxed),
            "drain deadline passed; ending streams"
        );
        shared.stop.force();
        wait_for_streams(&shared, runtime.now() + config.forced_stop_grace).await;
    }
    if let Some(backend) = &shared.backend {
        backend.shutdown();
    }
    Ok(())
}

/// Accepts every connection still queued on the listener, without waiting,
/// and answers each handoff 503 (draining). Returns how many were accepted.
fn answer_backlog<R: Runtime>(shared: &Arc<Shared<R>>, listener: &R::Fd) -> u64 {
    let mut accepted = 0;
    loop {
        match listener::accept(listener.as_fd()) {
            Ok(conn) => {
                accepted += 1;
                accept_handoff(shared, conn);
            }
            Err(error) if sys::would_block(&error) => return accepted,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::warn!(%error, "accepting the queued handoffs failed");
                return accepted;
            }
        }
    }
}

async fn accept_until<R: Runtime>(
    shared: &Arc<Shared<R>>,
    listener: &R::Fd,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> u64 {
    let mut accepted_total = 0u64;
    let mut shutdown = std::pin::pin!(shutdown);
    // After an accept error: no accepting until it passes.
    let mut backoff: Option<R::Timer> = None;
    // Over its share, this worker leaves the next connection to the others until
    // this passes, then accepts what is still queued (core's `balance`).
    let mut deferred: Option<R::Timer> = None;
    // Stamped at least every `beat_every`, idle or not: a loop that stops
    // turning is what the health endpoint and the watchdog detect.
    let heartbeat = shared.global.heartbeat(shared.runtime.now());
    let mut next_beat = shared.runtime.timer(shared.runtime.now() + config.liveness.beat_every);
    loop {
        let accepted = std::future::poll_fn(|cx| {
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            while next_beat.poll_expired(cx).is_ready() {
                let now = shared.runtime.now();
                heartbeat.beat(now);
                next_beat = shared.runtime.timer(now + config.liveness.beat_every);
            }
            if let Some(timer) = &mut backoff {
                if timer.poll_expired(cx).is_pending() {
                    return Poll::Pending;
                }
                backoff = None;
            }
            match &mut deferred {
                Some(timer) => {
                    if timer.poll_expired(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // Taken at once if still queued, whatever the shares now.
                    deferred = None;
                }
                None => {
                    let own = shared.open_sockets.load(Ordering::Relaxed);
                    let total = shared.global.open_sockets.load(Ordering::Relaxed);
                    if let Some(wait) = config.accept_balance.defer_for(own, total) {
                        let mut timer = shared.runtime.timer(shared.runtime.now() + wait);
                        let pending = timer.poll_expired(cx).is_pending();
                        deferred = Some(timer);
                        if pending {
                            return Poll::Pending;
                        }
                        deferred = None;
                    }
                }
            }
            listener.poll_read_with(cx, || listener::accept(listener.as_fd())).map(Some)
        })
        .await;
        match accepted {
            None => return accepted_total,
            Some(Ok(conn)) => {
                accepted_total += 1;
                accept_handoff(shared, conn);
            }
            Some(Err(error)) if is_resource_exhaustion(&error) => {
                tracing::warn!(%error, "accept failed; backing off");
                backoff = Some(shared.runtime.timer(shared.runtime.now() + config.accept_backoff));
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
        Err(error) => {
            shared.metrics.record_rejected(Rejection::PeerRefused);
            tracing::warn!(%error, peer_pid = peer_pid(&conn), "receiving a handoff failed")
        }
    }
}

/// The connecting process, for the log of a module connection that went wrong.
fn peer_pid(conn: &impl AsFd) -> Option<i32> {
    rustix::net::sockopt::socket_peercred(conn).ok().map(|cred| cred.pid.as_raw_nonzero().get())
}

async fn receive_later<R: Runtime>(shared: Arc<Shared<R>>, conn: OwnedFd, mut partial: Received) {
    let _hold = shared.hold_socket();
    let conn = match shared.runtime.register(conn) {
        Ok(conn) => conn,
        Err(error) => return tracing::warn!(%error, "registering a handoff connection failed"),
    };
    let socket_type = shared.socket_type;
    let receive = std::future::poll_fn(|cx| {
        conn.poll_read_with(cx, || listener::receive(conn.as_fd(), socket_type, &mut partial))
    });
    let timeout = shared.receive_timeout;
    let received = with_deadline(&shared.runtime, shared.runtime.now() + timeout, receive).await;
    if !matches!(received, Some(Ok(_))) {
        shared.metrics.record_rejected(Rejection::PeerRefused);
    }
    match received {
        Some(Ok(received)) => start_stream(&shared, received),
        Some(Err(error)) => {
            tracing::warn!(%error, peer_pid = peer_pid(&conn), "receiving a handoff failed (waited for it)")
        }
        None => tracing::warn!(
            peer_pid = peer_pid(&conn),
            "a handoff connection sent nothing for {timeout:?}; dropped"
        ),
    }
}

/// Turns a received handoff into a running stream, or answers it with an error.
fn start_stream<R: Runtime>(shared: &Arc<Shared<R>>, received: Received) {
    if received.control_truncated {
        shared.metrics.record_rejected(Rejection::PeerRefused);
        tracing::warn!(fds = received.fds_received, "handoff control data was truncated; closed every fd");
        return;
    }
    if received.fds_received > 1 {
        tracing::warn!(extra = received.fds_received - 1, "handoff carried extra fds; closed them");
    }
    let Some(client) = received.client else {
        shared.metrics.record_rejected(Rejection::PeerRefused);
        tracing::warn!(bytes = received.data.len(), "handoff message carried no fd; dropped");
        return;
    };
    if let Err(error) = sys::set_nonblocking(client.as_fd()) {
        return tracing::warn!(%error, "handed-off fd cannot be made non-blocking; closed");
    }
    sys::set_nodelay_best_effort(client.as_fd());
    sys::set_send_buffer_best_effort(client.as_fd(), shared.stream_config.client_send_buffer);

    let decoded = if received.truncated {
        Err(handoff::HandoffError::Truncated)
    } else {
        handoff::decode(&received.data)
    };
    let draining =
        shared.global.draining.load(Ordering::Acquire) && shared.socket_origin.refuses_late_handoffs();
    let (handoff, admission) = match admission::admit(&shared.limits, draining, decoded) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            shared.metrics.record_rejected(Rejection::of(&refusal));
            tracing::info!(%refusal, "handoff refused");
            return respond(shared, client, refusal.response(shared.retry_after_secs));
        }
    };
    for rejected in &handoff.rejected_headers {
        tracing::info!(header = %rejected.name, reason = rejected.reason, "response header dropped");
    }
    let fd = match shared.runtime.register(client) {
        Ok(fd) => FdClient(fd),
        Err(error) => {
            // Not a socket the runtime can poll (a regular file, say): no usable client.
            shared.metrics.record_rejected(Rejection::PeerRefused);
            return tracing::warn!(%error, "registering a client fd failed; closed");
        }
    };
    let id = shared.global.handoffs.fetch_add(1, Ordering::Relaxed) + 1;
    let identity =
        shared.log_streams.then(|| Box::new(crate::metrics::Identity::new(&handoff, fd.0.as_fd())));
    let head = http1::client_head(&handoff.response_headers);
    let delivery = handoff.delivery;
    let (source, backend) = match &shared.backend {
        None => {
            let user = handoff.user_id.as_deref().unwrap_or("anonymous");
            let script = mock::Script::new(id, user, &handoff.last_user_text()).in_format(delivery.format);
            (Source::Mock(script), BackendStream::None)
        }
        Some(backend) => (Source::Backend, backend.open_stream(StreamId(id), &handoff)),
    };
    drop(handoff);
    let machine = Stream::with_delivery(shared.runtime.now(), &shared.stream_config, head, source, delivery);
    let task: driver::StreamTask<R> =
        driver::StreamTask::new(shared.clone(), id, fd, machine, backend, admission).with_identity(identity);
    shared.runtime.spawn(task);
}

fn respond<R: Runtime>(shared: &Arc<Shared<R>>, client: OwnedFd, response: bytes::Bytes) {
    match shared.runtime.register(client) {
        Ok(fd) => {
            let config = shared.stream_config.clone();
            let hold = shared.hold_socket();
            shared.runtime.spawn(async move {
                respond_and_close(hold.0.runtime.clone(), config, FdClient(fd), response).await;
                drop(hold);
            })
        }
        Err(error) => tracing::warn!(%error, "registering a client fd failed; closed"),
    }
}

/// Writes one complete response (a 400 or 503) and closes as core's
/// [`Closing`] says: flushed within the write timeout, then a bounded linger.
pub async fn respond_and_close<R: Runtime, C: ClientIo>(
    runtime: R,
    config: StreamConfig,
    client: C,
    response: bytes::Bytes,
) {
    let mut client = ClientSocket::new(client);
    client.push(response);
    let mut closing = Closing::graceful(runtime.now(), &config);
    let mut timer = runtime.timer(runtime.now());
    let mut armed = None;
    std::future::poll_fn(|cx| {
        driver::close_socket(cx, &runtime, &mut closing, &mut client, &mut timer, &mut armed)
    })
    .await
}

/// Waits until no stream is active and every client socket is closed, or
/// `deadline` passes; true when none is left.
async fn wait_for_streams<R: Runtime>(shared: &Arc<Shared<R>>, deadline: Instant) -> bool {
    const CHECK_EVERY: Duration = Duration::from_millis(50);
    loop {
        // A stream holds its socket until closed, so this covers its outcome too.
        if shared.open_sockets.load(Ordering::Relaxed) == 0 {
            return true;
        }
        let now = shared.runtime.now();
        if now >= deadline {
            return false;
        }
        crate::runtime::sleep_until(&shared.runtime, (now + CHECK_EVERY).min(deadline)).await;
    }
}

#[cfg(test)]
mod liveness_tests {
    use super::*;

    #[test]
    fn a_worker_that_stops_beating_makes_the_daemon_not_alive_until_it_beats_again() {
        let global = Global::new(Limits::new(1));
        let liveness = Liveness::default();
        let start = global.started;
        assert!(!global.alive(start, &liveness), "no worker yet");
        let first = global.heartbeat(start);
        let second = global.heartbeat(start);
        assert!(global.alive(start + Duration::from_secs(5), &liveness));
        first.beat(start + Duration::from_secs(5));
        assert!(!global.alive(start + Duration::from_secs(6), &liveness), "the second is stale");
        second.beat(start + Duration::from_secs(6));
        assert!(global.alive(start + Duration::from_secs(6), &liveness));
    }
}
